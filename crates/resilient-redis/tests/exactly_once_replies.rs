//! Exactly-once writes against a real server answer as the plain commands do: replies, pipelines
//! and transactions identical to the plain client's and repeated by replays, a failed command
//! that records nothing, token TTLs and script reloads, and commands a script cannot run
//! refused.

mod common;

use std::time::Duration;

use common::exactly_once::one_server;
use redis::{AsyncCommands, RedisResult, Value};
use redis_lab::{FaultProxy, RedisServer};
use resilient_redis::{Client, ClientConfig, ErrorKind, ExactlyOnceConfig, Outcome};
use tokio::{task::JoinSet, time::Instant};

/// `parts` with `{}` in any argument replaced by `key`.
fn cmd_on(key: &str, parts: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd(std::str::from_utf8(parts[0]).unwrap());
    for p in &parts[1..] {
        if *p == b"{}" {
            c.arg(key);
        } else {
            c.arg(*p);
        }
    }
    c
}

/// A setup command (possibly empty) and the command under test, `{}` standing for the key.
type Case<'a> = (&'a [&'a [u8]], &'a [&'a [u8]]);

/// Every write gives the same reply through the wrapper as without it, and a replay gives it again
/// without applying anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_those_of_the_plain_commands_and_replays_repeat_them() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    let mut admin = server.admin().await.unwrap();
    let binary: &[u8] = b"a\x00b\xff\r\n";
    // (setup, command): each runs on its own key for the plain client and for the wrapper.
    let cases: &[Case] = &[
        (&[], &[b"INCR", b"{}"]),
        (&[], &[b"SET", b"{}", b"v"]),
        (&[], &[b"SET", b"{}", b"v", b"XX"]), // nil
        (&[], &[b"GETDEL", b"{}"]),           // nil
        (&[], &[b"LPUSH", b"{}", b"a", b"b"]),
        (&[], &[b"HSET", b"{}", b"f", b"v", b"g", b"w"]),
        (
            &[b"RPUSH", b"{}", b"a", b"b", b"c"],
            &[b"LPOP", b"{}", b"2"],
        ), // array
        (
            &[b"RPUSH", b"{}", b"a", b"b", b"c"],
            &[b"LTRIM", b"{}", b"0", b"1"],
        ), // status
        (&[b"SADD", b"{}", b"m"], &[b"SPOP", b"{}"]),
        (&[b"SET", b"{}", binary], &[b"SET", b"{}", b"new", b"GET"]), // binary bulk
        (
            &[b"HSET", b"{}", b"f", b"1.5"],
            &[b"HINCRBYFLOAT", b"{}", b"f", b"0.25"],
        ),
        (&[b"SET", b"{}", b"v"], &[b"EXPIRE", b"{}", b"100"]),
        (&[b"SET", b"{}", b"v"], &[b"INCR", b"{}"]), // an error reply, passed through
    ];
    let mut replayed = 0;
    for (i, (setup, case)) in cases.iter().enumerate() {
        let (p, x) = (format!("p:{i}"), format!("x:{i}"));
        if !setup.is_empty() {
            for key in [&p, &x] {
                let _: Value = cmd_on(key, setup).query_async(&mut admin).await.unwrap();
            }
        }
        let name = String::from_utf8_lossy(case[0]);
        let plain = client.send(&cmd_on(&p, case)).await.unwrap();
        let first = xo
            .send_with_key(&format!("case-{i}"), &cmd_on(&x, case))
            .await
            .unwrap();
        let dump = |key: String| {
            let mut admin = admin.clone();
            async move {
                let v: Value = redis::cmd("DUMP")
                    .arg(key)
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                v
            }
        };
        let before = dump(x.clone()).await;
        let replay = xo
            .send_with_key(&format!("case-{i}"), &cmd_on(&x, case))
            .await
            .unwrap();
        let after = dump(x.clone()).await;
        assert_eq!(
            first, plain,
            "{name}: reply differs from the plain command's"
        );
        assert_eq!(after, before, "{name}: the replay changed the data");
        if let Value::ServerError(_) = plain {
            // Nothing recorded: the second call ran (and failed) again.
            assert_eq!(replay, first, "{name}");
        } else {
            assert_eq!(
                replay, first,
                "{name}: the replay differs from the original"
            );
            replayed += 1;
        }
        eprintln!("{name}: {plain:?}");
    }
    assert_eq!(xo.stats().replays, replayed);
    // Through typed redis-rs calls as well (the ConnectionLike path, generated tokens).
    let mut xo_conn = xo.clone();
    let n: i64 = xo_conn.incr("typed", 5).await.unwrap();
    assert_eq!(n, 5);
    let () = xo_conn.set("typed:s", "v").await.unwrap();
    let missing: Option<String> = xo_conn.get("typed:missing").await.unwrap();
    assert_eq!(missing, None);
    let range: Vec<String> = xo_conn.lrange("x:6", 0, -1).await.unwrap();
    assert_eq!(range, ["c"]);
    let popped: Option<String> = xo_conn.lpop("typed:none", None).await.unwrap();
    assert_eq!(popped, None);
}

/// Pipelines and transactions: the same values as without the wrapper (ignored commands and
/// error entries included), one token for the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_transactions_match_the_plain_client() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let mut plain = client.clone();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    let mut xo_conn = xo.clone();
    for prefix in ["p", "x"] {
        let () = plain.rpush(format!("{prefix}:list"), 1).await.unwrap();
    }
    let build = |prefix: &str, atomic: bool, with_error: bool| {
        let mut p = redis::pipe();
        if atomic {
            p.atomic();
        }
        p.incr(format!("{prefix}:n"), 2)
            .set(format!("{prefix}:s"), "v")
            .ignore()
            .get(format!("{prefix}:missing"));
        if with_error {
            // A WRONGTYPE entry; the other commands still apply.
            p.incr(format!("{prefix}:list"), 1);
        }
        p.lpush(format!("{prefix}:l2"), "a");
        p
    };
    for atomic in [false, true] {
        // Typed through redis-rs (ignored commands dropped, as without the wrapper).
        let plain_reply: Value = build("p", atomic, false)
            .query_async(&mut plain)
            .await
            .unwrap();
        let xo_reply: Value = build("x", atomic, false)
            .query_async(&mut xo_conn)
            .await
            .unwrap();
        assert_eq!(xo_reply, plain_reply, "atomic={atomic}");
        // An error entry fails the typed query the same way.
        let plain_err = build("p", atomic, true)
            .query_async::<Value>(&mut plain)
            .await
            .unwrap_err();
        let xo_err = build("x", atomic, true)
            .query_async::<Value>(&mut xo_conn)
            .await
            .unwrap_err();
        assert_eq!(xo_err.to_string(), plain_err.to_string(), "atomic={atomic}");
        // Raw values, error entries included.
        let plain_raw = client
            .send_pipeline(&build("p", atomic, true))
            .await
            .unwrap();
        let xo_raw = xo.send_pipeline(&build("x", atomic, true)).await.unwrap();
        assert_eq!(xo_raw, plain_raw, "atomic={atomic}, send_pipeline");
        eprintln!("atomic={atomic}: {xo_raw:?}");
    }
    // Typed results through an atomic pipeline.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("t:a", 1)
        .incr("t:b", 2)
        .query_async(&mut xo_conn)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
    // A replayed group applies nothing and returns the same replies.
    let group = build("r", true, true);
    let first = xo.send_pipeline_with_key("group-1", &group).await.unwrap();
    let again = xo.send_pipeline_with_key("group-1", &group).await.unwrap();
    assert_eq!(first, again);
    let n: i64 = plain.get("r:n").await.unwrap();
    assert_eq!(n, 2, "the replay ran the group again");
    // A read-only pipeline goes straight through.
    let reads_before = xo.stats().reads;
    let (n, _s): (i64, Option<String>) = redis::pipe()
        .get("x:n")
        .get("x:s")
        .query_async(&mut xo_conn)
        .await
        .unwrap();
    assert_eq!(n, 12);
    assert_eq!(xo.stats().reads, reads_before + 1);
}

