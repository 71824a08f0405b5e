//! Errors that say what is true, against real servers: the kind and outcome of every failure
//! ([`Failure`]), and connect errors that name what failed.

use std::time::Duration;

use redis::AsyncCommands;
use redis_lab::{RedisServer, ServerConfig};
use resilient_redis::{Client, ClientConfig, ErrorKind, Failure, Outcome};
use tokio::time::Instant;

/// A `GET` of a missing key into `String` ran: the conversion failed after a successful reply,
/// which is neither ambiguous nor "not applied"; a write whose reply does not convert was applied.
#[tokio::test]
async fn a_reply_of_the_wrong_type_is_applied_not_ambiguous() {
    let server = RedisServer::start().await.unwrap();
    let mut client = Client::connect(&server.url()).await.unwrap();
    let err = client.get::<_, String>("missing").await.unwrap_err();
    let failure = Failure::of(&err);
    assert_eq!(failure.kind, ErrorKind::Conversion, "{err}");
    assert_eq!(failure.outcome, Outcome::Applied, "{err}");
    assert_eq!(Outcome::of(&err), Outcome::Applied);
    assert_eq!(resilient_redis::error_kind_name(&err), "conversion");

    // SET answers OK, which is not a number: the value is written all the same.
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async::<i64>(&mut client)
        .await
        .unwrap_err();
    assert_eq!(Outcome::of(&err), Outcome::Applied, "{err}");
    assert_eq!(client.get::<_, String>("k").await.unwrap(), "v");
    // The client saw two successful calls: nothing counted as ambiguous or failed.
    let stats = client.stats();
    assert_eq!((stats.ambiguous, stats.failed), (0, 0), "{stats:?}");

    // The same for a plain redis-rs connection.
    let mut raw = server.admin().await.unwrap();
    let err = raw.get::<_, String>("missing").await.unwrap_err();
    assert_eq!(Failure::of(&err).outcome, Outcome::Applied, "{err}");
}

/// Every error a call returns has a typed kind, server replies included.
#[tokio::test]
async fn every_failure_has_a_kind_and_an_outcome() {
    let server = RedisServer::start().await.unwrap();
    let mut client = Client::connect(&server.url()).await.unwrap();
    let () = client.set("s", "text").await.unwrap();
    let err = client.lpush::<_, _, i64>("s", "x").await.unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "the reply is unchanged");
    let failure = Failure::of(&err);
    assert_eq!(
        (failure.kind, failure.outcome),
        (ErrorKind::Server, Outcome::Failed),
        "{err}"
    );
    // Refused by the client before sending.
    let err = redis::cmd("SELECT")
        .arg(1)
        .query_async::<()>(&mut client)
        .await
        .unwrap_err();
    assert_eq!(Failure::of(&err).kind, ErrorKind::Refused, "{err}");
    // A connection without a password to a server that requires one: `NOAUTH` is `Auth`.
    let locked = RedisServer::start_with(ServerConfig {
        password: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut raw = redis::Client::open(format!("redis://127.0.0.1:{}", locked.port()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let err = raw.get::<_, Option<String>>("k").await.unwrap_err();
    assert_eq!(Failure::of(&err).kind, ErrorKind::Auth, "{err}");
}

/// A read that gets no answer is not described as "may have been applied"; a write still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_read_says_what_is_true_for_a_read() {
    let server = RedisServer::start().await.unwrap();
    let config = ClientConfig {
        deadline: Duration::from_millis(300),
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    let (mut reader, mut writer) = (client.clone(), client.clone());
    let () = reader.set("k", "v").await.unwrap();
    let sleep = tokio::spawn(async move { server.debug_sleep(Duration::from_millis(1500)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (read, write) = tokio::join!(
        reader.get::<_, Option<String>>("k"),
        writer.incr::<_, _, i64>("n", 1)
    );
    let read = read.unwrap_err();
    let write = write.unwrap_err();
    sleep.await.unwrap().unwrap();

    assert_eq!(Outcome::of(&read), Outcome::Ambiguous, "{read}");
    let text = read.to_string();
    assert!(!text.contains("applied"), "a read: {text}");
    assert!(text.contains("the read got no answer"), "{text}");
    assert_eq!(Outcome::of(&write), Outcome::Ambiguous, "{write}");
    assert!(
        write.to_string().contains("may have been applied"),
        "{write}"
    );
}

/// A server with `requirepass` and no password in the URL: `connect` fails with `Auth` (it
/// used to succeed, and the first call failed with `NOAUTH`), with a database or without.
#[tokio::test]
async fn a_missing_password_is_an_auth_error_at_connect() {
    let server = RedisServer::start_with(ServerConfig {
        password: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    for path in ["", "/0", "/3"] {
        let url = format!("redis://127.0.0.1:{}{path}", server.port());
        let err = Client::connect(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth, "{url}: {err}");
        assert_eq!(err.outcome(), Outcome::Failed);
        let text = err.to_string();
        assert!(text.contains("authentication required"), "{url}: {text}");
        assert!(text.contains("the URL gives none"), "{url}: {text}");
    }
    // With the password, it connects; a wrong one is still `Auth` and never shown.
    let err = Client::connect(&format!("redis://:wr0ng@127.0.0.1:{}", server.port()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!format!("{err} {err:?}").contains("wr0ng"), "{err:?}");
    let mut ok = Client::connect(&server.url()).await.unwrap();
    let () = ok.set("k", "v").await.unwrap();
}

/// A port out of range is named, and said once.
#[tokio::test]
async fn a_port_out_of_range_is_named() {
    for url in ["redis://127.0.0.1:99999", "redis://:pw@127.0.0.1:99999/0"] {
        let err = Client::connect(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{url}: {err}");
        let text = err.to_string();
        assert!(text.contains("port \"99999\""), "{url}: {text}");
        assert!(
            text.matches("did not parse").count() <= 1,
            "said twice: {text}"
        );
        assert!(!text.contains("pw"), "{text}");
    }
}

/// A database the server does not have is a configuration error naming it, not `Unavailable`.
#[tokio::test]
async fn a_database_out_of_range_is_a_config_error_naming_it() {
    let server = RedisServer::start().await.unwrap();
    let url = format!("{}/99", server.url());
    let started = Instant::now();
    let err = Client::connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("database 99"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Database 15 exists (16 by default).
    let mut ok = Client::connect(&format!("{}/15", server.url()))
        .await
        .unwrap();
    let () = ok.set("k", "v").await.unwrap();
}

/// A server that accepts the TCP connection and never answers: the error says the handshake
/// timed out, and after how long.
#[tokio::test]
async fn a_silent_server_times_out_in_the_handshake() {
    // Bound and listening, never accepting: the kernel completes the TCP handshake, nothing
    // ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(300),
        ..ClientConfig::from_url(&url).unwrap()
    };
    let started = Instant::now();
    let err = Client::with_config(config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("accepted the TCP connection but did not answer the Redis handshake"),
        "{text}"
    );
    assert!(text.contains("300 ms"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A port where something other than Redis answers: said so, not a protocol error.
#[tokio::test]
async fn a_port_that_does_not_speak_redis_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "redis://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let http = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let err = Client::connect(&url).await.unwrap_err();
    http.abort();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("is not the Redis protocol"),
        "{err}"
    );
}
