//! The raw cluster baseline: redis-rs's async cluster connection with its defaults.

use std::time::Duration;

use redis::RedisError;
use redis::cluster_async::ClusterConnection;

use super::{AppClient, ClientCounters};
use crate::error::CliError;

/// redis-rs's async cluster connection, built with redis-rs defaults (its own internal retries
/// and reconnects included); `--deadline-ms` sets its response timeout.
#[derive(Clone)]
pub(crate) struct RawCluster {
    conn: ClusterConnection,
}

impl RawCluster {
    /// Connects to the cluster of these seed nodes.
    ///
    /// # Errors
    /// [`CliError::Usage`] for a malformed URL, [`CliError::Runtime`] when no seed answers.
    pub(crate) async fn connect(
        urls: &[String],
        response_timeout: Option<Duration>,
    ) -> Result<RawCluster, CliError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls.to_vec());
        if let Some(timeout) = response_timeout {
            builder = builder.response_timeout(timeout);
        }
        let client = builder
            .build()
            .map_err(|err| CliError::usage(format!("invalid --cluster {urls:?}: {err}")))?;
        let conn = tokio::time::timeout(super::PREFLIGHT_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| {
                CliError::runtime(format!(
                    "cannot connect to cluster {}: no connection within {} s",
                    urls.join(","),
                    super::PREFLIGHT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|err| {
                CliError::runtime(format!(
                    "cannot connect to cluster {}: {err}",
                    urls.join(",")
                ))
            })?;
        Ok(RawCluster { conn })
    }
}

impl AppClient for RawCluster {
    type Conn = ClusterConnection;

    fn conn(&mut self) -> &mut Self::Conn {
        &mut self.conn
    }

    /// redis-rs's cluster connection reconnects by itself.
    async fn after_error(&mut self, _err: &RedisError) {}

    fn counters(&self) -> ClientCounters {
        ClientCounters::default()
    }
}
