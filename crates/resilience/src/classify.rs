//! What one failed attempt means: retry, retry after a server hint, or stop; whether the
//! attempt may have taken effect; and, for the retry counter, why it failed.

use std::time::Duration;

/// What the policy should do after one failed attempt, as decided by the caller's classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Retry after the policy's backoff delay.
    Retry,
    /// Retry, but wait at least this long (a server hint such as HTTP `Retry-After` or a
    /// throttling reply).
    ///
    /// # Behavior
    /// - The hint is clamped to [`RetryConfig::max_hint`](crate::RetryConfig::max_hint); the
    ///   wait is `max(backoff delay, clamped hint)`.
    /// - A hint above [`RetryConfig::reject_hint_above`](crate::RetryConfig::reject_hint_above)
    ///   is treated as absurd: the call gives up with [`GiveUp::NotRetryable`](crate::GiveUp).
    /// - The wait is still bounded by the call's deadline (the call gives up instead of
    ///   sleeping past it).
    RetryAfter(Duration),
    /// Do not retry: the error is permanent (a user error, a wrong type, a missing permission).
    DoNotRetry,
}

/// The meaning of one failed attempt, computed by the caller for each error.
///
/// Built with [`Classification::retry`], [`Classification::retry_after`] or
/// [`Classification::fail`] and refined with [`Classification::ambiguous`] and
/// [`Classification::server_fault`].
///
/// # Example
/// ```
/// use resilience::{Classification, RetryAction};
/// // The connection broke after the request was written: retryable, but it may have applied.
/// let c = Classification::retry().ambiguous();
/// assert_eq!(c.action, RetryAction::Retry);
/// assert!(c.may_have_applied);
/// assert!(c.server_fault);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// Retry, retry after a hint, or stop.
    pub action: RetryAction,
    /// The failed attempt may have taken effect (for example the request was written, then the
    /// connection broke). Such a failure is retried only for an idempotent operation.
    pub may_have_applied: bool,
    /// The failure is the server's trouble and counts as a failure for the circuit breaker.
    /// `false` for user errors and for throttling (the server is healthy, just busy).
    pub server_fault: bool,
}

impl Classification {
    /// A retryable server failure that did not apply: `Retry`, `may_have_applied = false`,
    /// `server_fault = true`.
    pub fn retry() -> Self {
        Self {
            action: RetryAction::Retry,
            may_have_applied: false,
            server_fault: true,
        }
    }

    /// A throttling reply with a server hint: `RetryAfter(hint)`, `may_have_applied = false`,
    /// `server_fault = false` (throttling does not trip the breaker).
    pub fn retry_after(hint: Duration) -> Self {
        Self {
            action: RetryAction::RetryAfter(hint),
            may_have_applied: false,
            server_fault: false,
        }
    }

    /// A permanent failure: `DoNotRetry`, `may_have_applied = false`, `server_fault = false`
    /// (a user error). Use [`Classification::server_fault`] for a permanent server failure.
    pub fn fail() -> Self {
        Self {
            action: RetryAction::DoNotRetry,
            may_have_applied: false,
            server_fault: false,
        }
    }

    /// Marks the failed attempt as possibly applied (the outcome is unknown).
    #[must_use]
    pub fn ambiguous(mut self) -> Self {
        self.may_have_applied = true;
        self
    }

    /// Sets whether the failure counts against the circuit breaker.
    #[must_use]
    pub fn server_fault(mut self, server_fault: bool) -> Self {
        self.server_fault = server_fault;
        self
    }

    /// This classification with why the attempt failed, in a few words (`"connection_lost"`,
    /// `"LOADING"`): see [`Verdict::reason`].
    pub fn because(self, reason: &'static str) -> Verdict {
        Verdict {
            classification: self,
            reason: Some(reason),
        }
    }
}

/// What a classifier says of one failed attempt: its [`Classification`] and, if it names one,
/// why it failed. A classifier given to [`RetryPolicy::run`](crate::RetryPolicy::run) or
/// [`Call::retry`](crate::Call::retry) returns either a bare [`Classification`] (it converts
/// into a verdict without a reason) or one made with [`Classification::because`].
///
/// Kept apart from [`Classification`] so that an error type can keep its classification
/// without growing by the reason: an error is returned by value on every failed attempt, and the
/// reason is only needed when the call retries.
///
/// # Example
/// ```
/// use resilience::{Classification, Verdict};
/// let v = Classification::retry().ambiguous().because("connection_lost");
/// assert_eq!(v.reason, Some("connection_lost"));
/// assert_eq!(Verdict::from(Classification::retry()).retry_reason(), "error");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What the failure means.
    pub classification: Classification,
    /// Why the attempt failed: the `reason` label of the `resilience.retries` counter and of
    /// [`Event::Retry`](crate::Event::Retry) if the call retries. Keep the set of reasons small:
    /// each is a metric series. `None`: see [`Verdict::retry_reason`].
    pub reason: Option<&'static str>,
}

impl Verdict {
    /// The reason a retry after this failure is counted under: [`Verdict::reason`], else one
    /// named after the action: `"error"` for [`RetryAction::Retry`], `"retry_after"` for
    /// [`RetryAction::RetryAfter`] (and for [`RetryAction::DoNotRetry`], which is not retried,
    /// `"error"`).
    pub fn retry_reason(&self) -> &'static str {
        match (self.reason, self.classification.action) {
            (Some(reason), _) => reason,
            (None, RetryAction::RetryAfter(_)) => "retry_after",
            (None, _) => "error",
        }
    }
}

impl From<Classification> for Verdict {
    fn from(classification: Classification) -> Self {
        Verdict {
            classification,
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_documented_flags() {
        assert_eq!(
            Classification::retry(),
            Classification {
                action: RetryAction::Retry,
                may_have_applied: false,
                server_fault: true
            }
        );
        let hint = Duration::from_millis(250);
        assert_eq!(
            Classification::retry_after(hint),
            Classification {
                action: RetryAction::RetryAfter(hint),
                may_have_applied: false,
                server_fault: false
            }
        );
        let f = Classification::fail().server_fault(true).ambiguous();
        assert_eq!(f.action, RetryAction::DoNotRetry);
        assert!(f.server_fault && f.may_have_applied);
    }

    #[test]
    fn a_retry_is_named_by_its_reason_else_by_its_action() {
        let throttled = Classification::retry_after(Duration::from_millis(5));
        assert_eq!(
            Verdict::from(Classification::retry()).retry_reason(),
            "error"
        );
        assert_eq!(Verdict::from(throttled).retry_reason(), "retry_after");
        let named = throttled.because("THROTTLED");
        assert_eq!(named.classification, throttled);
        assert_eq!(named.reason, Some("THROTTLED"));
        assert_eq!(named.retry_reason(), "THROTTLED");
    }
}
