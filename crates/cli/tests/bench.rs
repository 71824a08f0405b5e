//! End-to-end tests of `bench` and `health` against lab servers: a standalone server, a
//! Sentinel topology and a cluster (each test starts its own on free loopback ports).

mod common;

use std::process::Output;
use std::time::Duration;

use redis_lab::{RedisCluster, RedisServer, SentinelTopology};
use serde_json::Value;
use tokio::time::Instant;

use common::{run, stderr, stdout};

/// Parses stdout as exactly one JSON object (one line, nothing else).
fn one_json_object(output: &Output) -> Value {
    let text = stdout(output);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stdout, got: {text}"
    );
    let value: Value = serde_json::from_str(lines[0]).expect("valid JSON");
    assert!(value.is_object(), "not an object: {value}");
    value
}

fn assert_bench_report(report: &Value, client: &str, workload: &str, concurrency: u64) {
    for field in [
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
    ] {
        assert!(report.get(field).is_some(), "missing {field}: {report}");
    }
    for field in ["p50", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][field].is_u64(),
            "latency_us.{field}: {report}"
        );
    }
    assert_eq!(report["client"], client);
    assert_eq!(report["workload"], workload);
    assert_eq!(report["concurrency"], concurrency);
    let count = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} not a count: {report}"))
    };
    assert_eq!(
        count("ops"),
        count("ok") + count("failed") + count("ambiguous"),
        "{report}"
    );
    assert!(count("ok") > 0, "{report}");
    assert!(report["errors_by_kind"].is_object());
    let duration = report["duration_s"].as_f64().expect("duration_s");
    assert!((0.9..5.0).contains(&duration), "{report}");
    let rate = report["ops_per_sec"].as_f64().expect("ops_per_sec");
    assert!(
        (rate - count("ops") as f64 / duration).abs() < 1.0,
        "{report}"
    );
}

/// `bench --url URL ARGS --duration 1 --json`, which must succeed: its one JSON object.
async fn bench_for_a_second(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["bench", "--url", url];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--duration", "1", "--json"]);
    let output = run(&all, Duration::from_secs(30)).await;
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    one_json_object(&output)
}

#[tokio::test]
async fn bench_json_is_one_object_with_the_fields() {
    let server = RedisServer::start().await.expect("lab server");
    let url = server.url();
    for client in ["resilient", "raw"] {
        let report = bench_for_a_second(&url, &["--client", client, "--concurrency", "8"]).await;
        assert_bench_report(&report, client, "get-set", 8);
    }
    let args = [
        "--workload",
        "incr",
        "--key",
        "it:counter",
        "--concurrency",
        "4",
    ];
    let report = bench_for_a_second(&url, &args).await;
    assert_bench_report(&report, "resilient", "incr", 4);
    let mut admin = server.admin().await.expect("admin connection");
    let value: u64 = redis::cmd("GET")
        .arg("it:counter")
        .query_async(&mut admin)
        .await
        .expect("GET");
    assert_eq!(
        value,
        report["ok"].as_u64().expect("ok"),
        "every successful INCR counted once"
    );
}

/// `bench TARGET_FLAG TARGET --client resilient --paired-with raw` in turns of 100 ms for 2 s
/// at 8 callers, which must succeed: its JSON object.
async fn paired_run(target_flag: &str, target: &str) -> Value {
    let args = [
        "bench",
        target_flag,
        target,
        "--client",
        "resilient",
        "--paired-with",
        "raw",
        "--slice-ms",
        "100",
        "--concurrency",
        "8",
        "--duration",
        "2",
        "--json",
    ];
    let output = run(&args, Duration::from_secs(30)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    one_json_object(&output)
}

/// `--paired-with`: both clients in one run, taking turns; every call is counted once (the
/// server's SET and GET counts equal the two reports' calls).
#[tokio::test]
async fn paired_bench_reports_both_clients_from_one_run() {
    let server = RedisServer::start().await.expect("lab server");
    let url = server.url();
    let report = paired_run("--url", &url).await;
    assert_eq!(report["slice_ms"], 100, "{report}");
    let slices = report["slices"].as_u64().expect("slices");
    assert!(slices >= 2 && slices.is_multiple_of(2), "{report}");
    let reports = report["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 2, "{report}");
    assert_bench_report(&reports[0], "resilient", "get-set", 8);
    assert_bench_report(&reports[1], "raw", "get-set", 8);
    let time = |i: usize| reports[i]["duration_s"].as_f64().expect("duration_s");
    assert!(
        (time(0) - time(1)).abs() < 0.5,
        "turns of equal length: {report}"
    );
    let ops: u64 = reports
        .iter()
        .map(|r| r["ops"].as_u64().expect("ops"))
        .sum();
    let mut admin = server.admin().await.expect("admin connection");
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .expect("INFO");
    let calls = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().expect("calls"))
    };
    assert_eq!(calls("set") + calls("get"), ops, "{stats}");
}

