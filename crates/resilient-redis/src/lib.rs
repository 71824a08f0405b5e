//! A Redis client that makes every call survive the failures production brings — dropped
//! connections, restarts, stalls and throttling — and never lies about what happened.
//!
//! Built on [`redis`] (redis-rs 1.x, tokio) and the [`resilience`] policy core.
//!
//! # Tour
//! ```no_run
//! use redis::AsyncCommands;
//! use resilient_redis::{Client, ClientConfig, Failure, Outcome};
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
//! // `Failure::of` gives the kind and outcome of any error (see `ErrorKind`, `Outcome`).
//! match client.incr::<_, _, i64>("counter", 1).await {
//!     Ok(n) => println!("counter = {n}"),
//!     Err(e) => match Failure::of(&e).outcome {
//!         Outcome::Ambiguous => println!("may have been applied: {e}"),
//!         Outcome::Failed => println!("not applied: {e}"),
//!         Outcome::Applied => println!("applied; the reply was not an integer: {e}"),
//!     },
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
//! config.read_from = ReadFrom::MasterPreferred; // optional: reads go on (from replicas) while the master is down
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
//! # Redis Cluster
//! ```no_run
//! use redis::AsyncCommands;
//! use resilient_redis::{Client, ClientConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // redis+cluster://[[user]:password@]host1:port1[,host2:port2,...]: seed nodes.
//! let mut client = Client::connect("redis+cluster://10.0.0.1:7000,10.0.0.2:7000").await?;
//! let _: () = client.set("{user:1}:name", "ada").await?; // to the master of the key's slot
//! // The same from a list of seed URLs:
//! let config = ClientConfig::cluster(&["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?;
//! let client = Client::with_config(config).await?;
//! println!("{}", client.health().await); // the cluster's state, nodes and breakers
//! # Ok(()) }
//! ```
//! The same `Client`, with the same call path: the client keeps its own slot map and one pool,
//! circuit breaker and adaptive throttle per master, follows `MOVED` and `ASK` inside an
//! attempt (no backoff, no budget), and makes calls for a shard whose master is down wait,
//! sending nothing, until a replica takes over; the other shards are not held up.
//! `CLUSTERDOWN`, `TRYAGAIN` and `READONLY` make a call wait for the next slot-map refresh and
//! send again, within its deadline. See [`ClusterConfig`]. Blocking commands go to the master of
//! their key's slot on a dedicated connection, and are sent again when it says they did not run
//! (`MOVED`, `ASK`, `UNBLOCKED` from a demoted master); a call blocked on a master that is
//! replaced is ended there with `CLIENT UNBLOCK` and sent to the new one, or ends ambiguous if
//! the old server does not answer. Subscriptions ([`Client::subscribe`], and [`Client::ssubscribe`]
//! for shard channels) follow failovers and migrations, reporting each gap ([`pubsub`]).
//!
//! # Overload
//! Retries are dangerous when a server is overloaded, so the client bounds them three ways:
//! - **Retry budget**: retries (attempts after the first) are limited to 10 % of successful
//!   calls plus 10/s, shared by all clones; `THROTTLED` replies are retried no sooner than
//!   [`ClientConfig::throttle_delay`] and never count against the circuit breaker (the server
//!   is busy, not broken).
//! - **Adaptive throttling** (Google SRE book): while the server refuses work (`THROTTLED`,
//!   `BUSY`, `LOADING`), attempts are rejected locally with probability
//!   `max(0, (requests - 2 x accepts) / (requests + 1))` over the last 10 s, so about twice what
//!   the server accepts still reaches it and the rest fails fast with
//!   [`ErrorKind::RejectedLocally`] (definitely not applied). See
//!   [`ClientConfig::adaptive_throttle`]; per node in a cluster.
//! - **Fail fast in outages**: once the server has been unreachable for
//!   [`ClientConfig::unavailable_after`] (5 s), calls, including those already waiting, fail at
//!   once with [`ErrorKind::Unavailable`] (a few microseconds, no lock) until the single
//!   background reconnection finds it back.
//!
//! For fleets of hundreds of processes, widen the reconnection spread, at the cost of a slower
//! reconnection after a short outage (see the README's thundering-herd figures):
//! ```
//! use std::time::Duration;
//! use resilience::{Backoff, Jitter};
//! let config = resilient_redis::ClientConfig {
//!     reconnect_backoff: Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_millis(1500))?
//!         .with_jitter(Jitter::Equal),
//!     ..Default::default()
//! };
//! # let _ = config; Ok::<(), resilience::ConfigError>(())
//! ```
//!
//! # Credentials that change, named connections
//! Managed services hand out short-lived tokens or rotate a password in a mounted file.
//! [`ClientConfig::credentials`] takes a [`CredentialsProvider`] that the client asks before
//! every connection: [`PasswordFile`] (also `RESILIENT_REDIS_PASSWORD_FILE`), [`TokenProvider`]
//! (a closure returning a token and its expiry), or your own. Live connections send `AUTH` again
//! at 80 % of a token's lifetime; rejected credentials are asked for once more, then fail as
//! [`ErrorKind::Auth`]. [`ClientConfig::client_name`] names every connection (`CLIENT SETNAME`),
//! and each says `lib-name=resilient-redis` on servers that know `CLIENT SETINFO`.
//! ```no_run
//! use std::sync::Arc;
//! use resilient_redis::{Client, ClientConfig, PasswordFile};
//! # async fn run() -> Result<(), resilient_redis::Error> {
//! let config = ClientConfig {
//!     credentials: Some(Arc::new(PasswordFile::new("/var/run/secrets/redis/password"))),
//!     client_name: Some("orders-api".into()),
//!     ..ClientConfig::from_url("rediss://app@redis.internal:6380")? // the user is the URL's
//! };
//! let client = Client::with_config(config).await?;
//! # let _ = client; Ok(()) }
//! ```
//! See [`credentials`] for what happens when, and why.
//!
//! # Exactly-once writes
//! An `INCR` whose connection broke mid-flight can only be reported as ambiguous. With
//! [`Client::exactly_once`] (on any topology) each write carries an
//! idempotency token that a server-side script checks: retries after an ambiguous failure become
//! safe, and the caller sees a success. Pipelines and transactions are one token each. The call
//! fails as ambiguous only when the client gives up at its deadline (or on an open circuit
//! breaker) after a connection lost mid-flight, as in an outage longer than the deadline; a
//! retry the retry budget or adaptive throttling refuses is sent again under the token.
//! ```no_run
//! use redis::AsyncCommands;
//! use resilient_redis::{Client, ExactlyOnceConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! let mut xo = client.exactly_once(ExactlyOnceConfig::default())?; // token TTL 60 s
//! let n: i64 = xo.incr("counter", 1).await?; // never applied twice; ambiguous only if the client gives up
//! # let _ = n; Ok(()) }
//! ```
//! Cost: one `EVALSHA` round trip per write (concurrent writes share one), and 14 bytes of server
//! memory per write for the token's TTL (measured on Redis 7.0.15 as the growth of `used_memory`
//! over 10,000 `INCR`s; see [`exactly_once`] for how, and for the rules, limits and figures).
//!
//! # Spans, metrics and events
//! One `tracing` span per call (`INFO`, target `resilient_redis`) and `metrics` series named
//! as the OpenTelemetry database conventions say (`db.client.operation.duration` by operation
//! and outcome, connection gauges), plus the client's own (retries by reason, breaker state per
//! node, budget, throttle, reconnections, master switches, refreshes, replays): see
//! [`observe`] for every name, label and field. No key or value is recorded unless
//! [`ClientConfig::trace_keys`] is set (keys only, never values). With no subscriber and no
//! recorder installed, a call pays one level check. `resilience.*` series (the policy's
//! retries, give-ups, budget and breaker transitions) come from the [`resilience`] crate.
//!
//! Reconnections (`info`), broken connections and stall probes (`debug`) and ambiguous failures
//! (`warn`) are also `tracing` events.

mod aborted;
mod addr;
mod client;
pub mod commands;
mod config;
mod connection;
pub mod credentials;
mod error;
pub mod exactly_once;
mod health;
pub mod observe;
pub mod pubsub;
mod replies;
mod request;
mod retry;
mod routing;
pub mod streams;
mod striped;
#[doc(hidden)]
pub mod wire;

pub use client::{Client, ClientStats, Transaction};
pub use commands::{CommandSafety, safety_of};
pub use config::TlsConfig;
pub use config::{
    ClientConfig, ClusterConfig, DEFAULT_DURABILITY_TIMEOUT, Durability, ENV_VARS, ErrorRule,
    ReadFrom, SentinelConfig, redact_url,
};
pub use credentials::{Credentials, CredentialsProvider, PasswordFile, TokenProvider};
pub use error::{Error, ErrorKind, Failure, Outcome, error_kind_name};
pub use exactly_once::{ExactlyOnce, ExactlyOnceConfig, ExactlyOnceStats};
pub use health::Health;
pub use pubsub::{Gap, GapCause, PubSubEvent, ResilientPubSub, Topic, TopicKind};
pub use resilience;
pub use routing::cluster::{ClusterHealth, ClusterNodeHealth};
