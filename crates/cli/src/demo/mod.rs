//! `resilient-redis demo`: a local Redis topology, the resilient and the raw client side by side,
//! faults injected one after another, a live view, a table per fault and a chart.
//!
//! # Behavior
//! - `--scenario` picks what is shown: `faults` (the default, everything below), `overload`
//!   (see [`overload`]: three clients against a capacity-limited server, load stepping to 2x),
//!   or `cloud` (see [`cloud`]: a managed service's failover behind one hostname).
//! - `--topology` picks the demo (see [`Topology`]); without it the Sentinel demo runs when
//!   `redis-sentinel` is installed, else the standalone one (saying why).
//! - Standalone: starts a redis-server on a free loopback port through `redis-lab` (if
//!   `redis-server` is missing, says how to install it and exits 1) and injects [`Fault`]s.
//! - Sentinel and cluster: see [`topologies`] (SIGKILL of the master under load, the failover
//!   shown as phases of the live view, marked on the chart).
//! - Runs `--tasks` workers per client (default 50), each doing SET then GET on its own keys
//!   (`demo:{client}:{task}:{n}`), one call at a time. A worker that sees an error pauses 10 ms
//!   before its next call (as an app logging the error would), so a dead server does not turn
//!   into a busy loop that starves the machine. The raw client replaces a broken connection after
//!   an error (see [`crate::client`]); nothing is retried for it.
//! - Phases: a baseline, then each fault in order; each phase lasts while the fault is active
//!   and `--settle-ms` after it ends. About 20 s in all with the defaults for standalone, about
//!   10 s (plus 2 to 3 s to start the topology) for Sentinel and cluster.
//! - Prints a live view every 250 ms, then a table per fault, then writes
//!   `resilient-redis-demo.svg` into `--out` and prints its path.
//! - The table's "first ok after" column is the time from the end of each fault (for the restart:
//!   the lab saw the new server answer PING; for Sentinel: the demo received `+switch-master`;
//!   for cluster: another master serves the slot) to the client's first successful call.
//! - Exit 0 when the resilient client saw zero errors, else 1; Ctrl-C stops the demo and its
//!   servers (exit 130).

mod cloud;
mod faults;
mod live;
mod overload;
mod table;
mod timeline;
mod topologies;

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, ValueEnum};
use tokio::time::{Duration, Instant};

use crate::chart::{self, ChartData, FaultMark, Series};
use crate::client::{AppClient, ClientCounters, RawClient, connect_resilient, preflight};
use crate::error::CliError;
use crate::target::{Access, Target};
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
    /// What the demo shows: faults injected under load, or overload.
    #[arg(long, value_enum, default_value_t = Scenario::Faults)]
    scenario: Scenario,
    /// Which deployment to run for the faults scenario (default: sentinel when redis-sentinel is
    /// installed, else standalone).
    #[arg(long, value_enum, value_name = "KIND")]
    topology: Option<Topology>,
    /// Directory the chart is written to.
    #[arg(long, default_value = ".", value_name = "DIR")]
    out: PathBuf,
    /// Workers per client.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    tasks: u32,
    /// Baseline length, and how long each fault is watched after it ends, in ms.
    #[arg(long, default_value = "2500", value_parser = parse_millis, value_name = "MS")]
    settle_ms: Duration,
    /// Width of the chart's time buckets in ms (faults scenario; overload uses 1 s).
    #[arg(long, default_value = "250", value_parser = parse_millis, value_name = "MS")]
    bucket_ms: Duration,
    /// Overload: the capacity of the server (each client's proxy), in commands per second.
    #[arg(long, default_value_t = 2000, value_name = "OPS_PER_SEC",
          value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    capacity_ops_per_sec: u32,
    /// Overload: length of each load step (0.5x, 1x, 1.5x, 2x the capacity), whole seconds.
    #[arg(long, default_value = "5", value_parser = parse_whole_seconds, value_name = "SECS")]
    step_secs: Duration,
    /// Overload: concurrent callers per client.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    callers: u32,
}

/// What the demo shows (`--scenario`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Faults injected under load (client kill, stall, restart, busy script, or a failover).
    Faults,
    /// A capacity-limited server, offered load stepping to 2x its capacity; resilient, naive and
    /// raw clients side by side.
    Overload,
    /// A managed service's failover behind one hostname (the name moves to the new primary,
    /// open connections stay on the demoted node).
    Cloud,
}

/// Parses a whole number of seconds from 1 to 60.
fn parse_whole_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs @ 1..=60) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{text:?} is not a whole number of seconds from 1 to 60"
        )),
    }
}

/// The deployment the demo runs (`--topology`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Topology {
    /// One redis-server: client kill, stall, restart, busy script.
    Standalone,
    /// 1 master, 2 replicas, 3 sentinels (down-after 1000 ms): SIGKILL of the master.
    Sentinel,
    /// 3 masters + 3 replicas (cluster-node-timeout 1000 ms): SIGKILL of one master.
    Cluster,
}

