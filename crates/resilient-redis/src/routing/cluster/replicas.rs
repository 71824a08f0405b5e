//! Where a cluster read goes ([`ReadFrom`]): the slot's master or one of its replicas.
//!
//! A replica is *live* while it is not known to be down, its pool has a connection and its
//! breaker admits calls; reads turn over the live replicas of the slot. A dead replica is
//! skipped at once: a read never waits on it while its master or another replica answers. So is
//! one further behind its master than `max_replica_lag` (measured in [`super::measure`]).
//! (Replica nodes get their pools when the slot map names them: see [`super::refresh`].)

use std::sync::{Arc, atomic::Ordering};

use super::ClusterRouter;
use crate::{
    config::{ReadFrom, nearest, zone_rank},
    connection::probe::rtt_rank,
    routing::Node,
};

/// The node a request goes to, and whether it is one of its slot's replicas.
pub(crate) struct Route {
    pub(crate) node: Arc<Node>,
    pub(crate) replica: bool,
}

impl Route {
    fn master(node: Arc<Node>) -> Route {
        Route {
            node,
            replica: false,
        }
    }
}

impl ClusterRouter {
    /// Where a request on `slot` goes: its master, or, for a read with replica reads on, the
    /// node [`ReadFrom`] picks. `Err(true)`: the node to wait for is known to be down;
    /// `Err(false)`: the slot map names none.
    #[inline]
    pub(crate) fn route(&self, slot: u16, read_only: bool) -> Result<Route, bool> {
        if self.reads_elsewhere(read_only) {
            self.read_route(slot)
        } else {
            self.master_of(slot).map(Route::master)
        }
    }

    /// Whether a call may be sent to another copy than its slot's master: a read (`read_only`)
    /// with replica reads on.
    #[inline]
    pub(crate) fn reads_elsewhere(&self, read_only: bool) -> bool {
        read_only && self.config.read_from.uses_replicas()
    }

    /// Where `cmd` goes at once, if its slot's node is known and not down.
    #[inline]
    pub(crate) fn ready_route(&self, cmd: &redis::Cmd, read_only: bool) -> Option<Route> {
        self.route(crate::commands::command_slot(cmd)?, read_only)
            .ok()
    }

    /// A read's node, as [`ReadFrom`] says.
    fn read_route(&self, slot: u16) -> Result<Route, bool> {
        let Some((master, replicas)) = self.topology.shard_of(slot) else {
            return Err(false);
        };
        let master_up = || {
            if self.topology.is_down(&master) {
                return None;
            }
            self.node(&master).ok()
        };
        let replica = |live_only: bool| {
            self.pick_replica(&replicas, live_only).map(|node| Route {
                node,
                replica: true,
            })
        };
        match &self.config.read_from {
            ReadFrom::Master => master_up().map(Route::master).ok_or(true),
            ReadFrom::MasterPreferred => match master_up() {
                Some(node) if admits(&node) => Ok(Route::master(node)),
                up => replica(true).or_else(|| up.map(Route::master)).ok_or(true),
            },
            ReadFrom::PreferReplica | ReadFrom::Zone(_) => replica(true)
                .or_else(|| master_up().map(Route::master))
                .ok_or(true),
            // No live replica: one that is not known to be down (the read waits for its
            // connection, or for the slot map to change).
            ReadFrom::Replica => replica(true).or_else(|| replica(false)).ok_or(true),
            ReadFrom::Nearest => self
                .nearest_copy(master_up().filter(|m| admits(m)), &replicas)
                .or_else(|| replica(true))
                .or_else(|| master_up().map(Route::master))
                .ok_or(true),
        }
    }

    /// Of the slot's master (when up) and its live replicas, one of those with the lowest
    /// measured round trip ([`ReadFrom::Nearest`]), turning over them.
    fn nearest_copy(&self, master: Option<Arc<Node>>, replicas: &[Arc<str>]) -> Option<Route> {
        let copies: Vec<Route> = master
            .map(Route::master)
            .into_iter()
            .chain(replicas.iter().filter_map(|addr| {
                let node = self.usable_replica(addr, true)?;
                Some(Route {
                    node,
                    replica: true,
                })
            }))
            .collect();
        let rtt = |i: usize| copies[i].node.pool.measured().rtt_us();
        let lowest = (0..copies.len()).filter_map(rtt).min();
        let first = self.next_replica.fetch_add(1, Ordering::Relaxed);
        let pick = nearest(copies.len(), first, |i| rtt_rank(rtt(i), lowest), Some)?;
        copies.into_iter().nth(pick)
    }

    /// The node of the replica at `addr` if it may be read from: not known to be down, not too
    /// far behind its master, and with `live_only` connected with a breaker that admits calls.
    fn usable_replica(&self, addr: &str, live_only: bool) -> Option<Arc<Node>> {
        if self.topology.is_down(addr) {
            return None;
        }
        let node = self.node_if_known(addr)?;
        if node.pool.measured().lagging() {
            return None;
        }
        (!live_only || (!node.pool.is_down() && admits(&node))).then_some(node)
    }

    /// A read met `error` while replica reads are on: if it is `CLUSTERDOWN`, the servers refuse
    /// reads while a master is failing (`cluster-allow-reads-when-down no`, Redis's default),
    /// and replicas cannot carry reads through a failover: said once, as a warning.
    #[cold]
    pub(crate) fn refused_read_while_down(&self, error: &crate::Error) {
        let down = error
            .redis_error()
            .is_some_and(|e| e.code() == Some("CLUSTERDOWN"));
        if down && !self.warned_reads_when_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the cluster refused a read with CLUSTERDOWN: with cluster-allow-reads-when-down no \
                 (Redis's default) no node serves reads while a master is failing, so replica reads \
                 cannot carry reads through a failover; set cluster-allow-reads-when-down yes"
            );
        }
    }

    /// A live replica of `slot`, for a read whose node has no connection at hand (its master
    /// lost its connections, or a replica did): it goes there rather than wait.
    pub(crate) fn live_replica(&self, slot: u16, instead_of: &str) -> Option<Arc<Node>> {
        let (_, replicas) = self.topology.shard_of(slot)?;
        self.pick_replica(&replicas, true)
            .filter(|node| &*node.addr != instead_of)
    }

    /// The next of `replicas` (turning over them) that is live, or with `live_only` false,
    /// merely not known to be down.
    fn pick_replica(&self, replicas: &[Arc<str>], live_only: bool) -> Option<Arc<Node>> {
        let n = replicas.len();
        if n == 0 {
            return None;
        }
        let first = self.next_replica.fetch_add(1, Ordering::Relaxed);
        let usable = |addr: &Arc<str>| self.usable_replica(addr, live_only);
        if let ReadFrom::Zone(mine) = &self.config.read_from {
            let zones = self.zones();
            return nearest(
                n,
                first,
                |i| zone_rank(&zones, mine, &replicas[i]),
                |i| usable(&replicas[i]),
            );
        }
        (0..n).find_map(|i| usable(&replicas[(first + i) % n]))
    }
}

/// Whether `node`'s breaker lets a call through now (closed, or ready to probe).
fn admits(node: &Node) -> bool {
    match &node.breaker {
        None => true,
        Some(b) if b.is_closed() => true,
        Some(b) => !matches!(
            b.state(),
            resilience::BreakerState::Open { retry_in } if !retry_in.is_zero()
        ),
    }
}
