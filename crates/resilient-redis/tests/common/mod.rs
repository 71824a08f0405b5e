//! Shared helpers for the client's tests against real servers.
#![allow(dead_code, unreachable_pub)]

pub mod exactly_once;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{AsyncCommands, aio::MultiplexedConnection};
use resilient_redis::{Client, Outcome};
use tokio::{sync::Mutex, task::JoinSet};

/// For the tests of one file that must run one at a time (each test file is its own binary,
/// with its own lock): they start several processes and load them, and what they measure
/// (rates, spreads, Sentinel's `down-after` timing) is the client's only when they do not fight
/// for two cores. Hold `common::ONE_AT_A_TIME.lock().await` for the whole test.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// What one workload run saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    pub ambiguous: u64,
    pub wrong_values: u64,
    /// GETs that found the key gone (a restart without saving loses data: not a client error).
    pub lost_values: u64,
    pub errors: Vec<String>,
}

impl Tally {
    pub fn errors(&self) -> u64 {
        self.failed + self.ambiguous
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    ambiguous: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
}

/// A connection the workload can use: the resilient client, or a raw redis-rs connection that a
/// hand-written app would re-open after an I/O error (no retries).
#[derive(Clone)]
pub enum Conn {
    Resilient(Client),
    Raw {
        url: String,
        conn: Arc<Mutex<Option<MultiplexedConnection>>>,
    },
}

impl Conn {
    pub async fn raw(url: &str) -> Conn {
        let client = redis::Client::open(url).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        Conn::Raw {
            url: url.to_owned(),
            conn: Arc::new(Mutex::new(Some(conn))),
        }
    }

    async fn raw_conn(
        url: &str,
        slot: &Mutex<Option<MultiplexedConnection>>,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the connection; for raw, drops the connection after an I/O error.
    pub async fn run<T, F, Fut>(&self, f: F) -> redis::RedisResult<T>
    where
        F: FnOnce(Either) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match self {
            Conn::Resilient(c) => f(Either::Resilient(c.clone())).await,
            Conn::Raw { url, conn } => {
                let c = Self::raw_conn(url, conn).await?;
                let r = f(Either::Raw(c)).await;
                if let Err(e) = &r
                    && (e.is_io_error() || e.is_connection_dropped())
                {
                    *conn.lock().await = None;
                }
                r
            }
        }
    }
}

/// A connection handed to one operation.
pub enum Either {
    Resilient(Client),
    Raw(MultiplexedConnection),
}

macro_rules! on_conn {
    ($either:expr, |$c:ident| $body:expr) => {
        match $either {
            Either::Resilient(mut $c) => $body,
            Either::Raw(mut $c) => $body,
        }
    };
}

/// `tasks` tasks doing SET then GET of their own keys until `stop` is set.
pub fn spawn_set_get(
    conn: Conn,
    tasks: usize,
    prefix: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Tally> {
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        let counts = Arc::new(Counts::default());
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut set = JoinSet::new();
        for t in 0..tasks {
            let (conn, stop, counts, errors, prefix) = (
                conn.clone(),
                stop.clone(),
                counts.clone(),
                errors.clone(),
                prefix.clone(),
            );
            set.spawn(async move {
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("{prefix}:{t}:{}", i % 64);
                    let value = format!("v{i}");
                    let v2 = value.clone();
                    let r = conn
                        .run(|e| async move {
                            on_conn!(e, |c| {
                                let () = c.set(&key, &v2).await?;
                                let got: Option<String> = c.get(&key).await?;
                                Ok(got)
                            })
                        })
                        .await;
                    if let Ok(None) = r {
                        counts.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    record(
                        &counts,
                        &errors,
                        r.map(|got| got.is_none_or(|g| g == value)),
                    );
                }
            });
        }
        while set.join_next().await.is_some() {}
        tally(&counts, &errors)
    })
}

