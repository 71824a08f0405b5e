//! Parsers that turn unit-suffixed flags (`--duration` seconds, `--deadline-ms`) into `Duration`s
//! at the CLI edge, and `--rate` into calls per second, rejecting zero, negative and non-finite
//! values as usage errors.

use std::time::Duration;

/// Parses a positive number of seconds (fractions allowed, e.g. `0.5`), optionally with a
/// unit: `90s`, `2m`, `1.5h`.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.char_indices().last() {
        Some((i, 's')) => (&trimmed[..i], 1.0),
        Some((i, 'm')) => (&trimmed[..i], 60.0),
        Some((i, 'h')) => (&trimmed[..i], 3600.0),
        _ => (trimmed, 1.0),
    };
    let seconds: f64 = number
        .parse::<f64>()
        .map(|n| n * scale)
        .map_err(|_| format!("{text:?} is not a number of seconds (e.g. 90, 90s, 2m, 1h)"))?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("{text:?}: {err}"))
}

/// Parses a positive rate in calls per second (fractions allowed), at most ten million.
pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of calls per second"))?;
    if !rate.is_finite() || rate <= 0.0 || rate > 10_000_000.0 {
        return Err(format!(
            "{text:?} must be a positive number of calls per second, at most 10000000"
        ));
    }
    Ok(rate)
}

/// Parses a positive whole number of milliseconds.
pub(crate) fn parse_millis(text: &str) -> Result<Duration, String> {
    let millis: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of milliseconds"))?;
    if millis == 0 {
        return Err("must be at least 1 ms".to_owned());
    }
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_reject_non_positive() {
        assert_eq!(parse_seconds("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("ten").is_err());
        assert_eq!(parse_seconds("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_seconds("0.5h"), Ok(Duration::from_secs(1800)));
        assert!(parse_seconds("s").is_err());
        assert!(parse_seconds("-2m").is_err());
    }

    #[test]
    fn rates_are_positive_and_bounded() {
        assert_eq!(parse_rate("2000"), Ok(2000.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "fast", "20000000"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn millis_reject_zero_and_garbage() {
        assert_eq!(parse_millis("1500"), Ok(Duration::from_millis(1500)));
        assert!(parse_millis("0").is_err());
        assert!(parse_millis("1.5").is_err());
        assert!(parse_millis("-3").is_err());
    }
}
