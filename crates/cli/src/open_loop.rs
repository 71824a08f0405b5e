//! Open-loop load (`bench --rate`, `demo --scenario overload`): calls are offered on a fixed
//! schedule, whatever the latency, so an overloaded server cannot slow the load down (a
//! closed-loop benchmark waits for each reply before the next call, which hides overload
//! collapse).
//!
//! # Behavior
//! - The schedule is a list of [`Step`]s run back to back from the [`Timeline`]'s start: in a
//!   step of rate `r` starting at `s`, call `i` is due at `s + i / r`.
//! - A scheduler task hands each call, when it is due, to one of `concurrency` callers (tasks
//!   with one call in flight each, e.g. an application's 200 request handlers). Latency is
//!   measured from the call's *due time*, not from when it was sent, so a late scheduler or a
//!   slow hand-off counts against the client (no coordinated omission).
//! - When every caller is busy the call is **dropped**: it counts as offered and as dropped,
//!   never as sent, completed or successful. There is no queue: a queue in front of the callers
//!   would grow without bound under overload and hide the overload in waiting time. So
//!   `offered = sent + dropped` and, once the run is drained, `sent = ok + failed + ambiguous`.
//! - Calls still in flight when the schedule ends are awaited (up to the drain limit).
//! - The [`Timeline`] counts per bucket (1 s for `bench`): offered and dropped calls by due
//!   time; completed calls and their latency by completion time; attempts by when the client
//!   counted them (sampled every bucket; for a client that does not count attempts, one attempt
//!   per sent call, at its due time).

use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::client::AppClient;
use crate::error::CliError;
use crate::workload::{CallOutcome, Commands, Mix, Tally, call, micros};

/// A stretch of the schedule at one rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Step {
    /// How long the step lasts.
    pub(crate) length: Duration,
    /// Calls offered per second (> 0).
    pub(crate) rate: f64,
}

impl Step {
    /// Calls due during the step: `round(length x rate)`.
    pub(crate) fn calls(self) -> u64 {
        (self.length.as_secs_f64() * self.rate).round() as u64
    }

    /// When call `index` of a step starting at `start` is due.
    pub(crate) fn due(self, start: Instant, index: u64) -> Instant {
        start + Duration::from_secs_f64(index as f64 / self.rate)
    }
}

/// What happened in one bucket of time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Calls due in this bucket.
    pub(crate) offered: u64,
    /// Calls due in this bucket that found every caller busy.
    pub(crate) dropped: u64,
    /// Calls completed in this bucket that succeeded.
    pub(crate) ok: u64,
    /// Calls completed in this bucket that failed and surely were not applied.
    pub(crate) failed: u64,
    /// Calls completed in this bucket that failed and may have been applied.
    pub(crate) ambiguous: u64,
    /// Of the failed calls, those the client refused locally (adaptive throttling).
    pub(crate) rejected_locally: u64,
    /// Attempts sent to the server in this bucket, retries included.
    pub(crate) attempts: u64,
}

/// One bucket as reported in `bench --series` JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct BucketReport {
    /// Start of the bucket, in seconds from the start of the run.
    pub(crate) t: f64,
    /// See [`Counts::offered`].
    pub(crate) offered: u64,
    /// See [`Counts::ok`].
    pub(crate) ok: u64,
    /// See [`Counts::failed`].
    pub(crate) failed: u64,
    /// See [`Counts::ambiguous`].
    pub(crate) ambiguous: u64,
    /// See [`Counts::rejected_locally`].
    pub(crate) rejected_locally: u64,
    /// See [`Counts::attempts`].
    pub(crate) attempts: u64,
    /// See [`Counts::dropped`].
    pub(crate) dropped: u64,
    /// 99th percentile latency (from due time) of the calls completed in the bucket, in µs; 0
    /// when none completed.
    pub(crate) p99_us: u64,
}

struct Cell {
    counts: Counts,
    latency: Histogram<u64>,
}

/// Per-bucket counts of one client's open-loop run, shared by its scheduler and callers.
pub(crate) struct Timeline {
    start: Instant,
    bucket: Duration,
    cells: Vec<Mutex<Cell>>,
}

