//! Admission of an attempt to a node, the same for every topology: the node's adaptive throttle
//! and circuit breaker, right before sending; and what a refusal for overload teaches them.
//!
//! The throttle costs one relaxed load while the server accepts everything: a single server's
//! throttle works on the client's own counts (`Inner::throttle_totals`); a cluster node
//! counts its attempts (one relaxed add).

use std::sync::atomic::Ordering;

use resilience::{BreakerPermit, Classification, ThrottleTotals};
use tokio::time::Instant;

use super::{Handle, Inner};
use crate::{
    connection::Lease,
    error::{Error, ErrorKind, Outcome},
    retry::{AttemptError, throttle_admit},
    routing::Node,
};

impl Handle {
    /// The node's adaptive throttle and circuit breaker admit an attempt at `now` (a clock
    /// reading the caller has: the request path reads the clock once per call) or refuse it,
    /// sending nothing. The permit is given back with [`settle_permit`].
    #[inline]
    pub(super) fn admit_to<'n>(
        &self,
        node: &'n Node,
        now: Instant,
    ) -> Result<Option<BreakerPermit<'n>>, AttemptError> {
        if let Some(t) = &node.throttle {
            if t.throttle.is_engaged() {
                self.throttle_engaged(node)?;
            }
            if node.is_one_of_many() {
                // A cluster node counts its own attempts; a single server's are the client's.
                t.attempts.fetch_add(1, Ordering::Relaxed);
            }
        }
        match &node.breaker {
            Some(b) => b.try_acquire_at(now).map(Some).map_err(|open| AttemptError {
                error: Error::new(
                    ErrorKind::BreakerOpen,
                    Outcome::Failed,
                    format!(
                        "circuit breaker {}open after repeated server failures; next probe in {} ms",
                        node.label(),
                        open.retry_in.as_millis()
                    ),
                )
                .with_retry_in(open.retry_in),
                class: Classification::fail(),
                reply: None,
            }),
            None => Ok(None),
        }
    }

    /// [`Handle::admit_to`] for an attempt on `lease`: one on a replica connection (Sentinel
    /// reads) is not the master's to admit: its breaker and throttle count the master's
    /// failures, and a read must go on on the replicas while the master is down. A cluster
    /// replica (`to_replica`) is a node of its own, admitted by its own breaker. Either is
    /// counted as a replica read.
    #[inline]
    pub(super) fn admit_lease<'n>(
        &self,
        node: &'n Node,
        lease: &Lease,
        now: Instant,
        to_replica: bool,
    ) -> Result<Option<BreakerPermit<'n>>, AttemptError> {
        let master_lease = node.pool.is_master_lease(lease);
        if to_replica || !master_lease {
            self.count_replica_read();
        }
        if master_lease {
            self.admit_to(node, now)
        } else {
            Ok(None)
        }
    }

    /// Counts a read attempt sent to a replica.
    #[cold]
    pub(super) fn count_replica_read(&self) {
        self.inner
            .stats
            .replica_reads
            .fetch_add(1, Ordering::Relaxed);
    }

    #[cold]
    fn throttle_engaged(&self, node: &Node) -> Result<(), AttemptError> {
        let Some(t) = &node.throttle else {
            return Ok(());
        };
        throttle_admit(
            &t.throttle,
            || self.inner.throttle_totals(node),
            &self.inner.throttle_rng,
            &t.rejected,
        )
        .inspect_err(|_| {
            self.inner
                .stats
                .rejected_locally
                .fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Records an overload refusal from `node` (`THROTTLED`, `BUSY`, `LOADING`, a `RetryAfter`
    /// rule).
    #[cold]
    pub(super) fn refused_by(&self, node: &Node) {
        self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = &node.throttle {
            if node.is_one_of_many() {
                // A single server's throttle reads the client's count, just bumped.
                t.refused.fetch_add(1, Ordering::Relaxed);
            }
            t.throttle.refused_at(Instant::now());
        }
    }
}

/// Gives the breaker its verdict on an admitted attempt: a success, a failure for the server's
/// fault, or neither.
#[inline]
pub(super) fn settle_permit<T>(
    permit: Option<BreakerPermit<'_>>,
    result: &Result<T, AttemptError>,
) {
    let Some(permit) = permit else { return };
    match result {
        Ok(_) => permit.success(),
        Err(e) if e.class.server_fault => permit.failure(),
        Err(_) => drop(permit),
    }
}

impl Inner {
    /// The totals `node`'s adaptive throttle works on: every attempt sent or rejected locally is
    /// a request; every attempt not refused for overload is an accept. A single server's are the
    /// client's own counters (kept anyway: the healthy path pays nothing more); a cluster node
    /// keeps its own.
    pub(super) fn throttle_totals(&self, node: &Node) -> ThrottleTotals {
        match &node.throttle {
            Some(t) if node.is_one_of_many() => t.totals(),
            _ => {
                let s = &self.stats;
                let attempts = s.attempts.get();
                ThrottleTotals {
                    requests: attempts + s.rejected_locally.load(Ordering::Relaxed),
                    accepts: attempts.saturating_sub(s.refused.load(Ordering::Relaxed)),
                }
            }
        }
    }
}
