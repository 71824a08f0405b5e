//! The watcher: who owns each slot, and whether the topology serves, every 100 ms, seen from
//! the lab's own connections (never through the client under test).
//!
//! # Behavior
//! - Standalone and Sentinel have one owner of every slot: the server (through its proxy), or
//!   the master the sentinels name by majority. A cluster's owners are its `CLUSTER SLOTS`,
//!   asked of the first node that answers.
//! - *Serving*: every owner answers `PING` within 200 ms on the address clients use; with
//!   `--durability replicated`, also has a replica and reports every attached replica online
//!   (`INFO replication`): a durable write waits for every replica the master has, so while one
//!   resyncs (a demoted master, a replica pointed at a new master) none can be confirmed. The
//!   checker measures each fault's recovery against the time the topology served again, so a
//!   slow failover or resync of the servers is not counted against the client.
//! - Only changes are kept: a slot-owner change is a failover or a migration (the checker tells
//!   them apart by the nemesis's log). With Sentinel, a change is the `+switch-master`
//!   announcement (what clients follow), not the sentinels' answer to
//!   `GET-MASTER-ADDR-BY-NAME`, which names the promoted replica while the failover is still
//!   going on and the old master still takes writes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use redis::aio::MultiplexedConnection;

use super::history::Clock;
use super::lab::Probe;

/// How often the watcher looks.
const EVERY: Duration = Duration::from_millis(100);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Slot ranges and their owner.
pub(crate) type Owners = Vec<(u16, u16, SocketAddr)>;

/// What the watcher saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watched {
    /// `(ms, owners)` at start and at every change.
    pub(crate) owners: Vec<(u64, Owners)>,
    /// `(ms, serving)` at start and at every change.
    pub(crate) serving: Vec<(u64, bool)>,
}

impl Watched {
    /// The owner of `slot` at `ms` (the last snapshot at or before it).
    pub(crate) fn owner_at(&self, slot: u16, ms: u64) -> Option<SocketAddr> {
        let snapshot = self.owners.iter().rev().find(|(at, _)| *at <= ms)?;
        owner(&snapshot.1, slot)
    }

    /// The times after `ms` at which `slot` changed owner.
    pub(crate) fn owner_changes_after(&self, slot: u16, ms: u64) -> Vec<u64> {
        let mut changes = Vec::new();
        // Before the first snapshot, the owner is the first one seen.
        let mut last = self
            .owner_at(slot, ms)
            .or_else(|| self.owners.first().and_then(|(_, o)| owner(o, slot)));
        for (at, owners) in self.owners.iter().filter(|(at, _)| *at > ms) {
            let now = owner(owners, slot);
            if now.is_some() && now != last {
                changes.push(*at);
                last = now;
            }
        }
        changes
    }

    /// The first time at or after `ms` the topology served.
    pub(crate) fn serving_from(&self, ms: u64) -> Option<u64> {
        let at_ms = self
            .serving
            .iter()
            .rev()
            .find(|(at, _)| *at <= ms)
            .is_some_and(|(_, s)| *s);
        if at_ms {
            return Some(ms);
        }
        self.serving
            .iter()
            .find(|(at, s)| *at > ms && *s)
            .map(|(at, _)| *at)
    }
}

fn owner(owners: &Owners, slot: u16) -> Option<SocketAddr> {
    owners
        .iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, addr)| *addr)
}

