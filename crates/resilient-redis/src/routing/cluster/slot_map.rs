//! The client's slot map: the masters of `CLUSTER SLOTS`, `MOVED` applied at once, and the nodes
//! known to be down. (Refreshing it is [`super::refresh`]'s; a key's slot is in
//! [`crate::commands`].)

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use redis::Value;
use tokio::sync::{Notify, watch};

/// One row of `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotRange {
    start: u16,
    end: u16,
    master: Arc<str>,
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

    /// Installs a fresh map; forgets down nodes that no longer own slots.
    pub(super) fn install(&self, fresh: Vec<SlotRange>) {
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

    pub(super) fn down_nodes(&self) -> Vec<String> {
        lock(&self.down).iter().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

pub(super) fn parse_cluster_slots(value: &Value) -> Option<Vec<SlotRange>> {
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
}
