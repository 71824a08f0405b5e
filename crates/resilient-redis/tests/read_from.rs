//! Where reads go (`ReadFrom`) on Sentinel (1 master, 2 replicas, `down-after 1000`):
//! - `master-preferred` serves reads from the master while it is up, and from the replicas
//!   while it is down, so reads go on through the SIGKILL of the master;
//! - a handle that read from a replica never sends a write there.
//!
//! Figures are printed; run with `--nocapture` to see them.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::AsyncCommands;
use redis_lab::{RedisServer, SentinelTopology};
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
    config.sentinel.as_mut().unwrap().read_from = read_from;
    Client::with_config(config).await.unwrap()
}

/// `INFO commandstats` calls of `command` on `server` (0 when never called).
async fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server
        .info_field("commandstats", &format!("cmdstat_{command}"))
        .await;
    info.ok()
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls=").map(str::to_owned))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
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
    let mut topology = common::sentinel_lab().await;
    let client = client_of(&topology, ReadFrom::MasterPreferred).await;
    let () = client.clone().set("greeting", "hello").await.unwrap();
    replicated(&topology, "greeting").await;

    let origin = Instant::now();
    let buckets: Arc<Vec<AtomicU64>> = Arc::new((0..400).map(|_| AtomicU64::new(0)).collect());
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let (mut c, buckets, errors, stop) = (
            client.clone(),
            buckets.clone(),
            errors.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get::<_, Option<String>>("greeting").await {
                    Ok(Some(v)) if v == "hello" => {
                        let i = (origin.elapsed().as_millis() / BUCKET.as_millis()) as usize;
                        buckets[i.min(buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
                    }
                    other => errors.lock().unwrap().push(format!("GET: {other:?}")),
                }
            }
        });
    }
    let writes = Arc::new(AtomicU64::new(0));
    for w in 0..5 {
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
    // A healthy phase, measured (not a synchronisation).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut replica_gets = 0;
    for r in replicas(&topology).await {
        replica_gets += calls(r, "get").await;
    }
    let healthy_reads: u64 = buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
    let replica_reads_healthy = client.stats().replica_reads;

    let old = topology.master_addr().await.unwrap();
    let killed_at = Instant::now();
    topology.server_by_addr_mut(old).unwrap().kill().unwrap();
    let new = topology
        .wait_for_new_master(old, Duration::from_secs(30))
        .await
        .unwrap();
    let known_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }

    let count = |i: usize| buckets[i].load(Ordering::Relaxed);
    let index = |t: Instant| (t.duration_since(origin).as_millis() / BUCKET.as_millis()) as usize;
    // Healthy: the full buckets before the kill, the first (warm-up) left out.
    let healthy: Vec<u64> = (1..index(killed_at)).map(count).collect();
    let healthy_rate = healthy.iter().sum::<u64>() as f64 / healthy.len() as f64;
    // The failover: every bucket from the kill's to the new master's being known.
    let failover: Vec<u64> = (index(killed_at)..=index(known_at)).map(count).collect();
    let worst = *failover.iter().min().unwrap();
    let errors = errors.lock().unwrap();
    eprintln!(
        "master-preferred through a killed master: healthy {healthy_rate:.0} reads per 250 ms \
         ({} of {healthy_reads} served by replicas), failover {:?} long (new master {new}): \
         worst 250 ms {worst} reads ({:.0} %), buckets {failover:?}; {} writes, {} errors",
        replica_gets,
        known_at - killed_at,
        100.0 * worst as f64 / healthy_rate,
        writes.load(Ordering::Relaxed),
        errors.len()
    );
    let replica_reads = client.stats().replica_reads - replica_reads_healthy;
    eprintln!(
        "reads sent to replicas (client's count): {replica_reads_healthy} while the master was up, {replica_reads} after the kill"
    );
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(10)]);
    assert_eq!(
        replica_reads_healthy, 0,
        "the client sent reads to replicas while the master was up"
    );
    assert!(
        replica_reads > 0,
        "no read went to a replica while the master was down"
    );
    assert!(
        worst as f64 >= 0.5 * healthy_rate,
        "the reads fell to {worst} in a bucket of the failover (healthy {healthy_rate:.0})"
    );
    assert!(
        (replica_gets as f64) < 0.01 * healthy_reads as f64,
        "replicas served {replica_gets} of {healthy_reads} reads while the master was up"
    );
}
