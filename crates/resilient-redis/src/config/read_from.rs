//! Where read-only commands go: [`ReadFrom`].

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
///
/// A replica is *live* while the client has a connection to it and has not seen it fail; a
/// read never waits on a dead replica while another copy answers. On a Cluster, replicas are
/// learned from the slot map and their connections send `READONLY`.
///
/// # Default
/// [`ReadFrom::Master`]: every command goes to the master. A single server has no replicas:
/// any other mode is a configuration error there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

impl ReadFrom {
    /// Parses `master`, `master-preferred`, `replica-preferred` (or `prefer-replica`) or
    /// `replica`.
    ///
    /// ```
    /// use resilient_redis::ReadFrom;
    /// assert_eq!(ReadFrom::parse("master-preferred"), Some(ReadFrom::MasterPreferred));
    /// assert_eq!(ReadFrom::parse("replica-preferred"), Some(ReadFrom::PreferReplica));
    /// assert_eq!(ReadFrom::parse("slave"), None);
    /// ```
    pub fn parse(s: &str) -> Option<ReadFrom> {
        match s.trim() {
            "master" => Some(ReadFrom::Master),
            "master-preferred" => Some(ReadFrom::MasterPreferred),
            "replica-preferred" | "prefer-replica" => Some(ReadFrom::PreferReplica),
            "replica" => Some(ReadFrom::Replica),
            _ => None,
        }
    }

    /// The spellings [`ReadFrom::parse`] accepts, for error messages.
    pub const EXPECTED: &'static str = "master, master-preferred, replica-preferred or replica";

    /// Whether some reads may go elsewhere than the master.
    #[inline]
    pub(crate) fn uses_replicas(self) -> bool {
        self != ReadFrom::Master
    }
}
