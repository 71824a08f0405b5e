//! Overload: a throttling server is not flooded, `THROTTLED` never opens the breaker, and many
//! clients coming back after an outage do not reconnect all at once (thundering herd).

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
use resilience::{Backoff, Event, Jitter};
use resilient_redis::{Client, ClientConfig, ErrorKind};
use tokio::{task::JoinSet, time::Instant};

/// What a closed-loop storm against a throttling proxy saw over its measured seconds.
struct Storm {
    sent: u64,
    accepted: u64,
    rejected_locally: u64,
    attempts: u64,
    transitions: u64,
    kinds: std::collections::BTreeMap<String, u64>,
}

/// 100 tasks calling SET in a closed loop through a proxy that accepts `capacity` commands/s
/// and answers `THROTTLED` beyond; measured over `measure` after a 2 s warm-up.
async fn storm(capacity: u32, adaptive: bool, measure: Duration) -> Storm {
    let server = RedisServer::start().await.expect("start redis-server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let mut config = ClientConfig {
        url: proxy.url(),
        rng_seed: Some(5),
        ..ClientConfig::default()
    };
    if !adaptive {
        config.adaptive_throttle = None;
    }
    let client = Client::with_config(config).await.expect("connect");
    let transitions = Arc::new(AtomicU64::new(0));
    {
        let transitions = transitions.clone();
        client
            .breaker()
            .expect("default breaker")
            .add_listener(Arc::new(move |e: &Event<'_>| {
                if matches!(e, Event::BreakerTransition { .. }) {
                    transitions.fetch_add(1, Ordering::Relaxed);
                }
            }));
    }
    proxy.set_throttle(Some(capacity));
    let stop = Arc::new(AtomicBool::new(false));
    let kinds = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let mut tasks = JoinSet::new();
    for t in 0..100 {
        let mut c = client.clone();
        let stop = stop.clone();
        let kinds = kinds.clone();
        tasks.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r: redis::RedisResult<()> = c.set(format!("k:{t}:{}", i % 10), i).await;
                let kind = match r {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => resilient_redis::error_kind_name(&e),
                };
                *kinds.lock().unwrap().entry(kind).or_insert(0u64) += 1;
                // Fast local failures would otherwise spin this task without yielding.
                tokio::task::yield_now().await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.reset_stats();
    let before = client.stats();
    tokio::time::sleep(measure).await;
    let p = proxy.stats();
    let after = client.stats();
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let kinds = std::mem::take(&mut *kinds.lock().unwrap());
    Storm {
        sent: p.commands_forwarded + p.commands_throttled,
        accepted: p.commands_forwarded,
        rejected_locally: after.rejected_locally - before.rejected_locally,
        attempts: after.attempts - before.attempts,
        transitions: transitions.load(Ordering::Relaxed),
        kinds,
    }
}

/// A `THROTTLED` storm: with adaptive throttling (K = 2) the commands that reach the server stay
/// near twice the ones it accepts (plus a probe every 20 ms), far below what the same closed loop
/// sends without it; the rest fail fast locally, and the breaker never moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_server_is_not_flooded_and_the_breaker_stays_closed() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    const CAPACITY: u32 = 500;
    let measure = Duration::from_secs(3);
    let with = storm(CAPACITY, true, measure).await;
    let without = storm(CAPACITY, false, measure).await;
    let ratio = |s: &Storm| s.sent as f64 / s.accepted.max(1) as f64;
    for (name, s) in [("adaptive throttling", &with), ("without it", &without)] {
        eprintln!(
            "throttled server ({CAPACITY}/s), {name}: sent {}, accepted {} ({:.0}/s), sent/accepted {:.2}, \
             rejected locally {}, client attempts {}, breaker transitions {}, outcomes {:?}",
            s.sent,
            s.accepted,
            s.accepted as f64 / measure.as_secs_f64(),
            ratio(s),
            s.rejected_locally,
            s.attempts,
            s.transitions,
            s.kinds,
        );
    }
    for s in [&with, &without] {
        assert_eq!(s.transitions, 0, "THROTTLED must not move the breaker");
        // The server's capacity is still used.
        assert!(
            s.accepted as f64 >= 0.9 * f64::from(CAPACITY) * measure.as_secs_f64(),
            "accepted only {} in {measure:?}",
            s.accepted
        );
        // Every command that reached the proxy is counted as an attempt by the client.
        assert!(
            s.attempts.abs_diff(s.sent) <= 300,
            "client attempts {} vs sent {}",
            s.attempts,
            s.sent
        );
    }
    assert!(
        with.rejected_locally > 0,
        "adaptive throttling never rejected anything"
    );
    assert!(
        with.kinds.contains_key(ErrorKind::RejectedLocally.as_str()),
        "no call failed with the rejected_locally kind"
    );
    // K = 2 plus probes and the window's lag (the closed loop's offered rate swings with the
    // CPU), and in any case a fraction of what the same loop sends without the throttle.
    assert!(ratio(&with) <= 3.0, "sent/accepted {:.2} > 3", ratio(&with));
    assert!(
        ratio(&with) * 2.0 <= ratio(&without),
        "throttled {:.2} vs unthrottled {:.2}: not even halved",
        ratio(&with),
        ratio(&without)
    );
}

