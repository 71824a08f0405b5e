//! Late replies: a dead connection is told apart from a stalled server.

mod common;

use std::time::Duration;

use common::eventually;
use redis::AsyncCommands;
use redis_lab::{FaultProxy, RedisServer};
use resilient_redis::{Client, ClientConfig, ErrorKind, Outcome};
use tokio::time::Instant;

async fn client_through(proxy: &FaultProxy, deadline: Duration) -> Client {
    let config = ClientConfig {
        idle_check_interval: None,
        deadline,
        ..ClientConfig::from_url(&proxy.url()).unwrap()
    };
    Client::with_config(config).await.unwrap()
}

/// Makes the client's current connection silent for good while new connections work: the proxy
/// blackholes every connection that sends a byte while the blackhole is on.
async fn silence_current_connection<F, T>(proxy: &FaultProxy, call: F) -> tokio::task::JoinHandle<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let before = proxy.stats().bytes_blackholed;
    proxy.set_blackhole(true);
    let handle = tokio::spawn(call);
    assert!(
        eventually(Duration::from_secs(2), || proxy.stats().bytes_blackholed
            > before)
        .await,
        "the request never reached the proxy"
    );
    proxy.set_blackhole(false);
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_replaced_and_a_safe_call_retried() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let client = client_through(&proxy, Duration::from_secs(5)).await;
    let () = client.clone().set("k", "v").await.unwrap();
    let before = client.stats();

    let mut c = client.clone();
    let started = Instant::now();
    let get =
        silence_current_connection(&proxy, async move { c.get::<_, String>("k").await }).await;
    let value = get
        .await
        .unwrap()
        .expect("GET is safe to repeat: retried on a new connection");
    let took = started.elapsed();
    assert_eq!(value, "v");
    let after = client.stats();
    eprintln!("took {took:?}, before {before:?}, after {after:?}");
    assert_eq!(after.retries - before.retries, 1, "{after:?}");
    assert!(after.reconnects > before.reconnects);
    // Found within a few response timeouts (500 ms each), not at the 5 s deadline.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_call_on_a_silent_connection_is_ambiguous() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let client = client_through(&proxy, Duration::from_secs(5)).await;
    let _: i64 = client.clone().incr("n", 1).await.unwrap();
    let mut c = client.clone();
    let incr =
        silence_current_connection(&proxy, async move { c.incr::<_, _, i64>("n", 1).await }).await;
    let err = incr.await.unwrap().unwrap_err();
    assert_eq!(Outcome::of(&err), Outcome::Ambiguous, "{err}");
    let inner = resilient_redis::Error::from_redis(&err).unwrap();
    assert_eq!(inner.kind(), ErrorKind::ConnectionLost, "{err}");
    // It was swallowed by the proxy, so the server never ran it: the value is still 1. The client
    // could not know that, which is exactly why it said "ambiguous" and did not re-send.
    let mut admin = server.admin().await.unwrap();
    assert_eq!(admin.get::<_, i64>("n").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_silent_everywhere_fails_at_the_deadline_as_ambiguous() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let client = client_through(&proxy, Duration::from_millis(1500)).await;
    let () = client.clone().set("k", "v").await.unwrap();
    proxy.set_blackhole(true);
    let started = Instant::now();
    let err = client.clone().set::<_, _, ()>("k", "w").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
    assert_eq!(Outcome::of(&err), Outcome::Ambiguous, "{err}");
    let inner = resilient_redis::Error::from_redis(&err).unwrap();
    assert_eq!(inner.kind(), ErrorKind::DeadlineExceeded, "{err}");
    // Not re-sent into the void: one attempt.
    assert_eq!(client.stats().retries, 0, "{:?}", client.stats());
}

/// While a script keeps the server busy, one prober PINGs it for every caller that met `BUSY`.
/// When the prober's connection goes silent (its PING lost), the prober gives up after a
/// response window: callers go on and their own attempts find a connection that answers. It
/// used to wait for that PING forever, and every caller that met `BUSY` with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_probe_lost_with_its_connection_holds_no_caller() {
    let server = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let client = client_through(&proxy, Duration::from_secs(5)).await;
    let () = client.clone().set("k", "v").await.unwrap();
    let mut direct = server.admin().await.unwrap();

    let busy = server.busy_script(Duration::from_secs(2));
    let caller = async {
        // The script holds the server: a direct PING gets BUSY.
        while redis::cmd("PING")
            .query_async::<String>(&mut direct)
            .await
            .is_ok()
        {
            tokio::task::yield_now().await;
        }
        let forwarded = proxy.stats().commands_forwarded;
        let mut c = client.clone();
        let started = Instant::now();
        let get = tokio::spawn(async move { c.get::<_, String>("k").await });
        // The GET met BUSY and the prober is PINGing on the pooled connection.
        assert!(
            eventually(Duration::from_secs(2), || proxy.stats().commands_forwarded
                >= forwarded + 3)
            .await,
            "no BUSY probe"
        );
        // Its next PING is lost: that connection is silent for good.
        let blackholed = proxy.stats().bytes_blackholed;
        proxy.set_blackhole(true);
        assert!(
            eventually(Duration::from_secs(2), || proxy.stats().bytes_blackholed
                > blackholed)
            .await,
            "the probe never reached the proxy"
        );
        proxy.set_blackhole(false);
        (get.await.unwrap(), started.elapsed())
    };
    let (script, (got, took)) = tokio::join!(busy, caller);
    script.unwrap();
    eprintln!("took {took:?}, stats {:?}", client.stats());
    assert_eq!(
        got.expect("GET is safe to repeat: served once the script is over"),
        "v"
    );
}
