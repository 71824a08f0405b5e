//! Exactly-once writes against real servers stay exact: counters and lists while connections
//! are killed and cut mid-reply, a counter while its slot migrates in Redis Cluster, tokens
//! placed in the slot of their keys; and what exactly-once costs against plain writes.
//! Replies and refusals are in `exactly_once_replies.rs`, group commit in
//! `exactly_once_group_commit.rs`.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::exactly_once::{SERIAL, TASKS};
use redis::{AsyncCommands, RedisResult, Value, aio::ConnectionLike};
use redis_lab::{ClusterConfig as LabConfig, FaultProxy, RedisCluster, RedisServer};
use resilient_redis::{Client, ClientConfig, ErrorKind, ExactlyOnceConfig, Outcome};
use tokio::{task::JoinSet, time::Instant};

/// What a workload saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
    ambiguous: u64,
    errors: Vec<String>,
}

#[derive(Clone, Copy)]
enum Op {
    Incr,
    Lpush,
}

async fn apply<C: ConnectionLike + Send + Sync>(c: &mut C, op: Op, key: &str) -> RedisResult<()> {
    match op {
        Op::Incr => c.incr::<_, _, i64>(key, 1).await.map(drop),
        Op::Lpush => c.lpush::<_, _, i64>(key, "x").await.map(drop),
    }
}

/// `TASKS` tasks applying `op` to `key` until `stop`.
fn spawn_writers<C>(
    conn: C,
    op: Op,
    key: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Tally>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let key = key.to_owned();
    tokio::spawn(async move {
        let (ok, failed, ambiguous) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut set = JoinSet::new();
        for _ in 0..TASKS {
            let (mut conn, stop, key) = (conn.clone(), stop.clone(), key.clone());
            let (ok, failed, ambiguous, errors) = (
                ok.clone(),
                failed.clone(),
                ambiguous.clone(),
                errors.clone(),
            );
            set.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match apply(&mut conn, op, &key).await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            let mut errs = errors.lock().unwrap();
                            if errs.len() < 10 {
                                errs.push(e.to_string());
                            }
                            match Outcome::of(&e) {
                                Outcome::Failed => failed.fetch_add(1, Ordering::Relaxed),
                                // Applied, with a reply not of the type asked for: counted
                                // where the bound `final <= ok + ambiguous` still holds.
                                Outcome::Ambiguous | Outcome::Applied => {
                                    ambiguous.fetch_add(1, Ordering::Relaxed)
                                }
                            }
                        }
                    };
                }
            });
        }
        while set.join_next().await.is_some() {}
        Tally {
            ok: ok.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            ambiguous: ambiguous.load(Ordering::Relaxed),
            errors: errors.lock().unwrap().clone(),
        }
    })
}

/// 5 s of writes while `CLIENT KILL TYPE normal` runs every 200 ms and the proxy cuts every 50th
/// connection in the middle of a reply. Returns the number of connections killed.
async fn faults_for_five_seconds(server: &RedisServer) -> u64 {
    let mut kills = 0;
    for _ in 0..25 {
        // The fault schedule, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(200)).await;
        kills += server.client_kill_normal().await.unwrap();
    }
    kills
}

/// A client through `url` with four connections: more reconnections per kill, so the proxy's
/// every-50th cut happens a few times in 5 s.
async fn client_of(url: &str) -> Client {
    let config = ClientConfig {
        pool_size: 4,
        ..ClientConfig::from_url(url).unwrap()
    };
    Client::with_config(config).await.unwrap()
}

async fn join(work: tokio::task::JoinHandle<Tally>, what: &str) -> Tally {
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .unwrap_or_else(|_| panic!("{what}: the client hung"))
        .unwrap()
}

