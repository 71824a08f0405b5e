//! Where `bench` and `health` send their calls: one server (`--url`), a Sentinel deployment
//! (`--sentinel HOST:PORT,... --master NAME`) or a Redis Cluster (`--cluster URL,...`).
//!
//! # Behavior
//! - Exactly one of `--url`, `--sentinel`, `--cluster` must be given; `--master` goes with
//!   `--sentinel` and only with it. Anything else is a one-line usage error (exit 2).
//! - The values are checked here, once, before any connection is tried.
//! - `--password-file PATH` (or `RESILIENT_REDIS_PASSWORD_FILE`), `--client-name NAME` and
//!   `--durability MODE` go to the resilient client ([`Access`]): the file is read before every
//!   connection, with the URL's user (`redis://app@host:6379`).

use std::path::PathBuf;

use clap::Args;

use crate::error::CliError;

/// The target flags shared by `bench` and `health`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TargetArgs {
    /// Redis URL of one server, e.g. redis://127.0.0.1:6379
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Sentinel addresses, e.g. 127.0.0.1:26379,127.0.0.1:26380 (needs --master)
    #[arg(long, value_name = "HOST:PORT,...")]
    sentinel: Option<String>,
    /// The master name the sentinels monitor (with --sentinel)
    #[arg(long, value_name = "NAME")]
    master: Option<String>,
    /// Seed URLs of Redis Cluster nodes, e.g. redis://127.0.0.1:7000,redis://127.0.0.1:7001
    #[arg(long, value_name = "URL,...")]
    cluster: Option<String>,
    /// File holding the password, read before every connection (a rotated secret); the user
    /// name is the URL's, e.g. --url redis://app@host:6379
    #[arg(long, value_name = "PATH", env = "RESILIENT_REDIS_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Name of the client's connections in CLIENT LIST (CLIENT SETNAME), no spaces
    #[arg(long, value_name = "NAME")]
    client_name: Option<String>,
    /// When a write is acknowledged: fast (the master replied), replicated (every replica
    /// confirmed it, with WAIT) or replicated:N
    #[arg(long, value_name = "MODE", value_parser = parse_durability)]
    durability: Option<resilient_redis::Durability>,
    /// With --durability replicated: how long the server waits for the replicas (WAIT's
    /// timeout), under the response timeout
    #[arg(long, value_name = "MS", requires = "durability")]
    durability_timeout_ms: Option<u64>,
    /// Where read-only commands go (with --sentinel or --cluster): master, master-preferred (a
    /// replica only while the master is down), replica-preferred, replica, nearest (lowest
    /// measured round trip) or zone:NAME
    #[arg(long, value_name = "MODE", value_parser = parse_read_from)]
    read_from: Option<resilient_redis::ReadFrom>,
    /// The nodes' availability zones, for --read-from zone:NAME: host:port=ZONE (or, on a
    /// cluster, NODE_ID=ZONE) pairs separated by commas
    #[arg(long, value_name = "MAP")]
    zones: Option<String>,
    /// With --read-from: replicas further behind their master than this are not read from
    #[arg(long, value_name = "MS", requires = "read_from")]
    max_replica_lag_ms: Option<u64>,
}

/// `--read-from`'s value.
fn parse_read_from(s: &str) -> Result<resilient_redis::ReadFrom, String> {
    resilient_redis::ReadFrom::parse(s)
        .ok_or_else(|| format!("{s:?}: expected {}", resilient_redis::ReadFrom::EXPECTED))
}

/// `--durability`'s value.
fn parse_durability(s: &str) -> Result<resilient_redis::Durability, String> {
    s.parse().map_err(|e: resilient_redis::Error| e.to_string())
}

/// How the resilient client authenticates and names its connections, beyond the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Access {
    /// `--password-file`: read before every connection.
    pub(crate) password_file: Option<PathBuf>,
    /// `--client-name`.
    pub(crate) client_name: Option<String>,
    /// `--durability` (with `--durability-timeout-ms`).
    pub(crate) durability: Option<resilient_redis::Durability>,
    /// `--read-from` (a Sentinel or Cluster target: checked by [`TargetArgs::target`]).
    pub(crate) read_from: Option<resilient_redis::ReadFrom>,
    /// `--zones`, as given (checked when the client is configured).
    pub(crate) zones: Option<String>,
    /// `--max-replica-lag-ms`.
    pub(crate) max_replica_lag: Option<std::time::Duration>,
}

impl Access {
    /// Where the credentials come from, as `health` says it (never the secret).
    pub(crate) fn credentials_source(&self) -> String {
        use resilient_redis::credentials::{CredentialsProvider, PasswordFile};
        match &self.password_file {
            Some(path) => PasswordFile::new(path).describe(),
            None => "static (the URL's)".to_owned(),
        }
    }

