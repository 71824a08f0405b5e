//! FaultProxy in front of a real redis-server: every fault and the counters.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis_lab::{FaultProxy, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A redis-rs connection; the generous connect timeout keeps the test robust on a loaded machine.
async fn connect(url: &str, response_timeout: Duration) -> MultiplexedConnection {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(response_timeout));
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

/// Reads from a raw socket until `expected` bytes arrived or the peer closed.
async fn read_exactly(stream: &mut TcpStream, expected: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while buf.len() < expected {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break,
        }
    }
    buf
}

/// Polls `check` every 10 ms for up to 5 s.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn forwards_and_counts() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    assert_eq!(proxy.url(), format!("redis://{}", proxy.addr()));
    let mut conn = connect(&proxy.url(), Duration::from_secs(2)).await;
    let before = proxy.stats();
    assert_eq!(before.connections_accepted, 1);
    for i in 0..10 {
        let () = redis::cmd("SET")
            .arg("k")
            .arg(i)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let value: u32 = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, 9);
    let after = proxy.stats();
    assert_eq!(after.commands_forwarded - before.commands_forwarded, 11);
    assert_eq!(after.commands_throttled, 0);
    assert_eq!(after.connections_dropped, 0);
    assert!(after.bytes_to_server > before.bytes_to_server);
    // 10 × "+OK\r\n" + "$1\r\n9\r\n"
    assert_eq!(after.bytes_to_client - before.bytes_to_client, 10 * 5 + 7);
    proxy.reset_stats();
    assert_eq!(proxy.stats(), redis_lab::ProxyStats::default());
}

#[tokio::test]
async fn latency_is_added_in_both_directions() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut conn = connect(&proxy.url(), Duration::from_secs(5)).await;
    let started = Instant::now();
    ping(&mut conn).await.unwrap();
    let baseline = started.elapsed();

    proxy.set_latency(Some(Duration::from_millis(100)));
    let started = Instant::now();
    ping(&mut conn).await.unwrap();
    let delayed = started.elapsed();
    assert!(delayed >= Duration::from_millis(200), "{delayed:?}");
    assert!(
        delayed < Duration::from_millis(200) + baseline + Duration::from_millis(150),
        "{delayed:?}"
    );

    // Pipelined commands are delayed, not serialised.
    let mut pipe = redis::pipe();
    for _ in 0..50 {
        pipe.cmd("INCR").arg("n").ignore();
    }
    pipe.cmd("GET").arg("n");
    let started = Instant::now();
    let (n,): (u32,) = pipe.query_async(&mut conn).await.unwrap();
    assert_eq!(n, 50);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    proxy.set_latency(None);
    let started = Instant::now();
    ping(&mut conn).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn drop_all_breaks_live_connections() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut a = connect(&proxy.url(), Duration::from_secs(2)).await;
    let mut b = connect(&proxy.url(), Duration::from_secs(2)).await;
    ping(&mut a).await.unwrap();
    ping(&mut b).await.unwrap();
    proxy.drop_all();
    assert!(eventually(|| proxy.stats().connections_dropped == 2).await);
    assert!(ping(&mut a).await.is_err());
    assert!(ping(&mut b).await.is_err());
    // New connections work again.
    let mut c = connect(&proxy.url(), Duration::from_secs(2)).await;
    assert_eq!(ping(&mut c).await.unwrap(), "PONG");
    // The server-side connections were closed too: only `c` and the INFO connection remain.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clients = server
            .info_field("clients", "connected_clients")
            .await
            .unwrap();
        if clients == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connected_clients stays {clients}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn drop_every_cuts_in_the_middle_of_a_reply() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut setup = connect(&server.url(), Duration::from_secs(2)).await;
    let big = "x".repeat(1000);
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query_async(&mut setup)
        .await
        .unwrap();
    proxy.set_drop_every(Some(2));
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream
            .write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
            .await
            .unwrap();
        let reply = read_exactly(&mut stream, 1009).await;
        outcomes.push(reply.len());
    }
    // "$1000\r\n" + 1000 bytes + "\r\n" = 1009 bytes; connections 2 and 4 got half, then EOF.
    assert_eq!(outcomes, vec![1009, 504, 1009, 504]);
    assert_eq!(proxy.stats().connections_dropped, 2);

    // A redis-rs client on a cut connection sees an error for its first command.
    proxy.set_drop_every(Some(1));
    let mut conn = connect(&proxy.url(), Duration::from_secs(2)).await;
    let result: redis::RedisResult<String> =
        redis::cmd("GET").arg("big").query_async(&mut conn).await;
    assert!(result.is_err());
    proxy.set_drop_every(None);
    let mut conn = connect(&proxy.url(), Duration::from_secs(2)).await;
    let value: String = redis::cmd("GET")
        .arg("big")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, big);
}