/// Watches until `stop`; gives what it saw.
pub(crate) async fn watch(
    probe: Probe,
    clock: Clock,
    stop: Arc<AtomicBool>,
    replicated: bool,
) -> Watched {
    let mut watched = Watched::default();
    let mut conns: HashMap<SocketAddr, MultiplexedConnection> = HashMap::new();
    let mut switches = match &probe {
        Probe::Sentinel { sentinels, .. } => Some(switch_announcements(sentinels).await),
        _ => None,
    };
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let at = clock.ms();
        let owners = owners(&probe, &mut conns).await;
        if let (Some(switches), Probe::Sentinel { name, .. }) = (&mut switches, &probe) {
            // The announced master is the owner; the polled answer only starts the record.
            while let Some(Some(message)) = switches.next().now_or_never() {
                let payload: String = message.get_payload().unwrap_or_default();
                let fields: Vec<&str> = payload.split_whitespace().collect();
                if let [switched, _, _, ip, port] = fields.as_slice()
                    && switched == name
                    && let Ok(addr) = format!("{ip}:{port}").parse::<SocketAddr>()
                {
                    let new = vec![(0, 16383, addr)];
                    if watched.owners.last().is_none_or(|(_, last)| *last != new) {
                        watched.owners.push((at, new));
                    }
                }
            }
            if watched.owners.is_empty()
                && let Some(owners) = &owners
            {
                watched.owners.push((at, owners.clone()));
            }
        }
        let mut serving = owners.as_ref().is_some_and(covers_all);
        if let Some(owners) = &owners {
            let masters: Vec<SocketAddr> = {
                let mut m: Vec<SocketAddr> = owners.iter().map(|(_, _, a)| *a).collect();
                m.sort();
                m.dedup();
                m
            };
            for master in masters {
                let answers = if replicated {
                    let mut info = redis::cmd("INFO");
                    info.arg("replication");
                    query::<String>(&mut conns, master, info)
                        .await
                        .is_some_and(|info| replicas_online(&info))
                } else {
                    query::<String>(&mut conns, master, redis::cmd("PING").clone())
                        .await
                        .is_some()
                };
                serving &= answers;
            }
            if switches.is_none() && watched.owners.last().is_none_or(|(_, last)| last != owners) {
                watched.owners.push((at, owners.clone()));
            }
        }
        if watched
            .serving
            .last()
            .is_none_or(|(_, last)| *last != serving)
        {
            watched.serving.push((at, serving));
        }
    }
    watched
}

/// `+switch-master` on every sentinel that accepts the subscription, merged.
async fn switch_announcements(
    sentinels: &[SocketAddr],
) -> futures::stream::SelectAll<std::pin::Pin<Box<dyn futures::Stream<Item = redis::Msg> + Send>>> {
    let mut streams = Vec::new();
    for sentinel in sentinels {
        let subscribed = async {
            let mut pubsub = redis::Client::open(format!("redis://{sentinel}"))
                .ok()?
                .get_async_pubsub()
                .await
                .ok()?;
            pubsub.subscribe("+switch-master").await.ok()?;
            Some(pubsub.into_on_message())
        };
        if let Some(stream) = subscribed.await {
            let boxed: std::pin::Pin<Box<dyn futures::Stream<Item = redis::Msg> + Send>> =
                Box::pin(stream);
            streams.push(boxed);
        }
    }
    futures::stream::select_all(streams)
}

fn covers_all(owners: &Owners) -> bool {
    let mut next = 0u32;
    let mut sorted = owners.clone();
    sorted.sort();
    for (start, end, _) in sorted {
        if u32::from(start) > next {
            return false;
        }
        next = next.max(u32::from(end) + 1);
    }
    next >= 16384
}

async fn owners(
    probe: &Probe,
    conns: &mut HashMap<SocketAddr, MultiplexedConnection>,
) -> Option<Owners> {
    match probe {
        Probe::Standalone(addr) => Some(vec![(0, 16383, *addr)]),
        Probe::Sentinel { sentinels, name } => {
            let mut votes: BTreeMap<SocketAddr, usize> = BTreeMap::new();
            for &sentinel in sentinels {
                let mut cmd = redis::cmd("SENTINEL");
                cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(name);
                if let Some(Some((ip, port))) =
                    query::<Option<(String, u16)>>(conns, sentinel, cmd).await
                    && let Ok(ip) = ip.parse::<std::net::IpAddr>()
                {
                    *votes.entry(SocketAddr::new(ip, port)).or_default() += 1;
                }
            }
            let (master, count) = votes.into_iter().max_by_key(|&(_, n)| n)?;
            (count * 2 > sentinels.len()).then(|| vec![(0, 16383, master)])
        }
        Probe::Cluster(nodes) => {
            for &node in nodes {
                let slots: Option<Vec<redis::Value>> =
                    query(conns, node, redis::cmd("CLUSTER").arg("SLOTS").clone()).await;
                if let Some(slots) = slots {
                    let mut owners: Owners = slots.iter().filter_map(slot_row).collect();
                    owners.sort();
                    return Some(owners);
                }
            }
            None
        }
    }
}

