//! A single real redis-server: lifecycle, readiness, Drop, fault helpers.

use std::time::Duration;

use redis_lab::{LabError, RedisServer, ServerConfig};
use tokio::time::Instant;

fn pid_alive(pid: u32) -> bool {
    // /proc/<pid> disappears once the process is reaped.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RedisServer>();
    assert_send_sync::<redis_lab::FaultProxy>();
    assert_send_sync::<redis_lab::SentinelTopology>();
    assert_send_sync::<redis_lab::RedisCluster>();
    assert_send_sync::<LabError>();
}

#[tokio::test]
async fn start_ping_stop_restart_kill() {
    let mut server = RedisServer::start().await.unwrap();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(server.addr().port(), port);
    let mut conn = server.admin().await.unwrap();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(server.is_running());
    let pid = server.pid().unwrap();

    server.stop().await.unwrap();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(!pid_alive(pid));
    assert!(server.admin().await.is_err());

    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    let new_pid = server.pid().unwrap();
    assert_ne!(new_pid, pid);
    server.wait_ready(Duration::from_secs(5)).await.unwrap();
    // `save ""`: nothing survives a restart.
    let mut conn = server.admin().await.unwrap();
    let value: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, None);

    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(!pid_alive(new_pid));
    assert!(matches!(
        server.wait_ready(Duration::from_millis(100)).await,
        Err(LabError::NotRunning(_))
    ));
    server.restart().await.unwrap();
    assert!(server.is_running());
}

#[tokio::test]
async fn drop_leaves_no_process_and_no_directory() {
    let server = RedisServer::start().await.unwrap();
    let pid = server.pid().unwrap();
    let dir = server.dir().to_path_buf();
    assert!(pid_alive(pid));
    drop(server);
    assert!(!pid_alive(pid));
    assert!(!dir.exists());
}

#[tokio::test]
async fn drop_during_panic_leaves_no_process() {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = tokio::spawn(async move {
        let server = RedisServer::start().await.unwrap();
        tx.send(server.pid().unwrap()).unwrap();
        panic!("test body failed while the server was running");
    });
    assert!(handle.await.unwrap_err().is_panic());
    let pid = rx.recv().unwrap();
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn password_and_extra_directives() {
    let server = RedisServer::start_with(ServerConfig {
        password: Some("s3cret pass".into()),
        extra: vec![("maxmemory".into(), "10mb".into())],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    assert!(
        server
            .url()
            .starts_with("redis://:s3cret%20pass@127.0.0.1:")
    );
    assert_eq!(
        server.info_field("memory", "maxmemory").await.unwrap(),
        "10485760"
    );
    let anonymous = redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut conn = anonymous.get_multiplexed_async_connection().await.unwrap();
    let denied: redis::RedisResult<String> =
        redis::cmd("GET").arg("k").query_async(&mut conn).await;
    assert!(denied.unwrap_err().to_string().contains("NOAUTH"));
}

#[tokio::test]
async fn fixed_port_in_use_fails_with_log_tail() {
    let taken = RedisServer::start().await.unwrap();
    let error = RedisServer::start_with(ServerConfig {
        port: Some(taken.port()),
        start_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, LabError::StartFailed { .. }), "{message}");
    assert!(message.contains("Address already in use"), "{message}");
}

#[tokio::test]
async fn client_kill_normal_disconnects_clients() {
    let server = RedisServer::start().await.unwrap();
    let mut victims = Vec::new();
    for _ in 0..3 {
        victims.push(server.admin().await.unwrap());
    }
    assert!(server.client_kill_normal().await.unwrap() >= 3);
    let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut victims[0]).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn debug_sleep_blocks_the_server() {
    let server = RedisServer::start().await.unwrap();
    let mut probe = server.admin().await.unwrap();
    let sleeper = {
        let url = server.url();
        tokio::spawn(async move {
            let started = Instant::now();
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("0.4")
                .query_async(&mut conn)
                .await
                .unwrap();
            started.elapsed()
        })
    };
    // Wait until the sleep is in progress (the server stops answering INFO quickly).
    let slept = sleeper.await.unwrap();
    assert!(slept >= Duration::from_millis(400));
    let started = Instant::now();
    server
        .debug_sleep(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let pong: String = redis::cmd("PING").query_async(&mut probe).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn busy_script_makes_the_server_answer_busy() {
    let server = std::sync::Arc::new(RedisServer::start().await.unwrap());
    let busy = {
        let server = std::sync::Arc::clone(&server);
        tokio::spawn(async move { server.busy_script(Duration::from_millis(600)).await })
    };
    let mut conn = server.admin().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw_busy = false;
    while Instant::now() < deadline && !busy.is_finished() {
        let reply: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        if let Err(e) = reply {
            assert!(e.to_string().contains("BUSY"), "{e}");
            saw_busy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_busy);
    busy.await.unwrap().unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn info_field_reads_counters() {
    let server = RedisServer::start().await.unwrap();
    let processed: u64 = server
        .info_field("stats", "total_commands_processed")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(processed >= 1);
    assert!(matches!(
        server.info_field("stats", "no_such_field").await,
        Err(LabError::Topology(_))
    ));
}

#[tokio::test]
async fn tls_server_listens_on_tls_only() {
    let certs = redis_lab::TlsCerts::generate().unwrap();
    let server = RedisServer::start_with(ServerConfig {
        tls: Some(redis_lab::LabTls {
            certs: certs.clone(),
            require_client_cert: true,
        }),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        server.url(),
        format!("rediss://127.0.0.1:{}", server.port())
    );
    // The lab's own connections use TLS with the client certificate.
    let mut admin = server.admin().await.unwrap();
    let port: (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(port.1, "0");
    server.client_kill_normal().await.unwrap();
    // A plain connection to the TLS port gets nowhere.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", server.port())).unwrap();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    assert!(
        plain
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .is_err()
    );
    assert!(certs.ca_pem().starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert!(certs.server_cert().exists() && certs.client_key().exists());
}