    /// Puts these settings in `config`.
    pub(crate) fn apply(&self, config: &mut resilient_redis::ClientConfig) {
        if let Some(path) = &self.password_file {
            config.credentials = Some(std::sync::Arc::new(
                resilient_redis::credentials::PasswordFile::new(path),
            ));
        }
        if let Some(name) = &self.client_name {
            config.client_name = Some(name.clone());
        }
        if let Some(durability) = self.durability {
            config.durability = durability;
        }
        if let Some(read_from) = &self.read_from {
            config.read_from = read_from.clone();
        }
        if let Some(zones) = &self.zones {
            // (A malformed map was refused by `TargetArgs::target`.)
            config.zones = resilient_redis::ReadFrom::parse_zones(zones).unwrap_or_default();
        }
        if let Some(lag) = self.max_replica_lag {
            config.max_replica_lag = Some(lag);
        }
    }
}

/// A checked target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One server.
    Standalone {
        /// Its URL.
        url: String,
    },
    /// A master found through sentinels.
    Sentinel {
        /// The sentinels, in the order given.
        sentinels: Vec<(String, u16)>,
        /// The monitored master's name.
        master: String,
    },
    /// A Redis Cluster.
    Cluster {
        /// Seed node URLs.
        urls: Vec<String>,
    },
}

impl TargetArgs {
    /// The credentials and connection name the flags give.
    pub(crate) fn access(&self) -> Access {
        Access {
            password_file: self.password_file.clone(),
            client_name: self.client_name.clone(),
            durability: self.durability.map(|d| match self.durability_timeout_ms {
                Some(ms) => d.with_timeout(std::time::Duration::from_millis(ms)),
                None => d,
            }),
            read_from: self.read_from.clone(),
            zones: self.zones.clone(),
            max_replica_lag: self
                .max_replica_lag_ms
                .map(std::time::Duration::from_millis),
        }
    }

    /// Checks the flags and returns the target they name.
    ///
    /// # Errors
    /// [`CliError::Usage`] when no target or several are given, `--master` is missing or
    /// misplaced, or a value is malformed.
    pub(crate) fn target(&self) -> Result<Target, CliError> {
        let given = [&self.url, &self.sentinel, &self.cluster]
            .iter()
            .filter(|flag| flag.is_some())
            .count();
        if given != 1 {
            return Err(CliError::usage(format!(
                "give exactly one of --url, --sentinel (with --master) or --cluster ({given} given)"
            )));
        }
        if self.master.is_some() && self.sentinel.is_none() {
            return Err(CliError::usage("--master goes with --sentinel"));
        }
        if let Some(zones) = &self.zones {
            resilient_redis::ReadFrom::parse_zones(zones)
                .map_err(|e| CliError::usage(format!("--zones: {e}")))?;
        }
        if self
            .read_from
            .as_ref()
            .is_some_and(|r| *r != resilient_redis::ReadFrom::Master)
            && self.url.is_some()
        {
            return Err(CliError::usage(
                "--read-from goes with --sentinel or --cluster: a single server (--url) has no replicas",
            ));
        }
        if let Some(url) = &self.url {
            return Ok(Target::Standalone { url: url.clone() });
        }
        if let Some(list) = &self.sentinel {
            let Some(master) = self.master.clone().filter(|m| !m.is_empty()) else {
                return Err(CliError::usage("--sentinel needs --master NAME"));
            };
            let sentinels = parse_host_ports(list)?;
            return Ok(Target::Sentinel { sentinels, master });
        }
        let list = self.cluster.as_deref().unwrap_or_default();
        let urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(CliError::usage("--cluster needs at least one node URL"));
        }
        Ok(Target::Cluster { urls })
    }
}

impl Target {
    /// How the target is named in messages and reports (passwords shown as `***`).
    pub(crate) fn describe(&self) -> String {
        use resilient_redis::redact_url;
        match self {
            Target::Standalone { url } => redact_url(url).into_owned(),
            Target::Sentinel { sentinels, master } => self::sentinel_url(sentinels, master),
            Target::Cluster { urls } => {
                let urls: Vec<_> = urls.iter().map(|u| redact_url(u)).collect();
                format!("cluster {}", urls.join(","))
            }
        }
    }

    /// The topology's name in reports (`standalone`, `sentinel`, `cluster`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Standalone { .. } => "standalone",
            Target::Sentinel { .. } => "sentinel",
            Target::Cluster { .. } => "cluster",
        }
    }
}

/// The `redis+sentinel://h1:p1,h2:p2/MASTER` URL of a Sentinel deployment.
pub(crate) fn sentinel_url(sentinels: &[(String, u16)], master: &str) -> String {
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|(host, port)| format!("{host}:{port}"))
        .collect();
    format!("redis+sentinel://{}/{master}", hosts.join(","))
}

