//! HTTP helpers: status-code classification and `Retry-After` parsing, so the policy core serves
//! HTTP callers as well as Redis.

use std::time::{Duration, SystemTime};

use crate::{Classification, RetryAction};

/// Whether an HTTP status code is worth retrying.
///
/// # Behavior
/// - Retry: 408 Request Timeout, 429 Too Many Requests, 500, 502, 503, 504.
/// - Do not retry: everything else, including 400, 401, 403, 404 and 422 (the request itself
///   is wrong) and 501 Not Implemented (retrying will not implement it).
///
/// ```
/// use resilience::{RetryAction, http::classify_status};
/// assert_eq!(classify_status(503), RetryAction::Retry);
/// assert_eq!(classify_status(404), RetryAction::DoNotRetry);
/// ```
pub fn classify_status(status: u16) -> RetryAction {
    match status {
        408 | 429 | 500 | 502 | 503 | 504 => RetryAction::Retry,
        _ => RetryAction::DoNotRetry,
    }
}

/// A full [`Classification`] of a failed HTTP response, with the `Retry-After` header value if
/// the server sent one.
///
/// # Behavior
/// - 429 and 503 with a valid `Retry-After`: [`RetryAction::RetryAfter`] with the hint.
/// - Otherwise the action of [`classify_status`].
/// - `server_fault` is `true` for 5xx except 501 (429 is throttling, 408 the client's
///   slowness, 4xx the caller's fault).
/// - `may_have_applied` is `true` for 500, 502 and 504: the request reached a server that may
///   have acted on it before failing. 503 and 429 are refusals before processing; 408 means the
///   server never got the whole request.
pub fn classify_response(
    status: u16,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Classification {
    let hint = match status {
        429 | 503 => retry_after.and_then(|v| parse_retry_after(v, now)),
        _ => None,
    };
    let action = hint.map_or_else(|| classify_status(status), RetryAction::RetryAfter);
    Classification {
        action,
        may_have_applied: matches!(status, 500 | 502 | 504),
        server_fault: (500..600).contains(&status) && status != 501,
    }
}

/// Parses a `Retry-After` header value into a wait.
///
/// # Behavior
/// - Delay-seconds (`"120"`): that many seconds.
/// - HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, or the obsolete RFC 850 / asctime forms):
///   the time from `now` to that date; a date in the past gives zero.
/// - Negative, fractional or otherwise invalid values: `None` (do not use as a hint).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use resilience::http::parse_retry_after;
/// assert_eq!(parse_retry_after("3", SystemTime::now()), Some(Duration::from_secs(3)));
/// assert_eq!(parse_retry_after("-3", SystemTime::now()), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(s), RetryAction::Retry, "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 422, 501] {
            assert_eq!(classify_status(s), RetryAction::DoNotRetry, "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // RFC 850 and asctime forms.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:10 2015", now),
            Some(Duration::from_secs(10))
        );
        // Past date -> zero.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn response_classification() {
        let now = SystemTime::UNIX_EPOCH;
        let c = classify_response(429, Some("2"), now);
        assert_eq!(c.action, RetryAction::RetryAfter(Duration::from_secs(2)));
        assert!(!c.server_fault && !c.may_have_applied);
        let c = classify_response(503, Some("bogus"), now);
        assert_eq!(c.action, RetryAction::Retry);
        assert!(c.server_fault && !c.may_have_applied);
        let c = classify_response(502, None, now);
        assert!(c.server_fault && c.may_have_applied);
        let c = classify_response(404, Some("2"), now);
        assert_eq!(c.action, RetryAction::DoNotRetry);
        assert!(!c.server_fault);
    }
}
