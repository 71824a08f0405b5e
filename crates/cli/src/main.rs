//! The `resilient-redis` command-line tool: `demo`, `bench`, `health`, `proxy` and `chaos`.
//!
//! `main` only parses the command line, starts the runtime and maps the outcome to an exit code:
//! 0 success, 1 runtime failure (or, for `health`/`demo`, an unhealthy server / errors seen),
//! 2 usage error. Each subcommand lives in its own module.

mod bench;
mod chaos;
mod chart;
mod client;
mod demo;
mod error;
mod health;
mod lab_server;
mod metrics_page;
mod open_loop;
mod output;
mod proxy;
mod target;
mod units;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "resilient-redis", version, propagate_version = true)]
#[command(
    about = "resilient-redis: a Redis client that survives dropped connections, restarts and stalls.\n\
                   Start with `resilient-redis demo`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local Redis topology (Sentinel when redis-sentinel is installed), run the resilient
    /// and the raw client side by side, inject faults and show what each client saw (under a
    /// minute). `--scenario overload`: the resilient, naive and raw clients against a
    /// capacity-limited server, offered load stepping up to 2x its capacity.
    Demo(demo::DemoArgs),
    /// Benchmark of one client against a server, a Sentinel master or a cluster: closed-loop, or
    /// open-loop at a fixed offered rate with --rate.
    Bench(bench::BenchArgs),
    /// Seeded random faults (kills, pauses, partitions, failovers, slot migrations, ...) over a
    /// lab topology while workloads run through the resilient client, then a check of the
    /// history against the final state; exit 1 when the client lost, duplicated or invented
    /// anything. `--seed N` reproduces a run's schedule.
    Chaos(chaos::ChaosArgs),
    /// Connect, check the server and print the client's health; exit 1 when unhealthy. With
    /// --watch, refresh a live view (or, with --json, one JSON line per refresh) until Ctrl-C.
    Health(health::HealthArgs),
    /// A fault-injecting TCP proxy in front of a Redis server, to test your own application:
    /// latency, throttling (`-THROTTLED`), dropped connections, a black hole. Prints its counters
    /// on exit.
    Proxy(proxy::ProxyArgs),
    /// Start a throwaway lab redis-server (or with --cluster a cluster of 3 masters), print its
    /// URL (the comma-separated node URLs), keep it up until stdin closes or Ctrl-C.
    #[command(hide = true)]
    LabServer(lab_server::LabServerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Health(args) => health::run(args).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Proxy(args) => proxy::run(args).await,
            Command::LabServer(args) => lab_server::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Client events (reconnects, retries, ambiguous failures) go to stderr when `RUST_LOG` is set,
/// e.g. `RUST_LOG=resilient_redis=info`; nothing is logged otherwise.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn report(err: &CliError) -> ExitCode {
    eprintln!("error: {err}");
    err.exit_code()
}
