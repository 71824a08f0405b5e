//! [`Durability`]: when a write counts as acknowledged.

use std::{fmt, str::FromStr, time::Duration};

use crate::error::Error;

/// When a write is acknowledged to the caller.
///
/// Redis replicates asynchronously: a master acknowledges a write before any replica has it,
/// and a failover promotes a replica while the old master may still be acknowledging writes.
/// The writes a master acknowledged that had not reached the promoted replica are gone when
/// the old master resynchronises as a replica (measured: 3 % of a busy counter's increments
/// through a routine `SENTINEL FAILOVER`).
///
/// # Behavior
/// - [`Durability::Fast`] (the default): acknowledged when the master replies. A failover can
///   take back writes acknowledged in the moment before it.
/// - [`Durability::Replicated`]: each write (a command, a pipeline, a group-committed batch of
///   exactly-once writes) is followed, on the same connection and in the same round trip, by
///   `WAIT replicas timeout`. The write is acknowledged only when the server reports that many
///   replicas have it. Fewer (a replica lagging, a failover under way) and the write was applied
///   on the master but might be taken back: the call fails as
///   [`ErrorKind::Unconfirmed`](crate::ErrorKind::Unconfirmed) with an
///   [`Outcome::Ambiguous`](crate::Outcome::Ambiguous) outcome, unless it is safe to repeat
///   (idempotent commands, exactly-once writes: retried, on the new master after a failover,
///   within the deadline and the retry budget). Reads are sent as in `Fast`.
/// - `replicas: None` waits for every replica the master has (`connected_slaves` of its
///   `INFO replication`, learned on the connection, again each second and after a `WAIT` falls
///   short; it follows a replica's departure only after 30 s, so a deposed master that lost the
///   promoted replica cannot acknowledge alone), so the replica a failover promotes surely holds
///   every acknowledged write. Right after a failover the new master waits for at least one
///   replica. Under Sentinel, also at least the replicas the sentinels could promote
///   (`SENTINEL REPLICAS`: not down or disconnected, priority above 0, reporting the replica
///   role), attached to the master or not: Sentinel promotes a replica whose link broke a few
///   seconds ago.
///
/// Parsed from `fast`, `replicated` or `replicated:N` ([`FromStr`]; env
/// `RESILIENT_REDIS_DURABILITY`, with `RESILIENT_REDIS_DURABILITY_TIMEOUT_MS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged when the master replies.
    #[default]
    Fast,
    /// Acknowledged when `replicas` replicas (`None`: every one) confirm it within `timeout`.
    Replicated {
        /// How many replicas must confirm each write; `None`: every replica of the master.
        replicas: Option<u32>,
        /// How long the server waits for them (`WAIT`'s timeout). Must be shorter than
        /// [`ClientConfig::response_timeout`](crate::ClientConfig::response_timeout), so a
        /// `WAIT` that times out is not taken for a stalled server.
        timeout: Duration,
    },
}

/// `WAIT`'s timeout when none is given.
pub const DEFAULT_DURABILITY_TIMEOUT: Duration = Duration::from_millis(200);

impl Durability {
    /// Every replica, within [`DEFAULT_DURABILITY_TIMEOUT`].
    pub fn replicated() -> Durability {
        Durability::Replicated {
            replicas: None,
            timeout: DEFAULT_DURABILITY_TIMEOUT,
        }
    }

    /// The same mode with `WAIT`'s timeout set to `timeout` (no effect on `Fast`).
    pub fn with_timeout(self, timeout: Duration) -> Durability {
        match self {
            Durability::Fast => Durability::Fast,
            Durability::Replicated { replicas, .. } => Durability::Replicated { replicas, timeout },
        }
    }

    /// Checks the timeout against the response timeout.
    pub(crate) fn validate(&self, response_timeout: Duration) -> Result<(), Error> {
        if let Durability::Replicated { timeout, .. } = self {
            if timeout.is_zero() {
                return Err(Error::config(
                    "durability timeout must be greater than zero (WAIT 0 would block forever)",
                ));
            }
            if *timeout >= response_timeout {
                return Err(Error::config(format!(
                    "durability timeout ({timeout:?}) must be shorter than response_timeout \
                     ({response_timeout:?}): a WAIT that times out would be taken for a stalled \
                     server"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Fast => f.write_str("fast"),
            Durability::Replicated {
                replicas: None,
                timeout,
            } => write!(f, "replicated (every replica, {} ms)", timeout.as_millis()),
            Durability::Replicated {
                replicas: Some(n),
                timeout,
            } => write!(f, "replicated:{n} ({} ms)", timeout.as_millis()),
        }
    }
}

impl FromStr for Durability {
    type Err = Error;

    /// `fast`, `replicated` (every replica) or `replicated:N`, with the default timeout.
    fn from_str(s: &str) -> Result<Durability, Error> {
        let s = s.trim();
        let bad = || {
            Error::config(format!(
                "invalid durability {s:?}: expected fast, replicated or replicated:N (N >= 1)"
            ))
        };
        match s.split_once(':') {
            None if s.eq_ignore_ascii_case("fast") => Ok(Durability::Fast),
            None if s.eq_ignore_ascii_case("replicated") => Ok(Durability::replicated()),
            Some((mode, n)) if mode.eq_ignore_ascii_case("replicated") => {
                let n: u32 = n.trim().parse().map_err(|_| bad())?;
                if n == 0 {
                    return Err(bad());
                }
                Ok(Durability::Replicated {
                    replicas: Some(n),
                    timeout: DEFAULT_DURABILITY_TIMEOUT,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("fast".parse::<Durability>().unwrap(), Durability::Fast);
        assert_eq!(
            " Replicated ".parse::<Durability>().unwrap(),
            Durability::replicated()
        );
        assert_eq!(
            "replicated:2".parse::<Durability>().unwrap(),
            Durability::Replicated {
                replicas: Some(2),
                timeout: DEFAULT_DURABILITY_TIMEOUT
            }
        );
        for bad in [
            "",
            "slow",
            "replicated:0",
            "replicated:x",
            "fast:1",
            "replicated:-1",
        ] {
            let err = bad.parse::<Durability>().unwrap_err();
            assert!(err.to_string().contains("replicated:N"), "{bad}: {err}");
        }
        assert_eq!(
            Durability::replicated().to_string(),
            "replicated (every replica, 200 ms)"
        );
    }

    #[test]
    fn the_timeout_stays_under_the_response_timeout() {
        let rt = Duration::from_millis(500);
        assert!(Durability::Fast.validate(rt).is_ok());
        assert!(Durability::replicated().validate(rt).is_ok());
        let long = Durability::replicated().with_timeout(rt);
        assert!(
            long.validate(rt)
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        let zero = Durability::replicated().with_timeout(Duration::ZERO);
        assert!(zero.validate(rt).is_err());
    }
}