/// One row of `CLUSTER SLOTS`: `[start, end, [ip, port, ...], ...]`.
fn slot_row(row: &redis::Value) -> Option<(u16, u16, SocketAddr)> {
    let redis::Value::Array(fields) = row else {
        return None;
    };
    let start: u16 = redis::from_redis_value_ref(fields.first()?).ok()?;
    let end: u16 = redis::from_redis_value_ref(fields.get(1)?).ok()?;
    let redis::Value::Array(master) = fields.get(2)? else {
        return None;
    };
    let ip: String = redis::from_redis_value_ref(master.first()?).ok()?;
    let port: u16 = redis::from_redis_value_ref(master.get(1)?).ok()?;
    Some((start, end, SocketAddr::new(ip.parse().ok()?, port)))
}

/// Runs `cmd` on `addr` with a cached connection, within [`PROBE_TIMEOUT`]; `None` on any
/// failure (and the connection is dropped).
/// Whether a master's `INFO replication` shows at least one replica and every attached one
/// online (not still loading a full resync).
fn replicas_online(info: &str) -> bool {
    let mut replicas = 0;
    for line in info.lines() {
        if line.starts_with("slave")
            && line[5..].starts_with(|c: char| c.is_ascii_digit())
            && let Some((_, fields)) = line.split_once(':')
        {
            if !fields.split(',').any(|f| f == "state=online") {
                return false;
            }
            replicas += 1;
        }
    }
    replicas > 0
}

async fn query<T: redis::FromRedisValue>(
    conns: &mut HashMap<SocketAddr, MultiplexedConnection>,
    addr: SocketAddr,
    cmd: redis::Cmd,
) -> Option<T> {
    let attempt = async {
        let conn = match conns.entry(addr) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                redis::Client::open(format!("redis://{addr}"))
                    .ok()?
                    .get_multiplexed_async_connection()
                    .await
                    .ok()?,
            ),
        };
        cmd.query_async::<T>(conn).await.ok()
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Some(value)) => Some(value),
        _ => {
            conns.remove(&addr);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn durable_writes_need_every_attached_replica_online() {
        let online = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=10,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7002,state=online,offset=10,lag=1\r\n\
            slave_read_repl_offset:10\r\nmaster_repl_offset:10\r\n";
        assert!(replicas_online(online));
        let syncing = online.replace("port=7002,state=online", "port=7002,state=wait_bgsave");
        assert!(!replicas_online(&syncing));
        let alone =
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:10\r\n";
        assert!(!replicas_online(alone));
    }

    #[test]
    fn owner_changes_are_found_per_slot() {
        let watched = Watched {
            owners: vec![
                (0, vec![(0, 99, addr(1)), (100, 16383, addr(2))]),
                (500, vec![(0, 99, addr(3)), (100, 16383, addr(2))]),
                (900, vec![(0, 99, addr(3)), (100, 16383, addr(4))]),
            ],
            serving: vec![(0, true), (400, false), (600, true)],
        };
        assert_eq!(watched.owner_at(5, 499), Some(addr(1)));
        assert_eq!(watched.owner_changes_after(5, 100), vec![500]);
        assert_eq!(watched.owner_changes_after(200, 100), vec![900]);
        assert!(watched.owner_changes_after(5, 500).is_empty());
        // The first snapshot is not a change.
        let late_start = Watched {
            owners: vec![(20, vec![(0, 16383, addr(1))])],
            serving: vec![],
        };
        assert!(late_start.owner_changes_after(5, 0).is_empty());
        assert_eq!(watched.serving_from(100), Some(100));
        assert_eq!(watched.serving_from(450), Some(600));
        assert!(covers_all(&watched.owners[0].1));
        assert!(!covers_all(&vec![(0, 99, addr(1)), (101, 16383, addr(2))]));
    }
}
