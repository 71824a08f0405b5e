//! The `redis+sentinel://` and `rediss+sentinel://` URL forms.

use super::{SENTINEL_PORT, SentinelConfig};
use crate::error::Error;

const SENTINEL_URL_FORM: &str = "redis+sentinel://[[user]:password@]host1:port1[,host2:port2,...]/MASTERNAME[/db] (rediss+sentinel:// for TLS, optionally ending in #insecure)";

/// Parses a `redis+sentinel://` (or `rediss+sentinel://`) URL into the Sentinel settings and a
/// `redis://` (`rediss://`) URL carrying the data nodes' credentials, database and TLS mode
/// (with a placeholder host). `None` for other schemes.
pub(super) fn parse_sentinel_url(url: &str) -> Result<Option<(SentinelConfig, String)>, Error> {
    let trimmed = url.trim();
    let (tls, rest) = match (
        trimmed.strip_prefix("redis+sentinel://"),
        trimmed.strip_prefix("rediss+sentinel://"),
    ) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Ok(None),
    };
    let invalid = |why: &str| {
        let shown = super::redact_url(url);
        Error::config(format!(
            "invalid URL {shown:?}: {why}; expected {SENTINEL_URL_FORM}"
        ))
    };
    let (rest, fragment) = match rest.split_once('#') {
        None => (rest, ""),
        Some((rest, "insecure")) if tls => (rest, "#insecure"),
        Some(_) => {
            return Err(invalid(
                "the only fragment is #insecure, with rediss+sentinel://",
            ));
        }
    };
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| invalid("no master name"))?;
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        let host = host.trim();
        if host.is_empty() {
            return Err(invalid("empty sentinel address"));
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
                    .ok_or_else(|| invalid(&format!("bad port in {host:?}")))?;
                (name, port)
            }
            _ => (host, SENTINEL_PORT),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() {
            return Err(invalid(&format!("bad sentinel address {host:?}")));
        }
        sentinels.push((name.to_owned(), port));
    }
    let mut parts = path.split('/');
    let master_name = parts.next().unwrap_or_default();
    if master_name.is_empty() {
        return Err(invalid("no master name"));
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|&d| d >= 0)
            .ok_or_else(|| invalid(&format!("bad database {db:?}")))?,
    };
    if parts.next().is_some() {
        return Err(invalid("too many path segments"));
    }
    let credentials = credentials.map(|c| format!("{c}@")).unwrap_or_default();
    let scheme = if tls { "rediss" } else { "redis" };
    let data_url = format!("{scheme}://{credentials}127.0.0.1:6379/{db}{fragment}");
    let sentinel = SentinelConfig {
        sentinels,
        master_name: master_name.to_owned(),
        sentinel_tls: tls,
        ..SentinelConfig::default()
    };
    Ok(Some((sentinel, data_url)))
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
}
