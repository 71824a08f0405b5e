//! `resilient-redis demo`: a local redis-server, the resilient and the raw client side by side,
//! faults injected one after another, a live view, a table per fault and a chart.
//!
//! # Behavior
//! - Starts a redis-server on a free loopback port through `redis-lab` (if `redis-server` is
//!   missing, says how to install it and exits 1).
//! - Runs `--tasks` workers per client (default 50), each doing SET then GET on its own keys
//!   (`demo:{client}:{task}:{n}`), one call at a time. A worker that sees an error pauses 10 ms
//!   before its next call (as an app logging the error would), so a dead server does not turn
//!   into a busy loop that starves the machine. The raw client replaces a broken connection after
//!   an error (see [`crate::client`]); nothing is retried for it.
//! - Phases: a baseline, then each [`Fault`] in order; each phase lasts while the fault is active
//!   and `--settle-ms` after it ends. About 20 s in all with the defaults.
//! - Prints a live view every 250 ms, then a table per fault, then writes
//!   `resilient-redis-demo.svg` into `--out` and prints its path.
//! - The table's "first ok after" column is the time from the end of each fault (for the restart:
//!   the lab saw the new server answer PING) to the client's first successful call.
//! - Exit 0 when the resilient client saw zero errors, else 1; Ctrl-C stops the demo and its
//!   server (exit 130).

mod faults;
mod live;
mod table;
mod timeline;

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use tokio::time::{Duration, Instant};

use crate::chart::{self, ChartData, FaultMark, Series};
use crate::client::{AppClient, ClientCounters, RawClient, connect_resilient, preflight};
use crate::error::CliError;
use crate::units::parse_millis;
use crate::workload::timed_call;
use faults::Fault;
use live::{ClientLine, LiveView};
use table::{PhaseRow, render_table};
use timeline::{Recorder, Totals};

/// The chart's file name inside `--out`.
pub(crate) const CHART_FILE: &str = "resilient-redis-demo.svg";
/// How long a worker pauses after an error it saw.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(10);
/// How often the live view is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// How long workers may take to finish their last call once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `resilient-redis demo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Directory the chart is written to.
    #[arg(long, default_value = ".", value_name = "DIR")]
    out: PathBuf,
    /// Workers per client.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    tasks: u32,
    /// Baseline length, and how long each fault is watched after it ends, in ms.
    #[arg(long, default_value = "2500", value_parser = parse_millis, value_name = "MS")]
    settle_ms: Duration,
    /// Width of the chart's time buckets in ms.
    #[arg(long, default_value = "250", value_parser = parse_millis, value_name = "MS")]
    bucket_ms: Duration,
}

/// Runs the demo; Ctrl-C stops it and the lab server with it (exit 130).
pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    tokio::select! {
        result = run_demo(args) => result,
        _ = tokio::signal::ctrl_c() => {
            // Dropping `run_demo` dropped the lab server, which kills its redis-server.
            eprintln!("\ninterrupted: the demo's redis-server has been stopped");
            Ok(ExitCode::from(130))
        }
    }
}

