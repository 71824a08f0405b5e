//! Configuration from `RESILIENT_REDIS_*` environment variables.

use std::{sync::Arc, time::Duration};

use resilience::AdaptiveThrottleConfig;

use super::{ClientConfig, Durability, ReadFrom, TlsConfig};
use crate::{credentials::PasswordFile, error::Error};

/// The environment variables [`ClientConfig::from_env`] reads.
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "RESILIENT_REDIS_URL",
        "server URL: redis://, rediss:// (TLS), redis+sentinel:// or rediss+sentinel://; \
         unset: redis://127.0.0.1:6379, said in an info log line",
    ),
    (
        "RESILIENT_REDIS_PASSWORD_FILE",
        "file holding the password, read before every connection (rotated secrets); the user \
         name is the URL's (redis://app@host:6379)",
    ),
    (
        "RESILIENT_REDIS_TRACE_KEYS",
        "on: record each command's keys (never values) in its span (default off)",
    ),
    (
        "RESILIENT_REDIS_SPAN_LEVEL",
        "level of each call's span: trace, debug (default), info, warn, error, or off",
    ),
    (
        "RESILIENT_REDIS_CLIENT_NAME",
        "connection name shown by CLIENT LIST (CLIENT SETNAME), no spaces",
    ),
    (
        "RESILIENT_REDIS_TLS_CA_FILE",
        "PEM file of the CA(s) that sign the server certificates (instead of the system roots)",
    ),
    (
        "RESILIENT_REDIS_TLS_CERT_FILE",
        "PEM client certificate for mutual TLS (with RESILIENT_REDIS_TLS_KEY_FILE)",
    ),
    (
        "RESILIENT_REDIS_TLS_KEY_FILE",
        "PEM private key of the client certificate",
    ),
    (
        "RESILIENT_REDIS_SENTINEL_TLS",
        "TLS to the sentinels themselves: on | off (default: on with rediss+sentinel://)",
    ),
    (
        "RESILIENT_REDIS_SENTINEL_PASSWORD",
        "password of the sentinels (with a redis+sentinel:// URL)",
    ),
    (
        "RESILIENT_REDIS_READ_FROM",
        "where reads go (Sentinel, Cluster): master | master-preferred | replica-preferred | \
         replica | nearest | zone:NAME",
    ),
    (
        "RESILIENT_REDIS_MAX_REPLICA_LAG_MS",
        "with replica reads, skip replicas further behind their master than this, ms",
    ),
    (
        "RESILIENT_REDIS_ZONES",
        "the nodes' zones, for zone:NAME: host:port=ZONE or (Cluster) NODE_ID=ZONE, comma-separated",
    ),
    (
        "RESILIENT_REDIS_REQUIRE_PRIMARY",
        "a single server's URL is a primary endpoint (follow a failover behind the name): on \
         (default) | off (a replica's address, on purpose)",
    ),
    (
        "RESILIENT_REDIS_DURABILITY",
        "when a write is acknowledged: fast (default) | replicated (every replica confirms) | \
         replicated:N",
    ),
    (
        "RESILIENT_REDIS_DURABILITY_TIMEOUT_MS",
        "with replicated durability, how long the server waits for replicas (WAIT), ms",
    ),
    ("RESILIENT_REDIS_CONNECT_TIMEOUT_MS", "connect timeout, ms"),
    (
        "RESILIENT_REDIS_RESPONSE_TIMEOUT_MS",
        "response timeout, ms",
    ),
    (
        "RESILIENT_REDIS_DEADLINE_MS",
        "total deadline of one call, ms",
    ),
    ("RESILIENT_REDIS_MAX_ATTEMPTS", "attempts per call, >= 1"),
    ("RESILIENT_REDIS_POOL_SIZE", "multiplexed connections, >= 1"),
    ("RESILIENT_REDIS_BUDGET", "retry budget: on | off"),
    (
        "RESILIENT_REDIS_BUDGET_RATIO",
        "retry budget: tokens per success, 0..=1",
    ),
    ("RESILIENT_REDIS_BREAKER", "circuit breaker: on | off"),
    (
        "RESILIENT_REDIS_THROTTLE_K",
        "adaptive throttling: K >= 1 (requests allowed per accepted request), or off",
    ),
    (
        "RESILIENT_REDIS_BREAKER_FAILURES",
        "circuit breaker: consecutive failures to open",
    ),
    (
        "RESILIENT_REDIS_BREAKER_OPEN_MS",
        "circuit breaker: time open before probing, ms",
    ),
];

