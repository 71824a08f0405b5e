//! Redis Cluster routing: the client's slot map, one [`Node`] (a pool, a breaker, a throttle)
//! per master, and redis-rs's cluster connection for the calls whose slot the client cannot
//! name.
//!
//! # How a cluster call is routed
//! 1. The key's slot gives the node, from a slot map the client keeps (`CLUSTER SLOTS`,
//!    refreshed in the background, rate-limited and jittered; see [`refresh`]). A node known to
//!    be down is not sent to: the call waits (within its deadline) until the slot moves to
//!    another node or the node answers again. Waiting sends nothing and spends no retry budget.
//! 2. The node's own circuit breaker and adaptive throttle admit the attempt (a failing shard
//!    does not block the others).
//! 3. The request goes out on the node's own pool ([`crate::connection::Pool`]: reconnected in
//!    the background, late replies diagnosed as for one server). `MOVED` and `ASK` are followed
//!    at once inside the attempt: no backoff, no retry budget (`ASK` is sent as `ASKING` + the
//!    command in one pipeline, so no other request can slip between them on the shared
//!    connection). `CLUSTERDOWN`, `TRYAGAIN` and `READONLY` (the cluster is reconfiguring) make
//!    the call wait for the next slot-map refresh and send again, within its deadline.
//! 4. Only calls whose slot the client cannot name (keyless commands, or before the first slot
//!    map) go through redis-rs's cluster connection ([`keyless`]).
//!
//! # Why not redis-rs's cluster connection for keyed calls
//! redis-rs 1.8's cluster connection drives every node's requests from one task, and that task
//! stops polling all in-flight requests while it refreshes its slot map or reconnects to the
//! seeds. After a master's SIGKILL under load this held every shard's requests for over 3 s in
//! about 1 run in 3 to 5; with per-node pools a dead node fails only its own requests.

mod health;
mod keyless;
mod measure;
mod redirect;
mod refresh;
mod replicas;
mod shards;
mod slot_map;

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use rand::{SeedableRng, rngs::SmallRng};
use redis::aio::MultiplexedConnection;

pub use health::{ClusterHealth, ClusterNodeHealth};
pub(crate) use keyless::Keyless;
pub(crate) use redirect::{RedirectKind, redirect_of, send_asking};

use super::Node;
use crate::addr::{join_addr, split_addr};
use tokio::time::Instant;

use crate::{
    config::{ClientConfig, ClusterConfig, Transport},
    connection::{Connector, Pool},
    error::Error,
};
use slot_map::Topology;

/// The cluster part of a client: slot map, nodes, keyless connection, counters.
/// How often a node a blocking command waits on is checked (see
/// [`ClusterRouter::stops_owning`]).
pub(crate) const LIVENESS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) struct ClusterRouter {
    /// The client's settings, for the node pools.
    pub(crate) config: ClientConfig,
    pub(crate) cluster: ClusterConfig,
    /// Opens connections to the nodes with the client's credentials and connection name.
    connector: Connector,
    transport: Transport,
    /// `host:port` of each seed.
    seeds: Vec<String>,
    nodes: RwLock<HashMap<Arc<str>, Arc<Node>>>,
    pub(crate) topology: Arc<Topology>,
    pub(crate) keyless: Keyless,
    /// `MOVED` and `ASK` followed.
    pub(crate) redirects: AtomicU64,
    /// Times a call waited for the node of its slot, or for a reconfiguring cluster.
    pub(crate) waits: AtomicU64,
    /// The servers do not have `CLUSTER SHARDS` (before Redis 7): the map comes from `CLUSTER
    /// SLOTS`.
    slots_only: AtomicBool,
    /// Turns over the replicas a read may go to.
    next_replica: AtomicUsize,
    /// The `CLUSTERDOWN` advice was given (see [`ClusterRouter::refused_read_while_down`]).
    warned_reads_when_down: AtomicBool,
    /// The zone of each node by address: [`ClientConfig::zones`], with the entries that name a
    /// node by id put under its address (learned with each slot map).
    zones: RwLock<Arc<HashMap<String, String>>>,
    /// [`ClientConfig::zones`] names some nodes by id (a key without `:`).
    zones_by_id: bool,
}