impl Topology {
    /// `--topology` when given; else sentinel if `redis-sentinel` is on `path`, else standalone
    /// with the reason to print.
    fn resolve(
        chosen: Option<Topology>,
        path: Option<&std::ffi::OsStr>,
    ) -> (Topology, Option<String>) {
        match chosen {
            Some(topology) => (topology, None),
            None => match redis_lab::find_binary_in("redis-sentinel", path) {
                Ok(_) => (Topology::Sentinel, None),
                Err(_) => (
                    Topology::Standalone,
                    Some(format!(
                        "redis-sentinel is not installed: running the standalone demo \
                         (for the failover demo: {})",
                        redis_lab::INSTALL_HINT
                    )),
                ),
            },
        }
    }
}

/// Runs the demo; Ctrl-C stops it and the lab servers with it (exit 130).
pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    if args.scenario != Scenario::Faults && args.topology.is_some() {
        return Err(CliError::usage(
            "--topology goes with --scenario faults (overload and cloud run their own servers)",
        ));
    }
    let path = std::env::var_os("PATH");
    let (topology, why) = Topology::resolve(args.topology, path.as_deref());
    if let Some(why) = why
        && args.scenario == Scenario::Faults
    {
        println!("{why}");
    }
    let demo = async {
        std::fs::create_dir_all(&args.out).map_err(|err| {
            CliError::runtime(format!("cannot create --out {}: {err}", args.out.display()))
        })?;
        match (args.scenario, topology) {
            (Scenario::Overload, _) => overload::run(&args).await,
            (Scenario::Cloud, _) => cloud::run(&args).await,
            (Scenario::Faults, Topology::Standalone) => run_standalone(&args).await,
            (Scenario::Faults, Topology::Sentinel) => topologies::run_sentinel(&args).await,
            (Scenario::Faults, Topology::Cluster) => topologies::run_cluster(&args).await,
        }
    };
    tokio::select! {
        result = demo => result,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the demo dropped the lab topology, which kills its processes.
            eprintln!("\ninterrupted: the demo's redis processes have been stopped");
            Ok(ExitCode::from(130))
        }
    }
}

async fn run_standalone(args: &DemoArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    let mut server = redis_lab::RedisServer::start()
        .await
        .map_err(|err| CliError::runtime(format!("cannot start redis-server: {err}")))?;
    let url = server.url();
    println!("redis-server started at {url}");

    let target = Target::Standalone { url: url.clone() };
    let mut resilient = connect_resilient(&target, &Access::default(), None).await?;
    preflight(&mut resilient, &url).await?;
    let mut raw = RawClient::connect(&url, None).await?;
    preflight(&mut raw, &url).await?;

    let schedule = Fault::schedule();
    let planned = args.settle_ms
        + schedule
            .iter()
            .map(|fault| fault.expected_length() + args.settle_ms)
            .sum::<Duration>();
    let mut session = Session::start(args, &resilient, &raw, planned);
    session.baseline().await;
    for fault in schedule {
        let label = fault.label();
        let inject = async {
            fault.inject(&mut server).await?;
            Ok(None)
        };
        session.fault(label, fault.short_label(), inject).await?;
    }
    session.finish(server).await
}

/// A lab error as the demo's error, saying what failed.
pub(crate) fn lab_failed(what: &str) -> impl Fn(redis_lab::LabError) -> CliError + '_ {
    move |err| CliError::runtime(format!("{what}: {err}"))
}