/// `--exactly-once` with the incr and lpush workloads: the server's count equals the successes,
/// and the mode is refused for other clients.
#[tokio::test]
async fn bench_exactly_once_counts_each_write_once() {
    let server = RedisServer::start().await.expect("lab server");
    let url = server.url();
    let mut admin = server.admin().await.expect("admin connection");
    for (workload, key, count) in [("incr", "xo:counter", "GET"), ("lpush", "xo:list", "LLEN")] {
        let args = [
            "--workload",
            workload,
            "--key",
            key,
            "--exactly-once",
            "--concurrency",
            "4",
        ];
        let report = bench_for_a_second(&url, &args).await;
        assert_bench_report(&report, "resilient", workload, 4);
        assert_eq!(report["exactly_once"], Value::Bool(true));
        let value: u64 = redis::cmd(count)
            .arg(key)
            .query_async(&mut admin)
            .await
            .expect("count");
        assert_eq!(value, report["ok"].as_u64().expect("ok"), "{workload}");
    }
    let output = run(
        &[
            "bench",
            "--url",
            &url,
            "--client",
            "raw",
            "--exactly-once",
            "--duration",
            "1",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--exactly-once"),
        "{}",
        stderr(&output)
    );
}

/// `--workload cas`: each call is a transaction incrementing `--key`; the server's value equals
/// the successes (no fault, so nothing ambiguous), the report counts the conflicts of 8 tasks on
/// one key, and the workload is refused for other clients.
#[tokio::test]
async fn bench_cas_increments_through_transactions() {
    let server = RedisServer::start().await.expect("lab server");
    let url = server.url();
    let args = [
        "--workload",
        "cas",
        "--key",
        "cas:counter",
        "--concurrency",
        "8",
    ];
    let report = bench_for_a_second(&url, &args).await;
    assert_bench_report(&report, "resilient", "cas", 8);
    let mut admin = server.admin().await.expect("admin connection");
    let value: u64 = redis::cmd("GET")
        .arg("cas:counter")
        .query_async(&mut admin)
        .await
        .expect("the counter");
    assert!(report["ok"].as_u64().expect("ok") > 0, "{report}");
    assert_eq!(value, report["ok"].as_u64().expect("ok"), "{report}");
    assert!(
        report["conflicts"].as_u64().expect("conflicts") > 0,
        "8 tasks on one key conflict: {report}"
    );
    let output = run(
        &[
            "bench",
            "--url",
            &url,
            "--client",
            "raw",
            "--workload",
            "cas",
            "--duration",
            "1",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("cas"), "{}", stderr(&output));
}

#[tokio::test]
async fn health_json_exit_codes_follow_the_server() {
    let mut server = RedisServer::start().await.expect("lab server");
    let url = server.url();
    let output = run(
        &["health", "--url", &url, "--json"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let health = one_json_object(&output);
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["role"], "master", "{health}");

    let output = run(&["health", "--url", &url], Duration::from_secs(20)).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout(&output).contains("healthy            yes"),
        "{}",
        stdout(&output)
    );

    server.stop().await.expect("stop");
    let started = Instant::now();
    let output = run(
        &["health", "--url", &url, "--json"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(10));
    let health = one_json_object(&output);
    assert_eq!(health["healthy"], false, "{health}");
    assert!(
        health["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{health}"
    );
    assert!(stderr(&output).contains("unhealthy"), "{}", stderr(&output));
}

fn sentinel_flags(topology: &SentinelTopology) -> String {
    topology
        .sentinel_addrs()
        .iter()
        .map(|addr| addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One Sentinel topology (1 master, 1 replica, 3 sentinels) for bench and health.
#[tokio::test]
async fn sentinel_bench_and_health_report_the_topology() {
    let topology = SentinelTopology::start(Default::default())
        .await
        .expect("sentinel topology");
    let sentinels = sentinel_flags(&topology);
    let master = topology.master_addr().await.expect("master").to_string();
    for client in ["resilient", "raw"] {
        let output = run(
            &[
                "bench",
                "--sentinel",
                &sentinels,
                "--master",
                "mymaster",
                "--client",
                client,
                "--concurrency",
                "8",
                "--duration",
                "1",
                "--json",
            ],
            Duration::from_secs(30),
        )
        .await;
        assert!(output.status.success(), "{client}: {}", stderr(&output));
        assert_bench_report(&one_json_object(&output), client, "get-set", 8);
    }

    let output = run(
        &[
            "health",
            "--sentinel",
            &sentinels,
            "--master",
            "mymaster",
            "--json",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let health = one_json_object(&output);
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["topology"], "sentinel", "{health}");
    assert_eq!(health["master"], master, "{health}");
    assert_eq!(health["role"], "master", "{health}");
    let replica = topology.servers()[1].addr().to_string();
    assert_eq!(health["replicas"], serde_json::json!([replica]), "{health}");
    let known = health["sentinels"].as_array().expect("sentinels listed");
    assert_eq!(known.len(), 3, "{health}");
    for addr in topology.sentinel_addrs() {
        assert!(
            known.contains(&Value::from(addr.to_string())),
            "{addr}: {health}"
        );
    }

    let output = run(
        &["health", "--sentinel", &sentinels, "--master", "mymaster"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("master             {master}")),
        "{text}"
    );
    assert!(text.contains("sentinels          "), "{text}");

    let output = run(
        &[
            "health",
            "--sentinel",
            &sentinels,
            "--master",
            "nosuchmaster",
            "--json",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(one_json_object(&output)["healthy"], false);
}

/// One cluster (3 masters, 3 replicas) for bench and health.
#[tokio::test]
async fn cluster_bench_and_health_report_the_nodes() {
    let cluster = RedisCluster::start(Default::default())
        .await
        .expect("cluster");
    let urls = cluster.urls().join(",");
    for client in ["resilient", "raw"] {
        let output = run(
            &[
                "bench",
                "--cluster",
                &urls,
                "--client",
                client,
                "--concurrency",
                "8",
                "--duration",
                "1",
                "--json",
            ],
            Duration::from_secs(30),
        )
        .await;
        assert!(output.status.success(), "{client}: {}", stderr(&output));
        assert_bench_report(&one_json_object(&output), client, "get-set", 8);
    }
    // The healthy-path comparison on a cluster: the resilient client and redis-rs's cluster
    // connection in turns, in one run.
    let report = paired_run("--cluster", &urls).await;
    let reports = report["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 2, "{report}");
    assert_bench_report(&reports[0], "resilient", "get-set", 8);
    assert_bench_report(&reports[1], "raw", "get-set", 8);

    let output = run(
        &["health", "--cluster", &urls, "--json"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let health = one_json_object(&output);
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["topology"], "cluster", "{health}");
    assert_eq!(health["cluster_state"], "ok", "{health}");
    let nodes = health["nodes"].as_array().expect("nodes listed");
    assert_eq!(nodes.len(), 6, "{health}");
    let role_count = |role: &str| nodes.iter().filter(|n| n["role"] == role).count();
    assert_eq!(
        (role_count("master"), role_count("replica")),
        (3, 3),
        "{health}"
    );
    let slots: u64 = nodes
        .iter()
        .map(|n| n["slots"].as_u64().expect("slots"))
        .sum();
    assert_eq!(slots, 16384, "{health}");
    assert!(nodes.iter().all(|n| n["state"] == "ok"), "{health}");

    let output = run(&["health", "--cluster", &urls], Duration::from_secs(20)).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("cluster state      ok"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("node ")).count(),
        6,
        "{text}"
    );

    // Pub/sub on the cluster, channels then shard channels: everything published arrives once.
    for sharded in [false, true] {
        let mut args = vec![
            "bench",
            "--cluster",
            &urls,
            "--workload",
            "pubsub",
            "--channels",
            "8",
            "--rate",
            "400",
            "--duration",
            "1",
            "--json",
        ];
        if sharded {
            args.push("--sharded");
        }
        let output = run(&args, Duration::from_secs(30)).await;
        assert!(output.status.success(), "{}", stderr(&output));
        let report = one_json_object(&output);
        assert_eq!(report["workload"], "pubsub", "{report}");
        assert_eq!(report["sharded"], sharded, "{report}");
        let count = |field: &str| report[field].as_u64().expect(field);
        assert!(count("published") >= 100, "{report}");
        assert!(count("received") >= count("published"), "{report}");
        for field in ["duplicates", "lost_outside_gaps", "gaps", "failed"] {
            assert_eq!(count(field), 0, "{field}: {report}");
        }
    }
    // A queue on the cluster (its lists in one slot): every item produced is consumed or
    // still queued, once.
    let output = run(
        &[
            "bench",
            "--cluster",
            &urls,
            "--workload",
            "queue",
            "--key",
            "{q}:jobs",
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--json",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report = one_json_object(&output);
    assert_eq!(report["workload"], "queue", "{report}");
    let count = |field: &str| report[field].as_u64().expect(field);
    assert!(count("produced") > 0 && count("consumed") > 0, "{report}");
    assert_eq!(
        count("consumed") + count("in_flight"),
        count("produced"),
        "{report}"
    );
    for field in [
        "missing",
        "doubled",
        "unknown",
        "failed",
        "ambiguous_pops",
        "ambiguous_pushes",
    ] {
        assert_eq!(count(field), 0, "{field}: {report}");
    }
    let output = run(
        &[
            "bench",
            "--cluster",
            &urls,
            "--client",
            "raw",
            "--workload",
            "pubsub",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("pubsub"), "{}", stderr(&output));
}
