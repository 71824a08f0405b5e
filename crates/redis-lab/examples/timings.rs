//! Measures how long lab topologies take to start and what the proxy costs.
//!
//! `cargo run --release -p redis-lab --example timings`

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis_lab::{ClusterConfig, FaultProxy, LabError, RedisCluster, RedisServer, SentinelTopology};
use tokio::time::Instant;

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

/// Mean round trip of `n` sequential PINGs, and pipelined PINGs per second.
async fn measure(url: &str, n: u32) -> (Duration, f64) {
    let mut conn = connect(url).await;
    let started = Instant::now();
    for _ in 0..n {
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("ping");
    }
    let rtt = started.elapsed() / n;
    let mut pipe = redis::pipe();
    for _ in 0..1000 {
        pipe.cmd("PING").ignore();
    }
    let started = Instant::now();
    for _ in 0..n / 10 {
        let () = pipe.query_async(&mut conn).await.expect("pipeline");
    }
    let per_sec = f64::from(n / 10 * 1000) / started.elapsed().as_secs_f64();
    (rtt, per_sec)
}

#[tokio::main]
async fn main() -> Result<(), LabError> {
    redis_lab::require_binaries(true)?;
    let mut starts = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let server = RedisServer::start().await?;
        starts.push(started.elapsed());
        drop(server);
    }
    starts.sort();
    println!("server start: median {:?}, max {:?}", starts[5], starts[9]);

    let started = Instant::now();
    let topology = SentinelTopology::start(Default::default()).await?;
    println!("sentinel topology ready: {:?}", started.elapsed());
    drop(topology);

    let started = Instant::now();
    let cluster = RedisCluster::start(ClusterConfig::default()).await?;
    println!("cluster ready: {:?}", started.elapsed());
    drop(cluster);

    let server = RedisServer::start().await?;
    let proxy = FaultProxy::start(server.addr()).await?;
    let (direct_rtt, direct_rate) = measure(&server.url(), 5000).await;
    let (proxy_rtt, proxy_rate) = measure(&proxy.url(), 5000).await;
    println!("PING rtt direct {direct_rtt:?}, via proxy {proxy_rtt:?}");
    println!("pipelined PING/s direct {direct_rate:.0}, via proxy {proxy_rate:.0}");
    proxy.set_throttle(Some(1_000_000));
    let (throttle_rtt, throttle_rate) = measure(&proxy.url(), 5000).await;
    println!(
        "with throttle on (not limiting): rtt {throttle_rtt:?}, pipelined {throttle_rate:.0}/s"
    );
    Ok(())
}
