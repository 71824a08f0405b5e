//! What a client counts: calls, attempts, outcomes.

use std::sync::atomic::AtomicU64;

use crate::striped::StripedCounter;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) calls: StripedCounter,
    pub(super) attempts: StripedCounter,
    pub(super) retries: AtomicU64,
    pub(super) ambiguous: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) rejected_locally: AtomicU64,
    /// Overload refusals from the server (`THROTTLED`, `BUSY`, `LOADING`, ...).
    pub(super) refused: AtomicU64,
    /// Durable writes whose `WAIT` fell short.
    pub(super) unconfirmed: AtomicU64,
    /// Durable writes answered after their master was replaced.
    pub(super) deposed_replies: AtomicU64,
    /// `WAIT` commands sent for durable writes.
    pub(super) replica_waits: AtomicU64,
    /// Transaction runs whose `EXEC` found a watched key changed.
    pub(super) conflicts: AtomicU64,
    /// Attempts sent on a replica connection.
    pub(super) replica_reads: AtomicU64,
}

/// Cumulative counters of a client (shared by its clones) since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls made (commands and pipelines).
    pub calls: u64,
    /// Attempts sent to the server, retries included (a call that fails while waiting for a
    /// connection, or is rejected locally, makes none).
    pub attempts: u64,
    /// Attempts sent after the first of a call.
    pub retries: u64,
    /// Calls that failed with an ambiguous outcome.
    pub ambiguous: u64,
    /// Calls that failed with a definite outcome.
    pub failed: u64,
    /// Successful reconnections.
    pub reconnects: u64,
    /// (Single server) Times the server behind the address was found no longer a primary
    /// (`READONLY`, `ROLE`; see [`ClientConfig::require_primary`](crate::ClientConfig::require_primary)):
    /// each replaced every connection opened before.
    pub demotions: u64,
    /// Calls rejected locally by adaptive throttling (never sent; also counted in `failed`).
    pub rejected_locally: u64,
    /// Attempts the server refused for overload (`THROTTLED`, `BUSY`, `LOADING`, ...).
    pub refused: u64,
    /// (Cluster) `MOVED` and `ASK` redirects followed (no backoff, no budget).
    pub redirects: u64,
    /// (Cluster) Times a call waited for the node of its slot to be replaced or come back, or
    /// for a reconfiguring cluster (`CLUSTERDOWN`, `TRYAGAIN`).
    pub waits: u64,
    /// (Cluster) Slot-map refreshes done.
    pub refreshes: u64,
    /// (Cluster) redis-rs cluster connections (keyless calls) replaced because they stopped
    /// answering.
    pub replaced: u64,
    /// ([`Durability::Replicated`](crate::Durability::Replicated)) Times a write applied by the
    /// master was confirmed by too few replicas in time: a write safe to repeat waits again
    /// (one write may count several times), others are returned as
    /// [`ErrorKind::Unconfirmed`](crate::ErrorKind::Unconfirmed).
    pub unconfirmed: u64,
    /// ([`Durability::Replicated`](crate::Durability::Replicated)) Write attempts answered after
    /// the client learned their master had been replaced: not counted as acknowledged.
    pub deposed_replies: u64,
    /// ([`Durability::Replicated`](crate::Durability::Replicated)) `WAIT` commands sent: one
    /// confirms every durable write before it on its connection, so under load there are far
    /// fewer than writes.
    pub replica_waits: u64,
    /// Runs of [`Client::transaction`](crate::Client::transaction) whose `EXEC` found a watched
    /// key changed (each was run again, or the call ended as
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict)).
    pub conflicts: u64,
    /// Read attempts sent to a replica ([`ReadFrom`](crate::ReadFrom) other than `Master`);
    /// the others went to the master.
    pub replica_reads: u64,
}
