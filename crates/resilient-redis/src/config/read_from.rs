//! Where read-only commands go: [`ReadFrom`], and the zones replicas are in.

use std::{collections::HashMap, sync::Arc};

/// Where read-only commands go, on a Sentinel deployment or a Redis Cluster.
///
/// Only commands the command table marks read-only (and pipelines made only of them) are
/// routed; writes, blocking commands, transactions and scripts other than `EVAL_RO` /
/// `EVALSHA_RO` / `FCALL_RO` always go to the master. Replicas replicate asynchronously: a
/// read from a replica may not see a write the client just made.
///
/// | mode | master up | master down (until the new one is known) |
/// |---|---|---|
/// | `Master` | master | waits (within the deadline) |
/// | `MasterPreferred` | master | a live replica |
/// | `PreferReplica` | a live replica (the master if none) | a live replica |
/// | `Replica` | a live replica (waits if none) | a live replica |
/// | `Nearest` | the live node (master or replica) with the lowest measured round trip | the nearest live replica |
/// | `Zone(z)` | a live replica in zone `z`, else another live replica, else the master | a live replica |
///
/// A replica is *live* while the client has a connection to it and has not seen it fail; a
/// read never waits on a dead replica while another copy answers. On a Cluster, replicas are
/// learned from the slot map and their connections send `READONLY`. A node's zone comes from
/// [`ClientConfig::zones`](crate::ClientConfig::zones); nodes of unknown zone come last. With
/// [`ClientConfig::max_replica_lag`](crate::ClientConfig::max_replica_lag), a replica further
/// behind its master than that is not live for reads.
///
/// # Default
/// [`ReadFrom::Master`]: every command goes to the master. A single server has no replicas:
/// any other mode is a configuration error there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// Every command goes to the master.
    #[default]
    Master,
    /// Reads go to the master while it is reachable, and to a replica while it is not (from
    /// the loss of the master's connections until the new master is connected): reads go on
    /// through a failover, a little stale, and are fresh otherwise.
    MasterPreferred,
    /// Reads go to a replica when one is connected, to the master otherwise. Reads go on
    /// during a failover as long as a replica answers.
    PreferReplica,
    /// Reads go only to replicas; they wait (up to their deadline) for one when none is
    /// connected.
    Replica,
    /// Reads go to the node, master or replica, with the lowest round trip the client measures
    /// (every 250 ms, in the background); nodes within a quarter of the lowest (plus 50 µs)
    /// count as equally near and take turns. On Sentinel, the replica connections go to the
    /// replica that answered fastest when they were opened.
    Nearest,
    /// Zone affinity (the caller's availability zone, to keep reads off cross-zone links):
    /// reads go to a live replica in this zone, else to a live replica in another zone (known
    /// zones before unknown ones), else to the master.
    Zone(Arc<str>),
}

impl ReadFrom {
    /// Parses `master`, `master-preferred`, `replica-preferred` (or `prefer-replica`),
    /// `replica`, `nearest` or `zone:NAME`.
    ///
    /// ```
    /// use resilient_redis::ReadFrom;
    /// assert_eq!(ReadFrom::parse("master-preferred"), Some(ReadFrom::MasterPreferred));
    /// assert_eq!(ReadFrom::parse("replica-preferred"), Some(ReadFrom::PreferReplica));
    /// assert_eq!(ReadFrom::parse("zone:eu-west-1a"), Some(ReadFrom::Zone("eu-west-1a".into())));
    /// assert_eq!(ReadFrom::parse("zone:"), None);
    /// assert_eq!(ReadFrom::parse("slave"), None);
    /// ```
    pub fn parse(s: &str) -> Option<ReadFrom> {
        match s.trim() {
            "master" => Some(ReadFrom::Master),
            "master-preferred" => Some(ReadFrom::MasterPreferred),
            "replica-preferred" | "prefer-replica" => Some(ReadFrom::PreferReplica),
            "replica" => Some(ReadFrom::Replica),
            "nearest" => Some(ReadFrom::Nearest),
            other => {
                let zone = other.strip_prefix("zone:")?.trim();
                (!zone.is_empty()).then(|| ReadFrom::Zone(zone.into()))
            }
        }
    }

    /// The spellings [`ReadFrom::parse`] accepts, for error messages.
    pub const EXPECTED: &'static str =
        "master, master-preferred, replica-preferred, replica, nearest or zone:NAME";

