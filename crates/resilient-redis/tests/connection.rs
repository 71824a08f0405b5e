//! The connection pool: background reconnection, idle checks, pools, error rules.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use common::{Conn, eventually, spawn_set_get};
use redis::AsyncCommands;
use redis_lab::RedisServer;
use resilient_redis::{Client, ClientConfig, ErrorRule};

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
    check::<ClientConfig>();
    check::<resilient_redis::Error>();
    check::<resilient_redis::Health>();
    check::<resilient_redis::ClientStats>();
}

/// An idle connection killed by the server is replaced before any caller needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_dead_connection_is_replaced_in_the_background() {
    let server = RedisServer::start().await.unwrap();
    let config = ClientConfig {
        idle_check_interval: Some(Duration::from_millis(100)),
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let mut client = Client::with_config(config).await.unwrap();
    let () = client.set("k", "v").await.unwrap();
    let before = client.stats();
    // The lab's own probe connections close asynchronously: wait until the client's is the
    // only other one, so that the kill below is of exactly that one.
    let mut admin = server.admin().await.unwrap();
    let waited_until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut admin)
            .await
            .unwrap();
        // The client's connection and this one.
        if list.lines().count() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < waited_until, "{list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let replaced = eventually(Duration::from_secs(3), || {
        client.stats().reconnects > before.reconnects
    })
    .await;
    assert!(
        replaced,
        "the dead idle connection was not replaced: {:?}",
        client.stats()
    );
    // The next call goes out once, on the new connection: no retry was needed.
    let v: String = client.get("k").await.unwrap();
    assert_eq!(v, "v");
    let after = client.stats();
    assert_eq!(after.attempts - before.attempts, 1, "{after:?}");
    assert_eq!(after.retries, before.retries);
}

/// A pool of 4 connections rides out CLIENT KILL with zero errors and reconnects every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_connections_survives_client_kill() {
    let server = RedisServer::start().await.unwrap();
    let config = ClientConfig {
        pool_size: 4,
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    // The pool fills in the background.
    assert!(eventually(Duration::from_secs(3), || client_connections(&client) == 4).await);
    let stop = Arc::new(AtomicBool::new(false));
    let work = spawn_set_get(Conn::Resilient(client.clone()), 50, "p", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = server.client_kill_normal().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tally = work.await.unwrap();
    assert_eq!(killed, 4);
    assert_eq!(tally.errors(), 0, "{:?}", tally.errors);
    assert!(eventually(Duration::from_secs(3), || client_connections(&client) == 4).await);
}

fn client_connections(client: &Client) -> usize {
    client.connections().0
}

/// Users can teach the client a vendor's error codes; THROTTLED is retried after a delay.
#[tokio::test]
async fn custom_error_rules_and_throttled_replies() {
    let server = RedisServer::start().await.unwrap();
    // A script that fails with `code` the first two times it runs, then succeeds.
    let flaky = |code: &str| {
        redis::Script::new(&format!(
            "local n = redis.call('INCR', KEYS[1]) if n <= 2 then return redis.error_reply('{code} try later') end return n"
        ))
    };
    let mut rules = HashMap::new();
    rules.insert("VENDORBUSY".to_owned(), ErrorRule::Retry);
    let config = ClientConfig {
        error_rules: rules,
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let mut client = Client::with_config(config).await.unwrap();

    let n: i64 = flaky("VENDORBUSY")
        .key("a")
        .invoke_async(&mut client)
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(client.stats().retries, 2);

    let started = tokio::time::Instant::now();
    let n: i64 = flaky("THROTTLED")
        .key("b")
        .invoke_async(&mut client)
        .await
        .unwrap();
    assert_eq!(n, 3);
    // Two waits of at least the 100 ms throttle delay.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );

    // A code nobody declared is the caller's: returned at once, not retried.
    let err = flaky("OTHERCODE")
        .key("c")
        .invoke_async::<i64>(&mut client)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("OTHERCODE"));
    let retries = client.stats().retries;
    assert_eq!(retries, 4);
}
