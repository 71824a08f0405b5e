//! Success-path overhead of the full policy versus a direct call and versus `backon`, fail-fast
//! latency of an open breaker, and both under two threads of contention.
//!
//! Run with `cargo bench -p resilience`. Measurement time is kept short (2 s per bench).

use std::fmt;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use criterion::{Criterion, criterion_group, criterion_main};
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

impl std::error::Error for OpError {}

/// The operation: immediately ready, as a cached or pipelined reply would be.
#[inline(never)]
async fn op() -> Result<u64, OpError> {
    Ok(black_box(42))
}

fn classify(_: &OpError) -> Classification {
    Classification::retry()
}

/// Deadline + budget + breaker + 3 attempts with full jitter.
fn full_policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig {
        max_attempts: 3,
        deadline: Some(Duration::from_secs(1)),
        name: "bench".into(),
        ..RetryConfig::default()
    })
    .unwrap()
    .with_budget(RetryBudget::new(RetryBudgetConfig::default()).unwrap())
    .with_breaker(CircuitBreaker::new(BreakerConfig::default()).unwrap())
}

/// As [`full_policy`], but the breaker uses only the consecutive-failures rule (no failure-rate
/// window to update on success).
fn full_policy_no_rate() -> RetryPolicy {
    full_policy().with_breaker(
        CircuitBreaker::new(BreakerConfig {
            failure_rate: None,
            ..BreakerConfig::default()
        })
        .unwrap(),
    )
}

fn minimal_policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig {
        max_attempts: 3,
        ..RetryConfig::default()
    })
    .unwrap()
}

/// A policy whose breaker is open for an hour.
fn open_policy() -> RetryPolicy {
    let breaker = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        open_duration: Duration::from_secs(3600),
        ..BreakerConfig::default()
    })
    .unwrap();
    breaker.try_acquire().unwrap().failure();
    assert!(breaker.try_acquire().is_err());
    full_policy().with_breaker(breaker)
}

fn backon_builder() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(2)
        .with_jitter()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn single_thread(c: &mut Criterion) {
    let rt = runtime();
    let full = full_policy();
    let minimal = minimal_policy();
    let open = open_policy();
    let breaker = open.breaker().unwrap().clone();

    let mut g = c.benchmark_group("success_path");
    g.bench_function("direct", |b| b.to_async(&rt).iter(op));
    // The floor of any policy with a deadline: one read of the clock.
    g.bench_function("reference_instant_now", |b| {
        b.iter(tokio::time::Instant::now)
    });
    g.bench_function("policy_full", |b| {
        b.to_async(&rt)
            .iter(|| full.run(Idempotency::Idempotent, classify, |_| op()))
    });
    g.bench_function("policy_minimal", |b| {
        b.to_async(&rt)
            .iter(|| minimal.run(Idempotency::Idempotent, classify, |_| op()))
    });
    g.bench_function("backon", |b| {
        b.to_async(&rt).iter(|| op.retry(backon_builder()))
    });
    // backon has no call deadline; the usual way to add one is an outer tokio timeout.
    g.bench_function("backon_with_deadline", |b| {
        b.to_async(&rt)
            .iter(|| tokio::time::timeout(Duration::from_secs(1), op.retry(backon_builder())))
    });
    g.finish();

    let mut g = c.benchmark_group("fail_fast");
    g.bench_function("breaker_try_acquire", |b| {
        b.iter(|| black_box(breaker.try_acquire()).is_err())
    });
    g.bench_function("policy_breaker_open", |b| {
        b.to_async(&rt)
            .iter(|| open.run(Idempotency::Idempotent, classify, |_| op()))
    });
    g.finish();
}

/// Runs the loop made by `make_loop(iters)` on two threads at once (each thread builds its own
/// loop, e.g. with its own clone of the policy, and runs it on its own current-thread runtime),
/// and returns the mean per-thread wall time: `iters` calls under contention.
fn two_threads<F, Fut>(iters: u64, make_loop: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let make_loop = Arc::new(make_loop);
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (make_loop, barrier) = (make_loop.clone(), barrier.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                let calls = make_loop(iters);
                barrier.wait();
                let start = Instant::now();
                rt.block_on(calls);
                start.elapsed()
            })
        })
        .collect();
    let total: Duration = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total / 2
}

fn contention(c: &mut Criterion) {
    let full = full_policy();
    let no_rate = full_policy_no_rate();
    let open = open_policy();
    let breaker = open.breaker().unwrap().clone();

    let mut g = c.benchmark_group("two_threads");
    // Reference: the same full policy, but each thread has its own (nothing shared), so any
    // difference to `policy_full` is contention on the shared budget/breaker.
    g.bench_function("policy_full_unshared", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |iters| {
                let p = full_policy();
                async move {
                    for _ in 0..iters {
                        let _ = black_box(p.run(Idempotency::Idempotent, classify, |_| op()).await);
                    }
                }
            })
        })
    });
    g.bench_function("policy_full_no_rate_window", |b| {
        b.iter_custom(|iters| {
            let shared = no_rate.clone();
            two_threads(iters, move |iters| {
                let p = shared.clone();
                async move {
                    for _ in 0..iters {
                        let _ = black_box(p.run(Idempotency::Idempotent, classify, |_| op()).await);
                    }
                }
            })
        })
    });
    g.bench_function("direct", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |iters| async move {
                for _ in 0..iters {
                    let _ = black_box(op().await);
                }
            })
        })
    });
    g.bench_function("policy_full", |b| {
        b.iter_custom(|iters| {
            let shared = full.clone();
            two_threads(iters, move |iters| {
                let p = shared.clone();
                async move {
                    for _ in 0..iters {
                        let _ = black_box(p.run(Idempotency::Idempotent, classify, |_| op()).await);
                    }
                }
            })
        })
    });
    g.bench_function("backon", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |iters| async move {
                for _ in 0..iters {
                    let _ = black_box(op.retry(backon_builder()).await);
                }
            })
        })
    });
    g.bench_function("breaker_try_acquire_open", |b| {
        b.iter_custom(|iters| {
            let shared = breaker.clone();
            two_threads(iters, move |iters| {
                let br = shared.clone();
                async move {
                    for _ in 0..iters {
                        let _ = black_box(br.try_acquire().is_err());
                    }
                }
            })
        })
    });
    g.bench_function("policy_breaker_open", |b| {
        b.iter_custom(|iters| {
            let shared = open.clone();
            two_threads(iters, move |iters| {
                let p = shared.clone();
                async move {
                    for _ in 0..iters {
                        let _ = black_box(p.run(Idempotency::Idempotent, classify, |_| op()).await);
                    }
                }
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! { name = benches; config = config(); targets = single_thread, contention }
criterion_main!(benches);
