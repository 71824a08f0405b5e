//! End-to-end tests of `resilient-redis chaos`: the three topologies for 60 s each with fixed
//! seeds and every fault (what CI runs), the schedule's reproducibility, and bad input.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{run, stderr, stdout};

/// The runs CI makes, one per topology: the seed (any seed must pass; these are fixed so a
/// failure reproduces with `chaos --seed N`) and the flags. Standalone and cluster count through
/// exactly-once writes (`final == ok`, none ambiguous: stricter than a plain counter's bounds;
/// standalone's are batched, where chaos found a call outliving its deadline), Sentinel
/// through plain `INCR`, where a failover's losses must be told apart from the client's.
const RUNS: [(&str, &str, &[&str]); 3] = [
    ("standalone", "11", &["--exactly-once"]),
    ("sentinel", "12", &[]),
    ("cluster", "13", &["--exactly-once"]),
];

/// How long each run's workloads last.
const DURATION: &str = "60s";

/// Every topology, at once (one minute of CI), every fault and every workload: the checker
/// finds no anomaly of the client's own, the nemesis applied its faults, every workload
/// worked, and no lab process is left behind.
#[tokio::test]
async fn chaos_over_every_topology_finds_no_anomaly() {
    let runs = RUNS.map(|(topology, seed, flags)| async move {
        let mut args = vec![
            "chaos",
            "--topology",
            topology,
            "--duration",
            DURATION,
            "--seed",
            seed,
            "--json",
        ];
        args.extend_from_slice(flags);
        (topology, run(&args, Duration::from_secs(300)).await)
    });
    let [a, b, c] = runs;
    let (a, b, c) = tokio::join!(a, b, c);
    for (topology, output) in [a, b, c] {
        let text = stdout(&output);
        let log = stderr(&output);
        let report: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{topology}: no JSON report ({e}):\n{text}\n{log}"));
        let context = format!("{topology}:\n{text}\n{log}");
        assert_eq!(report["verdict"], "pass", "{context}");
        assert_eq!(output.status.code(), Some(0), "{context}");
        assert_eq!(
            report["anomalies"].as_array().map(Vec::len),
            Some(0),
            "{context}"
        );

        let schedule = report["schedule"].as_array().expect("a schedule");
        assert!(schedule.len() >= 6, "{context}");
        let applied = schedule.iter().filter(|s| s["error"].is_null()).count();
        assert!(
            applied * 4 >= schedule.len() * 3,
            "most faults applied: {context}"
        );
        let kinds: std::collections::HashSet<&str> =
            schedule.iter().filter_map(|s| s["kind"].as_str()).collect();
        assert!(kinds.len() >= 4, "{kinds:?}: {context}");

        let workloads = report["workloads"].as_array().expect("workloads");
        assert_eq!(workloads.len(), 6, "{context}");
        for w in workloads {
            assert!(w["ok"].as_u64().unwrap_or(0) >= 500, "{w}: {context}");
            assert!(w["checked"].as_u64().unwrap_or(0) >= 500, "{w}: {context}");
        }

        // The lab is gone: nothing listens on the nodes the faults hit.
        for node in schedule.iter().filter_map(|s| s["node"].as_str()) {
            let connect = tokio::net::TcpStream::connect(node).await;
            assert!(
                connect.is_err(),
                "{node} still listens after the run: {context}"
            );
        }
    }
}

/// The schedule is a function of the seed, printed before anything starts.
#[tokio::test]
async fn the_same_seed_gives_the_same_schedule() {
    let schedule = |seed: &'static str| async move {
        let args = [
            "chaos",
            "--topology",
            "cluster",
            "--seed",
            seed,
            "--schedule-only",
            "--json",
        ];
        let output = run(&args, Duration::from_secs(10)).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let report: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        report["schedule"].clone()
    };
    let (a, b, c) = tokio::join!(schedule("5"), schedule("5"), schedule("6"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.as_array().is_some_and(|s| s.len() >= 6), "{a}");
}

/// Bad input is a one-line usage error (exit 2), before any server starts.
#[tokio::test]
async fn bad_input_is_a_usage_error() {
    for args in [
        &[
            "chaos",
            "--topology",
            "standalone",
            "--durability",
            "replicated",
        ][..],
        &[
            "chaos",
            "--topology",
            "standalone",
            "--read-from",
            "replica",
        ],
        &["chaos", "--duration", "3s"],
        &["chaos", "--duration", "soon"],
        &["chaos", "--faults", "kill,meteor"],
        &["chaos", "--workload", "counter,lottery"],
        &["chaos", "--concurrency", "0"],
    ] {
        let output = run(args, Duration::from_secs(10)).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).is_empty(), "{args:?}");
    }
}
