//! A Redis client that makes every call survive the failures production brings — dropped
//! connections, restarts, stalls and throttling — and never lies about what happened.
//!
//! Built on [`redis`] (redis-rs 1.x, tokio) and the [`resilience`] policy core.
//!
//! # Tour
//! ```no_run
//! use redis::AsyncCommands;
//! use resilient_redis::{Client, ClientConfig, Outcome};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Defaults: 5 s deadline per call, jittered retries within a shared budget, a circuit breaker.
//! let mut client = Client::connect("redis://127.0.0.1:6379").await?;
//!
//! // Every redis-rs command, pipeline and script works: Client is a ConnectionLike.
//! let _: () = client.set("k", "v").await?;
//! let (a, b): (String, Option<String>) = redis::pipe().get("k").get("missing").query_async(&mut client).await?;
//!
//! // INCR is not safe to repeat. If the connection breaks mid-flight the call fails as
//! // *ambiguous* (it may have been applied) instead of being re-sent or reported as failed.
//! match client.incr::<_, _, i64>("counter", 1).await {
//!     Ok(n) => println!("counter = {n}"),
//!     Err(e) if Outcome::of(&e) == Outcome::Ambiguous => println!("may have been applied: {e}"),
//!     Err(e) => println!("not applied: {e}"),
//! }
//!
//! // Configuration in code, or from RESILIENT_REDIS_* environment variables.
//! let config = ClientConfig { pool_size: 4, ..ClientConfig::from_url("redis://127.0.0.1:6379")? };
//! let client = Client::with_config(config).await?;
//! println!("{}", client.health().await);
//! # let _ = (a, b); Ok(()) }
//! ```
//!
//! # What is retried
//! See [`Client`] for the rules and [`commands`] for the command table.
//!
//! # Sentinel
//! ```no_run
//! use futures::StreamExt;
//! use redis::AsyncCommands;
//! use resilient_redis::{Client, ClientConfig, ReadFrom};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // redis+sentinel://[[user]:password@]host1:port1[,host2:port2,...]/MASTERNAME[/db]
//! let mut config = ClientConfig::from_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster")?;
//! if let Some(sentinel) = config.sentinel.as_mut() {
//!     sentinel.read_from = ReadFrom::PreferReplica; // optional: reads go on during a failover
//! }
//! let mut client = Client::with_config(config).await?;
//! let _: () = client.set("k", "v").await?; // waits (within its deadline) through a failover
//! let mut news = client.subscribe(&["news"], &[]).await?; // re-subscribes on the new master
//! # let _ = news.next().await; Ok(()) }
//! ```
//! The client asks the sentinels for the master (and checks it with `ROLE`), listens for
//! `+switch-master` on every sentinel and moves every connection to the new master as soon as
//! it is announced; dead connections, timeouts and `READONLY` replies also trigger a
//! (rate-limited, jittered) rediscovery. Calls made during the failover wait for the new master
//! instead of failing: the default 5 s deadline covers a failover with
//! `down-after-milliseconds 1000` (about 2.3 s). See [`SentinelConfig`] and [`ResilientPubSub`]
//! (which messages can be missed). [`Client::health`] reports the master, replicas and sentinels.
//!
//! # Metrics and events
//! | name | kind | labels |
//! |---|---|---|
//! | `resilient_redis_call_duration_seconds` | histogram | `kind` = read, idempotent_write, write, blocking |
//! | `resilient_redis_call_failures_total` | counter | `kind` ([`ErrorKind::as_str`]), `outcome` = failed, ambiguous |
//! | `resilient_redis_reconnects_total` | counter | |
//! | `resilient_redis_reconnect_failures_total` | counter | |
//! | `resilient_redis_master_switches_total` | counter | (Sentinel) the master changed |
//! | `resilient_redis_sentinel_discoveries_total` | counter | (Sentinel) rounds of asking the sentinels |
//! | `resilience_*` | | retries, give-ups, budget and breaker, from the [`resilience`] crate |
//!
//! Install the `metrics` recorder before creating clients: the call-duration histograms are
//! registered once, when the client is built, so the success path only records.
//!
//! Reconnections (`info`), broken connections and stall probes (`debug`) and ambiguous failures
//! (`warn`) are also `tracing` events.

mod client;
pub mod commands;
mod config;
mod connection;
mod error;
mod health;
mod pubsub;
mod request;
mod retry;
mod striped;
mod topology;

pub use client::{Client, ClientStats};
pub use commands::{CommandSafety, safety_of};
pub use config::TlsConfig;
pub use config::{ClientConfig, ENV_VARS, ErrorRule, ReadFrom, SentinelConfig};
pub use error::{Error, ErrorKind, Outcome, error_kind_name};
pub use health::Health;
pub use pubsub::ResilientPubSub;
pub use resilience;
pub use topology::cluster::{
    ClusterClient, ClusterConfig, ClusterHealth, ClusterNodeHealth, ClusterStats,
};
