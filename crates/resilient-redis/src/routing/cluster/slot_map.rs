//! The client's slot map: each range's master and replicas (from `CLUSTER SHARDS` or `CLUSTER
//! SLOTS`, parsed in [`super::shards`]), `MOVED` applied at once, and the nodes known to be
//! down. (Refreshing it is [`super::refresh`]'s; a key's slot is in [`crate::commands`].)

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::sync::{Notify, watch};

/// Node addresses (`host:port`), shared between ranges and readers.
pub(super) type Addrs = Arc<[Arc<str>]>;

/// A range of slots, its master and the replicas that serve reads (`host:port` each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotRange {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) master: Arc<str>,
    pub(super) replicas: Addrs,
}

/// No replicas.
pub(super) fn no_replicas() -> Addrs {
    Arc::from([])
}

/// The client's view of the cluster: slot owners, nodes known to be down, and the refresher's
/// wake-up.
pub(crate) struct Topology {
    /// Sorted, non-overlapping ranges.
    slots: RwLock<Vec<SlotRange>>,
    /// Nodes that failed (connection lost or refused), until they answer again or leave the map.
    down: Mutex<HashSet<String>>,
    /// `down.len()`, read without the lock on every call.
    down_count: AtomicUsize,
    /// Bumped on every change of `slots` or `down`; waiters watch it.
    pub(crate) epoch: watch::Sender<u64>,
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

    /// The master and replicas of `slot`.
    pub(super) fn shard_of(&self, slot: u16) -> Option<(Arc<str>, Addrs)> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        range_of(&slots, slot).map(|r| (r.master.clone(), r.replicas.clone()))
    }

    pub(super) fn has_master(&self, slot: u16) -> bool {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        range_of(&slots, slot).is_some()
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

    pub(crate) fn request_refresh(&self) {
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

    /// Installs a fresh map; forgets down nodes that are no longer in it. Slots the fresh map
    /// leaves out keep their owner and replicas (a master flagged failing drops out of `CLUSTER
    /// SHARDS` until its replica takes over; its replicas still serve reads meanwhile).
    pub(super) fn install(&self, fresh: Vec<SlotRange>) {
        let changed = {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            let fresh = fill_gaps(fresh, &slots);
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
            down.retain(|n| slots.iter().any(|r| r.has(n)));
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

    pub(super) fn mark_up(&self, node: &str) {
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

    /// The masters of the slot map.
    pub(super) fn masters(&self) -> Vec<Arc<str>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut masters: Vec<Arc<str>> = slots.iter().map(|r| r.master.clone()).collect();
        masters.sort();
        masters.dedup();
        masters
    }

    /// Each master of the slot map with its replicas (those of its first range).
    pub(super) fn shards(&self) -> Vec<(Arc<str>, Addrs)> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut shards: Vec<(Arc<str>, Addrs)> = Vec::new();
        for range in slots.iter() {
            if !shards.iter().any(|(m, _)| *m == range.master) {
                shards.push((range.master.clone(), range.replicas.clone()));
            }
        }
        shards
    }

    /// The replicas of the slot map.
    pub(super) fn replicas(&self) -> Vec<Arc<str>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut replicas: Vec<Arc<str>> = slots
            .iter()
            .flat_map(|r| r.replicas.iter().cloned())
            .collect();
        replicas.sort();
        replicas.dedup();
        replicas
    }

    pub(super) fn down_nodes(&self) -> Vec<String> {
        lock(&self.down).iter().cloned().collect()
    }
}

impl SlotRange {
    /// Whether `node` is the range's master or one of its replicas.
    fn has(&self, node: &str) -> bool {
        &*self.master == node || self.replicas.iter().any(|r| &**r == node)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn range_of(slots: &[SlotRange], slot: u16) -> Option<&SlotRange> {
    let i = slots.partition_point(|r| r.end < slot);
    slots.get(i).filter(|r| r.start <= slot && slot <= r.end)
}

/// `fresh` (sorted, non-overlapping) with the slots it leaves out taken from `old`.
fn fill_gaps(fresh: Vec<SlotRange>, old: &[SlotRange]) -> Vec<SlotRange> {
    let covered: u32 = fresh.iter().map(|r| u32::from(r.end - r.start) + 1).sum();
    if covered == 16384 || old.is_empty() {
        return fresh;
    }
    let mut merged = fresh.clone();
    for range in old {
        // The parts of `range` no fresh range covers.
        let mut start = range.start;
        for f in fresh
            .iter()
            .filter(|f| f.end >= range.start && f.start <= range.end)
        {
            if f.start > start {
                merged.push(SlotRange {
                    start,
                    end: f.start - 1,
                    ..range.clone()
                });
            }
            start = start.max(f.end.saturating_add(1));
        }
        if start <= range.end {
            merged.push(SlotRange {
                start,
                ..range.clone()
            });
        }
    }
    merged.sort_by_key(|r| r.start);
    merged
}

/// Gives `slot` to `addr`, splitting its range.
fn set_slot_owner(slots: &mut Vec<SlotRange>, slot: u16, addr: &str) {
    let i = slots.partition_point(|r| r.end < slot);
    // (Its replicas are learned at the next refresh.)
    let new = SlotRange {
        start: slot,
        end: slot,
        master: Arc::from(addr),
        replicas: no_replicas(),
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

#[cfg(test)]
mod tests {
    use super::super::shards::parse_cluster_slots;
    use super::*;
    use redis::Value;

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
        assert!(slots[0].replicas.is_empty());
        assert_eq!(&*slots[1].replicas, &[Arc::from("127.0.0.1:7004")]);
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
    fn slots_a_fresh_map_leaves_out_keep_their_owner() {
        let range = |start, end, master: &str| SlotRange {
            start,
            end,
            master: Arc::from(master),
            replicas: no_replicas(),
        };
        let old = vec![
            range(0, 5460, "a:1"),
            range(5461, 10922, "b:1"),
            range(10923, 16383, "c:1"),
        ];
        // The middle shard's master is failing: it is left out.
        let fresh = vec![range(0, 5460, "a:1"), range(10923, 16383, "c:1")];
        assert_eq!(fill_gaps(fresh, &old), old);
        // A range split by a migration: only the gap comes from the old map.
        let fresh = vec![range(0, 100, "d:1"), range(200, 16383, "c:1")];
        let rows: Vec<(u16, u16, String)> = fill_gaps(fresh, &old)
            .into_iter()
            .map(|r| (r.start, r.end, r.master.to_string()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (0, 100, "d:1".into()),
                (101, 199, "a:1".into()),
                (200, 16383, "c:1".into())
            ]
        );
        // A full map replaces the old one.
        let full = vec![range(0, 16383, "e:1")];
        assert_eq!(fill_gaps(full.clone(), &old), full);
    }

    #[test]
    fn down_nodes_are_forgotten_once_they_own_no_slot() {
        let range = |start, end, master: &str| SlotRange {
            start,
            end,
            master: Arc::from(master),
            replicas: no_replicas(),
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
}
