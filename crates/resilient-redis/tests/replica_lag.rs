//! Reads that choose among copies by measurement, against real servers:
//! - `max_replica_lag`: a replica whose replication is held up (`CLIENT PAUSE WRITE` on it: it
//!   goes on serving reads but applies nothing of its master's stream, so its data ages) stops
//!   being read from once it is further behind than the bound; reads go on elsewhere with no
//!   error, and none returns data much older than the bound, where the paused replica itself
//!   serves data seconds old (Sentinel 1+2 and Cluster 3+3);
//! - `nearest`: a copy reached through a proxy that adds latency gets (almost) no read while
//!   another answers faster (Cluster 3+3 and Sentinel 1+2, the copies announced behind proxies).
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
use redis_lab::{
    ClusterConfig as LabConfig, FaultProxy, RedisCluster, SentinelConfig, SentinelTopology,
};
use resilient_redis::{Client, ClientConfig, ReadFrom};
use tokio::{task::JoinSet, time::Instant};

/// The bound the lag tests set.
const BOUND: Duration = Duration::from_millis(500);

/// How long a replica's replication is held up: long enough that reads from it would be
/// several times staler than [`BOUND`].
const PAUSE: Duration = Duration::from_secs(5);

/// From the pause on, how long the client is given to leave the replica ...
const SETTLE: Duration = Duration::from_millis(1500);

/// ... and how long reads are then counted.
const WINDOW: Duration = Duration::from_millis(1500);

/// A writer that puts the time (ms since `origin`) in `key` every few milliseconds, and
/// readers that `GET` it and keep the staleness of what they read (now minus the time read).
struct Clock {
    origin: Instant,
    stop: Arc<AtomicBool>,
    /// The stalest read since the last [`Clock::take_stalest`], in ms.
    stalest_ms: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: JoinSet<()>,
}

impl Clock {
    fn start(client: &Client, key: &'static str, readers: usize) -> Clock {
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let stalest_ms = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let now_ms = move || origin.elapsed().as_millis() as u64;
        {
            let (mut client, stop, errors) = (client.clone(), stop.clone(), errors.clone());
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(2));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    if let Err(e) = client.set::<_, _, ()>(key, now_ms()).await {
                        errors.lock().unwrap().push(format!("SET: {e}"));
                    }
                }
            });
        }
        for _ in 0..readers {
            let (mut client, stop, errors) = (client.clone(), stop.clone(), errors.clone());
            let (stalest_ms, reads) = (stalest_ms.clone(), reads.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.get::<_, Option<u64>>(key).await {
                        Ok(Some(at)) => {
                            stalest_ms.fetch_max(now_ms().saturating_sub(at), Ordering::Relaxed);
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => {}
                        Err(e) => errors.lock().unwrap().push(format!("GET: {e}")),
                    }
                }
            });
        }
        Clock {
            origin,
            stop,
            stalest_ms,
            reads,
            errors,
            tasks,
        }
    }

    /// The stalest read since the last call, and starts over.
    fn take_stalest(&self) -> Duration {
        Duration::from_millis(self.stalest_ms.swap(0, Ordering::Relaxed))
    }

    /// How old the value `server` holds in `key` is, read directly.
    async fn age_at(&self, server: SocketAddr, key: &str) -> Duration {
        let client = redis::Client::open(format!("redis://{server}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: redis::RedisResult<()> = redis::cmd("READONLY").query_async(&mut conn).await;
        let at: u64 = conn.get(key).await.unwrap();
        Duration::from_millis((self.origin.elapsed().as_millis() as u64).saturating_sub(at))
    }

    async fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.errors.lock().unwrap())
    }
}

