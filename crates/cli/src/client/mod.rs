//! The two clients the CLI drives, behind one small trait so the workload loops are written once.
//!
//! - `resilient`: [`resilient_redis::Client`] with its defaults (or `--deadline-ms`), for one
//!   server, through Sentinel or for a cluster.
//! - `naive`: the usual hand-written retry loop, kept as the anti-pattern to compare against
//!   (see [`NaiveClient`]): it retries every connection error and `THROTTLED` on a fixed
//!   exponential schedule, with no jitter and no budget, until the call's deadline.
//! - `raw`: the baseline, a plain redis-rs `MultiplexedConnection` with redis-rs defaults and no
//!   retries. A broken `MultiplexedConnection` stays broken forever, so — as a hand-written app
//!   would — a raw worker that sees an unrecoverable error (dropped connection, I/O failure) asks
//!   for a new connection before its next call. The error itself is still counted: nothing is
//!   retried. Concurrent workers share one replacement connection (one reconnect per breakage).
//!   With Sentinel the raw client connects to the master the sentinels name at start and stays
//!   on that address (what a naive app does); for a cluster it is redis-rs's async cluster
//!   connection with its defaults ([`RawCluster`]).
//! - `wire` (hidden): resilient-redis's prototype single-socket connection
//!   (`resilient_redis::wire::WireConnection`) as a baseline, replaced after it breaks as
//!   raw's is (`replacing.rs`); one server (`--url`, or the master the sentinels name), plain
//!   RESP2, no response timeout.

mod naive;
mod raw;
mod raw_cluster;
mod replacing;
mod wire;

use std::future::Future;
use std::time::Duration;

use clap::ValueEnum;
use redis::RedisError;
use redis::aio::ConnectionLike;

use crate::error::CliError;
use crate::target::{Access, Target, sentinel_url};

pub(crate) use naive::NaiveClient;
pub(crate) use raw::{RawClient, sentinel_master_url};
pub(crate) use raw_cluster::RawCluster;
pub(crate) use wire::WireClient;

/// Which client a run uses (`--client`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ClientKind {
    /// The resilient-redis client.
    Resilient,
    /// Baseline: a plain redis-rs MultiplexedConnection, no retries (replaced after it breaks).
    Raw,
    /// Anti-pattern: a MultiplexedConnection that retries every connection error and THROTTLED
    /// after 10, 20, 40 ... ms (capped at 1 s), no jitter, no budget, until --deadline-ms.
    Naive,
    /// Prototype: resilient-redis's single-socket WireConnection, no retries (replaced after
    /// it breaks); plain RESP2, no response timeout.
    #[value(hide = true)]
    Wire,
}

impl ClientKind {
    /// The name used in reports (`"resilient"` / `"raw"` / `"naive"` / `"wire"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClientKind::Resilient => "resilient",
            ClientKind::Raw => "raw",
            ClientKind::Naive => "naive",
            ClientKind::Wire => "wire",
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
    /// Attempts sent to the server, retries included; `None` when the client does not count
    /// them because it sends each call exactly once (raw: attempts = calls sent).
    pub(crate) attempts: Option<u64>,
    /// Calls the client refused locally (adaptive throttling) without sending them.
    pub(crate) rejected_locally: u64,
    /// Writes whose `WAIT` reported too few replicas (`--durability replicated`).
    pub(crate) unconfirmed: u64,
    /// Replies that came from a master the client already knew was demoted
    /// (`--durability replicated`): not counted as successes.
    pub(crate) deposed_replies: u64,
    /// Transaction runs repeated because a watched key changed (`--workload cas`).
    pub(crate) conflicts: u64,
    /// Read attempts sent to a replica (`--read-from`; always 0 for raw).
    pub(crate) replica_reads: u64,
}

impl ClientCounters {
    /// The counters accumulated since `earlier`.
    pub(crate) fn since(self, earlier: ClientCounters) -> ClientCounters {
        ClientCounters {
            retries: self.retries.saturating_sub(earlier.retries),
            reconnects: self.reconnects.saturating_sub(earlier.reconnects),
            attempts: self
                .attempts
                .map(|now| now.saturating_sub(earlier.attempts.unwrap_or(0))),
            rejected_locally: self
                .rejected_locally
                .saturating_sub(earlier.rejected_locally),
            unconfirmed: self.unconfirmed.saturating_sub(earlier.unconfirmed),
            deposed_replies: self.deposed_replies.saturating_sub(earlier.deposed_replies),
            conflicts: self.conflicts.saturating_sub(earlier.conflicts),
            replica_reads: self.replica_reads.saturating_sub(earlier.replica_reads),
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
        ClientCounters {
            retries: stats.retries,
            // In a cluster, following the topology is refreshing the slot map: counted too.
            reconnects: stats.reconnects + stats.refreshes,
            attempts: Some(stats.attempts),
            rejected_locally: stats.rejected_locally,
            unconfirmed: stats.unconfirmed,
            deposed_replies: stats.deposed_replies,
            conflicts: stats.conflicts,
            replica_reads: stats.replica_reads,
        }
    }
}

/// A resilient client whose calls go through [`resilient_redis::ExactlyOnce`] (`bench
/// --exactly-once`): every write carries an idempotency token checked by a server-side script.
#[derive(Clone)]
pub(crate) struct ExactlyOnceApp<C> {
    client: C,
    xo: resilient_redis::ExactlyOnce,
}

impl ExactlyOnceApp<resilient_redis::Client> {
    /// Wraps `client` with the default exactly-once settings.
    pub(crate) fn new(client: resilient_redis::Client) -> Result<Self, CliError> {
        let xo = client
            .exactly_once(resilient_redis::ExactlyOnceConfig::default())
            .map_err(|e| CliError::usage(format!("--exactly-once: {e}")))?;
        Ok(ExactlyOnceApp { client, xo })
    }
}

impl<C: AppClient> AppClient for ExactlyOnceApp<C> {
    type Conn = resilient_redis::ExactlyOnce;