async fn run_demo(args: DemoArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    std::fs::create_dir_all(&args.out).map_err(|err| {
        CliError::runtime(format!("cannot create --out {}: {err}", args.out.display()))
    })?;
    let mut server = redis_lab::RedisServer::start()
        .await
        .map_err(|err| CliError::runtime(format!("cannot start redis-server: {err}")))?;
    let url = server.url();
    println!("redis-server started at {url}");

    let mut resilient = connect_resilient(&url, None).await?;
    preflight(&mut resilient, &url).await?;
    let mut raw = RawClient::connect(&url, None).await?;
    preflight(&mut raw, &url).await?;

    let schedule = Fault::schedule();
    let planned = args.settle_ms
        + schedule
            .iter()
            .map(|fault| fault.expected_length() + args.settle_ms)
            .sum::<Duration>();
    // Room for slow restarts: calls past the last bucket are clamped into it.
    let buckets = (planned * 2).as_nanos().div_ceil(args.bucket_ms.as_nanos()) as usize;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut dashboard = Dashboard::new(start);
    let resilient_recorder = Arc::new(Recorder::new(start, args.bucket_ms, buckets));
    let raw_recorder = Arc::new(Recorder::new(start, args.bucket_ms, buckets));
    let mut workers = spawn_workers(
        &resilient,
        "resilient",
        args.tasks,
        &resilient_recorder,
        &stop,
    );
    workers.extend(spawn_workers(&raw, "raw", args.tasks, &raw_recorder, &stop));
    dashboard.watch("resilient", &resilient_recorder, resilient.clone());
    dashboard.watch("raw", &raw_recorder, raw.clone());

    let mut rows = Vec::new();
    let mut marks = Vec::new();
    let baseline = dashboard.snapshot();
    dashboard
        .observe("baseline", tokio::time::sleep(args.settle_ms))
        .await;
    rows.push(PhaseRow::between(
        "baseline (no fault)".to_owned(),
        &baseline,
        &dashboard.snapshot(),
    ));
    let mut fault_error = None;
    for fault in schedule {
        let before = dashboard.snapshot();
        let label = fault.label();
        let injected_at = start.elapsed();
        let result = dashboard.observe(&label, fault.inject(&mut server)).await;
        dashboard.arm_recovery();
        let over_at = start.elapsed();
        marks.push(FaultMark {
            start: injected_at,
            end: over_at,
            label: fault.short_label(),
        });
        dashboard
            .observe(&label, tokio::time::sleep(args.settle_ms))
            .await;
        let row = PhaseRow::between(label, &before, &dashboard.snapshot());
        rows.push(row.with_first_ok_after(dashboard.recovery()));
        if let Err(err) = result {
            fault_error = Some(err);
            break;
        }
    }
    dashboard.view.detach();
    let elapsed = start.elapsed();

    stop.store(true, Ordering::Relaxed);
    let finished = tokio::time::timeout(STOP_GRACE, futures::future::join_all(workers)).await;
    drop(server);
    if let Some(err) = fault_error {
        return Err(err);
    }
    if finished.is_err() {
        return Err(CliError::runtime(format!(
            "workers still waiting on a call {} s after the demo ended: a client hung",
            STOP_GRACE.as_secs()
        )));
    }

    let recorders = [("resilient", &*resilient_recorder), ("raw", &*raw_recorder)];
    report(&args, &rows, marks, elapsed, recorders)
}

/// Prints the table per fault, writes the chart and the verdict; exit 0 iff the resilient client
/// (the first recorder) saw no error.
fn report(
    args: &DemoArgs,
    rows: &[PhaseRow],
    marks: Vec<FaultMark>,
    elapsed: Duration,
    recorders: [(&'static str, &Recorder); 2],
) -> Result<ExitCode, CliError> {
    println!();
    println!("{}", render_table(rows));

    let used = elapsed.as_nanos().div_ceil(args.bucket_ms.as_nanos()) as usize;
    let data = ChartData {
        bucket: args.bucket_ms,
        series: recorders
            .iter()
            .map(|(name, recorder)| Series {
                name,
                points: recorder.series(used),
            })
            .collect(),
        marks,
    };
    let path = args.out.join(CHART_FILE);
    chart::write_svg(&path, &data)?;
    let shown = std::path::absolute(&path).unwrap_or(path);
    println!("chart: {}", shown.display());

    let [(_, resilient), (_, raw)] = recorders.map(|(name, recorder)| (name, recorder.totals()));
    println!(
        "resilient: {} calls, {} errors | raw: {} calls, {} errors",
        resilient.ops, resilient.errors, raw.ops, raw.errors
    );
    if resilient.errors == 0 {
        println!("OK: the resilient client saw no errors through every fault.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "FAIL: the resilient client returned {} errors to the application.",
            resilient.errors
        );
        Ok(ExitCode::from(1))
    }
}

fn spawn_workers<C: AppClient>(
    client: &C,
    name: &'static str,
    tasks: u32,
    recorder: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|task| {
            tokio::spawn(worker(
                client.clone(),
                name,
                task,
                Arc::clone(recorder),
                Arc::clone(stop),
            ))
        })
        .collect()
}

/// One demo worker: SET then GET on its own keys until told to stop.
async fn worker<C: AppClient>(
    mut client: C,
    name: &'static str,
    task: u32,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let value = vec![b'v'; 64];
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("demo:{name}:{task}:{}", n % 64);
        n += 1;
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(&value);
        let mut get = redis::cmd("GET");
        get.arg(&key);
        for cmd in [&set, &get] {
            let (outcome, _latency) = timed_call(&mut client, cmd).await;
            recorder.record(&outcome, Instant::now());
            if outcome.is_error() {
                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
            }
        }
    }
}