/// `tasks` tasks doing INCR of one key until `stop` is set.
pub fn spawn_incr(
    conn: Conn,
    tasks: usize,
    key: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Tally> {
    let key = key.to_owned();
    tokio::spawn(async move {
        let counts = Arc::new(Counts::default());
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut set = JoinSet::new();
        for _ in 0..tasks {
            let (conn, stop, counts, errors, key) = (
                conn.clone(),
                stop.clone(),
                counts.clone(),
                errors.clone(),
                key.clone(),
            );
            set.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let k = key.clone();
                    let r = conn
                        .run(|e| async move { on_conn!(e, |c| c.incr::<_, _, i64>(&k, 1).await) })
                        .await;
                    record(&counts, &errors, r.map(|_| true));
                }
            });
        }
        while set.join_next().await.is_some() {}
        tally(&counts, &errors)
    })
}

fn record(counts: &Counts, errors: &std::sync::Mutex<Vec<String>>, r: redis::RedisResult<bool>) {
    match r {
        Ok(true) => counts.ok.fetch_add(1, Ordering::Relaxed),
        Ok(false) => counts.wrong.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            let mut errs = errors.lock().unwrap();
            if errs.len() < 20 {
                errs.push(e.to_string());
            }
            match Outcome::of(&e) {
                Outcome::Failed => counts.failed.fetch_add(1, Ordering::Relaxed),
                Outcome::Ambiguous => counts.ambiguous.fetch_add(1, Ordering::Relaxed),
                // The server replied, not with what the workload expected.
                Outcome::Applied => counts.wrong.fetch_add(1, Ordering::Relaxed),
            }
        }
    };
}

fn tally(counts: &Counts, errors: &std::sync::Mutex<Vec<String>>) -> Tally {
    Tally {
        ok: counts.ok.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
        ambiguous: counts.ambiguous.load(Ordering::Relaxed),
        wrong_values: counts.wrong.load(Ordering::Relaxed),
        lost_values: counts.lost.load(Ordering::Relaxed),
        errors: errors.lock().unwrap().clone(),
    }
}

/// Waits until `f` is true, polling every 10 ms, for at most `limit`.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, mut f: F) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

pub fn init_tracing() {
    let _ = std::env::var("RUST_LOG").map(|_| ());
}

