//! The client's slot map: `CLUSTER SLOTS`, nodes known to be down, and the rate-limited,
//! jittered background refresh. (A key's slot is in [`crate::commands`].)

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use rand::{RngExt, rngs::SmallRng};
use redis::{Value, aio::ConnectionLike};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::{Inner, lock};

/// One row of `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotRange {
    start: u16,
    end: u16,
    master: Arc<str>,
}

/// The client's view of the cluster: slot owners, nodes known to be down, and the refresher's
/// wake-up.
pub(super) struct Topology {
    /// Sorted, non-overlapping ranges.
    slots: RwLock<Vec<SlotRange>>,
    /// Nodes that failed (connection lost or refused), until they answer again or leave the map.
    down: Mutex<HashSet<String>>,
    /// `down.len()`, read without the lock on every call.
    down_count: AtomicUsize,
    /// Bumped on every change of `slots` or `down`; waiters watch it.
    pub(super) epoch: watch::Sender<u64>,
    pub(super) wake: Notify,
    pub(super) closed: AtomicBool,
    pub(super) refreshes: AtomicU64,
}

impl Topology {
    pub(super) fn new() -> Topology {
        Topology {
            slots: RwLock::new(Vec::new()),
            down: Mutex::new(HashSet::new()),
            down_count: AtomicUsize::new(0),
            epoch: watch::Sender::new(0),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            refreshes: AtomicU64::new(0),
        }
    }

    pub(super) fn master_of(&self, slot: u16) -> Option<Arc<str>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        range_of(&slots, slot).map(|r| r.master.clone())
    }

    pub(super) fn is_down(&self, node: &str) -> bool {
        self.down_count.load(Ordering::Relaxed) > 0 && lock(&self.down).contains(node)
    }

    pub(super) fn mark_down(&self, node: &str) {
        let inserted = {
            let mut down = lock(&self.down);
            let inserted = down.insert(node.to_owned());
            self.down_count.store(down.len(), Ordering::Relaxed);
            inserted
        };
        if inserted {
            tracing::info!(
                node,
                "cluster node unreachable; its slots wait for a failover or its return"
            );
            self.bump();
        }
    }

    pub(super) fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// A `MOVED` says where one slot lives now: use it before the next refresh.
    pub(super) fn note_moved(&self, slot: u16, addr: &str) {
        {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            if range_of(&slots, slot).is_some_and(|r| &*r.master == addr) {
                return;
            }
            set_slot_owner(&mut slots, slot, addr);
        }
        self.bump();
        self.request_refresh();
    }

    fn bump(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Installs a fresh map; forgets down nodes that no longer own slots.
    fn install(&self, fresh: Vec<SlotRange>) {
        let changed = {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            let changed = *slots != fresh;
            if changed {
                *slots = fresh;
            }
            changed
        };
        let forgot = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            let mut down = lock(&self.down);
            let before = down.len();
            down.retain(|n| slots.iter().any(|r| &*r.master == n.as_str()));
            self.down_count.store(down.len(), Ordering::Relaxed);
            before != down.len()
        };
        if changed {
            tracing::info!("cluster slot map changed");
        }
        if changed || forgot {
            self.bump();
        }
    }

    fn mark_up(&self, node: &str) {
        let removed = {
            let mut down = lock(&self.down);
            let removed = down.remove(node);
            self.down_count.store(down.len(), Ordering::Relaxed);
            removed
        };
        if removed {
            tracing::info!(node, "cluster node answers again");
            self.bump();
        }
    }

    fn down_nodes(&self) -> Vec<String> {
        lock(&self.down).iter().cloned().collect()
    }
}

fn range_of(slots: &[SlotRange], slot: u16) -> Option<&SlotRange> {
    let i = slots.partition_point(|r| r.end < slot);
    slots.get(i).filter(|r| r.start <= slot && slot <= r.end)
}

/// Gives `slot` to `addr`, splitting its range.
fn set_slot_owner(slots: &mut Vec<SlotRange>, slot: u16, addr: &str) {
    let i = slots.partition_point(|r| r.end < slot);
    let new = SlotRange {
        start: slot,
        end: slot,
        master: Arc::from(addr),
    };
    match slots.get(i).cloned() {
        Some(r) if r.start <= slot && slot <= r.end => {
            let mut parts = Vec::with_capacity(3);
            if r.start < slot {
                parts.push(SlotRange {
                    end: slot - 1,
                    ..r.clone()
                });
            }
            parts.push(new);
            if slot < r.end {
                parts.push(SlotRange {
                    start: slot + 1,
                    ..r
                });
            }
            slots.splice(i..=i, parts);
        }
        _ => slots.insert(i, new),
    }
}

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
/// refreshing and probing while a node is down.
pub(super) async fn refresher(inner: Weak<Inner>, topology: Arc<Topology>, mut rng: SmallRng) {
    let mut last: Option<Instant> = Some(Instant::now());
    loop {
        let (periodic, min_interval, jitter) = match inner.upgrade() {
            Some(i) => (
                i.config.refresh_interval,
                i.config.min_refresh_interval,
                i.config.refresh_jitter,
            ),
            None => return,
        };
        let urgent = !topology.down_nodes().is_empty();
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
        let Some(inner) = inner.upgrade() else {
            return;
        };
        last = Some(Instant::now());
        if let Err(e) = refresh_once(&inner).await {
            tracing::debug!(error = %e, "cluster slot-map refresh failed");
        }
        for node in topology.down_nodes() {
            if probe(&inner, &node).await {
                topology.mark_up(&node);
            }
        }
    }
}

