//! Events emitted on the slow paths: retry, give-up, budget exhausted, breaker transition.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{BreakerState, GiveUp};

/// A listener for [`Event`]s, set with [`RetryPolicy::with_listener`](crate::RetryPolicy) or
/// [`CircuitBreaker::add_listener`](crate::CircuitBreaker::add_listener). Called synchronously:
/// keep it short and never block.
pub type Listener = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Something worth observing happened. Events are emitted only on slow paths (never for a call
/// that succeeds on its first attempt).
///
/// Each event is also emitted as a `tracing` event (target `resilience`) and as `metrics`
/// counters and gauges; see the [crate docs](crate#observability) for the names.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// An attempt failed and the call will retry after `delay`.
    Retry {
        /// The policy's [`RetryConfig::name`](crate::RetryConfig::name).
        policy: &'a str,
        /// The 1-based number of the attempt that failed.
        attempt: u32,
        /// Why it failed: the [`Verdict::retry_reason`](crate::Verdict::retry_reason) of its
        /// error, or `"attempt_timed_out"` for a cut attempt (the `reason` label of
        /// `resilience.retries`).
        reason: &'static str,
        /// The wait before the next attempt.
        delay: Duration,
        /// The error of the failed attempt (`"attempt timed out"` for a cut attempt).
        error: &'a dyn fmt::Display,
    },
    /// The call gave up.
    GiveUp {
        /// The policy's name.
        policy: &'a str,
        /// Why the call gave up.
        reason: GiveUp,
        /// Attempts that ran.
        attempts: u32,
        /// Whether any attempt may have applied.
        may_have_applied: bool,
        /// The last error, if the last attempt returned one.
        error: Option<&'a dyn fmt::Display>,
    },
    /// The retry budget refused a retry (the call then gives up with
    /// [`GiveUp::BudgetExhausted`]).
    BudgetExhausted {
        /// The policy's name.
        policy: &'a str,
        /// The 1-based number of the attempt that failed and was not retried.
        attempt: u32,
    },
    /// A circuit breaker changed state.
    BreakerTransition {
        /// The breaker's [`BreakerConfig::name`](crate::BreakerConfig::name).
        breaker: &'a str,
        /// The state left.
        from: BreakerState,
        /// The state entered.
        to: BreakerState,
    },
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Retry {
                policy,
                attempt,
                reason,
                delay,
                error,
            } => f
                .debug_struct("Retry")
                .field("policy", policy)
                .field("attempt", attempt)
                .field("reason", reason)
                .field("delay", delay)
                .field("error", &format_args!("{error}"))
                .finish(),
            Event::GiveUp {
                policy,
                reason,
                attempts,
                may_have_applied,
                error,
            } => f
                .debug_struct("GiveUp")
                .field("policy", policy)
                .field("reason", reason)
                .field("attempts", attempts)
                .field("may_have_applied", may_have_applied)
                .field("error", &error.map(|e| e.to_string()))
                .finish(),
            Event::BudgetExhausted { policy, attempt } => f
                .debug_struct("BudgetExhausted")
                .field("policy", policy)
                .field("attempt", attempt)
                .finish(),
            Event::BreakerTransition { breaker, from, to } => f
                .debug_struct("BreakerTransition")
                .field("breaker", breaker)
                .field("from", from)
                .field("to", to)
                .finish(),
        }
    }
}
