//! The result of a bench run: the JSON object (`--json`) and the human summary.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

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
/// `ops = ok + failed + ambiguous` counts completed application-level calls.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct BenchReport {
    /// `"resilient"` or `"raw"`.
    pub(crate) client: &'static str,
    /// `"get-set"` or `"incr"`.
    pub(crate) workload: &'static str,
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
    /// `ops / duration_s`.
    pub(crate) ops_per_sec: f64,
    /// Latency of completed calls.
    pub(crate) latency_us: LatencyUs,
    /// Failed and ambiguous calls by error kind.
    pub(crate) errors_by_kind: BTreeMap<String, u64>,
}

impl BenchReport {
    /// Assembles the report from the merged counts.
    pub(crate) fn new(
        header: (&'static str, &'static str, usize),
        duration_s: f64,
        tally: &Tally,
        retries: u64,
        histogram: &Histogram<u64>,
    ) -> BenchReport {
        let (client, workload, concurrency) = header;
        let ops = tally.ops();
        BenchReport {
            client,
            workload,
            concurrency,
            duration_s,
            ops,
            ok: tally.ok,
            failed: tally.failed,
            ambiguous: tally.ambiguous,
            retries,
            ops_per_sec: if duration_s > 0.0 {
                ops as f64 / duration_s
            } else {
                0.0
            },
            latency_us: LatencyUs::of(histogram),
            errors_by_kind: tally.errors_by_kind.clone(),
        }
    }

    /// The human-readable summary (several lines, no trailing newline).
    pub(crate) fn human(&self) -> String {
        let mut out = format!(
            "client {}  workload {}  concurrency {}  duration {:.2} s\n\
             ops {}  ok {}  failed {}  ambiguous {}  retries {}\n\
             throughput {:.0} ops/s\n\
             latency µs  p50 {}  p99 {}  p99.9 {}  max {}",
            self.client,
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
        let report = BenchReport::new(("raw", "get-set", 4), 2.0, &tally, 0, &histogram);
        let json = serde_json::to_value(&report).expect("serializes");
        let object = json.as_object().expect("an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = vec![
            "client",
            "workload",
            "concurrency",
            "duration_s",
            "ops",
            "ok",
            "failed",
            "ambiguous",
            "retries",
            "ops_per_sec",
            "latency_us",
            "errors_by_kind",
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
    }
}
