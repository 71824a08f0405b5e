//! The client against a real Sentinel deployment (1 master, 2 replicas, 3 sentinels,
//! `down-after-milliseconds` 1000): SIGKILL of the master and a manual `SENTINEL FAILOVER`
//! under load, with a raw redis-rs baseline on the address found at start in the same runs.
//!
//! The figures (time from the sentinels' `+switch-master` to the first successful write on the
//! new master) are printed; run with `--nocapture` to see them.
mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use redis::{AsyncCommands, aio::MultiplexedConnection};
use redis_lab::{SentinelConfig, SentinelTopology};
use resilient_redis::{Client, ClientConfig, ReadFrom};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};

const TASKS: usize = 50;
const RAW_TASKS: usize = 10;

/// 1 master, 2 replicas, 3 sentinels (quorum 2), `down-after-milliseconds` 1000, for the
/// SIGKILL tests.
///
/// `failover-timeout` is 1000 ms (the lab's default is 3000): when the sentinels split their
/// votes, the failover is retried after twice this timeout. With 3000 ms such a failover takes
/// about 8.4 s after the kill (measured), which no 5 s deadline covers; with 1000 ms it takes
/// about 4.3 s. A normal failover (about 2.3 s) is the same with either.
fn topology_config() -> SentinelConfig {
    SentinelConfig {
        failover_timeout: Duration::from_millis(1000),
        ..manual_failover_config()
    }
}

/// The same for `SENTINEL FAILOVER`, with the lab's `failover-timeout` (3000 ms): a forced
/// failover has no vote to split, and a short timeout could abort it while the sentinel waits
/// (up to its 1 s INFO period) to see the replica promoted.
fn manual_failover_config() -> SentinelConfig {
    SentinelConfig {
        replicas: 2,
        down_after: Duration::from_millis(1000),
        ..SentinelConfig::default()
    }
}

fn sentinel_url(topology: &SentinelTopology) -> String {
    let hosts: Vec<String> = topology
        .sentinel_addrs()
        .iter()
        .map(SocketAddr::to_string)
        .collect();
    format!(
        "redis+sentinel://{}/{}",
        hosts.join(","),
        topology.master_name()
    )
}

