//! `resilient-redis health`: connect, ask the client for its health, print it.
//!
//! # Behavior
//! - The target is `--url`, `--sentinel ... --master NAME` or `--cluster ...` (exactly one).
//! - With Sentinel the report adds the topology: the master the client follows, the replicas
//!   and the sentinels; with a cluster, `cluster_state` and every node with its role, flags,
//!   link state, slots and the client's breaker for it.
//! - Exit 0 when healthy, 1 when not (the reason goes to stderr and into the output), 2 on a
//!   usage error such as a malformed URL.
//! - An unreachable server is reported as unhealthy (same output shape), not as a crash.
//! - The report names where the credentials come from (`static (the URL's)` or `file PATH`
//!   with `--password-file`; never the secret) and the connections' name (`--client-name`).
//! - It shows the retry budget's balance (tokens, i.e. retries allowed now, of the maximum).
//! - `--watch` refreshes a one-screen view every `--interval-ms` until Ctrl-C (exit 0); with
//!   `--json`, one JSON object per refresh, one per line (see [`watch`]).

mod watch;

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::client::connect_resilient;
use crate::error::CliError;
use crate::target::{Access, Target, TargetArgs};
use crate::units::parse_millis;

/// Arguments of `resilient-redis health`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HealthArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print one JSON object instead of the human listing (with --watch: one per refresh, one
    /// per line).
    #[arg(long)]
    json: bool,
    /// Refresh a live view until Ctrl-C (exit 0) instead of printing once.
    #[arg(long)]
    watch: bool,
    /// With --watch: the time between two refreshes.
    #[arg(long, default_value = "1000", value_parser = parse_millis, value_name = "MS",
          requires = "watch")]
    interval_ms: Duration,
}

/// The printed health: the client's `Health` plus the URL, with durations in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct HealthReport {
    url: String,
    topology: &'static str,
    /// Where the credentials come from: `static (the URL's)` or `file PATH` (never the secret).
    credentials: String,
    /// The connections' name in `CLIENT LIST`, if one is set.
    connection_name: Option<String>,
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
    /// The retry budget's balance: retries it allows now (`None` when the budget is off).
    retry_budget_tokens: Option<f64>,
    /// The retry budget's maximum balance.
    retry_budget_max_tokens: Option<u32>,
    /// The adaptive throttle's local rejection probability now (`None` when it is off).
    throttle_probability: Option<f64>,
    last_error: Option<String>,
    /// Sentinel: the master the client follows.
    master: Option<String>,
    /// Sentinel: the replicas the sentinels report healthy.
    replicas: Option<Vec<String>>,
    /// Sentinel: the sentinels the client knows.
    sentinels: Option<Vec<String>>,
    /// Cluster: `cluster_state` (`ok` or `fail`).
    cluster_state: Option<String>,
    /// Cluster: every node.
    nodes: Option<Vec<NodeReport>>,
    /// Where reads go (`--read-from`).
    read_from: String,
    /// Read attempts the client sent to replicas.
    replica_reads: u64,
}

/// One cluster node in the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct NodeReport {
    addr: String,
    role: String,
    /// `ok`, or `failing` when flagged `fail`/`fail?`.
    state: &'static str,
    flags: Vec<String>,
    link_state: String,
    slots: u32,
    breaker: String,
    /// The round trip the client measures (with --read-from nearest or --max-replica-lag-ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_us: Option<u32>,
    /// A replica too far behind its master to be read from (--max-replica-lag-ms).
    lagging: bool,
}

impl HealthReport {
    fn from_health(target: &Target, health: resilient_redis::Health) -> HealthReport {
        HealthReport {
            url: target.describe(),
            topology: target.kind(),
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
            retry_budget_tokens: None,
            retry_budget_max_tokens: None,
            throttle_probability: health.throttle_probability,
            last_error: health.last_error,
            master: health.master,
            replicas: health.replicas,
            sentinels: health.sentinels,
            cluster_state: None,
            nodes: None,
            credentials: health.credentials,
            connection_name: health.connection_name,
            read_from: health.read_from,
            replica_reads: health.replica_reads,
        }
    }

    fn from_cluster(target: &Target, health: resilient_redis::ClusterHealth) -> HealthReport {
        let nodes = health
            .nodes
            .iter()
            .map(|node| NodeReport {
                addr: node.addr.clone(),
                role: node.role.clone(),
                state: if node.failing() { "failing" } else { "ok" },
                flags: node.flags.clone(),
                link_state: node.link_state.clone(),
                slots: node.slots,
                breaker: node.breaker.clone(),
                rtt_us: node.rtt_us,
                lagging: node.lagging,
            })
            .collect();
        HealthReport {
            url: target.describe(),
            topology: target.kind(),
            healthy: health.healthy,
            reason: health.reason,
            cluster_state: health.cluster_state,
            nodes: Some(nodes),
            ..HealthReport::default()
        }
    }