/// WRONGTYPE comes back unchanged and records nothing: the same key works once the type is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_records_nothing() {
    let (_server, _client, mut admin, xo) = one_server().await;
    let () = admin.rpush("k", "x").await.unwrap();
    let incr = redis::cmd("INCR").arg("k").clone();
    match xo.send_with_key("op-1", &incr).await.unwrap() {
        Value::ServerError(e) => assert_eq!(e.code(), "WRONGTYPE"),
        other => panic!("expected WRONGTYPE, got {other:?}"),
    }
    // Through redis-rs: the same error as the plain client's.
    let mut xo_conn = xo.clone();
    let e = xo_conn.incr::<_, _, i64>("k", 1).await.unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    let tokens: Vec<String> = admin.keys("xo:*").await.unwrap();
    assert!(tokens.is_empty(), "recorded: {tokens:?}");
    let () = admin.del("k").await.unwrap();
    assert_eq!(
        xo.send_with_key("op-1", &incr).await.unwrap(),
        Value::Int(1)
    );
    assert_eq!(
        xo.send_with_key("op-1", &incr).await.unwrap(),
        Value::Int(1)
    );
    let v: i64 = admin.get("k").await.unwrap();
    assert_eq!(v, 1);
}

/// The token key lives for the configured TTL; a flushed script cache costs one EVAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_with_the_configured_ttl_and_scripts_reload() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let mut admin = server.admin().await.unwrap();
    let config = ExactlyOnceConfig {
        token_ttl: Duration::from_secs(8),
        key_prefix: "tok:".into(),
        ..Default::default()
    };
    let mut xo = client.exactly_once(config).unwrap();
    let _: i64 = xo.incr("n", 1).await.unwrap();
    let tokens: Vec<String> = admin.keys("tok:*").await.unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    // A hash of records lives the TTL and one period (a quarter of it): 10 s.
    let pttl: i64 = admin.pttl(&tokens[0]).await.unwrap();
    assert!((9_000..=10_000).contains(&pttl), "PTTL {pttl}");
    // A caller-chosen key's record lives exactly the TTL.
    xo.send_with_key("once", redis::cmd("INCR").arg("other"))
        .await
        .unwrap();
    let pttl: i64 = admin.pttl("tok:k:once").await.unwrap();
    assert!((7_000..=8_000).contains(&pttl), "PTTL {pttl}");
    let () = admin.del("tok:k:once").await.unwrap();
    // Concurrent writes go out in batches, run by a script of their own.
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let mut xo = xo.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                let _: i64 = xo.incr("m", 1).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    // The script cache is flushed (as by a restart): the next write reloads it once.
    let loads = xo.stats().script_loads;
    // The first write ever, then the first batch (the server had seen neither script).
    assert!((2..=6).contains(&loads), "{loads} script loads");
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    let n: i64 = xo.incr("n", 1).await.unwrap();
    let m: i64 = xo.incr("n", 1).await.unwrap();
    assert_eq!((n, m), (2, 3));
    assert_eq!(xo.stats().script_loads, loads + 1);
    // A TTL shorter than the client's deadline is refused.
    let short = ExactlyOnceConfig {
        token_ttl: Duration::from_secs(1),
        ..Default::default()
    };
    assert_eq!(
        client.exactly_once(short).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
}