    /// Parses a zone map for [`ClientConfig::zones`](crate::ClientConfig::zones): `NODE=ZONE`
    /// pairs separated by commas, `NODE` as `host:port` or a cluster node id.
    ///
    /// ```
    /// let zones = resilient_redis::ReadFrom::parse_zones("10.0.0.5:6379=eu-west-1a, 10.0.0.6:6379=eu-west-1b")?;
    /// assert_eq!(zones["10.0.0.6:6379"], "eu-west-1b");
    /// assert!(resilient_redis::ReadFrom::parse_zones("10.0.0.5:6379").is_err());
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the malformed pair.
    pub fn parse_zones(s: &str) -> Result<HashMap<String, String>, crate::Error> {
        let mut zones = HashMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (node, zone) = pair
                .split_once('=')
                .map(|(n, z)| (n.trim(), z.trim()))
                .filter(|(n, z)| !n.is_empty() && !z.is_empty())
                .ok_or_else(|| {
                    crate::Error::config(format!(
                        "zone map entry {pair:?}: expected host:port=ZONE or NODE_ID=ZONE"
                    ))
                })?;
            zones.insert(node.to_owned(), zone.to_owned());
        }
        Ok(zones)
    }

    /// Whether some reads may go elsewhere than the master.
    #[inline]
    pub(crate) fn uses_replicas(&self) -> bool {
        *self != ReadFrom::Master
    }
}

/// `master`, `master-preferred`, `replica-preferred`, `replica`, `nearest` or `zone:NAME`: what
/// [`ReadFrom::parse`] reads back.
impl std::fmt::Display for ReadFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFrom::Master => f.write_str("master"),
            ReadFrom::MasterPreferred => f.write_str("master-preferred"),
            ReadFrom::PreferReplica => f.write_str("replica-preferred"),
            ReadFrom::Replica => f.write_str("replica"),
            ReadFrom::Nearest => f.write_str("nearest"),
            ReadFrom::Zone(zone) => write!(f, "zone:{zone}"),
        }
    }
}

/// How near a node is to the caller, for [`ReadFrom::Zone`]: 0 in the caller's zone, 1 in
/// another known zone, 2 in no known zone. `zones` maps `host:port` to a zone.
pub(crate) fn zone_rank(zones: &HashMap<String, String>, mine: &str, addr: &str) -> u8 {
    match zones.get(addr) {
        Some(z) if z == mine => 0,
        Some(_) => 1,
        None => 2,
    }
}

/// Of `n` candidates, the usable one (`usable`) of the lowest `rank`, looking from `first` on
/// (so that successive calls turn over the candidates of equal rank).
pub(crate) fn nearest<T>(
    n: usize,
    first: usize,
    rank: impl Fn(usize) -> u8,
    usable: impl Fn(usize) -> Option<T>,
) -> Option<T> {
    let mut best: Option<(u8, T)> = None;
    for i in (0..n).map(|i| (first + i) % n) {
        let rank = rank(i);
        if best.as_ref().is_some_and(|(b, _)| *b <= rank) {
            continue;
        }
        if let Some(found) = usable(i) {
            best = Some((rank, found));
            if rank == 0 {
                break;
            }
        }
    }
    best.map(|(_, found)| found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_back_as_they_print() {
        for mode in [
            ReadFrom::Master,
            ReadFrom::MasterPreferred,
            ReadFrom::PreferReplica,
            ReadFrom::Replica,
            ReadFrom::Nearest,
            ReadFrom::Zone("eu-west-1a".into()),
        ] {
            assert_eq!(ReadFrom::parse(&mode.to_string()), Some(mode));
        }
    }

    #[test]
    fn zones_rank_the_callers_first_and_unknown_last() {
        let zones = ReadFrom::parse_zones("a:1=z1, b:2 = z2").unwrap();
        assert_eq!(zone_rank(&zones, "z1", "a:1"), 0);
        assert_eq!(zone_rank(&zones, "z1", "b:2"), 1);
        assert_eq!(zone_rank(&zones, "z1", "c:3"), 2);
        assert!(ReadFrom::parse_zones("a:1").is_err());
        assert!(ReadFrom::parse_zones("a:1=").is_err());
        assert!(ReadFrom::parse_zones("").unwrap().is_empty());
    }

    #[test]
    fn the_nearest_usable_candidate_wins_and_equals_take_turns() {
        // Ranks: 0 = the caller's zone, 1 = another zone, 2 = unknown.
        let ranks = [2, 1, 0, 0];
        let all = |i: usize| Some(i);
        let pick = |first, usable: &dyn Fn(usize) -> Option<usize>| {
            nearest(4, first, |i| ranks[i], usable)
        };
        assert_eq!(pick(0, &all), Some(2));
        assert_eq!(pick(3, &all), Some(3));
        assert_eq!(pick(1, &all), Some(2));
        // The caller's zone is dead: another known zone before an unknown one.
        let far = |i: usize| (ranks[i] != 0).then_some(i);
        assert_eq!(pick(0, &far), Some(1));
        assert_eq!(pick(2, &far), Some(1));
        // Only an unknown zone is left.
        assert_eq!(pick(2, &|i: usize| (i == 0).then_some(i)), Some(0));
        assert_eq!(pick(2, &|_| None), None);
    }
}
