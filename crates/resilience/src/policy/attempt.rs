//! The operation and its attempts: whether it may run twice ([`Idempotency`]), what each
//! attempt is told ([`Attempt`]), and running one attempt until its deadline.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::RetryPolicy;

/// Whether running the operation twice has the same effect as running it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to repeat: a possibly-applied failure is retried.
    Idempotent,
    /// Not safe to repeat: a possibly-applied failure ends the call with
    /// [`GiveUp::AmbiguousNotIdempotent`](crate::GiveUp::AmbiguousNotIdempotent).
    NotIdempotent,
}

/// The context handed to each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// When this attempt will be cut: the earlier of the call deadline and the attempt
    /// timeout. `None` if neither is set.
    pub deadline: Option<Instant>,
    /// When the attempt started, if the policy read the clock for it (it does after a failure,
    /// and before the first attempt when a deadline, an attempt timeout or
    /// [`RetryPolicy::start`] gave it): an operation can use it instead of reading the
    /// clock again.
    pub started: Option<Instant>,
}

impl Attempt {
    /// Time left before [`Attempt::deadline`] (zero if passed); `None` if there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

impl RetryPolicy {
    pub(super) fn attempt_deadline(&self, now: Option<Instant>) -> Option<Instant> {
        match (self.inner.config.attempt_timeout, now) {
            (Some(t), Some(now)) => Some(now.checked_add(t).unwrap_or_else(far_future)),
            _ => None,
        }
    }

    /// Runs attempt `number`; `None` when it was cut at `deadline` (`cut_attempts`).
    pub(super) async fn attempt<T, E, Op, Fut>(
        &self,
        op: &mut Op,
        number: u32,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Option<Result<T, E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Pinned once here and raced by reference: passing the future by value into a helper
        // would store it twice in this state machine.
        let mut fut = pin!(op(Attempt {
            number,
            deadline,
            started,
        }));
        match deadline {
            // Boxed: its timer would otherwise be part of every call's state, cut or not.
            Some(deadline) if self.inner.config.cut_attempts => {
                Box::pin(run_until(deadline, fut.as_mut())).await
            }
            _ => Some(fut.as_mut().await),
        }
    }
}

/// Runs `fut` until `deadline`. The future is polled once before any timer is created (so an
/// immediately ready result costs no timer registration), then raced with `timeout_at`, which
/// also polls the future before the timer: a result ready at the deadline instant wins.
#[inline]
async fn run_until<F: Future>(deadline: Instant, mut fut: Pin<&mut F>) -> Option<F::Output> {
    let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    if let Poll::Ready(output) = first {
        return Some(output);
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An instant about 30 years ahead, for durations too large to add.
pub(super) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