    /// Names where the credentials come from and the connections' name.
    fn with_access(self, access: &Access) -> HealthReport {
        HealthReport {
            credentials: access.credentials_source(),
            connection_name: access.client_name.clone(),
            ..self
        }
    }

    /// The adaptive throttle as the listings show it: `rejects 12.0 % locally`.
    fn throttle(&self) -> Option<String> {
        self.throttle_probability
            .map(|p| format!("rejects {:.1} % locally", p * 100.0))
    }

    /// The retry budget as the listings show it: `12.5 of 100 tokens`.
    fn budget(&self) -> Option<String> {
        self.retry_budget_tokens
            .map(|tokens| match self.retry_budget_max_tokens {
                Some(max) => format!("{tokens:.1} of {max} tokens"),
                None => format!("{tokens:.1} tokens"),
            })
    }

    fn unreachable(target: &Target, reason: String) -> HealthReport {
        HealthReport {
            url: target.describe(),
            topology: target.kind(),
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
        line(&mut out, "credentials", Some(self.credentials.clone()));
        line(
            &mut out,
            "connection name",
            Some(
                self.connection_name
                    .clone()
                    .unwrap_or_else(|| "none".to_owned()),
            ),
        );
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
        line(&mut out, "retry budget", self.budget());
        line(&mut out, "throttle", self.throttle());
        let connections = self.connections_up.zip(self.connections_total);
        line(
            &mut out,
            "connections up",
            connections.map(|(up, total)| format!("{up}/{total}")),
        );
        line(&mut out, "last error", self.last_error.clone());
        line(&mut out, "master", self.master.clone());
        line(
            &mut out,
            "replicas",
            self.replicas.as_ref().map(|r| list_or_none(r)),
        );
        line(
            &mut out,
            "sentinels",
            self.sentinels.as_ref().map(|s| list_or_none(s)),
        );
        line(
            &mut out,
            "reads",
            Some(format!(
                "{} ({} sent to replicas)",
                self.read_from, self.replica_reads
            )),
        );
        line(&mut out, "cluster state", self.cluster_state.clone());
        for node in self.nodes.iter().flatten() {
            line(
                &mut out,
                "node",
                Some(format!(
                    "{:<21} {:<7} {:<7} link {:<12} slots {:<5} breaker {}{}{}",
                    node.addr,
                    node.role,
                    node.state,
                    node.link_state,
                    node.slots,
                    node.breaker,
                    node.rtt_us
                        .map(|us| format!(" rtt {us} µs"))
                        .unwrap_or_default(),
                    if node.lagging { " lagging" } else { "" },
                )),
            );
        }
        out.pop();
        out
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Asks `client` for its health and makes the report.
async fn look(client: &resilient_redis::Client, target: &Target, access: &Access) -> HealthReport {
    let mut health = client.health().await;
    let mut report = match health.cluster.take() {
        Some(cluster) => HealthReport {
            read_from: health.read_from,
            replica_reads: health.replica_reads,
            connections_up: Some(health.connections_up),
            connections_total: Some(health.connections_total),
            ..HealthReport::from_cluster(target, cluster)
        },
        None => HealthReport::from_health(target, health),
    };
    if let Some(budget) = client.budget() {
        report.retry_budget_tokens = Some(budget.available());
        report.retry_budget_max_tokens = Some(budget.config().max_tokens);
    }
    report.with_access(access)
}

/// Runs the health check and prints the result (or, with `--watch`, keeps refreshing it).
pub(crate) async fn run(args: HealthArgs) -> Result<ExitCode, CliError> {
    let target = args.target.target()?;
    let access = args.target.access();
    if args.watch {
        return watch::run(&target, &access, args.interval_ms, args.json).await;
    }
    let report = match connect_resilient(&target, &access, None).await {
        Ok(client) => look(&client, &target, &access).await,
        Err(CliError::Runtime(reason)) => {
            HealthReport::unreachable(&target, reason).with_access(&access)
        }
        Err(usage) => return Err(usage),
    };
    crate::output::print_report(&report, args.json, || report.human())?;
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
        let target = Target::Standalone {
            url: "redis://127.0.0.1:1".into(),
        };
        let report = HealthReport::unreachable(&target, "connection refused".into());
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["healthy"], false);
        assert_eq!(json["reason"], "connection refused");
        assert!(report.human().contains("healthy            no"));
    }
}