impl ClientConfig {
    /// The defaults, overridden by the environment variables listed in [`ENV_VARS`]. A variable
    /// that is set but invalid is an error naming it.
    ///
    /// `RESILIENT_REDIS_URL` may be left unset: the server is then the default,
    /// `redis://127.0.0.1:6379`, and an `info` event of `tracing` says so (a deployment that
    /// forgot the variable shows it in its log, and its connect error names that URL).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ClientConfig::from_env`], reading variables through `lookup` (for tests and for
    /// other configuration sources).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut c = ClientConfig::default();
        if lookup("RESILIENT_REDIS_URL").is_none() {
            tracing::info!(
                url = %c.url,
                "RESILIENT_REDIS_URL is not set: using the default server {}",
                c.url
            );
        }
        let ms = |name: &str| -> Result<Option<Duration>, Error> {
            match lookup(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(|n| Some(Duration::from_millis(n)))
                    .ok_or_else(|| {
                        Error::config(format!(
                            "{name}={v:?}: expected a positive whole number of milliseconds"
                        ))
                    }),
            }
        };
        let count = |name: &str| -> Result<Option<u32>, Error> {
            match lookup(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(Some)
                    .ok_or_else(|| {
                        Error::config(format!("{name}={v:?}: expected a whole number >= 1"))
                    }),
            }
        };
        let switch = |name: &str| -> Result<Option<bool>, Error> {
            match lookup(name).as_deref().map(str::trim) {
                None => Ok(None),
                Some("on" | "true" | "1" | "yes") => Ok(Some(true)),
                Some("off" | "false" | "0" | "no") => Ok(Some(false)),
                Some(v) => Err(Error::config(format!("{name}={v:?}: expected on or off"))),
            }
        };
        if let Some(url) = lookup("RESILIENT_REDIS_URL") {
            let parsed = ClientConfig::from_url(&url)?;
            c.sentinel = parsed.sentinel;
            c.cluster = parsed.cluster;
            c.url = url;
        }
        if let Some(password) = lookup("RESILIENT_REDIS_SENTINEL_PASSWORD") {
            match c.sentinel.as_mut() {
                Some(s) => s.sentinel_password = Some(password),
                None => {
                    return Err(Error::config(
                        "RESILIENT_REDIS_SENTINEL_PASSWORD is set but RESILIENT_REDIS_URL is not a redis+sentinel:// URL",
                    ));
                }
            }
        }
        if let Some(on) = switch("RESILIENT_REDIS_SENTINEL_TLS")? {
            match c.sentinel.as_mut() {
                Some(s) => s.sentinel_tls = on,
                None => {
                    return Err(Error::config(
                        "RESILIENT_REDIS_SENTINEL_TLS is set but RESILIENT_REDIS_URL is not a redis+sentinel:// or rediss+sentinel:// URL",
                    ));
                }
            }
        }
        if let Some(v) = lookup("RESILIENT_REDIS_SPAN_LEVEL") {
            c.span_level = match v.trim().to_ascii_lowercase().as_str() {
                "off" | "none" => None,
                level => Some(level.parse().map_err(|_| {
                    Error::config(format!(
                        "RESILIENT_REDIS_SPAN_LEVEL={v:?}: expected trace, debug, info, warn, error or off"
                    ))
                })?),
            };
        }
        if let Some(on) = switch("RESILIENT_REDIS_TRACE_KEYS")? {
            c.trace_keys = on;
        }
        if let Some(on) = switch("RESILIENT_REDIS_REQUIRE_PRIMARY")? {
            c.require_primary = on;
        }
        if let Some(mode) = lookup("RESILIENT_REDIS_DURABILITY") {
            c.durability = mode
                .parse()
                .map_err(|e: Error| Error::config(format!("RESILIENT_REDIS_DURABILITY: {e}")))?;
        }
        if let Some(d) = ms("RESILIENT_REDIS_DURABILITY_TIMEOUT_MS")? {
            if c.durability == Durability::Fast {
                return Err(Error::config(
                    "RESILIENT_REDIS_DURABILITY_TIMEOUT_MS is set but RESILIENT_REDIS_DURABILITY \
                     is not replicated",
                ));
            }
            c.durability = c.durability.with_timeout(d);
        }
        if let Some(path) = lookup("RESILIENT_REDIS_PASSWORD_FILE") {
            let path = path.trim();
            if path.is_empty() {
                return Err(Error::config(
                    "RESILIENT_REDIS_PASSWORD_FILE is set but empty: expected a file path",
                ));
            }
            c.credentials = Some(Arc::new(PasswordFile::new(path)));
        }
        if let Some(name) = lookup("RESILIENT_REDIS_CLIENT_NAME") {
            c.client_name = Some(name.trim().to_owned());
        }
        if let Some(tls) = TlsConfig::from_lookup(&lookup)? {
            c.tls = Some(tls);
        }
        if let Some(v) = lookup("RESILIENT_REDIS_ZONES") {
            c.zones = ReadFrom::parse_zones(&v)
                .map_err(|e| Error::config(format!("RESILIENT_REDIS_ZONES: {}", e.message())))?;
        }
        if let Some(v) = lookup("RESILIENT_REDIS_READ_FROM") {
            c.read_from = ReadFrom::parse(&v).ok_or_else(|| {
                Error::config(format!(
                    "RESILIENT_REDIS_READ_FROM={v:?}: expected {}",
                    ReadFrom::EXPECTED
                ))
            })?;
        }
        if let Some(d) = ms("RESILIENT_REDIS_MAX_REPLICA_LAG_MS")? {
            c.max_replica_lag = Some(d);
        }
        if let Some(d) = ms("RESILIENT_REDIS_CONNECT_TIMEOUT_MS")? {
            c.connect_timeout = d;
        }
        if let Some(d) = ms("RESILIENT_REDIS_RESPONSE_TIMEOUT_MS")? {
            c.response_timeout = d;
        }
        if let Some(d) = ms("RESILIENT_REDIS_DEADLINE_MS")? {
            c.deadline = d;
        }
        if let Some(n) = count("RESILIENT_REDIS_MAX_ATTEMPTS")? {
            c.max_attempts = n;
        }
        if let Some(n) = count("RESILIENT_REDIS_POOL_SIZE")? {
            c.pool_size = n as usize;
        }
        if switch("RESILIENT_REDIS_BUDGET")? == Some(false) {
            c.budget = None;
        }
        if let Some(v) = lookup("RESILIENT_REDIS_BUDGET_RATIO") {
            let ratio = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    Error::config(format!(
                        "RESILIENT_REDIS_BUDGET_RATIO={v:?}: expected a number from 0 to 1"
                    ))
                })?;
            if let Some(b) = c.budget.as_mut() {
                b.retry_ratio = ratio;
            }
        }
        if switch("RESILIENT_REDIS_BREAKER")? == Some(false) {
            c.breaker = None;
        }
        if let Some(v) = lookup("RESILIENT_REDIS_THROTTLE_K") {
            let v = v.trim();
            c.adaptive_throttle = if v == "off" {
                None
            } else {
                let k = v
                    .parse::<f64>()
                    .ok()
                    .filter(|k| k.is_finite() && *k >= 1.0)
                    .ok_or_else(|| {
                        Error::config(format!(
                            "RESILIENT_REDIS_THROTTLE_K={v:?}: expected a number >= 1, or off"
                        ))
                    })?;
                Some(AdaptiveThrottleConfig {
                    k,
                    ..AdaptiveThrottleConfig::default()
                })
            };
        }
        if let Some(n) = count("RESILIENT_REDIS_BREAKER_FAILURES")?
            && let Some(b) = c.breaker.as_mut()
        {
            b.consecutive_failures = Some(n);
        }
        if let Some(d) = ms("RESILIENT_REDIS_BREAKER_OPEN_MS")?
            && let Some(b) = c.breaker.as_mut()
        {
            b.open_duration = d;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SentinelConfig;

    /// The log lines of `f`, as text.
    fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
        (out, text)
    }

    #[test]
    fn an_unset_url_is_said_in_the_log() {
        let (config, log) = logs_of(|| ClientConfig::from_lookup(|_| None));
        assert_eq!(config.unwrap().url, "redis://127.0.0.1:6379");
        assert!(log.contains("INFO"), "{log}");
        assert!(
            log.contains(
                "RESILIENT_REDIS_URL is not set: using the default server redis://127.0.0.1:6379"
            ),
            "{log}"
        );
        let (config, log) = logs_of(|| {
            ClientConfig::from_lookup(|name| {
                (name == "RESILIENT_REDIS_URL").then(|| "redis://10.0.0.1:6380".to_owned())
            })
        });
        assert_eq!(config.unwrap().url, "redis://10.0.0.1:6380");
        assert!(!log.contains("RESILIENT_REDIS_URL"), "{log}");
    }

    #[test]
    fn env_overrides_and_names_the_bad_variable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = ClientConfig::from_lookup(env(&[
            ("RESILIENT_REDIS_URL", "redis://10.0.0.1:7000"),
            ("RESILIENT_REDIS_DEADLINE_MS", "2500"),
            ("RESILIENT_REDIS_BREAKER", "off"),
            ("RESILIENT_REDIS_REQUIRE_PRIMARY", "off"),
        ]))
        .unwrap();
        assert_eq!(c.url, "redis://10.0.0.1:7000");
        assert!(!c.require_primary);
        assert_eq!(c.deadline, Duration::from_millis(2500));
        assert!(c.breaker.is_none());

        let err =
            ClientConfig::from_lookup(env(&[("RESILIENT_REDIS_DEADLINE_MS", "soon")])).unwrap_err();
        assert!(
            err.to_string().contains("RESILIENT_REDIS_DEADLINE_MS"),
            "{err}"
        );
        let err =
            ClientConfig::from_lookup(env(&[("RESILIENT_REDIS_MAX_ATTEMPTS", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("RESILIENT_REDIS_MAX_ATTEMPTS"),
            "{err}"
        );
        let err =
            ClientConfig::from_lookup(env(&[("RESILIENT_REDIS_URL", "mysql://x")])).unwrap_err();
        assert!(err.to_string().contains("invalid URL"), "{err}");
    }

    #[test]
    fn password_file_and_client_name() {
        let c = ClientConfig::from_lookup(|k: &str| match k {
            "RESILIENT_REDIS_URL" => Some("redis://app@10.0.0.1:6379".to_owned()),
            "RESILIENT_REDIS_PASSWORD_FILE" => Some("/run/secrets/redis".to_owned()),
            "RESILIENT_REDIS_CLIENT_NAME" => Some("orders-api".to_owned()),
            _ => None,
        })
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("file /run/secrets/redis"), "{shown}");
        assert_eq!(c.client_name.as_deref(), Some("orders-api"));
        let err = ClientConfig::from_lookup(|k: &str| {
            (k == "RESILIENT_REDIS_CLIENT_NAME").then(|| "two words".to_owned())
        })
        .unwrap_err();
        assert!(err.to_string().contains("client_name"), "{err}");
    }

    #[test]
    fn sentinel_env_vars() {
        let env = |k: &str| match k {
            "RESILIENT_REDIS_URL" => Some("redis+sentinel://h1:5000,h2:5001/main".to_owned()),
            "RESILIENT_REDIS_SENTINEL_PASSWORD" => Some("s3cret".to_owned()),
            "RESILIENT_REDIS_READ_FROM" => Some("prefer-replica".to_owned()),
            "RESILIENT_REDIS_MAX_REPLICA_LAG_MS" => Some("750".to_owned()),
            _ => None,
        };
        let c = ClientConfig::from_lookup(env).unwrap();
        assert_eq!(c.read_from, ReadFrom::PreferReplica);
        assert_eq!(c.max_replica_lag, Some(Duration::from_millis(750)));
        // A lag bound without replica reads bounds nothing: said, not ignored.
        let err = ClientConfig::from_lookup(|k: &str| match k {
            "RESILIENT_REDIS_URL" => Some("redis+sentinel://h1:5000/main".to_owned()),
            "RESILIENT_REDIS_MAX_REPLICA_LAG_MS" => Some("750".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_replica_lag"), "{err}");
        let s = c.sentinel.unwrap();
        assert_eq!(s.sentinel_password.as_deref(), Some("s3cret"));
        assert_eq!(s.sentinels.len(), 2);
        let err = ClientConfig::from_lookup(|k: &str| {
            (k == "RESILIENT_REDIS_SENTINEL_PASSWORD").then(|| "x".to_owned())
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("RESILIENT_REDIS_SENTINEL_PASSWORD"),
            "{err}"
        );
        let c = ClientConfig {
            sentinel: Some(SentinelConfig::default()),
            ..ClientConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("sentinel.sentinels")
        );
    }
}
