//! Where reads go (`ReadFrom`) on Sentinel (1 master, 2 replicas, `down-after 1000`) and on
//! Cluster (3 masters, 1 replica each, `cluster-node-timeout 1000`):
//! - `master-preferred` serves reads from the master while it is up, and from the replicas
//!   while it is down, so reads go on through the SIGKILL of the master;
//! - `replica-preferred` serves (almost) every read from the replicas, and goes on at once
//!   elsewhere when a replica dies, or when a slot moves (`MOVED` from a replica);
//! - a handle that read from a replica never sends a write there.
//!
//! Figures are printed; run with `--nocapture` to see them.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::AsyncCommands;
use redis_lab::{ClusterConfig as LabConfig, RedisCluster, RedisServer, SentinelTopology};
use resilient_redis::{Client, ClientConfig, ReadFrom};
use tokio::{task::JoinSet, time::Instant};

/// Width of the buckets the read rate is measured in.
const BUCKET: Duration = Duration::from_millis(250);

/// A client of `topology` whose reads go as `read_from` says.
async fn client_of(topology: &SentinelTopology, read_from: ReadFrom) -> Client {
    let mut config = ClientConfig {
        deadline: Duration::from_secs(10),
        ..ClientConfig::from_url(&common::sentinel_url(topology)).unwrap()
    };
    config.read_from = read_from;
    Client::with_config(config).await.unwrap()
}

/// `INFO commandstats` calls of `command` on `server` (0 when never called).
async fn calls(server: &RedisServer, command: &str) -> u64 {
    common::calls_at(server.addr(), command).await
}

/// The sum of [`common::calls_at`] over `addrs`.
async fn calls_on(addrs: &[SocketAddr], command: &str) -> u64 {
    let mut n = 0;
    for addr in addrs {
        n += common::calls_at(*addr, command).await;
    }
    n
}

/// The replicas of `topology` now.
async fn replicas(topology: &SentinelTopology) -> Vec<&RedisServer> {
    let master = topology.master_addr().await.unwrap();
    topology
        .servers()
        .iter()
        .filter(|s| s.addr() != master)
        .collect()
}

/// Waits until every replica of `topology` has `key`.
async fn replicated(topology: &SentinelTopology, key: &str) {
    for replica in replicas(topology).await {
        let conn = replica.admin().await.unwrap();
        common::wait_until(
            "the replicas to get the key",
            Duration::from_secs(10),
            || {
                let mut conn = conn.clone();
                async move { conn.exists::<_, bool>(key).await.unwrap_or(false) }
            },
        )
        .await;
    }
}

/// A handle that has read from a replica (`replica-preferred`) sends its writes to the master:
/// none is refused `READONLY` (which would cost a retry and a reconnection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_replica_read_goes_to_the_master() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let topology = common::sentinel_lab().await;
    let mut client = client_of(&topology, ReadFrom::PreferReplica).await;
    let () = client.set("k", 0).await.unwrap();
    replicated(&topology, "k").await;
    let replica_gets = {
        let mut n = 0;
        for r in replicas(&topology).await {
            n += calls(r, "get").await;
        }
        n
    };
    let before = client.stats();
    for i in 1..=200 {
        let _: Option<i64> = client.get("k").await.unwrap();
        let () = client.set("k", i).await.unwrap();
    }
    let after = client.stats();
    let mut served_by_replicas = 0;
    for r in replicas(&topology).await {
        served_by_replicas += calls(r, "get").await;
        // (A replica runs every SET from its replication stream: what must not be there is a
        // READONLY refusal of one sent by the client.)
        let refused = r.info_field("errorstats", "errorstat_READONLY").await;
        assert!(refused.is_err(), "a replica refused writes: {refused:?}");
    }
    assert!(
        served_by_replicas - replica_gets >= 200,
        "the reads did not go to the replicas"
    );
    assert_eq!(after.retries, before.retries, "{after:?}");
    assert_eq!(after.reconnects, before.reconnects, "{after:?}");
}

