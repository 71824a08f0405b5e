//! [`Client::health`](crate::Client::health) of a cluster: the cluster's state and nodes, from one node.

use std::fmt;

use redis::{Cmd, RedisError};

use super::ClusterRouter;

impl ClusterRouter {
    /// The health of the cluster: `CLUSTER INFO` and `CLUSTER NODES` from one node, and the
    /// client's breakers.
    pub(crate) async fn health(&self) -> ClusterHealth {
        // A node the client has a live connection to, else a random one through redis-rs (a
        // connection to a dead node fails, the next try goes elsewhere).
        let query = |cmd: Cmd| async move {
            let wait = self.config.response_timeout * 2;
            let mut last = String::from("no node answered");
            for node in self.nodes() {
                let Some(mut lease) = node.pool.try_acquire_for(false) else {
                    continue;
                };
                match tokio::time::timeout(wait, lease.conn.send_packed_command(&cmd)).await {
                    Ok(Ok(v)) => match redis::from_redis_value::<String>(v) {
                        Ok(text) => return Ok(text),
                        Err(e) => last = RedisError::from(e).to_string(),
                    },
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "timed out".to_owned(),
                }
            }
            for _ in 0..3 {
                let sent = self.keyless.to_any_node(cmd.clone());
                match tokio::time::timeout(wait, sent).await {
                    Ok(Ok(v)) => {
                        return redis::from_redis_value::<String>(v)
                            .map_err(|e| RedisError::from(e).to_string());
                    }
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "timed out".to_owned(),
                }
            }
            Err(last)
        };
        let mut health = ClusterHealth {
            healthy: false,
            reason: None,
            cluster_state: None,
            nodes: Vec::new(),
        };
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        match query(info).await {
            Ok(text) => {
                health.cluster_state =
                    crate::commands::info_field(&text, "cluster_state").map(str::to_owned)
            }
            Err(e) => health.reason = Some(format!("CLUSTER INFO: {e}")),
        }
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        match query(nodes).await {
            Ok(text) => health.nodes = parse_cluster_nodes(&text),
            Err(e) => {
                health.reason.get_or_insert(format!("CLUSTER NODES: {e}"));
            }
        }
        for node in &mut health.nodes {
            let known = self.node_if_known(&node.addr);
            if let Some(known) = &known {
                node.rtt_us = known.pool.measured().rtt_us();
                node.lagging = node.role == "replica" && known.pool.measured().lagging();
            }
            let breaker = known.and_then(|n| n.breaker.clone());
            node.breaker = match breaker {
                Some(b) => b.state().as_str().to_owned(),
                None if self.config.breaker.is_some() => "closed".into(),
                None => "disabled".into(),
            };
        }
        if health.reason.is_none() {
            if health.cluster_state.as_deref() != Some("ok") {
                health.reason = Some(format!(
                    "cluster_state is {}",
                    health.cluster_state.as_deref().unwrap_or("unknown")
                ));
            } else if let Some(n) = health.nodes.iter().find(|n| n.breaker == "open") {
                health.reason = Some(format!("circuit breaker of {} is open", n.addr));
            } else if let Some(n) = health.nodes.iter().find(|n| n.failing()) {
                health.reason = Some(format!("node {} is failing", n.addr));
            }
        }
        health.healthy = health.reason.is_none();
        health
    }
}

/// The health of a cluster, as [`Client::health`](crate::Client::health) found it (see
/// [`Health::cluster`](crate::Health::cluster)).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterHealth {
    /// `true` when `cluster_state` is `ok`, no node is flagged failing and no breaker is open.
    pub healthy: bool,
    /// Why the cluster is not healthy, when it is not.
    pub reason: Option<String>,
    /// `cluster_state` from `CLUSTER INFO` (`ok` or `fail`).
    pub cluster_state: Option<String>,
    /// Every node, from `CLUSTER NODES`.
    pub nodes: Vec<ClusterNodeHealth>,
}

/// One node of [`ClusterHealth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeHealth {
    /// Node id.
    pub id: String,
    /// `host:port` for clients.
    pub addr: String,
    /// `master` or `replica`.
    pub role: String,
    /// The flags of `CLUSTER NODES` (`myself`, `master`, `slave`, `fail?`, `fail`, ...).
    pub flags: Vec<String>,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// `connected` or `disconnected` (the cluster bus link, as the answering node sees it).
    pub link_state: String,
    /// Number of slots the node serves.
    pub slots: u32,
    /// The client's circuit breaker for this node (`closed`, `open`, `half_open`, `disabled`).
    pub breaker: String,
    /// The node's round trip as the client measures it, in microseconds (with
    /// [`ReadFrom::Nearest`](crate::ReadFrom::Nearest) or
    /// [`max_replica_lag`](crate::ClientConfig::max_replica_lag); `None` otherwise, or not
    /// measured yet).
    pub rtt_us: Option<u32>,
    /// A replica further behind its master than
    /// [`max_replica_lag`](crate::ClientConfig::max_replica_lag) (not read from).
    pub lagging: bool,
}

impl ClusterNodeHealth {
    /// Whether the node is flagged failing (`fail` or `fail?`).
    pub fn failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNodeHealth> {
    let mut nodes: Vec<ClusterNodeHealth> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split(['@', ',']).next().unwrap_or(f[1]).to_owned();
            let flags: Vec<String> = f[2].split(',').map(str::to_owned).collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                        (Ok(a), Ok(b)) if b >= a => b - a + 1,
                        _ => 0,
                    },
                    None => u32::from(s.parse::<u32>().is_ok()),
                })
                .sum();
            Some(ClusterNodeHealth {
                id: f[0].to_owned(),
                addr,
                role: if flags.iter().any(|x| x == "master") {
                    "master".into()
                } else {
                    "replica".into()
                },
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                flags,
                link_state: f[7].to_owned(),
                slots,
                breaker: String::new(),
                rtt_us: None,
                lagging: false,
            })
        })
        .collect();
    nodes.sort_by(|a, b| b.role.cmp(&a.role).reverse().then(a.addr.cmp(&b.addr)));
    nodes
}

/// The cluster's state and its nodes (what [`Health`](crate::Health) shows after its own lines).
impl fmt::Display for ClusterHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cluster_state: {}",
            self.cluster_state.as_deref().unwrap_or("-")
        )?;
        write!(f, "nodes:         {}", self.nodes.len())?;
        for n in &self.nodes {
            write!(
                f,
                "\n  {:<21} {:<7} slots {:>5}  link {:<12} breaker {:<9} flags {}",
                n.addr,
                n.role,
                n.slots,
                n.link_state,
                n.breaker,
                n.flags.join(",")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_parsed() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238315232 5 disconnected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        let m = nodes.iter().find(|n| n.addr == "127.0.0.1:30002").unwrap();
        assert_eq!((m.role.as_str(), m.slots), ("master", 5462));
        let me = nodes.iter().find(|n| n.addr == "127.0.0.1:30001").unwrap();
        assert_eq!(me.slots, 5461);
        let r = nodes.iter().find(|n| n.addr == "127.0.0.1:30004").unwrap();
        assert_eq!(r.role, "replica");
        assert_eq!(r.master_id.as_deref(), Some("e7d1"));
        assert!(nodes.iter().any(|n| n.failing()));
    }
}
