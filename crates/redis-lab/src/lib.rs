//! Real Redis on loopback for tests, benchmarks and demos.
//!
//! `redis-lab` starts **real** `redis-server` / `redis-sentinel` processes on `127.0.0.1`
//! free ports, wires them into topologies, and puts a fault-injecting TCP proxy in front of
//! them. Everything it starts dies with the value that owns it (SIGKILL + reap in `Drop`).
//!
//! # Tour
//! - [`RedisServer`]: one server in its own temp dir; `stop`/`kill`/`restart` and fault helpers
//!   ([`client_kill_normal`](RedisServer::client_kill_normal), [`debug_sleep`](RedisServer::debug_sleep),
//!   [`busy_script`](RedisServer::busy_script)).
//! - [`SentinelTopology`]: a master, replicas and three sentinels that agree on the master;
//!   [`wait_for_new_master`](SentinelTopology::wait_for_new_master) after killing it.
//! - [`RedisCluster`]: three masters and three replicas with `cluster_state:ok`;
//!   [`migrate_slot`](RedisCluster::migrate_slot) reshards one slot with its keys.
//!   With [`ClusterConfig::proxied`] each node sits behind its own [`FaultProxy`] and the
//!   cluster announces the proxies (`CLUSTER SLOTS`, `MOVED`, `ASK`, replication), while the
//!   cluster bus stays direct: a fault on one node's path ([`proxy_of`](RedisCluster::proxy_of))
//!   reaches its clients and replicas, never the failure detector.
//!   [`SentinelConfig::proxied`] does the same for a Sentinel deployment's data servers.
//! - [`FaultProxy`]: a TCP proxy that adds latency, cuts connections (all now, or every Nth in
//!   the middle of a reply), blackholes, or throttles commands with `-THROTTLED`.
//! - [`history::Sequences`]: checks a run of sequence-numbered pub/sub messages (nothing lost
//!   outside the reported gaps, nothing twice), for tests, `bench` and chaos runs.
//! - [`require_binaries`]: fail early with an install hint when Redis is missing.
//! - [`TlsCerts`] and [`LabTls`]: TLS-only servers and topologies with a throwaway CA and
//!   client certificate (`ServerConfig::tls`, `SentinelConfig::tls`, `ClusterConfig::tls`;
//!   needs the `openssl` CLI).
//!
//! Everything async needs a Tokio runtime (any flavour); use real time, not paused time, with
//! real servers. Every topology waits by polling a condition with a bounded timeout, never by
//! sleeping a fixed time. A process killed with SIGKILL cannot run `Drop`: its Redis children
//! then survive it (no `PR_SET_PDEATHSIG` without `unsafe`).
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_lab::{FaultProxy, RedisServer};
//!
//! # async fn demo() -> Result<(), redis_lab::LabError> {
//! redis_lab::require_binaries(false)?;
//! let server = RedisServer::start().await?;
//! let proxy = FaultProxy::start(server.addr()).await?;
//! proxy.set_latency(Some(Duration::from_millis(50)));
//! // point the client under test at proxy.url() ...
//! proxy.drop_all();
//! # Ok(()) }
//! ```

mod binaries;
mod cluster;
mod conf;
mod error;
pub mod history;
mod proxy;
mod sentinel;
mod server;
mod tls;
mod util;

pub use binaries::{find_binary_in, require_binaries, require_binaries_in};
pub use cluster::{ClusterConfig, RedisCluster};
pub use error::{INSTALL_HINT, LabError};
pub use proxy::{FaultProxy, ProxyStats};
pub use sentinel::{SentinelConfig, SentinelTopology};
pub use server::{RedisServer, ServerConfig};
pub use tls::{LabTls, TlsCerts, require_openssl};
