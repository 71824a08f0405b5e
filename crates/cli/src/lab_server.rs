//! `resilient-redis lab-server` (hidden): a throwaway lab redis-server for scripts.
//!
//! # Behavior
//! - Starts a redis-server through `redis-lab` on a free loopback port and prints its URL as
//!   the first line of stdout.
//! - Stays up until stdin reaches end-of-file (the parent script exits or closes the pipe) or
//!   SIGINT arrives, then stops the server; the server never outlives this process.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use crate::error::CliError;

/// Runs the lab server until stdin closes or Ctrl-C.
pub(crate) async fn run() -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    let mut server = redis_lab::RedisServer::start()
        .await
        .map_err(|err| CliError::runtime(format!("cannot start redis-server: {err}")))?;
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", server.url());
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
    let _ = server.stop().await;
    Ok(ExitCode::SUCCESS)
}
