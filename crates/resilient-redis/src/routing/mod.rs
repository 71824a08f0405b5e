//! The router: which node, and which of its connections, a request goes to; and what a reply
//! means for the topology. It is the only part of the client that knows whether the deployment
//! is one server, a Sentinel set or a Redis Cluster:
//!
//! - **One server** and **Sentinel** are one [`Node`], whose pool connects to the server or to
//!   the master the sentinels name (the pool's endpoint: [`crate::connection`]); `+switch-master`
//!   and `READONLY` move the pool to the new master.
//! - **Cluster** ([`cluster`]) is one [`Node`] per master, found by the key's slot in the
//!   client's slot map; `MOVED`, `ASK`, `CLUSTERDOWN`, `TRYAGAIN` and dead nodes change the map.
//!
//! The retry loop, deadline, budget, admission (each node's breaker and throttle), stall
//! diagnosis, counters and ambiguity rules sit above, in the client's call path (`client/`),
//! written once for all three.

pub(crate) mod cluster;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use resilience::{BreakerConfig, CircuitBreaker, ThrottleTotals, TotalsThrottle};
use tokio::time::Instant;

use crate::{config::ClientConfig, connection::Pool, error::Error, observe::gauges::NodeGauges};

/// Where requests go.
pub(crate) enum Router {
    /// One server, or the master of a Sentinel deployment.
    Single(Box<Node>),
    /// A Redis Cluster.
    Cluster(Arc<cluster::ClusterRouter>),
}

impl Router {
    /// Live connections and pool sizes (over every node of a cluster).
    pub(crate) fn connections(&self) -> (usize, usize) {
        match self {
            Router::Single(node) => node.pool.connections(),
            Router::Cluster(c) => c.connections(),
        }
    }

    /// Every node the client has a pool for.
    pub(crate) fn each_node(&self, mut f: impl FnMut(&Node)) {
        match self {
            Router::Single(node) => f(node),
            Router::Cluster(c) => c.nodes().iter().for_each(|n| f(n)),
        }
    }

    /// The node of a one-server or Sentinel deployment; `None` for a cluster.
    #[inline]
    pub(crate) fn single(&self) -> Option<&Node> {
        match self {
            Router::Single(node) => Some(node),
            Router::Cluster(_) => None,
        }
    }
}

/// One server the client sends to: its connections, its circuit breaker and its adaptive
/// throttle (one per node, so that in a cluster one failing shard does not hold up the others).
pub(crate) struct Node {
    /// `host:port` (empty for a Sentinel master, which moves).
    pub(crate) addr: Arc<str>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) throttle: Option<NodeThrottle>,
    /// Its gauges (see [`crate::observe`]); shared with its breaker's listener.
    pub(crate) gauges: Arc<NodeGauges>,
    /// Whether the node is one of several (a cluster's): its breaker is named after it.
    one_of_many: bool,
}

impl Node {
    /// The node at `addr` served by `pool`, with the breaker and throttle `config` asks for
    /// (already validated). `one_of_many`: a cluster node, whose breaker is named after it.
    pub(crate) fn new(
        addr: Arc<str>,
        pool: Arc<Pool>,
        config: &ClientConfig,
        one_of_many: bool,
    ) -> Result<Node, Error> {
        let gauges = Arc::new(NodeGauges::new(if addr.is_empty() {
            "master"
        } else {
            &addr
        }));
        let breaker = match &config.breaker {
            Some(b) => {
                let name = if one_of_many {
                    format!("{}:{addr}", b.name).into()
                } else {
                    b.name.clone()
                };
                // Its state is published per node, by `gauges`: not also by the breaker.
                let config = BreakerConfig {
                    name,
                    state_gauge: false,
                    ..b.clone()
                };
                let breaker = CircuitBreaker::new(config)
                    .map_err(|e| Error::config(format!("breaker: {e}")))?;
                gauges.breaker_state(breaker.state().gauge_value());
                let pushed = gauges.clone();
                breaker.add_listener(Arc::new(move |event| {
                    if let resilience::Event::BreakerTransition { to, .. } = event {
                        pushed.breaker_state(to.gauge_value());
                    }
                }));
                Some(breaker)
            }
            None => None,
        };
        let throttle = match &config.adaptive_throttle {
            Some(t) => {
                let throttle = TotalsThrottle::new(t.clone())
                    .map_err(|e| Error::config(format!("adaptive_throttle: {e}")))?;
                // The window starts now, with nothing counted (the ticker may start later).
                throttle.tick_at(Instant::now(), ThrottleTotals::default());
                Some(NodeThrottle::new(throttle))
            }
            None => None,
        };
        Ok(Node {
            addr,
            pool,
            breaker,
            throttle,
            gauges,
            one_of_many,
        })
    }

    /// How errors name the node: `"of node host:port "` in a cluster, nothing otherwise.
    pub(crate) fn label(&self) -> String {
        if self.one_of_many {
            format!("of node {} ", self.addr)
        } else {
            String::new()
        }
    }

    /// `host:port` of the server a connection in pool slot `slot` goes to, when known (for
    /// the call's span).
    pub(crate) fn serving_addr(&self, slot: usize) -> Option<Arc<str>> {
        match self.pool.sentinel_addr(slot) {
            Some(addr) => addr,
            None if self.addr.is_empty() => None,
            None => Some(self.addr.clone()),
        }
    }

    /// Whether the node is one of several (a cluster's).
    #[inline]
    pub(crate) fn is_one_of_many(&self) -> bool {
        self.one_of_many
    }

    /// The node left the client's routing table (a cluster node that no longer owns slots):
    /// replies on its connections no longer count as a master's acknowledgement
    /// ([`Pool::retire`]), and its gauges go to 0 and are pushed no more
    /// ([`NodeGauges::retire`]).
    pub(crate) fn retire(&self) {
        self.pool.retire();
        self.gauges.retire();
    }
}

/// A node's adaptive throttle and the counts it works on.
pub(crate) struct NodeThrottle {
    pub(crate) throttle: TotalsThrottle,
    /// Attempts sent to the node (a cluster node's; a single server's throttle reads the
    /// client's counters).
    pub(crate) attempts: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

impl NodeThrottle {
    pub(crate) fn new(throttle: TotalsThrottle) -> NodeThrottle {
        NodeThrottle {
            throttle,
            attempts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// The totals the throttle works on: every attempt sent or rejected is a request; every
    /// attempt not refused for overload is an accept.
    pub(crate) fn totals(&self) -> ThrottleTotals {
        let attempts = self.attempts.load(Ordering::Relaxed);
        ThrottleTotals {
            requests: attempts + self.rejected.load(Ordering::Relaxed),
            accepts: attempts.saturating_sub(self.refused.load(Ordering::Relaxed)),
        }
    }
}