/// The target on Sentinel: 50 tasks `GET` with `master-preferred` (and 5 tasks `SET`)
/// through the SIGKILL of the master. No read fails, the read rate in the worst 250 ms of the
/// failover is at least half the healthy rate, no write fails (they wait for the new master),
/// and while the master is up the replicas serve (almost) no read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_preferred_reads_go_on_through_a_killed_master() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let mut topology = common::sentinel_lab().await;
    let client = client_of(&topology, ReadFrom::MasterPreferred).await;
    let () = client.clone().set("greeting", "hello").await.unwrap();
    replicated(&topology, "greeting").await;
    let replicas: Vec<SocketAddr> = replicas(&topology).await.iter().map(|r| r.addr()).collect();
    let kill = async || common::kill_sentinel_master(&mut topology).await;
    let run = ReadLoad::start(&client, "greeting", 5)
        .through(&client, &replicas, kill)
        .await;
    run.check_master_preferred("Sentinel");
}

/// Zone affinity on Sentinel (1 master, 2 replicas): a zone map puts one replica in the
/// caller's zone (`zone:az1`), the other replica and the master elsewhere. While that replica is
/// alive at least 99 % of the reads go to it (the servers' `INFO commandstats`); when it is
/// SIGKILLed, reads go on elsewhere with no error until the other copies serve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_affinity_keeps_reads_in_the_callers_zone() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let mut topology = common::sentinel_lab().await;
    let master = topology.master_addr().await.unwrap();
    let (near, far) = {
        let replicas = replicas(&topology).await;
        (replicas[0].addr(), replicas[1].addr())
    };
    let zones = [(near, "az1"), (far, "az2"), (master, "az2")]
        .map(|(addr, zone)| (addr.to_string(), zone.to_owned()));
    let client = Client::with_config(ClientConfig {
        deadline: Duration::from_secs(10),
        read_from: ReadFrom::parse("zone:az1").unwrap(),
        zones: zones.into_iter().collect(),
        ..ClientConfig::from_url(&common::sentinel_url(&topology)).unwrap()
    })
    .await
    .unwrap();
    let () = client.clone().set("greeting", "hello").await.unwrap();
    replicated(&topology, "greeting").await;
    let kill_near = async || topology.server_by_addr_mut(near).unwrap().kill().unwrap();
    check_zone_affinity(
        "Sentinel",
        &client,
        "greeting",
        [near, far, master],
        kill_near,
    )
    .await;
}

/// Reads of `key` by `client`, whose zone map puts the first of `[near, far, master]` in its
/// zone: at least 99 % go there while it is up; then `kill_near` kills it and the reads go on
/// elsewhere with no error (the fault lasts until the other copies have served 1,000 reads).
async fn check_zone_affinity(
    name: &str,
    client: &Client,
    key: &'static str,
    [near, far, master]: [SocketAddr; 3],
    kill_near: impl AsyncFnOnce(),
) {
    let before = common::calls_each([near, far, master], "get").await;
    let load = ReadLoad::start(client, key, 0);
    let share = Mutex::new(0.0);
    let kill = async || {
        // The end of the healthy phase: where the reads went.
        let now = common::calls_each([near, far, master], "get").await;
        let [near_gets, far_gets, master_gets] = [0, 1, 2].map(|i| now[i] - before[i]);
        let total = (near_gets + far_gets + master_gets).max(1);
        *share.lock().unwrap() = near_gets as f64 / total as f64;
        eprintln!(
            "{name} zone:az1, healthy: {near_gets} GETs on the replica in az1, {far_gets} on the \
             other replica, {master_gets} on the master"
        );
        kill_near().await;
        let elsewhere = common::calls_at(far, "get").await + common::calls_at(master, "get").await;
        common::wait_until(
            "the reads to go on elsewhere",
            Duration::from_secs(10),
            || async {
                common::calls_at(far, "get").await + common::calls_at(master, "get").await
                    >= elsewhere + 1000
            },
        )
        .await;
        far
    };
    let run = load.through(client, &[], kill).await;
    run.report(&format!("{name} zone:az1, the replica in az1 killed"));
    let share = *share.lock().unwrap();
    assert!(
        share >= 0.99,
        "only {:.2} % of the reads went to the replica in the caller's zone",
        100.0 * share
    );
    assert!(
        run.errors.is_empty(),
        "{:?}",
        &run.errors[..run.errors.len().min(10)]
    );
}

