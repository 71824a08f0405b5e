//! [`SentinelTopology`]: a master, its replicas and a quorum of sentinels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::LabError;
use crate::proxy::FaultProxy;
use crate::server::{Kind, Launch, RedisServer, ServerConfig, topology_server_config};
use crate::tls::LabTls;
use crate::util::{Poll, loopback};

/// How a [`SentinelTopology`] is built.
///
/// # Default
/// `mymaster`, 1 replica, 3 sentinels with quorum 2, `down-after-milliseconds` 1000,
/// `failover-timeout` 3000, 30 s to become ready, no TLS, no proxies, no extra directives.
#[derive(Debug, Clone)]
pub struct SentinelConfig {
    /// Replicas of the initial master (at least 1 for a failover to be possible).
    pub replicas: usize,
    /// How long a master must be unreachable before the sentinels consider it down.
    pub down_after: Duration,
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// Number of sentinels (at least 1).
    pub sentinels: usize,
    /// Sentinels that must agree the master is down (1..=`sentinels`).
    pub quorum: usize,
    /// `failover-timeout`: also the pause before a sentinel retries a failed failover (×2).
    pub failover_timeout: Duration,
    /// How long [`SentinelTopology::start`] waits for replication and sentinel agreement.
    pub ready_timeout: Duration,
    /// Every server and sentinel on TLS only (see [`LabTls`]); sentinels and replicas talk
    /// TLS to each other (`tls-replication yes`).
    pub tls: Option<LabTls>,
    /// Put a [`FaultProxy`] in front of each data server, announced in its place: the
    /// sentinels monitor the master at its proxy's port, the replicas replicate through it and
    /// announce their own (`replica-announce-port`). The sentinels, and the clients they
    /// inform, reach every server through one proxy hop, so a test can add latency or faults on
    /// one server's path ([`SentinelTopology::proxy_of`]) and compare copies on equal terms.
    ///
    /// Not with [`tls`](Self::tls): the proxy parses RESP and cannot carry TLS.
    pub proxied: bool,
    /// Extra directives for every data server (the master and the replicas, not the
    /// sentinels), written after the topology's own (`replicaof`, `replica-announce-port`), e.g.
    /// `("appendonly", "yes")`. As with [`ServerConfig::extra`], leave `port`, `bind`, `dir`
    /// and `logfile` alone.
    pub extra: Vec<(String, String)>,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            down_after: Duration::from_millis(1000),
            master_name: "mymaster".to_owned(),
            sentinels: 3,
            quorum: 2,
            failover_timeout: Duration::from_millis(3000),
            ready_timeout: Duration::from_secs(30),
            tls: None,
            proxied: false,
            extra: Vec::new(),
        }
    }
}

impl SentinelConfig {
    fn validate(&self) -> Result<(), LabError> {
        let invalid = |msg: String| Err(LabError::InvalidConfig(msg));
        if self.sentinels == 0 {
            return invalid("SentinelConfig::sentinels must be >= 1".into());
        }
        if self.quorum == 0 || self.quorum > self.sentinels {
            return invalid(format!(
                "SentinelConfig::quorum must be in 1..={}, got {}",
                self.sentinels, self.quorum
            ));
        }
        if self.down_after < Duration::from_millis(1)
            || self.failover_timeout < Duration::from_millis(1)
        {
            return invalid(
                "SentinelConfig::down_after and failover_timeout must be >= 1 ms".into(),
            );
        }
        if self.ready_timeout.is_zero() {
            return invalid("SentinelConfig::ready_timeout must be > 0".into());
        }
        if self.proxied && self.tls.is_some() {
            return invalid(
                "SentinelConfig::proxied cannot be combined with tls (the proxy speaks RESP only)"
                    .into(),
            );
        }
        let name_ok = !self.master_name.is_empty()
            && self
                .master_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return invalid(format!(
                "SentinelConfig::master_name must be non-empty [A-Za-z0-9._-], got {:?}",
                self.master_name
            ));
        }
        Ok(())
    }
}

