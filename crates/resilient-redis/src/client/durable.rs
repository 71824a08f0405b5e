//! Durable acknowledgements ([`Durability::Replicated`](crate::Durability::Replicated)): a write
//! is sent with `WAIT replicas timeout` behind it, on the same connection and in the same round
//! trip, and is a success only when the server reports that many replicas have it.
//!
//! # Behavior
//! - `WAIT` counts the replicas that acknowledged every write of *its connection* so far, so it
//!   must follow the write on the same connection: the write and the `WAIT` go as one pipeline
//!   (an atomic pipeline as `MULTI` .. `EXEC` then `WAIT`; `WAIT` is not allowed inside a
//!   transaction). A group-committed batch of exactly-once writes is one script call: one
//!   `WAIT` for the batch.
//! - Fewer replicas than required: the write was applied on the master and may be taken back
//!   by a failover, so the attempt fails as [`ErrorKind::Unconfirmed`] (ambiguous) and the
//!   caller gets that error. A request safe to repeat (an idempotent write; an exactly-once
//!   write under its token) waits instead: a later `WAIT` on the same connection covers it, so
//!   it sends `WAIT` again until the replicas confirm or its deadline passes (a replica
//!   resyncing after a failover can take seconds); a connection lost or a master replaced
//!   meanwhile ends the attempt, and the policy retries it on the new master.
//! - A reply that arrives after the master was replaced (the client learned of a failover while
//!   the write was in flight) is not a success either, whatever `WAIT` said: the deposed master
//!   may still count the replicas it is about to lose.
//! - An error reply to a single command (`WRONGTYPE`, a retryable `READONLY`) means it was not
//!   applied: it is handled as without durability.

use std::{sync::atomic::Ordering, time::Duration};

use redis::{Pipeline, Value};
use resilience::Classification;
use tokio::time::Instant;

use super::Handle;
use crate::{
    connection::{Answer, Lease, Turn, WaitGroup, Wanted},
    error::{Error, ErrorKind, Outcome},
    request::{Reply, Request},
    retry::AttemptError,
    routing::Node,
};

/// What a durable write waits for.
#[derive(Clone, Copy, Debug)]
pub(super) struct WaitFor {
    /// `None`: every replica of the master.
    pub(super) replicas: Option<u32>,
    pub(super) timeout: Duration,
}

/// A request with its `WAIT` behind it.
struct WithWait {
    pipeline: Pipeline,
    offset: usize,
    /// Replies read: the request's, then `WAIT`'s and `ROLE`'s.
    count: usize,
    /// The request was one command (its reply goes back alone).
    single: bool,
}

/// `request` followed by `WAIT wanted timeout` and `ROLE`; `None` when its
/// replies are not the tail of the pipeline (a shape redis-rs never sends).
fn with_wait(request: Request<'_>, wanted: u32, timeout: Duration) -> Option<WithWait> {
    match request {
        Request::Cmd(cmd) => {
            let mut pipeline = redis::pipe();
            pipeline.add_command(cmd.clone());
            add_wait(&mut pipeline, wanted, timeout);
            Some(WithWait {
                pipeline,
                offset: 0,
                count: 3,
                single: true,
            })
        }
        Request::Pipeline {
            pipeline: original,
            offset,
            count,
        } => {
            let mut pipeline = redis::pipe();
            let total = if original.is_transaction() {
                pipeline.cmd("MULTI");
                for cmd in original.cmd_iter() {
                    pipeline.add_command(cmd.clone());
                }
                pipeline.cmd("EXEC");
                original.len() + 2
            } else {
                for cmd in original.cmd_iter() {
                    pipeline.add_command(cmd.clone());
                }
                original.len()
            };
            if offset + count != total {
                return None;
            }
            add_wait(&mut pipeline, wanted, timeout);
            Some(WithWait {
                pipeline,
                offset,
                count: count + 2,
                single: false,
            })
        }
    }
}

/// The failure of a write that the server applied but too few replicas confirmed.
fn unconfirmed(message: String) -> AttemptError {
    AttemptError {
        error: Error::new(ErrorKind::Unconfirmed, Outcome::Ambiguous, message),
        // Ambiguous: repeated only when safe. Not the server's fault (a replica lags).
        class: Classification::retry().ambiguous().server_fault(false),
        reply: None,
    }
}

