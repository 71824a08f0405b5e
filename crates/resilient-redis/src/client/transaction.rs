//! Optimistic transactions: `WATCH` the keys, let the caller read through the same connection
//! and say what to write, then `MULTI` .. `EXEC`; re-run when a watched key changed.
//!
//! # Outcomes
//! Every run happens on a dedicated connection (`WATCH` is a connection's state: a shared
//! connection would mix callers' watches). A run is repeated within the handle's deadline
//! when nothing of it can have been applied:
//! - `EXEC` answered nil: a watched key changed (a *conflict*, counted in
//!   [`ClientStats::conflicts`](crate::ClientStats::conflicts)), after a jittered backoff
//!   (`retry_backoff`, which spreads the contenders). Conflicts do not draw on the retry
//!   budget: contention on one hot key must not take retries from every other call;
//! - the connection broke, or the server answered as a replica, before `EXEC` was sent: a
//!   retry like any other (backoff, retry budget, breaker).
//!
//! Once `MULTI` .. `EXEC` has been sent, a lost connection or a deadline is
//! [`Outcome::Ambiguous`]: the transaction may have been applied (its writes all, or none).

use std::{future::Future, sync::atomic::Ordering};

use redis::{
    Cmd, FromRedisValue, Pipeline, RedisFuture, ToRedisArgs, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use resilience::{Classification, Idempotency};
use tokio::time::Instant;

use super::{Client, Handle};
use crate::{
    commands::{CommandSafety, safety_of},
    connection::Dedicated,
    error::{Error, ErrorKind, Outcome},
    retry::{AttemptError, give_up_error},
};

/// The connection a transaction's closure reads through: it holds the `WATCH`. Only reads
/// are sent (a write is refused with a clear error: writes go in the pipeline the closure
/// returns, so they are applied atomically, or not at all on a conflict).
pub struct Transaction {
    conn: MultiplexedConnection,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

fn write_refused() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "only reads inside a transaction",
        "queue writes in the pipeline the closure returns (they run between MULTI and EXEC)"
            .to_owned(),
    ))
}