/// One `CLUSTER SLOTS`, from the first node that answers: the masters of the slot map, then
/// the seeds, nodes known to be down last. Sent on the client's own node connections, never through
/// redis-rs's cluster connection (whose task can stop answering while a node is down).
pub(super) async fn refresh_once(inner: &Inner) -> Result<(), String> {
    let mut candidates: Vec<String> = {
        let slots = inner
            .topology
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner());
        slots.iter().map(|r| r.master.to_string()).collect()
    };
    candidates.extend(inner.nodes.seeds().iter().cloned());
    let mut seen = HashSet::new();
    candidates.retain(|n| seen.insert(n.clone()));
    // Nodes known to be down last: they are asked only when no other answers.
    candidates.sort_by_key(|n| inner.topology.is_down(n));
    let limit = inner.config.connect_timeout + inner.config.response_timeout;
    let mut last = "no node to ask".to_owned();
    let mut value = None;
    for node in &candidates {
        let ask = async {
            let (mut conn, _) = inner.nodes.get(node).await?;
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SLOTS");
            conn.req_packed_command(&cmd).await
        };
        match tokio::time::timeout(limit, ask).await {
            Ok(Ok(v @ Value::Array(_))) => {
                value = Some(v);
                break;
            }
            Ok(Ok(other)) => last = format!("{node}: unexpected CLUSTER SLOTS reply {other:?}"),
            Ok(Err(e)) => last = format!("{node}: {e}"),
            Err(_) => last = format!("{node}: CLUSTER SLOTS timed out"),
        }
    }
    let value = value.ok_or(last)?;
    let slots = parse_cluster_slots(&value).ok_or("unexpected CLUSTER SLOTS reply")?;
    inner.topology.refreshes.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("resilient_redis_cluster_refreshes_total").increment(1);
    inner.topology.install(slots);
    Ok(())
}

/// Whether the node answers PING on the client's own connection to it.
async fn probe(inner: &Inner, node: &str) -> bool {
    let ping = async {
        let (mut conn, id) = inner.nodes.get(node).await?;
        let reply = conn.req_packed_command(&redis::cmd("PING")).await;
        if reply.is_err() {
            inner.nodes.forget(node, id);
        }
        reply
    };
    let limit = inner.config.connect_timeout + inner.config.response_timeout;
    matches!(
        tokio::time::timeout(limit, ping).await,
        Ok(Ok(Value::SimpleString(_)
            | Value::Okay
            | Value::BulkString(_)))
    )
}

pub(super) fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[').trim_end_matches(']'),
        port.parse().ok()?,
    ))
}

fn parse_cluster_slots(value: &Value) -> Option<Vec<SlotRange>> {
    let Value::Array(rows) = value else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut ranges = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Array(items) = row else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), Value::Array(master), ..] = items.as_slice()
        else {
            return None;
        };
        let host = master.first().and_then(text)?;
        let Some(Value::Int(port)) = master.get(1) else {
            return None;
        };
        ranges.push(SlotRange {
            start: u16::try_from(*start).ok()?,
            end: u16::try_from(*end).ok()?,
            master: Arc::from(format!("{host}:{port}")),
        });
    }
    ranges.sort_by_key(|r| r.start);
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn slot_map_parses_and_follows_moved() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
        ]);
        let mut slots = parse_cluster_slots(&reply).unwrap();
        assert_eq!(&*slots[0].master, "127.0.0.1:7000");
        assert_eq!(&*range_of(&slots, 5460).unwrap().master, "127.0.0.1:7000");
        assert_eq!(&*range_of(&slots, 5461).unwrap().master, "127.0.0.1:7001");
        set_slot_owner(&mut slots, 6000, "127.0.0.1:7002");
        let owners: Vec<(u16, u16, &str)> =
            slots.iter().map(|r| (r.start, r.end, &*r.master)).collect();
        assert_eq!(
            owners,
            vec![
                (0, 5460, "127.0.0.1:7000"),
                (5461, 5999, "127.0.0.1:7001"),
                (6000, 6000, "127.0.0.1:7002"),
                (6001, 16383, "127.0.0.1:7001"),
            ]
        );
        assert!(parse_cluster_slots(&Value::Nil).is_none());
    }

    #[test]
    fn down_nodes_are_forgotten_once_they_own_no_slot() {
        let range = |start, end, master: &str| SlotRange {
            start,
            end,
            master: Arc::from(master),
        };
        let topology = Topology::new();
        topology.install(vec![range(0, 16383, "a:1")]);
        let mut epochs = topology.epoch.subscribe();
        epochs.mark_unchanged();
        assert!(!topology.is_down("a:1"));
        topology.mark_down("a:1");
        assert!(topology.is_down("a:1"));
        assert!(epochs.has_changed().unwrap());
        epochs.mark_unchanged();
        // The same map again: nothing changes, the node stays down.
        topology.install(vec![range(0, 16383, "a:1")]);
        assert!(!epochs.has_changed().unwrap());
        assert!(topology.is_down("a:1"));
        // A failover: the slots move, the dead node is forgotten, waiters wake up.
        topology.install(vec![range(0, 16383, "b:2")]);
        assert!(epochs.has_changed().unwrap());
        assert!(!topology.is_down("a:1"));
        assert_eq!(topology.master_of(42).as_deref(), Some("b:2"));
        // A MOVED moves one slot at once.
        topology.note_moved(42, "c:3");
        assert_eq!(topology.master_of(42).as_deref(), Some("c:3"));
        assert_eq!(topology.master_of(43).as_deref(), Some("b:2"));
    }

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
