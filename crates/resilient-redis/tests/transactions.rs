//! Optimistic transactions (`Client::transaction`: WATCH, reads, MULTI .. EXEC) against real
//! servers, through conflicts and killed connections.
//!
//! Run with `--nocapture` for the figures.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::AsyncCommands;
use redis_lab::RedisServer;
use resilient_redis::{Client, ClientConfig, ErrorKind, Outcome};
use tokio::{task::JoinSet, time::Instant};

/// One read-increment-write of `key` through the API.
async fn increment(client: &Client, key: &'static str) -> Result<(), resilient_redis::Error> {
    client
        .transaction(&[key], move |mut tx| async move {
            let n: Option<i64> = tx.get(key).await?;
            Ok(redis::pipe().set(key, n.unwrap_or(0) + 1).ignore().clone())
        })
        .await
}

/// Replies come back as from `EXEC`; reads only inside the closure; nothing to write is fine;
/// concurrent increments conflict and are run again, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_reads_then_writes_atomically_and_reruns_on_conflict() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let (set, value): (String, i64) = client
        .transaction(&["a"], |mut tx| async move {
            let a: Option<i64> = tx.get("a").await?;
            Ok(redis::pipe().set("a", a.unwrap_or(41) + 1).get("a").clone())
        })
        .await
        .unwrap();
    assert_eq!((set.as_str(), value), ("OK", 42));
    // A write inside the closure is refused, before anything is queued.
    let err = client
        .transaction::<_, (), _, _>(&["a"], |mut tx| async move {
            let () = tx.set("a", 0).await?;
            Ok(redis::pipe())
        })
        .await
        .unwrap_err();
    assert_eq!(err.outcome(), Outcome::Failed, "{err}");
    assert!(err.to_string().contains("only reads"), "{err}");
    let mut admin = server.admin().await.unwrap();
    let a: i64 = admin.get("a").await.unwrap();
    assert_eq!(a, 42);
    // Nothing to write.
    let (): () = client
        .transaction(&["a"], |_tx| async move { Ok(redis::pipe()) })
        .await
        .unwrap();
    // No key to watch: refused.
    let none: [&str; 0] = [];
    let err = client
        .transaction::<_, (), _, _>(&none, |_tx| async move { Ok(redis::pipe()) })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);

    // 20 tasks x 50 increments of one counter: every one applied once.
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                increment(&client, "c").await.unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let c: i64 = admin.get("c").await.unwrap();
    assert_eq!(c, 1000, "{:?}", client.stats());
    assert!(client.stats().conflicts > 0, "{:?}", client.stats());
}

/// The target: 50 tasks incrementing one counter through the API for 5 s while
/// `CLIENT KILL TYPE normal` runs every 200 ms: ok <= final <= ok + ambiguous (no lost update),
/// conflicts reported, no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_under_client_kill_lose_no_update() {
    let server = RedisServer::start().await.unwrap();
    let config = ClientConfig {
        deadline: Duration::from_secs(5),
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, ambiguous, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let (client, stop, ok, ambiguous, failed) = (
            client.clone(),
            stop.clone(),
            ok.clone(),
            ambiguous.clone(),
            failed.clone(),
        );
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match increment(&client, "counter").await {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e.outcome() == Outcome::Ambiguous => {
                        ambiguous.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
    let mut admin = server.admin().await.unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut kills = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await;
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    // No hang: every task ends within its deadline once stopped.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "a transaction hung");
    let final_value: i64 = admin.get("counter").await.unwrap();
    let (ok, ambiguous, failed) = (
        ok.load(Ordering::Relaxed),
        ambiguous.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let stats = client.stats();
    eprintln!(
        "transactions under {kills} CLIENT KILLs: ok {ok}, ambiguous {ambiguous}, failed {failed}, \
         final {final_value}, conflicts {}, retries {}",
        stats.conflicts, stats.retries
    );
    assert!(ok > 100, "too few increments: {ok}");
    assert!(
        ok as i64 <= final_value && final_value <= (ok + ambiguous) as i64,
        "ok {ok} <= final {final_value} <= ok + ambiguous {} does not hold",
        ok + ambiguous
    );
    assert!(stats.conflicts > 0, "{stats:?}");
}
