//! Finding a connection for a call: the cached one if still live, one from the pool without
//! waiting (the fast path), or waiting for the background reconnection within the deadline.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio::time::Instant;

use super::{Lease, Pool, probe::rtt_rank, unavailable};
use crate::{
    config::ReadFrom,
    error::{Error, ErrorKind, Outcome},
};

impl Pool {
    /// A live master connection.
    pub(super) fn try_lease(&self) -> Option<Lease> {
        self.try_lease_in(0, self.masters)
    }

    /// A live connection among the `n` slots from `first`, round-robin.
    fn try_lease_in(&self, first: usize, n: usize) -> Option<Lease> {
        if n == 0 {
            return None;
        }
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).find_map(|i| self.lease_slot(first + (start + i) % n))
    }

    /// The live connection of `slot`, unless it is a replica's too far behind.
    #[inline]
    fn lease_slot(&self, slot: usize) -> Option<Lease> {
        if self.slot_lagging(slot) {
            return None;
        }
        let live = self.slots[slot].live.read().expect("slot lock");
        live.as_ref().map(|live| Lease {
            conn: live.conn.clone(),
            slot,
            generation: live.generation,
        })
    }

    /// A live connection to the nearest node, master or replica ([`ReadFrom::Nearest`]):
    /// among those of the lowest measured round trip, round-robin.
    fn try_lease_nearest(&self) -> Option<Lease> {
        let n = self.slots.len();
        let lowest = (0..n)
            .filter(|&s| {
                self.slots[s].current.load(Ordering::Relaxed) != 0 && !self.slot_lagging(s)
            })
            .filter_map(|s| self.slot_rtt_us(s))
            .min();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        crate::config::nearest(
            n,
            first,
            |s| rtt_rank(self.slot_rtt_us(s), lowest),
            |s| self.lease_slot(s),
        )
    }

    /// A live replica connection, or a master one if `or_master`.
    fn try_lease_read(&self, or_master: bool) -> Option<Lease> {
        self.try_lease_in(self.masters, self.slots.len() - self.masters)
            .or_else(|| if or_master { self.try_lease() } else { None })
    }

    /// A live master connection, or a replica one while there is none.
    fn try_lease_master_first(&self) -> Option<Lease> {
        self.try_lease().or_else(|| self.try_lease_read(false))
    }

    /// Whether reads go to a live replica connection while the master is unreachable (a read
    /// then does not fail fast in an outage of the master).
    pub(crate) fn replicas_serve_reads(&self) -> bool {
        !matches!(self.read_from, ReadFrom::Master) && self.try_lease_read(false).is_some()
    }

    /// Whether `lease` is a master connection (a replica one never carries a write).
    pub(crate) fn is_master_lease(&self, lease: &Lease) -> bool {
        lease.slot < self.masters
    }

    /// A connection for a command: for a read-only command, the one [`ReadFrom`] picks among
    /// the master's and the replicas'; a master one otherwise (see [`Pool::acquire`]).
    pub(crate) async fn acquire_for(
        &self,
        read_only: bool,
        deadline: Option<Instant>,
    ) -> Result<Lease, Error> {
        match self.read_from {
            ReadFrom::MasterPreferred if read_only => {
                self.acquire_with(deadline, Pool::try_lease_master_first)
                    .await
            }
            ReadFrom::PreferReplica | ReadFrom::Zone(_) if read_only => {
                self.acquire_with(deadline, |p| p.try_lease_read(true))
                    .await
            }
            ReadFrom::Replica if read_only => {
                self.acquire_with(deadline, |p| p.try_lease_read(false))
                    .await
            }
            ReadFrom::Nearest if read_only => {
                self.acquire_with(deadline, Pool::try_lease_nearest).await
            }
            _ => self.acquire(deadline).await,
        }
    }

    /// The error for a call made while the server has been unreachable for longer than
    /// `unavailable_after`, found without a lock or a wait: the fail-fast path of an outage.
    #[inline]
    pub(crate) fn failing_fast(&self) -> Option<Error> {
        let since = self.down_since.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let down_for = self
            .origin
            .elapsed()
            .saturating_sub(Duration::from_nanos(since - 1));
        if down_for < self.unavailable_after {
            return None;
        }
        let down = self.down.read().expect("down lock");
        Some(unavailable(
            down_for,
            down.last_error.as_deref(),
            down.auth_rejected,
        ))
    }

    /// Whether `lease` is still the live connection of its slot (one atomic load).
    pub(crate) fn is_current(&self, lease: &Lease) -> bool {
        self.slots
            .get(lease.slot)
            .is_some_and(|s| s.current.load(Ordering::Acquire) == lease.generation)
    }

    /// Whether the pool has no live connection to the master (or the server) since a
    /// connection broke or could not be opened.
    pub(crate) fn is_down(&self) -> bool {
        self.down_since.load(Ordering::Relaxed) != 0
    }

    /// Whether read-only calls may go elsewhere than the master connections (replica routing);
    /// a cached master lease is then not used for them.
    pub(crate) fn routes_reads_elsewhere(&self) -> bool {
        !matches!(self.read_from, ReadFrom::Master)
    }

    /// The connection [`Pool::acquire_for`] would pick right now, without waiting. The request
    /// path tries this first so that its future stays small (the waiting path is boxed).
    pub(crate) fn try_acquire_for(&self, read_only: bool) -> Option<Lease> {
        match self.read_from {
            ReadFrom::MasterPreferred if read_only => self.try_lease_master_first(),
            ReadFrom::PreferReplica | ReadFrom::Zone(_) if read_only => self.try_lease_read(true),
            ReadFrom::Replica if read_only => self.try_lease_read(false),
            ReadFrom::Nearest if read_only => self.try_lease_nearest(),
            _ => self.try_lease(),
        }
    }

    /// A live master connection, waiting up to `deadline` for a reconnection when there is none.
    pub(crate) async fn acquire(&self, deadline: Option<Instant>) -> Result<Lease, Error> {
        if let Some(lease) = self.try_lease() {
            return Ok(lease);
        }
        self.acquire_with(deadline, Pool::try_lease).await
    }

    /// The waiting part of [`Pool::acquire`], with `pick` choosing among live connections:
    /// counted in the waiting gauge and the call's span while it waits.
    async fn acquire_with(
        &self,
        deadline: Option<Instant>,
        pick: impl Fn(&Pool) -> Option<Lease>,
    ) -> Result<Lease, Error> {
        if let Some(lease) = pick(self) {
            return Ok(lease);
        }
        struct Waiting<'a>(&'a AtomicUsize, Instant);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
                crate::observe::call::note_wait(self.1.elapsed());
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting, Instant::now());
        self.wait_with(deadline, pick).await
    }

    async fn wait_with(
        &self,
        deadline: Option<Instant>,
        pick: impl Fn(&Pool) -> Option<Lease>,
    ) -> Result<Lease, Error> {
        loop {
            // Subscribe before looking again, so a reconnection in between is not missed.
            let mut ready = self.ready.subscribe();
            if let Some(lease) = pick(self) {
                return Ok(lease);
            }
            let (since, last_error, auth_rejected) = {
                let down = self.down.read().expect("down lock");
                (down.since, down.last_error.clone(), down.auth_rejected)
            };
            if let Some(since) = since
                && since.elapsed() >= self.unavailable_after
            {
                return Err(unavailable(
                    since.elapsed(),
                    last_error.as_deref(),
                    auth_rejected,
                ));
            }
            let last = last_error.unwrap_or_else(|| "no connection yet".to_owned());
            self.wake.notify_one();
            let changed = ready.changed();
            // Wait for a reconnection, up to the deadline, or until the outage has lasted
            // `unavailable_after` (then every waiting call fails fast too, not only new ones).
            let give_up_at = since.map(|s| s + self.unavailable_after);
            let wait_until = match (deadline, give_up_at) {
                (Some(d), Some(g)) => Some(d.min(g)),
                (d, g) => d.or(g),
            };
            let waited = match wait_until {
                Some(d) => tokio::time::timeout_at(d, changed).await.ok(),
                None => Some(changed.await),
            };
            if waited.is_none() && give_up_at.is_some() && wait_until == give_up_at {
                // The outage is now long: the check at the top of the loop fails the call.
                continue;
            }
            if waited.is_none() {
                // Read again: the reconnection that failed last may have ended while waiting.
                if self.down.read().expect("down lock").auth_rejected {
                    return Err(Error::new(
                        ErrorKind::Auth,
                        Outcome::Failed,
                        format!(
                            "no connection before the deadline: the server rejects the \
                             credentials (last error: {})",
                            self.last_error().unwrap_or(last)
                        ),
                    ));
                }
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    Outcome::Failed,
                    format!("no connection to the server before the deadline (last error: {last})"),
                ));
            }
        }
    }
}
