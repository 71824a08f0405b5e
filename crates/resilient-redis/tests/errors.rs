//! Errors that say what is true, against real servers: the kind and outcome of every failure
//! ([`Failure`]).

use std::time::Duration;

use redis::AsyncCommands;
use redis_lab::{RedisServer, ServerConfig};
use resilient_redis::{Client, ClientConfig, ErrorKind, Failure, Outcome};

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
