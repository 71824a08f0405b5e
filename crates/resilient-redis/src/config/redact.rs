//! Passwords kept out of messages, logs and `Debug` output.

use std::borrow::Cow;

/// `url` with the password of its user info replaced by `***`, for error messages and logs:
/// `redis://app:s3cret@host:6379/0` becomes `redis://app:***@host:6379/0`. A URL without a
/// password comes back unchanged (borrowed). Works on the client's URL forms
/// (`redis://`, `rediss://`, `redis+sentinel://` with several hosts) without parsing them, so it
/// also redacts URLs that are otherwise invalid.
///
/// # Example
/// ```
/// use resilient_redis::redact_url;
/// assert_eq!(redact_url("redis://:pw@h:6379"), "redis://:***@h:6379");
/// assert_eq!(redact_url("redis://h:6379/2"), "redis://h:6379/2");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let start = scheme_end + 3;
    let authority_len = url[start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - start);
    let authority = &url[start..start + authority_len];
    // The user info ends at the authority's last '@' (a password may contain '@' unencoded).
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    let Some(colon) = authority[..at].find(':') else {
        return Cow::Borrowed(url);
    };
    let mut redacted = String::with_capacity(url.len());
    redacted.push_str(&url[..start + colon + 1]);
    redacted.push_str("***");
    redacted.push_str(&url[start + at..]);
    Cow::Owned(redacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_and_the_rest_kept() {
        for (url, shown) in [
            ("redis://app:s3cret@h:6379/0", "redis://app:***@h:6379/0"),
            ("redis://:s3cret@h", "redis://:***@h"),
            ("rediss://u:p%40ss@h:6380", "rediss://u:***@h:6380"),
            ("redis://u:p@ss@h/1", "redis://u:***@h/1"),
            (
                "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2",
                "redis+sentinel://:***@s1:26379,s2:26379/mymaster/2",
            ),
            ("redis://u:@h", "redis://u:***@h"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "redis://h:6379/0",
            "redis://user@h",
            "redis://h/0?protocol=resp3#x@y:z",
            "h:6379",
            "",
            "redis://",
        ] {
            assert!(
                matches!(redact_url(url), Cow::Borrowed(u) if u == url),
                "{url}"
            );
        }
    }
}
