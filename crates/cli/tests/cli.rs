//! End-to-end tests of the `resilient-redis` binary's command line: help, bad input, bad flags,
//! unreachable servers, a missing `redis-server` (no server runs in these tests).

mod common;

use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use common::{BIN, run, stderr, stdout};

/// A loopback URL where nothing listens.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

#[tokio::test]
async fn help_lists_the_subcommands() {
    let output = run(&["--help"], Duration::from_secs(10)).await;
    assert!(output.status.success());
    let text = stdout(&output);
    for word in ["demo", "bench", "health"] {
        assert!(
            text.contains(word),
            "--help does not mention {word}: {text}"
        );
    }
    let output = run(&["bench", "--help"], Duration::from_secs(10)).await;
    assert!(output.status.success());
    for flag in [
        "--url",
        "--client",
        "--workload",
        "--concurrency",
        "--duration",
        "--keys",
        "--value-size",
        "--key",
        "--deadline-ms",
        "--rate",
        "--series",
        "--metrics-addr",
        "--json",
    ] {
        assert!(
            stdout(&output).contains(flag),
            "bench --help does not mention {flag}"
        );
    }
    assert!(stdout(&output).contains("naive"), "--client naive missing");
    let output = run(&["demo", "--help"], Duration::from_secs(10)).await;
    assert!(output.status.success());
    for word in ["--scenario", "overload", "faults", "--capacity-ops-per-sec"] {
        assert!(
            stdout(&output).contains(word),
            "demo --help does not mention {word}"
        );
    }
}

#[tokio::test]
async fn bad_url_is_a_one_line_usage_error() {
    for args in [
        ["bench", "--url", "not-a-url"],
        ["bench", "--url", "http://127.0.0.1:6379"],
        ["health", "--url", "redis://"],
    ] {
        let output = run(&args, Duration::from_secs(10)).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(
            err.starts_with("error: ") && err.contains("--url"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[tokio::test]
async fn bad_flags_are_usage_errors() {
    for args in [
        &["bench", "--url", "redis://127.0.0.1:6379", "--bogus"][..],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--duration",
            "0",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--duration",
            "-1",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--concurrency",
            "0",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--client",
            "fred",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--deadline-ms",
            "0",
        ],
        &["bench", "--url", "redis://127.0.0.1:6379", "--rate", "0"],
        &["bench", "--url", "redis://127.0.0.1:6379", "--rate", "-5"],
        &["bench", "--url", "redis://127.0.0.1:6379", "--series"],
        &[
            "bench",
            "--cluster",
            "redis://127.0.0.1:6379",
            "--client",
            "naive",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--slice-ms",
            "100",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--paired-with",
            "raw",
            "--slice-ms",
            "0",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--paired-with",
            "naive",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--paired-with",
            "raw",
            "--rate",
            "100",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--metrics-addr",
            "localhost:9091",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:6379",
            "--client",
            "raw",
            "--metrics-addr",
            "127.0.0.1:9091",
        ],
        &[
            "health",
            "--url",
            "redis://127.0.0.1:6379",
            "--interval-ms",
            "100",
        ],
        &[
            "health",
            "--url",
            "redis://127.0.0.1:6379",
            "--watch",
            "--interval-ms",
            "0",
        ],
        &["demo", "--scenario", "overload", "--topology", "cluster"],
        &["demo", "--scenario", "overload", "--step-secs", "0"],
        &["demo", "--scenario", "nope"],
        &["bench"],
        &["nonsense"],
    ] {
        let output = run(args, Duration::from_secs(10)).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("panicked"));
    }
}

#[tokio::test]
async fn metrics_addr_that_cannot_be_bound_is_a_one_line_usage_error() {
    // Held for the whole test: the bench cannot listen there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let args = ["bench", "--url", &closed_url(), "--metrics-addr", &addr];
    let output = run(&args, Duration::from_secs(10)).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("error: --metrics-addr") && err.contains(&addr),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_one_line() {
    let url = closed_url();
    for client in ["resilient", "raw"] {
        let started = Instant::now();
        let output = run(
            &[
                "bench",
                "--url",
                &url,
                "--client",
                client,
                "--duration",
                "1",
            ],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{client}: {}",
            stderr(&output)
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{client} took {:?}",
            started.elapsed()
        );
        let err = stderr(&output);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{client}: not one line: {err}"
        );
        assert!(
            err.starts_with("error: ") && err.contains("127.0.0.1"),
            "{client}: {err}"
        );
        assert!(stdout(&output).is_empty());
    }
}

#[tokio::test]
async fn demo_without_redis_server_says_how_to_install_it() {
    let empty =
        std::env::temp_dir().join(format!("resilient-redis-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let mut command = Command::new(BIN);
    command
        .args(["demo", "--out", &empty.to_string_lossy()])
        .env("PATH", &empty)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("exits quickly")
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&empty);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("redis-server") && err.contains("install"),
        "{err}"
    );
}

#[tokio::test]
async fn target_flags_must_name_exactly_one_target() {
    for args in [
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:1",
            "--sentinel",
            "127.0.0.1:2",
            "--master",
            "m",
        ][..],
        &[
            "bench",
            "--url",
            "redis://127.0.0.1:1",
            "--cluster",
            "redis://127.0.0.1:2",
        ],
        &["bench", "--sentinel", "127.0.0.1:2"],
        &["bench", "--master", "m", "--url", "redis://127.0.0.1:1"],
        &["bench", "--sentinel", "127.0.0.1", "--master", "m"],
        &["health"],
        &["health", "--cluster", ","],
        &[
            "health",
            "--sentinel",
            "127.0.0.1:2",
            "--cluster",
            "redis://127.0.0.1:2",
            "--master",
            "m",
        ],
    ] {
        let output = run(args, Duration::from_secs(10)).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(
            err.starts_with("error: ") && (err.contains("--sentinel") || err.contains("--cluster")),
            "{args:?}: {err}"
        );
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn proxy_rejects_bad_flags() {
    let out = run(
        &["proxy", "--listen", "nowhere", "--upstream", "127.0.0.1:1"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--drop-every",
            "0",
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