/// Waits for the sentinels to agree on a master other than `old`; on failure, panics with the
/// end of every sentinel's log (what Sentinel decided, for a failure in CI).
async fn new_master(topology: &SentinelTopology, old: SocketAddr) -> SocketAddr {
    match topology
        .wait_for_new_master(old, Duration::from_secs(30))
        .await
    {
        Ok(new) => new,
        Err(e) => {
            let mut logs = String::new();
            for sentinel in topology.sentinels() {
                let text = std::fs::read_to_string(sentinel.log_path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                logs.push_str(&format!("\n--- sentinel {} ---\n{tail}", sentinel.addr()));
            }
            panic!("no failover: {e}{logs}");
        }
    }
}

/// Polls `cond` every 5 ms until it holds; panics with `what` after `timeout`.
async fn poll_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Subscribes to `+switch-master` on every sentinel; each announcement comes with the instant it
/// was received. (The sentinel that led the failover announces first; the others follow once
/// they hear of it, so a round's switch time is the earliest announcement.)
async fn watch_switches(topology: &SentinelTopology) -> mpsc::UnboundedReceiver<(Instant, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for addr in topology.sentinel_addrs() {
        let client = redis::Client::open(format!("redis://{addr}")).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("+switch-master").await.unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(m) = messages.next().await {
                let at = Instant::now();
                let payload: String = m.get_payload().unwrap_or_default();
                if tx.send((at, payload)).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// The first announcement of a switch away from `old`: when it was heard, and the new master.
/// (Late announcements of an earlier switch, from sentinels that just heard of it, are skipped.)
async fn next_switch(
    rx: &mut mpsc::UnboundedReceiver<(Instant, String)>,
    old: SocketAddr,
) -> (Instant, String) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (at, payload) = tokio::time::timeout_at(end, rx.recv())
            .await
            .expect("a +switch-master within 30 s")
            .expect("switch watcher alive");
        let fields: Vec<&str> = payload.split_whitespace().collect();
        if let [_, old_ip, old_port, new_ip, new_port] = fields.as_slice()
            && format!("{old_ip}:{old_port}") == old.to_string()
        {
            return (at, format!("{new_ip}:{new_port}"));
        }
    }
}

/// What a workload saw.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    /// GETs that did not return the value just SET (lost by asynchronous replication in a
    /// failover: a property of Redis, not a client error).
    mismatched: AtomicU64,
    /// Nanoseconds since `origin` of the first successful SET completed after `armed_ns`.
    first_write_ns: AtomicU64,
    /// Writes completed after this (nanoseconds since `origin`) count for `first_write_ns`.
    armed_ns: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Counts {
    fn new() -> Arc<Counts> {
        let c = Counts::default();
        c.first_write_ns.store(u64::MAX, Ordering::SeqCst);
        c.armed_ns.store(u64::MAX, Ordering::SeqCst);
        Arc::new(c)
    }

    /// Records an error. The caller should yield next: a loop on errors that come back at once
    /// (a client failing fast) would otherwise never give the runtime back.
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 5 {
            first.push(e.to_string());
        }
    }

    fn wrote(&self, origin: Instant) {
        let now = origin.elapsed().as_nanos() as u64;
        if now > self.armed_ns.load(Ordering::SeqCst) {
            self.first_write_ns.fetch_min(now, Ordering::SeqCst);
        }
    }

    /// Records the first successful write completed after `from`.
    fn arm(&self, origin: Instant, from: Instant) {
        self.first_write_ns.store(u64::MAX, Ordering::SeqCst);
        self.armed_ns
            .store((from - origin).as_nanos() as u64, Ordering::SeqCst);
    }

    fn first_write(&self, origin: Instant) -> Option<Instant> {
        match self.first_write_ns.load(Ordering::SeqCst) {
            u64::MAX => None,
            ns => Some(origin + Duration::from_nanos(ns)),
        }
    }
}

/// `TASKS` tasks doing SET then GET of their own keys through the resilient client.
fn resilient_load(
    client: &Client,
    counts: &Arc<Counts>,
    stop: &Arc<AtomicBool>,
    origin: Instant,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let (mut c, counts, stop) = (client.clone(), counts.clone(), stop.clone());
        set.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("resilient:{t}:{}", i % 16);
                let value = format!("v{i}");
                if let Err(e) = c.set::<_, _, ()>(&key, &value).await {
                    counts.error(e);
                    tokio::task::yield_now().await;
                    continue;
                }
                counts.wrote(origin);
                match c.get::<_, Option<String>>(&key).await {
                    Ok(got) => {
                        if got.as_deref() != Some(value.as_str()) {
                            counts.mismatched.fetch_add(1, Ordering::Relaxed);
                        }
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counts.error(e);
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
    }
    set
}

/// The baseline: a plain redis-rs `MultiplexedConnection` on the master found at start,
/// re-opened to the same address after an I/O error, as a hand-written app would.
async fn raw_load(master: SocketAddr, counts: &Arc<Counts>, stop: &Arc<AtomicBool>) -> JoinSet<()> {
    let url = format!("redis://{master}");
    let first = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let shared: Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>> =
        Arc::new(tokio::sync::Mutex::new(Some(first)));
    let mut set = JoinSet::new();
    for t in 0..RAW_TASKS {
        let (url, shared, counts, stop) =
            (url.clone(), shared.clone(), counts.clone(), stop.clone());
        set.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let conn = {
                    let mut guard = shared.lock().await;
                    match guard.as_ref() {
                        Some(c) => Ok(c.clone()),
                        None => match redis::Client::open(url.as_str())
                            .unwrap()
                            .get_multiplexed_async_connection()
                            .await
                        {
                            Ok(c) => {
                                *guard = Some(c.clone());
                                Ok(c)
                            }
                            Err(e) => Err(e),
                        },
                    }
                };
                let result = match conn {
                    Ok(mut c) => {
                        let key = format!("raw:{t}:{}", i % 16);
                        c.set::<_, _, ()>(&key, i).await
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if e.is_io_error() || e.is_connection_dropped() {
                            *shared.lock().await = None;
                        }
                        counts.error(e);
                        // Keep a dead address from turning into a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    set
}

async fn finish(stop: &AtomicBool, mut sets: Vec<JoinSet<()>>) {
    stop.store(true, Ordering::Relaxed);
    for set in &mut sets {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
}

/// Waits until the workload has completed `n` more operations.
async fn progress(counts: &Counts, n: u64, what: &str) {
    let from = counts.ok.load(Ordering::Relaxed);
    poll_until(what, Duration::from_secs(10), || {
        counts.ok.load(Ordering::Relaxed) >= from + n
    })
    .await;
}

/// The median (the mean of the two middle values for an even count).
fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_master_is_invisible_and_followed_at_once() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let mut topology = SentinelTopology::start(topology_config()).await.unwrap();
    let client = Client::with_config(ClientConfig::from_url(&sentinel_url(&topology)).unwrap())
        .await
        .unwrap();
    let mut switches = watch_switches(&topology).await;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Counts::new();
    let raw_counts = Counts::new();
    let first_master = topology.master_addr().await.unwrap();
    let mut sets = vec![
        resilient_load(&client, &counts, &stop, origin),
        raw_load(first_master, &raw_counts, &stop).await,
    ];
    // A subscription through the client, and a publisher.
    let received = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let (mut pubsub_set, resubscriptions) = (JoinSet::new(), Arc::new(AtomicU64::new(0)));
    {
        let mut news = client.subscribe(&["news"], &[]).await.unwrap();
        let (received, resubscriptions, stopping) =
            (received.clone(), resubscriptions.clone(), stop.clone());
        pubsub_set.spawn(async move {
            while !stopping.load(Ordering::Relaxed) {
                if let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(50), news.next_message()).await
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            resubscriptions.store(news.resubscriptions(), Ordering::Relaxed);
        });
        // PUBLISH is not safe to repeat: its (ambiguous) failures at the kill are not counted.
        let (mut publisher, stop, published) =
            (client.idempotent(), stop.clone(), published.clone());
        pubsub_set.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if publisher.publish::<_, _, i64>("news", i).await.is_ok() {
                    published.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    sets.push(pubsub_set);
    progress(&counts, 1000, "the warm-up").await;

    // Two failovers: the two replicas are promoted in turn.
    let mut figures = Vec::new();
    for round in 1..=2 {
        let old = topology.master_addr().await.unwrap();
        let killed_at = Instant::now();
        topology.server_by_addr_mut(old).unwrap().kill().unwrap();
        // A write that completes well after the kill went to the new master: there is no master
        // in between (the sentinels wait down-after, 1 s, before they even vote). The margin
        // excludes replies the old master sent just before it died.
        counts.arm(origin, killed_at + Duration::from_millis(500));
        let (switch_at, new) = next_switch(&mut switches, old).await;
        poll_until(
            "the first write on the new master",
            Duration::from_secs(10),
            || counts.first_write(origin).is_some(),
        )
        .await;
        let first_write = counts.first_write(origin).unwrap();
        // A negative figure would mean the client heard the announcement and wrote before this
        // test heard it.
        let after_switch_ms = if first_write >= switch_at {
            (first_write - switch_at).as_secs_f64() * 1e3
        } else {
            -(switch_at - first_write).as_secs_f64() * 1e3
        };
        eprintln!(
            "failover {round}: killed {old}; +switch-master to {new} {:.0} ms after the kill; \
             first write on the new master {after_switch_ms:.1} ms after the switch",
            (switch_at - killed_at).as_secs_f64() * 1e3
        );
        figures.push(after_switch_ms);
        let new = new_master(&topology, old).await;
        assert_eq!(client.health().await.master, Some(new.to_string()));
        progress(&counts, 500, "traffic on the new master").await;
        let heard = received.load(Ordering::Relaxed);
        poll_until(
            "messages on the re-subscribed channel",
            Duration::from_secs(10),
            || received.load(Ordering::Relaxed) > heard + 10,
        )
        .await;
    }
    finish(&stop, sets).await;

    let errors = counts.errors.load(Ordering::Relaxed);
    let raw_errors = raw_counts.errors.load(Ordering::Relaxed);
    eprintln!(
        "resilient: {} ok, {errors} errors, {} GETs lost a just-written value, {} of {} pub/sub messages; raw redis-rs: {} ok, {raw_errors} errors; switch -> first write (ms): {figures:?}, median {:.1}",
        counts.ok.load(Ordering::Relaxed),
        counts.mismatched.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        published.load(Ordering::Relaxed),
        raw_counts.ok.load(Ordering::Relaxed),
        median_ms(figures.clone()),
    );
    assert_eq!(
        errors,
        0,
        "resilient client errors: {:?}",
        counts.first_errors.lock().unwrap()
    );
    assert!(raw_errors > 0, "the raw baseline should see the failover");
    assert_eq!(
        resubscriptions.load(Ordering::Relaxed),
        2,
        "one per failover"
    );
    assert!(
        median_ms(figures.clone()) <= 100.0,
        "median switch -> first write {figures:?} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_is_invisible() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let topology = SentinelTopology::start(manual_failover_config())
        .await
        .unwrap();
    let client = Client::connect(&sentinel_url(&topology)).await.unwrap();
    let old = topology.master_addr().await.unwrap();

    let health = client.health().await;
    assert!(health.healthy, "{health}");
    assert_eq!(health.master, Some(old.to_string()));
    assert_eq!(health.replicas.as_ref().map(Vec::len), Some(2), "{health}");
    assert_eq!(health.sentinels.as_ref().map(Vec::len), Some(3), "{health}");

    let mut switches = watch_switches(&topology).await;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Counts::new();
    let raw_counts = Counts::new();
    let sets = vec![
        resilient_load(&client, &counts, &stop, origin),
        raw_load(old, &raw_counts, &stop).await,
    ];
    progress(&counts, 1000, "the warm-up").await;

    let mut admin = topology.sentinels()[0].admin().await.unwrap();
    let () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(topology.master_name())
        .query_async(&mut admin)
        .await
        .unwrap();
    let (switch_at, new) = next_switch(&mut switches, old).await;
    let new_addr = new_master(&topology, old).await;
    assert_eq!(new, new_addr.to_string());
    // The old master is turned into a replica after the switch: wait for it, so the client has
    // met its READONLY replies (or its dropped connections) before the load stops.
    let demoted = &topology.servers()[0];
    // (Sentinel waits about 8 s before it reconfigures a node that still says it is a master.)
    let end = Instant::now() + Duration::from_secs(30);
    // (The demotion drops its clients: an error here is "not yet".)
    while demoted
        .info_field("replication", "role")
        .await
        .unwrap_or_default()
        != "slave"
    {
        assert!(Instant::now() < end, "the old master was never demoted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress(&counts, 1000, "traffic after the failover").await;
    eprintln!(
        "manual failover: switch to {new} at +{:.0} ms; client now on {:?}",
        (switch_at - origin).as_secs_f64() * 1e3,
        client.health().await.master
    );
    finish(&stop, sets).await;

    let errors = counts.errors.load(Ordering::Relaxed);
    let raw_errors = raw_counts.errors.load(Ordering::Relaxed);
    eprintln!(
        "manual failover: resilient {} ok, {errors} errors; raw redis-rs {} ok, {raw_errors} errors",
        counts.ok.load(Ordering::Relaxed),
        raw_counts.ok.load(Ordering::Relaxed),
    );
    assert_eq!(
        errors,
        0,
        "resilient client errors: {:?}",
        counts.first_errors.lock().unwrap()
    );
    assert!(raw_errors > 0, "the raw baseline should see the failover");
    assert_eq!(client.health().await.master, Some(new_addr.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_go_on_while_the_master_is_down() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let mut topology = SentinelTopology::start(topology_config()).await.unwrap();
    let mut config = ClientConfig::from_url(&sentinel_url(&topology)).unwrap();
    config.read_from = ReadFrom::PreferReplica;
    let mut client = Client::with_config(config).await.unwrap();
    let () = client.set("greeting", "hello").await.unwrap();
    let old = topology.master_addr().await.unwrap();
    // Wait until a replica has the key (replication is asynchronous).
    let end = Instant::now() + Duration::from_secs(5);
    while client.get::<_, Option<String>>("greeting").await.unwrap() != Some("hello".into()) {
        assert!(Instant::now() < end, "the replicas never got the key");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Counts::new();
    let mut set = JoinSet::new();
    for _ in 0..10 {
        let (mut c, reads, stop) = (client.clone(), reads.clone(), stop.clone());
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get::<_, Option<String>>("greeting").await {
                    Ok(Some(v)) if v == "hello" => {
                        reads.ok.fetch_add(1, Ordering::Relaxed);
                        // Counted as "writes" for the first-success clock: reads here.
                        reads.wrote(origin);
                    }
                    Ok(other) => reads.error(format!("read {other:?}")),
                    Err(e) => {
                        reads.error(e);
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
    }
    progress(&reads, 500, "reads before the kill").await;
    let killed_at = Instant::now();
    topology.server_by_addr_mut(old).unwrap().kill().unwrap();
    // No master from now until the failover (the sentinels wait 1 s before even voting).
    reads.arm(origin, killed_at + Duration::from_millis(100));
    let before = reads.ok.load(Ordering::Relaxed);
    progress(&reads, 500, "reads while the master is down").await;
    let master_now = topology.master_addr().await.unwrap();
    let during = reads.ok.load(Ordering::Relaxed) - before;
    let new = new_master(&topology, old).await;
    let () = client.set("greeting", "hello").await.unwrap();
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    eprintln!(
        "replica reads: {during} reads while the sentinels still named the dead master {master_now}; {} errors; new master {new}",
        reads.errors.load(Ordering::Relaxed)
    );
    assert_eq!(
        master_now, old,
        "the reads were counted before the failover"
    );
    assert_eq!(
        reads.errors.load(Ordering::Relaxed),
        0,
        "{:?}",
        reads.first_errors.lock().unwrap()
    );
}

/// The same re-subscription without Sentinel: a single server restarted under a subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_survives_a_server_restart() {
    let mut server = redis_lab::RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let mut news = client.subscribe(&["news"], &["alerts.*"]).await.unwrap();
    // PUBLISH is not safe to repeat: let the client re-send it (a duplicate is harmless here).
    let mut publisher = client.idempotent();

    // Publishes until the subscriber hears one message on each subscription.
    async fn heard_both(
        publisher: &mut Client,
        news: &mut resilient_redis::ResilientPubSub,
        round: u32,
    ) {
        let end = Instant::now() + Duration::from_secs(10);
        let (mut channel, mut pattern) = (false, false);
        while !(channel && pattern) {
            assert!(Instant::now() < end, "no messages after round {round}");
            let _: i64 = publisher.publish("news", round).await.unwrap();
            let _: i64 = publisher.publish("alerts.disk", round).await.unwrap();
            // (The subscriber may not be back yet: keep publishing until it hears both.)
            while let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(20), news.next_message()).await
            {
                let payload: u32 = m.get_payload().unwrap();
                if payload == round {
                    channel |= m.get_channel_name() == "news";
                    pattern |= m.get_channel_name() == "alerts.disk" && m.from_pattern();
                }
            }
        }
    }

    heard_both(&mut publisher, &mut news, 0).await;
    server.restart().await.unwrap();
    heard_both(&mut publisher, &mut news, 1).await;
    assert_eq!(news.resubscriptions(), 1);
}

/// A master frozen (SIGSTOP) until the sentinels promote a replica: a write in flight there is
/// sent to the new master once the sentinels name it (SET is safe to repeat), not waited out to
/// its deadline on the frozen one. No caller sees an error, and writes resume on the new
/// master before the old one thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_left_for_its_successor() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let topology = SentinelTopology::start(topology_config()).await.unwrap();
    let client = Client::with_config(ClientConfig::from_url(&sentinel_url(&topology)).unwrap())
        .await
        .unwrap();
    let writes = common::TimedWrites::start(&client, "frozen");
    let ok_since = |since: Instant| writes.ok_since(since);
    let start = Instant::now();
    poll_until("the first writes", Duration::from_secs(5), || {
        ok_since(start)
    })
    .await;

    let old = topology.master_addr().await.unwrap();
    frozen(&topology, old).pause().unwrap();
    let new = new_master(&topology, old).await;
    let switched = Instant::now();
    poll_until(
        "writes on the new master while the old one is frozen",
        Duration::from_secs(10),
        || ok_since(switched),
    )
    .await;
    frozen(&topology, old).resume().unwrap();
    let outcomes = writes.finish().await;
    assert_eq!(client.health().await.master, Some(new.to_string()));
    let errors: Vec<&String> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} writes failed: {:?}",
        errors.len(),
        outcomes.len(),
        &errors[..errors.len().min(3)]
    );
}

/// The server of `topology` at `addr`.
fn frozen(topology: &SentinelTopology, addr: SocketAddr) -> &redis_lab::RedisServer {
    topology
        .servers()
        .iter()
        .find(|s| s.addr() == addr)
        .expect("a server of the lab")
}
