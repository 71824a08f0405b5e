//! `host:port` strings: the one form addresses take in slot maps, pools, gauges and spans.

/// `host:port` split; IPv6 hosts may be in brackets.
pub(crate) fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[').trim_end_matches(']'),
        port.parse().ok()?,
    ))
}

/// `host:port`, with brackets around an IPv6 host.
pub(crate) fn join_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host:port` of a TCP address.
pub(crate) fn addr_of(addr: &redis::ConnectionAddr) -> Option<String> {
    match addr {
        redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } => Some(join_addr(host, *port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_and_join_with_ipv6_brackets() {
        assert_eq!(split_addr("127.0.0.1:7001"), Some(("127.0.0.1", 7001)));
        assert_eq!(split_addr("[::1]:7001"), Some(("::1", 7001)));
        assert_eq!(split_addr("nope"), None);
        assert_eq!(join_addr("::1", 7001), "[::1]:7001");
        assert_eq!(join_addr("127.0.0.1", 7001), "127.0.0.1:7001");
    }
}
