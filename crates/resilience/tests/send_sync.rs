//! The public types are `Send + Sync` (and the futures of `run` are `Send` when the operation's
//! are), so policies can be shared across tasks and threads.

use std::future::Future;

use resilience::{
    Attempt, Backoff, BreakerConfig, BreakerOpen, BreakerPermit, BreakerState, CircuitBreaker,
    Classification, ConfigError, Event, GiveUp, Idempotency, Jitter, Listener, RetryAction,
    RetryBudget, RetryBudgetConfig, RetryConfig, RetryError, RetryPolicy,
};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<Backoff>();
    send_sync::<Jitter>();
    send_sync::<RetryBudget>();
    send_sync::<RetryBudgetConfig>();
    send_sync::<CircuitBreaker>();
    send_sync::<BreakerConfig>();
    send_sync::<BreakerState>();
    send_sync::<BreakerOpen>();
    send_sync::<BreakerPermit<'static>>();
    send_sync::<Classification>();
    send_sync::<RetryAction>();
    send_sync::<RetryPolicy>();
    send_sync::<RetryConfig>();
    send_sync::<Attempt>();
    send_sync::<Idempotency>();
    send_sync::<GiveUp>();
    send_sync::<RetryError<std::io::Error>>();
    send_sync::<ConfigError>();
    send_sync::<Listener>();
    // `Event` is a borrowed view handed synchronously to listeners; it holds the operation's
    // error as `&dyn Display`, so it is deliberately not required to be `Send`/`Sync`.
    let _ = std::mem::size_of::<Event<'static>>();
    #[cfg(feature = "tower")]
    {
        send_sync::<resilience::tower::RetryLayer<fn(&std::io::Error) -> Classification>>();
    }
}

#[test]
fn run_future_is_send() {
    let policy = RetryPolicy::new(RetryConfig::default()).unwrap();
    let fut = policy.run(
        Idempotency::Idempotent,
        |_: &std::io::Error| Classification::retry(),
        |_| async { Ok::<_, std::io::Error>(1) },
    );
    send(&fut);
    fn is_future<F: Future>(_: &F) {}
    is_future(&fut);
}
