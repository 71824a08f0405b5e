//! A managed service's failover behind one hostname, staged as the cloud does it: a lab proxy
//! is the hostname; it sends *new* connections to the current primary and leaves open ones
//! where they are. Failover = `REPLICAOF NO ONE` on B, the proxy pointed at B, `REPLICAOF B` on
//! A: the client's open connections stay on A, which now answers writes with `READONLY` and
//! ends blocked commands with `UNBLOCKED`.
//!
//! Figures are printed; run with `--nocapture` to see them.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::AsyncCommands;
use redis_lab::{FaultProxy, RedisServer};
use resilient_redis::{Client, ClientConfig, ErrorKind, Outcome};
use tokio::{task::JoinSet, time::Instant};

const TASKS: usize = 50;

/// A primary A with a replica B, and a proxy (the "hostname") in front of A.
struct Service {
    a: RedisServer,
    b: RedisServer,
    proxy: FaultProxy,
}

impl Service {
    async fn start() -> Service {
        let a = RedisServer::start().await.expect("start A");
        let b = RedisServer::start().await.expect("start B");
        replicate(&b, &a).await;
        let proxy = FaultProxy::start(a.addr()).await.expect("start the proxy");
        Service { a, b, proxy }
    }

    /// The cloud's failover: B promoted, the name moved to B, A demoted. Returns when A has
    /// been told it is a replica.
    async fn fail_over(&self) -> Instant {
        self.b.replicaof(None).await.unwrap();
        self.proxy.set_upstream(self.b.addr());
        self.a.replicaof(Some(&self.b)).await.unwrap();
        Instant::now()
    }
}

/// Makes `replica` a replica of `primary` and waits for the link.
async fn replicate(replica: &RedisServer, primary: &RedisServer) {
    replica.replicaof(Some(primary)).await.unwrap();
    replica
        .wait_link_up(Duration::from_secs(10))
        .await
        .expect("the replica syncs");
}

fn config(url: String) -> ClientConfig {
    ClientConfig {
        url,
        rng_seed: Some(16),
        ..ClientConfig::default()
    }
}