impl Timeline {
    /// `count` buckets of `bucket` from `start` (events past the last bucket count in it).
    pub(crate) fn new(start: Instant, bucket: Duration, count: usize) -> Timeline {
        let cells = (0..count.max(1))
            .map(|_| {
                Mutex::new(Cell {
                    counts: Counts::default(),
                    // 1 µs .. 1 min, 2 significant digits: valid constant bounds.
                    latency: Histogram::new_with_bounds(1, 60_000_000, 2)
                        .unwrap_or_else(|_| unreachable!()),
                })
            })
            .collect();
        Timeline {
            start,
            bucket,
            cells,
        }
    }

    /// When bucket 0 starts.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// The bucket width.
    pub(crate) fn bucket(&self) -> Duration {
        self.bucket
    }

    fn index(&self, at: Instant) -> usize {
        let offset = at.saturating_duration_since(self.start).as_nanos();
        (offset / self.bucket.as_nanos().max(1)).min(self.cells.len() as u128 - 1) as usize
    }

    fn update(&self, at: Instant, change: impl FnOnce(&mut Cell)) {
        let mut cell = self.cells[self.index(at)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut cell);
    }

    /// Counts one call due at `due`, dropped or handed to a caller; `attempt` counts the sent
    /// call as one attempt (for clients that do not count their own).
    fn offered(&self, due: Instant, dropped: bool, attempt: bool) {
        self.update(due, |cell| {
            cell.counts.offered += 1;
            if dropped {
                cell.counts.dropped += 1;
            } else if attempt {
                cell.counts.attempts += 1;
            }
        });
    }

    /// Counts one call that completed at `done`, `latency` after it was due.
    fn completed(&self, outcome: &CallOutcome, done: Instant, latency: Duration) {
        self.update(done, |cell| {
            match outcome {
                CallOutcome::Ok => cell.counts.ok += 1,
                CallOutcome::Failed(_) => cell.counts.failed += 1,
                CallOutcome::Ambiguous(_) => cell.counts.ambiguous += 1,
            }
            if outcome.is_rejected_locally() {
                cell.counts.rejected_locally += 1;
            }
            cell.latency.saturating_record(micros(latency));
        });
    }

    fn add_attempts(&self, at: Instant, attempts: u64) {
        self.update(at, |cell| cell.counts.attempts += attempts);
    }

    /// The counts of bucket `index` (zero past the end).
    pub(crate) fn counts(&self, index: usize) -> Counts {
        self.cells.get(index).map_or_else(Counts::default, |cell| {
            cell.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .counts
                .clone()
        })
    }

    /// The sum of the counts of buckets `from .. to`.
    pub(crate) fn sum(&self, from: usize, to: usize) -> Counts {
        let mut total = Counts::default();
        for index in from..to.min(self.cells.len()) {
            let c = self.counts(index);
            total.offered += c.offered;
            total.dropped += c.dropped;
            total.ok += c.ok;
            total.failed += c.failed;
            total.ambiguous += c.ambiguous;
            total.rejected_locally += c.rejected_locally;
            total.attempts += c.attempts;
        }
        total
    }

    /// The `quantile` of the latencies (µs, from due time) of the calls completed in buckets
    /// `from .. to`; 0 when none completed.
    pub(crate) fn latency_us(&self, from: usize, to: usize, quantile: f64) -> u64 {
        let mut merged: Option<Histogram<u64>> = None;
        for cell in self.cells.iter().take(to).skip(from) {
            let cell = cell.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut merged {
                None => merged = Some(cell.latency.clone()),
                // Same bounds everywhere: adding cannot fail.
                Some(total) => {
                    let _ = total.add(&cell.latency);
                }
            }
        }
        merged
            .filter(|h| !h.is_empty())
            .map_or(0, |h| h.value_at_quantile(quantile))
    }

    /// The first `count` buckets as reported in JSON.
    pub(crate) fn report(&self, count: usize) -> Vec<BucketReport> {
        self.cells
            .iter()
            .take(count)
            .enumerate()
            .map(|(index, cell)| {
                let cell = cell.lock().unwrap_or_else(PoisonError::into_inner);
                let c = &cell.counts;
                BucketReport {
                    t: index as f64 * self.bucket.as_secs_f64(),
                    offered: c.offered,
                    ok: c.ok,
                    failed: c.failed,
                    ambiguous: c.ambiguous,
                    rejected_locally: c.rejected_locally,
                    attempts: c.attempts,
                    dropped: c.dropped,
                    p99_us: if cell.latency.is_empty() {
                        0
                    } else {
                        cell.latency.value_at_quantile(0.99)
                    },
                }
            })
            .collect()
    }

