//! What each client did during the demo: running totals for the live view and the per-fault
//! table, and fixed-width time buckets for the chart.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::{Duration, Instant};

use crate::workload::CallOutcome;

/// Running totals of one client, shared by its workers (cumulative since the demo started).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Completed calls.
    pub(crate) ops: u64,
    /// Calls the application saw fail (failed + ambiguous).
    pub(crate) errors: u64,
    /// Failed calls that may have been applied.
    pub(crate) ambiguous: u64,
}

impl Totals {
    /// The totals accumulated since `earlier`.
    pub(crate) fn since(self, earlier: Totals) -> Totals {
        Totals {
            ops: self.ops.saturating_sub(earlier.ops),
            errors: self.errors.saturating_sub(earlier.errors),
            ambiguous: self.ambiguous.saturating_sub(earlier.ambiguous),
        }
    }
}

/// The record of one client: lock-free counters its workers bump after every call.
#[derive(Debug)]
pub(crate) struct Recorder {
    start: Instant,
    bucket: Duration,
    ops: AtomicU64,
    errors: AtomicU64,
    ambiguous: AtomicU64,
    /// Offset (ns from `start`) from which the next successful call is noted; `u64::MAX` = unarmed.
    armed_at: AtomicU64,
    /// Offset (ns from `start`) of the first successful call at or after `armed_at`.
    first_ok: AtomicU64,
    /// Per bucket: (completed calls, errors). Calls past the last bucket count in it.
    buckets: Vec<(AtomicU64, AtomicU64)>,
}

impl Recorder {
    /// A recorder whose bucket 0 starts at `start` and which holds `count` buckets of `bucket`.
    pub(crate) fn new(start: Instant, bucket: Duration, count: usize) -> Recorder {
        Recorder {
            start,
            bucket,
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ambiguous: AtomicU64::new(0),
            armed_at: AtomicU64::new(u64::MAX),
            first_ok: AtomicU64::new(u64::MAX),
            buckets: (0..count.max(1))
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Counts one call that completed at `at`.
    pub(crate) fn record(&self, outcome: &CallOutcome, at: Instant) {
        let offset = nanos(at.saturating_duration_since(self.start));
        if !outcome.is_error()
            && offset >= self.armed_at.load(Ordering::Relaxed)
            && self.first_ok.load(Ordering::Relaxed) == u64::MAX
        {
            let _ = self.first_ok.compare_exchange(
                u64::MAX,
                offset,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let index = (u128::from(offset) / self.bucket.as_nanos().max(1))
            .min(self.buckets.len() as u128 - 1) as usize;
        let (ops, errors) = &self.buckets[index];
        ops.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(1, Ordering::Relaxed);
        if outcome.is_error() {
            errors.fetch_add(1, Ordering::Relaxed);
            self.errors.fetch_add(1, Ordering::Relaxed);
            if matches!(outcome, CallOutcome::Ambiguous(_)) {
                self.ambiguous.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts watching for the first successful call completing at or after `at`.
    pub(crate) fn arm(&self, at: Instant) {
        self.first_ok.store(u64::MAX, Ordering::Relaxed);
        self.armed_at.store(
            nanos(at.saturating_duration_since(self.start)),
            Ordering::Relaxed,
        );
    }

    /// Time from the last [`arm`](Self::arm) to the first successful call after it, if any yet.
    pub(crate) fn first_ok_after_arm(&self) -> Option<Duration> {
        let first = self.first_ok.load(Ordering::Relaxed);
        let armed = self.armed_at.load(Ordering::Relaxed);
        (first != u64::MAX && armed != u64::MAX).then(|| Duration::from_nanos(first - armed))
    }

    /// The running totals now.
    pub(crate) fn totals(&self) -> Totals {
        Totals {
            ops: self.ops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            ambiguous: self.ambiguous.load(Ordering::Relaxed),
        }
    }

    /// (completed calls, errors) per bucket, for the first `count` buckets.
    pub(crate) fn series(&self, count: usize) -> Vec<(u64, u64)> {
        self.buckets
            .iter()
            .take(count)
            .map(|(ops, errors)| (ops.load(Ordering::Relaxed), errors.load(Ordering::Relaxed)))
            .collect()
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_land_in_the_bucket_of_their_completion_time() {
        let start = Instant::now();
        let recorder = Recorder::new(start, Duration::from_millis(250), 4);
        recorder.record(&CallOutcome::Ok, start);
        recorder.record(&CallOutcome::Ok, start + Duration::from_millis(249));
        recorder.record(
            &CallOutcome::Ambiguous("io".into()),
            start + Duration::from_millis(250),
        );
        recorder.record(
            &CallOutcome::Failed("BUSY".into()),
            start + Duration::from_millis(900),
        );
        // Past the end: clamped into the last bucket.
        recorder.record(&CallOutcome::Ok, start + Duration::from_secs(10));
        assert_eq!(recorder.series(4), vec![(2, 0), (1, 1), (0, 0), (2, 1)]);
        assert_eq!(
            recorder.totals(),
            Totals {
                ops: 5,
                errors: 2,
                ambiguous: 1
            }
        );
        let earlier = Totals {
            ops: 2,
            errors: 0,
            ambiguous: 0,
        };
        assert_eq!(
            recorder.totals().since(earlier),
            Totals {
                ops: 3,
                errors: 2,
                ambiguous: 1
            }
        );
        assert_eq!(recorder.first_ok_after_arm(), None, "not armed yet");
        recorder.arm(start + Duration::from_millis(1000));
        recorder.record(&CallOutcome::Ok, start + Duration::from_millis(999));
        recorder.record(
            &CallOutcome::Failed("BUSY".into()),
            start + Duration::from_millis(1010),
        );
        assert_eq!(recorder.first_ok_after_arm(), None);
        recorder.record(&CallOutcome::Ok, start + Duration::from_millis(1020));
        recorder.record(&CallOutcome::Ok, start + Duration::from_millis(1030));
        assert_eq!(
            recorder.first_ok_after_arm(),
            Some(Duration::from_millis(20))
        );
    }
}
