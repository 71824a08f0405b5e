//! `resilient-redis chaos`: seeded random faults over a lab topology while workloads run
//! through the resilient client, then a check of the history against the final state.
//!
//! # Behavior
//! - Prints the schedule first: a pure function of `--seed`, the topology, `--duration` and
//!   `--faults` ([`schedule`]); the same seed gives the same schedule. Without `--seed` one is
//!   drawn and printed.
//! - Starts its own lab ([`lab`]), starts the workloads ([`workloads`]) on a runtime of their
//!   own (its own thread, so callers in tight loops cannot hold up the nemesis or the watcher),
//!   applies the faults ([`nemesis`]) while the watcher ([`watch`]) records who owns each slot
//!   and whether the topology serves, stops the workloads at `--duration`, waits for the
//!   topology to settle, reads the final state on the masters and checks it ([`check`]).
//! - Prints the report ([`report`]), or with `--json` one JSON document on stdout (progress
//!   goes to stderr); `--schedule-only` prints the schedule and exits. Exit status 0 only when the checker found no anomaly of the client's own;
//!   1 otherwise or when the lab fails; 2 for a usage error. Ctrl-C stops the run and its
//!   servers (exit 130), as SIGTERM does (exit 143).

mod check;
mod history;
mod lab;
mod nemesis;
mod report;
mod schedule;
mod watch;
mod workloads;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use crate::client::connect_resilient;
use crate::error::CliError;
use crate::target::Access;
use check::Rules;
use history::Clock;
use lab::{Lab, TopologyKind};
use report::{Report, ReportHead};
use schedule::{FaultKind, Schedule};
use workloads::{Plan, WorkloadKind};

/// How long the topology gets to settle after the run before the final read.
const SETTLE: Duration = Duration::from_secs(60);

/// `chaos` options.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// The lab topology to start.
    #[arg(long, value_enum, default_value = "standalone")]
    topology: TopologyKind,
    /// How long the workloads run, e.g. 60, 60s, 2m.
    #[arg(long, default_value = "60s", value_parser = crate::units::parse_seconds)]
    duration: Duration,
    /// The schedule's seed (drawn and printed when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// The fault kinds to draw from (default: every one the topology can take).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// The workloads (default: all).
    #[arg(long = "workload", value_enum, value_delimiter = ',')]
    workloads: Vec<WorkloadKind>,
    /// Tasks per workload.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// Calls per second per task while healthy.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// The client's deadline per call, in ms: long enough by default to outlast any fault the
    /// nemesis holds (at most 4 s) and a failover, so an exactly-once write is never left
    /// ambiguous by a deadline.
    #[arg(long, default_value = "10000", value_parser = crate::units::parse_millis)]
    deadline_ms: Duration,
    /// The counter workload writes through exactly-once writes (then final == ok).
    #[arg(long)]
    exactly_once: bool,
    /// Where read-only commands go (sentinel and cluster): master, replica-preferred, ...
    #[arg(long, value_name = "MODE", value_parser = parse_read_from)]
    read_from: Option<resilient_redis::ReadFrom>,
    /// When a write is acknowledged: fast, replicated or replicated:N (sentinel and cluster).
    #[arg(long, value_name = "MODE", value_parser = parse_durability)]
    durability: Option<resilient_redis::Durability>,
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
    /// Print the schedule (JSON with --json) and exit, without starting anything.
    #[arg(long)]
    schedule_only: bool,
}

fn parse_read_from(s: &str) -> Result<resilient_redis::ReadFrom, String> {
    resilient_redis::ReadFrom::parse(s)
        .ok_or_else(|| format!("{s:?}: expected {}", resilient_redis::ReadFrom::EXPECTED))
}

fn parse_durability(s: &str) -> Result<resilient_redis::Durability, String> {
    s.parse().map_err(|e: resilient_redis::Error| e.to_string())
}

