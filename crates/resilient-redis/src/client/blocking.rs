//! Blocking commands: a dedicated connection, not cut by the response timeout, re-sent only when
//! the server says it did not run them (it was demoted; in a cluster, the slot moved or is
//! being migrated, or the cluster is reconfiguring).

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
};

use redis::{Cmd, RedisError, Value};
use tokio::time::Instant;

use super::Handle;
use crate::{
    commands,
    connection::{Dedicated, Pool, Unblock},
    error::{Error, ErrorKind, Outcome},
    replies::{self, TopologyHint},
    request::{Reply, Request},
    routing::{
        Node, Router,
        cluster::{ClusterRouter, RedirectKind, redirect_of, send_asking},
    },
};

/// How a blocking command's wait ended.
enum Sent {
    /// Its server answered (or its connection failed).
    Reply(redis::RedisResult<Value>),
    /// Its server was replaced while the command was blocked on it, and did not answer.
    Replaced,
    /// Its server was replaced, and ended the command when asked to (`CLIENT UNBLOCK`):
    /// nothing was taken, it can go to the new owner.
    Unblocked,
}

/// A blocking command that takes nothing from the server (`XREAD BLOCK`): sent again wherever
/// its first sending ended, as any read.
fn takes_nothing(cmd: &Cmd) -> bool {
    commands::command_name(cmd).is_some_and(|name| name.as_bytes() == b"XREAD")
}

/// Whether a blocking command's connection broke under it and it takes nothing (sent again;
/// any other may have taken an element: ambiguous).
fn lost_read(cmd: &Cmd, result: &redis::RedisResult<Value>) -> bool {
    matches!(result, Err(e) if e.is_io_error() || e.is_connection_dropped()) && takes_nothing(cmd)
}

/// The end of a blocking command whose server was replaced under it without answering: it may
/// have taken an element just before and its reply be lost.
fn replaced_while_blocked() -> Error {
    Error::new(
        ErrorKind::ConnectionLost,
        Outcome::Ambiguous,
        "the server was replaced while the command was blocked on it and did not answer: it may \
         have taken an element whose reply was lost",
    )
}

