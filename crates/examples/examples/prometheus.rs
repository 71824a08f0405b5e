//! The client's metrics on a Prometheus page, through `metrics-exporter-prometheus`.
//!
//! ```text
//! cargo run -p resilient-redis-examples --example prometheus [-- redis://127.0.0.1:6379 [9091]]
//! curl -s http://127.0.0.1:9091/metrics
//! ```
//! The URL comes from the first argument, else `REDIS_URL`, else `redis://127.0.0.1:6379`; the
//! page listens on 127.0.0.1, port from the second argument (default 9091). The program runs
//! SET, GET and INCR ten times a second until Ctrl-C.
//!
//! # What appears
//! The client writes through the `metrics` facade; names and labels with dots are rendered with
//! underscores (`db.client.operation.duration` is `db_client_operation_duration`). The full
//! table, with when each series moves, is in the docs of `resilient_redis::observe`.
//! - `db.client.operation.duration`: histogram of call durations in seconds, labels
//!   `db.system.name`, `db.operation.name` (`GET`, `PIPELINE`, ...) and `outcome` (`ok`,
//!   `failed`, `ambiguous`); buckets 50 µs .. 5 s here, so p99 per command is one
//!   `histogram_quantile(0.99, ...)` away;
//! - `db.client.connection.count` (gauge, labels `db.client.connection.pool.name` and
//!   `db.client.connection.state`: `idle` / `used`), `db.client.connection.pending_requests`
//!   (gauge), `db.client.connection.create_time` (histogram, seconds; same buckets);
//! - `resilience.retries` (the retry policy's counter, labels `policy` = `resilient_redis` and
//!   `reason`), `resilient_redis.breaker.state`
//!   (gauge per `node`: 0 closed, 1 open, 2 half-open), `resilient_redis.budget.tokens` (gauge),
//!   `resilient_redis.throttle.probability` (gauge per `node`), and the counters
//!   `resilient_redis.reconnections`, `resilient_redis.master_switches`,
//!   `resilient_redis.cluster.refreshes`, `resilient_redis.exactly_once.replays`.
//!
//! The recorder is installed before the client is created: the client registers its metrics
//! when it is created. No key or value appears in a label.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use redis::AsyncCommands;

/// Redis latencies in seconds: 50 µs (a loopback round trip) to 5 s (a wait through a failover).
const LATENCY_BUCKETS_S: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let port: u16 = args.next().map_or(Ok(9091), |p| p.parse())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for name in [
        "db.client.operation.duration",
        "db.client.connection.create_time",
    ] {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), &LATENCY_BUCKETS_S)?;
    }
    // Inside the runtime: the page is served by a task of this runtime.
    builder.install()?;
    println!("metrics on http://{addr}/metrics (Ctrl-C to stop)");

    let mut client = resilient_redis::Client::connect(&url).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        // A failed call is counted (outcome `failed` or `ambiguous`) and the loop goes on.
        let _: Result<(), _> = client.set("example:prometheus", "v").await;
        let _: Result<Option<String>, _> = client.get("example:prometheus").await;
        let _: Result<i64, _> = client.incr("example:prometheus:visits", 1).await;
    }
}