    /// How many buckets the run from the start to `end` covers (at least 1).
    pub(crate) fn used(&self, end: Instant) -> usize {
        (end.saturating_duration_since(self.start)
            .as_nanos()
            .div_ceil(self.bucket.as_nanos().max(1)) as usize)
            .clamp(1, self.cells.len())
    }
}

/// What an open-loop run produced, besides its [`Timeline`].
pub(crate) struct OpenLoopRun {
    /// Completed calls by outcome.
    pub(crate) tally: Tally,
    /// Latencies (µs, from due time) of the completed calls.
    pub(crate) histogram: Histogram<u64>,
    /// Calls due.
    pub(crate) offered: u64,
    /// Calls that found every caller busy.
    pub(crate) dropped: u64,
    /// From the timeline's start to the last completion.
    pub(crate) elapsed: Duration,
}

/// Runs `steps` against `client` with `concurrency` callers, recording into `timeline` (whose
/// start is the schedule's start); `histogram` makes each caller's latency histogram.
///
/// # Errors
/// [`CliError::Runtime`] when calls are still unanswered `drain` after the schedule ended, or a
/// caller task failed.
pub(crate) async fn run<C: AppClient>(
    client: &C,
    mix: Arc<Mix>,
    steps: &[Step],
    concurrency: usize,
    timeline: Arc<Timeline>,
    drain: Duration,
    histogram: fn() -> Histogram<u64>,
) -> Result<OpenLoopRun, CliError> {
    let counts_attempts = client.counters().attempts.is_some();
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
    let mut jobs = Vec::with_capacity(concurrency);
    let mut callers = Vec::with_capacity(concurrency);
    for id in 0..concurrency {
        let (job_tx, job_rx) = mpsc::channel(1);
        jobs.push(job_tx);
        let _ = idle_tx.send(id);
        callers.push(tokio::spawn(caller(
            client.clone(),
            Commands::new(Arc::clone(&mix), id as u64),
            job_rx,
            (idle_tx.clone(), id),
            Arc::clone(&timeline),
            histogram(),
        )));
    }
    drop(idle_tx);
    let sampler = counts_attempts
        .then(|| tokio::spawn(sample_attempts(client.clone(), Arc::clone(&timeline))));
    let before = client.counters().attempts.unwrap_or(0);

    let (mut offered, mut dropped) = (0, 0);
    let mut step_start = timeline.start();
    for step in steps {
        for index in 0..step.calls() {
            let due = step.due(step_start, index);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            let sent = match idle_rx.try_recv() {
                Ok(id) => jobs[id].try_send(due).is_ok(),
                Err(_) => false,
            };
            offered += 1;
            dropped += u64::from(!sent);
            timeline.offered(due, !sent, !counts_attempts);
        }
        step_start += step.length;
    }
    drop(jobs);
    let schedule_end = step_start;

    let joined =
        tokio::time::timeout_at(schedule_end + drain, futures::future::join_all(callers)).await;
    let elapsed = timeline.start().elapsed();
    if let Some(sampler) = sampler {
        sampler.abort();
        let _ = sampler.await;
        // The attempts the last ticks did not see.
        let total = client
            .counters()
            .attempts
            .unwrap_or(0)
            .saturating_sub(before);
        let seen = timeline.sum(0, usize::MAX).attempts;
        timeline.add_attempts(Instant::now(), total.saturating_sub(seen));
    }
    let results = joined.map_err(|_| {
        CliError::runtime(format!(
            "calls still unanswered {} s after the end of the schedule: the client hung",
            drain.as_secs()
        ))
    })?;
    let mut tally = Tally::default();
    let mut merged = histogram();
    for result in results {
        let (caller_tally, caller_histogram) =
            result.map_err(|err| CliError::runtime(format!("a caller task failed: {err}")))?;
        tally.merge(&caller_tally);
        merged
            .add(&caller_histogram)
            .map_err(|err| CliError::runtime(format!("cannot merge latencies: {err}")))?;
    }
    Ok(OpenLoopRun {
        tally,
        histogram: merged,
        offered,
        dropped,
        elapsed,
    })
}

