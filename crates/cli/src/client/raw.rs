//! The raw baseline: a plain redis-rs `MultiplexedConnection`, no retries, replaced after it breaks.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};

use super::replacing::{Connector, Replacing};
use crate::error::CliError;

/// The raw baseline: one shared multiplexed connection, replaced after it breaks.
pub(crate) type RawClient = Replacing<Multiplexed>;

/// Opens redis-rs `MultiplexedConnection`s with one client and configuration.
pub(crate) struct Multiplexed {
    client: redis::Client,
    config: AsyncConnectionConfig,
}

impl Connector for Multiplexed {
    type Conn = MultiplexedConnection;

    async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }
}

impl RawClient {
    /// Opens the baseline connection with redis-rs defaults; `response_timeout` overrides
    /// redis-rs's default response timeout (500 ms) when set (`--deadline-ms` for raw).
    pub(crate) async fn connect(
        url: &str,
        response_timeout: Option<Duration>,
    ) -> Result<RawClient, CliError> {
        let client = redis::Client::open(url)
            .map_err(|err| CliError::usage(format!("invalid --url {url:?}: {err}")))?;
        let mut config = AsyncConnectionConfig::new();
        if let Some(timeout) = response_timeout {
            config = config.set_response_timeout(Some(timeout));
        }
        Replacing::open(Multiplexed { client, config })
            .await
            .map_err(|err| CliError::runtime(format!("cannot connect to {url}: {err}")))
    }
}

/// Asks the sentinels in turn for `master`'s address (`SENTINEL GET-MASTER-ADDR-BY-NAME`) and
/// returns it as a `redis://HOST:PORT` URL: where the raw baseline connects, once, at start.
///
/// # Errors
/// [`CliError::Runtime`] when no sentinel names a master within [`super::PREFLIGHT_TIMEOUT`].
pub(crate) async fn sentinel_master_url(
    sentinels: &[(String, u16)],
    master: &str,
) -> Result<String, CliError> {
    let mut last = String::from("no sentinel given");
    for (host, port) in sentinels {
        let ask = async {
            let client = redis::Client::open(format!("redis://{host}:{port}"))?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(super::PREFLIGHT_TIMEOUT, ask).await {
            Ok(Ok(Some((ip, master_port)))) => return Ok(format!("redis://{ip}:{master_port}")),
            Ok(Ok(None)) => last = format!("{host}:{port} does not know {master:?}"),
            Ok(Err(err)) => last = format!("{host}:{port}: {err}"),
            Err(_) => last = format!("{host}:{port}: no answer"),
        }
    }
    Err(CliError::runtime(format!(
        "cannot find master {master:?} through the sentinels: {last}"
    )))
}

#[cfg(test)]
mod tests {
    use redis_lab::RedisServer;

    use super::*;
    use crate::client::replacing::assert_replaced_once_for_every_worker;

    #[tokio::test]
    async fn a_broken_connection_is_replaced_once_for_every_worker() {
        let server = RedisServer::start().await.expect("lab server");
        let first = RawClient::connect(&server.url(), None)
            .await
            .expect("connects");
        assert_replaced_once_for_every_worker(&server, first).await;
    }
}