    fn conn(&mut self) -> &mut Self::Conn {
        &mut self.xo
    }

    async fn after_error(&mut self, _err: &RedisError) {}

    fn counters(&self) -> ClientCounters {
        self.client.counters()
    }
}

/// A resilient client that runs each `INCR key` it is given as an optimistic transaction
/// (`bench --workload cas`): `WATCH key`, `GET key`, then `MULTI` `SET key n+1` `EXEC`, run
/// again on a conflict; the reply is the new value, as `INCR`'s.
#[derive(Clone)]
pub(crate) struct CasApp {
    client: resilient_redis::Client,
    conn: Cas,
}

impl CasApp {
    /// Wraps `client`.
    pub(crate) fn new(client: resilient_redis::Client) -> Self {
        CasApp {
            conn: Cas(client.clone()),
            client,
        }
    }
}

impl AppClient for CasApp {
    type Conn = Cas;

    fn conn(&mut self) -> &mut Self::Conn {
        &mut self.conn
    }

    async fn after_error(&mut self, _err: &RedisError) {}

    fn counters(&self) -> ClientCounters {
        self.client.counters()
    }
}

/// The connection of [`CasApp`]: `INCR key` in, a transaction out (other commands as they are).
#[derive(Clone)]
pub(crate) struct Cas(resilient_redis::Client);

impl ConnectionLike for Cas {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        let mut args = cmd.args_iter();
        let key = match (args.next(), args.next(), args.next()) {
            (Some(redis::Arg::Simple(b"INCR")), Some(redis::Arg::Simple(key)), None) => {
                key.to_vec()
            }
            // Anything else (the preflight's PING) goes as it is.
            _ => return self.0.req_packed_command(cmd),
        };
        Box::pin(async move {
            let (value,): (i64,) = self
                .0
                .transaction(&[&key], |mut tx| {
                    let key = key.clone();
                    async move {
                        let n: Option<i64> = redis::AsyncCommands::get(&mut tx, &key).await?;
                        Ok(redis::pipe()
                            .set(&key, n.unwrap_or(0) + 1)
                            .ignore()
                            .get(&key)
                            .clone())
                    }
                })
                .await
                .map_err(resilient_redis::Error::into_redis)?;
            Ok(redis::Value::Int(value))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _cmd: &'a redis::Pipeline,
        _offset: usize,
        _count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async {
            Err(RedisError::from((
                redis::ErrorKind::Client,
                "the cas workload sends no pipeline",
            )))
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Connects the resilient client to `target` (a server, Sentinel or a cluster) with `access`'s
/// credentials and connection name, overriding its total deadline when `deadline` is set.
///
/// # Errors
/// [`CliError::Usage`] for a malformed target, [`CliError::Runtime`] when it cannot connect
/// within [`PREFLIGHT_TIMEOUT`].
pub(crate) async fn connect_resilient(
    target: &Target,
    access: &Access,
    deadline: Option<Duration>,
) -> Result<resilient_redis::Client, CliError> {
    let (url, flag) = match target {
        Target::Standalone { url } => (url.clone(), "--url"),
        Target::Sentinel { sentinels, master } => (sentinel_url(sentinels, master), "--sentinel"),
        Target::Cluster { urls } => (urls.join(","), "--cluster"),
    };
    let config = match target {
        Target::Cluster { urls } => resilient_redis::ClientConfig::cluster(urls),
        _ => resilient_redis::ClientConfig::from_url(&url),
    };
    let mut config = config.map_err(|err| {
        let shown = resilient_redis::redact_url(&url);
        CliError::usage(format!("invalid {flag} {shown:?}: {err}"))
    })?;
    if let Some(deadline) = deadline {
        config.deadline = deadline;
    }
    access.apply(&mut config);
    match tokio::time::timeout(
        PREFLIGHT_TIMEOUT,
        resilient_redis::Client::with_config(config),
    )
    .await
    {
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
    match tokio::time::timeout(
        PREFLIGHT_TIMEOUT,
        ping.query_async::<redis::Value>(client.conn()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(CliError::runtime(format!("cannot reach {url}: {err}"))),
        Err(_) => Err(CliError::runtime(format!(
            "cannot reach {url}: no answer to PING within {} s",
            PREFLIGHT_TIMEOUT.as_secs()
        ))),
    }
}