/// The INCR target, with the plain client running the same workload on another key through the
/// same proxy and the same kills, for contrast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_counts_exactly_under_kills_and_cut_replies() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    // Four connections per client, so that the every-50th cut surely happens within the run.
    let xo_client = client_of(&proxy.url()).await;
    let xo = xo_client
        .exactly_once(ExactlyOnceConfig::default())
        .unwrap();
    let plain = client_of(&proxy.url()).await;
    proxy.set_drop_every(Some(50));
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let exact = spawn_writers(xo.clone(), Op::Incr, "xo:counter", stop.clone());
    let contrast = spawn_writers(plain.clone(), Op::Incr, "plain:counter", stop.clone());
    let kills = faults_for_five_seconds(&server).await;
    stop.store(true, Ordering::Relaxed);
    let exact = join(exact, "exactly-once").await;
    let contrast = join(contrast, "plain").await;
    let elapsed = started.elapsed();
    let mut admin = server.admin().await.unwrap();
    let exact_final: u64 = admin.get("xo:counter").await.unwrap();
    let plain_final: u64 = admin.get("plain:counter").await.unwrap();
    eprintln!(
        "kills={kills} cut={} elapsed={elapsed:?}\n  exactly-once: final={exact_final} {exact:?} {:?} client={:?}\n  plain:        final={plain_final} {contrast:?} client={:?}",
        proxy.stats().connections_dropped,
        xo.stats(),
        xo_client.stats(),
        plain.stats(),
    );
    assert!(
        kills >= 25,
        "the fault did not happen: {kills} connections killed"
    );
    assert!(
        proxy.stats().connections_dropped >= 1,
        "the proxy cut no reply"
    );
    assert_eq!(exact.ambiguous, 0, "ambiguous outcomes: {:?}", exact.errors);
    assert_eq!(exact.failed, 0, "definite failures: {:?}", exact.errors);
    assert_eq!(
        exact_final, exact.ok,
        "the counter must equal the successes"
    );
    assert!(
        xo.stats().replays > 0,
        "no retry was answered from a record"
    );
    assert!(elapsed < Duration::from_secs(12), "too slow: {elapsed:?}");
    // The plain client is honest but cannot be exact.
    assert!(contrast.ok <= plain_final && plain_final <= contrast.ok + contrast.ambiguous);
}

/// The LPUSH target: the list's length equals the successes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lpush_appends_exactly_under_kills_and_cut_replies() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let client = client_of(&proxy.url()).await;
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    proxy.set_drop_every(Some(50));
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let work = spawn_writers(xo.clone(), Op::Lpush, "list", stop.clone());
    let kills = faults_for_five_seconds(&server).await;
    stop.store(true, Ordering::Relaxed);
    let tally = join(work, "exactly-once").await;
    let elapsed = started.elapsed();
    let mut admin = server.admin().await.unwrap();
    let len: u64 = admin.llen("list").await.unwrap();
    eprintln!(
        "kills={kills} cut={} elapsed={elapsed:?} len={len} {tally:?} {:?} client={:?}",
        proxy.stats().connections_dropped,
        xo.stats(),
        client.stats()
    );
    assert!(
        kills >= 25,
        "the fault did not happen: {kills} connections killed"
    );
    // Four connections, each killed 25 times: the every-50th cut happens about twice.
    assert!(
        proxy.stats().connections_dropped >= 1,
        "the proxy cut no reply"
    );
    assert_eq!(tally.ambiguous, 0, "ambiguous outcomes: {:?}", tally.errors);
    assert_eq!(tally.failed, 0, "definite failures: {:?}", tally.errors);
    assert_eq!(len, tally.ok, "the list's length must equal the successes");
    assert!(
        xo.stats().replays > 0,
        "no retry was answered from a record"
    );
    assert!(elapsed < Duration::from_secs(12), "too slow: {elapsed:?}");
}

