//! The chaos report: a human table, or one JSON document with `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use super::check::{Anomaly, ServerLoss, Verdict, WorkloadRow};
use super::nemesis::Applied;
use super::schedule::{Schedule, Step};

/// One fault of the schedule and what became of it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FaultRow {
    /// As drawn.
    #[serde(flatten)]
    pub(crate) step: Step,
    /// The node it hit.
    pub(crate) node: Option<String>,
    /// When it really began and ended, in ms.
    pub(crate) started_ms: Option<u64>,
    /// When it was over.
    pub(crate) ended_ms: Option<u64>,
    /// Why it could not be applied.
    pub(crate) error: Option<String>,
    /// Callers failing when it ended.
    pub(crate) failing_callers: u32,
    /// From its end to the last of them succeeding again.
    pub(crate) recovery_ms: Option<u64>,
    /// From its end to the topology serving again.
    pub(crate) topology_recovery_ms: Option<u64>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    /// The run's settings and the client's counters.
    #[serde(flatten)]
    pub(crate) head: ReportHead,
    /// The faults, in order.
    pub(crate) schedule: Vec<FaultRow>,
    /// Per workload.
    pub(crate) workloads: Vec<WorkloadRow>,
    /// Calls made, over every workload.
    pub(crate) operations: u64,
    /// The client's own anomalies.
    pub(crate) anomalies: Vec<Anomaly>,
    /// Acknowledged writes Redis lost in failovers.
    pub(crate) server_losses: Vec<ServerLoss>,
    /// `pass` when there is no anomaly, else `fail`.
    pub(crate) verdict: &'static str,
}

impl Report {
    /// Puts the run's parts together.
    pub(crate) fn new(
        head: ReportHead,
        schedule: &Schedule,
        applied: &[Applied],
        verdict: Verdict,
    ) -> Report {
        let rows = schedule
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let done = applied.iter().find(|a| a.step == i);
                let recovery = verdict.recoveries.iter().find(|r| r.step == i);
                FaultRow {
                    step: step.clone(),
                    node: done.and_then(|a| a.node).map(|n| n.to_string()),
                    started_ms: done.map(|a| a.start_ms),
                    ended_ms: done.map(|a| a.end_ms),
                    error: done.and_then(|a| a.error.clone()),
                    failing_callers: recovery.map_or(0, |r| r.callers),
                    recovery_ms: recovery.and_then(|r| r.recovery_ms),
                    topology_recovery_ms: recovery.and_then(|r| r.topology_ms),
                }
            })
            .collect();
        let operations = verdict
            .workloads
            .iter()
            .map(|w| w.ok + w.failed + w.ambiguous)
            .sum();
        let pass = verdict.anomalies.is_empty();
        Report {
            head,
            schedule: rows,
            workloads: verdict.workloads,
            operations,
            anomalies: verdict.anomalies,
            server_losses: verdict.server_losses,
            verdict: if pass { "pass" } else { "fail" },
        }
    }

    /// Whether the checker found no anomaly of the client's own.
    pub(crate) fn passed(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The human report.
    pub(crate) fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos on {} for {:.0} s, seed {}{}",
            self.head.topology,
            self.head.duration_s,
            self.head.seed,
            if self.head.exactly_once {
                ", exactly-once counter"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "\nfaults (recovery: from the fault's end to the last failing caller's success; topology: to the lab serving again)"
        );
        for row in &self.schedule {
            let recovery = match (row.failing_callers, row.recovery_ms) {
                (0, _) => "no caller failing".to_owned(),
                (n, Some(ms)) => format!("{n} callers back in {ms} ms"),
                (n, None) => format!("{n} callers NOT back"),
            };
            let topology = row
                .topology_recovery_ms
                .map_or("-".to_owned(), |ms| format!("{ms} ms"));
            let node = row.node.as_deref().unwrap_or("-");
            let error = row
                .error
                .as_deref()
                .map_or(String::new(), |e| format!("  (not applied: {e})"));
            let _ = writeln!(
                out,
                "{}  [{node}]  {recovery}, topology {topology}{error}",
                row.step.describe()
            );
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "workload", "ok", "failed", "ambiguous", "checked", "final"
        );
        for w in &self.workloads {
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9}",
                w.workload,
                w.ok,
                w.failed,
                w.ambiguous,
                w.checked,
                w.final_value.map_or("-".to_owned(), |v| v.to_string())
            );
        }
        let _ = writeln!(
            out,
            "\n{} operations; the client retried {} times and reconnected {} times",
            self.operations, self.head.client_retries, self.head.client_reconnects
        );
        if self.server_losses.is_empty() {
            let _ = writeln!(out, "server losses: none");
        }
        for loss in &self.server_losses {
            let cause = match (loss.step, loss.fault) {
                (Some(step), Some(kind)) => format!("step {step} ({})", kind.name()),
                _ => "an unplanned failover".to_owned(),
            };
            let _ = writeln!(
                out,
                "server loss: {} {} write(s) taken back by the failover at {} ms, caused by {cause}",
                loss.count, loss.workload, loss.switch_ms
            );
        }
        if self.anomalies.is_empty() {
            let _ = writeln!(out, "anomalies: none");
        }
        for a in &self.anomalies {
            let _ = writeln!(out, "ANOMALY {} {}: {}", a.workload, a.kind, a.count);
            for example in &a.examples {
                let _ = writeln!(out, "    {example}");
            }
        }
        let _ = writeln!(
            out,
            "verdict: {}{}",
            self.verdict,
            if self.passed() {
                String::new()
            } else {
                format!(" (reproduce with --seed {})", self.head.seed)
            }
        );
        out
    }
}

/// The run's settings and the client's counters: the head of a [`Report`].
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ReportHead {
    /// The seed (`--seed` reproduces the run's schedule).
    pub(crate) seed: u64,
    /// The topology.
    pub(crate) topology: &'static str,
    /// The run's length, in seconds.
    pub(crate) duration_s: f64,
    /// `--exactly-once`.
    pub(crate) exactly_once: bool,
    /// `--durability`.
    pub(crate) durability: String,
    /// `--read-from`.
    pub(crate) read_from: String,
    /// The client's retries over the run.
    pub(crate) client_retries: u64,
    /// Reconnections (and, in a cluster, slot-map refreshes).
    pub(crate) client_reconnects: u64,
}
