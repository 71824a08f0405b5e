//! The chaos lab: a topology started for the run, its nodes behind proxies, and the faults the
//! nemesis applies to it.
//!
//! # Behavior
//! - `standalone`: one server behind a proxy. `sentinel`: a master, 2 replicas and 3 sentinels
//!   (quorum 2, `down-after-milliseconds` 1000, `failover-timeout` 1000), every data server
//!   behind a proxy the sentinels announce. `cluster`: 3 masters with a replica each
//!   (`cluster-node-timeout` 1000), every node behind a proxy it announces (the cluster bus
//!   stays direct).
//! - Every data server keeps an append-only file fsynced at every write (`appendfsync always`):
//!   a node killed and restarted comes back with everything it acknowledged, so what a kill
//!   can take back is exactly what a failover does (a master's unreplicated tail), and a
//!   standalone server loses nothing.
//! - The client reaches every node through its proxy; the lab's own connections (faults, the
//!   watcher's probes, the final read) go to the nodes directly.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use redis_lab::{FaultProxy, LabError, RedisCluster, RedisServer, SentinelTopology};
use serde::Serialize;

use super::schedule::{Shape, Victim};
use crate::error::CliError;
use crate::target::Target;

/// Cluster masters.
const SHARDS: usize = 3;
/// Sentinel replicas.
const SENTINEL_REPLICAS: usize = 2;

/// The topology of a run (`--topology`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TopologyKind {
    /// One server.
    Standalone,
    /// A master, 2 replicas, 3 sentinels.
    Sentinel,
    /// 3 masters with a replica each.
    Cluster,
}

impl TopologyKind {
    /// The name on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TopologyKind::Standalone => "standalone",
            TopologyKind::Sentinel => "sentinel",
            TopologyKind::Cluster => "cluster",
        }
    }
}

/// The shape of a topology's lab (every node proxied).
pub(crate) fn shape_of(kind: TopologyKind) -> Shape {
    let (shards, replicas) = match kind {
        TopologyKind::Standalone => (1, 0),
        TopologyKind::Sentinel => (1, SENTINEL_REPLICAS),
        TopologyKind::Cluster => (SHARDS, 1),
    };
    Shape {
        shards,
        replicas,
        proxied: true,
    }
}

/// Persistence of every data server (see the module docs).
fn durable_files() -> Vec<(String, String)> {
    vec![
        ("appendonly".to_owned(), "yes".to_owned()),
        ("appendfsync".to_owned(), "always".to_owned()),
    ]
}

/// What the watcher needs to observe the topology without borrowing the lab.
#[derive(Clone, Debug)]
pub(crate) enum Probe {
    /// One server, through its proxy (what the client sees).
    Standalone(SocketAddr),
    /// Ask the sentinels for the master.
    Sentinel {
        /// The sentinels.
        sentinels: Vec<SocketAddr>,
        /// The master's name.
        name: String,
    },
    /// Ask any node for `CLUSTER SLOTS`.
    Cluster(Vec<SocketAddr>),
}

/// The lab of a run.
pub(crate) enum Lab {
    /// One server and its proxy.
    Standalone(Box<RedisServer>, FaultProxy),
    /// A Sentinel deployment.
    Sentinel(SentinelTopology),
    /// A cluster.
    Cluster(RedisCluster),
}

fn lab_failed(what: &'static str) -> impl Fn(LabError) -> CliError {
    move |err| CliError::runtime(format!("{what}: {err}"))
}

impl Lab {
    /// Starts the topology.
    ///
    /// # Errors
    /// [`CliError::Runtime`] when a process cannot start or the topology does not converge.
    pub(crate) async fn start(kind: TopologyKind) -> Result<Lab, CliError> {
        redis_lab::require_binaries(kind == TopologyKind::Sentinel)
            .map_err(|err| CliError::runtime(err.to_string()))?;
        match kind {
            TopologyKind::Standalone => {
                let server = RedisServer::start_with(redis_lab::ServerConfig {
                    extra: durable_files(),
                    ..redis_lab::ServerConfig::default()
                })
                .await
                .map_err(lab_failed("cannot start redis-server"))?;
                let proxy = FaultProxy::start(server.addr())
                    .await
                    .map_err(lab_failed("cannot start the proxy"))?;
                Ok(Lab::Standalone(Box::new(server), proxy))
            }
            TopologyKind::Sentinel => {
                let topology = SentinelTopology::start(redis_lab::SentinelConfig {
                    replicas: SENTINEL_REPLICAS,
                    sentinels: 3,
                    quorum: 2,
                    down_after: Duration::from_millis(1000),
                    failover_timeout: Duration::from_millis(1000),
                    proxied: true,
                    extra: durable_files(),
                    ..redis_lab::SentinelConfig::default()
                })
                .await
                .map_err(lab_failed("cannot start the Sentinel topology"))?;
                Ok(Lab::Sentinel(topology))
            }
            TopologyKind::Cluster => {
                let cluster = RedisCluster::start(redis_lab::ClusterConfig {
                    masters: SHARDS,
                    replicas_per_master: 1,
                    node_timeout: Duration::from_millis(1000),
                    extra: durable_files(),
                    proxied: true,
                    ..redis_lab::ClusterConfig::default()
                })
                .await
                .map_err(lab_failed("cannot start the cluster"))?;
                Ok(Lab::Cluster(cluster))
            }
        }
    }

