//! End-to-end tests of what the binary shows while it runs: `bench --metrics-addr` (a Prometheus
//! page during the run) and `health --watch --json` (one JSON object per refresh). Each test
//! starts its own lab server on a free loopback port.

mod common;

use std::process::Stdio;
use std::time::Duration;

use redis_lab::RedisServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use common::BIN;

/// How long a test waits for something the binary should do within a second.
const PATIENCE: Duration = Duration::from_secs(30);

/// A loopback port nothing listens on (the binary binds it right after).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `GET path` on `addr` over HTTP/1.1, the whole response (status line, headers, body).
async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// Reads `child`'s stderr until a line contains `needle` (panics on end of stream), then
/// drains the rest in the background.
async fn wait_for_stderr_line(child: &mut Child, needle: &str) {
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            if line.contains(needle) {
                return true;
            }
            seen.push(line);
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no stderr line with {needle:?} (stderr so far: {seen:?})"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

#[tokio::test]
async fn bench_serves_the_prometheus_page_during_the_run() {
    let server = RedisServer::start().await.expect("lab server");
    let addr = format!("127.0.0.1:{}", free_port());
    // Longer than the test needs: the page is scraped during the run, then the bench is killed.
    let mut bench = Command::new(BIN)
        .args(["bench", "--url", &server.url(), "--concurrency", "4"])
        .args(["--duration", "120", "--json", "--metrics-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    wait_for_stderr_line(&mut bench, &format!("http://{addr}/metrics")).await;

    // The client's histograms are registered when it connects, after the page is up: scrape
    // until they appear.
    let deadline = Instant::now() + PATIENCE;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let page = loop {
        every.tick().await;
        let response = http_get(&addr, "/metrics").await.expect("GET /metrics");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        if response.contains("db_client_operation_duration") {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "no db_client_operation_duration on the page within {PATIENCE:?}: {response}"
        );
    };
    assert!(
        page.contains("db_client_operation_duration_bucket{") && page.contains("le=\"0.00005\""),
        "db.client.operation.duration is not a histogram with buckets from 50 µs: {page}"
    );
    bench.kill().await.expect("kill the bench");
}

#[tokio::test]
async fn health_watch_json_prints_one_object_per_refresh_until_ctrl_c() {
    let server = RedisServer::start().await.expect("lab server");
    let mut watch = Command::new(BIN)
        .args(["health", "--url", &server.url(), "--watch", "--json"])
        .args(["--interval-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let stdout = watch.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    for refresh in 1..=2 {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no refresh {refresh} within {PATIENCE:?}"))
            .expect("stdout readable")
            .unwrap_or_else(|| panic!("stdout ended before refresh {refresh}"));
        let report: Value = serde_json::from_str(&line).expect("each line is one JSON object");
        assert_eq!(report["healthy"], true, "{report}");
        assert_eq!(report["role"], "master", "{report}");
        assert_eq!(report["breaker"], "closed", "{report}");
        assert!(report["ping_rtt_ms"].is_f64(), "{report}");
        assert!(report["retry_budget_tokens"].is_f64(), "{report}");
        assert!(report["connections_up"].is_u64(), "{report}");
    }

    // Ctrl-C ends the watch with exit 0.
    let pid = watch.id().expect("still running");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = tokio::time::timeout(PATIENCE, watch.wait())
        .await
        .expect("the watch ends on Ctrl-C")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
}