/// The `READONLY` reply a write would get from the demoted server.
fn demoted_reply() -> Option<redis::ServerError> {
    match redis::parse_redis_value(
        b"-READONLY the server answers INFO replication as a replica (asked before a durable write, not sent)\r\n",
    ) {
        Ok(Value::ServerError(e)) => Some(e),
        _ => None,
    }
}

/// Why a write its replicas confirmed is not confirmed after all.
const FAILOVER_MEANWHILE: &str = "the master applied the write and its replicas confirmed it, but \
     the sentinels began failing the master over meanwhile (the replica promoted may not be one \
     of them): not confirmed";

/// A durable write that could not be sent (nothing was written).
fn not_sent(message: String, source: Option<redis::RedisError>) -> AttemptError {
    let class = Classification::fail().server_fault(false);
    AttemptError::new(ErrorKind::Server, Outcome::Failed, message, source, class)
}

impl Handle {
    /// Sends the write `request` on a leased connection and waits for its replicas (see the
    /// module's docs); the arguments are [`Handle::send_on`]'s.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_durable(
        &self,
        node: &Node,
        lease: &mut Lease,
        request: Request<'_>,
        wait: WaitFor,
        retry_safe: bool,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Result<Reply, AttemptError> {
        let pool = &node.pool;
        let id = lease.id();
        let epoch = pool.epoch();
        let mut wanted = match wait.replicas {
            Some(n) => n,
            None => {
                self.replicas_of(pool, &mut lease.conn, Some(id), epoch, retry_safe, deadline)
                    .await?
            }
        };
        let group = pool.wait_group(id);
        let (reply, answer) = if let Some(leader) = group.try_lead(wanted) {
            // No WAIT in flight on the connection: this write's goes in the same round trip.
            let Some(sent) = with_wait(request, wanted, wait.timeout) else {
                return Err(not_sent(
                    "a pipeline whose replies are not its last commands' cannot be made durable"
                        .to_owned(),
                    None,
                ));
            };
            self.inner
                .stats
                .replica_waits
                .fetch_add(1, Ordering::Relaxed);
            let outcome = self
                .exchange(
                    node,
                    lease,
                    Request::Pipeline {
                        pipeline: &sent.pipeline,
                        offset: sent.offset,
                        count: sent.count,
                    },
                    deadline,
                    started,
                )
                .await;
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(failure) => {
                    leader.finish(Answer::Failed(failure.error.to_string()));
                    return Err(failure);
                }
            };
            let (outcome, acked, role) = split_wait(outcome, &sent);
            pool.observe_after_wait(&mut lease.conn, epoch, role.as_ref(), deadline)
                .await;
            let answer = leader.finish(match &outcome {
                Ok(_) => answer_of(acked),
                Err(e) => Answer::Failed(e.to_string()),
            });
            let reply = self.settle(outcome, id, retry_safe, pool)?;
            if sent.single && matches!(reply, Reply::One(Value::ServerError(_))) {
                // Not applied: nothing to confirm.
                return Ok(reply);
            }
            (reply, answer)
        } else {
            // A WAIT is in flight: the write alone, then the next WAIT, shared with the writes
            // that arrive meanwhile.
            let outcome = self
                .exchange(node, lease, request, deadline, started)
                .await?;
            let reply = self.settle(outcome, id, retry_safe, pool)?;
            if matches!(reply, Reply::One(Value::ServerError(_))) {
                return Ok(reply);
            }
            let answer = self
                .confirm(
                    (node, lease),
                    &group,
                    (wanted, epoch, wait.timeout),
                    deadline,
                )
                .await;
            (reply, answer)
        };
        let stats = &self.inner.stats;
        let mut answer = answer;
        loop {
            if pool.epoch() != epoch {
                stats.deposed_replies.fetch_add(1, Ordering::Relaxed);
                return Err(unconfirmed(
                    "the master was replaced while the write was in flight: its \
                     acknowledgement does not count (the new master may not have the write)"
                        .to_owned(),
                ));
            }
            let n = match answer {
                // Asked again once answered: a failover begun meanwhile, or a replica joined
                // meanwhile, and the replicas that answered may not hold it where it counts.
                Answer::Replicas(n) if n >= i64::from(wanted) && wait.replicas.is_some() => {
                    return Ok(reply);
                }
                Answer::Replicas(n) if n >= i64::from(wanted) => {
                    match pool.wanted_after_wait(epoch, wanted) {
                        Wanted::Replicas(now) if now <= wanted => return Ok(reply),
                        Wanted::Replicas(now) => {
                            wanted = now;
                            n
                        }
                        Wanted::FailingOver | Wanted::Demoted => {
                            stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
                            return Err(unconfirmed(FAILOVER_MEANWHILE.to_owned()));
                        }
                    }
                }
                Answer::Replicas(n) => n,
                Answer::Failed(why) => {
                    stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
                    return Err(unconfirmed(format!(
                        "the master applied the write but its WAIT failed ({why}): not confirmed"
                    )));
                }
            };
            pool.replicas_fell_short(epoch);
            stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
            // A write that may be repeated waits for its replicas until its deadline: on the
            // same connection a later WAIT covers it, so waiting again is the cheapest retry
            // (a replica resyncing after a failover takes seconds). Without a deadline the
            // policy's attempts bound it instead.
            if retry_safe && deadline.is_some_and(|d| Instant::now() < d) {
                // The count asked again (it was marked stale): it may have changed (a replica
                // joined, the sentinels began a failover) since the write was sent.
                if wait.replicas.is_none() {
                    // The write is applied: a failure to ask is no failure of the write.
                    wanted = match self
                        .replicas_of(pool, &mut lease.conn, Some(id), epoch, retry_safe, deadline)
                        .await
                    {
                        Ok(n) => n,
                        Err(e) => {
                            return Err(unconfirmed(format!(
                                "the master applied the write but {n} of {wanted} replicas \
                                 confirmed it, and the replica count could not be asked again \
                                 ({}): a failover could take it back",
                                e.error
                            )));
                        }
                    };
                }
                answer = self
                    .confirm(
                        (node, lease),
                        &group,
                        (wanted, epoch, wait.timeout),
                        deadline,
                    )
                    .await;
                continue;
            }
            return Err(unconfirmed(format!(
                "the master applied the write but {n} of {wanted} replicas confirmed it within \
                 {} ms: a failover could take it back",
                wait.timeout.as_millis()
            )));
        }
    }

    /// How many replicas a durable write on `conn` (a connection to the master of `epoch`)
    /// waits for: every replica of the master. The failure of the write when that cannot be
    /// learnt: a demoted server's is the `READONLY` the write would have got (not sent);
    /// `lease`, the pooled connection `conn` is, is marked broken if it failed.
    pub(super) async fn replicas_of(
        &self,
        pool: &crate::connection::Pool,
        conn: &mut redis::aio::MultiplexedConnection,
        lease: Option<crate::connection::LeaseId>,
        epoch: u64,
        retry_safe: bool,
        deadline: Option<Instant>,
    ) -> Result<u32, AttemptError> {
        match pool.replicas_to_wait_for(conn, epoch, deadline).await {
            Ok(Wanted::Replicas(n)) => Ok(n),
            // Whatever the master takes now is lost when the failover ends: not sent, and
            // retried (on the new master once the switch is announced).
            Ok(Wanted::FailingOver) => {
                // Not at once: the next attempt waits for the switch (or the next look at the
                // sentinels), within the deadline, instead of spending the policy's attempts.
                if let Some(mut changes) = pool.master_changes() {
                    let soon = Instant::now() + crate::connection::RELEARN_AFTER;
                    let until = deadline.map_or(soon, |d| d.min(soon));
                    let switched = changes.wait_for(|m| m.epoch != epoch);
                    let _ = tokio::time::timeout_at(until, switched).await;
                }
                let mut failure = not_sent(
                    "the sentinels are failing the master over: a write it takes now would be \
                     lost (the durable write was not sent)"
                        .to_owned(),
                    None,
                );
                failure.class = Classification::retry().server_fault(false);
                Err(failure)
            }
            // The server is a replica now: as if the write had got `READONLY` (not sent;
            // the reply table says what follows: a new connection, a slot-map refresh).
            Ok(Wanted::Demoted) => {
                let demoted = demoted_reply()
                    .map(|e| self.check_reply(Reply::One(Value::ServerError(e)), retry_safe));
                Err(match demoted {
                    Some(Err(e)) => e,
                    _ => not_sent(
                        "the server was demoted before a durable write was sent".to_owned(),
                        None,
                    ),
                })
            }
            // The deadline came first: the connection is not to blame; the write was not sent.
            Err(e) if e.is_io_error() && deadline.is_some_and(|d| Instant::now() >= d) => {
                Err(AttemptError::new(
                    ErrorKind::DeadlineExceeded,
                    Outcome::Failed,
                    "the deadline passed while asking the master for its replica count (the \
                     durable write was not sent)"
                        .to_owned(),
                    Some(e),
                    Classification::fail().server_fault(false),
                ))
            }
            // A broken connection: marked, and the write (not sent) retried elsewhere.
            Err(e) if e.is_io_error() => {
                if let Some(id) = lease {
                    pool.mark_broken(id, &e.to_string());
                }
                let mut failure = not_sent(
                    "the connection broke before a durable write was sent".to_owned(),
                    Some(e),
                );
                failure.class = Classification::retry().server_fault(true);
                Err(failure)
            }
            Err(e) => Err(not_sent(
                "cannot learn how many replicas a durable write waits for".to_owned(),
                Some(e),
            )),
        }
    }

    /// What the `WAIT` behind a transaction's `EXEC` on a dedicated connection of `epoch`
    /// answered (`acked`): a success when `wanted` replicas confirmed and the master is still
    /// the one it was sent to (and, when `every` replica was wanted, their count has not grown
    /// nor a failover begun meanwhile), else [`ErrorKind::Unconfirmed`] (the transaction was
    /// applied).
    pub(super) fn transaction_confirmed(
        &self,
        pool: &crate::connection::Pool,
        epoch: u64,
        (wanted, every): (u32, bool),
        timeout: Duration,
        acked: Option<Value>,
    ) -> Result<(), AttemptError> {
        let stats = &self.inner.stats;
        if pool.epoch() != epoch {
            stats.deposed_replies.fetch_add(1, Ordering::Relaxed);
            return Err(unconfirmed(
                "the master was replaced while the transaction was in flight: its EXEC does not \
                 count (the new master may not have it)"
                    .to_owned(),
            ));
        }
        match answer_of(acked) {
            Answer::Replicas(n) if n >= i64::from(wanted) => {
                if !every {
                    return Ok(());
                }
                match pool.wanted_after_wait(epoch, wanted) {
                    Wanted::Replicas(now) if now <= wanted => Ok(()),
                    Wanted::Replicas(now) => {
                        pool.replicas_fell_short(epoch);
                        stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
                        Err(unconfirmed(format!(
                            "the master applied the transaction and {n} replicas confirmed it, \
                             but it has {now} now: a failover could take it back"
                        )))
                    }
                    Wanted::FailingOver | Wanted::Demoted => {
                        stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
                        Err(unconfirmed(FAILOVER_MEANWHILE.to_owned()))
                    }
                }
            }
            Answer::Replicas(n) => {
                pool.replicas_fell_short(epoch);
                stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
                Err(unconfirmed(format!(
                    "the master applied the transaction but {n} of {wanted} replicas confirmed it \
                     within {} ms: a failover could take it back",
                    timeout.as_millis()
                )))
            }
            Answer::Failed(why) => {
                stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
                Err(unconfirmed(format!(
                    "the master applied the transaction but its WAIT failed ({why}): not confirmed"
                )))
            }
        }
    }

    /// The replicas' answer for the write just sent on `lease`'s connection (it takes the
    /// group's next ticket): a `WAIT` that covered it, or one this write sends (see
    /// [`WaitGroup`]); `wanted` replicas of the master of `epoch`, within `timeout`.
    async fn confirm(
        &self,
        (node, lease): (&Node, &mut Lease),
        group: &WaitGroup,
        (wanted, epoch, timeout): (u32, u64, Duration),
        deadline: Option<Instant>,
    ) -> Answer {
        let ticket = group.ticket();
        let turn = match deadline {
            Some(d) => match tokio::time::timeout_at(d, group.confirm(ticket, wanted)).await {
                Ok(turn) => turn,
                Err(_) => {
                    return Answer::Failed(
                        "the deadline passed while waiting for the replicas".to_owned(),
                    );
                }
            },
            None => group.confirm(ticket, wanted).await,
        };
        let leader = match turn {
            Turn::Answered(answer) => return answer,
            Turn::Lead(leader) => leader,
        };
        self.inner
            .stats
            .replica_waits
            .fetch_add(1, Ordering::Relaxed);
        let mut wait = redis::pipe();
        add_wait(&mut wait, wanted, timeout);
        let request = Request::Pipeline {
            pipeline: &wait,
            offset: 0,
            count: 2,
        };
        let answer = match self.exchange(node, lease, request, deadline, None).await {
            Ok(Ok(Reply::Many(mut replies))) if replies.len() == 2 => {
                let role = replies.pop();
                node.pool
                    .observe_after_wait(&mut lease.conn, epoch, role.as_ref(), deadline)
                    .await;
                answer_of(replies.pop())
            }
            Ok(Ok(_)) => Answer::Failed("WAIT answered an unexpected shape".to_owned()),
            Ok(Err(e)) => {
                if e.is_io_error() || e.kind() == redis::ErrorKind::Parse {
                    node.pool.mark_broken(lease.id(), &e.to_string());
                }
                Answer::Failed(e.to_string())
            }
            Err(failure) => Answer::Failed(failure.error.to_string()),
        };
        leader.finish(answer)
    }
}

