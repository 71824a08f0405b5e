//! Keeping the slot map current: `CLUSTER SHARDS` (or `CLUSTER SLOTS`) on request (rate-limited and jittered, so
//! clients do not refresh in step after a failover), periodically, and continuously while a
//! node is down.

use std::{
    collections::HashSet,
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

use rand::{RngExt, rngs::SmallRng};
use redis::{Value, aio::ConnectionLike};
use tokio::time::Instant;

use super::{
    ClusterRouter,
    shards::{node_ids, parse_cluster_shards, parse_cluster_slots},
    slot_map::{SlotRange, Topology},
};

/// When the next refresh may run: not before `min_interval` after the last one, plus a random
/// share (`jitter_fraction` in 0..=1) of `jitter`.
pub(super) fn next_refresh_at(
    last: Option<Instant>,
    now: Instant,
    min_interval: Duration,
    jitter: Duration,
    jitter_fraction: f64,
) -> Instant {
    let earliest = last.map_or(now, |l| (l + min_interval).max(now));
    earliest + jitter.mul_f64(jitter_fraction.clamp(0.0, 1.0))
}

/// The background task: refreshes on request (rate-limited, jittered), periodically, and keeps
/// refreshing while a master is down; a down node whose pool has reconnected is up again.
pub(super) async fn refresher(
    router: Weak<ClusterRouter>,
    topology: Arc<Topology>,
    mut rng: SmallRng,
) {
    let mut last: Option<Instant> = Some(Instant::now());
    loop {
        let (periodic, min_interval, jitter) = match router.upgrade() {
            Some(r) => (
                r.cluster.refresh_interval,
                r.cluster.min_refresh_interval,
                r.cluster.refresh_jitter,
            ),
            None => return,
        };
        // A master down holds up its slots' calls: refresh until it is back or replaced. A
        // replica down only sends reads elsewhere: it waits for the next refresh (so a replica
        // the client cannot reach does not keep it asking for the map many times a second).
        let masters = topology.masters();
        let urgent = topology
            .down_nodes()
            .iter()
            .any(|n| masters.iter().any(|m| **m == **n));
        if !urgent {
            let notified = topology.wake.notified();
            match periodic {
                Some(p) => {
                    let _ = tokio::time::timeout(p, notified).await;
                }
                None => notified.await,
            }
        }
        if topology.closed.load(Ordering::Relaxed) {
            return;
        }
        let at = next_refresh_at(
            last,
            Instant::now(),
            min_interval,
            jitter,
            rng.random::<f64>(),
        );
        tokio::time::sleep_until(at).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        last = Some(Instant::now());
        if let Err(e) = refresh_once(&router).await {
            tracing::debug!(error = %e, "cluster slot-map refresh failed");
        }
        let masters = topology.masters();
        for node in topology.down_nodes() {
            // The node's pool reconnects on its own: once it has a connection, the node is up.
            // A down node whose pool was retired (a master deposed while it was down, now a
            // replica) and that is a master again gets a pool, or nothing would ever find it
            // back: its slots' calls would wait for a failover that already happened.
            match router.node_if_known(&node) {
                Some(n) if !n.pool.is_down() => topology.mark_up(&node),
                Some(_) => {}
                None if masters.iter().any(|m| **m == *node) => {
                    if let Err(e) = router.node(&node) {
                        tracing::debug!(error = %e, node = %node, "no pool for a down master");
                    }
                }
                None => {}
            }
        }
    }
}

/// One `CLUSTER SHARDS` (`CLUSTER SLOTS` from a server without it), from the first node that
/// answers: the nodes of the slot map (on their pools' live connections), then the seeds (on a
/// connection of their own), nodes known to be down last. Never through redis-rs's cluster
/// connection (whose task can stop answering while a node is down). With replica reads, every
/// replica of the map gets a pool (connecting in the background).
pub(super) async fn refresh_once(router: &ClusterRouter) -> Result<(), String> {
    let topology = &router.topology;
    let mut candidates: Vec<String> = topology.masters().iter().map(|m| m.to_string()).collect();
    candidates.extend(router.seeds.iter().cloned());
    let mut seen = HashSet::new();
    candidates.retain(|n| seen.insert(n.clone()));
    // Nodes known to be down last: they are asked only when no other answers.
    candidates.sort_by_key(|n| topology.is_down(n));
    let limit = router.config.connect_timeout + router.config.response_timeout;
    let mut last = "no node to ask".to_owned();
    let mut slots = None;
    for node in &candidates {
        let ask = async {
            let mut conn = match router
                .node_if_known(node)
                .and_then(|n| n.pool.try_acquire_for(false))
            {
                Some(lease) => lease.conn,
                None => router.open_one(node).await?,
            };
            ask_slot_map(router, &mut conn).await
        };
        match tokio::time::timeout(limit, ask).await {
            Ok(Ok(Ok(map))) => {
                slots = Some(map);
                break;
            }
            Ok(Ok(Err(why))) => last = format!("{node}: {why}"),
            Ok(Err(e)) => last = format!("{node}: {e}"),
            Err(_) => last = format!("{node}: no slot map within {limit:?}"),
        }
    }
    let (slots, ids) = slots.ok_or(last)?;
    router.learn_node_ids(&ids);
    topology.refreshes.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(crate::observe::CLUSTER_REFRESHES).increment(1);
    let masters_before = topology.masters();
    topology.install(slots);
    router.forget_nodes_without_slots(&masters_before);
    if router.config.read_from.uses_replicas() {
        for replica in topology.replicas() {
            if let Err(e) = router.node(&replica) {
                tracing::debug!(error = %e, replica = %replica, "no pool for a replica");
            }
        }
    }
    Ok(())
}

/// Node addresses and their ids.
type NodeIds = Vec<(std::sync::Arc<str>, String)>;

/// The slot map from the node on `conn`: `CLUSTER SHARDS`, or `CLUSTER SLOTS` where the server
/// does not have it (before Redis 7), or where it said so before; and, when the zone map names
/// nodes by id, each address's node id.
async fn ask_slot_map(
    router: &ClusterRouter,
    conn: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<Result<(Vec<SlotRange>, NodeIds), String>> {
    let tls = router.transport.is_tls();
    let ids = |v: &Value, shards| {
        if router.zones_by_id {
            node_ids(v, shards, tls)
        } else {
            Vec::new()
        }
    };
    if !router.slots_only.load(Ordering::Relaxed) {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SHARDS");
        match conn.req_packed_command(&cmd).await {
            Ok(v @ Value::Array(_)) => {
                return Ok(parse_cluster_shards(&v, tls)
                    .map(|ranges| (ranges, ids(&v, true)))
                    .ok_or_else(|| "unexpected CLUSTER SHARDS reply".to_owned()));
            }
            Ok(Value::ServerError(_)) => {}
            Ok(other) => return Ok(Err(format!("unexpected CLUSTER SHARDS reply {other:?}"))),
            Err(e) if e.code().is_some() => {}
            Err(e) => return Err(e),
        }
        // An error reply: a server without `CLUSTER SHARDS`.
        tracing::debug!("CLUSTER SHARDS refused: the slot map comes from CLUSTER SLOTS");
        router.slots_only.store(true, Ordering::Relaxed);
    }
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    Ok(match conn.req_packed_command(&cmd).await? {
        v @ Value::Array(_) => parse_cluster_slots(&v)
            .map(|ranges| (ranges, ids(&v, false)))
            .ok_or_else(|| "unexpected CLUSTER SLOTS reply".to_owned()),
        other => Err(format!("unexpected CLUSTER SLOTS reply {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[tokio::test(start_paused = true)]
    async fn refreshes_are_rate_limited_and_jittered() {
        let now = Instant::now();
        let min = Duration::from_millis(100);
        let jitter = Duration::from_millis(100);
        assert_eq!(next_refresh_at(None, now, min, jitter, 0.0), now);
        let last = now - Duration::from_millis(30);
        assert_eq!(
            next_refresh_at(Some(last), now, min, jitter, 0.0),
            now + Duration::from_millis(70)
        );
        assert_eq!(
            next_refresh_at(Some(last), now, min, jitter, 0.5),
            now + Duration::from_millis(120)
        );
        let long_ago = now - Duration::from_secs(1);
        assert_eq!(
            next_refresh_at(Some(long_ago), now, min, jitter, 1.0),
            now + jitter
        );
        // The same seed gives the same jitter sequence.
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..4)
                .map(|_| next_refresh_at(None, now, min, jitter, rng.random::<f64>()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
