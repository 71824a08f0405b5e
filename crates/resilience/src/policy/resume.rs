//! The retry loop: from a failed attempt to the next one, or to giving up.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::RetryPolicy;
use super::attempt::{earliest, far_future};
use crate::{Attempt, Call, GiveUp, Idempotency, RetryAction, RetryError, Verdict};

/// One failed attempt, as seen by the decision logic.
struct Failure {
    action: RetryAction,
    may_have_applied: bool,
    cut: bool,
    /// Why, for the retry counter.
    reason: &'static str,
}

impl<'p> Call<'p> {
    /// The retry loop, from the first attempt's failure (`None`: it was cut).
    pub(super) async fn resume<T, E, Op, Fut, C, V>(
        self,
        idempotency: Idempotency,
        classify: C,
        mut op: Op,
        first: Option<Result<T, E>>,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> V,
        V: Into<Verdict>,
        E: fmt::Display,
    {
        let policy: &'p RetryPolicy = self.policy;
        let inner = &*policy.inner;
        let config = &inner.config;
        let Call {
            mut permit,
            call_deadline,
            ..
        } = self;
        let mut outcome = first;
        let mut now: Option<Instant>;
        let mut attempts = 1u32;
        let mut may_have_applied = false;
        let mut previous: Option<Duration> = None;
        let mut rng: Option<SmallRng> = None;
        let mut last_error: Option<E>;

        loop {
            let failure = match outcome {
                Some(Ok(value)) => {
                    policy.succeeded(permit);
                    return Ok(value);
                }
                Some(Err(error)) => {
                    let verdict: Verdict = classify(&error).into();
                    let c = verdict.classification;
                    let at = Instant::now();
                    now = Some(at);
                    if let Some(permit) = permit
                        && c.server_fault
                    {
                        permit.failure_at(at);
                    }
                    last_error = Some(error);
                    Failure {
                        action: c.action,
                        may_have_applied: c.may_have_applied,
                        cut: false,
                        reason: verdict.retry_reason(),
                    }
                }
                None => {
                    let at = Instant::now();
                    now = Some(at);
                    if let Some(permit) = permit {
                        permit.failure_at(at);
                    }
                    last_error = None;
                    Failure {
                        action: RetryAction::Retry,
                        may_have_applied: true,
                        cut: true,
                        reason: GiveUp::AttemptTimedOut.as_str(),
                    }
                }
            };
            may_have_applied |= failure.may_have_applied;
            let now_at = now.unwrap_or_else(Instant::now);

            let past_deadline = |at: Option<Instant>| match (at, call_deadline) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(at), Some(deadline)) => at >= deadline,
            };
            let stop = if failure.cut && past_deadline(Some(now_at)) {
                Some(GiveUp::DeadlineExceeded)
            } else if failure.action == RetryAction::DoNotRetry {
                Some(GiveUp::NotRetryable)
            } else if failure.may_have_applied && idempotency == Idempotency::NotIdempotent {
                Some(GiveUp::AmbiguousNotIdempotent)
            } else if matches!(failure.action, RetryAction::RetryAfter(h) if h > config.reject_hint_above)
            {
                Some(GiveUp::NotRetryable)
            } else if attempts >= config.max_attempts {
                Some(if failure.cut {
                    GiveUp::AttemptTimedOut
                } else {
                    GiveUp::AttemptsExhausted
                })
            } else {
                None
            };
            if let Some(reason) = stop {
                return Err(policy.give_up(reason, last_error, attempts, may_have_applied));
            }

            let rng = rng.get_or_insert_with(|| inner.call_rng());
            let mut delay = config.backoff.delay(attempts, previous, rng);
            if let RetryAction::RetryAfter(hint) = failure.action {
                delay = delay.max(hint.min(config.max_hint));
            }
            let wake = now_at.checked_add(delay);
            if past_deadline(wake) {
                return Err(policy.give_up(
                    GiveUp::DeadlineExceeded,
                    last_error,
                    attempts,
                    may_have_applied,
                ));
            }
            if let Some(budget) = &inner.budget
                && !budget.try_withdraw_at(now_at)
            {
                policy.budget_exhausted(attempts);
                return Err(policy.give_up(
                    GiveUp::BudgetExhausted,
                    last_error,
                    attempts,
                    may_have_applied,
                ));
            }

            policy.retrying(attempts, failure.reason, delay, last_error.as_ref());
            // `wake` is Some: a None (overflow) would have been past any deadline, and without
            // a deadline we cap the sleep at the far future.
            tokio::time::sleep_until(wake.unwrap_or_else(far_future)).await;
            now = Some(Instant::now());
            previous = Some(delay);
            // Timers wake late (Tokio rounds a sleep up to its next millisecond): no attempt
            // starts at or after the deadline.
            if past_deadline(now) {
                return Err(policy.give_up(
                    GiveUp::DeadlineExceeded,
                    last_error,
                    attempts,
                    may_have_applied,
                ));
            }

            permit = match policy.permit(now) {
                Ok(permit) => permit,
                Err(retry_in) => {
                    // Report the previous attempt's error.
                    return Err(policy.give_up(
                        GiveUp::BreakerOpen { retry_in },
                        last_error,
                        attempts,
                        may_have_applied,
                    ));
                }
            };
            attempts += 1;
            let deadline = earliest(call_deadline, policy.attempt_deadline(now));
            outcome = policy.attempt(&mut op, attempts, deadline, now).await;
        }
    }
}
