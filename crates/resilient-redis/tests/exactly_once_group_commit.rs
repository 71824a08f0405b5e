//! Group commit against a real server: concurrent exactly-once writes share script calls and
//! keep their own replies, abandoned writes do not stop the others, and queued writes answer
//! within their deadline.

mod common;

use std::time::Duration;

use common::exactly_once::{SERIAL, TASKS, one_server};
use redis::{AsyncCommands, Value};
use redis_lab::RedisServer;
use resilient_redis::{Client, ClientConfig, ErrorKind, ExactlyOnceConfig, Outcome};
use tokio::{task::JoinSet, time::Instant};

/// Concurrent writes share script calls (group commit), and each still gets its own reply:
/// distinct counter values, `OK`, its own error, nil; nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_calls_and_keep_their_own_replies() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let mut admin = server.admin().await.unwrap();
    let () = admin.rpush("list", "x").await.unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    const PER_TASK: u64 = 300;
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let xo = xo.clone();
        tasks.spawn(async move {
            let (mut counts, mut wrongtype) = (Vec::new(), 0u64);
            for i in 0..PER_TASK {
                match i % 10 {
                    3 => match xo.send(redis::cmd("INCR").arg("list")).await.unwrap() {
                        Value::ServerError(e) if e.code() == "WRONGTYPE" => wrongtype += 1,
                        other => panic!("INCR of a list: {other:?}"),
                    },
                    5 => {
                        let set = redis::cmd("SET").arg(format!("s:{t}")).arg(i).clone();
                        assert_eq!(xo.send(&set).await.unwrap(), Value::Okay);
                    }
                    7 => {
                        let del = redis::cmd("GETDEL").arg(format!("none:{t}")).clone();
                        assert_eq!(xo.send(&del).await.unwrap(), Value::Nil);
                    }
                    _ => match xo.send(redis::cmd("INCR").arg("c")).await.unwrap() {
                        Value::Int(n) => counts.push(n),
                        other => panic!("INCR: {other:?}"),
                    },
                }
            }
            (counts, wrongtype)
        });
    }
    let (mut counts, mut wrongtype) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (c, w) = r.unwrap();
        counts.extend(c);
        wrongtype += w;
    }
    counts.sort_unstable();
    let n = counts.len() as i64;
    assert_eq!(
        counts,
        (1..=n).collect::<Vec<_>>(),
        "every INCR its own value"
    );
    let final_value: i64 = admin.get("c").await.unwrap();
    assert_eq!(final_value, n);
    assert_eq!(wrongtype, TASKS as u64 * PER_TASK / 10);
    let stats = xo.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.writes, TASKS as u64 * PER_TASK);
    assert!(
        stats.script_calls < stats.writes / 2,
        "writes did not share calls: {stats:?}"
    );
}

/// Callers that give up waiting (a timeout drops their future) do not stop the calls other
/// writes share with them, and do not wedge the queue: every write that succeeded counted once,
/// and later writes go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_writes_do_not_stop_the_others() {
    let _serial = SERIAL.lock().await;
    let (_server, _client, mut admin, xo) = one_server().await;
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let xo = xo.clone();
        tasks.spawn(async move {
            let (mut ok, mut abandoned) = (0u64, 0u64);
            let incr = redis::cmd("INCR").arg("c").clone();
            for i in 0..200u64 {
                let write = xo.send(&incr);
                // Every other task gives up on some writes almost at once.
                if t % 2 == 0 && i % 3 == 0 {
                    match tokio::time::timeout(Duration::from_micros(20), write).await {
                        Ok(r) => {
                            r.unwrap();
                            ok += 1;
                        }
                        Err(_) => abandoned += 1,
                    }
                } else {
                    write.await.unwrap();
                    ok += 1;
                }
            }
            (ok, abandoned)
        });
    }
    let (mut ok, mut abandoned) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (o, a) = r.unwrap();
        ok += o;
        abandoned += a;
    }
    // Abandoned writes may have run (they were queued or sent): never more than that.
    let final_value: u64 = admin.get("c").await.unwrap();
    eprintln!("ok={ok} abandoned={abandoned} final={final_value}");
    assert!(
        (ok..=ok + abandoned).contains(&final_value),
        "ok={ok} abandoned={abandoned} final={final_value}"
    );
    // The queue still works, alone and in bulk.
    let n: i64 = xo
        .clone()
        .incr("after", 1)
        .await
        .expect("a write after the abandoned ones");
    assert_eq!(n, 1);
}

/// Writes queued behind calls that cannot finish (the server holds every write: `CLIENT PAUSE`)
/// still answer within their deadline: those never sent fail as definite failures, and nothing
/// counts twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_answer_within_their_deadline() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let deadline = Duration::from_secs(1);
    let config = ClientConfig {
        deadline,
        // The calls in flight wait out their deadline (no stall diagnosis, which could end them
        // early and let the queue go out in time): the writes behind them wait in the queue.
        response_timeout: Duration::from_secs(2),
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    let mut admin = server.admin().await.unwrap();
    // Load the scripts first, so the pause holds the writes themselves.
    assert_eq!(
        xo.send(redis::cmd("INCR").arg("c")).await.unwrap(),
        Value::Int(1)
    );
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2_500)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for _ in 0..40 {
        let xo = xo.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let result = xo.send(redis::cmd("INCR").arg("c")).await;
            (started.elapsed(), result)
        });
    }
    let (mut ok, mut ambiguous, mut not_sent, mut slowest) = (0u64, 0u64, 0u64, Duration::ZERO);
    while let Some(r) = tasks.join_next().await {
        let (elapsed, result) = r.unwrap();
        slowest = slowest.max(elapsed);
        match result {
            Ok(_) => ok += 1,
            Err(e) if e.outcome() == Outcome::Failed => {
                assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
                not_sent += 1;
            }
            Err(e) => {
                assert_eq!(e.outcome(), Outcome::Ambiguous, "{e}");
                ambiguous += 1;
            }
        }
    }
    let () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();
    eprintln!("ok={ok} ambiguous={ambiguous} not sent={not_sent} slowest={slowest:?}");
    // Without the queue's deadline the last writes would wait for the first calls (1 s), then
    // for their own (1 s more).
    assert!(
        slowest < deadline + Duration::from_millis(400),
        "a write waited {slowest:?}"
    );
    assert!(not_sent > 0, "no write waited in the queue");
    // Writes given up on in flight may run once the pause ends; the others never.
    let final_value: u64 = admin.get("c").await.unwrap();
    assert!(
        (1 + ok..=1 + ok + ambiguous).contains(&final_value),
        "final {final_value}, ok {ok}, ambiguous {ambiguous}"
    );
}
