//! [`RedisCluster`]: a real Redis Cluster on loopback, and single-slot resharding.

use std::net::SocketAddr;
use std::time::Duration;

use redis::Value;

use crate::error::LabError;
use crate::proxy::FaultProxy;
use crate::server::{RedisServer, ServerConfig, topology_server_config};
use crate::tls::LabTls;
use crate::util::{Poll, info_value, loopback};

/// Number of hash slots in Redis Cluster.
const SLOTS: u16 = 16384;

/// Keys moved per `MIGRATE` call during [`RedisCluster::migrate_slot`].
const MIGRATE_BATCH: usize = 100;

/// How a [`RedisCluster`] is built.
///
/// # Default
/// 3 masters, 1 replica per master, `cluster-node-timeout` 1000 ms, 30 s to become ready,
/// no extra directives, no TLS, no proxies.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Masters; the slots are split evenly between them (at least 1).
    pub masters: usize,
    /// Replicas attached to each master.
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a node may be unreachable before it is flagged failing.
    pub node_timeout: Duration,
    /// How long [`RedisCluster::start`] waits for `cluster_state:ok` and attached replicas.
    pub ready_timeout: Duration,
    /// Extra directives for every node (written after the cluster ones).
    pub extra: Vec<(String, String)>,
    /// Every node on TLS only, with `tls-cluster yes` (see [`LabTls`]).
    pub tls: Option<LabTls>,
    /// Put a [`FaultProxy`] in front of each node, announced in its place: each node is
    /// started with `cluster-announce-ip 127.0.0.1`, `cluster-announce-port <its proxy's
    /// port>`, `replica-announce-port <its proxy's port>` and `cluster-announce-bus-port <its
    /// own bus port>`. So `CLUSTER SLOTS`, `CLUSTER SHARDS`, `CLUSTER NODES`, `MOVED` and `ASK`
    /// name the proxies, a cluster client reaches every node through its proxy, and replicas
    /// replicate from their master through the master's proxy; the cluster bus (gossip,
    /// failure detection, failover votes) stays direct, so a proxy's faults never make a node
    /// look down to the others. See [`RedisCluster::proxy_of`].
    ///
    /// A fault on a master's proxy therefore also hits its replicas' links. Measured with
    /// Redis 7.0: under [`FaultProxy::set_blackhole`] the cluster stays ok and no node is
    /// flagged failing, while the replicas' links stall yet report `up` until `repl-timeout`
    /// (60 s by default). A connection blackholed once stays so until closed, so after
    /// `set_blackhole(false)` call [`FaultProxy::drop_all`] to let the replicas reconnect
    /// (until then the master never gets their acknowledgements and `WAIT` returns 0).
    ///
    /// Not with [`tls`](Self::tls): the proxy parses RESP and cannot carry TLS.
    pub proxied: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas_per_master: 1,
            node_timeout: Duration::from_millis(1000),
            ready_timeout: Duration::from_secs(30),
            extra: Vec::new(),
            tls: None,
            proxied: false,
        }
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), LabError> {
        if self.masters == 0 || self.masters > usize::from(SLOTS) {
            return Err(LabError::InvalidConfig(format!(
                "ClusterConfig::masters must be in 1..=16384, got {}",
                self.masters
            )));
        }
        if self.node_timeout < Duration::from_millis(1) || self.ready_timeout.is_zero() {
            return Err(LabError::InvalidConfig(
                "ClusterConfig::node_timeout must be >= 1 ms and ready_timeout > 0".into(),
            ));
        }
        if self.proxied && self.tls.is_some() {
            return Err(LabError::InvalidConfig(
                "ClusterConfig::proxied cannot be combined with tls (the proxy speaks RESP only)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// One row of `CLUSTER SLOTS`: a slot range and its master.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SlotRange {
    start: u16,
    end: u16,
    master: SocketAddr,
    replicas: Vec<SocketAddr>,
}

/// A real Redis Cluster: masters owning all 16384 slots, each with its replicas.
///
/// # Behavior
/// - [`start`](Self::start) starts every node with an explicit `cluster-port`, assigns slots
///   (`ADDSLOTSRANGE`), joins them (`CLUSTER MEET`), attaches replicas (`CLUSTER REPLICATE`) and
///   returns once every node reports `cluster_state:ok`, the same slot map, and every replica.
/// - `nodes()[..masters]` are the initial masters; replica `i` follows master `i % masters`.
/// - With [`ClusterConfig::proxied`], `proxies()[i]` fronts `nodes()[i]`, and the cluster
///   announces the proxies' addresses ([`announced_addr`](Self::announced_addr)). Methods that
///   take a node's address accept either its own or its announced address; methods that
///   return one return its own (as [`RedisServer::addr`] gives it), except
///   [`urls`](Self::urls), which gives the addresses a client should use. Proxies forward to
///   the node's port, which [`RedisServer::restart`] keeps, so they work across restarts.
/// - The lab's own commands (start, [`wait_ok`](Self::wait_ok),
///   [`master_for_slot`](Self::master_for_slot), [`migrate_slot`](Self::migrate_slot) and its
///   `MIGRATE`s) go to the nodes directly, never through a proxy: proxy faults do not stall
///   them, and [`FaultProxy::stats`] counts only the traffic of the clients under test (and of
///   replication).
/// - Dropping it kills every node and stops every proxy.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), redis_lab::LabError> {
/// let cluster = redis_lab::RedisCluster::start(Default::default()).await?;
/// let seeds: Vec<String> = cluster.urls(); // for the cluster client under test
/// let target = cluster.nodes()[1].addr();
/// cluster.migrate_slot(0, target).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
    replicas_per_master: usize,
    /// With [`ClusterConfig::proxied`]: `proxies[i]` fronts `nodes[i]`; empty otherwise.
    proxies: Vec<FaultProxy>,
}

impl RedisCluster {
    /// Starts and joins the nodes, and waits until the cluster is healthy.
    ///
    /// # Errors
    /// [`LabError::InvalidConfig`], start errors of any node, [`LabError::Timeout`].
    pub async fn start(config: ClusterConfig) -> Result<Self, LabError> {
        config.validate()?;
        crate::require_binaries(false)?;
        let total = config.masters * (1 + config.replicas_per_master);
        let directives = vec![
            ("cluster-enabled", "yes".to_owned()),
            ("cluster-config-file", "nodes.conf".to_owned()),
            (
                "cluster-node-timeout",
                config.node_timeout.as_millis().to_string(),
            ),
        ];
        // Each proxy first (its port is announced), pointed at its node once it is up.
        let mut proxies = Vec::new();
        if config.proxied {
            for _ in 0..total {
                proxies.push(FaultProxy::start(loopback(1)).await?);
            }
        }
        let mut starting = tokio::task::JoinSet::new();
        for index in 0..total {
            let mut own = directives.clone();
            if let Some(proxy) = proxies.get(index) {
                let port = proxy.addr().port().to_string();
                own.extend([
                    ("cluster-announce-ip", "127.0.0.1".to_owned()),
                    ("cluster-announce-port", port.clone()),
                    // INFO replication on its master then names the proxy too.
                    ("replica-announce-port", port),
                ]);
            }
            own.extend(config.extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let mut launch = ServerConfig {
                tls: config.tls.clone(),
                ..topology_server_config(&own)
            }
            .into_launch(true);
            launch.announce_bus_port = config.proxied;
            starting.spawn(async move { (index, RedisServer::launch(launch).await) });
        }
        let mut slots: Vec<Option<RedisServer>> = (0..total).map(|_| None).collect();
        let mut first_error = None;
        while let Some(joined) = starting.join_next().await {
            match joined {
                Ok((index, Ok(server))) => slots[index] = Some(server),
                Ok((_, Err(error))) => {
                    first_error.get_or_insert(error);
                }
                Err(join) => {
                    first_error
                        .get_or_insert(LabError::Topology(format!("node start task: {join}")));
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        let nodes: Vec<RedisServer> = slots.into_iter().flatten().collect();
        for (proxy, node) in proxies.iter().zip(&nodes) {
            proxy.set_upstream(node.addr());
        }
        let cluster = Self {
            nodes,
            masters: config.masters,
            replicas_per_master: config.replicas_per_master,
            proxies,
        };
        cluster.join(&config).await?;
        Ok(cluster)
    }

    /// Assigns slots, meets, replicates, and waits for a healthy cluster.
    async fn join(&self, config: &ClusterConfig) -> Result<(), LabError> {
        let mut ids = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            ids.push(
                node.query::<String>(redis::cmd("CLUSTER").arg("MYID"))
                    .await?,
            );
        }
        let masters = self.masters;
        let per = usize::from(SLOTS) / masters;
        for (index, master) in self.nodes[..masters].iter().enumerate() {
            let start = index * per;
            let end = if index + 1 == masters {
                usize::from(SLOTS) - 1
            } else {
                start + per - 1
            };
            master
                .query::<()>(redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(index + 1))
                .await?;
            master
                .query::<()>(
                    redis::cmd("CLUSTER")
                        .arg("ADDSLOTSRANGE")
                        .arg(start)
                        .arg(end),
                )
                .await?;
        }
        let seed = &self.nodes[0];
        for (index, node) in self.nodes.iter().enumerate().skip(1) {
            let bus = node.bus_port().unwrap_or(node.port() + 10000);
            // The announced port, so no node ever knows another by its own port.
            seed.query::<()>(
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(self.announced_at(index).port())
                    .arg(bus),
            )
            .await?;
        }
        let poll = Poll::new(
            "every cluster node to know every other",
            config.ready_timeout,
        );
        loop {
            let mut pending = Vec::new();
            for node in &self.nodes {
                match node
                    .query::<String>(redis::cmd("CLUSTER").arg("NODES"))
                    .await
                {
                    Ok(nodes) => {
                        let known = nodes
                            .lines()
                            .filter(|l| !l.contains("handshake") && !l.contains("noaddr"))
                            .count();
                        if known != self.nodes.len() {
                            pending.push(format!("{} knows {known}", node.addr()));
                        }
                    }
                    Err(e) => pending.push(e.to_string()),
                }
            }
            if pending.is_empty() {
                break;
            }
            poll.wait(pending.join("; ")).await?;
        }
        for (offset, replica) in self.nodes[masters..].iter().enumerate() {
            let master_id = &ids[offset % masters];
            replica
                .query::<()>(redis::cmd("CLUSTER").arg("REPLICATE").arg(master_id))
                .await?;
        }
        self.wait_healthy(config.ready_timeout, true).await
    }

    /// The nodes; the first `masters` were the initial masters.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to stop, kill or restart them.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Seed URLs for a cluster client: every node at its announced address, so the addresses a
    /// client should use. With [`ClusterConfig::proxied`] these are the proxies (the addresses
    /// `CLUSTER SLOTS` names), so seeds and redirections go through the same hops; otherwise
    /// the nodes themselves ([`RedisServer::url`]).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| node.url_on_port(self.announced_at(index).port()))
            .collect()
    }

    /// With [`ClusterConfig::proxied`], the proxies in node order (`proxies()[i]` fronts
    /// `nodes()[i]`); empty otherwise.
    pub fn proxies(&self) -> &[FaultProxy] {
        &self.proxies
    }

    /// With [`ClusterConfig::proxied`], the proxy in front of the node at `addr`: either the
    /// node's own address ([`RedisServer::addr`], [`master_for_slot`](Self::master_for_slot))
    /// or its announced one (the proxy's, as `CLUSTER SLOTS`, `MOVED` and `ASK` name it).
    /// `None` without proxies or for an address that is not this cluster's.
    pub fn proxy_of(&self, addr: SocketAddr) -> Option<&FaultProxy> {
        self.index_of(addr)
            .and_then(|index| self.proxies.get(index))
    }

    /// The address the cluster announces for the node at `addr` (its own or its announced
    /// address): its proxy's with [`ClusterConfig::proxied`], else its own. `None` for an
    /// address that is not this cluster's.
    pub fn announced_addr(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.index_of(addr).map(|index| self.announced_at(index))
    }

    /// The node at `addr`, its own or its announced address.
    pub fn node_by_addr(&self, addr: SocketAddr) -> Option<&RedisServer> {
        self.index_of(addr).map(|index| &self.nodes[index])
    }

    /// The node at `addr`, its own or its announced address, to stop, kill or restart it.
    pub fn node_by_addr_mut(&mut self, addr: SocketAddr) -> Option<&mut RedisServer> {
        self.index_of(addr).map(|index| &mut self.nodes[index])
    }

    /// The index in `nodes` of the node whose own or announced address is `addr`.
    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.addr() == addr)
            .or_else(|| self.proxies.iter().position(|p| p.addr() == addr))
    }

    /// The announced address of `nodes[index]`.
    fn announced_at(&self, index: usize) -> SocketAddr {
        self.proxies
            .get(index)
            .map_or_else(|| self.nodes[index].addr(), FaultProxy::addr)
    }

    /// The node's own address for an address `CLUSTER SLOTS` gave (unchanged if unknown).
    fn own_addr(&self, announced: SocketAddr) -> SocketAddr {
        self.index_of(announced)
            .map_or(announced, |index| self.nodes[index].addr())
    }

    /// The master owning `slot`, per the first node that answers `CLUSTER SLOTS`: its own
    /// address, also with [`ClusterConfig::proxied`] (see
    /// [`announced_addr`](Self::announced_addr) for its proxy).
    ///
    /// # Errors
    /// [`LabError::InvalidConfig`] for a slot ≥ 16384, [`LabError::Topology`] if no node answers
    /// or the slot is unassigned.
    pub async fn master_for_slot(&self, slot: u16) -> Result<SocketAddr, LabError> {
        if slot >= SLOTS {
            return Err(LabError::InvalidConfig(format!(
                "slot {slot} is not below 16384"
            )));
        }
        let mut last = String::from("no node answered");
        for node in &self.nodes {
            match cluster_slots(node).await {
                Ok(ranges) => {
                    return ranges
                        .iter()
                        .find(|r| r.start <= slot && slot <= r.end)
                        .map(|r| self.own_addr(r.master))
                        .ok_or_else(|| LabError::Topology(format!("slot {slot} is not assigned")));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(LabError::Topology(format!("CLUSTER SLOTS: {last}")))
    }

    /// Waits until every running node reports `cluster_state:ok` and the same slot map (with
    /// [`ClusterConfig::proxied`], one that names only proxies).
    ///
    /// # Errors
    /// [`LabError::Timeout`] with the last disagreement.
    pub async fn wait_ok(&self, timeout: Duration) -> Result<(), LabError> {
        self.wait_healthy(timeout, false).await
    }

    async fn wait_healthy(
        &self,
        timeout: Duration,
        replicas_attached: bool,
    ) -> Result<(), LabError> {
        let poll =
            Poll::new("cluster_state:ok on every node", timeout).every(Duration::from_millis(50));
        loop {
            match self.health(replicas_attached).await {
                Ok(()) => return Ok(()),
                Err(why) => poll.wait(why).await?,
            }
        }
    }

    async fn health(&self, replicas_attached: bool) -> Result<(), String> {
        let mut maps = Vec::new();
        for node in &self.nodes {
            if node.pid().is_none() {
                continue;
            }
            let info: String = node
                .query(redis::cmd("CLUSTER").arg("INFO"))
                .await
                .map_err(|e| e.to_string())?;
            if info_value(&info, "cluster_state").as_deref() != Some("ok") {
                return Err(format!(
                    "{} reports cluster_state {:?}",
                    node.addr(),
                    info_value(&info, "cluster_state")
                ));
            }
            let mut ranges = cluster_slots(node).await.map_err(|e| e.to_string())?;
            ranges.sort();
            if !self.proxies.is_empty() {
                let direct = ranges
                    .iter()
                    .flat_map(|r| std::iter::once(&r.master).chain(&r.replicas))
                    .find(|a| !self.proxies.iter().any(|p| p.addr() == **a));
                if let Some(direct) = direct {
                    return Err(format!(
                        "{} names {direct} in CLUSTER SLOTS, not a proxy",
                        node.addr()
                    ));
                }
            }
            if replicas_attached {
                let expected = self.replicas_per_master;
                if let Some(short) = ranges.iter().find(|r| r.replicas.len() != expected) {
                    return Err(format!(
                        "{} sees {} replicas for {short:?}",
                        node.addr(),
                        short.replicas.len()
                    ));
                }
            }
            maps.push((node.addr(), ranges));
        }
        if replicas_attached {
            for replica in &self.nodes[self.masters..] {
                let link = replica
                    .info_field("replication", "master_link_status")
                    .await
                    .map_err(|e| e.to_string())?;
                if link != "up" {
                    return Err(format!("{} master_link_status {link}", replica.addr()));
                }
            }
        }
        // Replica lists differ in order between nodes; compare owners only.
        let owners = |ranges: &[SlotRange]| -> Vec<(u16, u16, SocketAddr)> {
            ranges.iter().map(|r| (r.start, r.end, r.master)).collect()
        };
        if let Some((first_addr, first)) = maps.first() {
            for (addr, ranges) in &maps[1..] {
                if owners(ranges) != owners(first) {
                    return Err(format!("{addr} and {first_addr} disagree on the slot map"));
                }
            }
        }
        Ok(())
    }

    /// Moves `slot` and all its keys to the master at `to` (its own or its announced address),
    /// the way `redis-cli --cluster reshard` does: `SETSLOT IMPORTING` on the target,
    /// `SETSLOT MIGRATING` on the source, `MIGRATE` in batches of 100 keys (from node to node
    /// directly, also with [`ClusterConfig::proxied`]), then `SETSLOT NODE` on every master;
    /// returns once every running node agrees that `to` owns the slot. A slot already owned by
    /// `to` is left alone.
    ///
    /// # Errors
    /// [`LabError::InvalidConfig`] for a bad slot or a `to` that is not a master of this cluster,
    /// [`LabError::Redis`] for a failed step, [`LabError::Timeout`] if the nodes do not converge.
    pub async fn migrate_slot(&self, slot: u16, to: SocketAddr) -> Result<(), LabError> {
        let target = self.member(to)?;
        let to = target.addr();
        let from = self.master_for_slot(slot).await?;
        if from == to {
            return Ok(());
        }
        let source = self.member(from)?;
        let role = target.info_field("replication", "role").await?;
        if role != "master" {
            return Err(LabError::InvalidConfig(format!(
                "{to} is a {role}, not a master"
            )));
        }
        let source_id: String = source.query(redis::cmd("CLUSTER").arg("MYID")).await?;
        let target_id: String = target.query(redis::cmd("CLUSTER").arg("MYID")).await?;
        target
            .query::<()>(
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("IMPORTING")
                    .arg(&source_id),
            )
            .await?;
        source
            .query::<()>(
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("MIGRATING")
                    .arg(&target_id),
            )
            .await?;
        loop {
            let keys: Vec<Vec<u8>> = source
                .query(
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(slot)
                        .arg(MIGRATE_BATCH),
                )
                .await?;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to.port())
                .arg("")
                .arg(0)
                .arg(5000);
            if let Some(password) = target.password() {
                migrate.arg("AUTH").arg(password);
            }
            migrate.arg("KEYS").arg(&keys);
            let reply: Value = source.query(&migrate).await?;
            tracing::debug!(slot, moved = keys.len(), ?reply, "migrated a batch");
        }
        // Target first, then source, then everyone else (as redis-cli does).
        let mut order: Vec<&RedisServer> = vec![target, source];
        for node in &self.nodes {
            if node.addr() != to && node.addr() != from && node.pid().is_some() {
                let role = node.info_field("replication", "role").await?;
                if role == "master" {
                    order.push(node);
                }
            }
        }
        for node in order {
            node.query::<()>(
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&target_id),
            )
            .await?;
        }
        let poll = Poll::new(
            format!("every node to see slot {slot} on {to}"),
            Duration::from_secs(30),
        )
        .every(Duration::from_millis(50));
        loop {
            let mut pending = Vec::new();
            for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
                let owner = cluster_slots(node).await.map(|ranges| {
                    ranges
                        .into_iter()
                        .find(|r| r.start <= slot && slot <= r.end)
                        .map(|r| self.own_addr(r.master))
                });
                if !matches!(owner, Ok(Some(owner)) if owner == to) {
                    pending.push(format!("{} says {owner:?}", node.addr()));
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            poll.wait(pending.join("; ")).await?;
        }
    }

    /// [`node_by_addr`](Self::node_by_addr), or an error naming `addr`.
    fn member(&self, addr: SocketAddr) -> Result<&RedisServer, LabError> {
        self.node_by_addr(addr)
            .ok_or_else(|| LabError::InvalidConfig(format!("{addr} is not a node of this cluster")))
    }
}

/// `CLUSTER SLOTS` of one node.
async fn cluster_slots(node: &RedisServer) -> Result<Vec<SlotRange>, LabError> {
    let rows: Vec<Value> = node.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
    let bad = |what: &str| {
        LabError::Topology(format!(
            "unexpected CLUSTER SLOTS {what} from {}",
            node.addr()
        ))
    };
    let mut ranges = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Array(items) = row else {
            return Err(bad("row"));
        };
        let [Value::Int(start), Value::Int(end), endpoints @ ..] = items.as_slice() else {
            return Err(bad("range"));
        };
        let mut addrs = Vec::new();
        for endpoint in endpoints {
            let Value::Array(parts) = endpoint else {
                return Err(bad("endpoint"));
            };
            let Some(Value::Int(port)) = parts.get(1) else {
                return Err(bad("port"));
            };
            addrs.push(loopback(u16::try_from(*port).map_err(|_| bad("port"))?));
        }
        let Some((&master, replicas)) = addrs.split_first() else {
            return Err(bad("master"));
        };
        let mut replicas = replicas.to_vec();
        replicas.sort();
        ranges.push(SlotRange {
            start: u16::try_from(*start).map_err(|_| bad("start"))?,
            end: u16::try_from(*end).map_err(|_| bad("end"))?,
            master,
            replicas,
        });
    }
    Ok(ranges)
}