/// A write whose `EVALSHA` waited, then met `NOSCRIPT`, sends the whole script within what is
/// left of its deadline, not a fresh one (chaos found writes 2.4 s past their deadline after a
/// Sentinel failover to a server without the script); and a definite failure of that second
/// call is reported as ambiguous, since an earlier attempt of the first may have run the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_after_noscript_keeps_the_writes_deadline() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let deadline = Duration::from_millis(800);
    let config = ClientConfig {
        deadline,
        // The paused call waits for its reply (no stall diagnosis within the pause).
        response_timeout: Duration::from_secs(2),
        ..ClientConfig::from_url(&proxy.url()).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    let mut xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    let mut admin = server.admin().await.unwrap();
    let mut through_proxy = redis::Client::open(proxy.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = xo.incr("n", 1).await.unwrap();
    // A server without the script, holding writes for 500 ms of the 800 ms deadline.
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(500)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let forwarded = proxy.stats().commands_forwarded;
    let started = Instant::now();
    let write = tokio::spawn(async move {
        let result: RedisResult<i64> = xo.incr("n", 1).await;
        (result, started.elapsed())
    });
    // Once the EVALSHA is at the server, everything after it is refused by the proxy
    // (`THROTTLED`, never applied) for a second: the bucket's one token goes to a PING, the
    // next comes after the deadline. (A fresh deadline for the EVAL would get it.)
    while proxy.stats().commands_forwarded == forwarded {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    proxy.set_throttle(Some(1));
    let _: RedisResult<String> = redis::cmd("PING").query_async(&mut through_proxy).await;
    let (result, elapsed) = write.await.unwrap();
    let error = result.expect_err("every EVAL is refused");
    let error = resilient_redis::Error::from_redis(&error)
        .unwrap_or_else(|| panic!("not the client's error: {error}"))
        .clone();
    assert!(
        elapsed < deadline + Duration::from_millis(150),
        "the write took {elapsed:?} ({error})"
    );
    assert_eq!(error.outcome(), Outcome::Ambiguous, "{error}");
    proxy.set_throttle(None);
    let n: i64 = admin.get("n").await.unwrap();
    assert_eq!(n, 1, "nothing ran");
}

/// Server memory per exactly-once write, as the docs state it (README, `lib.rs`, the module
/// docs): 10,000 `INCR`s of one key from 20 tasks (default config, so group commit and the
/// default prefix), each leaving its record for the TTL. Measured two ways: the growth of
/// `INFO memory`'s `used_memory`, and the sum of `MEMORY USAGE` over the records' hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_memory_per_write_is_the_documented_figure() {
    const WRITES: i64 = 10_000;
    let (_server, _client, mut admin, xo) = one_server().await;
    let used = |mut admin: redis::aio::MultiplexedConnection| async move {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut admin)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let writes = |n: i64| {
        let mut tasks = JoinSet::new();
        for _ in 0..20 {
            let mut xo = xo.clone();
            tasks.spawn(async move {
                for _ in 0..n / 20 {
                    let _: i64 = xo.incr("m", 1).await.unwrap();
                }
            });
        }
        tasks.join_all()
    };
    // Warm up (scripts loaded, buffers grown), then start from no records.
    writes(1_280).await;
    let warm: Vec<String> = admin.keys("xo:*").await.unwrap();
    let () = admin.del(warm).await.unwrap();
    let before = used(admin.clone()).await;
    writes(WRITES).await;
    let by_info = (used(admin.clone()).await - before) as f64 / WRITES as f64;
    let hashes: Vec<String> = admin.keys("xo:*").await.unwrap();
    let mut usage = 0;
    for key in &hashes {
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut admin)
            .await
            .unwrap();
        usage += bytes;
    }
    let by_usage = usage as f64 / WRITES as f64;
    let documented = common::exactly_once::documented_bytes_per_write();
    eprintln!(
        "server memory per exactly-once INCR: {by_info:.1} B (used_memory), {by_usage:.1} B \
         (MEMORY USAGE of {} hashes, e.g. {:?}); documented: {documented} B",
        hashes.len(),
        hashes.first()
    );
    // A caller-chosen key's record is a key of its own (`xo:k:order-NNNNN`).
    let before_keys = used(admin.clone()).await;
    let keyed = xo.clone();
    for i in 0..1_000 {
        keyed
            .send_with_key(&format!("order-{i:05}"), redis::cmd("INCR").arg("k"))
            .await
            .unwrap();
    }
    let per_key = (used(admin.clone()).await - before_keys) as f64 / 1_000.0;
    eprintln!("server memory per caller-keyed write: {per_key:.1} B (used_memory)");
    // The module docs say "about 210".
    assert!(
        (180.0..=240.0).contains(&per_key),
        "{per_key:.1} B per keyed write"
    );
    // 64 records per hash; one more if the writes straddled a period (a quarter of the TTL).
    let full = (WRITES + 63) / 64;
    assert!(
        (full..=full + 1).contains(&(hashes.len() as i64)),
        "{hashes:?}"
    );
    for measured in [by_info, by_usage] {
        assert!(
            (measured - documented as f64).abs() <= 4.0,
            "measured {measured:.1} B per write, the docs say {documented}"
        );
    }
}

/// Commands that cannot run inside the script are refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_a_script_cannot_run_are_refused() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    for c in [
        redis::cmd("BLPOP").arg("q").arg(1).clone(),
        redis::cmd("EVAL").arg("return 1").arg(0).clone(),
        redis::cmd("MULTI").clone(),
    ] {
        let e = xo.send(&c).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        assert_eq!(e.outcome(), Outcome::Failed);
    }
    let mut p = redis::pipe();
    p.incr("a", 1).cmd("EVAL").arg("return 1").arg(0);
    assert_eq!(
        xo.send_pipeline(&p).await.unwrap_err().kind(),
        ErrorKind::Refused
    );
    assert_eq!(xo.stats().writes, 0);
}