/// A real Sentinel deployment on loopback: one master, replicas, and sentinels that agree.
///
/// # Behavior
/// - [`start`](Self::start) returns once the replicas are in sync and every sentinel reports
///   the initial master, sees the other sentinels and knows every replica.
/// - `servers()[0]` is the initial master; after a failover, ask [`master_addr`](Self::master_addr).
/// - Dropping it kills every process.
/// - Timing (measured): ready in ~2.3 s (sentinels discover each other through 2 s hello
///   messages); with the default `down_after` a failover completes ~2.3 s after SIGKILL of the
///   master. A restarted old master is turned into a replica by the sentinels only after ~8 s
///   (Sentinel's fixed grace period), so wait on its `role` rather than assuming it.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), redis_lab::LabError> {
/// use std::time::Duration;
/// let mut topology = redis_lab::SentinelTopology::start(Default::default()).await?;
/// let old = topology.master_addr().await?;
/// topology.server_by_addr_mut(old).unwrap().kill()?;
/// let new = topology.wait_for_new_master(old, Duration::from_secs(30)).await?;
/// assert_ne!(old, new);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SentinelTopology {
    master_name: String,
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    /// With [`SentinelConfig::proxied`]: the proxy of each data server, by its address.
    proxies: Vec<(SocketAddr, FaultProxy)>,
}

impl SentinelTopology {
    /// Starts the master, the replicas and the sentinels, and waits until they agree.
    ///
    /// # Errors
    /// [`LabError::InvalidConfig`], start errors of any process, [`LabError::Timeout`] if the
    /// topology does not converge within `ready_timeout`.
    pub async fn start(config: SentinelConfig) -> Result<Self, LabError> {
        config.validate()?;
        crate::require_binaries(true)?;
        let poll_for = |what: &str| Poll::new(what.to_owned(), config.ready_timeout);

        let data_config = |own: &[(&str, String)]| {
            let mut server = ServerConfig {
                tls: config.tls.clone(),
                ..topology_server_config(own)
            };
            server.extra.extend(config.extra.iter().cloned());
            server
        };
        let mut proxies = Vec::new();
        // Each proxy first (its port is announced), pointed at its server once it is up.
        let master_proxy = if config.proxied {
            Some(FaultProxy::start("127.0.0.1:1".parse().expect("an address")).await?)
        } else {
            None
        };
        let announce = |proxy: &Option<FaultProxy>| {
            proxy
                .as_ref()
                .map(|p| ("replica-announce-port", p.addr().port().to_string()))
        };
        let master_extra: Vec<_> = announce(&master_proxy).into_iter().collect();
        let master = RedisServer::start_with(data_config(&master_extra)).await?;
        // Where the master is announced: its proxy, if any.
        let master_port = match master_proxy {
            Some(proxy) => {
                proxy.set_upstream(master.addr());
                let port = proxy.addr().port();
                proxies.push((master.addr(), proxy));
                port
            }
            None => master.port(),
        };
        let mut servers = vec![master];
        for _ in 0..config.replicas {
            let replicaof = format!("127.0.0.1 {master_port}");
            let mut extra = vec![("replicaof", replicaof)];
            let proxy = if config.proxied {
                let proxy = FaultProxy::start(servers[0].addr()).await?;
                extra.push(("replica-announce-port", proxy.addr().port().to_string()));
                Some(proxy)
            } else {
                None
            };
            let replica = RedisServer::start_with(data_config(&extra)).await?;
            if let Some(proxy) = proxy {
                proxy.set_upstream(replica.addr());
                proxies.push((replica.addr(), proxy));
            }
            servers.push(replica);
        }
        let mut topology = Self {
            master_name: config.master_name.clone(),
            servers,
            sentinels: Vec::new(),
            proxies,
        };
        topology
            .wait_replication(&poll_for("the replicas to sync with the master"))
            .await?;

        let name = &config.master_name;
        for _ in 0..config.sentinels {
            let launch = Launch {
                kind: Kind::Sentinel,
                port: None,
                cluster_bus: false,
                announce_bus_port: false,
                password: None,
                directives: vec![
                    format!(
                        "sentinel monitor {name} 127.0.0.1 {master_port} {}",
                        config.quorum
                    ),
                    format!(
                        "sentinel down-after-milliseconds {name} {}",
                        config.down_after.as_millis()
                    ),
                    format!(
                        "sentinel failover-timeout {name} {}",
                        config.failover_timeout.as_millis()
                    ),
                    format!("sentinel parallel-syncs {name} 1"),
                ],
                start_timeout: Duration::from_secs(10),
                tls: config.tls.clone(),
            };
            topology.sentinels.push(RedisServer::launch(launch).await?);
        }
        topology
            .wait_agreement(
                &poll_for("the sentinels to agree on the topology"),
                config.replicas,
            )
            .await?;
        Ok(topology)
    }

