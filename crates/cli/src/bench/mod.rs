//! `resilient-redis bench`: load from N tasks against one server, a Sentinel master or a cluster,
//! for any client (`resilient`, `raw`, `naive`; `naive` drives one server, not a cluster).
//!
//! # Behavior
//! - The target is `--url`, `--sentinel ... --master NAME` or `--cluster ...` (exactly one; see
//!   [`crate::target`]). The report has the same fields whatever the target.
//! - Closed loop (default): each of `--concurrency` tasks sends one call at a time until
//!   `--duration` has passed.
//! - Open loop (`--rate R`): calls are offered at `R` per second for `--duration` and handed to
//!   `--concurrency` callers; a call that finds every caller busy is dropped (counted as offered
//!   and dropped, never as a success); latency counts from each call's due time. See
//!   [`crate::open_loop`]. `--series` adds per-second figures.
//! - `get` GETs keys drawn uniformly from `bench:0 .. bench:{keys-1}`, which it SETs first;
//! - `get-set` alternates SET and GET of keys drawn uniformly from `bench:0 .. bench:{keys-1}`
//!   with a seeded RNG (`--seed`); `incr` INCRs `--key` from every task.
//! - Every completed call is counted once as ok, failed or ambiguous, and its latency goes into
//!   an HdrHistogram (µs). Calls still in flight when the time is up are awaited.
//! - A progress line goes to stderr unless `--json`; with `--json` stdout gets exactly one JSON
//!   object (see [`report::BenchReport`]).
//! - `--metrics-addr IP:PORT` (with the resilient client) serves the client's metrics as a
//!   Prometheus page during the run (see [`crate::metrics_page`]); its address goes to stderr.

mod paired;
mod pubsub;
mod queue;
mod report;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::{Duration, Instant};

use crate::client::{
    AppClient, CasApp, ClientKind, ExactlyOnceApp, NaiveClient, RawClient, RawCluster, WireClient,
    connect_resilient, preflight, sentinel_master_url,
};
use crate::error::CliError;
use crate::metrics_page::parse_metrics_addr;
use crate::open_loop::{self, Step, Timeline};
use crate::target::{Target, TargetArgs};
use crate::units::{parse_millis, parse_rate, parse_seconds};
use crate::workload::{CallOutcome, Commands, Mix, Tally, Workload, micros, timed_call};
use paired::PairedReport;
use report::{BenchReport, OpenLoopFigures};

/// Extra time given to calls in flight at the end of the run before the client is declared hung.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Arguments of `resilient-redis bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Which client to drive.
    #[arg(long, value_enum, default_value_t = ClientKind::Resilient)]
    client: ClientKind,
    /// Command mix.
    #[arg(long, value_enum, default_value_t = Workload::GetSet)]
    workload: Workload,
    /// Number of concurrent tasks (callers with --rate), each with one call in flight.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Run time in seconds (fractions allowed).
    #[arg(long, default_value = "10", value_parser = parse_seconds, value_name = "SECS")]
    duration: Duration,
    /// Size of the get-set key space.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Size of each SET value in bytes.
    #[arg(long, default_value_t = 64, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(0..=512 * 1024 * 1024))]
    value_size: u64,
    /// The key of the single-key workloads: the counter of incr and cas, the list of lpush
    /// (default `bench:counter`), the queue of queue (default `bench:queue`).
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
    /// Total deadline per call in ms (resilient: overrides the client's default deadline;
    /// naive: how long it keeps retrying, default 5000; raw: sets redis-rs's response timeout,
    /// default 500 ms).
    #[arg(long, value_parser = parse_millis, value_name = "MS")]
    deadline_ms: Option<Duration>,
    /// Open loop: offer this many calls per second, whatever the latency (calls that find all
    /// --concurrency callers busy are dropped and counted). Without it the bench is closed-loop.
    #[arg(long, value_parser = parse_rate, value_name = "OPS_PER_SEC")]
    rate: Option<f64>,
    /// Resilient client only: send every call through idempotency tokens checked by a
    /// server-side script (exactly-once writes; see resilient_redis::ExactlyOnce).
    #[arg(long)]
    exactly_once: bool,
    /// Closed loop against one server or a Sentinel master: also run this client, taking turns
    /// with --client in slices of --slice-ms within one run, and report both (the machine's
    /// noise then hits both alike). --duration is the whole run, about half for each.
    #[arg(long, value_enum, value_name = "CLIENT")]
    paired_with: Option<ClientKind>,
    /// With --paired-with: the length of one client's turn.
    #[arg(long, default_value = "200", value_parser = parse_millis, value_name = "MS",
          requires = "paired_with")]
    slice_ms: Duration,
    /// With --rate: add per-second figures (`series`) to the report.
    #[arg(long, requires = "rate")]
    series: bool,
    /// With --workload pubsub: the number of channels (`bench:ch0` ..), one publisher each.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    channels: u32,
    /// With --workload pubsub: shard channels (SSUBSCRIBE / SPUBLISH, Redis 7+).
    #[arg(long)]
    sharded: bool,
    /// Seed of the key-choice RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve the resilient client's metrics as a Prometheus page (GET /metrics) on this address
    /// while the bench runs, e.g. 127.0.0.1:9091.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_metrics_addr)]
    metrics_addr: Option<SocketAddr>,
    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// Runs the bench and prints its report.
pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    let target = args.target.target()?;
    let access = args.target.access();
    let deadline = args.deadline_ms;
    let baseline = args.client != ClientKind::Resilient
        || args.paired_with.is_some_and(|c| c != ClientKind::Resilient);
    if access.password_file.is_some() && baseline {
        return Err(CliError::usage(
            "--password-file is read by the resilient client only: give the raw and naive \
             baselines the password in the URL",
        ));
    }
    if access.durability.is_some() && args.client != ClientKind::Resilient {
        return Err(CliError::usage(
            "--durability is a mode of the resilient client: it needs --client resilient",
        ));
    }
    if args.workload == Workload::Cas
        && (args.client != ClientKind::Resilient || args.exactly_once || args.paired_with.is_some())
    {
        return Err(CliError::usage(
            "--workload cas runs the resilient client's transactions: it needs --client \
             resilient, without --exactly-once or --paired-with",
        ));
    }
    if let Some(addr) = args.metrics_addr {
        if args.client != ClientKind::Resilient && args.paired_with != Some(ClientKind::Resilient) {
            return Err(CliError::usage(
                "--metrics-addr serves the resilient client's metrics: it needs --client \
                 resilient (or --paired-with resilient)",
            ));
        }
        // Before any client exists: the client registers its metrics when it is created.
        crate::metrics_page::serve(addr)?;
    }
    if args.workload == Workload::Pubsub {
        if args.client != ClientKind::Resilient
            || args.exactly_once
            || args.paired_with.is_some()
            || args.series
        {
            return Err(CliError::usage(
                "--workload pubsub runs the resilient client's subscriptions: it needs --client \
                 resilient, without --exactly-once, --paired-with or --series (--rate is the \
                 message rate)",
            ));
        }
        let client = connect_resilient(&target, &access, deadline).await?;
        let plan = pubsub::PubSubPlan {
            prefix: "bench:ch".to_owned(),
            channels: args.channels,
            sharded: args.sharded,
            rate: args.rate.unwrap_or(2_000.0),
            duration: args.duration,
            target: target.describe(),
            progress: !args.json,
        };
        let report = pubsub::run(client, plan).await?;
        crate::output::print_report(&report, args.json, || report.human())?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.sharded {
        return Err(CliError::usage("--sharded goes with --workload pubsub"));
    }
    if args.workload == Workload::Queue {
        if args.client != ClientKind::Resilient
            || args.exactly_once
            || args.paired_with.is_some()
            || args.rate.is_some()
        {
            return Err(CliError::usage(
                "--workload queue runs the resilient client's producers and BLMOVE consumers: \
                 it needs --client resilient, without --exactly-once, --paired-with or --rate",
            ));
        }
        let client = connect_resilient(&target, &access, deadline).await?;
        let plan = queue::QueuePlan {
            key: args.key.clone().unwrap_or_else(|| "bench:queue".to_owned()),
            concurrency: args.concurrency,
            duration: args.duration,
            target: target.describe(),
            progress: !args.json,
        };
        let report = queue::run(client, plan).await?;
        crate::output::print_report(&report, args.json, || report.human())?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.exactly_once && args.client != ClientKind::Resilient {
        return Err(CliError::usage(
            "--exactly-once needs --client resilient (it is a mode of the resilient client)",
        ));
    }
    if let Some(other) = args.paired_with {
        let report = paired_bench(&args, &target, other).await?;
        crate::output::print_report(&report, args.json, || report.human())?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = match (&target, args.client) {
        (_, ClientKind::Resilient) if args.workload == Workload::Cas => {
            let client = connect_resilient(&target, &access, deadline).await?;
            bench(CasApp::new(client), &args, &target).await?
        }
        (_, ClientKind::Resilient) if args.exactly_once => {
            let client = connect_resilient(&target, &access, deadline).await?;
            bench(ExactlyOnceApp::new(client)?, &args, &target).await?
        }
        (Target::Cluster { urls }, ClientKind::Raw) => {
            bench(RawCluster::connect(urls, deadline).await?, &args, &target).await?
        }
        (_, ClientKind::Resilient) => {
            bench(
                connect_resilient(&target, &access, deadline).await?,
                &args,
                &target,
            )
            .await?
        }
        (Target::Standalone { url }, ClientKind::Raw) => {
            bench(RawClient::connect(url, deadline).await?, &args, &target).await?
        }
        (Target::Sentinel { sentinels, master }, ClientKind::Raw) => {
            let url = sentinel_master_url(sentinels, master).await?;
            bench(RawClient::connect(&url, deadline).await?, &args, &target).await?
        }
        (Target::Standalone { url }, ClientKind::Naive) => {
            bench(NaiveClient::connect(url, deadline).await?, &args, &target).await?
        }
        (Target::Sentinel { sentinels, master }, ClientKind::Naive) => {
            let url = sentinel_master_url(sentinels, master).await?;
            bench(NaiveClient::connect(&url, deadline).await?, &args, &target).await?
        }
        (Target::Cluster { .. }, ClientKind::Naive) => {
            return Err(CliError::usage(
                "--client naive drives one server: give --url or --sentinel",
            ));
        }
        (_, ClientKind::Wire) if deadline.is_some() => {
            return Err(CliError::usage(
                "--client wire has no response timeout: drop --deadline-ms",
            ));
        }
        (Target::Standalone { url }, ClientKind::Wire) => {
            bench(WireClient::connect(url).await?, &args, &target).await?
        }
        (Target::Sentinel { sentinels, master }, ClientKind::Wire) => {
            let url = sentinel_master_url(sentinels, master).await?;
            bench(WireClient::connect(&url).await?, &args, &target).await?
        }
        (Target::Cluster { .. }, ClientKind::Wire) => {
            return Err(CliError::usage(
                "--client wire drives one server: give --url or --sentinel",
            ));
        }
    };
    let report = BenchReport {
        exactly_once: args.exactly_once,
        durability: (args.client == ClientKind::Resilient)
            .then(|| access.durability.unwrap_or_default().to_string()),
        ..report
    };
    crate::output::print_report(&report, args.json, || report.human())?;
    Ok(ExitCode::SUCCESS)
}

/// What every closed-loop worker needs to build its calls.
struct Plan {
    mix: Arc<Mix>,
    end: Instant,
}

/// Live counters for the progress line.
#[derive(Default)]
struct Progress {
    ops: AtomicU64,
    errors: AtomicU64,
}

/// A histogram of latencies in µs, 1 µs .. 1 h, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants known to be valid (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// What workers' calls came to: outcomes and latencies.
pub(crate) struct Totals {
    pub(crate) tally: Tally,
    pub(crate) histogram: Histogram<u64>,
}

impl Totals {
    pub(crate) fn new() -> Totals {
        Totals {
            tally: Tally::default(),
            histogram: new_histogram(),
        }
    }

    /// Counts one call.
    pub(crate) fn record(&mut self, outcome: CallOutcome, latency: Duration) {
        self.histogram.saturating_record(micros(latency));
        self.tally.record(outcome);
    }

    /// Adds a worker's totals.
    pub(crate) fn merge(&mut self, worker: Totals) -> Result<(), CliError> {
        self.tally.merge(&worker.tally);
        self.histogram
            .add(&worker.histogram)
            .map_err(|err| CliError::runtime(format!("cannot merge latencies: {err}")))
    }
}

/// What a bench task returned, or why it did not.
pub(crate) fn task_result<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, CliError> {
    result.map_err(|err| CliError::runtime(format!("a bench task failed: {err}")))
}

/// How long calls in flight at the end may take before the client is declared hung.
fn drain_limit(args: &BenchArgs) -> Duration {
    args.deadline_ms.unwrap_or(Duration::from_secs(30)) + DRAIN_GRACE
}

async fn bench<C: AppClient>(
    mut client: C,
    args: &BenchArgs,
    target: &Target,
) -> Result<BenchReport, CliError> {
    preflight(&mut client, &target.describe()).await?;
    if args.workload == Workload::Get {
        fill(&mut client, args).await?;
    }
    let before = client.counters();
    let mix = mix_of(args);
    let header = (
        args.client.name(),
        args.workload.name(),
        args.concurrency as usize,
    );
    match args.rate {
        None => {
            let (tally, histogram, elapsed) = closed_loop(&client, args, mix).await?;
            let counters = client.counters().since(before);
            Ok(BenchReport::new(
                header,
                elapsed.as_secs_f64(),
                &tally,
                counters,
                &histogram,
            ))
        }
        Some(rate) => {
            let bucket = Duration::from_secs(1);
            let drain = drain_limit(args);
            let buckets = (args.duration + drain).as_secs() as usize + 2;
            let timeline = Arc::new(Timeline::new(Instant::now(), bucket, buckets));
            let ticker = (!args.json).then(|| {
                tokio::spawn(show_open_progress(
                    args.clone(),
                    rate,
                    Arc::clone(&timeline),
                ))
            });
            let steps = [Step {
                length: args.duration,
                rate,
            }];
            let run = open_loop::run(
                &client,
                mix,
                &steps,
                args.concurrency as usize,
                Arc::clone(&timeline),
                drain,
                new_histogram,
            )
            .await;
            if let Some(ticker) = ticker {
                ticker.abort();
                let _ = ticker.await;
            }
            let run = run?;
            let counters = client.counters().since(before);
            let report = BenchReport::new(
                header,
                run.elapsed.as_secs_f64(),
                &run.tally,
                counters,
                &run.histogram,
            )
            .with_open_loop(OpenLoopFigures {
                rate_per_sec: rate,
                offered: run.offered,
                dropped: run.dropped,
                series: args
                    .series
                    .then(|| timeline.report(timeline.used(Instant::now()))),
            });
            Ok(report)
        }
    }
}

/// `--workload get`: SETs every key of the key space (`bench:0 ..`) to the value, 64 calls in
/// flight at a time, before the run.
async fn fill<C: AppClient>(client: &mut C, args: &BenchArgs) -> Result<(), CliError> {
    use futures::StreamExt as _;
    let value = vec![b'x'; args.value_size as usize];
    let mut calls = futures::stream::iter(0..args.keys)
        .map(|i| {
            let mut conn = client.clone();
            let value = &value;
            async move {
                let mut set = redis::cmd("SET");
                set.arg(format!("bench:{i}")).arg(value);
                set.query_async::<()>(conn.conn()).await
            }
        })
        .buffer_unordered(64);
    while let Some(result) = calls.next().await {
        result.map_err(|err| CliError::runtime(format!("cannot fill the key space: {err}")))?;
    }
    Ok(())
}

/// The calls the workers make.
fn mix_of(args: &BenchArgs) -> Arc<Mix> {
    Arc::new(Mix {
        workload: args.workload,
        keys: args.keys,
        value: vec![b'x'; args.value_size as usize],
        counter_key: args
            .key
            .clone()
            .unwrap_or_else(|| "bench:counter".to_owned()),
        seed: args.seed,
    })
}

/// `--paired-with`: connects both clients and runs them in turns (see [`paired`]).
async fn paired_bench(
    args: &BenchArgs,
    target: &Target,
    other: ClientKind,
) -> Result<PairedReport, CliError> {
    if args.rate.is_some() || args.exactly_once {
        return Err(CliError::usage(
            "--paired-with runs a closed loop of plain calls: drop --rate and --exactly-once",
        ));
    }
    let deadline = args.deadline_ms;
    let access = args.target.access();
    let raw_url = match target {
        Target::Standalone { url } => url.clone(),
        Target::Sentinel { sentinels, master } => sentinel_master_url(sentinels, master).await?,
        Target::Cluster { urls } => {
            // The raw baseline of a cluster is redis-rs's cluster connection.
            return match (args.client, other) {
                (ClientKind::Resilient, ClientKind::Raw) => {
                    let a = connect_resilient(target, &access, deadline).await?;
                    let b = RawCluster::connect(urls, deadline).await?;
                    paired_run(a, b, args, target, other).await
                }
                (ClientKind::Raw, ClientKind::Resilient) => {
                    let a = RawCluster::connect(urls, deadline).await?;
                    let b = connect_resilient(target, &access, deadline).await?;
                    paired_run(a, b, args, target, other).await
                }
                _ => Err(pair_usage()),
            };
        }
    };
    match (args.client, other) {
        (ClientKind::Resilient, ClientKind::Raw) => {
            let a = connect_resilient(target, &access, deadline).await?;
            let b = RawClient::connect(&raw_url, deadline).await?;
            paired_run(a, b, args, target, other).await
        }
        (ClientKind::Raw, ClientKind::Resilient) => {
            let a = RawClient::connect(&raw_url, deadline).await?;
            let b = connect_resilient(target, &access, deadline).await?;
            paired_run(a, b, args, target, other).await
        }
        _ => Err(pair_usage()),
    }
}

fn pair_usage() -> CliError {
    CliError::usage("--paired-with pairs the resilient and the raw client (one each)")
}

async fn paired_run<A: AppClient, B: AppClient>(
    mut a: A,
    mut b: B,
    args: &BenchArgs,
    target: &Target,
    other: ClientKind,
) -> Result<PairedReport, CliError> {
    preflight(&mut a, &target.describe()).await?;
    preflight(&mut b, &target.describe()).await?;
    let before = (a.counters(), b.counters());
    let (sides, slices) = paired::run(&a, &b, args, args.slice_ms, mix_of(args)).await?;
    let [side_a, side_b] = sides;
    let concurrency = args.concurrency as usize;
    let report = |name, side: paired::Side, counters| {
        BenchReport::new(
            (name, args.workload.name(), concurrency),
            side.elapsed.as_secs_f64(),
            &side.totals.tally,
            counters,
            &side.totals.histogram,
        )
    };
    Ok(PairedReport {
        slice_ms: u64::try_from(args.slice_ms.as_millis()).unwrap_or(u64::MAX),
        slices,
        reports: [
            report(args.client.name(), side_a, a.counters().since(before.0)),
            report(other.name(), side_b, b.counters().since(before.1)),
        ],
    })
}

/// Closed loop: each of `--concurrency` workers sends one call at a time until `--duration`.
async fn closed_loop<C: AppClient>(
    client: &C,
    args: &BenchArgs,
    mix: Arc<Mix>,
) -> Result<(Tally, Histogram<u64>, Duration), CliError> {
    let start = Instant::now();
    let plan = Arc::new(Plan {
        mix,
        end: start + args.duration,
    });
    let progress = Arc::new(Progress::default());
    let workers: Vec<_> = (0..args.concurrency)
        .map(|index| {
            tokio::spawn(worker(
                client.clone(),
                Arc::clone(&plan),
                u64::from(index),
                Arc::clone(&progress),
            ))
        })
        .collect();
    let ticker = (!args.json)
        .then(|| tokio::spawn(show_progress(args.clone(), start, Arc::clone(&progress))));

    let drain = drain_limit(args);
    let joined =
        tokio::time::timeout_at(plan.end + drain, futures::future::join_all(workers)).await;
    let elapsed = start.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
        let _ = ticker.await;
    }
    let results = joined.map_err(|_| {
        CliError::runtime(format!(
            "calls still unanswered {} s after the end of the run: the client hung",
            drain.as_secs()
        ))
    })?;

    let mut totals = Totals::new();
    for result in results {
        totals.merge(task_result(result)?)?;
    }
    Ok((totals.tally, totals.histogram, elapsed))
}

async fn worker<C: AppClient>(
    mut client: C,
    plan: Arc<Plan>,
    index: u64,
    progress: Arc<Progress>,
) -> Totals {
    let mut commands = Commands::new(Arc::clone(&plan.mix), index);
    let mut totals = Totals::new();
    while Instant::now() < plan.end {
        let (outcome, latency) = timed_call(&mut client, commands.next_cmd()).await;
        progress.ops.fetch_add(1, Ordering::Relaxed);
        if outcome.is_error() {
            progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        totals.record(outcome, latency);
    }
    totals
}

/// A spinner line on stderr, cleared when the guard drops.
fn spinner_line() -> (ProgressBar, ClearOnDrop) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    (bar.clone(), ClearOnDrop(bar))
}

/// Redraws the progress line on stderr every 250 ms until aborted.
async fn show_progress(args: BenchArgs, start: Instant, progress: Arc<Progress>) {
    let (bar, _clear) = spinner_line();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut last_ops, mut last_at) = (0, start);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let ops = progress.ops.load(Ordering::Relaxed);
        let rate = (ops - last_ops) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        (last_ops, last_at) = (ops, now);
        bar.set_message(format!(
            "{} {} c={}  {:.1}/{:.1} s  ops {}  {:.0} ops/s  errors {}",
            args.client.name(),
            args.workload.name(),
            args.concurrency,
            now.duration_since(start).as_secs_f64(),
            args.duration.as_secs_f64(),
            ops,
            rate,
            progress.errors.load(Ordering::Relaxed),
        ));
        bar.tick();
    }
}

/// Redraws the open-loop progress line on stderr every 250 ms until aborted.
async fn show_open_progress(args: BenchArgs, rate: f64, timeline: Arc<Timeline>) {
    let (bar, _clear) = spinner_line();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let elapsed = timeline.start().elapsed();
        let total = timeline.sum(0, usize::MAX);
        bar.set_message(format!(
            "{} {} rate {rate:.0}/s c={}  {:.1}/{:.1} s  offered {}  ok {}  errors {}  dropped {}  attempts {}",
            args.client.name(),
            args.workload.name(),
            args.concurrency,
            elapsed.as_secs_f64(),
            args.duration.as_secs_f64(),
            total.offered,
            total.ok,
            total.failed + total.ambiguous,
            total.dropped,
            total.attempts,
        ));
        bar.tick();
    }
}

/// Clears the progress line when the ticker task ends (it is aborted, so cleanup lives in Drop).
struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
