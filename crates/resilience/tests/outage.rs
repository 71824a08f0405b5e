//! One simulated hour of total outage (plus healthy minutes around it) in well under a second
//! of real time, with the same numbers for the same seed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use resilience::{
    BreakerConfig, CircuitBreaker, Classification, Event, Idempotency, Jitter, RetryBudget,
    RetryBudgetConfig, RetryConfig, RetryPolicy,
};
use tokio::time::Instant;

const HEALTHY_BEFORE: Duration = Duration::from_secs(60);
const OUTAGE: Duration = Duration::from_secs(3600);
const HEALTHY_AFTER: Duration = Duration::from_secs(300);
/// Ten calls a second.
const ARRIVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum Fault {
    Refused,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection refused")
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    calls: u64,
    outage_calls: u64,
    /// Attempts that reached the server while it was down.
    outage_attempts: u64,
    successes: u64,
    give_ups: BTreeMap<String, u64>,
    transitions: BTreeMap<String, u64>,
    /// Simulated time from the end of the outage to the first success.
    recovery: Duration,
    /// Fingerprint of every retry delay (the jitter sequence).
    delay_sum_nanos: u128,
}

async fn simulate(seed: u64) -> Stats {
    let transitions = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let delays = Arc::new(Mutex::new(0u128));
    let (t, d) = (transitions.clone(), delays.clone());
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 4,
        deadline: Some(Duration::from_secs(2)),
        attempt_timeout: Some(Duration::from_millis(500)),
        name: "outage".into(),
        ..RetryConfig::default()
    })
    .unwrap()
    .with_rng_seed(seed)
    .with_budget(RetryBudget::new(RetryBudgetConfig::default()).unwrap())
    .with_breaker(CircuitBreaker::new(BreakerConfig::default()).unwrap())
    .with_listener(Arc::new(move |e: &Event<'_>| match e {
        Event::BreakerTransition { to, .. } => {
            *t.lock().unwrap().entry(to.as_str().to_owned()).or_default() += 1;
        }
        Event::Retry { delay, .. } => *d.lock().unwrap() += delay.as_nanos(),
        _ => {}
    }));
    assert_eq!(policy.config().backoff.jitter(), Jitter::Full);

    // The server: down between the two healthy periods; while down, a seeded half of the
    // attempts are refused at once and the other half hang until cut by the attempt timeout.
    let rng = RefCell::new(SmallRng::seed_from_u64(seed));
    let outage_attempts = Cell::new(0u64);
    let start = Instant::now();
    let (down_from, down_until) = (start + HEALTHY_BEFORE, start + HEALTHY_BEFORE + OUTAGE);
    let end = down_until + HEALTHY_AFTER;

    let mut stats = Stats::default();
    let mut first_success_after: Option<Instant> = None;
    let mut next = start;
    while next < end {
        tokio::time::sleep_until(next).await;
        next += ARRIVAL;
        let call_start = Instant::now();
        stats.calls += 1;
        if (down_from..down_until).contains(&call_start) {
            stats.outage_calls += 1;
        }
        let r = policy
            .run(
                Idempotency::Idempotent,
                |_: &Fault| Classification::retry(),
                |_| {
                    let now = Instant::now();
                    let down = (down_from..down_until).contains(&now);
                    if down {
                        outage_attempts.set(outage_attempts.get() + 1);
                    }
                    let hang = down && rng.borrow_mut().random_bool(0.5);
                    async move {
                        match (down, hang) {
                            (false, _) => Ok(()),
                            (true, false) => Err(Fault::Refused),
                            (true, true) => std::future::pending().await,
                        }
                    }
                },
            )
            .await;
        match r {
            Ok(()) => {
                stats.successes += 1;
                if call_start >= down_until && first_success_after.is_none() {
                    first_success_after = Some(Instant::now());
                }
            }
            Err(e) => {
                *stats
                    .give_ups
                    .entry(e.reason.as_str().to_owned())
                    .or_default() += 1
            }
        }
    }
    stats.outage_attempts = outage_attempts.get();
    stats.recovery = first_success_after.map_or(Duration::MAX, |t| t - down_until);
    stats.transitions = transitions.lock().unwrap().clone();
    stats.delay_sum_nanos = *delays.lock().unwrap();
    stats
}

fn run_once(seed: u64) -> (Stats, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let wall = std::time::Instant::now();
    let stats = rt.block_on(simulate(seed));
    (stats, wall.elapsed())
}

#[test]
fn one_hour_outage_is_fast_bounded_and_reproducible() {
    let (a, wall) = run_once(7);
    println!("{a:#?}\nreal time: {wall:?}");
    assert!(wall < Duration::from_secs(1), "took {wall:?} of real time");

    // Bounded load on the dead server: the breaker keeps almost every call off it.
    let amplification = a.outage_attempts as f64 / a.outage_calls as f64;
    println!("attempts reaching the dead server per call during the outage: {amplification:.4}");
    assert!(amplification <= 1.1, "{amplification}");
    assert!(a.transitions.get("open").copied().unwrap_or(0) >= 1);
    // Healthy traffic before and after succeeds; recovery is bounded by the open duration
    // (5 s) plus the probes.
    assert!(
        a.successes >= (HEALTHY_BEFORE + HEALTHY_AFTER).as_secs() * 10 - 60,
        "{}",
        a.successes
    );
    assert!(
        a.recovery <= Duration::from_secs(6),
        "recovery {:?}",
        a.recovery
    );

    // Same seed, same numbers; another seed, another jitter sequence.
    let (b, _) = run_once(7);
    assert_eq!(a, b);
    let (c, _) = run_once(8);
    assert_ne!(a.delay_sum_nanos, c.delay_sum_nanos);
}
