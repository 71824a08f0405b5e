//! The client as a drop-in redis-rs connection, and clear errors for bad input.

use std::time::Duration;

use redis::AsyncCommands;
use redis_lab::{RedisServer, ServerConfig};
use resilient_redis::{Client, ClientConfig, ErrorKind, Outcome};
use tokio::time::Instant;

#[tokio::test]
async fn typed_commands_pipelines_and_scripts_work_unchanged() {
    let server = RedisServer::start().await.unwrap();
    let mut client = Client::connect(&server.url()).await.unwrap();
    let () = client.set("a", 1).await.unwrap();
    assert_eq!(client.get::<_, i64>("a").await.unwrap(), 1);
    assert_eq!(client.incr::<_, _, i64>("a", 2).await.unwrap(), 3);

    let (x, y): (i64, Option<String>) = redis::pipe()
        .get("a")
        .get("nothing")
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((x, y), (3, None));
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .incr("a", 1)
        .ignore()
        .get("a")
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!(n, 4);

    // NOSCRIPT is handled by redis-rs (load, then run again) through the wrapper.
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    assert_eq!(
        script
            .key("s")
            .arg(5)
            .invoke_async::<i64>(&mut client)
            .await
            .unwrap(),
        5
    );
    let mut admin = server.admin().await.unwrap();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        script
            .key("s")
            .arg(5)
            .invoke_async::<i64>(&mut client)
            .await
            .unwrap(),
        10
    );
}

#[tokio::test]
async fn user_errors_pass_through_unchanged_and_are_not_retried() {
    let server = RedisServer::start().await.unwrap();
    let mut client = Client::connect(&server.url()).await.unwrap();
    let () = client.set("s", "text").await.unwrap();
    let err = client.lpush::<_, _, i64>("s", "x").await.unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"));
    assert_eq!(Outcome::of(&err), Outcome::Failed);
    assert_eq!(client.stats().retries, 0);

    let err = redis::cmd("SELECT")
        .arg(1)
        .query_async::<()>(&mut client)
        .await
        .unwrap_err();
    let inner = resilient_redis::Error::from_redis(&err).expect("client error");
    assert_eq!(inner.kind(), ErrorKind::Refused);
    assert!(err.to_string().contains("URL"), "{err}");
}

#[tokio::test]
async fn blocking_commands_are_not_cut_and_do_not_stall_others() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    // BLPOP for 1.2 s, longer than the 500 ms response timeout: not cut.
    let mut blocker = client.clone();
    let blpop = tokio::spawn(async move {
        let started = Instant::now();
        let r: Option<(String, String)> = blocker.blpop("queue", 1.2).await.unwrap();
        (r, started.elapsed())
    });
    // Meanwhile other calls are not held up behind it.
    let mut other = client.clone();
    let started = Instant::now();
    for _ in 0..20 {
        let _: Option<String> = other.get("x").await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "calls waited behind BLPOP: {:?}",
        started.elapsed()
    );
    let (r, took) = blpop.await.unwrap();
    assert_eq!(r, None);
    assert!(
        took >= Duration::from_millis(1100),
        "BLPOP returned early: {took:?}"
    );

    // And a value pushed meanwhile is delivered.
    let mut blocker = client.clone();
    let waiter = tokio::spawn(async move {
        blocker
            .blpop::<_, Option<(String, String)>>("q2", 5.0)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut pusher = client.clone();
    let _: i64 = pusher.rpush("q2", "job").await.unwrap();
    assert_eq!(waiter.await.unwrap(), Some(("q2".into(), "job".into())));
}

/// A blocking command waits for a connection no longer than its handle's deadline
/// (`with_deadline`), not the configuration's 5 s.
#[tokio::test]
async fn a_blocking_command_keeps_its_handles_deadline_while_the_server_is_down() {
    let mut server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    assert_eq!(client.config().deadline, Duration::from_secs(5));
    server.stop().await.unwrap();
    let mut short = client.with_deadline(Duration::from_millis(100)).unwrap();
    let started = Instant::now();
    let err = short
        .blpop::<_, Option<(String, String)>>("queue", 1.0)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        resilient_redis::error_kind_name(&err),
        ErrorKind::Unavailable.as_str(),
        "{err}"
    );
    // Far below the configuration's 5 s deadline, which it used to wait out.
    assert!(
        took < Duration::from_secs(2),
        "BLPOP waited {took:?} for a connection with a 100 ms deadline"
    );
}

