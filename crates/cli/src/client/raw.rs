//! The raw baseline: a plain redis-rs `MultiplexedConnection`, no retries, replaced after it breaks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use super::{AppClient, ClientCounters};
use crate::error::CliError;

/// The raw baseline: one shared multiplexed connection, replaced after it breaks.
#[derive(Clone)]
pub(crate) struct RawClient {
    shared: Arc<RawShared>,
    conn: MultiplexedConnection,
    generation: u64,
}

struct RawShared {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// Bumped each time `current` is replaced.
    generation: AtomicU64,
    current: Mutex<MultiplexedConnection>,
    /// Serialises reconnects so a breakage seen by many workers opens one connection.
    reconnecting: tokio::sync::Mutex<()>,
    reconnects: AtomicU64,
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
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|err| CliError::runtime(format!("cannot connect to {url}: {err}")))?;
        let shared = Arc::new(RawShared {
            client,
            config,
            generation: AtomicU64::new(0),
            current: Mutex::new(conn.clone()),
            reconnecting: tokio::sync::Mutex::new(()),
            reconnects: AtomicU64::new(0),
        });
        Ok(RawClient {
            shared,
            conn,
            generation: 0,
        })
    }

    /// The connection this handle uses now (without picking up a replacement).
    pub(super) fn current(&self) -> &MultiplexedConnection {
        &self.conn
    }

    /// Picks up a replacement connection another worker opened.
    fn refresh(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            let current = self
                .shared
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.conn = current.clone();
            self.generation = self.shared.generation.load(Ordering::Acquire);
        }
    }

    /// Replaces the shared connection unless another worker already did since we last looked.
    pub(super) async fn reconnect(&mut self) {
        let shared = Arc::clone(&self.shared);
        {
            let _guard = shared.reconnecting.lock().await;
            if shared.generation.load(Ordering::Acquire) == self.generation {
                let Ok(conn) = shared
                    .client
                    .get_multiplexed_async_connection_with_config(&shared.config)
                    .await
                else {
                    // Server still down: the next call fails fast and tries again.
                    return;
                };
                *shared
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = conn;
                shared.generation.fetch_add(1, Ordering::AcqRel);
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.refresh();
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

impl AppClient for RawClient {
    type Conn = MultiplexedConnection;

    fn conn(&mut self) -> &mut Self::Conn {
        self.refresh();
        &mut self.conn
    }

    async fn after_error(&mut self, err: &RedisError) {
        if err.is_unrecoverable_error() {
            self.reconnect().await;
        }
    }

    fn counters(&self) -> ClientCounters {
        ClientCounters {
            retries: 0,
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            attempts: None,
            ..ClientCounters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use redis_lab::RedisServer;

    use super::*;
    use crate::workload::{CallOutcome, timed_call};

    #[tokio::test]
    async fn a_broken_connection_is_replaced_once_for_every_worker() {
        let server = RedisServer::start().await.expect("lab server");
        let mut first = RawClient::connect(&server.url(), None)
            .await
            .expect("connects");
        let mut second = first.clone();
        let ping = redis::cmd("PING");
        assert_eq!(timed_call(&mut first, &ping).await.0, CallOutcome::Ok);

        assert!(server.client_kill_normal().await.expect("CLIENT KILL") >= 1);
        // The raw client does not retry: the call in flight on the killed connection fails...
        let (outcome, _) = timed_call(&mut first, &ping).await;
        assert!(outcome.is_error(), "{outcome:?}");
        // ...and the worker replaced the connection for everyone.
        assert_eq!(
            first.counters(),
            ClientCounters {
                retries: 0,
                reconnects: 1,
                attempts: None,
                ..ClientCounters::default()
            }
        );
        assert_eq!(timed_call(&mut first, &ping).await.0, CallOutcome::Ok);
        assert_eq!(timed_call(&mut second, &ping).await.0, CallOutcome::Ok);
        assert_eq!(
            second.counters().reconnects,
            1,
            "one reconnect for both workers"
        );
    }
}