/// What a fault leaves behind: the label of the phase that follows (watched for `--settle-ms`)
/// and the short label of a chart mark at the fault's end (e.g. a failover's switch).
pub(crate) type AfterFault = Option<(String, &'static str)>;

/// One demo run: both clients' workers, the dashboard, the rows of the table and the chart marks.
pub(crate) struct Session {
    args: DemoArgs,
    start: Instant,
    stop: Arc<AtomicBool>,
    dashboard: Dashboard,
    recorders: [Arc<Recorder>; 2],
    /// The resilient client's workers, then the raw client's.
    workers: [Vec<tokio::task::JoinHandle<()>>; 2],
    rows: Vec<PhaseRow>,
    marks: Vec<FaultMark>,
    failure: Option<CliError>,
}

impl Session {
    /// Starts `--tasks` workers per client; `planned` is the expected length of the whole run.
    pub(crate) fn start<R: AppClient, W: AppClient>(
        args: &DemoArgs,
        resilient: &R,
        raw: &W,
        planned: Duration,
    ) -> Session {
        // Room for slow phases: calls past the last bucket are clamped into it.
        let buckets = (planned * 2).as_nanos().div_ceil(args.bucket_ms.as_nanos()) as usize;
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut dashboard = Dashboard::new(start);
        let recorders = [(); 2].map(|()| Arc::new(Recorder::new(start, args.bucket_ms, buckets)));
        let workers = [
            spawn_workers(resilient, "resilient", args.tasks, &recorders[0], &stop),
            spawn_workers(raw, "raw", args.tasks, &recorders[1], &stop),
        ];
        dashboard.watch("resilient", &recorders[0], resilient.clone());
        dashboard.watch("raw", &recorders[1], raw.clone());
        Session {
            args: args.clone(),
            start,
            stop,
            dashboard,
            recorders,
            workers,
            rows: Vec::new(),
            marks: Vec::new(),
            failure: None,
        }
    }

    /// The baseline phase: `--settle-ms` without fault.
    pub(crate) async fn baseline(&mut self) {
        let before = self.dashboard.snapshot();
        self.dashboard
            .observe("baseline", tokio::time::sleep(self.args.settle_ms))
            .await;
        self.rows.push(PhaseRow::between(
            "baseline (no fault)".to_owned(),
            &before,
            &self.dashboard.snapshot(),
        ));
    }

    /// Runs one fault: `inject` is watched under `label` until it returns (the fault is over),
    /// then the phase it names (or `label`) is watched for `--settle-ms`. The chart marks the
    /// fault's interval with `short`, and the end with the second label of [`AfterFault`].
    ///
    /// # Errors
    /// The fault's own error, after its phase was recorded; later faults are skipped.
    pub(crate) async fn fault<F>(
        &mut self,
        label: String,
        short: &'static str,
        inject: F,
    ) -> Result<(), CliError>
    where
        F: Future<Output = Result<AfterFault, CliError>>,
    {
        if self.failure.is_some() {
            return Ok(());
        }
        let before = self.dashboard.snapshot();
        let injected_at = self.start.elapsed();
        let result = self.dashboard.observe(&label, inject).await;
        self.dashboard.arm_recovery();
        let over_at = self.start.elapsed();
        self.marks.push(FaultMark {
            start: injected_at,
            end: over_at,
            label: short,
        });
        let (phase, row_label) = match &result {
            Ok(Some((after, end_mark))) => {
                self.marks.push(FaultMark {
                    start: over_at,
                    end: over_at,
                    label: end_mark,
                });
                (after.clone(), format!("{label}, then {after}"))
            }
            _ => (label.clone(), label),
        };
        self.dashboard
            .observe(&phase, tokio::time::sleep(self.args.settle_ms))
            .await;
        let row = PhaseRow::between(row_label, &before, &self.dashboard.snapshot());
        self.rows
            .push(row.with_first_ok_after(self.dashboard.recovery()));
        if let Err(err) = result {
            self.failure = Some(err);
        }
        Ok(())
    }

    /// Stops the workers, then the lab `topology` (dropped here), and prints the table, the
    /// chart's path and the verdict: exit 0 iff the resilient client saw no error.
    ///
    /// # Behavior
    /// Workers get [`STOP_GRACE`] to finish their last call. Raw workers still waiting then are
    /// aborted and reported as hung (redis-rs's cluster connection has no response timeout by
    /// default); resilient workers still waiting fail the demo.
    ///
    /// # Errors
    /// A fault that could not be injected, or resilient workers that did not finish in time.
    pub(crate) async fn finish<T>(mut self, topology: T) -> Result<ExitCode, CliError> {
        self.dashboard.view.detach();
        let elapsed = self.start.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + STOP_GRACE;
        let mut hung = [0usize; 2];
        for (index, handles) in std::mem::take(&mut self.workers).into_iter().enumerate() {
            let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
            if tokio::time::timeout_at(deadline, futures::future::join_all(handles))
                .await
                .is_err()
            {
                hung[index] = aborts.iter().filter(|a| !a.is_finished()).count();
                aborts.iter().for_each(tokio::task::AbortHandle::abort);
            }
        }
        drop(topology);
        if let Some(err) = self.failure.take() {
            return Err(err);
        }
        if hung[0] > 0 {
            return Err(CliError::runtime(format!(
                "{} resilient workers still waiting on a call {} s after the demo ended: \
                 the resilient client hung",
                hung[0],
                STOP_GRACE.as_secs()
            )));
        }
        if hung[1] > 0 {
            println!(
                "raw: {} workers still waiting on a call {} s after the demo ended (hung; aborted)",
                hung[1],
                STOP_GRACE.as_secs()
            );
        }
        let recorders = [
            ("resilient", &*self.recorders[0]),
            ("raw", &*self.recorders[1]),
        ];
        report(&self.args, &self.rows, self.marks, elapsed, recorders)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topology_is_sentinel_only_when_redis_sentinel_is_installed() {
        assert_eq!(
            Topology::resolve(Some(Topology::Cluster), None),
            (Topology::Cluster, None)
        );
        let (topology, why) = Topology::resolve(None, None);
        assert_eq!(topology, Topology::Standalone);
        assert!(why.is_some_and(|why| why.contains("redis-sentinel")));

        let dir = std::env::temp_dir().join(format!("cli-demo-topology-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let fake = dir.join("redis-sentinel");
        std::fs::write(&fake, "#!/bin/sh\n").expect("fake binary");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let resolved = Topology::resolve(None, Some(dir.as_os_str()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(resolved, (Topology::Sentinel, None));
    }
}