    /// The shape the schedule is drawn for.
    pub(crate) fn shape(&self) -> Shape {
        shape_of(match self {
            Lab::Standalone(..) => TopologyKind::Standalone,
            Lab::Sentinel(_) => TopologyKind::Sentinel,
            Lab::Cluster(_) => TopologyKind::Cluster,
        })
    }

    /// Where the client connects.
    pub(crate) fn target(&self) -> Target {
        match self {
            Lab::Standalone(_, proxy) => Target::Standalone { url: proxy.url() },
            Lab::Sentinel(topology) => Target::Sentinel {
                sentinels: topology
                    .sentinel_addrs()
                    .iter()
                    .map(|a| (a.ip().to_string(), a.port()))
                    .collect(),
                master: topology.master_name().to_owned(),
            },
            Lab::Cluster(cluster) => Target::Cluster {
                urls: cluster.urls(),
            },
        }
    }

    /// What the watcher observes.
    pub(crate) fn probe(&self) -> Probe {
        match self {
            Lab::Standalone(_, proxy) => Probe::Standalone(proxy.addr()),
            Lab::Sentinel(topology) => Probe::Sentinel {
                sentinels: topology.sentinel_addrs(),
                name: topology.master_name().to_owned(),
            },
            Lab::Cluster(cluster) => {
                Probe::Cluster(cluster.nodes().iter().map(RedisServer::addr).collect())
            }
        }
    }

    fn servers(&self) -> &[RedisServer] {
        match self {
            Lab::Standalone(server, _) => std::slice::from_ref(&**server),
            Lab::Sentinel(topology) => topology.servers(),
            Lab::Cluster(cluster) => cluster.nodes(),
        }
    }

    /// The proxy in front of the server at `real`.
    pub(crate) fn proxy(&self, real: SocketAddr) -> Option<&FaultProxy> {
        match self {
            Lab::Standalone(server, proxy) => (server.addr() == real).then_some(proxy),
            Lab::Sentinel(topology) => topology.proxy_of(real),
            Lab::Cluster(cluster) => cluster.proxy_of(real),
        }
    }

    /// The server's own address, given it or its proxy's.
    pub(crate) fn real(&self, addr: SocketAddr) -> SocketAddr {
        self.servers()
            .iter()
            .map(RedisServer::addr)
            .find(|&real| real == addr || self.proxy(real).is_some_and(|p| p.addr() == addr))
            .unwrap_or(addr)
    }

    /// The server at `real`.
    pub(crate) fn server(&self, real: SocketAddr) -> Result<&RedisServer, CliError> {
        self.servers()
            .iter()
            .find(|s| s.addr() == real)
            .ok_or_else(|| CliError::runtime(format!("{real} is not a server of the lab")))
    }

    /// The server at `real`, to kill or restart it.
    pub(crate) fn server_mut(&mut self, real: SocketAddr) -> Result<&mut RedisServer, CliError> {
        let found = match self {
            Lab::Standalone(server, _) => (server.addr() == real).then_some(&mut **server),
            Lab::Sentinel(topology) => topology.server_by_addr_mut(real),
            Lab::Cluster(cluster) => cluster.nodes_mut().iter_mut().find(|s| s.addr() == real),
        };
        found.ok_or_else(|| CliError::runtime(format!("{real} is not a server of the lab")))
    }