    async fn wait_replication(&self, poll: &Poll) -> Result<(), LabError> {
        loop {
            let mut pending = Vec::new();
            for replica in &self.servers[1..] {
                let status = replica
                    .info_field("replication", "master_link_status")
                    .await
                    .unwrap_or_else(|e| e.to_string());
                if status != "up" {
                    pending.push(format!("{}: master_link_status {status}", replica.addr()));
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            poll.wait(pending.join("; ")).await?;
        }
    }

    async fn wait_agreement(&self, poll: &Poll, replicas: usize) -> Result<(), LabError> {
        // Where the sentinels know the master: its proxy, with `proxied`.
        let master = self.servers[0].addr();
        let master = self.proxy_of(master).map_or(master, FaultProxy::addr);
        let others = self.sentinels.len() - 1;
        loop {
            let mut pending = Vec::new();
            for sentinel in &self.sentinels {
                if let Err(why) = self
                    .sentinel_agrees(sentinel, master, others, replicas)
                    .await
                {
                    pending.push(format!("sentinel {}: {why}", sentinel.addr()));
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            poll.wait(pending.join("; ")).await?;
        }
    }

    async fn sentinel_agrees(
        &self,
        sentinel: &RedisServer,
        master: SocketAddr,
        others: usize,
        replicas: usize,
    ) -> Result<(), String> {
        let reported = sentinel_master_addr(sentinel, &self.master_name)
            .await
            .map_err(|e| e.to_string())?;
        if reported != Some(master) {
            return Err(format!("reports master {reported:?}"));
        }
        let fields: Vec<String> = sentinel
            .query(redis::cmd("SENTINEL").arg("MASTER").arg(&self.master_name))
            .await
            .map_err(|e| e.to_string())?;
        let fields = pairs(fields);
        let seen_sentinels = fields.get("num-other-sentinels").map(String::as_str);
        let seen_replicas = fields.get("num-slaves").map(String::as_str);
        if seen_sentinels != Some(others.to_string().as_str())
            || seen_replicas != Some(replicas.to_string().as_str())
        {
            return Err(format!(
                "num-other-sentinels {seen_sentinels:?}, num-slaves {seen_replicas:?}"
            ));
        }
        let known: Vec<Vec<String>> = sentinel
            .query(
                redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(&self.master_name),
            )
            .await
            .map_err(|e| e.to_string())?;
        for replica in known.into_iter().map(pairs) {
            let flags = replica.get("flags").cloned().unwrap_or_default();
            if flags != "slave" {
                return Err(format!(
                    "replica {:?} has flags {flags}",
                    replica.get("name")
                ));
            }
        }
        Ok(())
    }

    /// With [`SentinelConfig::proxied`], the proxy in front of the server at `addr` (its own
    /// address, as [`servers`](Self::servers) gives it).
    pub fn proxy_of(&self, addr: SocketAddr) -> Option<&FaultProxy> {
        self.proxies
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, p)| p)
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The sentinels' addresses (for a sentinel client).
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(RedisServer::addr).collect()
    }

    /// The sentinel processes.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The sentinel processes, to stop or kill them.
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }

    /// The data servers; index 0 is the initial master.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The data servers, to stop, kill or restart them.
    pub fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.servers
    }

