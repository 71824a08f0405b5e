//! A late reply is diagnosed, not re-sent: is the server stalled, or the connection dead?

use std::sync::Arc;

use tokio::time::Instant;

use super::{Handle, cluster::slot_of};
use crate::{
    connection::{LeaseId, Pool, StallVerdict},
    request::Request,
    retry::{AttemptError, connection_lost, deadline_in_flight},
    routing::{Node, Router},
};

impl Handle {
    /// The slow path of [`Handle::send_on`]: a reply is late. Finds out whether the server is
    /// stalled (keep waiting: re-sending would only queue the request twice) or the connection
    /// is dead (give up on it; the caller retries if the request is safe to repeat). A cluster
    /// node that another takes over meanwhile (a failover of a frozen master: the slot map
    /// names another master for the request's slot) is given up on too:
    /// the request may still run there when it thaws, so it is ambiguous, and one safe to
    /// repeat is sent to the successor instead of waiting out the deadline.
    pub(super) async fn wait_late_reply<F, T>(
        &self,
        fut: std::pin::Pin<&mut F>,
        lease: LeaseId,
        deadline: Option<Instant>,
        node: &Node,
        request: Request<'_>,
    ) -> Result<redis::RedisResult<T>, AttemptError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let pool = &node.pool;
        let late = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, self.diagnose_late_reply(fut, lease, pool))
                    .await
                    .unwrap_or_else(|_| Err(deadline_in_flight())),
                None => self.diagnose_late_reply(fut, lease, pool).await,
            }
        };
        tokio::select! {
            biased;
            late = late => late,
            () = self.taken_over(node, request) => Err(connection_lost(
                "another node took over while the reply was late (a failover); the request may \
                 still run on the old one",
                None,
            )),
        }
    }

    /// Resolves once another node takes over from `node` for `request`: in a cluster, when the
    /// slot map names another master for the request's slot (checking meanwhile that `node`
    /// answers, so a frozen master is flagged down and the map refreshed until its failover).
    /// Never for a request to a node that is not its slot's master (a replica read, an `ASK`),
    /// nor outside a cluster.
    async fn taken_over(&self, node: &Node, request: Request<'_>) {
        match &self.inner.router {
            Router::Cluster(cluster) => match slot_of(request) {
                Some(slot) if cluster.master_addr(slot).as_deref() == Some(&*node.addr) => {
                    cluster.stops_owning(slot, node).await;
                }
                _ => std::future::pending().await,
            },
            // A Sentinel switch drops the old master's connections: a late reply there ends
            // as a lost connection without this.
            Router::Single(_) => std::future::pending().await,
        }
    }

    async fn diagnose_late_reply<F, T>(
        &self,
        mut fut: std::pin::Pin<&mut F>,
        lease: LeaseId,
        pool: &Arc<Pool>,
    ) -> Result<redis::RedisResult<T>, AttemptError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let window = self.inner.config.response_timeout;
        let mut server_answered = false;
        let mut first = true;
        let outcome = loop {
            let waited = if first {
                first = false;
                Err(())
            } else {
                tokio::time::timeout(window, &mut fut).await.map_err(|_| ())
            };
            match waited {
                Ok(result) => break result,
                Err(_) if server_answered => {
                    // The server answered a fresh connection a full window ago, and this one is
                    // still silent: the connection is dead.
                    pool.mark_broken(lease, "connection stopped answering");
                    return Err(connection_lost(
                        "the connection stopped answering while the server answers on a fresh one",
                        None,
                    ));
                }
                Err(_) => {
                    let verdict = tokio::select! {
                        biased;
                        result = &mut fut => break result,
                        verdict = pool.diagnose_stall() => verdict,
                    };
                    match verdict {
                        StallVerdict::Answers => server_answered = true,
                        StallVerdict::Silent => {
                            tracing::debug!("server stalled: waiting for the reply, not re-sending")
                        }
                        StallVerdict::Unreachable(why) => {
                            pool.mark_broken(lease, &why);
                            return Err(connection_lost(
                                "the server became unreachable while the request was in flight",
                                None,
                            ));
                        }
                    }
                }
            }
        };
        Ok(outcome)
    }
}