impl Handle {
    /// Blocking commands run on a dedicated connection: they do not hold up other callers, are
    /// not cut by the response timeout, and are never re-sent once written, unless the server
    /// said they did not run (it was demoted; in a cluster, the slot moved or is moving).
    pub(super) async fn execute_blocking(&self, request: Request<'_>) -> Result<Reply, Error> {
        let Request::Cmd(cmd) = request else {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "blocking commands cannot be pipelined through the client",
            ));
        };
        // The handle's deadline (`with_deadline`), not the configuration's: to connect, and to
        // send the command again after the server said it did not run it (counted from then).
        let connect_deadline = Instant::now() + self.deadline();
        let result = match &self.inner.router {
            Router::Single(node) => self.blocking_on(node, cmd, connect_deadline).await?,
            Router::Cluster(cluster) => {
                Box::pin(self.blocking_in_cluster(cluster, cmd, connect_deadline)).await?
            }
        };
        match result {
            Ok(v) => Ok(Reply::One(v)),
            Err(e) if e.is_io_error() => Err(Error::new(
                ErrorKind::ConnectionLost,
                Outcome::Ambiguous,
                "the connection broke during a blocking command",
            )
            .with_source(e)),
            Err(e) => Err(Error::new(
                ErrorKind::Server,
                Outcome::Failed,
                "blocking command failed",
            )
            .with_source(e)),
        }
    }

    /// On one server or Sentinel's master: sent again on the new master when the server says
    /// it was demoted (`UNBLOCKED`, or `READONLY` for a blocking write).
    async fn blocking_on(
        &self,
        node: &Node,
        cmd: &Cmd,
        mut connect_deadline: Instant,
    ) -> Result<redis::RedisResult<Value>, Error> {
        let pool = &node.pool;
        loop {
            let conn = self.dedicated(pool, connect_deadline).await?;
            let sent = self
                .send_blocking(
                    &conn,
                    cmd,
                    false,
                    pool.replaced(conn.epoch),
                    pool.unblock(&conn, false),
                )
                .await?;
            // The time blocked is not the deadline's: sending it again gets a window of its own.
            connect_deadline = Instant::now() + self.deadline();
            let Some(result) = self.after_wait(sent, cmd)? else {
                continue;
            };
            if let Ok(Value::ServerError(err)) = &result
                && Instant::now() < connect_deadline
                && self.hint_of(err) == Some(TopologyHint::Demoted)
            {
                tracing::debug!(
                    code = err.code(),
                    "blocking command ended by a demotion: sending it again"
                );
                pool.on_dedicated_demoted(conn.epoch);
                self.resent(replies::Code::of(err).as_str());
                continue;
            }
            if result.is_ok() {
                pool.return_dedicated(conn);
            }
            return Ok(result);
        }
    }

    /// In a cluster, on the master of the command's slot: `MOVED` and `ASK` are followed (the
    /// command did not run), and a demotion or a reconfiguring cluster (`UNBLOCKED`,
    /// `READONLY`, `TRYAGAIN`, `CLUSTERDOWN`) sends it again once the slot map has moved on.
    async fn blocking_in_cluster(
        &self,
        cluster: &ClusterRouter,
        cmd: &Cmd,
        mut connect_deadline: Instant,
    ) -> Result<redis::RedisResult<Value>, Error> {
        let Some(slot) = commands::command_slot(cmd) else {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "a blocking command without a key has no node to go to in a cluster",
            ));
        };
        let mut ask: Option<Arc<Node>> = None;
        let mut hops = 0;
        loop {
            let seen = cluster.epoch();
            let node = match ask.clone() {
                Some(node) => node,
                None => match cluster.master_of(slot) {
                    Ok(node) => node,
                    Err(_) => {
                        self.wait_for_topology(cluster, seen, Some(connect_deadline), || {
                            format!(
                                "the node of slot {slot} stayed down and no other took over \
                                 before the deadline"
                            )
                        })
                        .await
                        .map_err(|e| e.error)?;
                        continue;
                    }
                },
            };
            let asking = ask.take().is_some();
            // Waiting for a connection to a node that died: the slot may be taken over by
            // another in the meantime (a failover), and then the call goes there.
            let taken_over = async {
                if asking {
                    std::future::pending::<()>().await;
                }
                cluster.stops_owning(slot, &node).await;
            };
            let conn = tokio::select! {
                conn = self.dedicated(&node.pool, connect_deadline) => match conn {
                    Ok(conn) => conn,
                    // The node stayed unreachable: flag it down and wait for the topology.
                    Err(e) if e.outcome() == Outcome::Failed
                        && !asking
                        && Instant::now() < connect_deadline =>
                    {
                        cluster.node_failed(&node.addr);
                        self.wait_for_topology(cluster, seen, Some(connect_deadline), || {
                            format!("the node of slot {slot} stayed unreachable: {e}")
                        })
                        .await
                        .map_err(|e| e.error)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                () = taken_over => continue,
            };
            // A node an `ASK` named does not own the slot: only its reply ends the call.
            let replaced = async {
                if asking {
                    std::future::pending::<()>().await;
                }
                cluster.stops_owning(slot, &node).await;
            };
            let unblock = node.pool.unblock(&conn, true);
            let sent = self
                .send_blocking(&conn, cmd, asking, replaced, unblock)
                .await?;
            // The time blocked is not the deadline's: sending it again gets a window of its own.
            connect_deadline = Instant::now() + self.deadline();
            if matches!(&sent, Sent::Reply(Err(e)) if e.is_io_error()) {
                cluster.node_failed(&node.addr);
            }
            let Some(result) = self.after_wait(sent, cmd)? else {
                continue;
            };
            let Ok(Value::ServerError(err)) = &result else {
                if result.is_ok() {
                    node.pool.return_dedicated(conn);
                }
                return Ok(result);
            };
            let hint = self.hint_of(err);
            if Instant::now() >= connect_deadline
                || !matches!(
                    hint,
                    Some(
                        TopologyHint::Moved
                            | TopologyHint::Ask
                            | TopologyHint::Demoted
                            | TopologyHint::Reconfiguring
                    )
                )
            {
                return Ok(result);
            }
            tracing::debug!(
                code = err.code(),
                "blocking command not run by its node: sending it again"
            );
            self.resent(replies::Code::of(err).as_str());
            match redirect_of(&RedisError::from(err.clone())) {
                Some(redirect) => {
                    hops += 1;
                    if hops > cluster.cluster.max_redirects {
                        cluster.request_refresh();
                        return Ok(result);
                    }
                    if redirect.kind == RedirectKind::Moved {
                        cluster.moved(redirect.slot, &redirect.addr);
                    } else {
                        cluster.redirects.fetch_add(1, Ordering::Relaxed);
                        ask = Some(cluster.node(&redirect.addr)?);
                    }
                }
                None => {
                    cluster.request_refresh();
                    let failure = crate::retry::AttemptError::new(
                        ErrorKind::Server,
                        Outcome::Failed,
                        format!("the blocking command's node answered {}", err.code()),
                        Some(RedisError::from(err.clone())),
                        resilience::Classification::fail(),
                    );
                    self.wait_for_refresh(cluster, seen, Some(connect_deadline), &failure)
                        .await
                        .map_err(|e| e.error)?;
                }
            }
        }
    }

    /// What follows a blocking command's wait: its result (`Some`), or `None` to send it again
    /// (it took nothing: ended at our request, or an `XREAD` whose server was lost or replaced).
    fn after_wait(
        &self,
        sent: Sent,
        cmd: &Cmd,
    ) -> Result<Option<redis::RedisResult<Value>>, Error> {
        let again = match sent {
            Sent::Reply(result) if !lost_read(cmd, &result) => return Ok(Some(result)),
            Sent::Replaced if !takes_nothing(cmd) => return Err(replaced_while_blocked()),
            Sent::Reply(_) | Sent::Replaced | Sent::Unblocked => None,
        };
        self.resent("blocking_resend");
        Ok(again)
    }

    /// Counts a blocking command sent again for `reason` (outside the retry policy, which
    /// counts it in its retry series all the same), in the client's counters and the call's
    /// span.
    #[cold]
    fn resent(&self, reason: &'static str) {
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        self.policy.count_retry(reason);
        crate::observe::retried(reason, 0);
    }

    /// What an error reply says of the topology, per the reply table.
    fn hint_of(&self, err: &redis::ServerError) -> Option<TopologyHint> {
        replies::meaning(err, self.inner.deployment, self.inner.config.reply_rules())
            .map(|m| m.hints.topology)
    }

    /// Sends `cmd` on a dedicated connection (after `ASKING` if `asking`) and waits for its
    /// reply: as long as the command blocks, plus twice the response timeout when it has a
    /// timeout of its own (`Err`: no reply by then, ambiguous).
    ///
    /// Once `replaced` resolves (the server no longer owns the key), `unblock` asks the server
    /// to end the command (`CLIENT UNBLOCK`): ended, it answers `UNBLOCKED` (nothing taken: the
    /// caller sends it again on the new owner); not blocked any more, its reply is on its way.
    /// A server that does not answer that either (frozen, cut off) ends the call
    /// ([`Sent::Replaced`]) after the response timeout; one that cannot be asked (behind one
    /// hostname) has the handle's deadline to answer (a demoted one says `UNBLOCKED`).
    async fn send_blocking(
        &self,
        conn: &Dedicated,
        cmd: &Cmd,
        asking: bool,
        replaced: impl Future<Output = ()>,
        unblock: impl Future<Output = Unblock>,
    ) -> Result<Sent, Error> {
        self.note_attempt(1, || (None, false));
        let response_timeout = self.inner.config.response_timeout;
        let grace = self.deadline();
        let limit = commands::blocking_timeout(cmd).map(|t| t + response_timeout * 2);
        let mut sending = conn.conn.clone();
        let sent = async move {
            if asking {
                send_asking(&mut sending, cmd).await
            } else {
                sending.send_packed_command(cmd).await
            }
        };
        let waited = async move {
            tokio::pin!(sent);
            tokio::select! {
                biased;
                result = &mut sent => Sent::Reply(result),
                () = replaced => {
                    let unblocked = unblock.await;
                    let wait = match unblocked {
                        Unblock::NoAnswer => response_timeout,
                        Unblock::Unblocked | Unblock::NotBlocked | Unblock::Unsupported => grace,
                    };
                    match tokio::time::timeout(wait, &mut sent).await {
                        // Ended at our request: it took nothing.
                        Ok(Ok(Value::ServerError(e)))
                            if unblocked == Unblock::Unblocked && e.code() == "UNBLOCKED" =>
                        {
                            Sent::Unblocked
                        }
                        Ok(result) => Sent::Reply(result),
                        Err(_) => Sent::Replaced,
                    }
                }
            }
        };
        match limit {
            Some(limit) => tokio::time::timeout(limit, waited).await.map_err(|_| {
                Error::new(
                    ErrorKind::ConnectionLost,
                    Outcome::Ambiguous,
                    "no reply to a blocking command long after its own timeout",
                )
            }),
            None => Ok(waited.await),
        }
    }

    /// A dedicated connection for a blocking command, waiting for the server (within
    /// `deadline`) when it cannot be reached.
    pub(super) async fn dedicated(
        &self,
        pool: &Pool,
        deadline: Instant,
    ) -> Result<Dedicated, Error> {
        let connect_timeout = self.inner.config.connect_timeout;
        loop {
            match tokio::time::timeout_at(deadline, pool.open_dedicated()).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) if Instant::now() + connect_timeout < deadline => {
                    tracing::debug!(error = %e, "blocking connection failed; waiting for the server");
                    pool.acquire(Some(deadline)).await?;
                }
                Ok(Err(e)) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        Outcome::Failed,
                        "cannot connect for a blocking command",
                    )
                    .with_source(e));
                }
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        Outcome::Failed,
                        "no connection for a blocking command before the deadline",
                    ));
                }
            }
        }
    }
}
