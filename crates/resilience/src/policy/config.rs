//! [`RetryConfig`]: the settings of a policy, plain data.

use std::borrow::Cow;
use std::time::Duration;

use crate::Backoff;

/// Settings of a [`RetryPolicy`](crate::RetryPolicy): plain data; per-call state lives in the call.
///
/// # Default
/// `max_attempts = 3`, `backoff` exponential 50 ms x 2 capped at 2 s with [`Jitter::Full`]
/// (`crate::Jitter::Full`), no `deadline`, no `attempt_timeout`, `max_hint = 10 s`,
/// `reject_hint_above = 60 s`, `name = "default"`. Three attempts absorb a failover blip
/// without tripling load for long; the deadline and attempt timeout depend on the caller's
/// latency budget, so they are off unless set.
///
/// [`Jitter::Full`]: crate::Jitter::Full
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Total attempts including the first; at least 1 (1 = never retry).
    pub max_attempts: u32,
    /// Delay before each retry.
    pub backoff: Backoff,
    /// Total time for the whole call, measured from the start of [`RetryPolicy::run`](crate::RetryPolicy::run). The
    /// policy never sleeps past it: when the next delay would cross it, the call gives up at
    /// once with [`GiveUp::DeadlineExceeded`](crate::GiveUp::DeadlineExceeded). An attempt still running at the deadline is cut.
    pub deadline: Option<Duration>,
    /// Maximum time for one attempt; an attempt still running is cut (and counts as possibly
    /// applied).
    pub attempt_timeout: Option<Duration>,
    /// A server hint ([`RetryAction::RetryAfter`](crate::RetryAction::RetryAfter)) is clamped to this.
    pub max_hint: Duration,
    /// A hint above this is absurd: the call gives up with [`GiveUp::NotRetryable`](crate::GiveUp::NotRetryable). Must be
    /// at least `max_hint`.
    pub reject_hint_above: Duration,
    /// Label for tracing, metrics and events.
    pub name: Cow<'static, str>,
    /// Whether the policy cuts an attempt still running at its deadline (the call deadline or
    /// the attempt timeout). Set it to `false` only when the operation itself returns by
    /// [`Attempt::deadline`](crate::Attempt::deadline): the policy then registers no timer of its own per call, which
    /// matters at hundreds of thousands of calls per second. It still never sleeps past the
    /// deadline.
    ///
    /// # Default
    /// `true`.
    pub cut_attempts: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default_retry(),
            deadline: None,
            attempt_timeout: None,
            max_hint: Duration::from_secs(10),
            reject_hint_above: Duration::from_secs(60),
            name: Cow::Borrowed("default"),
            cut_attempts: true,
        }
    }
}