/// The target on Cluster (3+3): as on Sentinel, the master of the read key's slot is
/// SIGKILLed; reads go on from its replica until the replica has taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_preferred_reads_go_on_through_a_killed_master() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    // Without it, from the moment the master is flagged failing until its replica takes over
    // (about 0.5 to 1 s here), every node answers CLUSTERDOWN to every command: the cluster
    // itself refuses the reads (measured: the read rate falls to 0 for 500 ms).
    let mut cluster = RedisCluster::start(LabConfig {
        extra: vec![("cluster-allow-reads-when-down".into(), "yes".into())],
        ..LabConfig::default()
    })
    .await
    .unwrap();
    let client = cluster_client(&cluster, ReadFrom::MasterPreferred).await;
    let key = "greeting";
    let slot = common::key_slot(key);
    let () = client.clone().set(key, "hello").await.unwrap();
    cluster_replicated(&cluster, slot, key).await;
    let replicas = cluster_replicas(&cluster);
    let kill = async || {
        let old = cluster.master_for_slot(slot).await.unwrap();
        common::kill_cluster_node(&mut cluster, old);
        common::wait_until(
            "a replica to take over",
            Duration::from_secs(30),
            || async { cluster.master_for_slot(slot).await.is_ok_and(|m| m != old) },
        )
        .await;
        cluster.master_for_slot(slot).await.unwrap()
    };
    let run = ReadLoad::start(&client, key, 5)
        .through(&client, &replicas, kill)
        .await;
    run.check_master_preferred("Cluster");
}

/// `replica-preferred` on a healthy cluster (3+3): at least 95 % of the reads are served by
/// the replicas (their `INFO commandstats`); then a slot migrated under load (its replica
/// answers `MOVED` for it) and a replica SIGKILLed under load cost no read, and the read rate
/// never falls below half the healthy rate (a read does not wait on the dead replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_replica_preferred_reads_come_from_replicas() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let mut cluster = RedisCluster::start(LabConfig::default()).await.unwrap();
    let client = cluster_client(&cluster, ReadFrom::PreferReplica).await;
    let key = "greeting";
    let slot = common::key_slot(key);
    let () = client.clone().set(key, "hello").await.unwrap();
    cluster_replicated(&cluster, slot, key).await;
    let masters: Vec<SocketAddr> = cluster.nodes()[..3].iter().map(|n| n.addr()).collect();
    let replicas = cluster_replicas(&cluster);
    let (master_before, replica_before) = (
        calls_on(&masters, "get").await,
        calls_on(&replicas, "get").await,
    );
    let load = ReadLoad::start(&client, key, 0).tolerating_stale();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (to_masters, to_replicas) = (
        calls_on(&masters, "get").await - master_before,
        calls_on(&replicas, "get").await - replica_before,
    );
    let share = to_replicas as f64 / (to_masters + to_replicas).max(1) as f64;
    eprintln!(
        "replica-preferred, healthy: {to_replicas} GETs on the replicas, {to_masters} on the \
         masters ({:.2} % from replicas); client's count {}",
        100.0 * share,
        client.stats().replica_reads
    );
    assert!(
        share >= 0.95,
        "only {:.2} % of the reads came from replicas",
        100.0 * share
    );
    // The key's slot moves to another master: its old replica answers MOVED.
    let owner = cluster.master_for_slot(slot).await.unwrap();
    let other = masters.iter().find(|m| **m != owner).copied().unwrap();
    cluster.migrate_slot(slot, other).await.unwrap();
    // (Until the new owner's replica has the key, a read there finds none: stale, not lost.)
    cluster_replicated(&cluster, slot, key).await;
    // The replica of the new owner (the one reads now go to) dies.
    let replica_of_new = common::replica_of(&cluster, other).await.unwrap().addr();
    let kill = async || {
        common::kill_cluster_node(&mut cluster, replica_of_new);
        // The fault lasts until the cluster flags the replica failing (and leaves it out).
        let owner = cluster.nodes().iter().find(|n| n.addr() == other).unwrap();
        let conn = owner.admin().await.unwrap();
        let port = format!(":{}@", replica_of_new.port());
        common::wait_until(
            "the cluster to flag the replica failing",
            Duration::from_secs(30),
            || {
                let (mut conn, port) = (conn.clone(), port.clone());
                async move {
                    let nodes: String = redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    nodes
                        .lines()
                        .any(|l| l.contains(&port) && l.contains(" fail "))
                        || nodes
                            .lines()
                            .any(|l| l.contains(&port) && l.contains(",fail "))
                }
            },
        )
        .await;
        replica_of_new
    };
    let run = load.through(&client, &[], kill).await;
    run.report("Cluster replica-preferred, a slot migrated then a replica killed");
    run.check_reads_go_on();
}

