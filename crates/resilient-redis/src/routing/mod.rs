//! The router: which node, and which of its connections, a request goes to; and what a reply
//! means for the topology. It is the only part of the client that knows whether the deployment
//! is one server, a Sentinel set or a Redis Cluster:
//!
//! - **One server** and **Sentinel** are one [`Node`], whose pool connects to the server or to
//!   the master the sentinels name ([`Endpoint`], [`sentinel`]); `+switch-master` and `READONLY`
//!   move the pool to the new master.
//! - **Cluster** ([`cluster`]) is one [`Node`] per master, found by the key's slot in the
//!   client's slot map; `MOVED`, `ASK`, `CLUSTERDOWN`, `TRYAGAIN` and dead nodes change the map.
//!
//! The retry loop, deadline, budget, throttle, stall diagnosis, counters and ambiguity rules
//! sit above, in [`crate::client`], written once for all three.

pub(crate) mod cluster;
mod endpoint;
pub(crate) mod sentinel;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use resilience::{CircuitBreaker, ThrottleTotals, TotalsThrottle};

pub(crate) use endpoint::Endpoint;
pub(crate) use sentinel::{Master, SentinelResolver, TopologyView};

use crate::connection::Pool;

/// Where requests go.
pub(crate) enum Router {
    /// One server, or the master of a Sentinel deployment.
    Single(Node),
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

    /// The node of a one-server or Sentinel deployment; `None` for a cluster.
    #[inline]
    pub(crate) fn single(&self) -> Option<&Node> {
        match self {
            Router::Single(node) => Some(node),
            Router::Cluster(_) => None,
        }
    }
}

/// One server the client sends to: its connections, and (in a cluster) its own circuit breaker
/// and adaptive throttle, so that one failing shard does not hold up the others. A single
/// server's breaker and throttle are the client's own (see [`crate::client`]).
pub(crate) struct Node {
    /// `host:port`.
    pub(crate) addr: Arc<str>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) throttle: Option<NodeThrottle>,
}

/// A node's adaptive throttle and the counts it works on.
pub(crate) struct NodeThrottle {
    pub(crate) throttle: TotalsThrottle,
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

/// `host:port` split; IPv6 hosts may be in brackets.
pub(crate) fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[').trim_end_matches(']'),
        port.parse().ok()?,
    ))
}
