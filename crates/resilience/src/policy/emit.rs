//! Reporting the slow paths: each retry, budget refusal and give-up goes to the listener, to
//! `tracing` and to `metrics` (see the crate docs for the names).

use std::fmt;
use std::time::Duration;

use super::RetryPolicy;
use crate::event::Event;
use crate::{GiveUp, RetryError};

/// Display of a cut attempt in [`Event::Retry`].
struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("attempt timed out")
    }
}

impl RetryPolicy {
    /// Reports that the call gave up, and makes its error.
    #[cold]
    pub(super) fn give_up<E: fmt::Display>(
        &self,
        reason: GiveUp,
        error: Option<E>,
        attempts: u32,
        may_have_applied: bool,
    ) -> RetryError<E> {
        let inner = &*self.inner;
        let shown = error.as_ref().map(|e| e as &dyn fmt::Display);
        inner.metrics.give_up(
            &inner.config.name,
            reason,
            attempts,
            may_have_applied,
            shown,
        );
        if let Some(l) = &inner.listener {
            l(&Event::GiveUp {
                policy: &inner.config.name,
                reason,
                attempts,
                may_have_applied,
                error: shown,
            });
        }
        RetryError {
            reason,
            error,
            attempts,
            may_have_applied,
        }
    }

    /// Reports that the budget refused a retry after attempt `attempt`.
    pub(super) fn budget_exhausted(&self, attempt: u32) {
        let inner = &*self.inner;
        inner.metrics.budget_exhausted(&inner.config.name, attempt);
        if let Some(l) = &inner.listener {
            l(&Event::BudgetExhausted {
                policy: &inner.config.name,
                attempt,
            });
        }
    }

    /// Reports that attempt `attempt` failed with `error` (`None`: it was cut) for `reason`
    /// and the call retries after `delay`.
    pub(super) fn retrying<E: fmt::Display>(
        &self,
        attempt: u32,
        reason: &'static str,
        delay: Duration,
        error: Option<&E>,
    ) {
        let inner = &*self.inner;
        let shown: &dyn fmt::Display = match error {
            Some(e) => e,
            None => &TimedOut,
        };
        inner
            .metrics
            .retry(&inner.config.name, reason, attempt, delay, shown);
        if let Some(l) = &inner.listener {
            l(&Event::Retry {
                policy: &inner.config.name,
                attempt,
                reason,
                delay,
                error: shown,
            });
        }
    }

    /// Counts a retry the caller made on its own, outside [`RetryPolicy::run`] and
    /// [`Call::retry`](crate::Call::retry) (a re-send its protocol calls for, with no backoff and
    /// no budget), in the policy's `resilience.retries` counter under `reason`, so that one
    /// series counts every retry. Nothing else is emitted (no event, no `tracing`).
    #[cold]
    pub fn count_retry(&self, reason: &'static str) {
        let inner = &*self.inner;
        inner.metrics.count_retry(&inner.config.name, reason);
    }
}
