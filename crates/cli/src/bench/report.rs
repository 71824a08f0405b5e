//! The result of a bench run: the JSON object (`--json`) and the human summary.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::ClientCounters;
use crate::open_loop::BucketReport;
use crate::workload::Tally;

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct LatencyUs {
    /// Median.
    pub(crate) p50: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Slowest call.
    pub(crate) max: u64,
}

impl LatencyUs {
    /// Reads the percentiles off a histogram of microseconds (all zero when it is empty).
    pub(crate) fn of(histogram: &Histogram<u64>) -> LatencyUs {
        if histogram.is_empty() {
            return LatencyUs::default();
        }
        LatencyUs {
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// One bench run, as printed by `bench --json`.
///
/// `ops = ok + failed + ambiguous` counts completed application-level calls. With `--rate`,
/// `offered = ops + dropped` as well.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct BenchReport {
    /// `"resilient"`, `"raw"` or `"naive"`.
    pub(crate) client: &'static str,
    /// `"get-set"`, `"incr"` or `"lpush"`.
    pub(crate) workload: &'static str,
    /// Whether the calls went through exactly-once idempotency tokens (`--exactly-once`).
    pub(crate) exactly_once: bool,
    /// When a write was acknowledged (`--durability`): `"fast"`, `"replicated"` or
    /// `"replicated:N"`; absent for the raw and naive clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) durability: Option<String>,
    /// Number of concurrent tasks.
    pub(crate) concurrency: usize,
    /// Measured wall time of the run, in seconds.
    pub(crate) duration_s: f64,
    /// Completed calls.
    pub(crate) ops: u64,
    /// Successful calls.
    pub(crate) ok: u64,
    /// Calls that failed and were surely not applied.
    pub(crate) failed: u64,
    /// Calls that failed and may have been applied.
    pub(crate) ambiguous: u64,
    /// Attempts the client repeated on its own during the run.
    pub(crate) retries: u64,
    /// Requests actually sent to the server, retries included (resilient and naive: counted by
    /// the client; raw: one per call sent).
    pub(crate) attempts: u64,
    /// Calls the client refused locally without sending them (adaptive throttling); they are
    /// also counted in `failed`.
    pub(crate) rejected_locally: u64,
    /// Writes whose `WAIT` reported too few replicas (`--durability replicated`): counted in
    /// `ambiguous` unless an exactly-once retry settled them.
    pub(crate) unconfirmed: u64,
    /// Replies from a master already known to be demoted (`--durability replicated`), which
    /// were not taken as successes.
    pub(crate) deposed_replies: u64,
    /// Transaction runs repeated because a watched key changed (`--workload cas` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) conflicts: Option<u64>,
    /// With `--workload get`: the read attempts each role served (replica reads are counted
    /// by the resilient client; every other read went to a master).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reads_by_role: Option<ReadsByRole>,
    /// `ops / duration_s`.
    pub(crate) ops_per_sec: f64,
    /// Successful calls per second: `ok / duration_s`.
    pub(crate) goodput_per_sec: f64,
    /// Latency of completed calls (with `--rate`: from each call's due time).
    pub(crate) latency_us: LatencyUs,
    /// Failed and ambiguous calls by error kind.
    pub(crate) errors_by_kind: BTreeMap<String, u64>,
    /// With `--rate`: the offered rate asked for, in calls per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate_per_sec: Option<f64>,
    /// With `--rate`: calls offered (due during the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) offered: Option<u64>,
    /// With `--rate`: offered calls that found every caller busy and were not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dropped: Option<u64>,
    /// With `--series`: per-second figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) series: Option<Vec<BucketReport>>,
}

/// Where the reads of a run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ReadsByRole {
    /// Read attempts served by masters.
    pub(crate) master: u64,
    /// Read attempts served by replicas.
    pub(crate) replica: u64,
}

/// What an open-loop run adds to the report.
#[derive(Clone, Debug)]
pub(crate) struct OpenLoopFigures {
    /// The offered rate asked for.
    pub(crate) rate_per_sec: f64,
    /// Calls offered.
    pub(crate) offered: u64,
    /// Calls dropped.
    pub(crate) dropped: u64,
    /// Per-second figures, when asked for.
    pub(crate) series: Option<Vec<BucketReport>>,
}

impl BenchReport {
    /// Assembles the report from the merged counts and the client's counters over the run.
    pub(crate) fn new(
        header: (&'static str, &'static str, usize),
        duration_s: f64,
        tally: &Tally,
        counters: ClientCounters,
        histogram: &Histogram<u64>,
    ) -> BenchReport {
        let (client, workload, concurrency) = header;
        let ops = tally.ops();
        let per_sec = |count: u64| {
            if duration_s > 0.0 {
                count as f64 / duration_s
            } else {
                0.0
            }
        };
        BenchReport {
            client,
            workload,
            exactly_once: false,
            durability: None,
            concurrency,
            duration_s,
            ops,
            ok: tally.ok,
            failed: tally.failed,
            ambiguous: tally.ambiguous,
            retries: counters.retries,
            attempts: counters.attempts.unwrap_or(ops),
            rejected_locally: tally.rejected_locally,
            unconfirmed: counters.unconfirmed,
            deposed_replies: counters.deposed_replies,
            conflicts: (workload == "cas").then_some(counters.conflicts),
            reads_by_role: (workload == "get").then(|| {
                let attempts = counters.attempts.unwrap_or(ops);
                ReadsByRole {
                    master: attempts.saturating_sub(counters.replica_reads),
                    replica: counters.replica_reads,
                }
            }),
            ops_per_sec: per_sec(ops),
            goodput_per_sec: per_sec(tally.ok),
            latency_us: LatencyUs::of(histogram),
            errors_by_kind: tally.errors_by_kind.clone(),
            rate_per_sec: None,
            offered: None,
            dropped: None,
            series: None,
        }
    }

