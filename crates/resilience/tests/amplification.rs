//! The retry-budget amplification targets: 10,000 calls, `max_attempts = 4`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use resilience::{
    Classification, Idempotency, RetryBudget, RetryBudgetConfig, RetryConfig, RetryPolicy,
};
use tokio::time::Instant;

const CALLS: u32 = 10_000;
/// One call arrives every millisecond (10 s of simulated traffic), so the budget's time-based
/// floor gets its share.
const ARRIVAL: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection refused")
    }
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    attempts: u64,
    successes: u32,
}

impl Outcome {
    fn amplification(&self) -> f64 {
        self.attempts as f64 / f64::from(CALLS)
    }
    fn success_rate(&self) -> f64 {
        f64::from(self.successes) / f64::from(CALLS)
    }
}

/// Runs `CALLS` calls; each attempt fails with probability `failure_rate` (seeded).
async fn run(budget: bool, failure_rate: f64, seed: u64) -> Outcome {
    let mut policy = RetryPolicy::new(RetryConfig {
        max_attempts: 4,
        ..RetryConfig::default()
    })
    .unwrap()
    .with_rng_seed(seed);
    if budget {
        policy = policy.with_budget(RetryBudget::new(RetryBudgetConfig::default()).unwrap());
    }
    let faults = RefCell::new(SmallRng::seed_from_u64(seed ^ 0xFA17));
    let attempts = Cell::new(0u64);
    let mut successes = 0;
    let start = Instant::now();
    for i in 0..CALLS {
        tokio::time::sleep_until(start + ARRIVAL * i).await;
        let r = policy
            .run(
                Idempotency::Idempotent,
                |_: &Refused| Classification::retry(),
                |_| {
                    attempts.set(attempts.get() + 1);
                    let fail = faults.borrow_mut().random_bool(failure_rate);
                    async move { if fail { Err(Refused) } else { Ok(()) } }
                },
            )
            .await;
        successes += u32::from(r.is_ok());
    }
    Outcome {
        attempts: attempts.get(),
        successes,
    }
}

#[tokio::test(start_paused = true)]
async fn total_outage_without_budget_multiplies_load_by_four() {
    let o = run(false, 1.0, 1).await;
    assert_eq!(o.amplification(), 4.0);
    assert_eq!(o.successes, 0);
}

#[tokio::test(start_paused = true)]
async fn total_outage_with_budget_stays_under_1_1() {
    let o = run(true, 1.0, 1).await;
    println!(
        "total outage with budget: attempts/calls = {:.4}",
        o.amplification()
    );
    assert!(
        o.amplification() <= 1.1,
        "attempts/calls = {}",
        o.amplification()
    );
}

#[tokio::test(start_paused = true)]
async fn five_percent_failures_budget_keeps_success_rate_of_plain_retries() {
    for seed in [1, 2, 3] {
        let plain = run(false, 0.05, seed).await;
        let budgeted = run(true, 0.05, seed).await;
        println!(
            "seed {seed}: plain success {:.5} x{:.4}; budget success {:.5} x{:.4}",
            plain.success_rate(),
            plain.amplification(),
            budgeted.success_rate(),
            budgeted.amplification()
        );
        assert!(
            (plain.success_rate() - budgeted.success_rate()).abs() <= 0.005,
            "plain {} vs budget {}",
            plain.success_rate(),
            budgeted.success_rate()
        );
        assert!(
            budgeted.amplification() <= 1.1,
            "attempts/calls = {}",
            budgeted.amplification()
        );
    }
}