#[tokio::test]
async fn blackhole_times_out_and_recovers() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut live = connect(&proxy.url(), Duration::from_millis(300)).await;
    ping(&mut live).await.unwrap();
    proxy.set_blackhole(true);
    let started = Instant::now();
    let error = ping(&mut live).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // New connections are accepted but never answered.
    let mut raw = TcpStream::connect(proxy.addr()).await.unwrap();
    raw.write_all(b"PING\r\n").await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), raw.read(&mut byte)).await;
    assert!(read.is_err(), "blackholed connection answered: {read:?}");
    let processed_before = server
        .info_field("stats", "total_commands_processed")
        .await
        .unwrap();

    proxy.set_blackhole(false);
    let mut fresh = connect(&proxy.url(), Duration::from_secs(2)).await;
    assert_eq!(ping(&mut fresh).await.unwrap(), "PONG");
    let processed_after = server
        .info_field("stats", "total_commands_processed")
        .await
        .unwrap();
    // Only the fresh connection's commands (and our INFO) reached the server.
    let delta = processed_after.parse::<u64>().unwrap() - processed_before.parse::<u64>().unwrap();
    assert!(delta <= 4, "{delta}");
}

#[tokio::test]
async fn throttle_answers_locally_and_keeps_pipeline_order() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    // Latency makes upstream replies slow while local ones are ready at once: a proxy that
    // did not order them would write THROTTLED first.
    proxy.set_latency(Some(Duration::from_millis(50)));
    proxy.set_throttle(Some(50)); // burst 5
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut request = Vec::new();
    for _ in 0..20 {
        request.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n");
    }
    stream.write_all(&request).await.unwrap();
    let throttled = b"-THROTTLED too many requests\r\n";
    // Every reply here is one line: read until 20 lines arrived.
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while replies.windows(2).filter(|w| w == b"\r\n").count() < 20 {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "proxy closed the connection");
        replies.extend_from_slice(&chunk[..n]);
    }
    let stats = proxy.stats();
    assert_eq!(stats.commands_forwarded + stats.commands_throttled, 20);
    let forwarded = usize::try_from(stats.commands_forwarded).unwrap();
    assert!((5..=6).contains(&forwarded), "{stats:?}");
    let mut expected = Vec::new();
    for i in 1..=forwarded {
        expected.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    for _ in forwarded..20 {
        expected.extend_from_slice(throttled);
    }
    assert_eq!(
        String::from_utf8_lossy(&replies),
        String::from_utf8_lossy(&expected)
    );
    let n: usize = {
        let mut conn = server.admin().await.unwrap();
        redis::cmd("GET")
            .arg("n")
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(
        n, forwarded,
        "throttled commands must never reach the server"
    );

    // A throttled command between forwarded ones, with a redis-rs client.
    proxy.set_latency(None);
    proxy.set_throttle(None);
    let mut conn = connect(&proxy.url(), Duration::from_secs(2)).await;
    proxy.set_throttle(Some(10)); // burst 1
    let mut pipe = redis::pipe();
    pipe.cmd("INCR")
        .arg("m")
        .cmd("INCR")
        .arg("m")
        .cmd("INCR")
        .arg("m");
    let replies: Vec<redis::Value> = conn.req_packed_commands(&pipe, 0, 3).await.unwrap();
    assert_eq!(replies[0], redis::Value::Int(1));
    assert!(
        matches!(&replies[1], redis::Value::ServerError(e) if e.code() == "THROTTLED"),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[2], redis::Value::ServerError(e) if e.code() == "THROTTLED"),
        "{replies:?}"
    );
}

