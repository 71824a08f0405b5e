//! `--password-file` and `--client-name` end to end: `health` against a real server with an
//! ACL user shows where the credentials come from and the connection name, never the secret.

mod common;

use std::time::Duration;

use common::{run, stderr, stdout};
use redis_lab::RedisServer;

#[tokio::test]
async fn health_reads_the_password_file_and_names_the_connections() {
    let server = RedisServer::start().await.expect("redis-server");
    let mut admin = server.admin().await.expect("admin");
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">f1le-secret", "~*", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("password");
    std::fs::write(&file, "f1le-secret\n").expect("write");
    let url = format!("redis://app@127.0.0.1:{}", server.port());
    let path = file.to_string_lossy().into_owned();
    let args = [
        "health",
        "--url",
        &url,
        "--password-file",
        &path,
        "--client-name",
        "cli-check",
        "--json",
    ];
    let output = run(&args, Duration::from_secs(20)).await;
    let out = stdout(&output);
    assert!(output.status.success(), "{out} {}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["healthy"], true, "{out}");
    assert_eq!(report["credentials"], format!("file {path}"), "{out}");
    assert_eq!(report["connection_name"], "cli-check", "{out}");
    assert!(!out.contains("f1le-secret"), "{out}");

    // The human listing says the same.
    let output = run(&args[..7], Duration::from_secs(20)).await;
    let out = stdout(&output);
    assert!(
        out.contains(&format!("credentials        file {path}")),
        "{out}"
    );
    assert!(out.contains("connection name    cli-check"), "{out}");

    // A stale file: the server refuses the client; unhealthy, with the reason, no secret.
    std::fs::write(&file, "0ld-secret\n").expect("write");
    let output = run(&args[..7], Duration::from_secs(20)).await;
    let (out, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    assert!(
        !out.contains("0ld-secret") && !err.contains("0ld-secret"),
        "{out}{err}"
    );
}

#[tokio::test]
async fn the_baselines_do_not_take_a_password_file() {
    let output = run(
        &[
            "bench",
            "--url",
            "redis://app@127.0.0.1:1",
            "--client",
            "raw",
            "--password-file",
            "/nonexistent",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--password-file"),
        "{}",
        stderr(&output)
    );
}
