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

fn minimal_policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig { max_attempts: 3, ..RetryConfig::default() }).unwrap()
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
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn single_thread(c: &mut Criterion) {
    let rt = runtime();
    let full = full_policy();
    let minimal = minimal_policy();
    let open = open_policy();
    let breaker = open.breaker().unwrap().clone();

    let mut g = c.benchmark_group("success_path");
    g.bench_function("direct", |b| b.to_async(&rt).iter(op));
    g.bench_function("policy_full", |b| {
        b.to_async(&rt).iter(|| full.run(Idempotency::Idempotent, classify, |_| op()))
    });
    g.bench_function("policy_minimal", |b| {
        b.to_async(&rt).iter(|| minimal.run(Idempotency::Idempotent, classify, |_| op()))
    });
    g.bench_function("backon", |b| b.to_async(&rt).iter(|| op.retry(backon_builder())));
    g.finish();

    let mut g = c.benchmark_group("fail_fast");
    g.bench_function("breaker_try_acquire", |b| b.iter(|| black_box(breaker.try_acquire()).is_err()));
    g.bench_function("policy_breaker_open", |b| {
        b.to_async(&rt).iter(|| open.run(Idempotency::Idempotent, classify, |_| op()))
    });
    g.finish();
}

/// Runs `per_thread` on two threads at once (each with its own runtime), `iters` times each,
/// and returns the mean per-thread wall time: the latency of one call under contention.
fn two_threads<F, Fut, O>(iters: u64, per_thread: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = O>,
{
    let per_thread = Arc::new(per_thread);
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (f, barrier) = (per_thread.clone(), barrier.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                rt.block_on(async {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(f().await);
                    }
                    start.elapsed()
                })
            })
        })
        .collect();
    let total: Duration = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total / 2
}

fn contention(c: &mut Criterion) {
    let full = full_policy();
    let open = open_policy();
    let breaker = open.breaker().unwrap().clone();

    let mut g = c.benchmark_group("two_threads");
    g.bench_function("direct", |b| b.iter_custom(|iters| two_threads(iters, op)));
    g.bench_function("policy_full", |b| {
        b.iter_custom(|iters| {
            let p = full.clone();
            two_threads(iters, move || {
                let p = p.clone();
                async move { p.run(Idempotency::Idempotent, classify, |_| op()).await }
            })
        })
    });
    g.bench_function("backon", |b| {
        b.iter_custom(|iters| two_threads(iters, || op.retry(backon_builder())))
    });
    g.bench_function("breaker_try_acquire_open", |b| {
        b.iter_custom(|iters| {
            let br = breaker.clone();
            two_threads(iters, move || {
                let open = br.try_acquire().is_err();
                async move { open }
            })
        })
    });
    g.bench_function("policy_breaker_open", |b| {
        b.iter_custom(|iters| {
            let p = open.clone();
            two_threads(iters, move || {
                let p = p.clone();
                async move { p.run(Idempotency::Idempotent, classify, |_| op()).await }
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