    /// The master of `shard` now (its own address).
    pub(crate) async fn master(&self, shard: usize) -> Result<SocketAddr, CliError> {
        let announced = match self {
            Lab::Standalone(server, _) => return Ok(server.addr()),
            Lab::Sentinel(topology) => topology
                .master_addr()
                .await
                .map_err(lab_failed("no master"))?,
            Lab::Cluster(cluster) => cluster
                .master_for_slot(first_slot(shard))
                .await
                .map_err(lab_failed("CLUSTER SLOTS"))?,
        };
        Ok(self.real(announced))
    }

    /// The node a step hits now (its own address).
    pub(crate) async fn resolve(&self, victim: Victim) -> Result<SocketAddr, CliError> {
        match victim {
            Victim::Master { shard } => self.master(shard).await,
            Victim::Replica { shard, index } => {
                let master = self.master(shard).await?;
                let replicas = self.replicas_of(master).await?;
                if replicas.is_empty() {
                    return Err(CliError::runtime(format!("{master} has no replica now")));
                }
                Ok(replicas[index % replicas.len()])
            }
        }
    }

    /// The replicas `master` reports (their own addresses).
    pub(crate) async fn replicas_of(
        &self,
        master: SocketAddr,
    ) -> Result<Vec<SocketAddr>, CliError> {
        let server = self.server(master)?;
        let mut conn = server.admin().await.map_err(lab_failed("INFO"))?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(|e| CliError::runtime(format!("INFO replication on {master}: {e}")))?;
        let mut replicas = Vec::new();
        for line in info.lines().filter(|l| l.starts_with("slave")) {
            let port = line
                .split(',')
                .find_map(|field| {
                    field
                        .split_once(':')
                        .map_or(field, |(_, f)| f)
                        .strip_prefix("port=")
                })
                .and_then(|p| p.parse::<u16>().ok());
            // A replica still in its handshake shows `port=0` (it has not sent its
            // listening port yet): not a replica to count or to hit yet.
            if let Some(port) = port.filter(|&p| p != 0) {
                replicas.push(self.real(SocketAddr::from(([127, 0, 0, 1], port))));
            }
        }
        replicas.sort();
        Ok(replicas)
    }