impl ClusterRouter {
    /// Connects to the cluster (the keyless connection, then the slot map) and starts the
    /// background refresh.
    pub(crate) async fn start(config: &ClientConfig) -> Result<Arc<ClusterRouter>, Error> {
        let cluster = config
            .cluster
            .clone()
            .ok_or_else(|| Error::config("not a cluster configuration"))?;
        let template = config.connection_info()?;
        let transport = Transport::of(template.addr());
        let seeds: Vec<String> = cluster
            .seeds
            .iter()
            .map(|(host, port)| join_addr(host, *port))
            .collect();
        // Replica reads: every node's connections send `READONLY` (a no-op on a master, and a
        // demoted master's connections then serve reads too).
        let connector =
            Connector::new(config, template).with_readonly(config.read_from.uses_replicas());
        // redis-rs's cluster connection takes its credentials once: those of the moment.
        let keyless_template = connector.current_info().await.map_err(|e| {
            Error::new(
                crate::ErrorKind::Auth,
                crate::Outcome::Failed,
                "no credentials for the cluster",
            )
            .with_source(e)
        })?;
        let keyless = Keyless::connect(config, &keyless_template, &cluster.seeds).await?;
        let topology = Arc::new(Topology::new());
        let router = Arc::new(ClusterRouter {
            config: config.clone(),
            cluster,
            connector,
            transport,
            seeds,
            nodes: RwLock::new(HashMap::new()),
            topology: topology.clone(),
            keyless,
            redirects: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            slots_only: AtomicBool::new(false),
            next_replica: AtomicUsize::new(0),
            warned_reads_when_down: AtomicBool::new(false),
            zones: RwLock::new(Arc::new(config.zones.clone())),
            zones_by_id: matches!(config.read_from, crate::ReadFrom::Zone(_))
                && config.zones.keys().any(|k| !k.contains(':')),
        });
        if let Err(e) = refresh::refresh_once(&router).await {
            tracing::warn!(error = %e, "first slot-map load failed; redis-rs routes meanwhile");
        }
        let rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x5eed),
            None => rand::make_rng(),
        };
        tokio::spawn(refresh::refresher(Arc::downgrade(&router), topology, rng));
        if measure::wanted(&router) {
            tokio::spawn(measure::measurer(Arc::downgrade(&router)));
        }
        Ok(router)
    }

    /// The node of `slot`'s master, unless the map has none or it is known to be down.
    /// `Err(true)`: the master is known and down; `Err(false)`: no master known.
    #[inline]
    pub(crate) fn master_of(&self, slot: u16) -> Result<Arc<Node>, bool> {
        match self.topology.master_of(slot) {
            Some(addr) if self.topology.is_down(&addr) => Err(true),
            Some(addr) => self.node(&addr).map_err(|_| false),
            None => Err(false),
        }
    }

    /// The nodes' zones by address (see [`ClusterRouter::learn_node_ids`]).
    pub(crate) fn zones(&self) -> Arc<HashMap<String, String>> {
        self.zones.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The slot map gave each address's node id: the zone map's entries by id apply to those
    /// addresses (an id entry wins over an address entry: ids survive address changes).
    fn learn_node_ids(&self, ids: &[(Arc<str>, String)]) {
        if !self.zones_by_id || ids.is_empty() {
            return;
        }
        let mut zones = self.config.zones.clone();
        for (addr, id) in ids {
            if let Some(zone) = self.config.zones.get(id) {
                zones.insert(addr.to_string(), zone.clone());
            }
        }
        *self.zones.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(zones);
    }

    /// Whether the slot map names a master for `slot`.
    #[inline]
    pub(crate) fn knows(&self, slot: u16) -> bool {
        self.topology.has_master(slot)
    }

    /// The node at `addr` (`host:port`), created (connecting in the background) on first use.
    pub(crate) fn node(&self, addr: &str) -> Result<Arc<Node>, Error> {
        if let Some(node) = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return Ok(node.clone());
        }
        let (host, port) = split_addr(addr)
            .ok_or_else(|| Error::config(format!("bad cluster node address {addr:?}")))?;
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(node) = nodes.get(addr) {
            return Ok(node.clone());
        }
        let connector = self.connector.for_node(self.transport.addr(host, port));
        let addr: Arc<str> = Arc::from(addr);
        let pool = Pool::start_node(&self.config, connector);
        let node = Arc::new(Node::new(addr.clone(), pool, &self.config, true)?);
        nodes.insert(addr, node.clone());
        Ok(node)
    }

    /// The node at `addr` if the client has a pool for it.
    pub(crate) fn node_if_known(&self, addr: &str) -> Option<Arc<Node>> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
    }

    /// A connection of its own to `addr` (a seed the client has no pool for), within the
    /// connect timeout.
    async fn open_one(&self, addr: &str) -> redis::RedisResult<MultiplexedConnection> {
        let (host, port) = split_addr(addr).ok_or_else(|| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad node address {addr:?}"),
            ))
        })?;
        let settings = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout));
        self.connector
            .open(Some(&self.transport.addr(host, port)), &settings)
            .await
    }

    /// A subscriber's connection (RESP3, pushes to `conn_config`'s sender) to the node at
    /// `addr` (`host:port`), within the connect timeout, and when its credentials are due for
    /// renewal.
    pub(crate) async fn open_subscriber(
        &self,
        addr: &str,
        conn_config: &redis::AsyncConnectionConfig,
    ) -> redis::RedisResult<(MultiplexedConnection, Option<Instant>)> {
        let (host, port) = split_addr(addr).ok_or_else(|| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad node address {addr:?}"),
            ))
        })?;
        let node = self.transport.addr(host, port);
        let open = self.connector.open_subscriber(Some(&node), conn_config);
        tokio::time::timeout(self.config.connect_timeout, open)
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "subscriber connect timed out",
                ))
            })?
    }

    /// Whether the slot map knows `addr` as a master that is not down.
    pub(crate) fn is_live_master(&self, addr: &str) -> bool {
        !self.topology.is_down(addr) && self.topology.masters().iter().any(|m| &**m == addr)
    }

    /// The masters of the slot map that are not known to be down.
    pub(crate) fn live_masters(&self) -> Vec<String> {
        self.topology
            .masters()
            .iter()
            .filter(|m| !self.topology.is_down(m))
            .map(|m| m.to_string())
            .collect()
    }

    /// The slot map's versions, to wait for its next change.
    pub(crate) fn epochs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.topology.epoch.subscribe()
    }

    /// The nodes the client has pools for.
    pub(crate) fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Drops the pools of nodes that are no longer in the slot map (a removed node, a demoted
    /// master, or with replica reads off any replica), and retires them ([`Node::retire`]): a
    /// durable write still in flight there is not acknowledged by its reply, and their gauges
    /// go to 0. A master of `masters_before` that is a replica now goes too (its replica pool is
    /// made afresh).
    fn forget_nodes_without_slots(&self, masters_before: &[Arc<str>]) {
        let masters = self.topology.masters();
        let replicas = if self.config.read_from.uses_replicas() {
            self.topology.replicas()
        } else {
            Vec::new()
        };
        self.nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, node| {
                let kept = masters.iter().any(|m| m == addr)
                    || (replicas.iter().any(|r| r == addr)
                        && !masters_before.iter().any(|m| m == addr));
                if !kept {
                    node.retire();
                }
                kept
            });
    }

    /// A node failed to answer (no connection, or the connection broke): the call waits for
    /// it or for a failover, and the slot map is refreshed.
    pub(crate) fn node_failed(&self, addr: &str) {
        self.topology.mark_down(addr);
        self.topology.request_refresh();
    }

    /// The slot map's version (it changes with every change of the map or of a node's state).
    pub(crate) fn epoch(&self) -> u64 {
        *self.topology.epoch.borrow()
    }

    /// Waits until the slot map's version is no longer `seen` (`true`), or `until` passes
    /// (`false`). A change between reading `seen` and this call is not missed.
    pub(crate) async fn changed_since(&self, seen: u64, until: Option<Instant>) -> bool {
        let mut epochs = self.topology.epoch.subscribe();
        let changed = epochs.wait_for(|epoch| *epoch != seen);
        match until {
            Some(until) => matches!(tokio::time::timeout_at(until, changed).await, Ok(Ok(_))),
            None => changed.await.is_ok(),
        }
    }

    /// Resolves once the slot map names another master than `node` for `slot` (a failover, a
    /// migration), or none. Meanwhile `node` is checked every [`LIVENESS_PERIOD`] with a
    /// `PING` on its pooled connection: one that stopped answering (frozen, cut off) is flagged
    /// down and the slot map refreshed, as a call to it would have done.
    pub(crate) async fn stops_owning(&self, slot: u16, node: &Node) {
        loop {
            let seen = self.epoch();
            if self.master_addr(slot).as_deref() != Some(&*node.addr) {
                return;
            }
            let check_at = Instant::now() + LIVENESS_PERIOD;
            if !self.changed_since(seen, Some(check_at)).await && !node.pool.answers().await {
                self.node_failed(&node.addr);
            }
        }
    }

    /// Asks the background task for a slot-map refresh (rate-limited and jittered).
    pub(crate) fn request_refresh(&self) {
        self.topology.request_refresh();
    }

    /// A `MOVED` reply: `slot` lives at `addr` from now on.
    pub(crate) fn moved(&self, slot: u16, addr: &str) {
        self.redirects.fetch_add(1, Ordering::Relaxed);
        crate::observe::call::note_redirect();
        self.topology.note_moved(slot, addr);
    }

    /// The master of `slot` in the slot map, as `host:port`.
    pub(crate) fn master_addr(&self, slot: u16) -> Option<String> {
        self.topology.master_of(slot).map(|a| a.to_string())
    }

    /// Slot-map refreshes done.
    pub(crate) fn refreshes(&self) -> u64 {
        self.topology.refreshes.load(Ordering::Relaxed)
    }

    /// Reconnections of every node's pool.
    pub(crate) fn reconnects(&self) -> u64 {
        self.nodes()
            .iter()
            .map(|n| n.pool.reconnects.load(Ordering::Relaxed))
            .sum()
    }

    /// Live connections and pool sizes, over every node.
    pub(crate) fn connections(&self) -> (usize, usize) {
        self.nodes().iter().fold((0, 0), |(up, total), n| {
            let (u, t) = n.pool.connections();
            (up + u, total + t)
        })
    }
}

impl Drop for ClusterRouter {
    fn drop(&mut self) {
        self.topology.closed.store(true, Ordering::Relaxed);
        self.topology.wake.notify_one();
    }
}
