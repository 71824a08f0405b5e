//! Honest outcomes: no silent duplicates, no re-send storms, fast recovery.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{Conn, spawn_incr, spawn_set_get};
use redis::AsyncCommands;
use redis_lab::RedisServer;
use resilient_redis::Client;
use tokio::time::Instant;

/// 50 tasks INCR one key while CLIENT KILL runs every 200 ms for 5 s:
/// ok <= final value <= ok + ambiguous, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_integrity_under_repeated_client_kill() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let work = spawn_incr(Conn::Resilient(client.clone()), 50, "counter", stop.clone());
    let mut kills = 0;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        kills += server.client_kill_normal().await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let tally = tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .expect("the client hung")
        .unwrap();
    let mut admin = server.admin().await.unwrap();
    let final_value: u64 = admin.get("counter").await.unwrap();
    eprintln!(
        "kills={kills} tally={tally:?} final={final_value} stats={:?}",
        client.stats()
    );
    assert!(
        kills >= 25,
        "the fault did not happen: {kills} connections killed"
    );
    assert_eq!(tally.failed, 0, "definite failures: {:?}", tally.errors);
    assert!(
        tally.ok <= final_value,
        "lost increments: ok={} final={final_value}",
        tally.ok
    );
    assert!(
        final_value <= tally.ok + tally.ambiguous,
        "silent duplicates: final={final_value} > ok={} + ambiguous={}",
        tally.ok,
        tally.ambiguous
    );
}

/// 50 tasks, DEBUG SLEEP 3 once: zero errors, and the server processes at most 1.1 x the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resend_storm_on_a_stalled_server() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let before: u64 = server
        .info_field("stats", "total_commands_processed")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let calls_before = client.stats().calls;
    let stop = Arc::new(AtomicBool::new(false));
    let work = spawn_set_get(Conn::Resilient(client.clone()), 50, "s", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.debug_sleep(Duration::from_secs(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .expect("hung")
        .unwrap();
    let after: u64 = server
        .info_field("stats", "total_commands_processed")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let calls = client.stats().calls - calls_before;
    // The admin's own commands (INFO twice, DEBUG SLEEP, connection setup) are not the client's.
    let processed = after - before;
    eprintln!(
        "tally={tally:?} calls={calls} processed={processed} stats={:?}",
        client.stats()
    );
    assert_eq!(tally.errors(), 0, "{:?}", tally.errors);
    assert!(calls > 1000, "too little traffic to measure: {calls}");
    assert!(
        processed as f64 <= 1.1 * calls as f64,
        "re-send storm: server processed {processed} commands for {calls} calls"
    );
}

/// Server back after a 2 s outage: median time from the port accepting again to the first
/// successful command <= 250 ms (5 outages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_quickly_after_a_restart() {
    let mut server = RedisServer::start().await.unwrap();
    let addr = server.addr();
    let client = Client::connect(&server.url()).await.unwrap();
    let origin = Instant::now();
    let last_ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (mut client, last_ok, stop) = (client.clone(), last_ok.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client.get::<_, Option<String>>("k").await.is_ok() {
                    last_ok.store(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut delays = Vec::new();
    for _ in 0..5 {
        server.stop().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Watch the port from another task so we know when it accepts again.
        let accept = tokio::spawn(async move {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return origin.elapsed().as_micros() as u64;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        server.restart().await.unwrap();
        let accepted_at = accept.await.unwrap();
        let ok = common::eventually(Duration::from_secs(5), || {
            last_ok.load(Ordering::Relaxed) > accepted_at
        })
        .await;
        assert!(ok, "no successful command within 5 s of the restart");
        delays.push(Duration::from_micros(
            last_ok.load(Ordering::Relaxed) - accepted_at,
        ));
    }
    stop.store(true, Ordering::Relaxed);
    pinger.await.unwrap();
    delays.sort();
    let median = delays[delays.len() / 2];
    eprintln!("recovery delays: {delays:?}, median {median:?}");
    assert!(
        median <= Duration::from_millis(250),
        "median recovery {median:?} > 250 ms ({delays:?})"
    );
}
