//! Small helpers shared by the process and topology modules: free ports, polling, connections.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::error::LabError;
use crate::tls::{LabTls, install_crypto_provider};

/// Ports this process has handed out recently; never handed out twice while they are in the set.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// How many handed-out ports are remembered before the oldest ones are forgotten.
const REMEMBERED_PORTS: usize = 4096;

/// Returns a loopback port that was free a moment ago (bind to port 0, read it, close).
///
/// The caller must tolerate the race where someone else binds it first (retry with another port).
pub(crate) fn free_port() -> Result<u16, LabError> {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| LabError::io("binding 127.0.0.1:0 to find a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| LabError::io("reading the local address of a probe socket", e))?
            .port();
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed.insert(port) {
            if handed.len() > REMEMBERED_PORTS {
                let first = *handed.iter().next().unwrap_or(&port);
                handed.remove(&first);
            }
            return Ok(port);
        }
    }
    Err(LabError::Topology(
        "could not find a free loopback port after 64 attempts".into(),
    ))
}

/// The loopback socket address for `port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Opens a multiplexed connection to `url` (with the lab's certificates for a TLS server) with
/// the given response timeout.
pub(crate) async fn connect(
    url: &str,
    tls: Option<&LabTls>,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let client = match tls {
        None => redis::Client::open(url)?,
        Some(tls) => {
            install_crypto_provider();
            redis::Client::build_with_tls(url, tls.client_certificates())?
        }
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A bounded polling loop: call [`Poll::wait`] with the latest observation after each failed check.
pub(crate) struct Poll {
    what: String,
    started: Instant,
    timeout: Duration,
    interval: Duration,
}

impl Poll {
    /// Starts polling for `what`, giving up after `timeout`.
    pub(crate) fn new(what: impl Into<String>, timeout: Duration) -> Self {
        Self {
            what: what.into(),
            started: Instant::now(),
            timeout,
            interval: Duration::from_millis(20),
        }
    }

    /// Uses `interval` between checks instead of the default 20 ms.
    pub(crate) fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Waits one interval, or fails with [`LabError::Timeout`] carrying `last` once the deadline passed.
    pub(crate) async fn wait(&self, last: impl std::fmt::Display) -> Result<(), LabError> {
        let waited = self.started.elapsed();
        if waited >= self.timeout {
            return Err(LabError::Timeout {
                what: self.what.clone(),
                waited,
                last: last.to_string(),
            });
        }
        tokio::time::sleep(self.interval.min(self.timeout - waited)).await;
        Ok(())
    }
}

/// Parses `field:value` lines of an INFO reply.
pub(crate) fn info_value(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.trim_end().split_once(':')?;
        (key == field).then(|| value.to_owned())
    })
}

/// The last `lines` lines of a file, or a note that it could not be read.
pub(crate) fn tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(log unreadable: {e})"),
    }
}