/// How a client reconnects in the thundering-herd test.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The resilient client with the given reconnect backoff.
    Resilient(&'static str, fn() -> Backoff),
    /// A hand-written loop: reconnect after 10, 20, 40, ... ms (up to 1 s), no jitter.
    Naive,
}

fn default_backoff() -> Backoff {
    ClientConfig::default().reconnect_backoff
}

/// The reconnect schedule for large fleets: 100 ms doubling up to 1.5 s, equal jitter.
fn fleet_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_millis(1500))
        .unwrap()
        .with_jitter(Jitter::Equal)
}

const CLIENTS: usize = 500;

/// One round: `CLIENTS` clients, each with its own connection through a proxy, send a GET every
/// 50 ms; the proxy goes away for 2 s (connections cut, port closed) and comes back. Returns the
/// accepted connections per 100 ms bucket over the 3 s after it is back.
async fn herd_round(server: &RedisServer, mode: Mode) -> Vec<u64> {
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let addr = proxy.addr();
    let url = proxy.url();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for i in 0..CLIENTS {
        let stop = stop.clone();
        let url = url.clone();
        match mode {
            Mode::Resilient(_, backoff) => {
                let mut client = Client::with_config(ClientConfig {
                    url,
                    reconnect_backoff: backoff(),
                    rng_seed: Some(1000 + i as u64),
                    ..ClientConfig::default()
                })
                .await
                .expect("connect");
                tasks.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let _: redis::RedisResult<Option<String>> = client.get("herd").await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
            }
            Mode::Naive => {
                let client = redis::Client::open(url).unwrap();
                let mut conn = Some(client.get_multiplexed_async_connection().await.unwrap());
                tasks.spawn(async move {
                    let mut delay = Duration::from_millis(10);
                    while !stop.load(Ordering::Relaxed) {
                        let Some(c) = conn.as_mut() else {
                            match client.get_multiplexed_async_connection().await {
                                Ok(c) => {
                                    conn = Some(c);
                                    delay = Duration::from_millis(10);
                                }
                                Err(_) => {
                                    tokio::time::sleep(delay).await;
                                    delay = (delay * 2).min(Duration::from_secs(1));
                                }
                            }
                            continue;
                        };
                        let r: redis::RedisResult<Option<String>> = c.get("herd").await;
                        if r.is_err() {
                            conn = None;
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(1));
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                });
            }
        }
    }
    // Steady state, then the outage.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(proxy);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let proxy = FaultProxy::start_on(addr, server.addr())
        .await
        .expect("proxy back on the same port");
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let times = proxy.accept_times();
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let mut buckets = vec![0u64; 30];
    for t in times {
        let i = (t.saturating_duration_since(back).as_millis() / 100) as usize;
        if i < buckets.len() {
            buckets[i] += 1;
        }
    }
    buckets
}

/// (busiest bucket, mean of the first second's buckets, connections in 3 s).
fn spread(buckets: &[u64]) -> (u64, f64, u64) {
    let busiest = *buckets.iter().max().unwrap();
    let mean_first_second = buckets[..10].iter().sum::<u64>() as f64 / 10.0;
    (busiest, mean_first_second, buckets.iter().sum())
}

/// The target: 500 clients, the server gone for 2 s; after it is back, the busiest 100 ms
/// bucket of reconnections holds at most 2x the mean of the first second (with jitter). Reported
/// for the default schedule, the fleet schedule and the naive loop; asserted for the fleet
/// schedule (see the README: no schedule meets both this and a 250 ms median reconnection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_clients_reconnects_spread_out() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let server = RedisServer::start_with(redis_lab::ServerConfig {
        extra: vec![("maxclients".into(), "5000".into())],
        ..Default::default()
    })
    .await
    .expect("start redis-server");
    let modes = [
        Mode::Resilient("resilient (fleet: 100 ms to 1.5 s)", fleet_backoff),
        Mode::Resilient("resilient (default: 150 ms cap)", default_backoff),
        Mode::Naive,
    ];
    let mut results = Vec::new();
    for mode in modes {
        let buckets = herd_round(&server, mode).await;
        let (busiest, mean, total) = spread(&buckets);
        let name = match mode {
            Mode::Resilient(name, _) => name,
            Mode::Naive => "naive (10 ms x2, no jitter)",
        };
        eprintln!(
            "{name}: {total} connections in 3 s; busiest 100 ms bucket {busiest} = {:.2}x the first second's mean {mean:.1}; buckets {:?}",
            busiest as f64 / mean.max(1e-9),
            &buckets[..15]
        );
        results.push((name, busiest, mean, total));
    }
    let (_, busiest, mean, total) = results[0];
    assert!(
        total >= CLIENTS as u64,
        "only {total} of {CLIENTS} clients reconnected"
    );
    assert!(
        busiest as f64 <= 2.0 * mean,
        "busiest bucket {busiest} > 2x mean {mean:.1}"
    );
}