#[tokio::test]
async fn set_upstream_moves_new_connections() {
    let first = RedisServer::start().await.unwrap();
    let second = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(first.addr()).await.unwrap();
    let mut old = connect(&proxy.url(), Duration::from_secs(2)).await;
    proxy.set_upstream(second.addr());
    assert_eq!(proxy.upstream(), second.addr());
    let mut new = connect(&proxy.url(), Duration::from_secs(2)).await;
    let old_port: String = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async::<Vec<String>>(&mut old)
        .await
        .unwrap()
        .remove(1);
    let new_port: String = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async::<Vec<String>>(&mut new)
        .await
        .unwrap()
        .remove(1);
    assert_eq!(old_port, first.port().to_string());
    assert_eq!(new_port, second.port().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_many_concurrent_connections() {
    let server = RedisServer::start_with(redis_lab::ServerConfig {
        extra: vec![("maxclients".into(), "2000".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..600u32 {
        let url = proxy.url();
        tasks.spawn(async move {
            let mut conn = connect(&url, Duration::from_secs(10)).await;
            let () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query_async(&mut conn)
                .await
                .unwrap();
            let v: u32 = redis::cmd("GET")
                .arg(format!("k{i}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(v, i);
            conn
        });
    }
    let mut conns = Vec::new();
    while let Some(conn) = tasks.join_next().await {
        conns.push(conn.unwrap());
    }
    assert_eq!(proxy.stats().connections_accepted, 600);
    assert!(started.elapsed() < Duration::from_secs(20));
    proxy.drop_all();
    assert!(eventually(|| proxy.stats().connections_dropped == 600).await);
}

#[tokio::test]
async fn dropping_the_proxy_closes_connections() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let addr = proxy.addr();
    let mut conn = connect(&proxy.url(), Duration::from_secs(1)).await;
    ping(&mut conn).await.unwrap();
    drop(proxy);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ping(&mut conn).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "connection still alive after drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn large_requests_and_replies_pass_intact() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    proxy.set_latency(Some(Duration::from_millis(5)));
    let mut conn = connect(&proxy.url(), Duration::from_secs(10)).await;
    proxy.reset_stats();
    let big: String = (0..2_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query_async(&mut conn)
        .await
        .unwrap();
    let back: String = redis::cmd("GET")
        .arg("big")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(back, big);
    let items: Vec<u32> = (0..100_000).collect();
    let () = redis::cmd("RPUSH")
        .arg("list")
        .arg(&items)
        .query_async::<u64>(&mut conn)
        .await
        .map(drop)
        .unwrap();
    let listed: Vec<u32> = redis::cmd("LRANGE")
        .arg("list")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed, items);
    assert_eq!(proxy.stats().commands_forwarded, 4);
}

#[tokio::test]
async fn resp3_pushes_pass_while_throttling() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    proxy.set_throttle(Some(100_000));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(b"HELLO 3\r\n").await.unwrap();
    let hello = read_until(&mut stream, b"proto").await;
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    stream
        .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n")
        .await
        .unwrap();
    read_until(&mut stream, b"subscribe").await;
    let mut publisher = server.admin().await.unwrap();
    let receivers: u32 = redis::cmd("PUBLISH")
        .arg("ch")
        .arg("hi")
        .query_async(&mut publisher)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let message = read_until(&mut stream, b"hi\r\n").await;
    let text = String::from_utf8_lossy(&message);
    assert!(
        text.contains(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"),
        "{text}"
    );
    assert_eq!(proxy.stats().commands_throttled, 0);
}

/// Reads until `needle` appears (or 5 s pass).
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("no {needle:?} in {buf:?}: {other:?}"),
        }
    }
    buf
}
