//! `resilient-redis lab-server` (hidden): a throwaway lab redis-server (or cluster) for scripts.
//!
//! # Behavior
//! - Starts a redis-server through `redis-lab` on a free loopback port and prints its URL as
//!   the first line of stdout; with `--cluster`, a cluster of 3 masters without replicas, and
//!   its node URLs joined by commas.
//! - Stays up until stdin reaches end-of-file (the parent script exits or closes the pipe) or
//!   SIGINT arrives, then stops the server; the server never outlives this process.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use crate::error::CliError;

/// `lab-server` options.
#[derive(clap::Args, Debug)]
pub(crate) struct LabServerArgs {
    /// A cluster of 3 masters instead of one server.
    #[arg(long)]
    cluster: bool,
}

/// What the lab runs.
enum Lab {
    Server(Box<redis_lab::RedisServer>),
    Cluster(redis_lab::RedisCluster),
}

/// Runs the lab server until stdin closes or Ctrl-C.
pub(crate) async fn run(args: LabServerArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    let lab = if args.cluster {
        let cluster = redis_lab::RedisCluster::start(redis_lab::ClusterConfig {
            masters: 3,
            replicas_per_master: 0,
            ..redis_lab::ClusterConfig::default()
        })
        .await
        .map_err(|err| CliError::runtime(format!("cannot start the cluster: {err}")))?;
        Lab::Cluster(cluster)
    } else {
        let server = redis_lab::RedisServer::start()
            .await
            .map_err(|err| CliError::runtime(format!("cannot start redis-server: {err}")))?;
        Lab::Server(Box::new(server))
    };
    {
        let url = match &lab {
            Lab::Server(server) => server.url(),
            Lab::Cluster(cluster) => cluster.urls().join(","),
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{url}");
        let _ = stdout.flush();
    }
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: blocking stdin reads have no place on the runtime's workers.
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
        let _ = closed_tx.send(());
    });
    tokio::select! {
        _ = closed_rx => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    match lab {
        Lab::Server(mut server) => {
            let _ = server.stop().await;
        }
        Lab::Cluster(cluster) => drop(cluster),
    }
    Ok(ExitCode::SUCCESS)
}
