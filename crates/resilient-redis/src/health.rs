//! [`Client::health`]: one look at the server and at the client's own state.

use std::{fmt, time::Duration};

use tokio::time::Instant;

use crate::{
    Client,
    commands::info_field,
    routing::{Router, cluster::ClusterHealth},
};

/// The health of a client and of its server, as [`Client::health`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `true` when the server answered PING and INFO and the circuit breaker is not open.
    pub healthy: bool,
    /// Why the client is not healthy, when it is not.
    pub reason: Option<String>,
    /// PING round-trip time on the client's own connection.
    pub ping_rtt: Option<Duration>,
    /// `master` or `slave`, from `INFO replication`.
    pub role: Option<String>,
    /// `redis_version` from `INFO server`.
    pub server_version: Option<String>,
    /// `connected_clients` from `INFO clients`.
    pub connected_clients: Option<u64>,
    /// `used_memory` from `INFO memory`, in bytes.
    pub used_memory_bytes: Option<u64>,
    /// The circuit breaker's state (`closed`, `open`, `half_open`, or `disabled`).
    pub breaker: String,
    /// Live connections in the pool.
    pub connections_up: usize,
    /// Size of the pool.
    pub connections_total: usize,
    /// The last connection error the client saw, if any.
    pub last_error: Option<String>,
    /// With Sentinel, the master the client follows (`host:port`, `-` if none is known yet);
    /// `None` for a single server.
    pub master: Option<String>,
    /// With Sentinel, the replicas the sentinels report healthy (`host:port`); `None` for a
    /// single server.
    pub replicas: Option<Vec<String>>,
    /// With Sentinel, the sentinels the client knows (configured and discovered, `host:port`);
    /// `None` for a single server.
    pub sentinels: Option<Vec<String>>,
    /// With Redis Cluster, the cluster's state and nodes; `None` otherwise.
    pub cluster: Option<ClusterHealth>,
    /// Where the credentials come from: `static (the URL's)`, `file /path`, `token provider`,
    /// or what a custom provider says ([`CredentialsProvider::describe`]); never the secret.
    ///
    /// [`CredentialsProvider::describe`]: crate::credentials::CredentialsProvider::describe
    pub credentials: String,
    /// The connections' name ([`ClientConfig::client_name`](crate::ClientConfig::client_name)),
    /// if one is set.
    pub connection_name: Option<String>,
    /// Where reads go ([`ClientConfig::read_from`](crate::ClientConfig::read_from), as
    /// [`ReadFrom::parse`](crate::ReadFrom::parse) reads it).
    pub read_from: String,
    /// Read attempts sent to replicas since the client started (the others went to masters).
    pub replica_reads: u64,
    /// The adaptive throttle's local rejection probability now (see
    /// [`Client::throttle_probability`]); `None` when adaptive throttling is off.
    pub throttle_probability: Option<f64>,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "healthy:           {}",
            if self.healthy { "yes" } else { "no" }
        )?;
        if let Some(r) = &self.reason {
            writeln!(f, "reason:            {r}")?;
        }
        writeln!(f, "credentials:       {}", self.credentials)?;
        writeln!(f, "connection name:   {}", opt(&self.connection_name))?;
        writeln!(
            f,
            "reads:             {} ({} sent to replicas)",
            self.read_from, self.replica_reads
        )?;
        if let Some(p) = self.throttle_probability {
            writeln!(f, "throttle:          rejects {:.1} % locally", p * 100.0)?;
        }
        if let Some(cluster) = &self.cluster {
            writeln!(f, "breaker:           {}", self.breaker)?;
            writeln!(
                f,
                "connections:       {}/{} up",
                self.connections_up, self.connections_total
            )?;
            return write!(f, "{cluster}");
        }
        writeln!(
            f,
            "ping round-trip:   {}",
            self.ping_rtt
                .map(|d| format!("{:.3} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into())
        )?;
        writeln!(f, "role:              {}", opt(&self.role))?;
        writeln!(f, "server version:    {}", opt(&self.server_version))?;
        writeln!(
            f,
            "connected clients: {}",
            self.connected_clients
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        )?;
        writeln!(
            f,
            "used memory:       {}",
            self.used_memory_bytes
                .map(|n| format!("{n} bytes"))
                .unwrap_or_else(|| "-".into())
        )?;
        writeln!(f, "breaker:           {}", self.breaker)?;
        writeln!(
            f,
            "connections:       {}/{} up",
            self.connections_up, self.connections_total
        )?;
        write!(f, "last error:        {}", opt(&self.last_error))?;
        if let Some(master) = &self.master {
            write!(f, "\nmaster:            {master}")?;
        }
        if let Some(replicas) = &self.replicas {
            write!(f, "\nreplicas:          {}", list(replicas))?;
        }
        if let Some(sentinels) = &self.sentinels {
            write!(f, "\nsentinels:         {}", list(sentinels))?;
        }
        Ok(())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

impl Client {
    /// Looks at the server (PING, INFO) on the client's own connection and reports, with the
    /// breaker and pool state. Never retries; waits at most the connect timeout for a connection
    /// and twice the response timeout for each reply.
    ///
    /// For a cluster, the health of the cluster ([`Health::cluster`]: `CLUSTER INFO` and
    /// `CLUSTER NODES` from one node, and each node's breaker) decides `healthy`.
    pub async fn health(&self) -> Health {
        let (connections_up, connections_total) = self.connections();
        let breaker = self
            .breaker()
            .map(|b| b.state().as_str().to_owned())
            .unwrap_or_else(|| "disabled".to_owned());
        let mut health = Health {
            healthy: false,
            reason: None,
            ping_rtt: None,
            role: None,
            server_version: None,
            connected_clients: None,
            used_memory_bytes: None,
            breaker,
            connections_up,
            connections_total,
            last_error: self.pool().and_then(|p| p.last_error()),
            master: None,
            replicas: None,
            sentinels: None,
            cluster: None,
            credentials: crate::credentials::describe(self.config().credentials.as_ref()),
            connection_name: self.config().client_name.clone(),
            read_from: self.config().read_from.to_string(),
            replica_reads: self.stats().replica_reads,
            throttle_probability: self.throttle_probability(),
        };
        let pool = match self.router() {
            Router::Single(node) => node.pool.clone(),
            Router::Cluster(c) => {
                let cluster = c.health().await;
                health.breaker = "per node".to_owned();
                health.healthy = cluster.healthy;
                health.reason = cluster.reason.clone();
                health.cluster = Some(cluster);
                return health;
            }
        };
        if let Some(view) = pool.topology() {
            let addrs = |v: &[(String, u16)]| {
                v.iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect::<Vec<_>>()
            };
            health.master = Some(
                view.master
                    .map(|(h, p)| format!("{h}:{p}"))
                    .unwrap_or_else(|| "-".to_owned()),
            );
            health.replicas = Some(addrs(&view.replicas));
            health.sentinels = Some(addrs(&view.sentinels));
        }
        let config = self.config();
        let wait = config.response_timeout * 2;
        let lease = match pool
            .acquire(Some(Instant::now() + config.connect_timeout))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                health.reason = Some(e.to_string());
                return health;
            }
        };
        let mut conn = lease.conn;
        let started = Instant::now();
        match tokio::time::timeout(wait, conn.send_packed_command(&redis::cmd("PING"))).await {
            Ok(Ok(redis::Value::ServerError(e))) => {
                health.reason = Some(format!("PING answered {e}"));
                return health;
            }
            Ok(Ok(_)) => health.ping_rtt = Some(started.elapsed()),
            Ok(Err(e)) => {
                health.reason = Some(format!("PING failed: {e}"));
                return health;
            }
            Err(_) => {
                health.reason = Some(format!("no PING reply within {} ms", wait.as_millis()));
                return health;
            }
        }
        let mut info_cmd = redis::cmd("INFO");
        info_cmd
            .arg("server")
            .arg("clients")
            .arg("memory")
            .arg("replication");
        match tokio::time::timeout(wait, conn.send_packed_command(&info_cmd)).await {
            Ok(Ok(v)) => match redis::from_redis_value::<String>(v) {
                Ok(info) => {
                    health.role = info_field(&info, "role").map(str::to_owned);
                    health.server_version = info_field(&info, "redis_version").map(str::to_owned);
                    health.connected_clients =
                        info_field(&info, "connected_clients").and_then(|v| v.parse().ok());
                    health.used_memory_bytes =
                        info_field(&info, "used_memory").and_then(|v| v.parse().ok());
                }
                Err(e) => {
                    health.reason = Some(format!("INFO failed: {e}"));
                    return health;
                }
            },
            Ok(Err(e)) => {
                health.reason = Some(format!("INFO failed: {e}"));
                return health;
            }
            Err(_) => {
                health.reason = Some(format!("no INFO reply within {} ms", wait.as_millis()));
                return health;
            }
        }
        if health.breaker == "open" {
            health.reason = Some("the circuit breaker is open".into());
            return health;
        }
        health.healthy = true;
        health
    }
}