/// Holds up the replication of `replica` (the copy the client reads `key` from) for [`PAUSE`]
/// under the [`Clock`]'s load, and checks that the client leaves it: after [`SETTLE`], the
/// replica serves (almost) no read for [`WINDOW`] while reads go on elsewhere, no read is half
/// as stale as the replica's own data (seconds old), and no call fails.
async fn check_lagging_replica_is_left(
    name: &str,
    client: &Client,
    key: &'static str,
    replica: SocketAddr,
) {
    let clock = Clock::start(client, key, 20);
    common::wait_until("reads to flow", Duration::from_secs(10), || async {
        clock.reads.load(Ordering::Relaxed) >= 1000
    })
    .await;
    let healthy_stalest = clock.take_stalest();
    let paused_at = Instant::now();
    let mut conn = redis::Client::open(format!("redis://{replica}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(PAUSE.as_millis() as u64)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The client measures every 250 ms and leaves the replica once it is BOUND behind (a
    // Sentinel replica connection is replaced after a second of that): from 1.5 s on, count
    // where 1.5 s of reads go.
    tokio::time::sleep_until(paused_at + SETTLE).await;
    let (on_replica, reads) = (
        common::calls_at(replica, "get").await,
        clock.reads.load(Ordering::Relaxed),
    );
    tokio::time::sleep_until(paused_at + SETTLE + WINDOW).await;
    let (on_replica, reads) = (
        common::calls_at(replica, "get").await - on_replica,
        clock.reads.load(Ordering::Relaxed) - reads,
    );
    let replica_age = clock.age_at(replica, key).await;
    assert!(
        paused_at.elapsed() < PAUSE,
        "the checks took longer than the pause: nothing measured"
    );
    let stalest = clock.take_stalest();
    let errors = clock.stop().await;
    eprintln!(
        "{name}, max_replica_lag {BOUND:?}: stalest read {healthy_stalest:?} healthy, \
         {stalest:?} while a replica's replication was held up (its own data {replica_age:?} old); \
         in {WINDOW:?} from {SETTLE:?} after the pause, {reads} reads, {on_replica} on that \
         replica"
    );
    assert!(
        replica_age >= SETTLE + WINDOW - Duration::from_millis(500),
        "the paused replica's data is only {replica_age:?} old: the pause did not hold it up"
    );
    assert!(reads >= 100, "only {reads} reads served meanwhile");
    assert!(
        on_replica * 100 <= reads,
        "{on_replica} of {reads} reads still went to the lagging replica"
    );
    assert!(
        stalest < replica_age / 2,
        "a read returned data {stalest:?} old (bound {BOUND:?}, the replica's {replica_age:?})"
    );
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(10)]);
}

/// Sentinel (1 master, 2 replicas), `replica-preferred` with a 500 ms bound: the replica the
/// client reads from is held up; reads leave it (for the other replica or the master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_reads_leave_a_replica_too_far_behind() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let topology = common::sentinel_lab().await;
    let client = Client::with_config(ClientConfig {
        deadline: Duration::from_secs(10),
        read_from: ReadFrom::PreferReplica,
        max_replica_lag: Some(BOUND),
        ..ClientConfig::from_url(&common::sentinel_url(&topology)).unwrap()
    })
    .await
    .unwrap();
    let key = "clock";
    let () = client.clone().set(key, 0).await.unwrap();
    let master = topology.master_addr().await.unwrap();
    let replicas: Vec<SocketAddr> = topology
        .servers()
        .iter()
        .map(|s| s.addr())
        .filter(|a| *a != master)
        .collect();
    // The replica the reads go to (once the client has measured it): the one whose GETs grow.
    let read_from = Mutex::new(None);
    common::wait_until("reads on a replica", Duration::from_secs(10), || async {
        let before = [
            common::calls_at(replicas[0], "get").await,
            common::calls_at(replicas[1], "get").await,
        ];
        let mut reader = client.clone();
        for _ in 0..100 {
            let _: Option<u64> = reader.get(key).await.unwrap();
        }
        for (i, replica) in replicas.iter().enumerate() {
            if common::calls_at(*replica, "get").await >= before[i] + 100 {
                *read_from.lock().unwrap() = Some(*replica);
                return true;
            }
        }
        false
    })
    .await;
    let read_from = read_from.into_inner().unwrap().unwrap();
    check_lagging_replica_is_left("Sentinel", &client, key, read_from).await;
}

/// Cluster (3+3), `replica-preferred` with a 500 ms bound: the replica of the key's slot is
/// held up; reads of the slot go to its master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reads_leave_a_replica_too_far_behind() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(LabConfig::default()).await.unwrap();
    let client = Client::with_config(ClientConfig {
        deadline: Duration::from_secs(10),
        read_from: ReadFrom::PreferReplica,
        max_replica_lag: Some(BOUND),
        ..ClientConfig::cluster(&cluster.urls()).unwrap()
    })
    .await
    .unwrap();
    let key = "clock";
    let () = client.clone().set(key, 0).await.unwrap();
    let master = cluster
        .master_for_slot(common::key_slot(key))
        .await
        .unwrap();
    let replica = common::replica_of(&cluster, master).await.unwrap().addr();
    check_lagging_replica_is_left("Cluster", &client, key, replica).await;
}