/// A cluster of three masters, a client of it, and exactly-once writes through that client.
async fn three_masters() -> (RedisCluster, Client, resilient_redis::ExactlyOnce) {
    let cluster = RedisCluster::start(LabConfig {
        masters: 3,
        replicas_per_master: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = Client::with_config(ClientConfig::cluster(&cluster.urls()).unwrap())
        .await
        .unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    (cluster, client, xo)
}

/// Redis Cluster: writes and groups of one slot run exactly once with their token in that slot;
/// keys in several slots and keyless writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tokens_share_the_slot_of_the_keys() {
    let _serial = SERIAL.lock().await;
    let (cluster, client, xo) = three_masters().await;
    let mut xo_conn = xo.clone();
    for expected in 1..=3 {
        let n: i64 = xo_conn.incr("{user1}:n", 1).await.unwrap();
        assert_eq!(n, expected);
    }
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("{user1}:a", 1)
        .incr("{user1}:b", 2)
        .query_async(&mut xo_conn)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
    let replayed = xo
        .send_with_key("k{odd}", redis::cmd("INCR").arg("other"))
        .await
        .unwrap();
    assert_eq!(
        xo.send_with_key("k{odd}", redis::cmd("INCR").arg("other"))
            .await
            .unwrap(),
        replayed
    );
    // Every token is in the slot of its keys.
    let mut admin = client.clone();
    let slot_of = |key: String| {
        let mut admin = admin.clone();
        async move {
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut admin)
                .await
                .unwrap();
            slot
        }
    };
    let user_slot = slot_of("{user1}".into()).await;
    let other_slot = slot_of("other".into()).await;
    let mut tokens = Vec::new();
    for node in cluster.nodes() {
        let mut conn = node.admin().await.unwrap();
        let keys: Vec<String> = conn.keys("xo:*").await.unwrap();
        tokens.extend(keys);
    }
    // The generated tokens' records share one hash (four records and its marker); the
    // caller-chosen key is a key of its own.
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    for token in tokens.iter().filter(|t| !t.contains("k:")) {
        let fields: i64 = client.clone().hlen(token).await.unwrap();
        assert_eq!(fields, 5, "{token}");
    }
    for token in &tokens {
        let slot = slot_of(token.clone()).await;
        let expected = if token.contains("k:k{odd}") {
            other_slot
        } else {
            user_slot
        };
        assert_eq!(slot, expected, "token {token}");
    }
    // Refused: keys in several slots, and a write without a key.
    let mset = redis::cmd("MSET").arg("a").arg(1).arg("b").arg(2).clone();
    let e = xo.send(&mset).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("several hash slots"), "{e}");
    let mut cross = redis::pipe();
    cross.incr("{a}x", 1).incr("{b}y", 1);
    assert_eq!(
        xo.send_pipeline(&cross).await.unwrap_err().kind(),
        ErrorKind::Refused
    );
    let publish = redis::cmd("PUBLISH").arg("ch").arg("m").clone();
    assert_eq!(
        xo.send(&publish).await.unwrap_err().kind(),
        ErrorKind::Refused
    );
    // SORT .. STORE's destination is a key too (the key table knows it): in another slot of the
    // same node (where a strict cluster script would refuse it) the call is refused before
    // anything is sent, and nothing is written; in the source's slot it runs.
    let mut same_node = None;
    'search: for i in 0..200 {
        let src = format!("src{i}");
        let src_slot = slot_of(src.clone()).await;
        for j in 0..200 {
            let dst = format!("dst{j}");
            let dst_slot = slot_of(dst.clone()).await;
            if dst_slot != src_slot
                && client.master_for_slot(src_slot as u16)
                    == client.master_for_slot(dst_slot as u16)
            {
                same_node = Some((src, dst));
                break 'search;
            }
        }
    }
    let (src, dst) = same_node.expect("two slots on one node");
    let () = admin.rpush(&src, 1).await.unwrap();
    let sort = redis::cmd("SORT").arg(&src).arg("STORE").arg(&dst).clone();
    let e = xo.send(&sort).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("several hash slots"), "{e}");
    let exists: bool = admin.exists(&dst).await.unwrap();
    assert!(!exists, "the refused command wrote {dst}");
    let near = format!("{{{src}}}:sorted");
    let sort = redis::cmd("SORT").arg(&src).arg("STORE").arg(&near).clone();
    assert_eq!(xo.send(&sort).await.unwrap(), Value::Int(1));
    let exists: bool = admin.exists(&near).await.unwrap();
    assert!(exists, "SORT .. STORE {near} did not write");
}

