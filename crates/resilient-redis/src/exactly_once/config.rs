//! [`ExactlyOnceConfig`]: the settings, checked on their own and against the client.

use std::time::Duration;

use crate::error::Error;

/// Settings of [`ExactlyOnce`](crate::ExactlyOnce).
///
/// # Default
/// | field | default | why |
/// |---|---|---|
/// | `token_ttl` | 60 s | well above the client's 5 s deadline: covers every retry of a call, and an application-level retry of a caller-chosen key shortly after |
/// | `key_prefix` | `xo:` | |
/// | `max_batch` | 64 | writes that wait together go out in one script call of at most this many (group commit: see the module docs); 1 sends every write alone |
/// | `batches_in_flight` | 4 | calls outstanding at once before writes wait to share one: a few, so that the client, the network and the server overlap |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactlyOnceConfig {
    /// How long the record of a write (its token and reply) is kept at least: exactly this for a
    /// caller-chosen key, up to a quarter more for generated tokens (see the module docs'
    /// Storage). A retry after it expired would run the command again: it must be at least the
    /// client's deadline, and at least 1 s.
    pub token_ttl: Duration,
    /// The prefix of every token key. It must not contain `{` or `}` (that would change the key's
    /// hash slot) and should not be used by the application's own keys.
    pub key_prefix: String,
    /// Writes per script call at most, when concurrent writes share one (1 to 1,000; 1 turns
    /// batching off). Standalone and Sentinel only: in a cluster every write is its own call.
    pub max_batch: usize,
    /// Script calls of batched writes outstanding at once (1 to 1,000). More overlap the client,
    /// the network and the server better on a slow network; fewer make larger batches.
    pub batches_in_flight: usize,
}

impl Default for ExactlyOnceConfig {
    fn default() -> Self {
        ExactlyOnceConfig {
            token_ttl: Duration::from_secs(60),
            key_prefix: "xo:".to_owned(),
            max_batch: 64,
            batches_in_flight: 4,
        }
    }
}

impl ExactlyOnceConfig {
    /// Checks the settings on their own (the client's deadline is checked by the constructors).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig): a TTL under 1 s or over 10 years, a prefix with braces or
    /// longer than 64 bytes, `max_batch` or `batches_in_flight` outside 1 to 1,000.
    pub fn validate(&self) -> Result<(), Error> {
        if self.token_ttl < Duration::from_secs(1) {
            return Err(Error::config("exactly-once token_ttl must be at least 1 s"));
        }
        if self.token_ttl > Duration::from_secs(10 * 365 * 24 * 3600) {
            return Err(Error::config(
                "exactly-once token_ttl must be at most 10 years",
            ));
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(Error::config(
                "exactly-once key_prefix must not contain '{' or '}' (they pick the key's hash slot)",
            ));
        }
        if self.key_prefix.len() > 64 {
            return Err(Error::config(
                "exactly-once key_prefix must be at most 64 bytes",
            ));
        }
        if !(1..=1_000).contains(&self.max_batch) {
            return Err(Error::config(
                "exactly-once max_batch must be between 1 and 1000",
            ));
        }
        if !(1..=1_000).contains(&self.batches_in_flight) {
            return Err(Error::config(
                "exactly-once batches_in_flight must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

/// Checks `config` against the client it is for: its deadline and its protocol.
pub(super) fn check_client(
    config: &ExactlyOnceConfig,
    deadline: Duration,
    protocol: redis::ProtocolVersion,
) -> Result<(), Error> {
    config.validate()?;
    if config.token_ttl < deadline {
        return Err(Error::config(format!(
            "exactly-once token_ttl ({} ms) must be at least the client's deadline ({} ms): a retry after the token expired would run the write again",
            config.token_ttl.as_millis(),
            deadline.as_millis()
        )));
    }
    if protocol != redis::ProtocolVersion::RESP2 {
        return Err(Error::config(
            "exactly-once writes need RESP2 (the default): through RESP3 a script's nil reply comes back as a boolean",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn config_is_validated() {
        assert!(ExactlyOnceConfig::default().validate().is_ok());
        let short = ExactlyOnceConfig {
            token_ttl: Duration::from_millis(999),
            ..Default::default()
        };
        assert_eq!(
            short.validate().unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
        let braces = ExactlyOnceConfig {
            key_prefix: "x{y}:".into(),
            ..Default::default()
        };
        assert_eq!(
            braces.validate().unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
        let e = check_client(
            &ExactlyOnceConfig {
                token_ttl: Duration::from_secs(2),
                ..Default::default()
            },
            Duration::from_secs(5),
            redis::ProtocolVersion::RESP2,
        )
        .unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
        let e = check_client(
            &ExactlyOnceConfig::default(),
            Duration::from_secs(5),
            redis::ProtocolVersion::RESP3,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    }
}