/// One caller: takes due times, makes one call for each, says when it is idle again.
async fn caller<C: AppClient>(
    mut client: C,
    mut commands: Commands,
    mut jobs: mpsc::Receiver<Instant>,
    (idle, id): (mpsc::UnboundedSender<usize>, usize),
    timeline: Arc<Timeline>,
    mut histogram: Histogram<u64>,
) -> (Tally, Histogram<u64>) {
    let mut tally = Tally::default();
    while let Some(due) = jobs.recv().await {
        let (outcome, done) = call(&mut client, commands.next_cmd()).await;
        let latency = done.saturating_duration_since(due);
        histogram.saturating_record(micros(latency));
        timeline.completed(&outcome, done, latency);
        tally.record(outcome);
        // The scheduler is gone once the schedule is over; the loop then ends on `recv`.
        let _ = idle.send(id);
    }
    (tally, histogram)
}

/// Adds the client's new attempts to the bucket that just ended, at every bucket boundary.
async fn sample_attempts<C: AppClient>(client: C, timeline: Arc<Timeline>) {
    let mut last = client.counters().attempts.unwrap_or(0);
    let mut boundary = timeline.start() + timeline.bucket();
    loop {
        tokio::time::sleep_until(boundary).await;
        let now = client.counters().attempts.unwrap_or(0);
        timeline.add_attempts(boundary - timeline.bucket(), now.saturating_sub(last));
        last = now;
        boundary += timeline.bucket();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_spread_their_calls_evenly() {
        let start = Instant::now();
        let step = Step {
            length: Duration::from_secs(2),
            rate: 4.0,
        };
        assert_eq!(step.calls(), 8);
        let offsets: Vec<u128> = (0..step.calls())
            .map(|i| step.due(start, i).duration_since(start).as_millis())
            .collect();
        assert_eq!(offsets, [0, 250, 500, 750, 1000, 1250, 1500, 1750]);
        assert_eq!(
            Step {
                length: Duration::from_millis(500),
                rate: 3.0
            }
            .calls(),
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timeline_buckets_offers_by_due_time_and_completions_by_completion_time() {
        let start = Instant::now();
        let timeline = Timeline::new(start, Duration::from_secs(1), 3);
        let at = |ms| start + Duration::from_millis(ms);
        timeline.offered(at(100), false, true);
        timeline.offered(at(900), true, true);
        timeline.offered(at(1500), false, false);
        timeline.completed(&CallOutcome::Ok, at(1100), Duration::from_millis(1000));
        timeline.completed(
            &CallOutcome::Failed("THROTTLED".into()),
            at(1200),
            Duration::from_millis(2),
        );
        timeline.completed(
            &CallOutcome::Ambiguous("io".into()),
            at(9000),
            Duration::ZERO,
        );
        timeline.add_attempts(at(2500), 5);
        let report = timeline.report(3);
        let row = |r: &BucketReport| {
            (
                r.offered,
                r.dropped,
                r.ok,
                r.failed,
                r.ambiguous,
                r.attempts,
            )
        };
        assert_eq!(
            report.iter().map(row).collect::<Vec<_>>(),
            [(2, 1, 0, 0, 0, 1), (1, 0, 1, 1, 0, 0), (0, 0, 0, 0, 1, 5)]
        );
        assert_eq!(report[1].t, 1.0);
        assert!(
            (990_000..=1_010_000).contains(&report[1].p99_us),
            "{report:?}"
        );
        assert_eq!(report[0].p99_us, 0);
        assert!((990_000..=1_010_000).contains(&timeline.latency_us(0, 3, 1.0)));
        assert_eq!(timeline.latency_us(0, 1, 0.99), 0);
        let total = timeline.sum(0, 3);
        assert_eq!((total.offered, total.ok, total.attempts), (3, 1, 6));
        assert_eq!(timeline.used(at(1001)), 2);
        assert_eq!(timeline.used(at(60_000)), 3);
    }
}
