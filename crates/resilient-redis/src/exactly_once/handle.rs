//! [`ExactlyOnce`]: the public handle, how a client makes one, and its methods.

use std::sync::{Arc, atomic::Ordering};

use rand::TryRng;
use redis::{Cmd, Pipeline, RedisFuture, Value, aio::ConnectionLike};

use super::{
    batch,
    config::{ExactlyOnceConfig, check_client},
    errors::error_of,
    pipeline::whole,
    shared::Shared,
    token::{self, Token},
};
use crate::{
    client::Client,
    error::{Error, ErrorKind, Outcome},
};

/// A client whose writes run at most once, whatever the retries: see the [module
/// docs](crate::exactly_once) for how.
///
/// Cheap to clone (clones share the instance id, the token sequence and the counters) and
/// implements [`redis::aio::ConnectionLike`]: [`redis::AsyncCommands`] methods, [`redis::pipe()`]
/// (plain and atomic) go through it. Build it from a [`Client`] (any topology) with
/// `exactly_once`, and use it for the writes that must not run twice (or for everything: reads
/// pass straight through).
///
/// # Behavior
/// - A write is retried by the client's own rules, treated as safe to repeat: after a connection
///   lost mid-flight, the retry either applies the write (the first attempt never ran) or returns
///   the recorded reply of the attempt that did. The call fails as ambiguous only when the client
///   gives up after such a failure, at its deadline or on an open circuit breaker: a retry the
///   retry budget or adaptive throttling refuses is sent again under the token, 20 ms apart,
///   within the deadline.
/// - Everything else is as for the plain client: deadlines, budget, breaker, error replies.
///
/// # Example
/// ```no_run
/// use redis::AsyncCommands;
/// use resilient_redis::{Client, ExactlyOnceConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::connect("redis://127.0.0.1:6379").await?;
/// let mut xo = client.exactly_once(ExactlyOnceConfig::default())?;
/// // Retried after a broken connection without ever counting twice.
/// let n: i64 = xo.incr("visits", 1).await?;
/// // A transaction is one token: all of it runs once.
/// let (a, b): (i64, i64) = redis::pipe().atomic().incr("a", 1).incr("b", 1).query_async(&mut xo).await?;
/// // A caller-chosen idempotency key (say, from an HTTP request): repeats return the first reply.
/// let paid = xo.send_with_key("order-1234", redis::cmd("INCRBY").arg("balance").arg(-30)).await?;
/// println!("{n} {a} {b} {paid:?} {:?}", xo.stats());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ExactlyOnce {
    backend: Client,
    shared: Arc<Shared>,
    /// Outside `Shared`: its worker holds `Shared`, and ends when the last handle is dropped.
    batcher: Arc<batch::Batcher>,
}

impl Client {
    /// A handle whose writes run exactly once, with idempotency tokens checked by the server
    /// (Redis >= 7.0 in a cluster). It shares the connections, budget and breakers of `self`;
    /// see [`ExactlyOnce`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`]: an invalid `config`, a `token_ttl` shorter than the client's
    /// deadline, or a RESP3 connection. [`ErrorKind::Unavailable`] if the operating system gives
    /// no randomness for the instance id.
    pub fn exactly_once(&self, config: ExactlyOnceConfig) -> Result<ExactlyOnce, Error> {
        let protocol = self.config().connection_info()?.redis_settings().protocol();
        check_client(&config, self.call_deadline(), protocol)?;
        let cluster = self.config().cluster.is_some();
        ExactlyOnce::new(self.idempotent(), config, cluster)
    }
}

