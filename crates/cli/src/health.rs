//! `resilient-redis health`: connect, ask the client for its health, print it.
//!
//! # Behavior
//! - Exit 0 when healthy, 1 when not (the reason goes to stderr and into the output), 2 on a
//!   usage error such as a malformed URL.
//! - An unreachable server is reported as unhealthy (same output shape), not as a crash.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::client::connect_resilient;
use crate::error::CliError;

/// Arguments of `resilient-redis health`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HealthArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379
    #[arg(long)]
    url: String,
    /// Print one JSON object instead of the human listing.
    #[arg(long)]
    json: bool,
}

/// The printed health: the client's `Health` plus the URL, with durations in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct HealthReport {
    url: String,
    healthy: bool,
    reason: Option<String>,
    ping_rtt_ms: Option<f64>,
    role: Option<String>,
    server_version: Option<String>,
    connected_clients: Option<u64>,
    used_memory_bytes: Option<u64>,
    breaker: Option<String>,
    connections_up: Option<usize>,
    connections_total: Option<usize>,
    last_error: Option<String>,
}

impl HealthReport {
    fn from_health(url: &str, health: resilient_redis::Health) -> HealthReport {
        HealthReport {
            url: url.to_owned(),
            healthy: health.healthy,
            reason: health.reason,
            ping_rtt_ms: health.ping_rtt.map(millis),
            role: health.role,
            server_version: health.server_version,
            connected_clients: health.connected_clients,
            used_memory_bytes: health.used_memory_bytes,
            breaker: Some(health.breaker),
            connections_up: Some(health.connections_up),
            connections_total: Some(health.connections_total),
            last_error: health.last_error,
        }
    }

    fn unreachable(url: &str, reason: String) -> HealthReport {
        HealthReport {
            url: url.to_owned(),
            healthy: false,
            reason: Some(reason),
            ..HealthReport::default()
        }
    }

    fn human(&self) -> String {
        fn line(out: &mut String, name: &str, value: Option<String>) {
            if let Some(value) = value {
                out.push_str(&format!("{name:<18} {value}\n"));
            }
        }
        let mut out = String::new();
        line(&mut out, "url", Some(self.url.clone()));
        line(
            &mut out,
            "healthy",
            Some(if self.healthy { "yes" } else { "no" }.to_owned()),
        );
        line(&mut out, "reason", self.reason.clone());
        line(
            &mut out,
            "ping rtt",
            self.ping_rtt_ms.map(|ms| format!("{ms:.3} ms")),
        );
        line(&mut out, "role", self.role.clone());
        line(&mut out, "server version", self.server_version.clone());
        line(
            &mut out,
            "connected clients",
            self.connected_clients.map(|n| n.to_string()),
        );
        line(
            &mut out,
            "used memory",
            self.used_memory_bytes.map(|n| format!("{n} bytes")),
        );
        line(&mut out, "breaker", self.breaker.clone());
        let connections = self.connections_up.zip(self.connections_total);
        line(
            &mut out,
            "connections up",
            connections.map(|(up, total)| format!("{up}/{total}")),
        );
        line(&mut out, "last error", self.last_error.clone());
        out.pop();
        out
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Runs the health check and prints the result.
pub(crate) async fn run(args: HealthArgs) -> Result<ExitCode, CliError> {
    let report = match connect_resilient(&args.url, None).await {
        Ok(client) => HealthReport::from_health(&args.url, client.health().await),
        Err(CliError::Runtime(reason)) => HealthReport::unreachable(&args.url, reason),
        Err(usage) => return Err(usage),
    };
    if args.json {
        let json = serde_json::to_string(&report)
            .map_err(|err| CliError::runtime(format!("cannot encode the report: {err}")))?;
        println!("{json}");
    } else {
        println!("{}", report.human());
    }
    if report.healthy {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "unhealthy: {}",
            report.reason.as_deref().unwrap_or("no reason given")
        );
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_report_is_unhealthy_with_the_reason() {
        let report = HealthReport::unreachable("redis://127.0.0.1:1", "connection refused".into());
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["healthy"], false);
        assert_eq!(json["reason"], "connection refused");
        assert!(report.human().contains("healthy            no"));
    }
}
