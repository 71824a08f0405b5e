//! Property tests: backoff bounds for every kind and jitter, and the call deadline is never
//! exceeded.

use std::fmt;
use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use resilience::{Backoff, Classification, Idempotency, Jitter, RetryConfig, RetryPolicy};
use tokio::time::Instant;

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)]
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A backoff of any kind, its un-jittered upper bound for each retry, and its floor.
fn backoff() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        (0u64..10_000).prop_map(|d| Backoff::constant(ms(d))),
        (1u64..1000, 0u64..1000, 0u64..100_000)
            .prop_map(|(i, s, extra)| { Backoff::linear(ms(i), ms(s), ms(i + extra)).unwrap() }),
        (1u64..1000, 1.0f64..10.0, 0u64..100_000)
            .prop_map(|(i, m, extra)| { Backoff::exponential(ms(i), m, ms(i + extra)).unwrap() }),
        (1u64..1000, 0u64..100_000).prop_map(|(b, extra)| Backoff::decorrelated(
            ms(b),
            ms(b + extra)
        )
        .unwrap()),
    ]
}

proptest! {
    #[test]
    fn every_delay_is_within_bounds(
        b in backoff(),
        j in jitter(),
        seed in any::<u64>(),
        retries in 1u32..40,
    ) {
        let jittered = b.with_jitter(j);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut plain_rng = SmallRng::seed_from_u64(seed);
        let mut prev = None;
        let mut plain_prev: Option<Duration> = None;
        for r in 1..=retries {
            let d = jittered.delay(r, prev, &mut rng);
            prop_assert!(d <= b.max_delay(), "retry {r}: {d:?} > max {:?}", b.max_delay());
            let plain = b.delay(r, plain_prev, &mut plain_rng);
            if j == Jitter::None {
                prop_assert_eq!(d, plain);
            }
            if let Some(p) = plain_prev {
                // Deterministic kinds never shrink from one retry to the next.
                if !format!("{b:?}").contains("Decorrelated") {
                    prop_assert!(plain >= p);
                }
            }
            prev = Some(d);
            plain_prev = Some(plain);
        }
    }

    #[test]
    fn equal_jitter_keeps_at_least_half(i in 1u64..1000, m in 1.0f64..4.0, seed in any::<u64>(), r in 1u32..20) {
        let b = Backoff::exponential(ms(i), m, Duration::from_secs(60)).unwrap();
        let plain = b.delay(r, None, &mut SmallRng::seed_from_u64(0));
        let d = b.with_jitter(Jitter::Equal).delay(r, None, &mut SmallRng::seed_from_u64(seed));
        prop_assert!(d >= plain / 2 && d <= plain);
    }

    #[test]
    fn decorrelated_stays_between_base_and_three_times_previous(
        base in 1u64..1000, extra in 0u64..100_000, prev in 0u64..200_000, seed in any::<u64>()
    ) {
        let (base, max, prev) = (ms(base), ms(base + extra), ms(prev));
        let b = Backoff::decorrelated(base, max).unwrap();
        let d = b.delay(2, Some(prev), &mut SmallRng::seed_from_u64(seed));
        prop_assert!(d >= base.min(max));
        prop_assert!(d <= (prev.max(base) * 3).min(max));
    }

    #[test]
    fn same_seed_same_sequence(b in backoff(), j in jitter(), seed in any::<u64>()) {
        let b = b.with_jitter(j);
        let seq = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut prev = None;
            (1..10).map(|r| { let d = b.delay(r, prev, &mut rng); prev = Some(d); d }).collect::<Vec<_>>()
        };
        prop_assert_eq!(seq(seed), seq(seed));
    }
}

#[derive(Debug)]
struct Down;

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("down")
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the backoff, hint, latency and attempt timeout, a call never runs past its
    /// deadline, and no attempt starts at or after it.
    #[test]
    fn deadline_is_never_exceeded(
        b in backoff(),
        j in jitter(),
        seed in any::<u64>(),
        deadline in 1u64..5000,
        latency in 0u64..2000,
        timeout in proptest::option::of(1u64..2000),
        hint in proptest::option::of(0u64..3000),
        max_attempts in 1u32..20,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (elapsed, starts) = rt.block_on(async {
            let policy = RetryPolicy::new(RetryConfig {
                max_attempts,
                backoff: b.with_jitter(j),
                deadline: Some(ms(deadline)),
                attempt_timeout: timeout.map(ms),
                ..RetryConfig::default()
            })
            .unwrap()
            .with_rng_seed(seed);
            let start = Instant::now();
            let starts = std::cell::RefCell::new(Vec::new());
            let _ = policy
                .run(
                    Idempotency::Idempotent,
                    |_: &Down| hint.map_or_else(Classification::retry, |h| Classification::retry_after(ms(h))),
                    |_| {
                        starts.borrow_mut().push(start.elapsed());
                        async move {
                            tokio::time::sleep(ms(latency)).await;
                            Err::<(), _>(Down)
                        }
                    },
                )
                .await;
            (start.elapsed(), starts.into_inner())
        });
        prop_assert!(elapsed <= ms(deadline), "elapsed {elapsed:?} > deadline {deadline} ms");
        prop_assert!(starts.iter().all(|s| *s < ms(deadline)), "{starts:?}");
        prop_assert!(starts.len() <= max_attempts as usize);
    }
}

#[derive(Debug, Clone)]
enum BudgetOp {
    Deposit(u16),
    Withdraw(u16),
    Advance(u64),
}

fn budget_op() -> impl Strategy<Value = BudgetOp> {
    prop_oneof![
        (1u16..500).prop_map(BudgetOp::Deposit),
        (1u16..50).prop_map(BudgetOp::Withdraw),
        (0u64..5_000).prop_map(BudgetOp::Advance),
    ]
}

proptest! {
    /// Whatever the interleaving, the budget never grants more retries than its initial
    /// floor, plus `retry_ratio` per success, plus the floor refilled over the elapsed time;
    /// and never more than `max_tokens` in a burst after any point.
    #[test]
    fn budget_never_grants_more_than_earned(
        ratio in 0.0f64..=1.0,
        floor in 0.0f64..50.0,
        max_tokens in 1u32..500,
        ops in proptest::collection::vec(budget_op(), 1..60),
    ) {
        use resilience::{RetryBudget, RetryBudgetConfig};
        let budget = RetryBudget::new(RetryBudgetConfig {
            retry_ratio: ratio,
            min_retries_per_sec: floor,
            max_tokens,
        })
        .unwrap();
        let origin = Instant::now();
        let mut now = origin;
        let (mut deposits, mut granted) = (0u64, 0u64);
        for op in ops {
            match op {
                BudgetOp::Deposit(n) => {
                    for _ in 0..n {
                        budget.deposit();
                    }
                    deposits += u64::from(n);
                }
                BudgetOp::Withdraw(n) => {
                    let mut burst = 0u64;
                    for _ in 0..n {
                        if budget.try_withdraw_at(now) {
                            burst += 1;
                        }
                    }
                    prop_assert!(burst <= u64::from(max_tokens));
                    granted += burst;
                }
                BudgetOp::Advance(ms) => now += Duration::from_millis(ms),
            }
        }
        let elapsed = (now - origin).as_secs_f64() + 0.1; // creation happened just before `origin`
        let initial = if floor > 0.0 { floor.ceil().max(1.0) } else { 0.0 };
        let earned = initial + ratio * deposits as f64 + floor * elapsed;
        prop_assert!(granted as f64 <= earned + 1.0, "granted {granted} > earned {earned}");
    }
}
