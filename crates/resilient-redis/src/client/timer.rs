//! The response window of a call: one timer per handle, re-armed about once per window.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::time::{Instant, Sleep};

/// Points `timer` at `limit` for a call that started at `now`, and returns it. A timer still
/// set for an earlier call's window (before `limit`, not yet passed) is left alone: it may
/// fire early, and [`ReplyOrLimit`] then sets it again. So a stream of calls resets it about
/// once per window, not once per call.
pub(super) fn arm(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Instant,
    now: Instant,
) -> Pin<&mut Sleep> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(limit)));
    let set = timer.deadline();
    if set <= now || set > limit {
        timer.as_mut().reset(limit);
    }
    timer.as_mut()
}

/// A reply, or `None` when `limit` passed first; `timer` was [`arm`]ed for it.
pub(super) struct ReplyOrLimit<'a, F> {
    pub(super) reply: Pin<&'a mut F>,
    pub(super) timer: Pin<&'a mut Sleep>,
    pub(super) limit: Instant,
}

impl<F: Future> Future for ReplyOrLimit<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(reply) = self.reply.as_mut().poll(cx) {
            return Poll::Ready(Some(reply));
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Fired: at `limit`, or earlier when it was still set for an earlier call.
            if self.timer.deadline() >= self.limit {
                return Poll::Ready(None);
            }
            let limit = self.limit;
            self.timer.as_mut().reset(limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{future::pending, time::Duration};

    use tokio::time::{Instant, advance};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Polls `fut` once, without waiting.
    fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(fut).poll(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_left_from_an_earlier_call_does_not_end_the_window_early() {
        let mut timer = None;
        let t0 = Instant::now();
        // An earlier call's window: until t0 + 100 ms.
        arm(&mut timer, t0 + 100 * MS, t0);
        advance(50 * MS).await;
        // This call's window ends at t0 + 250 ms: the timer is left set for t0 + 100 ms.
        let limit = t0 + 250 * MS;
        let never = pending::<()>();
        tokio::pin!(never);
        let mut waiting = ReplyOrLimit {
            reply: never.as_mut(),
            timer: arm(&mut timer, limit, Instant::now()),
            limit,
        };
        assert_eq!(
            waiting.timer.deadline(),
            t0 + 100 * MS,
            "not reset per call"
        );
        assert!(poll_once(&mut waiting).is_pending());
        advance(60 * MS).await; // t0 + 110 ms: the old timer fired
        assert!(
            poll_once(&mut waiting).is_pending(),
            "the window is not over"
        );
        assert_eq!(waiting.timer.deadline(), limit, "set again for this call");
        advance(139 * MS).await; // t0 + 249 ms
        assert!(poll_once(&mut waiting).is_pending());
        advance(2 * MS).await;
        assert_eq!(
            poll_once(&mut waiting),
            Poll::Ready(None),
            "the window is over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_set_too_late_or_already_passed_is_set_again() {
        let mut timer = None;
        let t0 = Instant::now();
        arm(&mut timer, t0 + 500 * MS, t0);
        // A shorter window (a call with little deadline left): the timer comes earlier.
        assert_eq!(arm(&mut timer, t0 + 20 * MS, t0).deadline(), t0 + 20 * MS);
        advance(30 * MS).await;
        // Passed: a new call's window starts from scratch.
        let now = Instant::now();
        assert_eq!(
            arm(&mut timer, now + 500 * MS, now).deadline(),
            now + 500 * MS
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_wins_over_the_timer() {
        let mut timer = None;
        let now = Instant::now();
        let ready = std::future::ready(7);
        tokio::pin!(ready);
        let mut waiting = ReplyOrLimit {
            reply: ready.as_mut(),
            timer: arm(&mut timer, now, now),
            limit: now,
        };
        assert_eq!(poll_once(&mut waiting), Poll::Ready(Some(7)));
    }
}