/// Runs `chaos`.
pub(crate) async fn run(args: ChaosArgs) -> Result<ExitCode, CliError> {
    let replicated = matches!(
        args.durability,
        Some(resilient_redis::Durability::Replicated { .. })
    );
    let replica_reads = args
        .read_from
        .as_ref()
        .is_some_and(|r| *r != resilient_redis::ReadFrom::Master);
    if args.topology == TopologyKind::Standalone && (replicated || replica_reads) {
        return Err(CliError::usage(
            "--durability replicated and --read-from need replicas: use --topology sentinel or cluster",
        ));
    }
    if args.duration < schedule::BASELINE + schedule::TAIL {
        return Err(CliError::usage(format!(
            "--duration must be at least {} s",
            (schedule::BASELINE + schedule::TAIL).as_secs()
        )));
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let kinds = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let mut workload_kinds = if args.workloads.is_empty() {
        WorkloadKind::ALL.to_vec()
    } else {
        args.workloads.clone()
    };
    workload_kinds.sort();
    workload_kinds.dedup();

    let shape = lab::shape_of(args.topology);
    let schedule = Schedule::draw(seed, shape, args.duration, &kinds);
    if args.schedule_only {
        if args.json {
            let json = serde_json::json!({ "seed": seed, "schedule": schedule.steps });
            println!("{json}");
        } else {
            println!("seed {seed}");
            for step in &schedule.steps {
                println!("{}", step.describe());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "chaos: {} for {} s, seed {seed}; the schedule ({} faults):",
        args.topology.name(),
        args.duration.as_secs(),
        schedule.steps.len()
    );
    for step in &schedule.steps {
        eprintln!("{}", step.describe());
    }
    eprintln!("starting the {} lab ...", args.topology.name());
    let mut lab = Lab::start(args.topology).await?;
    // SIGTERM (a CI timeout, a soak stopped) stops the lab as Ctrl-C does.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::runtime(format!("cannot watch SIGTERM: {e}")))?;
    let outcome = tokio::select! {
        outcome = run_on(&mut lab, &args, seed, &schedule, workload_kinds, Rules {
            exactly_once: args.exactly_once,
            replicated,
            replica_reads,
            run_ms: args.duration.as_millis() as u64,
            cluster: args.topology == TopologyKind::Cluster,
        }) => outcome,
        _ = tokio::signal::ctrl_c() => {
            drop(lab);
            eprintln!("interrupted: the lab is stopped");
            return Ok(ExitCode::from(130));
        }
        _ = term.recv() => {
            drop(lab);
            eprintln!("terminated: the lab is stopped");
            return Ok(ExitCode::from(143));
        }
    };
    drop(lab);
    let report = outcome?;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::runtime(format!("cannot write the report: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", report.human());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The run itself, on a started lab.
async fn run_on(
    lab: &mut Lab,
    args: &ChaosArgs,
    seed: u64,
    schedule: &Schedule,
    workload_kinds: Vec<WorkloadKind>,
    rules: Rules,
) -> Result<Report, CliError> {
    let access = Access {
        durability: args.durability,
        read_from: args.read_from.clone(),
        ..Access::default()
    };
    let plan = Plan {
        kinds: workload_kinds.clone(),
        tasks: args.concurrency,
        rate: args.rate,
        exactly_once: args.exactly_once,
        deadline: args.deadline_ms,
    };
    let clock = Clock::start();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let target = lab.target();
    let workers = std::thread::spawn(move || -> Result<_, CliError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| CliError::runtime(format!("cannot start the workload runtime: {e}")))?;
        runtime.block_on(async move {
            let client = connect_resilient(&target, &access, Some(plan.deadline)).await?;
            let running = workloads::start(&client, &plan, clock).await?;
            let _ = ready_tx.send(());
            let _ = stop_rx.await;
            let recorded = running.stop().await?;
            let stats = client.stats();
            Ok((recorded, stats))
        })
    });
    // The workloads are up (or failed to start: then the sender is gone).
    let _ = ready_rx.await;
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch::watch(
        lab.probe(),
        clock,
        stop_watch.clone(),
        rules.replicated,
    ));
    let keys = workloads::keys::all(args.concurrency);
    eprintln!("running the workloads and the nemesis ...");
    let applied = nemesis::run(lab, schedule, clock, &keys).await;
    tokio::time::sleep_until(clock.at(rules.run_ms)).await;
    let _ = stop_tx.send(());
    let (recorded, stats) = tokio::task::spawn_blocking(move || workers.join())
        .await
        .map_err(|e| CliError::runtime(format!("the workload thread failed: {e}")))?
        .map_err(|_| CliError::runtime("the workload thread panicked"))??;
    stop_watch.store(true, Ordering::Relaxed);
    let watched = watcher
        .await
        .map_err(|e| CliError::runtime(format!("the watcher failed: {e}")))?;
    eprintln!("waiting for the topology to settle ...");
    lab.settle(SETTLE).await?;
    let mut reader = lab.reader().await?;
    let state = check::read_final(&mut reader, &workload_kinds, args.concurrency).await?;
    let verdict = check::check(&recorded, &state, &watched, &applied, &rules);
    let head = ReportHead {
        seed,
        topology: args.topology.name(),
        duration_s: args.duration.as_secs_f64(),
        exactly_once: args.exactly_once,
        durability: match args.durability {
            Some(resilient_redis::Durability::Replicated { replicas, .. }) => match replicas {
                Some(n) => format!("replicated:{n}"),
                None => "replicated".to_owned(),
            },
            _ => "fast".to_owned(),
        },
        read_from: args
            .read_from
            .as_ref()
            .map_or("master".to_owned(), |r| format!("{r:?}")),
        client_retries: stats.retries,
        client_reconnects: stats.reconnects + stats.refreshes,
    };
    Ok(Report::new(head, schedule, &applied, verdict))
}