    /// The data server listening on `addr`.
    pub fn server_by_addr_mut(&mut self, addr: SocketAddr) -> Option<&mut RedisServer> {
        self.servers.iter_mut().find(|s| s.addr() == addr)
    }

    /// The master address the reachable sentinels report now (the most common answer).
    ///
    /// # Errors
    /// [`LabError::Topology`] if no sentinel answers with an address.
    pub async fn master_addr(&self) -> Result<SocketAddr, LabError> {
        let reports = self.reports().await;
        let mut votes: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for addr in reports
            .iter()
            .filter_map(|r| r.as_ref().ok().copied().flatten())
        {
            *votes.entry(addr).or_default() += 1;
        }
        votes
            .into_iter()
            .max_by_key(|&(_, count)| count)
            .map(|(addr, _)| addr)
            .ok_or_else(|| {
                LabError::Topology(format!(
                    "no sentinel reports a master for {}: {reports:?}",
                    self.master_name
                ))
            })
    }

    /// Every running sentinel's answer to `SENTINEL GET-MASTER-ADDR-BY-NAME`.
    async fn reports(&self) -> Vec<Result<Option<SocketAddr>, String>> {
        let mut reports = Vec::new();
        for sentinel in &self.sentinels {
            reports.push(
                sentinel_master_addr(sentinel, &self.master_name)
                    .await
                    .map_err(|e| e.to_string()),
            );
        }
        reports
    }

    /// Waits until every reachable sentinel reports the same master, other than `old`, and that
    /// server says `role:master`; returns its address.
    ///
    /// # Errors
    /// [`LabError::Timeout`] with the last sentinel reports.
    pub async fn wait_for_new_master(
        &self,
        old: SocketAddr,
        timeout: Duration,
    ) -> Result<SocketAddr, LabError> {
        let poll = Poll::new(format!("a master other than {old}"), timeout)
            .every(Duration::from_millis(50));
        loop {
            let reports = self.reports().await;
            let answers: Vec<Option<SocketAddr>> = reports
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            let candidate = answers.first().copied().flatten();
            if let Some(new) = candidate.filter(|&new| new != old)
                && answers.iter().all(|&a| a == Some(new))
            {
                let role = match self.servers.iter().find(|s| s.addr() == new) {
                    Some(server) => server
                        .info_field("replication", "role")
                        .await
                        .unwrap_or_else(|e| e.to_string()),
                    None => format!("{new} is not a server of this topology"),
                };
                if role == "master" {
                    return Ok(new);
                }
                poll.wait(format!("{new} reports role {role}")).await?;
                continue;
            }
            poll.wait(format!("sentinel reports {reports:?}")).await?;
        }
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME` on one sentinel.
async fn sentinel_master_addr(
    sentinel: &RedisServer,
    name: &str,
) -> Result<Option<SocketAddr>, LabError> {
    let reply: Option<Vec<String>> = sentinel
        .query(
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(name),
        )
        .await?;
    let Some(reply) = reply else {
        return Ok(None);
    };
    match reply.as_slice() {
        [ip, port] => {
            let port: u16 = port
                .parse()
                .map_err(|_| LabError::Topology(format!("sentinel reported port {port:?}")))?;
            if ip != "127.0.0.1" {
                return Err(LabError::Topology(format!("sentinel reported ip {ip}")));
            }
            Ok(Some(loopback(port)))
        }
        other => Err(LabError::Topology(format!(
            "unexpected GET-MASTER-ADDR-BY-NAME reply {other:?}"
        ))),
    }
}

/// A flat `[key, value, key, value, ...]` reply as a map.
fn pairs(flat: Vec<String>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut items = flat.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        map.insert(key, value);
    }
    map
}