/// Zone affinity on Cluster (3 masters, 2 replicas each): the zone map puts one replica of the
/// key's master in the caller's zone by its node id (`CLUSTER MYID`), the other replica and the
/// master elsewhere by address. While that replica is alive at least 99 % of the slot's reads go
/// to it; when it is SIGKILLed, reads go on elsewhere with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_zone_affinity_keeps_reads_in_the_callers_zone() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let mut cluster = RedisCluster::start(LabConfig {
        replicas_per_master: 2,
        ..LabConfig::default()
    })
    .await
    .unwrap();
    let key = "greeting";
    let master = cluster
        .master_for_slot(common::key_slot(key))
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for node in cluster.nodes() {
        if node.info_field("replication", "master_port").await.ok()
            == Some(master.port().to_string())
        {
            replicas.push(node.addr());
        }
    }
    let [near, far] = replicas[..] else {
        panic!("the master has {} replicas, not 2", replicas.len());
    };
    let near_id: String = {
        let server = cluster.nodes().iter().find(|n| n.addr() == near).unwrap();
        let mut conn = server.admin().await.unwrap();
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    let zones = [
        (near_id, "az1"),
        (far.to_string(), "az2"),
        (master.to_string(), "az2"),
    ]
    .map(|(node, zone)| (node, zone.to_owned()));
    let client = Client::with_config(ClientConfig {
        deadline: Duration::from_secs(10),
        read_from: ReadFrom::parse("zone:az1").unwrap(),
        zones: zones.into_iter().collect(),
        ..ClientConfig::cluster(&cluster.urls()).unwrap()
    })
    .await
    .unwrap();
    let () = client.clone().set(key, "hello").await.unwrap();
    for replica in [near, far] {
        let server = cluster.nodes().iter().find(|n| n.addr() == replica);
        replica_has(server.unwrap(), key).await;
    }
    let kill_near = async || common::kill_cluster_node(&mut cluster, near);
    check_zone_affinity(
        "Cluster (az1 by node id)",
        &client,
        key,
        [near, far, master],
        kill_near,
    )
    .await;
}

/// A cluster client whose reads go as `read_from` says.
async fn cluster_client(cluster: &RedisCluster, read_from: ReadFrom) -> Client {
    Client::with_config(ClientConfig {
        deadline: Duration::from_secs(10),
        read_from,
        ..ClientConfig::cluster(&cluster.urls()).unwrap()
    })
    .await
    .unwrap()
}

/// The lab cluster's replicas (its nodes after the 3 masters).
fn cluster_replicas(cluster: &RedisCluster) -> Vec<SocketAddr> {
    cluster.nodes()[3..].iter().map(|n| n.addr()).collect()
}

/// Waits until the replica of `slot`'s master has `key`.
async fn cluster_replicated(cluster: &RedisCluster, slot: u16, key: &str) {
    let master = cluster.master_for_slot(slot).await.unwrap();
    replica_has(common::replica_of(cluster, master).await.unwrap(), key).await;
}