fn parse_host_ports(list: &str) -> Result<Vec<(String, u16)>, CliError> {
    let invalid = |item: &str| {
        CliError::usage(format!(
            "invalid --sentinel {list:?}: {item:?} is not HOST:PORT"
        ))
    };
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, port) = item.rsplit_once(':').ok_or_else(|| invalid(item))?;
        let port: u16 = port.parse().map_err(|_| invalid(item))?;
        if host.is_empty() || port == 0 {
            return Err(invalid(item));
        }
        out.push((host.to_owned(), port));
    }
    if out.is_empty() {
        return Err(CliError::usage(
            "--sentinel needs at least one HOST:PORT".to_owned(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, sentinel: Option<&str>, master: Option<&str>) -> TargetArgs {
        TargetArgs {
            url: url.map(str::to_owned),
            sentinel: sentinel.map(str::to_owned),
            master: master.map(str::to_owned),
            cluster: None,
            password_file: None,
            client_name: None,
            durability: None,
            durability_timeout_ms: None,
            read_from: None,
            zones: None,
            max_replica_lag_ms: None,
        }
    }

    /// `TargetArgs` as a command line parses them.
    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        target: TargetArgs,
    }

    #[test]
    fn read_from_goes_with_a_sentinel_or_cluster_target() {
        use clap::Parser;
        use resilient_redis::ReadFrom;

        let sentinel = ["x", "--sentinel", "h:1", "--master", "m", "--read-from"];
        let line = Line::try_parse_from(sentinel.iter().chain(&["master-preferred"])).unwrap();
        assert!(line.target.target().is_ok());
        let mut config = resilient_redis::ClientConfig::from_url("redis+sentinel://h:1/m").unwrap();
        line.target.access().apply(&mut config);
        assert_eq!(config.read_from, ReadFrom::MasterPreferred);
        let cluster = [
            "x",
            "--cluster",
            "h:1,h:2",
            "--read-from",
            "replica-preferred",
        ];
        let line = Line::try_parse_from(cluster).unwrap();
        assert!(line.target.target().is_ok());
        assert!(Line::try_parse_from(sentinel.iter().chain(&["nearby"])).is_err());
        let url = ["x", "--url", "redis://h:1", "--read-from", "replica"];
        let err = Line::try_parse_from(url)
            .unwrap()
            .target
            .target()
            .unwrap_err();
        assert!(err.to_string().contains("--read-from"), "{err}");
        let master = ["x", "--url", "redis://h:1", "--read-from", "master"];
        assert!(
            Line::try_parse_from(master)
                .unwrap()
                .target
                .target()
                .is_ok()
        );
    }

    #[test]
    fn durability_is_parsed_with_its_timeout() {
        use clap::Parser;
        use resilient_redis::Durability;
        use std::time::Duration;

        let line = |extra: &[&str]| {
            Line::try_parse_from(["x", "--url", "redis://h:1"].iter().chain(extra))
                .map(|l| l.target.access().durability)
        };
        assert_eq!(line(&[]).unwrap(), None);
        assert_eq!(
            line(&[
                "--durability",
                "replicated:2",
                "--durability-timeout-ms",
                "50"
            ])
            .unwrap(),
            Some(Durability::Replicated {
                replicas: Some(2),
                timeout: Duration::from_millis(50)
            })
        );
        assert_eq!(
            line(&["--durability", "fast"]).unwrap(),
            Some(Durability::Fast)
        );
        let bad = line(&["--durability", "replicated:0"])
            .err()
            .unwrap()
            .to_string();
        assert!(bad.contains("replicated:N"), "{bad}");
        // A timeout alone means nothing.
        assert!(line(&["--durability-timeout-ms", "50"]).is_err());
    }

    #[test]
    fn exactly_one_target_is_accepted() {
        assert_eq!(
            args(Some("redis://h:1"), None, None).target().ok(),
            Some(Target::Standalone {
                url: "redis://h:1".into()
            })
        );
        let sentinel = args(None, Some("a:1, b:2"), Some("mymaster"))
            .target()
            .expect("valid");
        assert_eq!(
            sentinel,
            Target::Sentinel {
                sentinels: vec![("a".into(), 1), ("b".into(), 2)],
                master: "mymaster".into()
            }
        );
        assert_eq!(
            sentinel.describe(),
            "redis+sentinel://a:1,b:2/mymaster".to_owned()
        );
        let cluster = TargetArgs {
            cluster: Some("redis://a:1,redis://b:2".into()),
            ..TargetArgs::default()
        };
        assert_eq!(
            cluster.target().ok(),
            Some(Target::Cluster {
                urls: vec!["redis://a:1".into(), "redis://b:2".into()]
            })
        );
    }

    #[test]
    fn conflicting_missing_or_malformed_targets_are_usage_errors() {
        for bad in [
            args(None, None, None),
            args(Some("redis://h:1"), Some("a:1"), Some("m")),
            args(None, Some("a:1"), None),
            args(Some("redis://h:1"), None, Some("m")),
            args(None, Some("a"), Some("m")),
            args(None, Some("a:x"), Some("m")),
            args(None, Some(","), Some("m")),
            TargetArgs {
                cluster: Some(" , ".into()),
                ..TargetArgs::default()
            },
        ] {
            assert!(
                matches!(bad.target(), Err(CliError::Usage(_))),
                "{bad:?} accepted"
            );
        }
    }
}
