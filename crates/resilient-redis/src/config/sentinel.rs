//! The Sentinel part of the configuration: where the sentinels are, which master.

use std::{fmt, time::Duration};

use super::{ClientConfig, Transport, url_forms::parse_sentinel_url};
use crate::error::Error;

/// How to find the master through Redis Sentinel. See [`ClientConfig::sentinel`].
///
/// # Default
/// No sentinels, master name `mymaster`, no sentinel password,
/// `rediscover_interval` 100 ms, plain TCP to the sentinels (`sentinel_tls` false; a
/// `rediss+sentinel://` URL sets it).
#[derive(Clone, PartialEq)]
pub struct SentinelConfig {
    /// Sentinel addresses (host, port) to ask first; the client also learns the others the
    /// sentinels know (`SENTINEL SENTINELS`).
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// Password of the sentinels themselves (`requirepass` in sentinel.conf), if any. The data
    /// nodes' credentials come from [`ClientConfig::url`].
    pub sentinel_password: Option<String>,
    /// Connect to the sentinels themselves over TLS (sentinels with a `tls-port`), with the
    /// certificates of [`ClientConfig::tls`] (or the system roots). Independent of the data
    /// nodes, which use TLS when the URL is `rediss+sentinel://` (or `rediss://`): deployments
    /// differ. A `rediss+sentinel://` URL sets it; clear it for plain-TCP sentinels in front of
    /// TLS data nodes.
    pub sentinel_tls: bool,
    /// Minimum time between two rediscoveries triggered by failures (a dead connection, a
    /// `READONLY` reply, a timeout); a random extra of up to the same time is added so many
    /// clients do not ask the sentinels at once. A `+switch-master` announcement is followed at
    /// once, whatever this says.
    pub rediscover_interval: Duration,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        SentinelConfig {
            sentinels: Vec::new(),
            master_name: "mymaster".to_owned(),
            sentinel_password: None,
            sentinel_tls: false,
            rediscover_interval: Duration::from_millis(100),
        }
    }
}

/// The default port of a sentinel.
pub(super) const SENTINEL_PORT: u16 = 26379;

impl ClientConfig {
    /// The Sentinel settings: [`ClientConfig::sentinel`], or those of a `redis+sentinel://` URL.
    pub(crate) fn sentinel_config(&self) -> Result<Option<SentinelConfig>, Error> {
        if let Some(s) = &self.sentinel {
            return Ok(Some(s.clone()));
        }
        Ok(parse_sentinel_url(&self.url)?.map(|(s, _)| s))
    }

    /// How the client connects to the sentinels: TLS with [`ClientConfig::tls`] if
    /// [`SentinelConfig::sentinel_tls`], plain TCP otherwise. A `#insecure` URL applies to the
    /// sentinels too.
    pub(crate) fn sentinel_transport(&self, s: &SentinelConfig) -> Result<Transport, Error> {
        if !s.sentinel_tls {
            return Ok(Transport::plain());
        }
        let insecure = matches!(
            self.connection_info()?.addr(),
            redis::ConnectionAddr::TcpTls { insecure: true, .. }
        );
        Transport::tls(self.tls.as_ref(), insecure)
    }
}

/// Shows whether there is a sentinel password, not the password.
impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .field("sentinel_tls", &self.sentinel_tls)
            .field("rediscover_interval", &self.rediscover_interval)
            .finish()
    }
}
