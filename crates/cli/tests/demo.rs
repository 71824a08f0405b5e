//! End-to-end tests of the fault tools: `demo` with short phases (standalone, Sentinel and
//! cluster failovers) and the `proxy` subcommand in front of a lab server.

mod common;

use std::time::Duration;

use redis_lab::RedisServer;
use serde_json::Value;
use tokio::process::Command;
use tokio::time::Instant;

use common::{BIN, run, stderr, stdout};

/// The whole demo with short phases (about 10 s): every fault runs, the resilient client sees no
/// error, the raw client does, the table and the chart are produced.
#[tokio::test]
async fn demo_with_short_phases_runs_every_fault() {
    let out =
        std::env::temp_dir().join(format!("resilient-redis-demo-test-{}", std::process::id()));
    let out_arg = out.to_string_lossy().into_owned();
    let output = run(
        &[
            "demo",
            "--topology",
            "standalone",
            "--settle-ms",
            "500",
            "--tasks",
            "10",
            "--out",
            &out_arg,
        ],
        Duration::from_secs(60),
    )
    .await;
    let text = stdout(&output);
    let chart = std::fs::read_to_string(out.join("resilient-redis-demo.svg"));
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", stderr(&output));
    for label in [
        "CLIENT KILL TYPE normal",
        "DEBUG SLEEP 1.5 s",
        "SHUTDOWN NOSAVE",
        "busy Lua script 1 s",
        "chart: ",
    ] {
        assert!(text.contains(label), "{label} missing from: {text}");
    }
    assert!(
        !text.contains('\x1b'),
        "escape codes on a non-terminal stdout"
    );
    let raw_errors: u64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("resilient: ")
                .and_then(|rest| rest.split("| raw: ").nth(1))
        })
        .and_then(|raw| raw.split(", ").nth(1))
        .and_then(|errors| errors.trim_end_matches(" errors").parse().ok())
        .expect("summary line");
    assert!(raw_errors > 0, "the raw client saw no fault: {text}");
    let svg = chart.expect("chart written");
    assert!(svg.starts_with("<svg") && svg.contains("restart"));
}

/// Runs `demo <selection>` (e.g. `--topology sentinel`) with short phases; checks the failover
/// phases, the verdict and the chart marks.
async fn short_failover_demo(selection: &[&str], phases: &[&str], marks: &[&str]) {
    let topology = selection.join("-").replace("--", "");
    let out = std::env::temp_dir().join(format!(
        "resilient-redis-demo-{topology}-{}",
        std::process::id()
    ));
    let out_arg = out.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut args = vec!["demo"];
    args.extend_from_slice(selection);
    args.extend_from_slice(&["--settle-ms", "500", "--tasks", "10", "--out", &out_arg]);
    let output = run(&args, Duration::from_secs(60)).await;
    let took = started.elapsed();
    let text = stdout(&output);
    let chart = std::fs::read_to_string(out.join("resilient-redis-demo.svg"));
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", stderr(&output));
    assert!(
        took < Duration::from_secs(30),
        "{topology} demo took {took:?}"
    );
    for phase in phases.iter().chain(&["chart: ", "OK: "]) {
        assert!(text.contains(phase), "{phase} missing from: {text}");
    }
    let svg = chart.expect("chart written");
    for mark in marks {
        assert!(svg.contains(mark), "{mark} not marked on the chart");
    }
}

#[tokio::test]
async fn sentinel_demo_shows_the_kill_and_the_switch() {
    short_failover_demo(
        &["--topology", "sentinel"],
        &["killed (SIGKILL)", "+switch-master to 127.0.0.1:"],
        &["master killed", "switch"],
    )
    .await;
}

/// The cluster demo: a master's SIGKILL and its replica's promotion, with no error for the
/// resilient client (it once stalled here in about 1 run in 3, inside redis-rs's cluster
/// connection task; keyed calls now use the client's own per-node connections).
#[tokio::test]
async fn cluster_demo_shows_the_kill_and_the_promotion() {
    short_failover_demo(
        &["--topology", "cluster"],
        &["killed (SIGKILL)", "promoted"],
        &["master killed", "promoted"],
    )
    .await;
}

/// The managed-cloud demo: a failover behind one hostname, then a password rotation; the raw
/// client keeps writing to the demoted node, then reconnects with the old password; the
/// resilient client follows the name and reads the new password, with no error.
#[tokio::test]
async fn cloud_demo_follows_a_failover_and_a_rotation() {
    short_failover_demo(
        &["--scenario", "cloud"],
        &[
            "failover behind the hostname",
            "A demoted (READONLY)",
            "password rotated",
            "new password only",
        ],
        &["failover", "A demoted", "rotation", "rotated"],
    )
    .await;
}

/// A running `resilient-redis proxy`: closing its stdin stops it.
struct ProxyProcess {
    child: tokio::process::Child,
    /// The stdout lines after the first, read in the background so the pipe never fills.
    output: tokio::task::JoinHandle<Vec<String>>,
}

/// Starts `resilient-redis proxy` in front of `upstream` with `extra` flags; returns the process
/// and the address it listens on.
async fn start_proxy(upstream: std::net::SocketAddr, extra: &[&str]) -> (ProxyProcess, String) {
    use tokio::io::AsyncBufReadExt as _;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args([
            "proxy",
            "--listen",
            &listen,
            "--upstream",
            &upstream.to_string(),
            "--json",
            "--until-stdin-closes",
        ])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the proxy says it listens")
        .unwrap()
        .unwrap_or_default();
    assert!(first.contains("proxy listening on"), "{first}");
    // Keep reading stdout in the background so the proxy never blocks on a full pipe.
    let rest = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    (
        ProxyProcess {
            child,
            output: rest,
        },
        listen,
    )
}

/// Stops the proxy and returns the counters it printed.
async fn stop_proxy(proxy: ProxyProcess) -> Value {
    let ProxyProcess { mut child, output } = proxy;
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the proxy exits")
        .unwrap();
    assert!(status.success(), "{status}");
    let lines = output.await.unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    serde_json::from_str(&lines[0]).expect("counters as JSON")
}

#[tokio::test]
async fn proxy_forwards_and_throttles_and_prints_its_counters() {
    let server = RedisServer::start().await.expect("redis-server");
    // Plain forwarding.
    let (child, listen) = start_proxy(server.addr(), &[]).await;
    let mut conn = redis::Client::open(format!("redis://{listen}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "v");
    drop(conn);
    let counters = stop_proxy(child).await;
    assert!(
        counters["commands_forwarded"].as_u64().unwrap() >= 2,
        "{counters}"
    );
    assert_eq!(counters["commands_throttled"].as_u64(), Some(0));

    // Throttled: 200 pipelined PINGs against 10 ops/s get THROTTLED replies, in order.
    let (child, listen) = start_proxy(server.addr(), &["--throttle-ops-per-sec", "10"]).await;
    let mut conn = redis::Client::open(format!("redis://{listen}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..200 {
        pipe.cmd("PING");
    }
    let replies: Vec<redis::Value> = pipe.ignore_errors().query_async(&mut conn).await.unwrap();
    let throttled = replies
        .iter()
        .filter(|r| matches!(r, redis::Value::ServerError(e) if e.code() == "THROTTLED"))
        .count();
    assert!(throttled > 150, "{throttled} of 200 throttled");
    drop(conn);
    let counters = stop_proxy(child).await;
    assert!(
        counters["commands_throttled"].as_u64().unwrap() >= throttled as u64,
        "{counters}"
    );
}
