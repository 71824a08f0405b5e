use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::{
    Backoff, BreakerConfig, BreakerState, Classification, Event, Jitter, RetryBudgetConfig,
};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[derive(Debug, PartialEq)]
struct Boom(&'static str);

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Boom {}

fn config(max_attempts: u32, backoff: Backoff) -> RetryConfig {
    RetryConfig {
        max_attempts,
        backoff,
        name: "test".into(),
        ..RetryConfig::default()
    }
}

fn policy(c: RetryConfig) -> RetryPolicy {
    RetryPolicy::new(c).unwrap().with_rng_seed(1)
}

/// Records when each attempt started, relative to `start`.
struct Log {
    start: Instant,
    at: Mutex<Vec<Duration>>,
}

impl Log {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            at: Mutex::new(Vec::new()),
        }
    }
    fn hit(&self) -> u32 {
        let mut at = self.at.lock().unwrap();
        at.push(self.start.elapsed());
        at.len() as u32
    }
    fn times(&self) -> Vec<Duration> {
        self.at.lock().unwrap().clone()
    }
}

type Events = Arc<Mutex<Vec<String>>>;

fn recording() -> (Events, Listener) {
    let events: Events = Arc::default();
    let sink = events.clone();
    (
        events,
        Arc::new(move |e: &Event<'_>| sink.lock().unwrap().push(format!("{e:?}"))),
    )
}

#[tokio::test(start_paused = true)]
async fn first_attempt_success_emits_nothing() {
    let (events, listener) = recording();
    let p = policy(config(3, Backoff::constant(ms(10)))).with_listener(listener);
    let r: Result<u32, RetryError<Boom>> = p
        .run(
            Idempotency::NotIdempotent,
            |_| Classification::retry(),
            |_| async { Ok(7) },
        )
        .await;
    assert_eq!(r.unwrap(), 7);
    assert!(events.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn retries_with_exact_backoff_until_success() {
    let log = Log::new();
    let p = policy(config(
        5,
        Backoff::exponential(ms(10), 2.0, ms(1000)).unwrap(),
    ));
    let r = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |a| {
                let n = log.hit();
                assert_eq!(a.number, n);
                async move { if n < 4 { Err(Boom("down")) } else { Ok(n) } }
            },
        )
        .await;
    assert_eq!(r.unwrap(), 4);
    assert_eq!(log.times(), vec![ms(0), ms(10), ms(30), ms(70)]);
}

#[tokio::test(start_paused = true)]
async fn attempts_exhausted_returns_the_last_error() {
    let log = Log::new();
    let p = policy(config(3, Backoff::constant(ms(5))));
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| {
                let n = log.hit();
                async move { Err::<(), _>(Boom(if n == 3 { "third" } else { "earlier" })) }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::AttemptsExhausted);
    assert_eq!(err.attempts, 3);
    assert_eq!(err.error, Some(Boom("third")));
    assert!(!err.may_have_applied);
    assert_eq!(
        err.to_string(),
        "gave up after 3 attempt(s): attempts exhausted; last error: third"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test(start_paused = true)]
async fn do_not_retry_stops_at_once() {
    let log = Log::new();
    let p = policy(config(5, Backoff::constant(ms(5))));
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::fail(),
            |_| {
                log.hit();
                async { Err::<(), _>(Boom("WRONGTYPE")) }
            },
        )
        .await
        .unwrap_err();
    assert_eq!((err.reason, err.attempts), (GiveUp::NotRetryable, 1));
    assert_eq!(err.into_error(), Some(Boom("WRONGTYPE")));
}

#[tokio::test(start_paused = true)]
async fn ambiguous_failure_of_non_idempotent_op_is_never_retried() {
    let log = Log::new();
    let p = policy(config(5, Backoff::constant(ms(5))));
    let err = p
        .run(
            Idempotency::NotIdempotent,
            |_: &Boom| Classification::retry().ambiguous(),
            |_| {
                log.hit();
                async { Err::<(), _>(Boom("connection reset after write")) }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::AmbiguousNotIdempotent);
    assert_eq!(err.attempts, 1);
    assert!(err.may_have_applied);
    assert_eq!(log.times().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_op_is_retried_when_the_failure_did_not_apply() {
    let log = Log::new();
    let p = policy(config(3, Backoff::constant(ms(5))));
    let r = p
        .run(
            Idempotency::NotIdempotent,
            |_: &Boom| Classification::retry(),
            |_| {
                let n = log.hit();
                async move {
                    if n == 1 {
                        Err(Boom("connect refused"))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
    assert_eq!(r.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn ambiguity_sticks_across_attempts() {
    let log = Log::new();
    let p = policy(config(2, Backoff::constant(ms(5))));
    let err = p
        .run(
            Idempotency::Idempotent,
            |e: &Boom| {
                if e.0 == "ambiguous" {
                    Classification::retry().ambiguous()
                } else {
                    Classification::retry()
                }
            },
            |_| {
                let n = log.hit();
                async move { Err::<(), _>(Boom(if n == 1 { "ambiguous" } else { "definite" })) }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::AttemptsExhausted);
    assert_eq!(err.error, Some(Boom("definite")));
    assert!(err.may_have_applied, "attempt 1 may have applied");
}

#[tokio::test(start_paused = true)]
async fn server_hint_is_a_floor_clamped_to_max_hint() {
    let log = Log::new();
    let p = policy(RetryConfig {
        max_hint: ms(500),
        reject_hint_above: Duration::from_secs(60),
        ..config(4, Backoff::constant(ms(10)))
    });
    let hints = [ms(300), ms(5), Duration::from_secs(30)];
    let r = p
        .run(
            Idempotency::Idempotent,
            |e: &Boom| Classification::retry_after(hints[e.0.len() - 1]),
            |_| {
                let n = log.hit();
                async move {
                    match n {
                        1 => Err(Boom("a")),
                        2 => Err(Boom("bb")),
                        3 => Err(Boom("ccc")),
                        _ => Ok(n),
                    }
                }
            },
        )
        .await;
    assert_eq!(r.unwrap(), 4);
    // 300 ms hint; 5 ms hint < 10 ms backoff; 30 s hint clamped to 500 ms.
    assert_eq!(log.times(), vec![ms(0), ms(300), ms(310), ms(810)]);
}

#[tokio::test(start_paused = true)]
async fn absurd_hint_is_not_retried() {
    let p = policy(RetryConfig {
        max_hint: ms(500),
        reject_hint_above: Duration::from_secs(60),
        ..config(4, Backoff::constant(ms(10)))
    });
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry_after(Duration::from_secs(3600)),
            |_| async { Err::<(), _>(Boom("throttled")) },
        )
        .await
        .unwrap_err();
    assert_eq!((err.reason, err.attempts), (GiveUp::NotRetryable, 1));
}

#[tokio::test(start_paused = true)]
async fn gives_up_now_when_the_next_delay_would_cross_the_deadline() {
    let log = Log::new();
    let p = policy(RetryConfig {
        deadline: Some(ms(100)),
        ..config(10, Backoff::exponential(ms(20), 2.0, ms(1000)).unwrap())
    });
    let start = Instant::now();
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| {
                log.hit();
                async { Err::<(), _>(Boom("down")) }
            },
        )
        .await
        .unwrap_err();
    // Attempts at 0, 20, 60; the next delay (80 ms) would end at 140 > 100: give up at 60.
    assert_eq!(log.times(), vec![ms(0), ms(20), ms(60)]);
    assert_eq!(err.reason, GiveUp::DeadlineExceeded);
    assert_eq!(err.error, Some(Boom("down")));
    assert_eq!(start.elapsed(), ms(60), "did not sleep toward the deadline");
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_cuts_and_retries() {
    let log = Log::new();
    let p = policy(RetryConfig {
        attempt_timeout: Some(ms(50)),
        ..config(3, Backoff::constant(ms(10)))
    });
    let r = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |a| {
                let n = log.hit();
                assert_eq!(a.remaining(), Some(ms(50)));
                async move {
                    if n < 3 {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Boom>(n)
                }
            },
        )
        .await;
    assert_eq!(r.unwrap(), 3);
    assert_eq!(log.times(), vec![ms(0), ms(60), ms(120)]);
}

#[tokio::test(start_paused = true)]
async fn last_attempt_cut_by_attempt_timeout() {
    let p = policy(RetryConfig {
        attempt_timeout: Some(ms(50)),
        ..config(2, Backoff::constant(ms(10)))
    });
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| async { std::future::pending::<Result<(), Boom>>().await },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::AttemptTimedOut);
    assert_eq!(
        (err.attempts, err.error, err.may_have_applied),
        (2, None, true)
    );
}

#[tokio::test(start_paused = true)]
async fn cut_non_idempotent_attempt_is_ambiguous() {
    let p = policy(RetryConfig {
        attempt_timeout: Some(ms(50)),
        ..config(3, Backoff::constant(ms(10)))
    });
    let err = p
        .run(
            Idempotency::NotIdempotent,
            |_: &Boom| Classification::retry(),
            |_| async { std::future::pending::<Result<(), Boom>>().await },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::AmbiguousNotIdempotent);
    assert_eq!((err.attempts, err.may_have_applied), (1, true));
}

#[tokio::test(start_paused = true)]
async fn call_deadline_cuts_a_running_attempt_exactly_at_the_deadline() {
    let p = policy(RetryConfig {
        deadline: Some(ms(80)),
        attempt_timeout: Some(ms(500)),
        ..config(3, Backoff::constant(ms(10)))
    });
    let start = Instant::now();
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |a| {
                assert_eq!(
                    a.remaining(),
                    Some(ms(80)),
                    "the call deadline is the earlier one"
                );
                async { std::future::pending::<Result<(), Boom>>().await }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::DeadlineExceeded);
    assert_eq!((err.attempts, err.may_have_applied), (1, true));
    assert_eq!(start.elapsed(), ms(80));
}

#[tokio::test(start_paused = true)]
async fn a_result_ready_at_the_deadline_instant_wins() {
    let p = policy(RetryConfig {
        deadline: Some(ms(80)),
        ..config(1, Backoff::constant(ms(10)))
    });
    let r = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |a| async move {
                tokio::time::sleep_until(a.deadline.unwrap()).await;
                Ok::<_, Boom>("made it")
            },
        )
        .await;
    assert_eq!(r.unwrap(), "made it");
}

#[tokio::test(start_paused = true)]
async fn open_breaker_fails_at_once_without_an_attempt() {
    let breaker = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: Some(2),
        failure_rate: None,
        open_duration: Duration::from_secs(5),
        ..BreakerConfig::default()
    })
    .unwrap();
    let log = Log::new();
    let p = policy(config(5, Backoff::constant(ms(10)))).with_breaker(breaker.clone());
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| {
                log.hit();
                async { Err::<(), _>(Boom("down")) }
            },
        )
        .await
        .unwrap_err();
    // Two failures open the breaker; the third attempt is refused.
    assert_eq!(err.reason, GiveUp::BreakerOpen { retry_in: ms(4990) });
    assert_eq!(err.attempts, 2);
    assert_eq!(err.error, Some(Boom("down")), "the last error is kept");
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| {
                log.hit();
                async { Ok::<(), Boom>(()) }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.reason, err.attempts, err.error),
        (GiveUp::BreakerOpen { retry_in: ms(4990) }, 0, None)
    );
    assert_eq!(log.times().len(), 2);
    tokio::time::advance(Duration::from_secs(5)).await;
    let r = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| async { Ok::<_, Boom>(1) },
        )
        .await;
    assert_eq!(r.unwrap(), 1, "the probe passes");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn only_server_faults_count_for_the_breaker() {
    let breaker = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        failure_rate: None,
        ..BreakerConfig::default()
    })
    .unwrap();
    let p = policy(config(3, Backoff::constant(ms(10)))).with_breaker(breaker.clone());
    for c in [
        Classification::fail(),
        Classification::retry_after(ms(1)),
        Classification::retry().server_fault(false),
    ] {
        let _ = p
            .run(
                Idempotency::Idempotent,
                |_: &Boom| c,
                |_| async { Err::<(), _>(Boom("x")) },
            )
            .await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    let _ = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::fail().server_fault(true),
            |_| async { Err::<(), _>(Boom("x")) },
        )
        .await;
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn budget_refusal_gives_up_and_emits_events() {
    let budget = RetryBudget::new(RetryBudgetConfig {
        min_retries_per_sec: 0.0,
        ..RetryBudgetConfig::default()
    })
    .unwrap();
    for _ in 0..10 {
        budget.deposit(); // exactly one retry's worth
    }
    let (events, listener) = recording();
    let p = policy(config(4, Backoff::constant(ms(10))))
        .with_budget(budget)
        .with_listener(listener);
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| async { Err::<(), _>(Boom("down")) },
        )
        .await
        .unwrap_err();
    assert_eq!((err.reason, err.attempts), (GiveUp::BudgetExhausted, 2));
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0],
        r#"Retry { policy: "test", attempt: 1, reason: "error", delay: 10ms, error: down }"#
    );
    assert_eq!(
        events[1],
        r#"BudgetExhausted { policy: "test", attempt: 2 }"#
    );
    assert_eq!(
        events[2],
        r#"GiveUp { policy: "test", reason: BudgetExhausted, attempts: 2, may_have_applied: false, error: Some("down") }"#
    );
}

#[tokio::test(start_paused = true)]
async fn listener_receives_breaker_transitions_in_either_builder_order() {
    for listener_first in [true, false] {
        let breaker = CircuitBreaker::new(BreakerConfig {
            consecutive_failures: Some(1),
            failure_rate: None,
            ..BreakerConfig::default()
        })
        .unwrap();
        let (events, listener) = recording();
        let p = policy(config(1, Backoff::constant(ms(1))));
        let p = if listener_first {
            p.with_listener(listener).with_breaker(breaker)
        } else {
            p.with_breaker(breaker).with_listener(listener)
        };
        let _ = p
            .run(
                Idempotency::Idempotent,
                |_: &Boom| Classification::retry(),
                |_| async { Err::<(), _>(Boom("x")) },
            )
            .await;
        let events = events.lock().unwrap();
        assert!(events[0].starts_with("BreakerTransition"), "{events:?}");
    }
}

async fn delays_of(p: &RetryPolicy, calls: u32) -> Vec<Duration> {
    let mut all = Vec::new();
    for _ in 0..calls {
        let log = Log::new();
        let _ = p
            .run(
                Idempotency::Idempotent,
                |_: &Boom| Classification::retry(),
                |_| {
                    log.hit();
                    async { Err::<(), _>(Boom("x")) }
                },
            )
            .await;
        all.extend(log.times());
    }
    all
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_is_reproducible() {
    let c = config(
        5,
        Backoff::exponential(ms(10), 2.0, ms(1000))
            .unwrap()
            .with_jitter(Jitter::Full),
    );
    let a = delays_of(&RetryPolicy::new(c.clone()).unwrap().with_rng_seed(42), 3).await;
    let b = delays_of(&RetryPolicy::new(c.clone()).unwrap().with_rng_seed(42), 3).await;
    let other = delays_of(&RetryPolicy::new(c).unwrap().with_rng_seed(43), 3).await;
    assert_eq!(a, b);
    assert_ne!(a, other);
    // Each call has its own RNG stream: the first call's delays differ from the second's.
    assert_ne!(a[..5], a[5..10]);
}

#[test]
fn config_is_validated() {
    let bad = |c: RetryConfig| RetryPolicy::new(c).unwrap_err().setting();
    let d = RetryConfig::default;
    assert_eq!(
        bad(RetryConfig {
            max_attempts: 0,
            ..d()
        }),
        "RetryConfig::max_attempts"
    );
    assert_eq!(
        bad(RetryConfig {
            deadline: Some(Duration::ZERO),
            ..d()
        }),
        "RetryConfig::deadline"
    );
    assert_eq!(
        bad(RetryConfig {
            attempt_timeout: Some(Duration::ZERO),
            ..d()
        }),
        "RetryConfig::attempt_timeout"
    );
    assert_eq!(
        bad(RetryConfig {
            max_hint: ms(10),
            reject_hint_above: ms(5),
            ..d()
        }),
        "RetryConfig::reject_hint_above"
    );
    assert!(RetryPolicy::new(d()).is_ok());
}

/// With `cut_attempts: false` the operation owns its deadline: an attempt that overruns is not
/// cut, and a failure after the deadline is not retried (no sleeping past it).
#[tokio::test(start_paused = true)]
async fn attempts_that_own_their_deadline_are_not_cut() {
    let p = policy(RetryConfig {
        deadline: Some(ms(100)),
        cut_attempts: false,
        ..config(3, Backoff::constant(ms(10)))
    });
    let value = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| async {
                tokio::time::sleep(ms(150)).await;
                Ok::<_, Boom>(7)
            },
        )
        .await
        .unwrap();
    assert_eq!(value, 7);

    let log = Log::new();
    let err = p
        .run(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |attempt| {
                log.hit();
                async move {
                    tokio::time::sleep_until(attempt.deadline.unwrap()).await;
                    Err::<u32, _>(Boom("late"))
                }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::DeadlineExceeded);
    assert_eq!(log.times().len(), 1);
    assert_eq!(err.error, Some(Boom("late")));
}

#[tokio::test(start_paused = true)]
async fn a_call_started_by_the_caller_retries_as_run_does() {
    let deadline = ms(1000);
    let p = policy(RetryConfig {
        deadline: Some(deadline),
        ..config(5, Backoff::exponential(ms(10), 2.0, ms(1000)).unwrap())
    });
    let started = Instant::now();
    let call = p.start::<Boom>(started).unwrap();
    let first = call.attempt();
    assert_eq!(first.number, 1);
    assert_eq!(first.started, Some(started));
    assert_eq!(first.deadline, Some(started + deadline));
    // The caller's own first attempt failed; the policy goes on from attempt 2.
    let log = Log::new();
    let r = call
        .retry(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |a| {
                let n = log.hit() + 1;
                assert_eq!(a.number, n);
                assert_eq!(a.deadline, Some(started + deadline), "one call deadline");
                async move { if n < 3 { Err(Boom("down")) } else { Ok(n) } }
            },
            Boom("first"),
        )
        .await;
    assert_eq!(r.unwrap(), 3);
    assert_eq!(
        log.times(),
        vec![ms(10), ms(30)],
        "the same backoff as `run`"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_started_by_the_caller_credits_and_respects_the_breaker() {
    let breaker = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        failure_rate: None,
        open_duration: Duration::from_secs(5),
        ..BreakerConfig::default()
    })
    .unwrap();
    let budget = RetryBudget::new(RetryBudgetConfig {
        retry_ratio: 0.5,
        min_retries_per_sec: 0.0,
        max_tokens: 10,
    })
    .unwrap();
    let p = policy(config(1, Backoff::constant(ms(10))))
        .with_breaker(breaker.clone())
        .with_budget(budget.clone());
    let before = budget.available();
    p.start::<Boom>(Instant::now()).unwrap().succeeded();
    assert_eq!(budget.available(), before + 0.5, "a success deposits");
    let err = p
        .start::<Boom>(Instant::now())
        .unwrap()
        .retry(
            Idempotency::Idempotent,
            |_: &Boom| Classification::retry(),
            |_| async { Ok::<(), Boom>(()) },
            Boom("down"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, GiveUp::AttemptsExhausted);
    assert_eq!(err.error, Some(Boom("down")));
    assert!(
        matches!(breaker.state(), BreakerState::Open { .. }),
        "the failure counted"
    );
    let refused = p.start::<Boom>(Instant::now()).unwrap_err();
    assert_eq!(refused.reason, GiveUp::BreakerOpen { retry_in: ms(5000) });
    assert_eq!(refused.attempts, 0);
}
