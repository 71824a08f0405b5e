//! [`ClusterConfig`]: settings of a [`ClusterClient`](super::ClusterClient).

use std::{collections::HashMap, time::Duration};

use resilience::{AdaptiveThrottleConfig, Backoff, BreakerConfig, Jitter, RetryBudgetConfig};

use crate::{
    ClientConfig,
    config::{ErrorRule, TlsConfig, Transport},
    error::Error,
};

/// Configuration of a [`ClusterClient`](super::ClusterClient).
///
/// # Default
/// | setting | default | why |
/// |---|---|---|
/// | `urls` | `redis://127.0.0.1:7000` | seed nodes; one reachable seed is enough |
/// | `tls` | `None`: `rediss://` seeds verify the nodes against the system roots | see [`TlsConfig`] |
/// | `connect_timeout` | 1 s | |
/// | `response_timeout` | 1 s | a reply later than this fails the attempt as ambiguous |
/// | `deadline` | 5 s | total per call: covers a failover (about 2 to 3 s with `cluster-node-timeout 1000`) |
/// | `max_attempts` | 20 | attempts that reach a node; `CLUSTERDOWN` during a failover lasts about 1 s and is retried every 10 to 250 ms |
/// | `retry_backoff` | exponential 10 ms x2 up to 250 ms, full jitter | |
/// | `max_redirects` | 5 | `MOVED`/`ASK` hops within one attempt before it counts as a retryable failure |
/// | `budget` | 10 % of successes, 10 retries/s floor, 1000 tokens | as [`ClientConfig`] |
/// | `breaker` | per node: opens when 50 % of the node's last 1000 attempts within 10 s (at least 50) failed for the node's fault; open 2 s | as [`ClientConfig`], one per node |
/// | `min_refresh_interval` | 100 ms | at most ~10 slot-map refreshes per second per client, even while a node is down |
/// | `refresh_jitter` | 100 ms | each refresh waits a further random 0 to 100 ms, so clients do not refresh in step after a failover |
/// | `refresh_interval` | 10 s | background refresh when nothing happens |
/// | `tcp_keepalive` | 10 s | |
/// | `throttle_delay` | 100 ms | |
/// | `adaptive_throttle` | K = 2 over 10 s, per node | see [`ClientConfig::adaptive_throttle`]; one node refusing work does not throttle calls to the others |
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Seed nodes: `redis://[[user]:password@]host:port`, or `rediss://` for TLS (every node,
    /// with `tls-cluster yes`; all seeds must use the same scheme).
    pub urls: Vec<String>,
    /// Certificates for `rediss://` seeds (see [`ClientConfig::tls`]); an error with
    /// `redis://` seeds.
    pub tls: Option<TlsConfig>,
    /// Time allowed to open one connection to a node.
    pub connect_timeout: Duration,
    /// Time to wait for one reply before the attempt fails (ambiguous: it may have run).
    pub response_timeout: Duration,
    /// Total time for one call, waits, redirects and retries included.
    pub deadline: Duration,
    /// Attempts that reach a node, the first included. Waiting for a node and following a
    /// redirect are not attempts.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub retry_backoff: Backoff,
    /// Redirects (`MOVED`, `ASK`) followed within one attempt.
    pub max_redirects: u32,
    /// The retry budget shared by every clone of the client; `None` disables it.
    pub budget: Option<RetryBudgetConfig>,
    /// The circuit breaker of each node (one per node address); `None` disables them.
    pub breaker: Option<BreakerConfig>,
    /// Minimum time between two slot-map refreshes.
    pub min_refresh_interval: Duration,
    /// Random extra delay, from zero to this, before each refresh.
    pub refresh_jitter: Duration,
    /// Refresh the slot map this often even when nothing suggests a change; `None` disables.
    pub refresh_interval: Option<Duration>,
    /// TCP keepalive idle time; `None` leaves the system default.
    pub tcp_keepalive: Option<Duration>,
    /// Minimum wait before retrying after a `THROTTLED` reply.
    pub throttle_delay: Duration,
    /// Adaptive client-side throttling, one per node (see
    /// [`ClientConfig::adaptive_throttle`]); `None` disables it.
    pub adaptive_throttle: Option<AdaptiveThrottleConfig>,
    /// Extra rules for server error codes (see [`ClientConfig::error_rules`]).
    pub error_rules: HashMap<String, ErrorRule>,
    /// Seed for the jitter of retries and refreshes (deterministic tests); `None` seeds from
    /// the operating system.
    pub rng_seed: Option<u64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let client = ClientConfig::default();
        ClusterConfig {
            urls: vec!["redis://127.0.0.1:7000".to_owned()],
            tls: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
            max_attempts: 20,
            retry_backoff: Backoff::exponential(
                Duration::from_millis(10),
                2.0,
                Duration::from_millis(250),
            )
            .expect("valid constant backoff")
            .with_jitter(Jitter::Full),
            max_redirects: 5,
            budget: client.budget,
            breaker: client.breaker.map(|b| BreakerConfig {
                name: "resilient_redis_cluster".into(),
                ..b
            }),
            min_refresh_interval: Duration::from_millis(100),
            refresh_jitter: Duration::from_millis(100),
            refresh_interval: Some(Duration::from_secs(10)),
            tcp_keepalive: client.tcp_keepalive,
            throttle_delay: client.throttle_delay,
            adaptive_throttle: client.adaptive_throttle,
            error_rules: HashMap::new(),
            rng_seed: None,
        }
    }
}

