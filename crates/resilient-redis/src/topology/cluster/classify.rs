//! What a failed send means: redirects, retryable replies, lost connections.

use redis::{RedisError, ServerError, ServerErrorKind, Value};
use resilience::Classification;

use super::{ClusterClient, Reply};
use crate::{
    error::{Error, ErrorKind, Outcome},
    replies::{self, Deployment, Meaning, TopologyHint},
    retry::{AttemptError, connection_lost},
};

impl ClusterClient {
    /// What a server error reply means here ([the reply table](crate::replies), Cluster column).
    fn meaning(&self, err: &ServerError) -> Option<Meaning> {
        replies::meaning(err, Deployment::Cluster, self.inner.rules.reply_rules())
    }

    /// Turns error replies that the table gives a meaning (redirects, retryable replies) into
    /// errors; every other reply goes back as is.
    pub(super) fn check_reply(&self, reply: Reply, retry_safe: bool) -> Result<Reply, RedisError> {
        match &reply {
            Reply::One(Value::ServerError(err)) if self.meaning(err).is_some() => {
                Err(RedisError::from(err.clone()))
            }
            Reply::Many(values) if retry_safe => {
                match values.iter().find_map(|v| match v {
                    Value::ServerError(err) if self.meaning(err).is_some() => Some(err),
                    _ => None,
                }) {
                    Some(err) => Err(RedisError::from(err.clone())),
                    None => Ok(reply),
                }
            }
            _ => Ok(reply),
        }
    }

    /// What a failed send means; `pipelined`: the error was one command's in a pipeline (the
    /// others may have run).
    pub(super) fn classify(
        &self,
        error: RedisError,
        node: Option<&str>,
        pipelined: bool,
    ) -> Failure {
        let topology = &self.inner.topology;
        if error.code().is_some() {
            let server = ServerError::try_from(error.clone()).ok();
            let meaning = server.as_ref().and_then(|s| Some((s, self.meaning(s)?)));
            return Failure::sent(match meaning {
                Some((server, m)) => {
                    if m.hints.topology == TopologyHint::Demoted {
                        topology.request_refresh();
                    }
                    AttemptError::from_reply(server, m, pipelined)
                }
                None => AttemptError {
                    error: Error::new(
                        ErrorKind::Server,
                        Outcome::Failed,
                        format!("server replied {}", error.code().unwrap_or_default()),
                    )
                    .with_source(error),
                    class: Classification::fail(),
                    reply: None,
                },
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
                    reply: None,
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
            reply: None,
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
    let kind = match error.kind() {
        redis::ErrorKind::Server(ServerErrorKind::Moved) => Redirect::Moved,
        redis::ErrorKind::Server(ServerErrorKind::Ask) => Redirect::Ask,
        _ => return None,
    };
    let (addr, slot) = error.redirect_node()?;
    Some((kind, addr.to_owned(), slot))
}
