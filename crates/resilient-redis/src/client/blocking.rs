//! Blocking commands: a dedicated connection, not cut by the response timeout, never re-sent.

use tokio::time::Instant;

use super::Handle;
use crate::{
    commands,
    error::{Error, ErrorKind, Outcome},
    request::{Reply, Request},
};

impl Handle {
    /// Blocking commands run on a dedicated connection: they do not hold up other callers, are
    /// not cut by the response timeout, and are never re-sent once written.
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
        self.inner.stats.attempts.add(1);
        let config = &self.inner.config;
        // The handle's deadline (`with_deadline`), not the configuration's.
        let connect_deadline = Instant::now() + self.deadline();
        let conn = loop {
            match tokio::time::timeout_at(connect_deadline, pool.open_dedicated()).await {
                Ok(Ok(conn)) => break conn,
                Ok(Err(e)) if Instant::now() + config.connect_timeout < connect_deadline => {
                    tracing::debug!(error = %e, "blocking connection failed; waiting for the server");
                    pool.acquire(Some(connect_deadline)).await?;
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
        };
        let limit = commands::blocking_timeout(cmd).map(|t| t + config.response_timeout * 2);
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
        match result {
            Ok(v) => {
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
}