/// Redis Cluster: a slot moved to another master while 50 tasks INCR a key in it (its tokens
/// move with it): the counter still equals the successes, and nothing is ambiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_counter_stays_exact_while_its_slot_migrates() {
    let _serial = SERIAL.lock().await;
    let (cluster, client, xo) = three_masters().await;
    let mut admin = client.clone();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{m}:n")
        .query_async(&mut admin)
        .await
        .unwrap();
    let slot = u16::try_from(slot).unwrap();
    let owner = client.master_for_slot(slot).unwrap();
    let target = cluster.nodes()[..3]
        .iter()
        .map(|n| n.addr())
        .find(|a| a.to_string() != owner)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let work = spawn_writers(xo.clone(), Op::Incr, "{m}:n", stop.clone());
    // Let tokens pile up in the slot, then move it (the schedule, not a synchronisation).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    cluster.migrate_slot(slot, target).await.unwrap();
    let migration = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = join(work, "cluster exactly-once").await;
    let final_value: u64 = admin.get("{m}:n").await.unwrap();
    eprintln!(
        "migration {migration:?} to {target}: final={final_value} {tally:?} {:?} {:?}",
        xo.stats(),
        client.stats()
    );
    assert_eq!(client.master_for_slot(slot), Some(target.to_string()));
    assert_eq!(tally.ambiguous, 0, "ambiguous outcomes: {:?}", tally.errors);
    assert_eq!(tally.failed, 0, "definite failures: {:?}", tally.errors);
    assert_eq!(
        final_value, tally.ok,
        "the counter must equal the successes"
    );
}

/// What the throughput test runs: plain `INCR`, exactly-once `INCR`, or (the floor of any
/// script) `EVALSHA` of a script that only runs the command.
#[derive(Clone)]
enum Bench {
    Plain(Client),
    ExactlyOnce(resilient_redis::ExactlyOnce),
    ScriptFloor(Client, String),
}

/// Throughput, latency and CPU per operation of one workload.
struct Measured {
    ops_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    client_us_per_op: f64,
    server_us_per_op: f64,
    /// Context switches of the client's threads per operation: how often they went to sleep.
    client_switches_per_op: f64,
    commandstats: String,
}

/// CPU time of this process (the client side), from `/proc/self/stat` (100 ticks a second).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Context switches of this process's threads so far.
fn context_switches() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

async fn server_cpu(server: &RedisServer) -> f64 {
    let field = |f| async move { server.info_field("cpu", f).await.unwrap().parse::<f64>() };
    field("used_cpu_user").await.unwrap() + field("used_cpu_sys").await.unwrap()
}

/// `TASKS` tasks running `bench` for `window`, after `CONFIG RESETSTAT`.
async fn measure(server: &RedisServer, bench: Bench, window: Duration) -> Measured {
    let mut admin = server.admin().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    let (client_before, server_before) = (process_cpu(), server_cpu(server).await);
    let switches_before = context_switches();
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    for _ in 0..TASKS {
        let (mut bench, stop) = (bench.clone(), stop.clone());
        set.spawn(async move {
            let mut latency = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let n: RedisResult<i64> = match &mut bench {
                    Bench::Plain(c) => c.incr("bench:plain", 1).await,
                    Bench::ExactlyOnce(xo) => xo.incr("bench:xo", 1).await,
                    Bench::ScriptFloor(c, sha) => {
                        let cmd = redis::cmd("EVALSHA")
                            .arg(&*sha)
                            .arg(1)
                            .arg("bench:floor")
                            .clone();
                        cmd.query_async(c).await
                    }
                };
                n.unwrap();
                latency
                    .record(started.elapsed().as_micros() as u64)
                    .unwrap();
            }
            latency
        });
    }
    // The measurement window, not a synchronisation.
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    while let Some(task) = set.join_next().await {
        latency.add(task.unwrap()).unwrap();
    }
    let ops = latency.len() as f64;
    let client_cpu = (process_cpu() - client_before).as_secs_f64();
    let switches = context_switches() - switches_before;
    let server_cpu = server_cpu(server).await - server_before;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .unwrap();
    let commandstats = stats
        .lines()
        .filter(|l| {
            ["incr", "incrby", "evalsha", "psetex", "get"]
                .iter()
                .any(|c| l.starts_with(&format!("cmdstat_{c}:")))
        })
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let per_call = rest
                .split(',')
                .find_map(|f| f.strip_prefix("usec_per_call="))?;
            Some(format!("{name} {per_call} us"))
        })
        .collect::<Vec<_>>()
        .join(", ");
    Measured {
        ops_per_sec: ops / window.as_secs_f64(),
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        client_us_per_op: client_cpu * 1e6 / ops,
        server_us_per_op: server_cpu * 1e6 / ops,
        client_switches_per_op: switches as f64 / ops,
        commandstats,
    }
}

