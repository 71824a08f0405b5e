//! How long a blocking command may wait on the server, from its timeout argument.

use std::time::Duration;

use redis::Cmd;

use super::args;

/// How long a blocking command may block on the server, from its arguments, when it says.
/// `None` means it may block forever (timeout 0) or we cannot tell.
pub(crate) fn blocking_timeout(cmd: &Cmd) -> Option<Duration> {
    let (name, rest) = args::split(cmd)?;
    let parse_secs = |a: &[u8]| -> Option<Duration> {
        let s = std::str::from_utf8(a).ok()?;
        let secs: f64 = s.parse().ok()?;
        (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
    };
    let parse_ms = |a: &[u8]| -> Option<Duration> {
        let s = std::str::from_utf8(a).ok()?;
        let ms: u64 = s.parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    };
    // Positions in `rest`: the name is not counted.
    let mut rest = rest;
    match name.as_bytes() {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BRPOPLPUSH" | b"BLMOVE" => {
            parse_secs(rest.last()?)
        }
        b"BLMPOP" | b"BZMPOP" => parse_secs(rest.next()?),
        b"WAIT" => parse_ms(rest.nth(1)?),
        b"WAITAOF" => parse_ms(rest.nth(2)?),
        b"XREAD" | b"XREADGROUP" => {
            rest.position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
            parse_ms(rest.next()?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_timeouts_are_read_from_arguments() {
        let mut c = redis::cmd("BLPOP");
        c.arg("q").arg("1.5");
        assert_eq!(blocking_timeout(&c), Some(Duration::from_millis(1500)));
        let mut c = redis::cmd("BLPOP");
        c.arg("q").arg(0);
        assert_eq!(blocking_timeout(&c), None);
        let mut c = redis::cmd("XREAD");
        c.arg("BLOCK").arg(250).arg("STREAMS").arg("s").arg("$");
        assert_eq!(blocking_timeout(&c), Some(Duration::from_millis(250)));
        let mut c = redis::cmd("xread");
        c.arg("STREAMS").arg("s").arg("$");
        assert_eq!(blocking_timeout(&c), None);
        let mut c = redis::cmd("bzmpop");
        c.arg("0.5").arg(1).arg("z").arg("MIN");
        assert_eq!(blocking_timeout(&c), Some(Duration::from_millis(500)));
        let mut c = redis::cmd("WAIT");
        c.arg(1).arg(100);
        assert_eq!(blocking_timeout(&c), Some(Duration::from_millis(100)));
        let mut c = redis::cmd("WAITAOF");
        c.arg(1).arg(0).arg(200);
        assert_eq!(blocking_timeout(&c), Some(Duration::from_millis(200)));
        assert_eq!(blocking_timeout(redis::cmd("GET").arg("k")), None);
    }
}
