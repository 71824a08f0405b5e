//! Runs N successful calls through the full policy (deadline + budget + breaker + retry) and N
//! calls refused by an open breaker, so a heap profiler can show that the number of
//! allocations does not grow with N:
//!
//! ```text
//! cargo build --release -p resilience --example alloc_probe
//! valgrind target/release/examples/alloc_probe 1000   2>&1 | grep 'total heap usage'
//! valgrind target/release/examples/alloc_probe 100000 2>&1 | grep 'total heap usage'
//! ```

use std::fmt;
use std::hint::black_box;
use std::time::Duration;

use resilience::{
    BreakerConfig, CircuitBreaker, Classification, Idempotency, RetryBudget, RetryBudgetConfig,
    RetryConfig, RetryPolicy,
};

#[derive(Debug)]
struct OpError;

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("op error")
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = RetryConfig {
        max_attempts: 3,
        deadline: Some(Duration::from_secs(1)),
        ..RetryConfig::default()
    };
    let budget = RetryBudget::new(RetryBudgetConfig::default()).expect("budget");
    let policy = RetryPolicy::new(config.clone())
        .expect("policy")
        .with_budget(budget.clone())
        .with_breaker(CircuitBreaker::new(BreakerConfig::default()).expect("breaker"));
    let open = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        open_duration: Duration::from_secs(3600),
        ..BreakerConfig::default()
    })
    .expect("breaker");
    let refused = RetryPolicy::new(config)
        .expect("policy")
        .with_budget(budget)
        .with_breaker(open);
    rt.block_on(async {
        // Open the second breaker.
        let _ = refused
            .run(
                Idempotency::Idempotent,
                |_: &OpError| Classification::retry(),
                |_| async { Err::<u64, _>(OpError) },
            )
            .await;
        let (mut ok, mut fast) = (0u64, 0u64);
        for _ in 0..n {
            let r = policy
                .run(
                    Idempotency::Idempotent,
                    |_: &OpError| Classification::retry(),
                    |_| async { Ok::<_, OpError>(black_box(1u64)) },
                )
                .await;
            ok += u64::from(r.is_ok());
            let r = refused
                .run(
                    Idempotency::Idempotent,
                    |_: &OpError| Classification::retry(),
                    |_| async { Ok::<_, OpError>(black_box(1u64)) },
                )
                .await;
            fast += u64::from(r.is_err());
        }
        println!("{ok} successes, {fast} fail-fast refusals");
    });
}