/// A client as the dashboard sees it.
struct Watched {
    name: &'static str,
    recorder: Arc<Recorder>,
    counters: Box<dyn Fn() -> ClientCounters + Send + Sync>,
    last_ok: u64,
    last_at: Instant,
    last_rate: f64,
}

/// Totals and client counters of every watched client at one instant.
pub(crate) type Snapshot = Vec<(&'static str, Totals, ClientCounters)>;

/// Drives the live view while the demo waits on faults and timers.
struct Dashboard {
    start: Instant,
    view: LiveView,
    clients: Vec<Watched>,
}

impl Dashboard {
    fn new(start: Instant) -> Dashboard {
        let tty = std::io::stdout().is_terminal();
        Dashboard {
            start,
            view: LiveView::new(tty, Duration::from_secs(1)),
            clients: Vec::new(),
        }
    }

    fn watch<C: AppClient>(&mut self, name: &'static str, recorder: &Arc<Recorder>, client: C) {
        self.clients.push(Watched {
            name,
            recorder: Arc::clone(recorder),
            counters: Box::new(move || client.counters()),
            last_ok: 0,
            last_at: self.start,
            last_rate: 0.0,
        });
    }

    /// Notes, from now on, each client's first successful call (the fault just ended).
    fn arm_recovery(&self) {
        let now = Instant::now();
        for client in &self.clients {
            client.recorder.arm(now);
        }
    }

    /// Per client, the time from [`arm_recovery`](Self::arm_recovery) to its first success.
    fn recovery(&self) -> Vec<Option<Duration>> {
        self.clients
            .iter()
            .map(|c| c.recorder.first_ok_after_arm())
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        self.clients
            .iter()
            .map(|c| (c.name, c.recorder.totals(), (c.counters)()))
            .collect()
    }

    /// Awaits `future`, redrawing the live view every [`REDRAW_EVERY`] meanwhile.
    async fn observe<F: Future>(&mut self, phase: &str, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut tick = tokio::time::interval(REDRAW_EVERY);
        loop {
            tokio::select! {
                output = &mut future => {
                    self.redraw(phase);
                    return output;
                }
                _ = tick.tick() => self.redraw(phase),
            }
        }
    }

    fn redraw(&mut self, phase: &str) {
        let now = Instant::now();
        let lines: Vec<ClientLine> = self
            .clients
            .iter_mut()
            .map(|c| {
                let totals = c.recorder.totals();
                let counters = (c.counters)();
                let ok = totals.ops - totals.errors;
                // Rates over less than half a redraw interval are mostly noise: keep the last one.
                let window = now.duration_since(c.last_at);
                if window >= REDRAW_EVERY / 2 {
                    c.last_rate = (ok - c.last_ok) as f64 / window.as_secs_f64();
                    (c.last_ok, c.last_at) = (ok, now);
                }
                ClientLine {
                    name: c.name,
                    ok_per_sec: c.last_rate,
                    ops: totals.ops,
                    errors: totals.errors,
                    retries: counters.retries,
                    reconnects: counters.reconnects,
                }
            })
            .collect();
        self.view
            .draw(now.duration_since(self.start), phase, &lines);
    }
}
