//! What one failed attempt means: retry, retry after a server hint, or stop; and whether the
//! attempt may have taken effect.

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
}
