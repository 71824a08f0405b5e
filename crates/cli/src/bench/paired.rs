//! `bench --paired-with CLIENT`: two clients against the same target in one run, taking turns
//! in short slices (`--slice-ms`), so that the machine's noise — which on a shared VM moves a
//! single client's throughput by ±15 % from one second to the next — hits both alike.
//!
//! # Behavior
//! - Each client gets `--concurrency` workers of its own (its own connections, as in a run of
//!   its own). Only one client's workers send at a time: when the turn passes, the other
//!   client's workers finish the call they are in and wait; the next slice starts once they
//!   all have (no overlap). A client's time is the sum of its slices, from the turn passing to
//!   it until its last call of the slice returned.
//! - `--duration` is the whole run: each client gets about half of it.
//! - The report is one [`BenchReport`] per client, computed as for a run of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::{Duration, Instant};

use super::{BenchArgs, Totals, task_result};
use crate::bench::report::BenchReport;
use crate::client::AppClient;
use crate::error::CliError;
use crate::workload::{Commands, Mix, timed_call};

/// The turn value that ends the run.
const STOP: usize = 2;

/// Two clients' reports from one paired run (`bench --paired-with ... --json`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PairedReport {
    /// Length of one slice, in milliseconds.
    pub(crate) slice_ms: u64,
    /// Slices run (each client had half of them).
    pub(crate) slices: u64,
    /// `--client` first, then `--paired-with`.
    pub(crate) reports: [BenchReport; 2],
}

impl PairedReport {
    /// The human summary: both reports and the ratios of the first client to the second.
    pub(crate) fn human(&self) -> String {
        let [a, b] = &self.reports;
        format!(
            "{}\n\n{}\n\n{} / {}: throughput {:.3}  p99 {:.3}  ({} slices of {} ms)",
            a.human(),
            b.human(),
            a.client,
            b.client,
            a.ops_per_sec / b.ops_per_sec.max(f64::MIN_POSITIVE),
            a.latency_us.p99 as f64 / (b.latency_us.p99.max(1)) as f64,
            self.slices,
            self.slice_ms,
        )
    }
}

/// How many workers of each client are sending in the current slice.
///
/// A worker counts itself in, then checks the turn; the controller passes the turn, then waits
/// for the count to reach zero. Both sides use `SeqCst` so that they cannot both miss the
/// other's write: no call starts after a slice is over.
struct Turns {
    active: [AtomicUsize; 2],
    drained: Notify,
}

impl Turns {
    /// Waits until no worker of `side` is in a call.
    async fn drained(&self, side: usize) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active[side].load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// What each side's run produced: its calls and the time it had.
pub(crate) struct Side {
    pub(crate) totals: Totals,
    pub(crate) elapsed: Duration,
}

/// Runs `a` and `b` in alternating slices for `args.duration`.
pub(crate) async fn run<A: AppClient, B: AppClient>(
    a: &A,
    b: &B,
    args: &BenchArgs,
    slice: Duration,
    mix: Arc<Mix>,
) -> Result<([Side; 2], u64), CliError> {
    let (turn, _) = watch::channel(STOP);
    let turns = Arc::new(Turns {
        active: [AtomicUsize::new(0), AtomicUsize::new(0)],
        drained: Notify::new(),
    });
    let mut workers = Vec::new();
    for index in 0..args.concurrency {
        let (mix, index) = (Arc::clone(&mix), u64::from(index));
        let worker_a = worker(
            a.clone(),
            0,
            turn.subscribe(),
            Arc::clone(&turns),
            Arc::clone(&mix),
            index,
        );
        workers.push(tokio::spawn(worker_a));
        let worker_b = worker(
            b.clone(),
            1,
            turn.subscribe(),
            Arc::clone(&turns),
            mix,
            index,
        );
        workers.push(tokio::spawn(worker_b));
    }
    let mut elapsed = [Duration::ZERO; 2];
    let end = Instant::now() + args.duration;
    let mut slices = 0u64;
    while Instant::now() < end || !slices.is_multiple_of(2) {
        let side = (slices % 2) as usize;
        let started = Instant::now();
        turn.send_replace(side);
        tokio::time::sleep(slice).await;
        turn.send_replace(STOP);
        fence(Ordering::SeqCst);
        // The next slice starts once this side's calls in flight have returned.
        let drain = super::drain_limit(args);
        tokio::time::timeout(drain, turns.drained(side))
            .await
            .map_err(|_| {
                CliError::runtime(format!(
                    "calls still unanswered {} s after the end of a slice: the client hung",
                    drain.as_secs()
                ))
            })?;
        elapsed[side] += started.elapsed();
        slices += 1;
    }
    // The workers' `wait_for` fails once the sender is gone: they return.
    drop(turn);
    let mut totals = [Totals::new(), Totals::new()];
    for result in futures::future::join_all(workers).await {
        let (side, worker) = task_result(result)?;
        totals[side].merge(worker)?;
    }
    let [a, b] = totals;
    let sides = [
        Side {
            totals: a,
            elapsed: elapsed[0],
        },
        Side {
            totals: b,
            elapsed: elapsed[1],
        },
    ];
    Ok((sides, slices))
}

/// One worker of `side`: sends calls while it is `side`'s turn, waits otherwise.
async fn worker<C: AppClient>(
    mut client: C,
    side: usize,
    mut turn: watch::Receiver<usize>,
    turns: Arc<Turns>,
    mix: Arc<Mix>,
    index: u64,
) -> (usize, Totals) {
    let mut commands = Commands::new(mix, index);
    let mut totals = Totals::new();
    loop {
        // Waits for this side's turn; ends when the controller is gone.
        if turn.wait_for(|t| *t == side).await.is_err() {
            break;
        }
        turns.active[side].fetch_add(1, Ordering::SeqCst);
        while *turn.borrow() == side {
            let (outcome, latency) = timed_call(&mut client, commands.next_cmd()).await;
            totals.record(outcome, latency);
        }
        if turns.active[side].fetch_sub(1, Ordering::SeqCst) == 1 {
            turns.drained.notify_waiters();
        }
    }
    (side, totals)
}
