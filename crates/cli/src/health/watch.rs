//! `resilient-redis health --watch`: the client's health, refreshed until Ctrl-C.
//!
//! # Behavior
//! - One client is connected and asked for its health every `--interval-ms` (default 1000);
//!   the first view comes at once. A refresh that takes longer than the interval delays the
//!   next one (no burst to catch up).
//! - On a terminal the screen is cleared and the view redrawn (ANSI); otherwise each view is
//!   printed after the last, separated by a blank line. With `--json` each refresh prints the
//!   report `health --json` prints, on one line (NDJSON).
//! - The view: health, role, ping rtt, breaker, retry budget, pool, last error, reads and, for a
//!   cluster, each node with its role, state, rtt, lag and breaker.
//! - A server that cannot be reached is shown as unhealthy and the client is connected again at
//!   the next refresh; the watch goes on. Only a usage error ends it early (exit 2).
//! - Ctrl-C ends it, even during a refresh, with exit 0.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::pin::pin;
use std::process::ExitCode;

use tokio::time::{Duration, Instant, MissedTickBehavior};

use super::{HealthReport, look};
use crate::client::connect_resilient;
use crate::error::CliError;
use crate::target::{Access, Target};

/// Clears the screen and moves the cursor home.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Refreshes the health of `target` every `interval` until Ctrl-C.
pub(super) async fn run(
    target: &Target,
    access: &Access,
    interval: Duration,
    json: bool,
) -> Result<ExitCode, CliError> {
    let redraw = !json && std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut client = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Polled first in every turn, so the handler is in place before the first view is printed.
    let mut stop = pin!(tokio::signal::ctrl_c());
    loop {
        let next = async {
            tick.tick().await;
            refresh(&mut client, target, access).await
        };
        let report = tokio::select! {
            biased;
            stopped = &mut stop => {
                return match stopped {
                    Ok(()) => Ok(ExitCode::SUCCESS),
                    Err(err) => Err(CliError::runtime(format!("cannot wait for Ctrl-C: {err}"))),
                };
            }
            report = next => report?,
        };
        let text = if json {
            serde_json::to_string(&report)
                .map_err(|err| CliError::runtime(format!("cannot encode the report: {err}")))?
        } else {
            view(&report, interval, started.elapsed())
        };
        let mut out = std::io::stdout().lock();
        let written = if redraw {
            writeln!(out, "{CLEAR}{text}")
        } else if json {
            writeln!(out, "{text}")
        } else {
            writeln!(out, "{text}\n")
        };
        // A closed stdout (the reader went away) ends the watch like Ctrl-C.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// One look: connects first when there is no client yet (or the last try failed).
async fn refresh(
    client: &mut Option<resilient_redis::Client>,
    target: &Target,
    access: &Access,
) -> Result<HealthReport, CliError> {
    let client = match client {
        Some(client) => client,
        None => match connect_resilient(target, access, None).await {
            Ok(connected) => client.insert(connected),
            Err(CliError::Runtime(reason)) => {
                return Ok(HealthReport::unreachable(target, reason).with_access(access));
            }
            Err(usage) => return Err(usage),
        },
    };
    Ok(look(client, target, access).await)
}

/// The one-screen view of `report`.
fn view(report: &HealthReport, interval: Duration, elapsed: Duration) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = writeln!(out, "{name:<14} {value}");
        }
    };
    line(
        "health --watch",
        Some(format!(
            "{} ({})  every {} ms  +{:.1} s  Ctrl-C to stop",
            report.url,
            report.topology,
            interval.as_millis(),
            elapsed.as_secs_f64()
        )),
    );
    line(
        "healthy",
        Some(match (report.healthy, &report.reason) {
            (true, _) => "yes".to_owned(),
            (false, Some(reason)) => format!("no: {reason}"),
            (false, None) => "no".to_owned(),
        }),
    );
    line("role", report.role.clone());
    line(
        "ping rtt",
        report.ping_rtt_ms.map(|ms| format!("{ms:.3} ms")),
    );
    line("breaker", report.breaker.clone());
    line("retry budget", report.budget());
    line("throttle", report.throttle());
    line(
        "pool",
        report
            .connections_up
            .zip(report.connections_total)
            .map(|(up, total)| format!("{up}/{total} connections up")),
    );
    line("last error", report.last_error.clone());
    line(
        "reads",
        (!report.read_from.is_empty()).then(|| {
            format!(
                "{} ({} sent to replicas)",
                report.read_from, report.replica_reads
            )
        }),
    );
    line("master", report.master.clone());
    line("cluster state", report.cluster_state.clone());
    for node in report.nodes.iter().flatten() {
        line(
            "node",
            Some(format!(
                "{:<21} {:<7} {:<7} rtt {:<9} lag {:<7} breaker {}",
                node.addr,
                node.role,
                node.state,
                node.rtt_us
                    .map(|us| format!("{us} µs"))
                    .unwrap_or_else(|| "-".to_owned()),
                if node.lagging { "behind" } else { "ok" },
                node.breaker,
            )),
        );
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_shows_the_live_figures() {
        let report = HealthReport {
            url: "redis://127.0.0.1:6379".to_owned(),
            topology: "standalone",
            healthy: true,
            ping_rtt_ms: Some(0.25),
            role: Some("master".to_owned()),
            breaker: Some("closed".to_owned()),
            connections_up: Some(1),
            connections_total: Some(2),
            retry_budget_tokens: Some(9.5),
            retry_budget_max_tokens: Some(100),
            read_from: "master".to_owned(),
            ..HealthReport::default()
        };
        let text = view(&report, Duration::from_millis(500), Duration::from_secs(3));
        for expected in [
            "every 500 ms  +3.0 s",
            "healthy        yes",
            "role           master",
            "ping rtt       0.250 ms",
            "breaker        closed",
            "retry budget   9.5 of 100 tokens",
            "pool           1/2 connections up",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
        assert!(!text.ends_with('\n'));
    }
}
