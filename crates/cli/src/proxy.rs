//! `resilient-redis proxy`: the lab's fault-injecting TCP proxy, for testing your own application.
//!
//! # Behavior
//! - Listens on `--listen` and forwards to `--upstream`, applying the faults given on the command
//!   line. It is a test tool: keep it on loopback or a test network.
//! - Prints one line when ready (`proxy listening on ADDR -> UPSTREAM`), then runs until Ctrl-C,
//!   SIGTERM, or end of standard input, and prints its counters (text, or one JSON object with
//!   `--json`) before exiting 0.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use redis_lab::FaultProxy;

use crate::error::CliError;

/// `proxy` arguments.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Address to listen on, e.g. 127.0.0.1:7000.
    #[arg(long)]
    listen: SocketAddr,
    /// The Redis server to forward to, e.g. 127.0.0.1:6379.
    #[arg(long)]
    upstream: SocketAddr,
    /// Answer `-THROTTLED` to commands beyond this rate (per second, all connections together).
    #[arg(long)]
    throttle_ops_per_sec: Option<u32>,
    /// Latency added to every chunk in both directions, in milliseconds.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Cut every Nth accepted connection in the middle of a reply.
    #[arg(long)]
    drop_every: Option<u64>,
    /// Accept connections but never answer (and never forward).
    #[arg(long)]
    blackhole: bool,
    /// Print the counters on exit as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also stop when standard input reaches end-of-file (for scripts that hold a pipe).
    #[arg(long)]
    until_stdin_closes: bool,
}

/// Runs the proxy until a signal (or end of stdin with `--until-stdin-closes`).
pub(crate) async fn run(args: ProxyArgs) -> Result<ExitCode, CliError> {
    if args.throttle_ops_per_sec == Some(0) {
        return Err(CliError::usage("--throttle-ops-per-sec must be at least 1"));
    }
    if args.drop_every == Some(0) {
        return Err(CliError::usage("--drop-every must be at least 1"));
    }
    let proxy = FaultProxy::start_on(args.listen, args.upstream)
        .await
        .map_err(|e| CliError::runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    proxy.set_throttle(args.throttle_ops_per_sec);
    proxy.set_latency(args.latency_ms.map(Duration::from_millis));
    proxy.set_drop_every(args.drop_every);
    proxy.set_blackhole(args.blackhole);
    println!("proxy listening on {} -> {}", proxy.addr(), args.upstream);

    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    if args.until_stdin_closes {
        // A plain thread: blocking stdin reads have no place on the runtime's workers.
        std::thread::spawn(move || {
            let mut sink = std::io::sink();
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut sink);
            let _ = closed_tx.send(());
        });
    }
    let stdin_closed = async {
        match closed_rx.await {
            Ok(()) => {}
            // No watcher: wait for a signal only.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::runtime(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = stdin_closed => {}
    }
    let s = proxy.stats();
    if args.json {
        let json = serde_json::json!({
            "connections_accepted": s.connections_accepted,
            "connections_dropped": s.connections_dropped,
            "commands_forwarded": s.commands_forwarded,
            "commands_throttled": s.commands_throttled,
            "bytes_to_server": s.bytes_to_server,
            "bytes_to_client": s.bytes_to_client,
            "bytes_blackholed": s.bytes_blackholed,
        });
        println!("{json}");
    } else {
        println!(
            "connections accepted {}, dropped {}; commands forwarded {}, throttled {}; bytes to server {}, to client {}, blackholed {}",
            s.connections_accepted,
            s.connections_dropped,
            s.commands_forwarded,
            s.commands_throttled,
            s.bytes_to_server,
            s.bytes_to_client,
            s.bytes_blackholed
        );
    }
    Ok(ExitCode::SUCCESS)
}
