//! The multi-host URL forms: `redis+sentinel://` (and `rediss+sentinel://`) and
//! `redis+cluster://` (and `rediss+cluster://`). Both carry a list of `host:port` addresses and
//! the data nodes' credentials; each becomes its settings plus a plain `redis://` (`rediss://`)
//! URL that carries the credentials, the database and the TLS mode (with the first address, or a
//! placeholder for Sentinel).

use super::{SENTINEL_PORT, SentinelConfig};
use crate::error::Error;

const SENTINEL_URL_FORM: &str = "redis+sentinel://[[user]:password@]host1:port1[,host2:port2,...]/MASTERNAME[/db] (rediss+sentinel:// for TLS, optionally ending in #insecure)";

const CLUSTER_URL_FORM: &str = "redis+cluster://[[user]:password@]host1:port1[,host2:port2,...] (rediss+cluster:// for TLS, optionally ending in #insecure)";

/// The parts of a multi-host URL.
struct MultiHost<'a> {
    tls: bool,
    /// `user:password@`, or empty.
    credentials: String,
    hosts: Vec<(String, u16)>,
    /// What follows the first `/` after the hosts (empty if none).
    path: &'a str,
    /// `#insecure` or empty.
    fragment: &'static str,
}

/// Splits `url` if it has scheme `plain://` or its TLS twin `tls://`; `None` for other schemes.
/// `invalid` builds the error for a reason; addresses without a port get `default_port`.
fn split_multi_host<'a>(
    url: &'a str,
    (plain, tls_scheme): (&str, &str),
    default_port: Option<u16>,
    invalid: &dyn Fn(&str) -> Error,
) -> Result<Option<MultiHost<'a>>, Error> {
    let trimmed = url.trim();
    let (tls, rest) = match (
        trimmed
            .strip_prefix(plain)
            .and_then(|r| r.strip_prefix("://")),
        trimmed
            .strip_prefix(tls_scheme)
            .and_then(|r| r.strip_prefix("://")),
    ) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Ok(None),
    };
    let (rest, fragment) = match rest.split_once('#') {
        None => (rest, ""),
        Some((rest, "insecure")) if tls => (rest, "#insecure"),
        Some(_) => {
            return Err(invalid(&format!(
                "the only fragment is #insecure, with {tls_scheme}://"
            )));
        }
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), authority),
    };
    let mut addresses = Vec::new();
    for host in hosts.split(',') {
        let host = host.trim();
        if host.is_empty() {
            return Err(invalid("empty address"));
        }
        let (name, port) = match host.rsplit_once(':') {
            // `[::1]:26379` or `host:26379`; a bare IPv6 address needs brackets.
            Some((name, port))
                if !name.is_empty() && (!name.contains(':') || name.ends_with(']')) =>
            {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| invalid(&format!("bad port in {host:?} (1 to 65535)")))?;
                (name, port)
            }
            _ => match default_port {
                Some(port) => (host, port),
                None => return Err(invalid(&format!("no port in {host:?}"))),
            },
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() {
            return Err(invalid(&format!("bad address {host:?}")));
        }
        addresses.push((name.to_owned(), port));
    }
    Ok(Some(MultiHost {
        tls,
        credentials,
        hosts: addresses,
        path,
        fragment,
    }))
}

impl MultiHost<'_> {
    /// The `redis://` (`rediss://`) URL of `host:port` with these credentials, `db` and TLS mode.
    fn data_url(&self, host: &str, port: u16, db: i64) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!(
            "{scheme}://{}{host}:{port}/{db}{}",
            self.credentials, self.fragment
        )
    }
}

/// Parses a `redis+sentinel://` (or `rediss+sentinel://`) URL into the Sentinel settings and a
/// `redis://` (`rediss://`) URL carrying the data nodes' credentials, database and TLS mode
/// (with a placeholder host). `None` for other schemes.
pub(super) fn parse_sentinel_url(url: &str) -> Result<Option<(SentinelConfig, String)>, Error> {
    let invalid = |why: &str| {
        let shown = super::redact_url(url);
        Error::config(format!(
            "invalid URL {shown:?}: {why}; expected {SENTINEL_URL_FORM}"
        ))
    };
    let Some(parts) = split_multi_host(
        url,
        ("redis+sentinel", "rediss+sentinel"),
        Some(SENTINEL_PORT),
        &invalid,
    )?
    else {
        return Ok(None);
    };
    let mut path = parts.path.split('/');
    let master_name = path.next().unwrap_or_default();
    if master_name.is_empty() {
        return Err(invalid("no master name"));
    }
    let db = match path.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|&d| d >= 0)
            .ok_or_else(|| invalid(&format!("bad database {db:?}")))?,
    };
    if path.next().is_some() {
        return Err(invalid("too many path segments"));
    }
    let data_url = parts.data_url("127.0.0.1", 6379, db);
    let sentinel = SentinelConfig {
        sentinels: parts.hosts,
        master_name: master_name.to_owned(),
        sentinel_tls: parts.tls,
        ..SentinelConfig::default()
    };
    Ok(Some((sentinel, data_url)))
}

