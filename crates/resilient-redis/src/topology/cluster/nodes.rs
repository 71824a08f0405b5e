//! One multiplexed connection per cluster node, owned by the client.
//!
//! Keyed calls do not go through redis-rs's cluster connection: its single connection task
//! stops polling every request while it refreshes its slot map or reconnects, and after a
//! node dies that refresh can hold every shard's requests for seconds (measured: all calls of
//! all shards stuck for over 3 s after a master's SIGKILL, 1 run in 3 to 5). With one
//! connection per node, a dead node only fails the requests sent to it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisError, aio::MultiplexedConnection,
};

use super::{config::ClusterConfig, lock, slots::split_addr};
use crate::{ClientConfig, config::Transport, error::Error};

/// The connections of the client to the nodes, opened on first use and dropped when broken.
pub(super) struct Nodes {
    /// Connection settings of the first seed (credentials, database, TCP); the address is
    /// replaced by the node's.
    template: ConnectionInfo,
    /// Plain TCP or TLS, as the seed URLs say.
    transport: Transport,
    settings: AsyncConnectionConfig,
    live: Mutex<HashMap<String, (MultiplexedConnection, u64)>>,
    /// One connection attempt per node at a time.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next_id: AtomicU64,
    /// `host:port` of each seed URL.
    seeds: Vec<String>,
}

impl Nodes {
    pub(super) fn new(config: &ClusterConfig) -> Result<Nodes, Error> {
        let template = ClientConfig {
            url: config.urls[0].clone(),
            tcp_keepalive: config.tcp_keepalive,
            tls: config.tls.clone(),
            ..ClientConfig::default()
        }
        .connection_info()?;
        let mut seeds = Vec::new();
        for url in &config.urls {
            let info = ClientConfig {
                url: url.clone(),
                tls: config.tls.clone(),
                ..ClientConfig::default()
            }
            .connection_info()?;
            match info.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    seeds.push(format!("{host}:{port}"));
                }
                _ => {}
            }
        }
        Ok(Nodes {
            seeds,
            transport: Transport::of(template.addr()),
            template,
            settings: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout)),
            live: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// The connection to `addr` (`host:port`) and its id, opened if needed. A failure to
    /// connect comes back as [`redis::ErrorKind::ClusterConnectionNotFound`]: nothing was sent.
    pub(super) async fn get(&self, addr: &str) -> Result<(MultiplexedConnection, u64), RedisError> {
        if let Some(found) = lock(&self.live).get(addr) {
            return Ok(found.clone());
        }
        let gate = lock(&self.opening)
            .entry(addr.to_owned())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        if let Some(found) = lock(&self.live).get(addr) {
            return Ok(found.clone());
        }
        let not_found = |detail: String| {
            RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "cannot connect to the cluster node",
                detail,
            ))
        };
        let (host, port) =
            split_addr(addr).ok_or_else(|| not_found(format!("{addr}: bad address")))?;
        let info = self
            .template
            .clone()
            .set_addr(self.transport.addr(host, port));
        let client = redis::Client::open(info).map_err(|e| not_found(format!("{addr}: {e}")))?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.settings)
            .await
            .map_err(|e| not_found(format!("{addr}: {e}")))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.live).insert(addr.to_owned(), (conn.clone(), id));
        Ok((conn, id))
    }

    /// `host:port` of each seed node.
    pub(super) fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// Drops connection `id` to `addr` after it broke, so the next call opens a new one.
    pub(super) fn forget(&self, addr: &str, id: u64) {
        let mut live = lock(&self.live);
        if live.get(addr).is_some_and(|(_, current)| *current == id) {
            live.remove(addr);
        }
    }
}
