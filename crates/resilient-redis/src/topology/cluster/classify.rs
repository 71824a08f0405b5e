//! What a failed send means: redirects, retryable replies, lost connections.

use redis::{RedisError, Value};
use resilience::Classification;

use super::{ClusterClient, Reply};
use crate::{
    error::{Error, ErrorKind, Outcome},
    retry::{AttemptError, classify_reply, connection_lost},
};

impl ClusterClient {
    /// Turns retryable error replies into errors; every other reply goes back as is.
    pub(super) fn check_reply(&self, reply: Reply, retry_safe: bool) -> Result<Reply, RedisError> {
        match &reply {
            Reply::One(Value::ServerError(err)) if self.reply_is_retryable(err) => {
                Err(RedisError::from(err.clone()))
            }
            Reply::Many(values) if retry_safe => {
                match values.iter().find_map(|v| match v {
                    Value::ServerError(err) if self.reply_is_retryable(err) => Some(err),
                    _ => None,
                }) {
                    Some(err) => Err(RedisError::from(err.clone())),
                    None => Ok(reply),
                }
            }
            _ => Ok(reply),
        }
    }

    fn reply_is_retryable(&self, err: &redis::ServerError) -> bool {
        matches!(err.code(), "MOVED" | "ASK") || classify_reply(&self.inner.rules, err).is_some()
    }

    /// What a failed send means.
    pub(super) fn classify(&self, error: RedisError, node: Option<&str>) -> Failure {
        let topology = &self.inner.topology;
        let code = error.code().map(str::to_owned);
        if let Some(code) = code.as_deref() {
            let class = match code {
                // The cluster is reconfiguring: not the node's fault.
                "TRYAGAIN" | "CLUSTERDOWN" => Some(Classification::retry().server_fault(false)),
                "READONLY" => {
                    topology.request_refresh();
                    Some(Classification::retry().server_fault(false))
                }
                _ => match &error.clone().try_into() {
                    Ok(server) => classify_reply(&self.inner.rules, server).map(|(c, _)| c),
                    Err(_) => None,
                },
            };
            let kind = match code {
                "THROTTLED" => ErrorKind::Throttled,
                _ => ErrorKind::Server,
            };
            return Failure::sent(AttemptError {
                error: Error::new(kind, Outcome::Failed, format!("server replied {code}"))
                    .with_source(error),
                class: class.unwrap_or_else(Classification::fail),
            });
        }
        if error.kind() == redis::ErrorKind::ClusterConnectionNotFound
            || error.is_connection_refusal()
        {
            // Nothing was written: the node has no live connection.
            if let Some(n) = node {
                topology.mark_down(n);
            }
            topology.request_refresh();
            return Failure {
                not_sent: true,
                attempt: AttemptError {
                    error: Error::new(
                        ErrorKind::Unavailable,
                        Outcome::Failed,
                        "no connection to the node of the slot",
                    )
                    .with_source(error),
                    class: Classification::retry(),
                },
            };
        }
        if error.is_io_error() || error.kind() == redis::ErrorKind::Parse {
            if !error.is_timeout()
                && let Some(n) = node
            {
                topology.mark_down(n);
            }
            topology.request_refresh();
            return Failure::sent(connection_lost(
                "the connection to the node broke while the request was in flight",
                Some(error),
            ));
        }
        // A client-side error from redis-rs (never reached the wire).
        Failure::sent(AttemptError {
            error: Error::new(ErrorKind::Server, Outcome::Failed, "request failed")
                .with_source(error),
            class: Classification::fail(),
        })
    }
}

/// What one failed send means, and whether anything was written.
pub(super) struct Failure {
    pub(super) attempt: AttemptError,
    pub(super) not_sent: bool,
}

impl Failure {
    fn sent(attempt: AttemptError) -> Failure {
        Failure {
            attempt,
            not_sent: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Redirect {
    Moved,
    Ask,
}

/// The redirect in an error: kind, node address, slot.
pub(super) fn redirect_of(error: &RedisError) -> Option<(Redirect, String, u16)> {
    let kind = match error.code()? {
        "MOVED" => Redirect::Moved,
        "ASK" => Redirect::Ask,
        _ => return None,
    };
    let (addr, slot) = error.redirect_node()?;
    Some((kind, addr.to_owned(), slot))
}
