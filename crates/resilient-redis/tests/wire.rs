//! `wire::WireConnection` against a real server: replies as redis-rs's `MultiplexedConnection`
//! gives them, order under concurrency, cancellation, death of the server, and the connection
//! handshake (`AUTH`, `SELECT`, `CLIENT SETNAME`; a server that never answers it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncCommands, ErrorKind, ProtocolVersion, RedisConnectionInfo, RedisResult, Value};
use redis_lab::{RedisServer, ServerConfig};
use resilient_redis::wire::{WireConfig, WireConnection};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A wire connection and a redis-rs multiplexed connection to the same server.
async fn both(server: &RedisServer) -> (WireConnection, MultiplexedConnection) {
    let wire = WireConnection::connect(server.addr())
        .await
        .expect("wire connects");
    let multiplexed = redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("multiplexed connects");
    (wire, multiplexed)
}

/// Both results are the same: equal values, or errors alike in every way a caller can see.
fn assert_same<T: PartialEq + std::fmt::Debug>(
    wire: &RedisResult<T>,
    multiplexed: &RedisResult<T>,
    what: &str,
) {
    match (wire, multiplexed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "{what}");
            assert_eq!(a.kind(), b.kind(), "{what}");
            assert_eq!(a.code(), b.code(), "{what}");
            assert_eq!(
                a.clone().into_server_errors().map(|e| e.to_vec()),
                b.clone().into_server_errors().map(|e| e.to_vec()),
                "{what}"
            );
        }
        _ => panic!("{what}: wire {wire:?} vs multiplexed {multiplexed:?}"),
    }
}