/// Waits until the cluster replica `server` has `key`.
async fn replica_has(server: &RedisServer, key: &str) {
    let conn = server.admin().await.unwrap();
    common::wait_until(
        "the replica to get the key",
        Duration::from_secs(10),
        || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("READONLY")
                    .query_async::<()>(&mut conn)
                    .await
                    .is_ok()
                    && conn.exists::<_, bool>(key).await.unwrap_or(false)
            }
        },
    )
    .await;
}

/// 50 tasks reading `key` (expecting `hello`) and `writers` tasks writing keys of their own,
/// counting successful reads per 250 ms.
struct ReadLoad {
    origin: Instant,
    buckets: Arc<Vec<AtomicU64>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Reads that found no key (a replica behind its master), when tolerated.
    stale: Arc<AtomicU64>,
    tolerate_stale: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

/// What a [`ReadLoad`] saw through a fault.
struct ReadRun {
    healthy_rate: f64,
    healthy_reads: u64,
    /// GETs the replicas served while the master was up (`INFO commandstats`).
    replica_gets: u64,
    /// Reads the client sent to replicas while the master was up, and after the kill.
    replica_reads_healthy: u64,
    replica_reads_after: u64,
    failover: Vec<u64>,
    failover_time: Duration,
    new_node: SocketAddr,
    writes: u64,
    stale: u64,
    errors: Vec<String>,
}

impl ReadLoad {
    fn start(client: &Client, key: &'static str, writers: usize) -> ReadLoad {
        let origin = Instant::now();
        let buckets: Arc<Vec<AtomicU64>> = Arc::new((0..400).map(|_| AtomicU64::new(0)).collect());
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let stale = Arc::new(AtomicU64::new(0));
        let tolerate_stale = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for _ in 0..50 {
            let (mut c, buckets, errors, stop) = (
                client.clone(),
                buckets.clone(),
                errors.clone(),
                stop.clone(),
            );
            let (stale, tolerate_stale) = (stale.clone(), tolerate_stale.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.get::<_, Option<String>>(key).await {
                        Ok(Some(v)) if v == "hello" => {
                            let i = (origin.elapsed().as_millis() / BUCKET.as_millis()) as usize;
                            buckets[i.min(buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) if tolerate_stale.load(Ordering::Relaxed) => {
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                        other => errors.lock().unwrap().push(format!("GET: {other:?}")),
                    }
                }
            });
        }
        for w in 0..writers {
            let (mut c, errors, stop, writes) =
                (client.clone(), errors.clone(), stop.clone(), writes.clone());
            tasks.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match c.set::<_, _, ()>(format!("w:{w}"), n).await {
                        Ok(()) => {
                            writes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.lock().unwrap().push(format!("SET: {e}")),
                    }
                }
            });
        }
        // A watchdog: when no read succeeds for 300 ms, what the client says then (once).
        {
            let (client, buckets, stop) = (client.clone(), buckets.clone(), stop.clone());
            tasks.spawn(async move {
                let total = || {
                    buckets
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .sum::<u64>()
                };
                let (mut last, mut since) = (total(), Instant::now());
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now = total();
                    if now != last {
                        (last, since) = (now, Instant::now());
                    } else if since.elapsed() >= Duration::from_millis(300) {
                        eprintln!(
                            "no read for {:?}, {:?} after the start: {:?}\n{:#?}",
                            since.elapsed(),
                            origin.elapsed(),
                            client.stats(),
                            client.health().await
                        );
                        break;
                    }
                }
            });
        }
        ReadLoad {
            origin,
            buckets,
            errors,
            stale,
            tolerate_stale,
            stop,
            writes,
            tasks,
        }
    }

    /// Reads that find no key are counted as stale (a replica behind its master), not as
    /// errors.
    fn tolerating_stale(self) -> ReadLoad {
        self.tolerate_stale.store(true, Ordering::Relaxed);
        self
    }

    /// A healthy phase of 2 s (measured, not a synchronisation), then `kill` (which injects the
    /// fault and waits until it is over, returning the node that took over), 1 s more; then
    /// the tasks stop. `replicas`: whose GETs are counted while the master is up.
    async fn through(
        mut self,
        client: &Client,
        replicas: &[SocketAddr],
        kill: impl AsyncFnOnce() -> SocketAddr,
    ) -> ReadRun {
        let index =
            |t: Instant| (t.duration_since(self.origin).as_millis() / BUCKET.as_millis()) as usize;
        // The healthy phase starts with the next full bucket.
        let healthy_from = index(Instant::now()) + 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let replica_gets = calls_on(replicas, "get").await;
        let healthy_reads: u64 = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        let replica_reads_healthy = client.stats().replica_reads;

        let killed_at = Instant::now();
        let new_node = kill().await;
        let known_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.stop.store(true, Ordering::Relaxed);
        while let Some(t) = self.tasks.join_next().await {
            t.unwrap();
        }

        let count = |i: usize| self.buckets[i].load(Ordering::Relaxed);
        // Healthy: the full buckets before the kill, the first (warm-up) left out.
        let healthy: Vec<u64> = (healthy_from..index(killed_at)).map(count).collect();
        let healthy_rate = healthy.iter().sum::<u64>() as f64 / healthy.len() as f64;
        // The fault: every bucket from the kill's to the new node's being known.
        let failover: Vec<u64> = (index(killed_at)..=index(known_at)).map(count).collect();
        ReadRun {
            healthy_rate,
            healthy_reads,
            replica_gets,
            replica_reads_healthy,
            replica_reads_after: client.stats().replica_reads - replica_reads_healthy,
            failover,
            failover_time: known_at - killed_at,
            new_node,
            writes: self.writes.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            errors: std::mem::take(&mut *self.errors.lock().unwrap()),
        }
    }
}

