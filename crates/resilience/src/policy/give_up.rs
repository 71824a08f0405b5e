//! How a call ends when it does not succeed: [`GiveUp`] (why) and [`RetryError`] (what the
//! caller gets).

use std::fmt;
use std::time::Duration;

/// Why a call gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The classifier said [`RetryAction::DoNotRetry`](crate::RetryAction::DoNotRetry), or the server hint was absurd (above
    /// [`RetryConfig::reject_hint_above`](crate::RetryConfig::reject_hint_above)).
    NotRetryable,
    /// `max_attempts` attempts ran and the last one failed.
    AttemptsExhausted,
    /// The call deadline passed, or the next delay would cross it.
    DeadlineExceeded,
    /// The retry budget refused the retry.
    BudgetExhausted,
    /// The circuit breaker refused the attempt (no attempt ran for it).
    BreakerOpen {
        /// When the breaker will admit probes (zero: it is probing now).
        retry_in: Duration,
    },
    /// A non-idempotent attempt failed in a way that may have applied: the outcome is unknown
    /// and the call was not retried.
    AmbiguousNotIdempotent,
    /// The last attempt was cut by `attempt_timeout` and no attempt was left.
    AttemptTimedOut,
}

impl GiveUp {
    /// Number of variants (for per-reason metric handles).
    pub(crate) const KINDS: usize = 7;

    pub(crate) fn index(&self) -> usize {
        match self {
            GiveUp::NotRetryable => 0,
            GiveUp::AttemptsExhausted => 1,
            GiveUp::DeadlineExceeded => 2,
            GiveUp::BudgetExhausted => 3,
            GiveUp::BreakerOpen { .. } => 4,
            GiveUp::AmbiguousNotIdempotent => 5,
            GiveUp::AttemptTimedOut => 6,
        }
    }

    /// A stable snake-case name (the `reason` metric label).
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUp::NotRetryable => "not_retryable",
            GiveUp::AttemptsExhausted => "attempts_exhausted",
            GiveUp::DeadlineExceeded => "deadline_exceeded",
            GiveUp::BudgetExhausted => "budget_exhausted",
            GiveUp::BreakerOpen { .. } => "breaker_open",
            GiveUp::AmbiguousNotIdempotent => "ambiguous_not_idempotent",
            GiveUp::AttemptTimedOut => "attempt_timed_out",
        }
    }
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::NotRetryable => f.write_str("error is not retryable"),
            GiveUp::AttemptsExhausted => f.write_str("attempts exhausted"),
            GiveUp::DeadlineExceeded => f.write_str("deadline exceeded"),
            GiveUp::BudgetExhausted => f.write_str("retry budget exhausted"),
            GiveUp::BreakerOpen { retry_in } => {
                write!(f, "circuit breaker open (probing in {retry_in:?})")
            }
            GiveUp::AmbiguousNotIdempotent => {
                f.write_str("outcome unknown: a non-idempotent attempt may have been applied")
            }
            GiveUp::AttemptTimedOut => f.write_str("last attempt timed out"),
        }
    }
}

/// A call that gave up.
#[derive(Debug)]
pub struct RetryError<E> {
    /// Why the call gave up.
    pub reason: GiveUp,
    /// The last error returned by the operation; `None` if no attempt ran or the last attempt
    /// was cut by a timeout.
    pub error: Option<E>,
    /// Attempts that ran.
    pub attempts: u32,
    /// `true` if any attempt may have applied (a cut attempt counts). An ambiguous attempt 1
    /// followed by a definite failure on attempt 2 is still ambiguous overall.
    pub may_have_applied: bool,
}

impl<E> RetryError<E> {
    /// The last error returned by the operation, if any.
    pub fn into_error(self) -> Option<E> {
        self.error
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt(s): {}",
            self.attempts, self.reason
        )?;
        if self.may_have_applied && self.reason != GiveUp::AmbiguousNotIdempotent {
            f.write_str(" (an attempt may have been applied)")?;
        }
        if let Some(e) = &self.error {
            write!(f, "; last error: {e}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