#[tokio::test]
async fn bad_urls_are_rejected_with_a_clear_error() {
    for url in [
        "not a url",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:notaport",
        // TLS works (tests/tls.rs), but a malformed TLS URL is still a clear error.
        "rediss://127.0.0.1:notaport",
        "rediss://127.0.0.1:6379/#bogus",
        "rediss+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/mymaster#insecure",
    ] {
        let err = Client::connect(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{url}: {err}");
        assert!(
            err.to_string().contains("URL") || err.to_string().contains("url"),
            "{url}: {err}"
        );
    }
}

#[tokio::test]
async fn unreachable_server_fails_fast_at_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let err = Client::connect(&format!("redis://app:s3cret@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(
        err.to_string().contains("redis://app:***@127.0.0.1"),
        "the URL is shown without its password: {err}"
    );
    assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wrong_password_is_an_auth_error() {
    let server = RedisServer::start_with(ServerConfig {
        password: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = Client::connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(
        !format!("{err} {err:?}").contains("wrong"),
        "password shown: {err}"
    );
    let url = format!("redis://127.0.0.1:{}", server.port());
    // No password at all: refused at connect too (tests/errors.rs has the details).
    let err = Client::connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let good = format!("redis://:s3cret@127.0.0.1:{}", server.port());
    let mut c = Client::connect(&good).await.unwrap();
    let () = c.set("k", "v").await.unwrap();
}

#[tokio::test]
async fn a_long_outage_fails_fast_once_past_the_deadline() {
    let mut server = RedisServer::start().await.unwrap();
    let config = ClientConfig {
        deadline: Duration::from_millis(800),
        unavailable_after: Duration::from_millis(800),
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let mut client = Client::with_config(config).await.unwrap();
    server.kill().unwrap();
    // The first call may still go out on the connection that just died: its outcome is honestly
    // unknown. The calls after it wait for a connection and are never sent.
    let _ = client.get::<_, Option<String>>("k").await;
    // Within the deadline the call waits, then fails as not applied (it was never sent).
    let started = Instant::now();
    let err = client.set::<_, _, ()>("k", "v").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(Outcome::of(&err), Outcome::Failed, "{err}");
    // Past it, calls fail at once.
    let started = Instant::now();
    let err = client.get::<_, Option<String>>("k").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "not fast: {:?}",
        started.elapsed()
    );
    let inner = resilient_redis::Error::from_redis(&err).unwrap();
    assert_eq!(inner.kind(), ErrorKind::Unavailable, "{err}");
    // And it comes back on its own when the server does.
    server.restart().await.unwrap();
    let back = common_eventually(&mut client).await;
    assert!(back, "client did not recover");
}

async fn common_eventually(client: &mut Client) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if client.set::<_, _, ()>("k", "v").await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn health_reports_the_server_and_the_client() {
    let mut server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let h = client.health().await;
    assert!(h.healthy, "{h}");
    assert_eq!(h.role.as_deref(), Some("master"));
    assert!(
        h.server_version.as_deref().unwrap_or("").starts_with('7'),
        "{h:?}"
    );
    assert!(
        h.ping_rtt.is_some()
            && h.connected_clients.unwrap_or(0) >= 1
            && h.used_memory_bytes.unwrap_or(0) > 0
    );
    assert_eq!(h.breaker, "closed");
    assert_eq!((h.connections_up, h.connections_total), (1, 1));
    server.kill().unwrap();
    let h = client.health().await;
    assert!(!h.healthy);
    assert!(h.reason.is_some(), "{h:?}");
}