impl ReadRun {
    fn worst(&self) -> u64 {
        *self.failover.iter().min().unwrap()
    }

    fn report(&self, what: &str) {
        eprintln!(
            "{what}: healthy {:.0} reads per 250 ms ({} of {} served by replicas), fault {:?} \
             long (took over: {}): worst 250 ms {} reads ({:.0} %), buckets {:?}; {} writes, {} \
             errors, {} stale reads; reads sent to replicas (client's count): {} before the fault, {} after",
            self.healthy_rate,
            self.replica_gets,
            self.healthy_reads,
            self.failover_time,
            self.new_node,
            self.worst(),
            100.0 * self.worst() as f64 / self.healthy_rate,
            self.failover,
            self.writes,
            self.errors.len(),
            self.stale,
            self.replica_reads_healthy,
            self.replica_reads_after,
        );
    }

    /// No read or write failed, and the read rate in the worst bucket of the fault was at
    /// least half the healthy rate.
    fn check_reads_go_on(&self) {
        assert!(
            self.errors.is_empty(),
            "{:?}",
            &self.errors[..self.errors.len().min(10)]
        );
        assert!(
            self.worst() as f64 >= 0.5 * self.healthy_rate,
            "the reads fell to {} in a bucket of the fault (healthy {:.0})",
            self.worst(),
            self.healthy_rate
        );
    }

    /// [`ReadRun::check_reads_go_on`], and replicas served reads while the master was down and
    /// (almost) none while it was up.
    fn check_master_preferred(&self, topology: &str) {
        self.report(&format!(
            "{topology} master-preferred through a killed master"
        ));
        self.check_reads_go_on();
        assert_eq!(
            self.replica_reads_healthy, 0,
            "the client sent reads to replicas while the master was up"
        );
        assert!(
            self.replica_reads_after > 0,
            "no read went to a replica while the master was down"
        );
        assert!(
            (self.replica_gets as f64) < 0.01 * self.healthy_reads as f64,
            "replicas served {} of {} reads while the master was up",
            self.replica_gets,
            self.healthy_reads
        );
    }
}