/// Cluster (3+3), `nearest`: the key's master and its replica are announced behind proxies
/// (`cluster-announce-port`), so the client reaches both through one. With 3 ms of latency at
/// the replica's proxy, the master is nearer and serves at least 95 % of the slot's reads; with
/// the latency moved to the master's proxy, the replica serves at least 95 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nearest_reads_go_to_the_nearer_copy() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(LabConfig::default()).await.unwrap();
    let key = "near";
    let master = cluster
        .master_for_slot(common::key_slot(key))
        .await
        .unwrap();
    let replica = common::replica_of(&cluster, master).await.unwrap().addr();
    let master_proxy = FaultProxy::start(master).await.unwrap();
    let replica_proxy = FaultProxy::start(replica).await.unwrap();
    for (node, proxy) in [(master, &master_proxy), (replica, &replica_proxy)] {
        let server = cluster.nodes().iter().find(|n| n.addr() == node).unwrap();
        let mut conn = server.admin().await.unwrap();
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-announce-port")
            .arg(proxy.addr().port())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // Every node learns the new ports through the cluster bus.
    let announced = [master_proxy.addr(), replica_proxy.addr()].map(|a| format!("{a}@"));
    for node in cluster.nodes() {
        let admin = node.admin().await.unwrap();
        common::wait_until(
            "the proxies' ports to be announced",
            Duration::from_secs(20),
            || {
                let mut admin = admin.clone();
                let announced = announced.clone();
                async move {
                    let nodes: String = redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async(&mut admin)
                        .await
                        .unwrap_or_default();
                    announced.iter().all(|a| nodes.contains(a.as_str()))
                }
            },
        )
        .await;
    }
    let client = Client::with_config(ClientConfig {
        deadline: Duration::from_secs(10),
        read_from: ReadFrom::Nearest,
        ..ClientConfig::cluster(&cluster.urls()).unwrap()
    })
    .await
    .unwrap();
    let () = client.clone().set(key, "v").await.unwrap();
    // The share of the slot's reads its replica serves, once the client has measured the new
    // latencies.
    let replica_share = async |what: &str| {
        let [m, r] = settled_reads(&client, key, [master, replica]).await;
        let share = r as f64 / (m + r).max(1) as f64;
        eprintln!(
            "Cluster nearest, {what}: {m} GETs on the master, {r} on the replica ({:.1} % on \
             the replica)",
            100.0 * share
        );
        share
    };
    replica_proxy.set_latency(Some(Duration::from_millis(3)));
    let replica_slow = replica_share("the replica 3 ms further").await;
    replica_proxy.set_latency(None);
    master_proxy.set_latency(Some(Duration::from_millis(3)));
    let master_slow = replica_share("the master 3 ms further").await;
    assert!(
        replica_slow <= 0.05,
        "{:.1} % of the reads went to the replica 3 ms further",
        100.0 * replica_slow
    );
    assert!(
        master_slow >= 0.95,
        "only {:.1} % of the reads went to the replica when the master was 3 ms further",
        100.0 * master_slow
    );
}

/// Sentinel (1 master, 2 replicas, each server behind a proxy the sentinels name, so every copy
/// is one proxy hop away and the master is not nearer by construction), `nearest`: with
/// 3 ms added in front of one replica, the client's replica connection goes to the other (it
/// connects to every replica at once and keeps the first ready) and the slow one serves no read;
/// with 3 ms in front of both, the master is the nearest copy and serves at least 95 % of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_nearest_reads_go_to_the_nearer_copy() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let topology = SentinelTopology::start(SentinelConfig {
        replicas: 2,
        down_after: Duration::from_millis(1000),
        proxied: true,
        ..SentinelConfig::default()
    })
    .await
    .unwrap();
    let master = topology.master_addr().await.unwrap();
    let [slow, fast] = [1, 2].map(|i| topology.servers()[i].addr());
    let delay = |replica| {
        let proxy = topology.proxy_of(replica).unwrap();
        proxy.set_latency(Some(Duration::from_millis(3)));
    };
    delay(slow);
    let client = Client::with_config(ClientConfig {
        deadline: Duration::from_secs(10),
        read_from: ReadFrom::Nearest,
        ..ClientConfig::from_url(&common::sentinel_url(&topology)).unwrap()
    })
    .await
    .unwrap();
    let key = "near";
    let () = client.clone().set(key, "v").await.unwrap();
    let [m, s, f] = settled_reads(&client, key, [master, slow, fast]).await;
    eprintln!(
        "Sentinel nearest, one replica 3 ms further: {m} GETs on the master, {s} on it, {f} on the other replica"
    );
    delay(fast);
    let [m2, s2, f2] = settled_reads(&client, key, [master, slow, fast]).await;
    eprintln!(
        "Sentinel nearest, both replicas 3 ms further: {m2} GETs on the master, {s2} and {f2} on the replicas"
    );
    assert!(
        s * 100 <= m + s + f,
        "{s} of {} reads went to the replica 3 ms further",
        m + s + f
    );
    assert!(f > 0, "the nearer replica served no read");
    assert!(
        m2 * 100 >= 95 * (m2 + s2 + f2),
        "only {m2} of {} reads went to the master when it was the nearest",
        m2 + s2 + f2
    );
}

/// Waits 3 s (12 measuring periods: the client's round trips settle), then reads `key` with 20
/// tasks for 1 s; the GETs each of `nodes` served meanwhile (their `INFO commandstats`).
async fn settled_reads<const N: usize>(
    client: &Client,
    key: &'static str,
    nodes: [SocketAddr; N],
) -> [u64; N] {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = common::calls_each(nodes, "get").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (mut client, stop) = (client.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _: Option<String> = client.get(key).await.unwrap();
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let now = common::calls_each(nodes, "get").await;
    std::array::from_fn(|i| now[i] - before[i])
}
