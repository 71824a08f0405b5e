//! The documented `metrics` names are emitted on the slow paths, and nothing on the success path.

use std::fmt;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use resilience::{
    Backoff, BreakerConfig, CircuitBreaker, Classification, Idempotency, RetryBudget,
    RetryBudgetConfig, RetryConfig, RetryPolicy, Verdict,
};

#[derive(Debug)]
struct Down;

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("down")
    }
}

type Series = (String, Vec<(String, String)>, DebugValue);

fn snapshot(f: impl FnOnce()) -> Vec<Series> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, f);
    let mut out: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.name().to_owned(), labels, value)
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn success_path_emits_nothing() {
    let policy = RetryPolicy::new(RetryConfig::default()).unwrap();
    let got = snapshot(|| {
        block_on(async {
            policy
                .run(
                    Idempotency::Idempotent,
                    |_: &Down| Classification::retry(),
                    |_| async { Ok::<_, Down>(()) },
                )
                .await
                .unwrap();
        });
    });
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn slow_paths_emit_the_documented_series() {
    let budget = RetryBudget::new(RetryBudgetConfig {
        min_retries_per_sec: 0.0,
        ..RetryBudgetConfig::default()
    })
    .unwrap();
    for _ in 0..10 {
        budget.deposit();
    }
    let got = snapshot(|| {
        block_on(async {
            let breaker = CircuitBreaker::new(BreakerConfig {
                consecutive_failures: Some(3),
                failure_rate: None,
                name: "db".into(),
                ..BreakerConfig::default()
            })
            .unwrap();
            let policy = RetryPolicy::new(RetryConfig {
                max_attempts: 5,
                backoff: Backoff::constant(Duration::from_millis(1)),
                name: "get".into(),
                ..RetryConfig::default()
            })
            .unwrap()
            .with_budget(budget)
            .with_breaker(breaker);
            let run = || {
                policy.run(
                    Idempotency::Idempotent,
                    |_: &Down| Classification::retry(),
                    |_| async { Err::<(), _>(Down) },
                )
            };
            // 1st call: attempt, retry (the only token), attempt, budget refuses.
            assert_eq!(run().await.unwrap_err().attempts, 2);
            // 2nd call: the 3rd consecutive failure opens the breaker; the budget refuses.
            run().await.unwrap_err();
            // 3rd call: refused by the open breaker.
            run().await.unwrap_err();
        });
    });
    let names: Vec<_> = got
        .iter()
        .map(|(n, l, v)| (n.as_str(), l.clone(), format!("{v:?}")))
        .collect();
    let expected = vec![
        (
            "resilience.breaker.state",
            labels(&[("breaker", "db")]),
            "Gauge(1.0)".to_owned(),
        ),
        (
            "resilience.breaker.transitions",
            labels(&[("breaker", "db"), ("to", "open")]),
            "Counter(1)".to_owned(),
        ),
        (
            "resilience.budget.exhausted",
            labels(&[("policy", "get")]),
            "Counter(2)".to_owned(),
        ),
        (
            "resilience.give_ups",
            labels(&[("policy", "get"), ("reason", "breaker_open")]),
            "Counter(1)".to_owned(),
        ),
        (
            "resilience.give_ups",
            labels(&[("policy", "get"), ("reason", "budget_exhausted")]),
            "Counter(2)".to_owned(),
        ),
        (
            "resilience.retries",
            labels(&[("policy", "get"), ("reason", "error")]),
            "Counter(1)".to_owned(),
        ),
    ];
    assert_eq!(names, expected);
}

/// The retry counter is labelled by the reason the classifier gives the error (else one named
/// after the action, or `attempt_timed_out` for a cut attempt), and a retry the caller counts
/// itself lands in the same series.
#[test]
fn retries_are_counted_by_reason() {
    #[derive(Debug)]
    struct Failed(&'static str);
    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    let got = snapshot(|| {
        block_on(async {
            let policy = RetryPolicy::new(RetryConfig {
                max_attempts: 10,
                backoff: Backoff::constant(Duration::from_millis(1)),
                attempt_timeout: Some(Duration::from_millis(50)),
                name: "get".into(),
                ..RetryConfig::default()
            })
            .unwrap();
            // Attempts fail as LOADING, LOADING, unnamed, throttled, cut, then succeed.
            let script = ["LOADING", "LOADING", "", "THROTTLED", "cut"];
            let n = std::sync::atomic::AtomicUsize::new(0);
            policy
                .run(
                    Idempotency::Idempotent,
                    |e: &Failed| match e.0 {
                        "" => Verdict::from(Classification::retry()),
                        "THROTTLED" => Classification::retry_after(Duration::from_millis(1)).into(),
                        reason => Classification::retry().because(reason),
                    },
                    |_| {
                        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        async move {
                            match script.get(i) {
                                Some(&"cut") => std::future::pending().await,
                                Some(&e) => Err(Failed(e)),
                                None => Ok(()),
                            }
                        }
                    },
                )
                .await
                .unwrap();
            policy.count_retry("LOADING");
            policy.count_retry("blocking_resend");
        });
    });
    let retries: Vec<_> = got
        .iter()
        .filter(|(n, _, _)| n == "resilience.retries")
        .map(|(_, l, v)| (l.clone(), format!("{v:?}")))
        .collect();
    let series = |reason: &str, n: u64| {
        (
            labels(&[("policy", "get"), ("reason", reason)]),
            format!("Counter({n})"),
        )
    };
    assert_eq!(
        retries,
        vec![
            series("LOADING", 3),
            series("attempt_timed_out", 1),
            series("blocking_resend", 1),
            series("error", 1),
            series("retry_after", 1),
        ]
    );
}

/// A breaker told not to set its state gauge (its owner publishes the state under labels of its
/// own) still counts its transitions.
#[test]
fn a_breaker_without_state_gauge_counts_transitions_only() {
    let got = snapshot(|| {
        let breaker = CircuitBreaker::new(BreakerConfig {
            consecutive_failures: Some(1),
            failure_rate: None,
            name: "node".into(),
            state_gauge: false,
            ..BreakerConfig::default()
        })
        .unwrap();
        block_on(async { breaker.try_acquire().unwrap().failure() });
        assert!(!breaker.is_closed());
    });
    let names: Vec<_> = got
        .iter()
        .map(|(n, l, v)| (n.as_str(), l.clone(), format!("{v:?}")))
        .collect();
    assert_eq!(
        names,
        vec![(
            "resilience.breaker.transitions",
            labels(&[("breaker", "node"), ("to", "open")]),
            "Counter(1)".to_owned(),
        )]
    );
}
