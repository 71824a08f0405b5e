//! Each fault, 50 tasks doing SET+GET with default settings: zero errors for the resilient client,
//! while the raw redis-rs baseline (same server, same time) shows the errors the fault causes.

mod common;

use std::{
    future::Future,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use common::{Conn, Tally, spawn_set_get};
use redis_lab::RedisServer;
use resilient_redis::Client;

const TASKS: usize = 50;

async fn under_fault<F, Fut>(name: &str, fault: F) -> (Tally, Tally)
where
    F: FnOnce(RedisServer) -> Fut,
    Fut: Future<Output = RedisServer>,
{
    let server = RedisServer::start().await.expect("start redis-server");
    let url = server.url();
    let resilient = Conn::Resilient(Client::connect(&url).await.expect("connect"));
    let raw = Conn::raw(&url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let r = spawn_set_get(resilient, TASKS, "r", stop.clone());
    let b = spawn_set_get(raw, TASKS, "b", stop.clone());
    // Let the workload reach a steady state, inject the fault, let it run on after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = fault(server).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = tokio::time::timeout(Duration::from_secs(15), r)
        .await
        .expect("resilient workload hung")
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(15), b)
        .await
        .expect("raw workload hung")
        .unwrap();
    drop(server);
    eprintln!("{name}: resilient {r:?}\n{name}: raw {b:?}");
    assert_eq!(
        r.errors(),
        0,
        "{name}: resilient client saw errors: {:?}",
        r.errors
    );
    assert_eq!(
        r.wrong_values, 0,
        "{name}: resilient client read wrong values"
    );
    assert!(
        r.ok > 100,
        "{name}: resilient client made too little progress: {r:?}"
    );
    assert!(
        b.errors() > 0,
        "{name}: the raw baseline saw no error: is the fault real? {b:?}"
    );
    (r, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_causes_no_error() {
    under_fault("CLIENT KILL TYPE normal", |s| async move {
        let killed = s.client_kill_normal().await.expect("client kill");
        assert!(killed >= 2, "killed {killed} connections");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_longer_than_response_timeout_causes_no_error() {
    under_fault("DEBUG SLEEP 1.5", |s| async move {
        s.debug_sleep(Duration::from_millis(1500))
            .await
            .expect("debug sleep");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_restart_after_2s_causes_no_error() {
    under_fault("SHUTDOWN NOSAVE + restart after 2 s", |mut s| async move {
        s.stop().await.expect("shutdown");
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.restart().await.expect("restart");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_script_for_1s_causes_no_error() {
    under_fault("busy Lua script 1 s", |s| async move {
        s.busy_script(Duration::from_secs(1))
            .await
            .expect("busy script");
        s
    })
    .await;
}
