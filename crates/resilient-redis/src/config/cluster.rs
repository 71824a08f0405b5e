//! The Redis Cluster part of a [`ClientConfig`]: [`ClusterConfig`].

use std::time::Duration;

use super::ClientConfig;
use crate::error::Error;

/// The Redis Cluster settings of a [`ClientConfig`] (set by a `redis+cluster://` URL).
///
/// Everything else (timeouts, deadline, retries, budget, breaker, throttling, TLS, TCP) comes from
/// the [`ClientConfig`] and means the same as for one server; the breaker and the adaptive
/// throttle are kept per node, so a failing shard does not hold up the others.
///
/// # Default
/// | setting | default | why |
/// |---|---|---|
/// | `seeds` | none (from the URL) | one reachable seed is enough; the others are tried in turn |
/// | `max_redirects` | 5 | `MOVED`/`ASK` hops within one attempt before it counts as a retryable failure |
/// | `min_refresh_interval` | 100 ms | at most ~10 slot-map refreshes per second per client, even while a node is down |
/// | `refresh_jitter` | 100 ms | each refresh waits a further random 0 to 100 ms, so clients do not refresh in step after a failover |
/// | `refresh_interval` | 10 s | background refresh when nothing happens |
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Seed nodes, `(host, port)`: the slot map is asked of them until one answers.
    pub seeds: Vec<(String, u16)>,
    /// Redirects (`MOVED`, `ASK`) followed within one attempt.
    pub max_redirects: u32,
    /// Minimum time between two slot-map refreshes.
    pub min_refresh_interval: Duration,
    /// Random extra delay, from zero to this, before each refresh.
    pub refresh_jitter: Duration,
    /// Refresh the slot map this often even when nothing suggests a change; `None` disables.
    pub refresh_interval: Option<Duration>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            max_redirects: 5,
            min_refresh_interval: Duration::from_millis(100),
            refresh_jitter: Duration::from_millis(100),
            refresh_interval: Some(Duration::from_secs(10)),
        }
    }
}

impl ClusterConfig {
    /// Checks the cluster settings of `config`; the error names the first invalid one.
    pub(super) fn validate(&self, config: &ClientConfig) -> Result<(), Error> {
        if self.seeds.is_empty() {
            return Err(Error::config(
                "cluster.seeds must name at least one seed node",
            ));
        }
        if config.sentinel.is_some() {
            return Err(Error::config(
                "cluster and sentinel are both set: a deployment is one or the other",
            ));
        }
        if self.min_refresh_interval.is_zero() {
            return Err(Error::config(
                "cluster.min_refresh_interval must be greater than zero",
            ));
        }
        if self.refresh_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                "cluster.refresh_interval must be greater than zero",
            ));
        }
        Ok(())
    }
}

impl ClientConfig {
    /// A configuration for the cluster of these seed URLs (`redis://host:port` or
    /// `rediss://host:port`, all with the same scheme and credentials): the URL
    /// `redis+cluster://host1:port1,host2:port2` says the same in one string.
    ///
    /// ```
    /// let config = resilient_redis::ClientConfig::cluster(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])?;
    /// assert_eq!(config.url, "redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
    /// assert_eq!(config.cluster.unwrap().seeds.len(), 2);
    /// assert!(resilient_redis::ClientConfig::cluster(&[] as &[&str]).is_err());
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    pub fn cluster<S: AsRef<str>>(urls: &[S]) -> Result<ClientConfig, Error> {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        let mut hosts = Vec::new();
        let mut first: Option<(bool, String, String)> = None;
        for url in urls {
            let url = url.as_ref().trim();
            let shown = super::redact_url(url);
            let invalid = |why: &str| Error::config(format!("invalid seed URL {shown:?}: {why}"));
            let (tls, rest) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
                (Some(rest), _) => (false, rest),
                (None, Some(rest)) => (true, rest),
                _ => return Err(invalid("expected redis://host:port or rediss://host:port")),
            };
            let info = url
                .into_connection_info()
                .map_err(|e| invalid(&e.to_string()))?;
            let (host, port) = match info.addr() {
                ConnectionAddr::Tcp(h, p)
                | ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => (h.clone(), *p),
                _ => return Err(invalid("expected a TCP address")),
            };
            let credentials = rest
                .split_once('/')
                .map_or(rest, |(authority, _)| authority)
                .rsplit_once('@')
                .map(|(c, _)| format!("{c}@"))
                .unwrap_or_default();
            let fragment = url
                .split_once('#')
                .map(|(_, f)| format!("#{f}"))
                .unwrap_or_default();
            match &first {
                None => first = Some((tls, credentials, fragment)),
                Some((t, c, _)) if *t != tls || *c != credentials => {
                    return Err(invalid(
                        "every seed must have the same scheme and credentials (a cluster is all TLS or all plain)",
                    ));
                }
                Some(_) => {}
            }
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            hosts.push(format!("{host}:{port}"));
        }
        let Some((tls, credentials, fragment)) = first else {
            return Err(Error::config("cluster: at least one seed URL is needed"));
        };
        let scheme = if tls { "rediss" } else { "redis" };
        ClientConfig::from_url(&format!(
            "{scheme}+cluster://{credentials}{}{fragment}",
            hosts.join(",")
        ))
    }
}