impl ExactlyOnce {
    fn new(backend: Client, config: ExactlyOnceConfig, cluster: bool) -> Result<Self, Error> {
        let mut id = [0u8; 16];
        rand::rngs::SysRng.try_fill_bytes(&mut id).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                Outcome::Failed,
                format!(
                    "no randomness from the operating system for the exactly-once instance id: {e}"
                ),
            )
        })?;
        let instance = token::instance_id(id);
        Ok(ExactlyOnce {
            backend,
            batcher: Arc::new(batch::Batcher::new(
                config.batches_in_flight,
                config.max_batch,
            )),
            shared: Arc::new(Shared::new(
                config,
                instance,
                cluster,
                metrics::counter!(crate::observe::EXACTLY_ONCE_REPLAYS),
            )),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &ExactlyOnceConfig {
        &self.shared.config
    }

    /// Counters since it was created (shared by all clones).
    pub fn stats(&self) -> ExactlyOnceStats {
        let s = &self.shared;
        ExactlyOnceStats {
            writes: s.writes.get(),
            replays: s.replays.load(Ordering::Relaxed),
            reads: s.reads.get(),
            script_loads: s.script_loads.load(Ordering::Relaxed),
            script_calls: s.script_calls.get(),
        }
    }

    /// Runs one command exactly once and returns its reply. Error replies of the command come
    /// back as `Ok(Value::ServerError(..))`, as with [`Client::send`].
    ///
    /// # Errors
    /// The client's errors; [`ErrorKind::Refused`] for a command that cannot run exactly once
    /// (see the [module docs](crate::exactly_once)).
    pub async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        let mut backend = self.backend.clone();
        self.shared
            .command(&self.batcher, &mut backend, cmd, Token::Generated)
            .await
            .map_err(error_of)
    }

    /// Runs one command exactly once under a caller-chosen idempotency key: the first call with
    /// `key` runs it; every call with the same key (from any client with the same prefix) within
    /// the TTL returns the first call's reply without running anything. As for a payment API's
    /// idempotency key, the key names one logical operation: reusing it for another command
    /// returns the first one's reply. A read-only command is sent as it is (nothing recorded).
    ///
    /// # Errors
    /// As [`ExactlyOnce::send`]; [`ErrorKind::InvalidConfig`] for an empty key.
    pub async fn send_with_key(&self, key: &str, cmd: &Cmd) -> Result<Value, Error> {
        if key.is_empty() {
            return Err(Error::config("an idempotency key must not be empty"));
        }
        let mut backend = self.backend.clone();
        self.shared
            .command(
                &self.batcher,
                &mut backend,
                cmd,
                Token::Caller(key.as_bytes()),
            )
            .await
            .map_err(error_of)
    }

    /// Runs a pipeline (plain or atomic) exactly once as a whole, with one token, and returns the
    /// replies as [`Client::send_pipeline`] does (an atomic pipeline: one array, the `EXEC` reply).
    ///
    /// # Errors
    /// As [`ExactlyOnce::send`].
    pub async fn send_pipeline(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Error> {
        let (offset, count) = whole(pipeline);
        let mut backend = self.backend.clone();
        self.shared
            .group(&mut backend, pipeline, offset, count, Token::Generated)
            .await
            .map_err(error_of)
    }

    /// [`ExactlyOnce::send_pipeline`] under a caller-chosen idempotency key (see
    /// [`ExactlyOnce::send_with_key`]).
    ///
    /// # Errors
    /// As [`ExactlyOnce::send_with_key`].
    pub async fn send_pipeline_with_key(
        &self,
        key: &str,
        pipeline: &Pipeline,
    ) -> Result<Vec<Value>, Error> {
        if key.is_empty() {
            return Err(Error::config("an idempotency key must not be empty"));
        }
        let (offset, count) = whole(pipeline);
        let mut backend = self.backend.clone();
        self.shared
            .group(
                &mut backend,
                pipeline,
                offset,
                count,
                Token::Caller(key.as_bytes()),
            )
            .await
            .map_err(error_of)
    }
}

/// Counters of an [`ExactlyOnce`] (shared by its clones) since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactlyOnceStats {
    /// Calls sent with a token (commands, pipelines and transactions that write).
    pub writes: u64,
    /// Attempts answered from a recorded reply: a retry (or a repeated caller-chosen key) whose
    /// write had already been applied.
    pub replays: u64,
    /// Calls that only read, sent without a token.
    pub reads: u64,
    /// Times the script was sent whole (`EVAL`) after a `NOSCRIPT` reply.
    pub script_loads: u64,
    /// Script calls made for the writes: fewer than `writes` when concurrent writes shared
    /// calls (group commit; retries of a call are not counted again).
    pub script_calls: u64,
}

impl ConnectionLike for ExactlyOnce {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        // The backend is used in place: it keeps its cached connection between calls.
        let ExactlyOnce {
            backend,
            shared,
            batcher,
        } = self;
        Box::pin(shared.command(batcher, backend, cmd, Token::Generated))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let ExactlyOnce {
            backend, shared, ..
        } = self;
        Box::pin(shared.group(backend, pipeline, offset, count, Token::Generated))
    }

    fn get_db(&self) -> i64 {
        self.backend.get_db()
    }
}

impl std::fmt::Debug for ExactlyOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnce")
            .field("cluster", &self.shared.cluster)
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ExactlyOnce>();
        check::<ExactlyOnceConfig>();
        check::<ExactlyOnceStats>();
    }
}
