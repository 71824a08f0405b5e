//! One run of a transaction on a dedicated connection: `WATCH`, the body's reads, then
//! `MULTI` .. `EXEC` (and `WAIT`, for durable acknowledgements); and what each failure means
//! (nothing applied, applied, or ambiguous).

use redis::{
    Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use resilience::Classification;
use tokio::time::Instant;

use super::Transaction;
use crate::{
    Durability,
    client::{Handle, durable},
    commands::command_keys,
    connection::{Dedicated, Pool},
    error::{Error, ErrorKind, Outcome},
    replies,
    retry::AttemptError,
    routing::cluster::send_asking,
};

/// Nothing of the run was applied: run it again (a retry like any other).
pub(super) fn not_applied(message: &str, source: Option<RedisError>) -> AttemptError {
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
pub(super) fn failed(kind: ErrorKind, message: &str, source: Option<RedisError>) -> AttemptError {
    let class = Classification::fail().server_fault(false);
    AttemptError::new(kind, Outcome::Failed, message, source, class)
}

/// `EXEC` was sent: the transaction may have been applied.
fn ambiguous(message: &str, source: Option<RedisError>) -> AttemptError {
    let class = Classification::fail().ambiguous().server_fault(true);
    AttemptError::new(
        ErrorKind::ConnectionLost,
        Outcome::Ambiguous,
        message,
        source,
        class,
    )
}

/// The connection failed (nothing is known of a command in flight).
fn lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout()
}

/// Hands redis-rs's pipeline the replies already read, so it converts them as it would have
/// (the replies of `ignore()`d commands dropped, a failed command's error reported).
struct Replayed(Option<Vec<Value>>);

impl ConnectionLike for Replayed {
    fn req_packed_command<'a>(&'a mut self, _: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async { Err((redis::ErrorKind::Client, "replayed replies only").into()) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _: &'a Pipeline,
        _: usize,
        _: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let replies = self.0.take();
        Box::pin(async move {
            replies.ok_or_else(|| (redis::ErrorKind::Client, "replies already taken").into())
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Where a run goes: the node's pool, the slot its keys must stay in (cluster), and whether
/// each command goes after `ASKING` (the slot is being migrated to this node).
pub(super) struct RunOn<'a> {
    pub(super) pool: &'a Pool,
    pub(super) slot: Option<u16>,
    pub(super) asking: bool,
}

impl Handle {
    /// What an error before `EXEC` ran (or the reason `EXEC` refused the whole transaction)
    /// means: nothing was applied. A lost connection or a reply the [reply table](replies)
    /// retries (`READONLY`, `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, ...) runs it
    /// again, carrying the reply's hints; anything else is the caller's error.
    pub(super) fn before_exec(&self, e: RedisError, what: &str) -> AttemptError {
        if lost(&e) {
            return not_applied(what, Some(e));
        }
        // A plain error reply is its own cause; EXECABORT carries the queued commands' errors.
        let rules = self.inner.config.reply_rules();
        if let Some(causes) = e.clone().into_server_errors() {
            for (_, cause) in causes.iter() {
                if let Some(m) = replies::meaning(cause, self.inner.deployment, rules) {
                    let mut retried = AttemptError::from_reply(cause, m, false);
                    retried.error = Error::new(
                        retried.error.kind(),
                        Outcome::Failed,
                        format!("{what}: the server replied {}", cause.code()),
                    )
                    .with_source(RedisError::from(cause.clone()));
                    return retried;
                }
            }
        }
        failed(ErrorKind::Server, what, Some(e))
    }

    /// One run: `WATCH`, the body's reads, `MULTI` .. `EXEC`. `Ok(None)`: a watched key
    /// changed (nothing applied).
    pub(super) async fn run_once<F, Fut>(
        &self,
        on: RunOn<'_>,
        dedicated: Dedicated,
        watch: &Cmd,
        body: &std::sync::Mutex<&mut F>,
        deadline: Instant,
    ) -> Result<Option<Value>, AttemptError>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<Pipeline>>,
    {
        let mut conn = dedicated.conn.clone();
        let watched = read(&mut conn, watch, on.asking);
        match tokio::time::timeout_at(deadline, watched).await {
            Err(_) => return Err(not_applied("no reply to WATCH before the deadline", None)),
            Ok(Err(e)) => return Err(self.before_exec(e, "WATCH failed")),
            Ok(Ok(Value::ServerError(e))) => return Err(self.before_exec(e.into(), "WATCH failed")),
            Ok(Ok(_)) => {}
        }
        let reads = {
            let mut body = body
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (*body)(Transaction {
                conn: conn.clone(),
                asking: on.asking,
            })
        };
        let mut writes = match tokio::time::timeout_at(deadline, reads).await {
            Err(_) => {
                return Err(not_applied(
                    "the transaction's reads did not end before the deadline",
                    None,
                ));
            }
            Ok(Err(e)) => {
                return Err(self.before_exec(e, "the transaction's closure returned an error"));
            }
            Ok(Ok(writes)) => writes,
        };
        if writes.cmd_iter().next().is_none() {
            // Nothing to write: let go of the watch, and answer as EXEC of nothing would.
            let _ = conn.req_packed_command(&redis::cmd("UNWATCH")).await;
            on.pool.return_dedicated(dedicated);
            return Ok(Some(Value::Array(Vec::new())));
        }
        if let Some(slot) = on.slot
            && let Some(key) = writes
                .cmd_iter()
                .flat_map(command_keys)
                .find(|k| crate::commands::key_slot(k) != slot)
        {
            let _ = conn.req_packed_command(&redis::cmd("UNWATCH")).await;
            on.pool.return_dedicated(dedicated);
            return Err(failed(
                ErrorKind::Refused,
                &format!(
                    "the transaction writes key {:?} (slot {}), outside slot {slot} of the keys it \
                     watches: a cluster transaction stays in one slot (give the keys one hash tag, \
                     such as {{user:1}}:a and {{user:1}}:b)",
                    String::from_utf8_lossy(key),
                    crate::commands::key_slot(key)
                ),
                None,
            ));
        }
        // The server's replicas, when a durable EXEC must be confirmed (asked on this
        // connection before anything is queued).
        let durable = match self.call.durability {
            Durability::Fast => None,
            Durability::Replicated { replicas, timeout } => {
                let wanted = match replicas {
                    Some(n) => n,
                    None => {
                        self.replicas_of(
                            on.pool,
                            &mut conn,
                            None,
                            dedicated.epoch,
                            true,
                            Some(deadline),
                        )
                        .await?
                    }
                };
                Some((wanted, timeout, replicas.is_none()))
            }
        };
        // One round trip: `ASKING` (its flag lasts until EXEC once MULTI follows it), MULTI, the
        // writes, EXEC, and `WAIT` for a durable one; every reply is read, so the reason of an
        // EXECABORT (a queued command's error) is known.
        let mut sent = redis::pipe();
        if on.asking {
            sent.cmd("ASKING");
        }
        let multi_at = sent.len();
        sent.cmd("MULTI");
        for cmd in writes.cmd_iter() {
            sent.add_command(cmd.clone());
        }
        let exec_at = sent.len();
        sent.cmd("EXEC");
        if let Some((wanted, timeout, _)) = durable {
            durable::add_wait(&mut sent, wanted, timeout);
        }
        let count = sent.len();
        let mut replies = match tokio::time::timeout_at(
            deadline,
            conn.req_packed_commands(&sent, 0, count),
        )
        .await
        {
            Err(_) => {
                return Err(ambiguous(
                    "deadline exceeded while waiting for EXEC's reply (the transaction may have \
                     been applied)",
                    None,
                ));
            }
            Ok(Err(e)) if lost(&e) => {
                return Err(ambiguous("the connection broke during EXEC", Some(e)));
            }
            Ok(Err(e)) => return Err(ambiguous("EXEC's reply could not be read", Some(e))),
            Ok(Ok(replies)) if replies.len() == count => replies,
            Ok(Ok(replies)) => {
                return Err(ambiguous(
                    &format!("{} replies to {count} commands around EXEC", replies.len()),
                    None,
                ));
            }
        };
        let acked = if durable.is_some() {
            let role = replies.pop();
            on.pool
                .observe_after_wait(&mut conn, dedicated.epoch, role.as_ref(), Some(deadline))
                .await;
            replies.pop()
        } else {
            None
        };
        // MULTI refused (BUSY from a script that ended a moment later, THROTTLED from a proxy,
        // an ACL): the writes after it were not queued but ran on their own, one by one, and
        // EXEC found no transaction. What ran is in their replies.
        if !matches!(&replies[multi_at], Value::Okay)
            && !matches!(&replies[multi_at], Value::SimpleString(s) if s == "OK")
        {
            let ran = replies[multi_at + 1..exec_at]
                .iter()
                .any(|r| !matches!(r, Value::ServerError(_)));
            if ran {
                return Err(AttemptError::new(
                    ErrorKind::Server,
                    Outcome::Applied,
                    "MULTI was refused, and writes sent after it ran on their own: the \
                     transaction was applied in part, not atomically (not run again)",
                    None,
                    Classification::fail(),
                ));
            }
            let cause = match &replies[multi_at] {
                Value::ServerError(e) => e.clone().into(),
                other => redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "MULTI answered",
                    format!("{other:?}"),
                )),
            };
            return Err(self.before_exec(cause, "MULTI was refused: nothing applied"));
        }
        let exec = replies.pop();
        match exec {
            // A watched key changed: nothing applied (the caller runs it again).
            Some(Value::Nil) => {
                on.pool.return_dedicated(dedicated);
                Ok(None)
            }
            // Refused as a whole (a queued command was rejected: EXECABORT; or EXEC itself, on a
            // node demoted since MULTI): nothing applied. The first queued error says why.
            Some(Value::ServerError(e)) => {
                let cause = replies[multi_at..exec_at]
                    .iter()
                    .find_map(|r| match r {
                        Value::ServerError(q) => Some(q.clone()),
                        _ => None,
                    })
                    .unwrap_or(e);
                Err(self.before_exec(cause.into(), "EXEC refused the transaction"))
            }
            Some(exec @ Value::Array(_)) => {
                if let Some((wanted, timeout, every)) = durable {
                    // Applied, maybe not kept: never run again (the policy sees a final failure).
                    self.transaction_confirmed(
                        on.pool,
                        dedicated.epoch,
                        (wanted, every),
                        timeout,
                        acked,
                    )
                    .map_err(|mut e| {
                        e.class = Classification::fail().ambiguous().server_fault(false);
                        e
                    })?;
                }
                on.pool.return_dedicated(dedicated);
                writes.atomic();
                match writes
                    .query_async::<Value>(&mut Replayed(Some(vec![exec])))
                    .await
                {
                    Ok(value) => Ok(Some(value)),
                    // A command failed inside EXEC: the others ran.
                    Err(e) => Err(AttemptError::new(
                        ErrorKind::Server,
                        Outcome::Applied,
                        "a command of the transaction failed inside EXEC (the others were applied)",
                        Some(e),
                        Classification::fail(),
                    )),
                }
            }
            other => Err(ambiguous(
                &format!("EXEC answered {other:?} (the transaction may have been applied)"),
                None,
            )),
        }
    }
}

/// A command of the transaction's connection (`WATCH`, a read): as it is, or after `ASKING`.
pub(super) async fn read(
    conn: &mut MultiplexedConnection,
    cmd: &Cmd,
    asking: bool,
) -> redis::RedisResult<Value> {
    if asking {
        send_asking(conn, cmd).await
    } else {
        conn.req_packed_command(cmd).await
    }
}

/// [`Transaction`]'s pipelined reads after `ASKING`: one before each command (a transaction
/// pipeline needs one, before `MULTI`).
pub(super) async fn read_asking(
    conn: &mut MultiplexedConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    if pipeline.is_transaction() {
        conn.req_packed_command(&redis::cmd("ASKING")).await?;
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let mut interleaved = redis::pipe();
    for cmd in pipeline.cmd_iter() {
        interleaved.cmd("ASKING").add_command(cmd.clone());
    }
    let replies = conn
        .req_packed_commands(&interleaved, 0, 2 * pipeline.len())
        .await?;
    Ok(replies
        .into_iter()
        .skip(1)
        .step_by(2)
        .skip(offset)
        .take(count)
        .collect())
}