    /// `SENTINEL FAILOVER`, or `CLUSTER FAILOVER` on a replica of the shard's master.
    pub(crate) async fn failover(&self, shard: usize) -> Result<String, CliError> {
        match self {
            Lab::Standalone(..) => Err(CliError::runtime("no failover without replicas")),
            Lab::Sentinel(topology) => {
                let sentinel = &topology.sentinels()[0];
                let mut conn = sentinel.admin().await.map_err(lab_failed("sentinel"))?;
                redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg(topology.master_name())
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| CliError::runtime(format!("SENTINEL FAILOVER: {e}")))?;
                Ok(format!("sentinel {}", sentinel.addr()))
            }
            Lab::Cluster(_) => {
                let master = self.master(shard).await?;
                let replica = *self
                    .replicas_of(master)
                    .await?
                    .first()
                    .ok_or_else(|| CliError::runtime(format!("{master} has no replica")))?;
                let mut conn = self
                    .server(replica)?
                    .admin()
                    .await
                    .map_err(lab_failed("replica"))?;
                redis::cmd("CLUSTER")
                    .arg("FAILOVER")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| {
                        CliError::runtime(format!("CLUSTER FAILOVER on {replica}: {e}"))
                    })?;
                Ok(format!("replica {replica}"))
            }
        }
    }

    /// Moves the slot of `key` to the next master; gives the slot and where it went.
    pub(crate) async fn migrate(&self, key: &str) -> Result<(u16, SocketAddr), CliError> {
        let Lab::Cluster(cluster) = self else {
            return Err(CliError::runtime("no slot to migrate outside a cluster"));
        };
        let slot = resilient_redis::commands::key_slot(key.as_bytes());
        let from = self.real(
            cluster
                .master_for_slot(slot)
                .await
                .map_err(lab_failed("CLUSTER SLOTS"))?,
        );
        let mut masters = Vec::new();
        for shard in 0..SHARDS {
            masters.push(self.master(shard).await?);
        }
        masters.sort();
        masters.dedup();
        let to = masters
            .iter()
            .copied()
            .find(|&m| m > from)
            .or_else(|| masters.first().copied())
            .filter(|&m| m != from)
            .ok_or_else(|| CliError::runtime("no other master to migrate to"))?;
        cluster
            .migrate_slot(slot, to)
            .await
            .map_err(lab_failed("slot migration"))?;
        Ok((slot, to))
    }

    /// Waits until the topology has settled: every server running, one master per shard that
    /// every observer agrees on, every replica linked and caught up.
    ///
    /// # Errors
    /// [`CliError::Runtime`] when it does not settle within `timeout`.
    pub(crate) async fn settle(&mut self, timeout: Duration) -> Result<(), CliError> {
        let end = tokio::time::Instant::now() + timeout;
        let mut why;
        loop {
            why = match self.unsettled().await {
                Ok(None) => return Ok(()),
                Ok(Some(why)) => why,
                Err(err) => err.to_string(),
            };
            if tokio::time::Instant::now() >= end {
                return Err(CliError::runtime(format!(
                    "the topology did not settle within {} s: {why}",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Why the topology has not settled yet, if it has not.
    async fn unsettled(&mut self) -> Result<Option<String>, CliError> {
        let servers: Vec<SocketAddr> = self.servers().iter().map(RedisServer::addr).collect();
        for addr in &servers {
            if !self.server_mut(*addr)?.is_running() {
                return Ok(Some(format!("{addr} is not running")));
            }
        }
        if let Lab::Cluster(cluster) = self
            && let Err(err) = cluster.wait_ok(Duration::from_millis(100)).await
        {
            return Ok(Some(err.to_string()));
        }
        let shards = self.shape().shards;
        let mut masters = Vec::new();
        for shard in 0..shards {
            masters.push(self.master(shard).await?);
        }
        let replicas_each = self.shape().replicas;
        for &master in &masters {
            let role = self
                .server(master)?
                .info_field("replication", "role")
                .await
                .unwrap_or_else(|e| e.to_string());
            if role != "master" {
                return Ok(Some(format!("the named master {master} reports {role}")));
            }
            let replicas = self.replicas_of(master).await?;
            if replicas.len() < replicas_each {
                return Ok(Some(format!(
                    "{master} has {} of {replicas_each} replicas",
                    replicas.len()
                )));
            }
            let offset = self
                .server(master)?
                .info_field("replication", "master_repl_offset")
                .await
                .unwrap_or_default();
            for replica in replicas {
                let server = self.server(replica)?;
                let link = server
                    .info_field("replication", "master_link_status")
                    .await
                    .unwrap_or_default();
                let applied = server
                    .info_field("replication", "slave_repl_offset")
                    .await
                    .unwrap_or_default();
                if link != "up" || applied != offset {
                    return Ok(Some(format!(
                        "replica {replica} link {link}, offset {applied} of {offset}"
                    )));
                }
            }
        }
        // Masters that nobody names must not be left over (a restarted old master).
        for addr in servers {
            if masters.contains(&addr) {
                continue;
            }
            let role = self
                .server(addr)?
                .info_field("replication", "role")
                .await
                .unwrap_or_else(|e| e.to_string());
            if role != "slave" {
                return Ok(Some(format!("{addr} reports role {role}")));
            }
        }
        Ok(None)
    }

    /// A plain redis-rs connection that reads any key on the masters directly (no proxy, no
    /// retries): the final state is read with it.
    ///
    /// # Errors
    /// [`CliError::Runtime`] when it cannot connect.
    pub(crate) async fn reader(&self) -> Result<Reader, CliError> {
        let failed = |e: redis::RedisError| CliError::runtime(format!("final read: {e}"));
        match self {
            Lab::Cluster(cluster) => {
                let urls: Vec<String> = cluster
                    .nodes()
                    .iter()
                    .map(|n| format!("redis://{}", n.addr()))
                    .collect();
                let _ = cluster;
                let conn = redis::cluster::ClusterClient::new(urls)
                    .map_err(failed)?
                    .get_async_connection()
                    .await
                    .map_err(failed)?;
                Ok(Reader::Cluster(conn))
            }
            _ => {
                let master = self.master(0).await?;
                let conn = redis::Client::open(format!("redis://{master}"))
                    .map_err(failed)?
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(failed)?;
                Ok(Reader::Direct(conn))
            }
        }
    }
}

/// The first slot of `shard` in the lab's initial layout (slots split evenly over the masters).
pub(crate) fn first_slot(shard: usize) -> u16 {
    (shard * 16384 / SHARDS) as u16
}

/// A connection to read the final state (see [`Lab::reader`]).
pub(crate) enum Reader {
    /// To the one master.
    Direct(redis::aio::MultiplexedConnection),
    /// redis-rs's cluster connection, from the nodes' own addresses.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Reader {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Reader::Direct(conn) => conn.req_packed_command(cmd),
            Reader::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Reader::Direct(conn) => conn.req_packed_commands(cmd, offset, count),
            Reader::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}