/// CRC16-XMODEM mod 16384, as Redis Cluster hashes keys (tags included).
pub fn key_slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let key = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(close) if close > 0 => &key[open + 1..open + 1 + close],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in key {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The client URL of a lab Sentinel topology: every sentinel, and the master's name.
pub fn sentinel_url(topology: &redis_lab::SentinelTopology) -> String {
    let hosts: Vec<String> = topology
        .sentinel_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    format!(
        "redis+sentinel://{}/{}",
        hosts.join(","),
        topology.master_name()
    )
}

/// A lab Sentinel topology: a master, 2 replicas, sentinels that call a master down after 1 s.
pub async fn sentinel_lab() -> redis_lab::SentinelTopology {
    redis_lab::SentinelTopology::start(redis_lab::SentinelConfig {
        replicas: 2,
        down_after: Duration::from_millis(1000),
        ..redis_lab::SentinelConfig::default()
    })
    .await
    .expect("start a lab Sentinel topology (redis-server and redis-sentinel must be installed)")
}

/// SIGKILLs the master of `topology` and waits (up to 30 s) for the sentinels to promote
/// another; returns the new master.
pub async fn kill_sentinel_master(
    topology: &mut redis_lab::SentinelTopology,
) -> std::net::SocketAddr {
    let old = topology.master_addr().await.unwrap();
    topology.server_by_addr_mut(old).unwrap().kill().unwrap();
    topology
        .wait_for_new_master(old, Duration::from_secs(30))
        .await
        .unwrap()
}

/// SIGKILLs the node of `cluster` at `addr`.
pub fn kill_cluster_node(cluster: &mut redis_lab::RedisCluster, addr: std::net::SocketAddr) {
    let index = cluster.nodes().iter().position(|n| n.addr() == addr);
    cluster.nodes_mut()[index.expect("a node of the cluster")]
        .kill()
        .unwrap();
}

/// Asks a sentinel of `topology` for a `SENTINEL FAILOVER` of its master.
pub async fn sentinel_failover(topology: &redis_lab::SentinelTopology) {
    let mut sentinel = topology.sentinels()[0].admin().await.unwrap();
    let () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(topology.master_name())
        .query_async(&mut sentinel)
        .await
        .unwrap();
}

/// Waits (up to 60 s) until `server`, a master replaced by a failover, reports itself a replica.
pub async fn wait_demoted(server: &redis_lab::RedisServer) {
    wait_until(
        "the old master to be demoted",
        Duration::from_secs(60),
        || async {
            server
                .info_field("replication", "role")
                .await
                .is_ok_and(|role| role == "slave")
        },
    )
    .await;
}

/// No lost update on a counter: every successful increment is in `final_value`, and anything
/// beyond them is accounted for by an ambiguous one (`ok <= final <= ok + ambiguous`).
pub fn assert_no_lost_update(ok: u64, ambiguous: u64, final_value: i64) {
    assert!(
        ok as i64 <= final_value && final_value <= (ok + ambiguous) as i64,
        "ok {ok} <= final {final_value} <= ok + ambiguous {} does not hold",
        ok + ambiguous
    );
}

/// A replica of the cluster master at `master`, if it has one.
pub async fn replica_of(
    cluster: &redis_lab::RedisCluster,
    master: std::net::SocketAddr,
) -> Option<&redis_lab::RedisServer> {
    let port = master.port().to_string();
    for node in cluster.nodes() {
        if node.info_field("replication", "role").await.ok().as_deref() == Some("slave")
            && node.info_field("replication", "master_port").await.ok() == Some(port.clone())
        {
            return Some(node);
        }
    }
    None
}

/// [`calls_at`] each of `addrs`.
pub async fn calls_each<const N: usize>(
    addrs: [std::net::SocketAddr; N],
    command: &str,
) -> [u64; N] {
    let mut calls = [0; N];
    for (n, addr) in calls.iter_mut().zip(addrs) {
        *n = calls_at(addr, command).await;
    }
    calls
}

/// `INFO commandstats` calls of `command` on the server at `addr` (0 when never called, or
/// when it does not answer).
pub async fn calls_at(addr: std::net::SocketAddr, command: &str) -> u64 {
    let info = async {
        let client = redis::Client::open(format!("redis://{addr}")).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    let info = tokio::time::timeout(Duration::from_secs(2), info)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls=").map(str::to_owned))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Takes `command` from the default user (`ACL SETUSER default -<command>`): the server
/// refuses it with `NOPERM` from then on, on every connection.
pub async fn deny(conn: &mut impl redis::aio::ConnectionLike, command: &str) {
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg(format!("-{command}"))
        .query_async(conn)
        .await
        .unwrap();
}

/// An error the client reports as applied by the server, said of the write itself (not of a
/// reply that could not be converted).
pub fn assert_applied(error: &redis::RedisError) {
    assert_eq!(
        resilient_redis::Outcome::of(error),
        resilient_redis::Outcome::Applied,
        "{error}"
    );
    let inner = resilient_redis::Error::from_redis(error).expect("the client's error");
    assert_eq!(inner.kind(), resilient_redis::ErrorKind::Server, "{error}");
}

/// Each write's outcome with the time it came back.
pub type Outcomes = Vec<(tokio::time::Instant, Result<(), String>)>;

/// One caller writing `SET key n` (n = 1, 2, ...) through `client` in a tight loop (again at once
/// after an error), each outcome kept with the time it came back.
pub struct TimedWrites {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    outcomes: std::sync::Arc<std::sync::Mutex<Outcomes>>,
    task: tokio::task::JoinHandle<()>,
}

impl TimedWrites {
    /// Starts the caller.
    pub fn start(client: &resilient_redis::Client, key: &'static str) -> TimedWrites {
        use redis::AsyncCommands;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (mut client, stop, outcomes) = (client.clone(), stop.clone(), outcomes.clone());
            async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let result = client
                        .set::<_, _, ()>(key, n)
                        .await
                        .map_err(|e| e.to_string());
                    outcomes
                        .lock()
                        .unwrap()
                        .push((tokio::time::Instant::now(), result));
                }
            }
        });
        TimedWrites {
            stop,
            outcomes,
            task,
        }
    }

    /// Whether a write succeeded after `since`.
    pub fn ok_since(&self, since: tokio::time::Instant) -> bool {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .any(|(at, r)| r.is_ok() && *at > since)
    }

    /// Stops the caller; every outcome, in order.
    pub async fn finish(self) -> Outcomes {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap();
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}
