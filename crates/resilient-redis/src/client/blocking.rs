//! Blocking commands: a dedicated connection, not cut by the response timeout, re-sent only when
//! the server says it did not run them (it was demoted).

use std::sync::atomic::Ordering;

use redis::Value;
use tokio::time::Instant;

use super::Handle;
use crate::{
    commands,
    connection::{Dedicated, Pool},
    error::{Error, ErrorKind, Outcome},
    replies::{self, TopologyHint},
    request::{Reply, Request},
};

impl Handle {
    /// Blocking commands run on a dedicated connection: they do not hold up other callers, are
    /// not cut by the response timeout, and are never re-sent once written, unless the server
    /// said they did not run because it was demoted.
    pub(super) async fn execute_blocking(&self, request: Request<'_>) -> Result<Reply, Error> {
        let Request::Cmd(cmd) = request else {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "blocking commands cannot be pipelined through the client",
            ));
        };
        let Some(node) = self.inner.router.single() else {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "blocking commands are not sent to a cluster yet",
            ));
        };
        let pool = &node.pool;
        let config = &self.inner.config;
        // The handle's deadline (`with_deadline`), not the configuration's.
        let connect_deadline = Instant::now() + self.deadline();
        let limit = commands::blocking_timeout(cmd).map(|t| t + config.response_timeout * 2);
        let result = loop {
            self.inner.stats.attempts.add(1);
            let conn = self.dedicated(pool, connect_deadline).await?;
            let mut sending = conn.conn.clone();
            let sent = sending.send_packed_command(cmd);
            let result = match limit {
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::ConnectionLost,
                            Outcome::Ambiguous,
                            "no reply to a blocking command long after its own timeout",
                        ));
                    }
                },
                None => sent.await,
            };
            // Its server became a replica (`UNBLOCKED`, or `READONLY` for a blocking write): the
            // command did not run. Once the connections have moved to the primary, it is sent
            // again there (with its own timeout again), within the deadline.
            if let Ok(Value::ServerError(err)) = &result
                && Instant::now() < connect_deadline
                && let Some(m) =
                    replies::meaning(err, self.inner.deployment, self.inner.config.reply_rules())
                && m.hints.topology == TopologyHint::Demoted
            {
                tracing::debug!(
                    code = err.code(),
                    "blocking command ended by a demotion: sending it again"
                );
                pool.on_dedicated_demoted(conn.epoch);
                self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            break result.map(|v| (v, conn));
        };
        match result {
            Ok((v, conn)) => {
                pool.return_dedicated(conn);
                Ok(Reply::One(v))
            }
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