/// Time since `origin`, in nanoseconds (for atomics).
fn nanos(origin: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(origin).as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_behind_one_hostname_is_followed_at_once() {
    let service = Service::start().await;
    let client = Client::with_config(config(service.proxy.url()))
        .await
        .unwrap();
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // When A was demoted, and the end of the first write *started* after it that succeeded.
    let demoted_at = Arc::new(AtomicU64::new(u64::MAX));
    let first_write_after = Arc::new(AtomicU64::new(u64::MAX));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (client, stop, demoted_at, first_write_after, ok, errors, first_errors) = (
            client.clone(),
            stop.clone(),
            demoted_at.clone(),
            first_write_after.clone(),
            ok.clone(),
            errors.clone(),
            first_errors.clone(),
        );
        tasks.spawn(async move {
            let mut c = client;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("cloud:{t}");
                let started = nanos(origin, Instant::now());
                let set: redis::RedisResult<()> = c.set(&key, i).await;
                if set.is_ok() && started >= demoted_at.load(Ordering::Relaxed) {
                    first_write_after.fetch_min(nanos(origin, Instant::now()), Ordering::Relaxed);
                }
                let got: redis::RedisResult<u64> = match set {
                    Ok(()) => c.get(&key).await,
                    Err(e) => Err(e),
                };
                match got {
                    Ok(v) => {
                        assert_eq!(v, i, "task {t} read back another value");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_errors.lock().unwrap();
                        if first.len() < 10 {
                            first.push(e.to_string());
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok_before = ok.load(Ordering::Relaxed);
    let demoted = service.fail_over().await;
    demoted_at.store(nanos(origin, demoted), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}

    let ok = ok.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let first = first_write_after.load(Ordering::Relaxed);
    let stats = client.stats();
    let recovery = Duration::from_nanos(first.saturating_sub(demoted_at.load(Ordering::Relaxed)));
    println!(
        "failover behind one hostname: {ok} SET+GET ok ({ok_before} before), {errors} errors; \
         first write started after the demotion succeeded {recovery:?} after it; \
         demotions {}, reconnects {}, retries {}",
        stats.demotions, stats.reconnects, stats.retries
    );
    assert_eq!(
        errors,
        0,
        "application-visible errors: {:?}",
        first_errors.lock().unwrap()
    );
    assert!(first != u64::MAX, "no write succeeded after the demotion");
    assert!(
        recovery <= Duration::from_millis(100),
        "first successful write {recovery:?} after the demotion (target: <= 100 ms)"
    );
    assert!(stats.demotions >= 1, "the demotion was not noticed");
    // The writes after the failover are on B, the new primary.
    let mut b = service.b.admin().await.unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut b).await.unwrap();
    assert_eq!(role[0], redis::Value::BulkString(b"master".to_vec()));
    let written: Option<u64> = b.get("cloud:0").await.unwrap();
    assert!(
        written.is_some(),
        "task 0's writes are not on the new primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_calls_and_subscriptions_move_to_the_new_primary() {
    let service = Service::start().await;
    let client = Client::with_config(config(service.proxy.url()))
        .await
        .unwrap();
    let mut news = client.subscribe(&["news"], &[]).await.unwrap();
    // A worker blocked on A when the failover comes.
    let worker = {
        let mut c = client.clone();
        tokio::spawn(async move {
            let popped: redis::RedisResult<Option<(String, String)>> = c.blpop("jobs", 10.0).await;
            popped
        })
    };
    // The worker is blocked on A (and the subscriber subscribed) before the failover.
    let until = Instant::now() + Duration::from_secs(5);
    while service
        .a
        .info_field("clients", "blocked_clients")
        .await
        .unwrap()
        != "1"
    {
        assert!(Instant::now() < until, "the worker never blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.fail_over().await;

    // A job pushed through the client after the failover reaches the worker, on B.
    let mut c = client.clone();
    let pushed: usize = c.lpush("jobs", "job-1").await.unwrap();
    assert_eq!(pushed, 1);
    let popped = tokio::time::timeout(Duration::from_secs(8), worker)
        .await
        .expect("the blocked worker never came back")
        .unwrap()
        .expect("BLPOP failed across the failover");
    assert_eq!(popped, Some(("jobs".to_owned(), "job-1".to_owned())));

    // The subscription resumed on B: a message published there reaches it.
    let until = Instant::now() + Duration::from_secs(5);
    let received = loop {
        let _: usize = c.publish("news", "after").await.unwrap();
        if let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(50), news.next_message()).await
        {
            break msg.get_payload::<String>().unwrap();
        }
        assert!(
            Instant::now() < until,
            "the subscription never resumed on the new primary"
        );
    };
    assert_eq!(received, "after");
    assert!(
        news.resubscriptions() >= 1,
        "the gap is not reported: {} resubscriptions",
        news.resubscriptions()
    );
    let mut b = service.b.admin().await.unwrap();
    let subscribers: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("news")
        .query_async(&mut b)
        .await
        .unwrap();
    assert_eq!(subscribers[1], redis::Value::Int(1), "not subscribed on B");
    println!(
        "blocking call re-issued on the new primary; subscription resumed after {} gap(s)",
        news.resubscriptions()
    );
}

/// A name that keeps pointing at a read-only node while `ROLE` is denied (so connecting cannot
/// tell): every write gets `READONLY`, every reconnection lands on the same node. The client
/// must not hammer it: reconnections are paced by the reconnect backoff, and every failure is
/// a definite one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stays_read_only_is_not_hammered() {
    let primary = RedisServer::start().await.expect("start the primary");
    let replica = RedisServer::start().await.expect("start the replica");
    replicate(&replica, &primary).await;
    let mut admin = replica.admin().await.unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">app-secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-role")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://app:app-secret@{}", replica.addr());
    let client = Client::with_config(ClientConfig {
        deadline: Duration::from_millis(500),
        ..config(url)
    })
    .await
    .expect("ROLE is denied: the client cannot tell, and connects");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for t in 0..10 {
        let (mut c, stop) = (client.clone(), stop.clone());
        tasks.spawn(async move {
            let (mut failed, mut other) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match c.set::<_, _, ()>(format!("ro:{t}"), 1).await {
                    Ok(()) => other.push("a write succeeded on a replica".to_owned()),
                    Err(e) if Outcome::of(&e) == Outcome::Failed => failed += 1,
                    Err(e) => other.push(e.to_string()),
                }
            }
            (failed, other)
        });
    }
    let run = Duration::from_secs(2);
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let (f, other) = r.unwrap();
        assert!(other.is_empty(), "not a definite failure: {other:?}");
        failed += f;
    }
    let stats = client.stats();
    println!(
        "read-only node for {run:?}: {failed} definite failures, {} demotions, {} reconnects",
        stats.demotions, stats.reconnects
    );
    assert!(failed > 0);
    // Unpaced, each reconnection would follow the last within a round trip (thousands in 2 s).
    // Paced by the reconnect backoff (10 ms doubling to 200 ms, equal jitter), a streak of
    // demotions allows about 6 + (2 s - 0.6 s) / 150 ms on average: allow 40.
    assert!(
        stats.reconnects <= 40,
        "{} reconnections in {run:?}: a reconnect storm",
        stats.reconnects
    );
    assert!(stats.demotions >= 2, "the demotions were not noticed");
}

#[tokio::test]
async fn a_replica_is_refused_at_connect_unless_asked_for() {
    let primary = RedisServer::start().await.expect("start the primary");
    let replica = RedisServer::start().await.expect("start the replica");
    replicate(&replica, &primary).await;
    let mut p = primary.admin().await.unwrap();
    let () = p.set("seen", "yes").await.unwrap();

    let err = Client::with_config(config(replica.url()))
        .await
        .expect_err("a replica is not a primary endpoint");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(text.contains("replica"), "{text}");
    assert!(text.contains("require_primary"), "{text}");

    let reader = Client::with_config(ClientConfig {
        require_primary: false,
        ..config(replica.url())
    })
    .await
    .expect("a replica endpoint on purpose");
    let until = Instant::now() + Duration::from_secs(5);
    let mut r = reader.clone();
    loop {
        let seen: Option<String> = r.get("seen").await.unwrap();
        if seen.as_deref() == Some("yes") {
            break;
        }
        assert!(Instant::now() < until, "the replica never got the key");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Durable acknowledgements through the failover behind one hostname: 20 tasks of exactly-once
/// `INCR` and 20 of plain `INCR` with `Durability::replicated()`; the counters read on B, the new
/// primary, once A follows it. Nothing acknowledged is taken back: exactly-once final ==
/// acknowledged, plain ok <= final <= ok + ambiguous.
///
/// B's only replica after the failover is A, which must sync in full (it accepted writes B never
/// saw), and a server's default `repl-diskless-sync-delay` is 5 s: no durable write can be
/// confirmed until then. Exactly-once writes wait for it (the deadline here is 10 s) instead of
/// giving up after their attempts; plain ones are ambiguous after the `WAIT` timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_survive_a_failover_behind_one_hostname() {
    use resilient_redis::{Durability, ExactlyOnceConfig};
    let service = Service::start().await;
    let client = Client::with_config(ClientConfig {
        durability: Durability::replicated(),
        deadline: Duration::from_secs(10),
        ..config(service.proxy.url())
    })
    .await
    .unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (mut xo, stop, acked, failed) =
            (xo.clone(), stop.clone(), acked.clone(), failed.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match xo.incr::<_, _, i64>("durable:xo", 1).await {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("exactly-once error: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
    let plain = common::spawn_incr(
        common::Conn::Resilient(client.clone()),
        20,
        "durable:plain",
        stop.clone(),
    );
    common::wait_until("the load to get going", Duration::from_secs(10), || async {
        acked.load(Ordering::Relaxed) >= 1000
    })
    .await;
    let failed_over = service.fail_over().await;
    let at_failover = acked.load(Ordering::Relaxed);
    common::wait_until(
        "writes acknowledged after the failover",
        Duration::from_secs(10),
        || async { acked.load(Ordering::Relaxed) >= at_failover + 1000 },
    )
    .await;
    let resumed = failed_over.elapsed();
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let plain = plain.await.unwrap();
    let mut b = service.b.admin().await.unwrap();
    let xo_final: i64 = b.get("durable:xo").await.unwrap();
    let plain_final: i64 = b.get("durable:plain").await.unwrap();
    let (acked, failed) = (
        acked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let stats = client.stats();
    eprintln!(
        "durable behind one hostname: exactly-once acknowledged {acked}, final {xo_final}, failed \
         {failed}; plain ok {}, ambiguous {}, final {plain_final}; unconfirmed {}, deposed {}; 1,000 \
         more acknowledged {resumed:?} after the failover",
        plain.ok, plain.ambiguous, stats.unconfirmed, stats.deposed_replies
    );
    assert_eq!(failed, 0, "exactly-once writes failed");
    assert_eq!(
        xo_final as u64, acked,
        "exactly-once: final != acknowledged"
    );
    assert!(
        plain.ok as i64 <= plain_final && plain_final <= (plain.ok + plain.ambiguous) as i64,
        "plain: ok {} <= final {plain_final} <= ok + ambiguous {} does not hold",
        plain.ok,
        plain.ok + plain.ambiguous
    );
    assert_eq!(plain.failed, 0, "{:?}", plain.errors);
}