/// `(host, port)` of each seed of a cluster.
type Seeds = Vec<(String, u16)>;

/// Parses a `redis+cluster://` (or `rediss+cluster://`) URL into the seed addresses and a
/// `redis://` (`rediss://`) URL of the first seed carrying the credentials and TLS mode. A
/// cluster has one database (0): a path other than `/` or `/0` is an error. `None` for other
/// schemes.
pub(super) fn parse_cluster_url(url: &str) -> Result<Option<(Seeds, String)>, Error> {
    let invalid = |why: &str| {
        let shown = super::redact_url(url);
        Error::config(format!(
            "invalid URL {shown:?}: {why}; expected {CLUSTER_URL_FORM}"
        ))
    };
    let Some(parts) = split_multi_host(url, ("redis+cluster", "rediss+cluster"), None, &invalid)?
    else {
        return Ok(None);
    };
    if !matches!(parts.path, "" | "0") {
        return Err(invalid(
            "a cluster has only database 0: no path other than /0",
        ));
    }
    let (host, port) = &parts.hosts[0];
    let data_url = parts.data_url(host, *port, 0);
    Ok(Some((parts.hosts, data_url)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientConfig;

    #[test]
    fn sentinel_url_forms() {
        let (s, data) = parse_sentinel_url("redis+sentinel://u:p%40ss@h1:1,[::1]:2,h3/m-1/3")
            .unwrap()
            .unwrap();
        assert_eq!(
            s.sentinels,
            vec![
                ("h1".to_owned(), 1),
                ("::1".to_owned(), 2),
                ("h3".to_owned(), SENTINEL_PORT)
            ]
        );
        assert_eq!(s.master_name, "m-1");
        assert_eq!(data, "redis://u:p%40ss@127.0.0.1:6379/3");
        let c = ClientConfig::from_url("redis+sentinel://h1/m").unwrap();
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().db(), 0);
        assert_eq!(
            c.sentinel.unwrap().sentinels,
            vec![("h1".to_owned(), SENTINEL_PORT)]
        );
        let info = ClientConfig::from_url("redis+sentinel://:pw@h1/m/2")
            .unwrap()
            .connection_info()
            .unwrap();
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 2);
        for bad in [
            "redis+sentinel://h1",
            "redis+sentinel://h1/",
            "redis+sentinel://h1:x/m",
            "redis+sentinel://h1,,h2/m",
            "redis+sentinel://h1/m/x",
            "redis+sentinel://h1/m/1/2",
        ] {
            let err = ClientConfig::from_url(bad).unwrap_err();
            assert!(
                err.to_string().contains("redis+sentinel://[[user]"),
                "{bad}: {err}"
            );
        }
        assert!(parse_sentinel_url("redis://h/0").unwrap().is_none());
    }

    #[test]
    fn cluster_url_forms() {
        let (seeds, data) = parse_cluster_url("redis+cluster://u:p%40ss@h1:7000,[::1]:7001")
            .unwrap()
            .unwrap();
        assert_eq!(
            seeds,
            vec![("h1".to_owned(), 7000), ("::1".to_owned(), 7001)]
        );
        assert_eq!(data, "redis://u:p%40ss@h1:7000/0");
        let (_, data) = parse_cluster_url("rediss+cluster://[::1]:7000/#insecure")
            .unwrap()
            .unwrap();
        assert_eq!(data, "rediss://[::1]:7000/0#insecure");
        let c =
            ClientConfig::from_url("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(c.cluster.as_ref().unwrap().seeds.len(), 2);
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("pw"));
        for bad in [
            "redis+cluster://h1",
            "redis+cluster://h1:7000/1",
            "redis+cluster://h1:7000,,h2:7001",
            "redis+cluster://h1:99999",
            "redis+cluster://h1:7000#insecure",
        ] {
            let err = ClientConfig::from_url(bad).unwrap_err();
            assert!(
                err.to_string().contains("redis+cluster://[[user]"),
                "{bad}: {err}"
            );
        }
        assert!(parse_cluster_url("redis://h/0").unwrap().is_none());
    }
}
