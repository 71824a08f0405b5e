//! A write left in doubt by the client's retry policy is sent again under its token.
//!
//! The client gives up on a call whose attempt may have run when its retry is refused by the
//! retry budget or by adaptive throttling (both protect a server in trouble from a retry
//! storm). For a plain write that is the right answer: ambiguous. An exactly-once write can do
//! better, because its token makes sending it again harmless: it runs once, or its recorded
//! reply comes back. So such a write is sent again, [`RESEND_PAUSE`] apart, within what is left
//! of its deadline; only writes in doubt are, so the extra load is a few calls at most. Once in
//! doubt, every later failure keeps it in doubt: a definite failure of a later call says
//! nothing of the earlier one. At the deadline it is ambiguous, as before.

use std::time::Duration;

use redis::RedisError;
use tokio::time::Instant;

use super::{errors::after_noscript, script::Invoke};
use crate::client::Client;
use crate::error::{ErrorKind, Failure, Outcome};

/// The pause before sending a write in doubt again: long enough for a throttle's window or a
/// budget's deposits to move, short against a deadline.
pub(super) const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// Whether the client gave up on `e`'s call because its policy refused a retry (the budget,
/// adaptive throttling) after an attempt that may have run.
fn refused_in_doubt(e: &RedisError) -> bool {
    let failure = Failure::of(e);
    failure.outcome == Outcome::Ambiguous
        && matches!(
            failure.kind,
            ErrorKind::BudgetExhausted | ErrorKind::RejectedLocally
        )
}

/// One exactly-once call's doubt: the first error that left its write in doubt, if any.
pub(super) struct Doubt {
    started: Instant,
    first: Option<RedisError>,
}

impl Doubt {
    /// A call started at `started` (its deadline counts from there).
    pub(super) fn new(started: Instant) -> Doubt {
        Doubt {
            started,
            first: None,
        }
    }

    /// After the call (sent `how`) failed with `e`: `Ok(handle)` to send the write again (after
    /// [`RESEND_PAUSE`]) with what is left of `backend`'s deadline, or the error to return: `e`
    /// when the write is not in doubt, else the error that put it in doubt (ambiguous); an
    /// error of the `EVAL` sent after `NOSCRIPT` as [`after_noscript`] says.
    pub(super) async fn after(
        &mut self,
        backend: &Client,
        e: RedisError,
        how: Invoke,
    ) -> Result<Client, RedisError> {
        let give_up = |e| match how {
            Invoke::Body => after_noscript(e),
            Invoke::Sha => e,
        };
        if self.first.is_none() && !refused_in_doubt(&e) {
            return Err(give_up(e));
        }
        let first = self.first.get_or_insert(e).clone();
        let spent = self.started.elapsed() + RESEND_PAUSE;
        let left = backend.call_deadline().saturating_sub(spent);
        if left < Duration::from_millis(1) {
            return Err(give_up(first));
        }
        tokio::time::sleep(RESEND_PAUSE).await;
        backend.with_deadline(left).map_err(|_| give_up(first))
    }
}