/// `WAIT wanted timeout`, then `ROLE`: who is online once `WAIT` has answered (see
/// [`crate::connection::Pool::observe_after_wait`]).
pub(super) fn add_wait(pipeline: &mut Pipeline, wanted: u32, timeout: Duration) {
    pipeline
        .cmd("WAIT")
        .arg(wanted)
        .arg(timeout.as_millis().max(1) as u64)
        .cmd("ROLE");
}

/// The request's reply, `WAIT`'s and `ROLE`'s, out of the replies of a
/// [`WithWait`].
fn split_wait(
    outcome: redis::RedisResult<Reply>,
    sent: &WithWait,
) -> (redis::RedisResult<Reply>, Option<Value>, Option<Value>) {
    match outcome {
        Ok(Reply::Many(mut values)) if values.len() == sent.count => {
            let info = values.pop();
            let acked = values.pop();
            let reply = match values.pop() {
                Some(one) if sent.single => Reply::One(one),
                Some(last) => {
                    values.push(last);
                    Reply::Many(values)
                }
                None => Reply::Many(values),
            };
            (Ok(reply), acked, info)
        }
        other => (other, None, None),
    }
}

/// What a `WAIT` reply says.
fn answer_of(acked: Option<Value>) -> Answer {
    match acked {
        Some(Value::Int(n)) => Answer::Replicas(n),
        Some(Value::ServerError(e)) => {
            Answer::Failed(format!("WAIT failed: {}", e.details().unwrap_or(e.code())))
        }
        other => Answer::Failed(format!("WAIT answered {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_follows_the_request_outside_any_transaction() {
        let timeout = Duration::from_millis(200);
        let cmd = redis::cmd("INCR").arg("k").to_owned();
        let one = with_wait(Request::Cmd(&cmd), 2, timeout).unwrap();
        assert_eq!((one.offset, one.count, one.single), (0, 3, true));
        assert_eq!(
            one.pipeline.get_packed_pipeline(),
            [
                cmd.get_packed_command(),
                redis::cmd("WAIT").arg(2).arg(200).get_packed_command(),
                redis::cmd("ROLE").get_packed_command()
            ]
            .concat()
        );

        let mut atomic = redis::pipe();
        atomic.atomic().incr("a", 1).incr("b", 1);
        let request = Request::pipeline(&atomic);
        let sent = with_wait(request, 1, timeout).unwrap();
        // MULTI, 2 commands, EXEC, WAIT, ROLE: the EXEC reply, WAIT's and ROLE's are read.
        assert_eq!((sent.offset, sent.count, sent.single), (3, 3, false));
        let packed = String::from_utf8(sent.pipeline.get_packed_pipeline()).unwrap();
        let exec = packed.find("EXEC").unwrap();
        assert!(packed.starts_with("*1\r\n$5\r\nMULTI"), "{packed}");
        assert!(packed.find("WAIT").unwrap() > exec, "{packed}");

        let mut plain = redis::pipe();
        plain.set("a", 1).get("a");
        let sent = with_wait(Request::pipeline(&plain), 1, timeout).unwrap();
        assert_eq!((sent.offset, sent.count), (0, 4));
        // Replies that are not the tail: refused.
        let odd = Request::Pipeline {
            pipeline: &plain,
            offset: 0,
            count: 1,
        };
        assert!(with_wait(odd, 1, timeout).is_none());
    }
}
