//! Why redis-rs refused a URL, in words that name the part at fault (redis-rs says only "Redis
//! URL did not parse").

/// What is wrong with `url`, which redis-rs refused to parse. Never shows the user info (a
/// password).
pub(super) fn url_problem(url: &str) -> String {
    let Some((_, rest)) = url.trim().split_once("://") else {
        return "expected redis://[[user]:password@]host[:port][/db]".into();
    };
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_len);
    if !authority.contains('@') && after.contains('@') {
        // The user info holds a `/`, `?` or `#`: what looks like the port or the database is
        // part of the password. Say so without showing any of it.
        return "the user or password contains '/', '?' or '#': percent-encode them \
                (%2F, %3F, %23)"
            .into();
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    if let Some(port) = port
        && !port.is_empty()
        && port.parse::<u16>().is_err()
    {
        return format!("port {port:?} is not a number from 0 to 65535");
    }
    if host_port.is_empty() || host_port.starts_with(':') {
        return "no host".into();
    }
    let path = after.split(['?', '#']).next().unwrap_or("");
    let db = path.trim_start_matches('/');
    if !db.is_empty() && db.parse::<i64>().is_err() {
        return format!("database {db:?} (the URL's path) is not a number");
    }
    "redis-rs could not parse it".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_part_at_fault() {
        for (url, expected) in [
            (
                "redis://127.0.0.1:99999",
                "port \"99999\" is not a number from 0 to 65535",
            ),
            (
                "redis://u:pw@127.0.0.1:notaport/0",
                "port \"notaport\" is not a number from 0 to 65535",
            ),
            (
                "redis://[::1]:70000",
                "port \"70000\" is not a number from 0 to 65535",
            ),
            (
                "redis://127.0.0.1:6379/zero",
                "database \"zero\" (the URL's path) is not a number",
            ),
            ("redis://:6379", "no host"),
        ] {
            assert_eq!(url_problem(url), expected, "{url}");
        }
    }

    #[test]
    fn never_shows_a_password_that_holds_a_delimiter() {
        let problem = url_problem("redis://app:ab/s3cr3t:99999@127.0.0.1:6379");
        assert!(!problem.contains("s3cr3t"), "{problem}");
        assert!(problem.contains("percent-encode"), "{problem}");
    }
}