impl ClusterConfig {
    /// The defaults with these seed URLs, checked.
    ///
    /// ```
    /// let config = resilient_redis::ClusterConfig::from_urls(&["redis://127.0.0.1:7000"])?;
    /// assert_eq!(config.max_redirects, 5);
    /// assert!(resilient_redis::ClusterConfig::from_urls(&[] as &[&str]).is_err());
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    pub fn from_urls<S: AsRef<str>>(urls: &[S]) -> Result<Self, Error> {
        let config = ClusterConfig {
            urls: urls.iter().map(|u| u.as_ref().to_owned()).collect(),
            ..ClusterConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), Error> {
        if self.urls.is_empty() {
            return Err(Error::config("urls: at least one seed node is needed"));
        }
        if let Some(t) = &self.adaptive_throttle {
            t.validate()
                .map_err(|e| Error::config(format!("adaptive_throttle: {e}")))?;
        }
        let mut schemes = Vec::new();
        for url in &self.urls {
            let info = ClientConfig {
                url: url.clone(),
                tls: self.tls.clone(),
                ..ClientConfig::default()
            }
            .connection_info()?;
            schemes.push(Transport::of(info.addr()).is_tls());
        }
        if schemes.contains(&true) && schemes.contains(&false) {
            return Err(Error::config(
                "urls: mixes redis:// and rediss:// seeds; a cluster is all TLS or all plain",
            ));
        }
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(Error::config(format!("{name} must be greater than zero")))
            } else {
                Ok(())
            }
        };
        positive("connect_timeout", self.connect_timeout)?;
        positive("response_timeout", self.response_timeout)?;
        positive("deadline", self.deadline)?;
        positive("min_refresh_interval", self.min_refresh_interval)?;
        if let Some(d) = self.refresh_interval {
            positive("refresh_interval", d)?;
        }
        if let Some(d) = self.tcp_keepalive {
            positive("tcp_keepalive", d)?;
        }
        if self.max_attempts == 0 {
            return Err(Error::config("max_attempts must be at least 1"));
        }
        Ok(())
    }

    /// The settings the shared reply classification reads.
    pub(super) fn reply_rules(&self) -> ClientConfig {
        ClientConfig {
            throttle_delay: self.throttle_delay,
            error_rules: self.error_rules.clone(),
            ..ClientConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn config_is_validated() {
        assert!(ClusterConfig::from_urls(&["redis://127.0.0.1:7000"]).is_ok());
        let err = ClusterConfig::from_urls(&["http://x"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(ClusterConfig::from_urls(&["rediss://a:1", "rediss://b:2"]).is_ok());
        let err = ClusterConfig::from_urls(&["rediss://a:1", "redis://b:2"]).unwrap_err();
        assert!(err.to_string().contains("rediss://"), "{err}");
        let c = ClusterConfig {
            tls: Some(TlsConfig::default()),
            ..ClusterConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("rediss://"));
        let c = ClusterConfig {
            max_attempts: 0,
            ..ClusterConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_attempts")
        );
        let c = ClusterConfig {
            min_refresh_interval: Duration::ZERO,
            ..ClusterConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("min_refresh")
        );
    }
}
