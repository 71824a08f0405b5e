//! Optimistic transactions: `WATCH` the keys, let the caller read through the same connection
//! and say what to write, then `MULTI` .. `EXEC`; re-run when a watched key changed.
//!
//! # Outcomes
//! Every run happens on a dedicated connection (`WATCH` is a connection's state: a shared
//! connection would mix callers' watches). A run is repeated within the handle's deadline
//! when nothing of it can have been applied:
//! - `EXEC` answered nil: a watched key changed (a *conflict*, counted in
//!   [`ClientStats::conflicts`](crate::ClientStats::conflicts)), after a jittered backoff
//!   (`retry_backoff`, which spreads the contenders; it stops growing after a few conflicts, so
//!   a run that lost does not fall behind the newcomers). Conflicts do not draw on the retry
//!   budget: contention on one hot key must not take retries from every other call;
//! - the connection broke before `EXEC` was sent, or a reply the [reply table](crate::replies)
//!   retries refused a command (`READONLY` from a demoted master, `TRYAGAIN`, `LOADING`), or
//!   `EXEC` was refused as a whole because of one (`EXECABORT`): a retry like any other
//!   (backoff, retry budget, breaker);
//! - in a cluster, `MOVED` or `ASK` (the slot moved, or is moving): run again at once on the
//!   node named, within the attempt (`ASK`: each command after `ASKING`), as any command
//!   follows a redirect.
//!
//! Once `MULTI` .. `EXEC` has been sent, a lost connection or a deadline is
//! [`Outcome::Ambiguous`]: the transaction may have been applied (its writes all, or none).
//!
//! The run itself is in `run.rs`, where it goes (a cluster's slot, redirects) in `route.rs`.

mod route;
mod run;

use std::{future::Future, sync::atomic::Ordering};

use redis::{
    Cmd, FromRedisValue, Pipeline, RedisFuture, ToRedisArgs, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use resilience::Idempotency;
use tokio::time::Instant;

use super::Client;
use crate::{
    commands::{CommandSafety, key_slot, safety_of},
    error::{Error, ErrorKind, Outcome},
    retry::{AttemptError, give_up_error},
    routing::Router,
};
use route::Place;

/// The connection a transaction's closure reads through: it holds the `WATCH`. Only reads
/// are sent (a write is refused with a clear error: writes go in the pipeline the closure
/// returns, so they are applied atomically, or not at all on a conflict).
pub struct Transaction {
    conn: MultiplexedConnection,
    /// Each read goes after `ASKING` (a cluster slot being migrated to this node).
    asking: bool,
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
        if self.asking {
            return Box::pin(run::read(&mut self.conn, cmd, true));
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
        if self.asking {
            return Box::pin(run::read_asking(&mut self.conn, cmd, offset, count));
        }
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// The backoff after a conflict grows for this many conflicts, then stays (by default a full
/// jitter up to 80 ms). A conflict means another run committed: the key is busy, not broken,
/// and a run that waited ever longer would lose every race to the newcomers (with 50 tasks on
/// one key, some lost 16 runs in a row until their deadline when the wait grew to 1 s).
const CONFLICT_STEPS: u32 = 4;

/// A transaction refused before anything is sent.
fn refused(message: String) -> Error {
    Error::new(ErrorKind::Refused, Outcome::Failed, message)
}

/// The one slot of `keys`, or why a cluster transaction cannot watch them.
fn slot_of_keys<K: ToRedisArgs>(keys: &[K]) -> Result<u16, Error> {
    let mut slot = None;
    for key in keys.iter().flat_map(|k| k.to_redis_args()) {
        let this = key_slot(&key);
        match slot {
            None => slot = Some(this),
            Some(s) if s != this => {
                return Err(refused(format!(
                    "a cluster transaction watches keys of one slot; key {:?} is in slot {this}, \
                     another in slot {s} (give the keys one hash tag, such as {{user:1}}:a and \
                     {{user:1}}:b)",
                    String::from_utf8_lossy(&key)
                )));
            }
            Some(_) => {}
        }
    }
    slot.ok_or_else(|| refused("a transaction watches at least one key".to_owned()))
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
    /// In a cluster every watched key must be in one slot (a hash tag does it), and so must
    /// every key the pipeline writes; the transaction runs on that slot's master and follows
    /// it through `MOVED`, `ASK`, a failover and a migration.
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
    /// [`ErrorKind::Refused`] with no key to watch, or keys of several slots in a cluster; the
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
        let place = match &handle.inner.router {
            Router::Single(node) => {
                if keys.is_empty() {
                    return Err(refused("a transaction watches at least one key".to_owned()));
                }
                Place::Single(node)
            }
            Router::Cluster(cluster) => Place::Cluster {
                cluster,
                slot: slot_of_keys(keys)?,
            },
        };
        let mut watch = redis::cmd("WATCH");
        for key in keys {
            watch.arg(key);
        }
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
                .run(Idempotency::Idempotent, AttemptError::verdict, |_attempt| {
                    handle.note_attempt(1, || (None, false));
                    handle.transaction_attempt(&place, &watch, &body, deadline)
                })
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
                        handle.inner.config.retry_backoff.delay(
                            conflicts.min(CONFLICT_STEPS),
                            None,
                            &mut *rng,
                        )
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
