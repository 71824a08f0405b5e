//! [`RetryPolicy::run`]: a whole call, its first attempt and its retries.

use std::fmt;
use std::future::Future;

use tokio::time::Instant;

use super::RetryPolicy;
use crate::{Attempt, Idempotency, RetryError, Verdict};

impl RetryPolicy {
    /// Runs `op` until it succeeds or the policy gives up; see the type-level docs for the
    /// exact rules. `classify` is called once per failed attempt and returns its
    /// [`Classification`](crate::Classification), or a [`Verdict`] that also says why it failed
    /// (the `reason` label of the retry counter).
    ///
    /// # Errors
    /// A [`RetryError`] with the reason, the last error, the number of attempts, and whether
    /// any attempt may have applied.
    pub async fn run<T, E, Op, Fut, C, V>(
        &self,
        idempotency: Idempotency,
        classify: C,
        mut op: Op,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> V,
        V: Into<Verdict>,
        E: fmt::Display,
    {
        // `now` is read only if something needs it before the first attempt; after a failure
        // it is always read.
        let now = self.inner.needs_clock.then(Instant::now);
        let call = self.begin(now)?;
        // The first attempt runs here and the retry loop, boxed, only after a failure: the
        // state of a call that succeeds at once is this attempt and little else.
        let Attempt {
            number,
            deadline,
            started,
        } = call.first;
        let outcome = self.attempt(&mut op, number, deadline, started).await;
        if let Some(Ok(value)) = outcome {
            call.succeeded();
            return Ok(value);
        }
        Box::pin(call.resume(idempotency, classify, op, outcome)).await
    }
}
