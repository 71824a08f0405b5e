//! Measuring the cluster's nodes in the background, for [`ReadFrom::Nearest`] and
//! `max_replica_lag`: every [`PERIOD`], one `INFO replication` on each node the client has a
//! pool for gives its round trip, a master's replication offset, and how far behind its master
//! each replica is (see [`crate::connection::probe`]). Runs only when one of the two is asked
//! for; ends with the router.
//!
//! [`ReadFrom::Nearest`]: crate::ReadFrom::Nearest

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::time::Instant;

use super::ClusterRouter;
use crate::connection::probe::{OffsetHistory, PERIOD, Replication};

/// Whether `router`'s reads need the nodes measured.
pub(super) fn wanted(router: &ClusterRouter) -> bool {
    let config = &router.config;
    config.read_from.uses_replicas()
        && (config.max_replica_lag.is_some() || config.read_from == crate::ReadFrom::Nearest)
}

/// The background task: see the module's documentation.
pub(super) async fn measurer(router: Weak<ClusterRouter>) {
    let mut histories: HashMap<Arc<str>, OffsetHistory> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let shards = router.topology.shards();
        let nodes: Vec<_> = router.nodes();
        let measured: HashMap<Arc<str>, Replication> =
            futures::future::join_all(nodes.iter().map(|node| async move {
                node.pool
                    .measure_node()
                    .await
                    .map(|r| (node.addr.clone(), r))
            }))
            .await
            .into_iter()
            .flatten()
            .collect();
        let now = Instant::now();
        for (master, _) in &shards {
            if let Some(r) = measured.get(master).filter(|r| r.master) {
                histories
                    .entry(master.clone())
                    .or_default()
                    .record(now, r.offset);
            }
        }
        histories.retain(|m, _| shards.iter().any(|(master, _)| master == m));
        let bound = router.config.max_replica_lag;
        for (master, replicas) in &shards {
            for addr in replicas.iter() {
                let (Some(r), Some(node)) = (measured.get(addr), router.node_if_known(addr)) else {
                    continue;
                };
                let lag = match histories.get(master) {
                    Some(history) if !r.master => history.lag(r.offset),
                    _ => Duration::ZERO,
                };
                let lagging = bound.is_some_and(|bound| lag > bound);
                if lagging != node.pool.measured().lagging() {
                    tracing::debug!(replica = %addr, ?lag, lagging, "replica lag");
                }
                node.pool.measured().set_lagging(lagging);
            }
        }
    }
}
