//! [`Call`]: a call whose first attempt the caller runs itself ([`RetryPolicy::start`],
//! [`Call::attempt`], then [`Call::succeeded`] or [`Call::retry`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::RetryPolicy;
use super::attempt::{earliest, far_future};
use crate::{Attempt, BreakerPermit, GiveUp, Idempotency, RetryError, Verdict};

/// A call whose first attempt the caller runs itself, on a path of its own (see
/// [`RetryPolicy::start`]); the policy takes over only if that attempt fails.
///
/// This is [`RetryPolicy::run`] cut in two for a caller whose success path must be as lean as
/// a bare call (one state machine, no closure): the decisions are the same.
///
/// # Example
/// ```
/// use resilience::{Classification, Idempotency, RetryConfig, RetryPolicy};
/// # async fn get(_: Option<std::time::Duration>) -> Result<u32, std::io::Error> { Ok(7) }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = RetryPolicy::new(RetryConfig::default())?;
/// // Retries are counted under the reason `io` (a bare classification would count them as
/// // `error`).
/// let classify = |_: &std::io::Error| Classification::retry().because("io");
/// let call = policy.start::<std::io::Error>(tokio::time::Instant::now())?;
/// let value = match get(call.attempt().remaining()).await {
///     Ok(value) => {
///         call.succeeded();
///         value
///     }
///     Err(error) => {
///         call.retry(Idempotency::Idempotent, classify, |a| get(a.remaining()), error)
///             .await?
///     }
/// };
/// # assert_eq!(value, 7); Ok(()) }
/// ```
#[must_use = "a call must end with `succeeded` or `retry`"]
pub struct Call<'p> {
    pub(super) policy: &'p RetryPolicy,
    pub(super) permit: Option<BreakerPermit<'p>>,
    pub(super) call_deadline: Option<Instant>,
    pub(super) first: Attempt,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("call_deadline", &self.call_deadline)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// Starts a call whose first attempt the caller runs itself (see [`Call`]): the call's
    /// deadline counts from `started`, and the breaker is asked for a permit now.
    ///
    /// # Errors
    /// [`GiveUp::BreakerOpen`] when the breaker refuses the first attempt (no attempt runs).
    pub fn start<E: fmt::Display>(&self, started: Instant) -> Result<Call<'_>, RetryError<E>> {
        self.begin(Some(started))
    }

    pub(super) fn begin<E: fmt::Display>(
        &self,
        now: Option<Instant>,
    ) -> Result<Call<'_>, RetryError<E>> {
        let call_deadline = match (self.inner.config.deadline, now) {
            (Some(d), Some(start)) => Some(start.checked_add(d).unwrap_or_else(far_future)),
            _ => None,
        };
        let permit = match self.permit(now) {
            Ok(permit) => permit,
            Err(retry_in) => {
                return Err(self.give_up(GiveUp::BreakerOpen { retry_in }, None, 0, false));
            }
        };
        Ok(Call {
            policy: self,
            permit,
            call_deadline,
            first: Attempt {
                number: 1,
                deadline: earliest(call_deadline, self.attempt_deadline(now)),
                started: now,
            },
        })
    }

    /// A breaker permit for the next attempt (`None` without a breaker); `Err` with the time
    /// until the open breaker lets a probe through.
    pub(super) fn permit(
        &self,
        now: Option<Instant>,
    ) -> Result<Option<BreakerPermit<'_>>, Duration> {
        match &self.inner.breaker {
            None => Ok(None),
            Some(breaker) => breaker
                .try_acquire_at(now.unwrap_or_else(Instant::now))
                .map(Some)
                .map_err(|open| open.retry_in),
        }
    }

    pub(super) fn succeeded(&self, permit: Option<BreakerPermit<'_>>) {
        if let Some(permit) = permit {
            permit.success();
        }
        if let Some(budget) = &self.inner.budget {
            budget.deposit();
        }
    }
}

impl<'p> Call<'p> {
    /// The first attempt's context: number 1, its deadline (the earlier of the call deadline
    /// and the attempt timeout) and its start. The caller's attempt must end by
    /// [`Attempt::deadline`] on its own: the policy does not cut it.
    pub fn attempt(&self) -> Attempt {
        self.first
    }

    /// The first attempt succeeded: credits the breaker and the budget, as
    /// [`RetryPolicy::run`] does.
    pub fn succeeded(self) {
        self.policy.succeeded(self.permit);
    }

    /// The first attempt failed with `error`: classifies it and retries with `op` as
    /// [`RetryPolicy::run`] would have (attempt numbers go on from 2). `classify` returns a
    /// [`Classification`](crate::Classification), or a [`Verdict`] that also names why the
    /// attempt failed: the policy's retry counter and [`Event::Retry`](crate::Event::Retry) are
    /// labelled with it.
    ///
    /// # Errors
    /// As [`RetryPolicy::run`].
    pub async fn retry<T, E, Op, Fut, C, V>(
        self,
        idempotency: Idempotency,
        classify: C,
        op: Op,
        error: E,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> V,
        V: Into<Verdict>,
        E: fmt::Display,
    {
        self.resume(idempotency, classify, op, Some(Err(error)))
            .await
    }
}