    /// The same report with the figures of an open-loop run.
    pub(crate) fn with_open_loop(self, figures: OpenLoopFigures) -> BenchReport {
        BenchReport {
            rate_per_sec: Some(figures.rate_per_sec),
            offered: Some(figures.offered),
            dropped: Some(figures.dropped),
            series: figures.series,
            ..self
        }
    }

    /// The human-readable summary (several lines, no trailing newline).
    pub(crate) fn human(&self) -> String {
        let mut out = format!(
            "client {}{}  workload {}  concurrency {}  duration {:.2} s\n\
             ops {}  ok {}  failed {}  ambiguous {}  retries {}\n\
             throughput {:.0} ops/s\n\
             latency µs  p50 {}  p99 {}  p99.9 {}  max {}",
            self.client,
            if self.exactly_once {
                " (exactly-once)"
            } else {
                ""
            },
            self.workload,
            self.concurrency,
            self.duration_s,
            self.ops,
            self.ok,
            self.failed,
            self.ambiguous,
            self.retries,
            self.ops_per_sec,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.p999,
            self.latency_us.max,
        );
        if let (Some(rate), Some(offered), Some(dropped)) =
            (self.rate_per_sec, self.offered, self.dropped)
        {
            let amplification = if offered > 0 {
                self.attempts as f64 / offered as f64
            } else {
                0.0
            };
            out.push_str(&format!(
                "\noffered {offered} at {rate:.0}/s  dropped {dropped}  attempts {} ({amplification:.2} per offered call)  rejected locally {}\ngoodput {:.0} ok/s",
                self.attempts, self.rejected_locally, self.goodput_per_sec
            ));
        }
        if let Some(durability) = self.durability.as_deref().filter(|d| *d != "fast") {
            out.push_str(&format!(
                "\ndurability {durability}  unconfirmed {}  deposed replies {}",
                self.unconfirmed, self.deposed_replies
            ));
        }
        if let Some(conflicts) = self.conflicts {
            out.push_str(&format!(
                "\nconflicts {conflicts} (transaction runs repeated)"
            ));
        }
        if let Some(reads) = self.reads_by_role {
            let total = (reads.master + reads.replica).max(1);
            out.push_str(&format!(
                "\nreads served  master {}  replica {} ({:.1} %)",
                reads.master,
                reads.replica,
                100.0 * reads.replica as f64 / total as f64
            ));
        }
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            out.push_str(&format!("\nerrors by kind  {}", kinds.join("  ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::CallOutcome;

    #[test]
    fn json_has_the_documented_fields_and_ops_adds_up() {
        let mut tally = Tally::default();
        for _ in 0..7 {
            tally.record(CallOutcome::Ok);
        }
        tally.record(CallOutcome::Failed("BUSY".into()));
        tally.record(CallOutcome::Ambiguous("io".into()));
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for us in 1..=100 {
            histogram.record(us).expect("in range");
        }
        let report = BenchReport::new(
            ("raw", "get-set", 4),
            2.0,
            &tally,
            ClientCounters::default(),
            &histogram,
        );
        let json = serde_json::to_value(&report).expect("serializes");
        let object = json.as_object().expect("an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = vec![
            "client",
            "workload",
            "exactly_once",
            "concurrency",
            "duration_s",
            "ops",
            "ok",
            "failed",
            "ambiguous",
            "retries",
            "attempts",
            "rejected_locally",
            "ops_per_sec",
            "goodput_per_sec",
            "latency_us",
            "errors_by_kind",
            "unconfirmed",
            "deposed_replies",
        ];
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert_eq!(json["ops"], 9);
        assert_eq!(json["ops_per_sec"], 4.5);
        assert_eq!(json["latency_us"]["p50"], 50);
        assert_eq!(json["latency_us"]["max"], 100);
        assert_eq!(json["errors_by_kind"]["io"], 1);
        assert_eq!(json["attempts"], 9, "raw: one attempt per call sent");
        assert_eq!(json["goodput_per_sec"], 3.5);
        assert_eq!(
            (&json["unconfirmed"], &json["deposed_replies"]),
            (&0.into(), &0.into())
        );
        assert!(
            json.get("durability").is_none(),
            "only when --durability was given"
        );

        let open = report.with_open_loop(OpenLoopFigures {
            rate_per_sec: 6.0,
            offered: 12,
            dropped: 3,
            series: Some(Vec::new()),
        });
        let json = serde_json::to_value(&open).expect("serializes");
        assert_eq!(
            (&json["offered"], &json["dropped"], &json["rate_per_sec"]),
            (&12.into(), &3.into(), &6.0.into())
        );
        assert!(json["series"].is_array());
        assert!(open.human().contains("dropped 3"), "{}", open.human());
    }
}
