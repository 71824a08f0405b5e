//! What the workloads record: each task's own log, merged only after the run (no lock on the
//! call path).
//!
//! # Behavior
//! - Times are milliseconds since the run started ([`Clock`]).
//! - Writes are recorded when acknowledged or ambiguous; a definite failure only counts (its
//!   value is never reused, so a failed write found in the final state is recognised as a value
//!   neither acknowledged nor ambiguous).
//! - An *outage* of a task starts at its first failed call and ends at its next success: the
//!   recovery after each fault is read from them.
//! - A call that outlives the client's deadline by more than [`LATE_SLACK`] is kept as *late*.

use std::time::Duration;

use resilient_redis::Outcome;
use serde::Serialize;
use tokio::time::Instant;

/// How much a call may outlive its deadline before it is an anomaly.
pub(crate) const LATE_SLACK: Duration = Duration::from_millis(100);

/// The run's clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub(crate) fn start() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Milliseconds since the start.
    pub(crate) fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The instant `ms` after the start.
    pub(crate) fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }
}

/// A write whose outcome was success or unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Write {
    /// The value written (an element, an item number, a register value).
    pub(crate) value: u64,
    /// When the call ended.
    pub(crate) at_ms: u64,
    /// Acknowledged (else ambiguous).
    pub(crate) acked: bool,
}

/// A register read: what the task read, and what it had written before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    /// The value read (0: the key did not exist).
    pub(crate) value: u64,
    /// The task's last acknowledged write when the read started, and when it was acknowledged.
    pub(crate) floor: Option<(u64, u64)>,
    /// When the read started.
    pub(crate) start_ms: u64,
    /// When its reply came: a read retried through a failover is served by whichever master
    /// holds the key by then.
    pub(crate) end_ms: u64,
}

/// A call that outlived its deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Late {
    /// The command.
    pub(crate) op: &'static str,
    /// When it started.
    pub(crate) start_ms: u64,
    /// How long it took.
    pub(crate) took_ms: u64,
}

/// One task's log.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskLog {
    /// Calls that succeeded.
    pub(crate) ok: u64,
    /// Calls that surely did nothing.
    pub(crate) failed: u64,
    /// Calls whose effect is unknown.
    pub(crate) ambiguous: u64,
    /// Writes acknowledged or ambiguous, in order.
    pub(crate) writes: Vec<Write>,
    /// Register reads.
    pub(crate) reads: Vec<Read>,
    /// `(first failure, next success)` in ms; the last one may still be open.
    pub(crate) outages: Vec<(u64, Option<u64>)>,
    /// Calls that outlived their deadline.
    pub(crate) late: Vec<Late>,
    /// The last failed call: what it was, when it started, how long it took and its error (a
    /// caller that never recovered is described by it).
    pub(crate) last_failure: Option<(Late, String)>,
}

impl TaskLog {
    /// Counts one call that ended at `end_ms` after starting at `start_ms`, with `outcome`
    /// (`None` for success); checks it against `limit`, the longest a call may take.
    pub(crate) fn call(
        &mut self,
        op: &'static str,
        start_ms: u64,
        end_ms: u64,
        outcome: Option<Outcome>,
        limit: Duration,
    ) {
        match outcome {
            None => {
                self.ok += 1;
                if let Some((_, end @ None)) = self.outages.last_mut() {
                    *end = Some(end_ms);
                }
            }
            Some(outcome) => {
                if outcome == Outcome::Failed {
                    self.failed += 1;
                } else {
                    self.ambiguous += 1;
                }
                if !matches!(self.outages.last(), Some((_, None))) {
                    self.outages.push((end_ms, None));
                }
            }
        }
        let took = end_ms.saturating_sub(start_ms);
        if took > (limit + LATE_SLACK).as_millis() as u64 {
            self.late.push(Late {
                op,
                start_ms,
                took_ms: took,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_open_at_a_failure_and_close_at_the_next_success() {
        let mut log = TaskLog::default();
        let limit = Duration::from_secs(5);
        log.call("SET", 0, 1, None, limit);
        log.call("SET", 1, 10, Some(Outcome::Failed), limit);
        log.call("SET", 10, 20, Some(Outcome::Ambiguous), limit);
        log.call("SET", 20, 30, None, limit);
        log.call("SET", 30, 40, Some(Outcome::Failed), limit);
        assert_eq!(log.outages, vec![(10, Some(30)), (40, None)]);
        assert_eq!((log.ok, log.failed, log.ambiguous), (2, 2, 1));
    }

    #[test]
    fn a_call_past_its_deadline_and_slack_is_late() {
        let mut log = TaskLog::default();
        let limit = Duration::from_millis(1000);
        log.call("GET", 0, 1100, None, limit);
        assert!(log.late.is_empty());
        log.call("GET", 0, 1101, None, limit);
        assert_eq!(log.late.len(), 1);
    }
}
