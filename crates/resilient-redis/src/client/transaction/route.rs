//! Where a transaction runs: the server (or Sentinel's master), or the master of its slot in a
//! cluster, following `MOVED` and `ASK` within one attempt.

use std::{ops::Deref, sync::Arc};

use redis::{Cmd, Pipeline, Value};
use resilience::Classification;
use tokio::time::Instant;

use super::{
    Transaction,
    run::{RunOn, failed, not_applied},
};
use crate::{
    client::Handle,
    error::{Error, ErrorKind, Outcome},
    replies::TopologyHint,
    retry::AttemptError,
    routing::{
        Node,
        cluster::{ClusterRouter, RedirectKind, redirect_of},
    },
};

/// Where a transaction's runs go.
pub(super) enum Place<'a> {
    /// One server, or the master of a Sentinel deployment.
    Single(&'a Node),
    /// The master of `slot`, the slot of every key the transaction watches.
    Cluster {
        cluster: &'a Arc<ClusterRouter>,
        slot: u16,
    },
}

/// The node of one run.
enum NodeRef<'a> {
    Borrowed(&'a Node),
    Shared(Arc<Node>),
}

impl Deref for NodeRef<'_> {
    type Target = Node;

    fn deref(&self) -> &Node {
        match self {
            NodeRef::Borrowed(node) => node,
            NodeRef::Shared(node) => node,
        }
    }
}

/// A failure to reach the node of a run (nothing was sent).
fn unreachable(error: Error) -> AttemptError {
    let retry = error.outcome() == Outcome::Failed && error.kind() == ErrorKind::Unavailable;
    AttemptError {
        class: if retry {
            Classification::retry().server_fault(true)
        } else {
            Classification::fail()
        },
        error,
        reply: None,
    }
}

impl Handle {
    /// One attempt of a transaction: a run on the node of `place`. In a cluster a redirect
    /// (`MOVED`: the slot map learns it; `ASK`: the next run goes to that node after
    /// `ASKING`) and a reconfiguring cluster (`TRYAGAIN`, `CLUSTERDOWN`, `READONLY`: after
    /// the next slot-map refresh) run it again within the attempt, as for any command: nothing
    /// was applied.
    pub(super) async fn transaction_attempt<F, Fut>(
        &self,
        place: &Place<'_>,
        watch: &Cmd,
        body: &std::sync::Mutex<&mut F>,
        deadline: Instant,
    ) -> Result<Option<Value>, AttemptError>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<Pipeline>>,
    {
        let mut ask: Option<Arc<Node>> = None;
        let mut hops = 0;
        loop {
            if Instant::now() >= deadline {
                return Err(failed(
                    ErrorKind::DeadlineExceeded,
                    "deadline exceeded before the transaction could run",
                    None,
                ));
            }
            let (node, slot, seen) = match place {
                Place::Single(node) => (NodeRef::Borrowed(node), None, 0),
                Place::Cluster { cluster, slot } => {
                    let seen = cluster.epoch();
                    let node = match ask.clone() {
                        Some(node) => node,
                        None => match cluster.master_of(*slot) {
                            Ok(node) => node,
                            Err(_) => {
                                self.wait_for_topology(cluster, seen, Some(deadline), || {
                                    format!(
                                        "the node of slot {slot} stayed down and no other took \
                                         over before the deadline"
                                    )
                                })
                                .await?;
                                continue;
                            }
                        },
                    };
                    (NodeRef::Shared(node), Some(*slot), seen)
                }
            };
            let pool = &node.pool;
            let dedicated = self.dedicated(pool, deadline).await.map_err(unreachable)?;
            let epoch = dedicated.epoch;
            let on = RunOn {
                pool,
                slot,
                asking: ask.take().is_some(),
            };
            let e = match self.run_once(on, dedicated, watch, body, deadline).await {
                Err(e) => e,
                done => return done,
            };
            let hint = e.reply.map(|h| h.topology);
            let Place::Cluster { cluster, .. } = place else {
                if hint == Some(TopologyHint::Demoted) {
                    // The master was demoted: the next run finds the new one.
                    pool.on_dedicated_demoted(epoch);
                }
                return Err(e);
            };
            if let Some(redirect) = e.error.redis_error().and_then(redirect_of) {
                hops += 1;
                if hops > cluster.cluster.max_redirects {
                    cluster.request_refresh();
                    return Err(not_applied(
                        &format!(
                            "more than {} redirects before the transaction ran",
                            cluster.cluster.max_redirects
                        ),
                        e.error.redis_error().cloned(),
                    ));
                }
                match redirect.kind {
                    RedirectKind::Moved => cluster.moved(redirect.slot, &redirect.addr),
                    RedirectKind::Ask => {
                        cluster
                            .redirects
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        ask = Some(cluster.node(&redirect.addr).map_err(|error| AttemptError {
                            error,
                            class: Classification::fail(),
                            reply: None,
                        })?);
                    }
                }
                continue;
            }
            if matches!(
                hint,
                Some(TopologyHint::Reconfiguring | TopologyHint::Demoted)
            ) {
                cluster.request_refresh();
                self.wait_for_refresh(cluster, seen, Some(deadline), &e)
                    .await?;
                continue;
            }
            if e.error.kind() == ErrorKind::ConnectionLost {
                cluster.node_failed(&node.addr);
            }
            return Err(e);
        }
    }
}