/// Throughput of exactly-once INCR against plain INCR (and against the floor of any script),
/// 50 tasks, three interleaved rounds of 2 s each, no faults; with p50/p99 latency and client and
/// server CPU per operation. Ignored: figures need a release build (`cargo test --release -p
/// resilient-redis --test exactly_once -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release"]
async fn exactly_once_incr_throughput_is_at_least_half_of_plain() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    let mut admin = server.admin().await.unwrap();
    let floor_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.pcall('INCR', KEYS[1])")
        .query_async(&mut admin)
        .await
        .unwrap();
    let window = Duration::from_secs(2);
    let _warm_up = measure(&server, Bench::ExactlyOnce(xo.clone()), window).await;
    let (mut plain_total, mut xo_total) = (0.0, 0.0);
    for round in 1..=3 {
        let plain = measure(&server, Bench::Plain(client.clone()), window).await;
        let exact = measure(&server, Bench::ExactlyOnce(xo.clone()), window).await;
        let floor = Bench::ScriptFloor(client.idempotent(), floor_sha.clone());
        let floor = measure(&server, floor, window).await;
        for (name, m) in [
            ("plain", &plain),
            ("exactly-once", &exact),
            ("script floor", &floor),
        ] {
            eprintln!(
                "round {round} {name:>12}: {:>7.0} ops/s  p50 {:>5} us  p99 {:>6} us  client {:>5.2} us/op {:.3} switches/op  server {:>5.2} us/op  ({})",
                m.ops_per_sec,
                m.p50_us,
                m.p99_us,
                m.client_us_per_op,
                m.client_switches_per_op,
                m.server_us_per_op,
                m.commandstats
            );
        }
        eprintln!(
            "round {round} ratio exactly-once/plain {:.2}, script floor/plain {:.2}",
            exact.ops_per_sec / plain.ops_per_sec,
            floor.ops_per_sec / plain.ops_per_sec
        );
        plain_total += plain.ops_per_sec;
        xo_total += exact.ops_per_sec;
    }
    eprintln!("ratio over the three rounds {:.2}", xo_total / plain_total);
    assert!(
        xo_total >= 0.5 * plain_total,
        "exactly-once {xo_total:.0} < 0.5 x plain {plain_total:.0}"
    );
}

/// The INCR target while the server also throttles (`THROTTLED` past 300 calls/s): the retry
/// budget runs out (and adaptive throttling may refuse retries), so the client gives up on
/// some calls whose attempt was lost mid-reply. An exactly-once write must not end in doubt
/// for that: it is sent again under its token within its deadline (soak 9, standalone seed
/// 139659669633673, `--exactly-once`: one write came back ambiguous; here ~10-100 did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_counts_exactly_when_the_policy_refuses_retries() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let client = client_of(&proxy.url()).await;
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    proxy.set_drop_every(Some(50));
    proxy.set_throttle(Some(300));
    let stop = Arc::new(AtomicBool::new(false));
    let work = spawn_writers(xo.clone(), Op::Incr, "xo:throttled", stop.clone());
    let kills = faults_for_five_seconds(&server).await;
    stop.store(true, Ordering::Relaxed);
    let tally = join(work, "exactly-once").await;
    proxy.set_throttle(None);
    let mut admin = server.admin().await.unwrap();
    let total: u64 = admin.get("xo:throttled").await.unwrap();
    let stats = client.stats();
    eprintln!(
        "kills={kills} cut={} throttled={} final={total} ok={} failed={} ambiguous={} {:?} client={stats:?}",
        proxy.stats().connections_dropped,
        proxy.stats().commands_throttled,
        tally.ok,
        tally.failed,
        tally.ambiguous,
        xo.stats(),
    );
    // The storm happened: the server refused calls and the policy gave up on some.
    assert!(proxy.stats().commands_throttled > 0);
    assert!(
        stats.failed + stats.ambiguous > 0,
        "the policy never gave up: {stats:?}"
    );
    assert_eq!(tally.ambiguous, 0, "ambiguous outcomes: {:?}", tally.errors);
    assert_eq!(total, tally.ok, "the counter must equal the successes");
}
