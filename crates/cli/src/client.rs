//! The two clients the CLI drives, behind one small trait so the workload loops are written once.
//!
//! - `resilient`: [`resilient_redis::Client`] with its defaults (or `--deadline-ms`).
//! - `raw`: the baseline, a plain redis-rs [`MultiplexedConnection`] with redis-rs defaults and no
//!   retries. A broken `MultiplexedConnection` stays broken forever, so — as a hand-written app
//!   would — a raw worker that sees an unrecoverable error (dropped connection, I/O failure) asks
//!   for a new connection before its next call. The error itself is still counted: nothing is
//!   retried. Concurrent workers share one replacement connection (one reconnect per breakage).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::ValueEnum;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisError};

use crate::error::CliError;

/// Which client a run uses (`--client`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ClientKind {
    /// The resilient-redis client.
    Resilient,
    /// A plain redis-rs `MultiplexedConnection`, no retries (the baseline).
    Raw,
}

impl ClientKind {
    /// The name used in reports (`"resilient"` / `"raw"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClientKind::Resilient => "resilient",
            ClientKind::Raw => "raw",
        }
    }
}

/// Counters a client keeps about itself, cumulative since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientCounters {
    /// Attempts the client repeated on its own (always 0 for raw).
    pub(crate) retries: u64,
    /// New connections opened after a breakage.
    pub(crate) reconnects: u64,
}

impl ClientCounters {
    /// The counters accumulated since `earlier`.
    pub(crate) fn since(self, earlier: ClientCounters) -> ClientCounters {
        ClientCounters {
            retries: self.retries.saturating_sub(earlier.retries),
            reconnects: self.reconnects.saturating_sub(earlier.reconnects),
        }
    }
}

/// A per-worker handle on a client: cloned once per task, then used for every call of that task.
pub(crate) trait AppClient: Clone + Send + Sync + 'static {
    /// The connection the worker sends its commands on.
    type Conn: ConnectionLike + Send;

    /// The connection for the next call.
    fn conn(&mut self) -> &mut Self::Conn;

    /// Called after a call failed with `err`, before the worker's next call.
    fn after_error(&mut self, err: &RedisError) -> impl Future<Output = ()> + Send;

    /// The client's own counters.
    fn counters(&self) -> ClientCounters;
}

impl AppClient for resilient_redis::Client {
    type Conn = resilient_redis::Client;

    fn conn(&mut self) -> &mut Self::Conn {
        self
    }

    async fn after_error(&mut self, _err: &RedisError) {}

    fn counters(&self) -> ClientCounters {
        let stats = self.stats();
        ClientCounters { retries: stats.retries, reconnects: stats.reconnects }
    }
}

/// Connects the resilient client, overriding its total deadline when `deadline` is set.
pub(crate) async fn connect_resilient(
    url: &str,
    deadline: Option<Duration>,
) -> Result<resilient_redis::Client, CliError> {
    let mut config = resilient_redis::ClientConfig::from_url(url)
        .map_err(|err| CliError::usage(format!("invalid --url {url:?}: {err}")))?;
    if let Some(deadline) = deadline {
        config.deadline = deadline;
    }
    match tokio::time::timeout(PREFLIGHT_TIMEOUT, resilient_redis::Client::with_config(config)).await {
        Ok(Ok(client)) => Ok(client),
        // The client's error already names the server.
        Ok(Err(err)) => Err(CliError::runtime(err.to_string())),
        Err(_) => Err(CliError::runtime(format!(
            "cannot connect to {url}: no connection within {} s",
            PREFLIGHT_TIMEOUT.as_secs()
        ))),
    }
}

/// How long connecting and the first PING may take before the server is called unreachable.
pub(crate) const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that the server answers a PING through `client`, so an unreachable server is one clear
/// error before a run starts rather than a run full of errors.
pub(crate) async fn preflight<C: AppClient>(client: &mut C, url: &str) -> Result<(), CliError> {
    let ping = redis::cmd("PING");
    match tokio::time::timeout(PREFLIGHT_TIMEOUT, ping.query_async::<redis::Value>(client.conn())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(CliError::runtime(format!("cannot reach {url}: {err}"))),
        Err(_) => Err(CliError::runtime(format!(
            "cannot reach {url}: no answer to PING within {} s",
            PREFLIGHT_TIMEOUT.as_secs()
        ))),
    }
}

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
        Ok(RawClient { shared, conn, generation: 0 })
    }

    /// Picks up a replacement connection another worker opened.
    fn refresh(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            let current = self.shared.current.lock().unwrap_or_else(PoisonError::into_inner);
            self.conn = current.clone();
            self.generation = self.shared.generation.load(Ordering::Acquire);
        }
    }

    /// Replaces the shared connection unless another worker already did since we last looked.
    async fn reconnect(&mut self) {
        let shared = Arc::clone(&self.shared);
        {
            let _guard = shared.reconnecting.lock().await;
            if shared.generation.load(Ordering::Acquire) == self.generation {
                let Ok(conn) = shared.client.get_multiplexed_async_connection_with_config(&shared.config).await
                else {
                    // Server still down: the next call fails fast and tries again.
                    return;
                };
                *shared.current.lock().unwrap_or_else(PoisonError::into_inner) = conn;
                shared.generation.fetch_add(1, Ordering::AcqRel);
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.refresh();
    }
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
        ClientCounters { retries: 0, reconnects: self.shared.reconnects.load(Ordering::Relaxed) }
    }
}