/// Runs `pipe` on each connection (the pipeline first resets the keys it uses) with the
/// given offset and count, and through `query_async`; asserts the answers are the same.
async fn compare_pipeline(
    wire: &mut WireConnection,
    multiplexed: &mut MultiplexedConnection,
    pipe: &redis::Pipeline,
    what: &str,
) {
    let (offset, count) = if pipe.is_transaction() {
        (pipe.len() + 1, 1)
    } else {
        (0, pipe.len())
    };
    // Once first, so that both runs below find the same keys (the pipeline resets them).
    let _ = multiplexed.req_packed_commands(pipe, offset, count).await;
    let mut cases = vec![(offset, count)];
    if !pipe.is_transaction() && pipe.len() > 2 {
        cases.push((1, pipe.len() - 2));
    }
    for (offset, count) in cases {
        let a = multiplexed.req_packed_commands(pipe, offset, count).await;
        let b = wire.req_packed_commands(pipe, offset, count).await;
        assert_same(&b, &a, &format!("{what} ({offset}, {count})"));
    }
    let a: RedisResult<Value> = pipe.query_async(multiplexed).await;
    let b: RedisResult<Value> = pipe.query_async(wire).await;
    assert_same(&b, &a, &format!("{what} query_async"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_round_trip() {
    let server = RedisServer::start().await.expect("server");
    let mut wire = WireConnection::connect(server.addr())
        .await
        .expect("connects");
    let () = wire.set("k", "v").await.expect("SET");
    let v: String = wire.get("k").await.expect("GET");
    assert_eq!(v, "v");
    let big = vec![7u8; 3 * 1024 * 1024];
    let () = wire.set("big", &big).await.expect("SET big");
    let got: Vec<u8> = wire.get("big").await.expect("GET big");
    assert_eq!(got, big);
    let missing: Option<String> = wire.get("missing").await.expect("GET missing");
    assert_eq!(missing, None);
    assert_eq!(wire.get_db(), 0);
    assert!(!wire.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_transactions_answer_as_multiplexed_connection() {
    let server = RedisServer::start().await.expect("server");
    let (mut wire, mut multiplexed) = both(&server).await;

    let mut plain = redis::pipe();
    plain
        .del(&["p:a", "p:s", "p:l"])
        .ignore()
        .set("p:a", 1)
        .incr("p:a", 5)
        .get("p:missing")
        .rpush("p:l", &["x", "y"])
        .lrange("p:l", 0, -1)
        .cmd("PING");
    compare_pipeline(&mut wire, &mut multiplexed, &plain, "plain").await;

    let mut atomic = plain.clone();
    atomic.atomic();
    compare_pipeline(&mut wire, &mut multiplexed, &atomic, "atomic").await;

    // A command failing when it runs: an error among the values.
    let mut failing = redis::pipe();
    failing
        .del("p:s")
        .ignore()
        .set("p:s", "text")
        .incr("p:s", 1)
        .get("p:s");
    compare_pipeline(&mut wire, &mut multiplexed, &failing, "run-time error").await;
    let mut failing_tx = failing.clone();
    failing_tx.atomic();
    compare_pipeline(
        &mut wire,
        &mut multiplexed,
        &failing_tx,
        "run-time error in MULTI",
    )
    .await;

    // A command the server refuses to queue: the transaction is aborted.
    let mut refused = redis::pipe();
    refused
        .atomic()
        .set("p:a", 1)
        .cmd("NO-SUCH-COMMAND")
        .arg(1)
        .incr("p:a", 1)
        .cmd("GET")
        .arg("p:a")
        .arg("extra-arg");
    compare_pipeline(&mut wire, &mut multiplexed, &refused, "queue-time errors").await;
    let err = refused
        .query_async::<Value>(&mut wire)
        .await
        .expect_err("aborted");
    assert!(err.to_string().starts_with("Transaction aborted"), "{err}");
    assert_eq!(
        err.into_server_errors().map(|errors| errors.len()),
        Some(2),
        "both refused commands, with their indices"
    );

    // The connection is still in step afterwards.
    let n: i64 = wire.incr("p:after", 1).await.expect("INCR");
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_answer_as_multiplexed_connection() {
    let server = RedisServer::start().await.expect("server");
    let (mut wire, mut multiplexed) = both(&server).await;
    let () = wire.set("e:text", "abc").await.expect("SET");

    let cases = [
        redis::cmd("INCR").arg("e:text").clone(),
        redis::cmd("NO-SUCH-COMMAND").arg("x").clone(),
        redis::cmd("GET").clone(),
        redis::cmd("LPUSH").arg("e:text").arg("x").clone(),
    ];
    for cmd in &cases {
        let a = multiplexed.req_packed_command(cmd).await;
        let b = wire.req_packed_command(cmd).await;
        assert!(
            matches!(b, Ok(Value::ServerError(_))),
            "in redis 1.x a server error is a value: {b:?}"
        );
        assert_same(&b, &a, &format!("{cmd:?} raw"));
        let a: RedisResult<i64> = cmd.query_async(&mut multiplexed).await;
        let b: RedisResult<i64> = cmd.query_async(&mut wire).await;
        assert_same(&b, &a, &format!("{cmd:?} query_async"));
    }
    let a: RedisResult<i64> = multiplexed.incr("e:text", 1).await;
    let b: RedisResult<i64> = wire.incr("e:text", 1).await;
    assert_same(&b, &a, "INCR of a non-integer");
    assert_eq!(
        b.expect_err("not an integer").kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
    );
    // An empty pipeline is refused before anything is sent.
    let empty = redis::pipe();
    let a = multiplexed.req_packed_commands(&empty, 0, 0).await;
    let b = wire.req_packed_commands(&empty, 0, 0).await;
    assert_same(&b, &a, "empty pipeline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_each_get_their_own_replies() {
    let server = RedisServer::start().await.expect("server");
    let wire = WireConnection::connect(server.addr())
        .await
        .expect("connects");
    let tasks: Vec<_> = (0..256)
        .map(|task| {
            let mut conn = wire.clone();
            tokio::spawn(async move {
                let key = format!("c:{task}");
                for expected in 1..=200i64 {
                    let n: i64 = conn.incr(&key, 1).await.expect("INCR");
                    assert_eq!(n, expected, "task {task} got another's reply");
                }
                let last: i64 = conn.get(&key).await.expect("GET");
                assert_eq!(last, 200);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

// One thread: the reader cannot run between the poll and the drop, so every call below is
// dropped with its reply still to come.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_call_does_not_desynchronise_the_connection() {
    let server = RedisServer::start().await.expect("server");
    let mut wire = WireConnection::connect(server.addr())
        .await
        .expect("connects");
    let incr = redis::cmd("INCR").arg("d:dropped").clone();
    for _ in 0..100 {
        // Polled once: queued (and written), then abandoned before its reply.
        let mut call = Box::pin(wire.send_command(&incr));
        assert!(futures::poll!(&mut call).is_pending());
        drop(call);
    }
    // Two calls in flight, the first dropped: the second gets its own reply.
    let get = redis::cmd("GET").arg("d:dropped").clone();
    let ping = redis::cmd("PING").arg("second").clone();
    let mut first = Box::pin(wire.send_command(&get));
    assert!(futures::poll!(&mut first).is_pending());
    let second = wire.send_command(&ping);
    drop(first);
    assert_eq!(
        second.await.expect("PING"),
        Value::BulkString(b"second".to_vec())
    );
    let n: i64 = wire.get("d:dropped").await.expect("GET");
    assert_eq!(n, 100, "every dropped INCR was sent once");
    let n: i64 = wire.incr("d:other", 3).await.expect("INCR");
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_every_pending_and_later_call_promptly() {
    let mut server = RedisServer::start().await.expect("server");
    let wire = WireConnection::connect(server.addr())
        .await
        .expect("connects");
    let successes = Arc::new(AtomicU64::new(0));
    let warmed_up = Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let mut conn = wire.clone();
            let successes = Arc::clone(&successes);
            let warmed_up = Arc::clone(&warmed_up);
            tokio::spawn(async move {
                let key = format!("k:{task}");
                loop {
                    match conn.incr::<_, _, i64>(&key, 1).await {
                        Ok(_) => {
                            if successes.fetch_add(1, Ordering::Relaxed) + 1 == 2_000 {
                                warmed_up.notify_one();
                            }
                        }
                        Err(err) => return err,
                    }
                }
            })
        })
        .collect();
    warmed_up.notified().await;
    server.kill().expect("kill");
    let errors = tokio::time::timeout(Duration::from_secs(10), async {
        let mut errors = Vec::new();
        for task in tasks {
            errors.push(task.await.expect("task"));
        }
        errors
    })
    .await
    .expect("every call in flight ends");
    for err in &errors {
        assert!(err.is_io_error(), "{err:?}");
        assert!(err.is_unrecoverable_error(), "{err:?}");
    }
    assert!(wire.is_closed());
    let mut later = wire.clone();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(1), later.get::<_, Option<i64>>("k:0"))
        .await
        .expect("a later call does not wait")
        .expect_err("the connection is dead");
    assert!(err.is_io_error(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_socket() {
    let server = RedisServer::start().await.expect("server");
    let mut wire = WireConnection::connect(server.addr())
        .await
        .expect("connects");
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut wire)
        .await
        .expect("CLIENT ID");
    let clone = wire.clone();
    drop(wire);
    drop(clone);
    let mut admin = server.admin().await.expect("admin");
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("ID")
            .arg(id)
            .query_async(&mut admin)
            .await
            .expect("CLIENT LIST");
        if list.trim().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "still connected: {list}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server started with `requirepass password`.
async fn server_with_password(password: &str) -> RedisServer {
    RedisServer::start_with(ServerConfig {
        password: Some(password.to_owned()),
        ..ServerConfig::default()
    })
    .await
    .expect("server")
}

/// Waits (5 s at most) until the server has exactly one normal client: the caller's `admin`.
async fn wait_until_only_admin_is_connected(admin: &mut MultiplexedConnection) {
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("normal")
            .query_async(admin)
            .await
            .expect("CLIENT LIST");
        if list.lines().count() == 1 {
            return;
        }
        assert!(tokio::time::Instant::now() < end, "still connected: {list}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_authenticates_with_the_servers_password() {
    let server = server_with_password("s3cret-pw").await;
    let info = RedisConnectionInfo::default().set_password("s3cret-pw");
    let mut wire = WireConnection::connect_with(server.addr(), &info, &WireConfig::default())
        .await
        .expect("authenticates");
    let () = wire.set("auth:k", "v").await.expect("SET");
    let v: String = wire.get("auth:k").await.expect("GET");
    assert_eq!(v, "v");
    assert_eq!(wire.get_db(), 0);

    // Without the handshake the same server refuses every command.
    let mut bare = WireConnection::connect(server.addr())
        .await
        .expect("connects");
    let err = bare
        .get::<_, Option<String>>("auth:k")
        .await
        .expect_err("NOAUTH");
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_authenticates_an_acl_user_selects_and_names_in_one_go() {
    let server = RedisServer::start().await.expect("server");
    server.rotate_user("app", "app-pw").await.expect("ACL user");
    let info = RedisConnectionInfo::default()
        .set_username("app")
        .set_password("app-pw")
        .set_db(2);
    let config = WireConfig {
        client_name: Some("wire-app".to_owned()),
        ..WireConfig::default()
    };
    let mut wire = WireConnection::connect_with(server.addr(), &info, &config)
        .await
        .expect("authenticates");
    let user: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut wire)
        .await
        .expect("ACL WHOAMI");
    assert_eq!(user, "app");
    let name: Option<String> = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut wire)
        .await
        .expect("CLIENT GETNAME");
    assert_eq!(name.as_deref(), Some("wire-app"));
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut wire)
        .await
        .expect("CLIENT INFO");
    assert!(info.contains(" db=2 "), "{info}");
    assert_eq!(wire.get_db(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_authentication_failed_and_never_shown() {
    const WRONG: &str = "wr0ng-pa55word-7f3a";
    let server = server_with_password("right-pw").await;
    server.rotate_user("app", "app-pw").await.expect("ACL user");
    let mut admin = server.admin().await.expect("admin");
    for info in [
        RedisConnectionInfo::default().set_password(WRONG),
        RedisConnectionInfo::default()
            .set_username("app")
            .set_password(WRONG)
            .set_db(1),
    ] {
        let err = WireConnection::connect_with(server.addr(), &info, &WireConfig::default())
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(shown.contains("authentication failed"), "{shown}");
            assert!(!shown.contains(WRONG), "the password is shown: {shown}");
        }
    }
    // Both refused connections were closed.
    wait_until_only_admin_is_connected(&mut admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_auth_is_closed_and_the_servers_words_are_masked() {
    const PASSWORD: &str = "echoed-pa55word";
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let auth = redis::cmd("AUTH").arg(PASSWORD).get_packed_command();
    let expected = auth.clone();
    // A server that quotes the password back in its refusal, then sees the socket close.
    let fake = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut received = vec![0; expected.len()];
        socket.read_exact(&mut received).await.expect("AUTH");
        assert_eq!(received, expected);
        let refusal = format!("-WRONGPASS {PASSWORD} is not the password\r\n");
        socket.write_all(refusal.as_bytes()).await.expect("reply");
        let mut rest = Vec::new();
        socket.read_to_end(&mut rest).await.expect("EOF");
        rest
    });
    let info = RedisConnectionInfo::default().set_password(PASSWORD);
    let err = WireConnection::connect_with(addr, &info, &WireConfig::default())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(shown.contains("WRONGPASS"), "{shown}");
        assert!(!shown.contains(PASSWORD), "the password is shown: {shown}");
    }
    let rest = tokio::time::timeout(Duration::from_secs(10), fake)
        .await
        .expect("the client closed the connection")
        .expect("fake server");
    assert!(rest.is_empty(), "sent after AUTH: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_3_is_selected_for_every_call() {
    let server = RedisServer::start().await.expect("server");
    let info = RedisConnectionInfo::default().set_db(3);
    let mut wire = WireConnection::connect_with(server.addr(), &info, &WireConfig::default())
        .await
        .expect("selects");
    assert_eq!(wire.get_db(), 3);
    let () = wire.set("db:k", "in-3").await.expect("SET");
    let mut db3 = redis::Client::open(format!("{}/3", server.url()))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("db 3");
    let v: Option<String> = db3.get("db:k").await.expect("GET in 3");
    assert_eq!(v.as_deref(), Some("in-3"));
    let mut db0 = server.admin().await.expect("admin");
    let v: Option<String> = db0.get("db:k").await.expect("GET in 0");
    assert_eq!(v, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_select_names_the_database_and_closes() {
    let server = RedisServer::start().await.expect("server");
    let mut admin = server.admin().await.expect("admin");
    let info = RedisConnectionInfo::default().set_db(99);
    let err = WireConnection::connect_with(server.addr(), &info, &WireConfig::default())
        .await
        .expect_err("only 16 databases");
    assert_eq!(
        err.kind(),
        ErrorKind::Server(redis::ServerErrorKind::ResponseError),
        "{err}"
    );
    assert!(err.to_string().contains("SELECT 99"), "{err}");
    wait_until_only_admin_is_connected(&mut admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_name_is_shown_by_client_list() {
    let server = RedisServer::start().await.expect("server");
    let config = WireConfig {
        client_name: Some("wire-bench-7".to_owned()),
        ..WireConfig::default()
    };
    let _wire =
        WireConnection::connect_with(server.addr(), &RedisConnectionInfo::default(), &config)
            .await
            .expect("named");
    let mut admin = server.admin().await.expect("admin");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .expect("CLIENT LIST");
    assert!(list.contains(" name=wire-bench-7 "), "{list}");

    // A name the server refuses is an error naming it.
    let config = WireConfig {
        client_name: Some("two words".to_owned()),
        ..WireConfig::default()
    };
    let err = WireConnection::connect_with(server.addr(), &RedisConnectionInfo::default(), &config)
        .await
        .expect_err("a name with a space");
    assert!(err.to_string().contains("two words"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_is_refused_before_connecting() {
    // Nothing listens there: the refusal must come before any connect.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let info = RedisConnectionInfo::default().set_protocol(ProtocolVersion::RESP3);
    let err = WireConnection::connect_with(addr, &info, &WireConfig::default())
        .await
        .expect_err("RESP3");
    assert_eq!(err.kind(), ErrorKind::InvalidClientConfig, "{err}");
    assert!(
        err.to_string()
            .contains("RESP3 is not supported by WireConnection yet"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_the_handshake_fails_it_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts, reads everything, answers nothing; returns what it read once the client closes.
    let silent = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut received = Vec::new();
        socket.read_to_end(&mut received).await.expect("read");
        received
    });
    let info = RedisConnectionInfo::default().set_password("pw").set_db(1);
    let config = WireConfig {
        handshake_timeout: Duration::from_millis(300),
        ..WireConfig::default()
    };
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        WireConnection::connect_with(addr, &info, &config),
    )
    .await
    .expect("the handshake is bounded")
    .expect_err("no reply");
    let elapsed = started.elapsed();
    assert!(err.is_io_error(), "{err:?}");
    assert!(err.to_string().contains("handshake"), "{err}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let received = tokio::time::timeout(Duration::from_secs(10), silent)
        .await
        .expect("the client closed the connection")
        .expect("silent server");
    let expected = redis::pipe()
        .cmd("AUTH")
        .arg("pw")
        .cmd("SELECT")
        .arg(1)
        .get_packed_pipeline();
    assert_eq!(received, expected, "one pipelined write of AUTH and SELECT");
}