impl ConnectionLike for Transaction {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if safety_of(cmd) != CommandSafety::ReadOnly {
            return Box::pin(async { Err(write_refused()) });
        }
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if cmd
            .cmd_iter()
            .any(|c| safety_of(c) != CommandSafety::ReadOnly)
        {
            return Box::pin(async { Err(write_refused()) });
        }
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Nothing of the run was applied: run it again (a retry like any other).
fn not_applied(message: &str, source: Option<redis::RedisError>) -> AttemptError {
    let class = Classification::retry().server_fault(true);
    AttemptError::new(
        ErrorKind::ConnectionLost,
        Outcome::Failed,
        message,
        source,
        class,
    )
}

/// Nothing applied, and running again would not help.
fn failed(kind: ErrorKind, message: &str, source: Option<redis::RedisError>) -> AttemptError {
    let class = Classification::fail().server_fault(false);
    AttemptError::new(kind, Outcome::Failed, message, source, class)
}

/// `EXEC` was sent: the transaction may have been applied.
fn ambiguous(message: &str, source: Option<redis::RedisError>) -> AttemptError {
    let class = Classification::fail().ambiguous().server_fault(true);
    AttemptError::new(
        ErrorKind::ConnectionLost,
        Outcome::Ambiguous,
        message,
        source,
        class,
    )
}

/// Whether an error of a command sent before `EXEC` means "run it again" (nothing applied).
fn lost_before_exec(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

impl Client {
    /// Runs an optimistic transaction: `WATCH keys`, then `body` (which reads through the
    /// [`Transaction`] it is given and returns the writes to apply, as a pipeline), then
    /// `MULTI` .. `EXEC` of that pipeline; the `EXEC` replies are converted to `T` (an empty
    /// pipeline applies nothing and converts an empty array).
    ///
    /// A watched key changed by someone else (`EXEC` answered nil) re-runs `body` on fresh
    /// reads, with backoff, within the handle's deadline; so does a connection lost before
    /// `EXEC` was sent (within the retry budget too). Once `EXEC` was sent, a lost connection
    /// is [`Outcome::Ambiguous`].
    ///
    /// ```no_run
    /// # async fn f(client: resilient_redis::Client) -> Result<(), resilient_redis::Error> {
    /// use redis::AsyncCommands;
    /// let (balance,): (i64,) = client
    ///     .transaction(&["balance"], |mut tx| async move {
    ///         let now: i64 = tx.get("balance").await?;
    ///         Ok(redis::pipe().set("balance", now + 10).ignore().get("balance").clone())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when a watched key changed at every run until the deadline;
    /// [`ErrorKind::Refused`] on a cluster (not yet supported) or with no key to watch; the
    /// client's errors (`Unavailable`, `DeadlineExceeded`, `BudgetExhausted`, ...); the
    /// error `body` returns (not retried, unless it is a lost connection); an `EXEC` error
    /// reply (`EXECABORT`) as [`ErrorKind::Server`].
    pub async fn transaction<K, T, F, Fut>(&self, keys: &[K], mut body: F) -> Result<T, Error>
    where
        K: ToRedisArgs,
        T: FromRedisValue,
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = redis::RedisResult<Pipeline>>,
    {
        let handle = &self.handle;
        let Some(node) = handle.inner.router.single() else {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "WATCH transactions are not sent to a cluster yet",
            ));
        };
        if keys.is_empty() {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "a transaction watches at least one key",
            ));
        }
        let mut watch = redis::cmd("WATCH");
        for key in keys {
            watch.arg(key);
        }
        let pool = &node.pool;
        // Each run calls `body` once, under this lock only for the call (the future it returns
        // does not borrow it), so the transaction's future stays `Send`.
        let body = std::sync::Mutex::new(&mut body);
        let started = Instant::now();
        let deadline = started + handle.deadline();
        handle.inner.stats.calls.add(1);
        let mut conflicts = 0_u32;
        let result = loop {
            let run = handle
                .policy
                .run(
                    Idempotency::Idempotent,
                    |e: &AttemptError| e.class,
                    |_attempt| {
                        handle.inner.stats.attempts.add(1);
                        let (watch, body) = (&watch, &body);
                        async move {
                            if Instant::now() >= deadline {
                                return Err(failed(
                                    ErrorKind::DeadlineExceeded,
                                    "deadline exceeded before the transaction could run",
                                    None,
                                ));
                            }
                            let conn = handle.dedicated(pool, deadline).await.map_err(|e| {
                                let retry = e.outcome() == Outcome::Failed
                                    && e.kind() == ErrorKind::Unavailable;
                                AttemptError {
                                    class: if retry {
                                        Classification::retry().server_fault(true)
                                    } else {
                                        Classification::fail()
                                    },
                                    error: e,
                                    reply: None,
                                }
                            })?;
                            handle.run_once(pool, conn, watch, body, deadline).await
                        }
                    },
                )
                .await;
            match run {
                Ok(Some(value)) => break Ok(value),
                Err(e) => break Err(e),
                // A conflict is contention, not a failure: run again after a jittered backoff
                // (which spreads the contenders), within the deadline, without drawing on the
                // retry budget (a hot key must not take retries from every other call).
                Ok(None) => {
                    handle.inner.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    conflicts += 1;
                    let delay = {
                        let mut rng = handle
                            .inner
                            .throttle_rng
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        handle
                            .inner
                            .config
                            .retry_backoff
                            .delay(conflicts, None, &mut *rng)
                    };
                    if Instant::now() + delay >= deadline {
                        handle.inner.stats.failed.fetch_add(1, Ordering::Relaxed);
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            Outcome::Failed,
                            format!(
                                "a watched key changed before EXEC at each of {conflicts} runs, \
                                 until the deadline"
                            ),
                        ));
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        match result {
            Ok(value) => T::from_redis_value(value).map_err(|e| {
                Error::new(
                    ErrorKind::Server,
                    Outcome::Applied,
                    "the transaction was applied but its replies do not convert to the type asked for",
                )
                .with_source(e.into())
            }),
            Err(e) => {
                let applied = e
                    .error
                    .as_ref()
                    .filter(|a| a.error.outcome() == Outcome::Applied)
                    .map(|a| a.error.clone());
                let err = applied.unwrap_or_else(|| give_up_error(e));
                let counter = if err.outcome() == Outcome::Ambiguous {
                    &handle.inner.stats.ambiguous
                } else {
                    &handle.inner.stats.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }
}

impl Handle {
    /// One run: `WATCH`, the body's reads, `MULTI` .. `EXEC`.
    async fn run_once<F, Fut>(
        &self,
        pool: &crate::connection::Pool,
        dedicated: Dedicated,
        watch: &Cmd,
        body: &std::sync::Mutex<&mut F>,
        deadline: Instant,
    ) -> Result<Option<Value>, AttemptError>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = redis::RedisResult<Pipeline>>,
    {
        let mut conn = dedicated.conn.clone();
        let before_exec = |e: redis::RedisError, what: &str| {
            if lost_before_exec(&e) {
                not_applied(what, Some(e))
            } else {
                failed(ErrorKind::Server, what, Some(e))
            }
        };
        match tokio::time::timeout_at(deadline, conn.req_packed_command(watch)).await {
            Err(_) => return Err(not_applied("no reply to WATCH before the deadline", None)),
            Ok(Err(e)) => return Err(before_exec(e, "WATCH failed")),
            Ok(Ok(Value::ServerError(e))) => {
                return Err(before_exec(e.into(), "WATCH failed"));
            }
            Ok(Ok(_)) => {}
        }
        let reads = {
            let mut body = body
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (*body)(Transaction { conn: conn.clone() })
        };
        let mut writes = match tokio::time::timeout_at(deadline, reads).await {
            Err(_) => {
                return Err(not_applied(
                    "the transaction's reads did not end before the deadline",
                    None,
                ));
            }
            Ok(Err(e)) if lost_before_exec(&e) => {
                return Err(not_applied("the transaction's reads failed", Some(e)));
            }
            Ok(Err(e)) => {
                return Err(failed(
                    ErrorKind::Server,
                    "the transaction's closure returned an error",
                    Some(e),
                ));
            }
            Ok(Ok(writes)) => writes,
        };
        if writes.cmd_iter().next().is_none() {
            // Nothing to write: let go of the watch, and answer as EXEC of nothing would.
            let _ = conn.req_packed_command(&redis::cmd("UNWATCH")).await;
            pool.return_dedicated(dedicated);
            return Ok(Some(Value::Array(Vec::new())));
        }
        writes.atomic();
        // redis-rs sends MULTI, the writes and EXEC, and answers nil for an aborted EXEC, or the
        // replies of the writes not marked `ignore()`.
        let sent = writes.query_async::<Value>(&mut conn);
        match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => Err(ambiguous(
                "deadline exceeded while waiting for EXEC's reply (the transaction may have been applied)",
                None,
            )),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                Err(ambiguous("the connection broke during EXEC", Some(e)))
            }
            Ok(Err(e)) if e.code() == Some("EXECABORT") || lost_before_exec(&e) => {
                // Refused as a whole (a queued command was rejected, or the node was demoted).
                Err(before_exec(e, "EXEC refused the transaction"))
            }
            // A command failed inside EXEC: the others ran.
            Ok(Err(e)) => Err(AttemptError::new(
                ErrorKind::Server,
                Outcome::Applied,
                "a command of the transaction failed inside EXEC (the others were applied)",
                Some(e),
                Classification::fail(),
            )),
            // A watched key changed: nothing applied (the caller runs it again).
            Ok(Ok(Value::Nil)) => {
                pool.return_dedicated(dedicated);
                Ok(None)
            }
            Ok(Ok(value)) => {
                pool.return_dedicated(dedicated);
                Ok(Some(value))
            }
        }
    }
}
