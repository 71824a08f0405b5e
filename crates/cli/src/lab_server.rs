//! `resilient-redis lab-server` (hidden): a throwaway lab redis-server (or cluster) for scripts.
//!
//! # Behavior
//! - Starts a redis-server through `redis-lab` on a free loopback port and prints its URL as
//!   the first line of stdout; with `--cluster`, a cluster of 3 masters without replicas, and
//!   its node URLs joined by commas. With `--replicas N`, every master gets N replicas (the URL
//!   is still the master's), attached and counted by their master before the URL is printed.
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
    /// Replicas per master (0 to 5).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=5))]
    replicas: u8,
}

/// What the lab runs: a server (and its replicas), or a cluster.
enum Lab {
    Server(Box<redis_lab::RedisServer>, Vec<redis_lab::RedisServer>),
    Cluster(redis_lab::RedisCluster),
}

/// Runs the lab server until stdin closes or Ctrl-C.
pub(crate) async fn run(args: LabServerArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    let lab = if args.cluster {
        let cluster = redis_lab::RedisCluster::start(redis_lab::ClusterConfig {
            masters: 3,
            replicas_per_master: usize::from(args.replicas),
            ..redis_lab::ClusterConfig::default()
        })
        .await
        .map_err(|err| CliError::runtime(format!("cannot start the cluster: {err}")))?;
        Lab::Cluster(cluster)
    } else {
        let server = redis_lab::RedisServer::start()
            .await
            .map_err(|err| CliError::runtime(format!("cannot start redis-server: {err}")))?;
        let replicas = start_replicas(&server, args.replicas).await?;
        Lab::Server(Box::new(server), replicas)
    };
    {
        let url = match &lab {
            Lab::Server(server, _) => server.url(),
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
        Lab::Server(mut server, mut replicas) => {
            for replica in &mut replicas {
                let _ = replica.stop().await;
            }
            let _ = server.stop().await;
        }
        Lab::Cluster(cluster) => drop(cluster),
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `count` replicas of `master` and waits until each is in sync and the master counts
/// them all (`connected_slaves`), so a durable write at once waits for every one.
async fn start_replicas(
    master: &redis_lab::RedisServer,
    count: u8,
) -> Result<Vec<redis_lab::RedisServer>, CliError> {
    const SYNC: std::time::Duration = std::time::Duration::from_secs(30);
    let failed =
        |err: redis_lab::LabError| CliError::runtime(format!("cannot start a replica: {err}"));
    let mut replicas = Vec::new();
    for _ in 0..count {
        let replica = redis_lab::RedisServer::start().await.map_err(failed)?;
        replica.replicaof(Some(master)).await.map_err(failed)?;
        replica.wait_link_up(SYNC).await.map_err(failed)?;
        replicas.push(replica);
    }
    let end = tokio::time::Instant::now() + SYNC;
    loop {
        let seen = master
            .info_field("replication", "connected_slaves")
            .await
            .map_err(failed)?;
        if seen == count.to_string() {
            return Ok(replicas);
        }
        if tokio::time::Instant::now() >= end {
            return Err(CliError::runtime(format!(
                "the master counts {seen} of {count} replicas after {SYNC:?}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
