//! Exactly-once writes: idempotency tokens checked by the server, so a write whose connection
//! broke mid-flight can be retried without running twice.
//!
//! Without this, an `INCR` whose reply was lost can only be reported as *ambiguous* (it may
//! have been applied). [`ExactlyOnce`] gives every logical write a unique token, kept across its
//! retries, and runs the write inside a Lua script that checks the token first: the first run
//! applies the command and records its reply under the token (with a TTL); any later run with
//! the same token returns the recorded reply without applying anything. A retry after an
//! ambiguous failure is then safe, and the caller sees a success.
//!
//! # Behavior
//! - Each call (a command, a pipeline or a transaction) gets one token before its first attempt;
//!   every retry the client makes (see [`Client`]) sends the same token.
//! - Reads (see [`crate::commands`]) are sent as they are: they need no token.
//! - The reply is the one the plain command gives (`INCR` an integer, `SET` `OK`, `GET` of a
//!   missing key nil, `LRANGE` an array, error replies unchanged), replayed or not.
//! - A single command that fails (`WRONGTYPE`, ...) did not apply: nothing is recorded, the same
//!   token can be used again. In a pipeline or transaction every command runs (as after a runtime
//!   error in `MULTI`/`EXEC`) and the replies, error entries included, are recorded.
//! - Commands that cannot run inside a script are refused with [`ErrorKind::Refused`] before
//!   anything is sent: blocking commands (`BLPOP`, ...: a script never blocks), scripts and
//!   functions (`EVAL`, `FCALL`, `SCRIPT`, `FUNCTION`), server administration (`CLIENT`,
//!   `CONFIG`, `SHUTDOWN`, ...), and commands with more than 7,000 arguments (Lua's limit);
//!   connection-state commands are refused by the client as always.
//! - Redis Cluster: the token key is put in the slot of the command's keys (with a short hash
//!   tag such as `{a3}` chosen for that slot); a command or pipeline whose keys are in several
//!   slots, or that names no key, is refused with [`ErrorKind::Refused`]. The command's keys are
//!   declared to Redis next to the token key, so a slot being migrated answers `TRYAGAIN` (the
//!   token is new, the keys are still on the source: retried with backoff) instead of sending the
//!   write to the importing node, where it would create a key the migration then cannot move.
//!   The cluster script is declared strict (`#!lua`, Redis >= 7.0): Redis itself refuses a
//!   command that would touch a key of another slot than the token's.
//!
//! # Group commit
//! Concurrent writes through one [`ExactlyOnce`] (and its clones) to a standalone or
//! Sentinel-managed server share script calls: a write goes out at once while fewer than
//! [`ExactlyOnceConfig::batches_in_flight`] calls are outstanding; writes that arrive while they
//! all are go out together in the next call (up to [`ExactlyOnceConfig::max_batch`]), one
//! `EVALSHA` that checks and records each write under its own token and answers each with its
//! own reply. No timer: a lone writer is never delayed, and batches form only under load. The
//! calls run in their own tasks, so a caller that stops waiting (a timeout) does not cancel the
//! writes it shares a call with (its own write may still run, as a request already sent may). A
//! call is retried as a whole by the client's rules, every token unchanged: a write that already
//! ran answers from its record. A write's deadline counts from when it was queued: one whose
//! deadline passes in the queue fails without being sent ([`ErrorKind::DeadlineExceeded`], a
//! definite failure), and a call is sent with what is left of its oldest write's deadline, so no
//! caller waits past its deadline. In a cluster every write is its own call (writes go to
//! different nodes).
//!
//! # Cost
//! - One round trip per call, as without it: `EVALSHA` with the script's SHA1 (computed once);
//!   after `NOSCRIPT` (a restarted or failed-over server, `SCRIPT FLUSH`) the call is sent once
//!   with `EVAL`, which also caches the script. `NOSCRIPT` means nothing ran. The script text
//!   is versioned (its first line): a new version has a new SHA1, loaded the same way.
//! - On the server, per call: the script; per write in it: the command, and its share of one
//!   `HMGET` (the records) and one `HSET` (the new ones) per hash of records. Measured with
//!   `INFO commandstats` (Redis 7.0, 2-core box, 50 tasks doing `INCR`): 8 to 16 writes per
//!   call, `EVALSHA` 2.5 to 4.1 µs per write, where `INCR` alone takes 0.17 µs. Before group
//!   commit and hashes (one call and one key per write) it was 5 to 9 µs per write, most of it
//!   creating and later expiring one key per write.
//! - On the client: about the CPU of a plain call per write (3.3 to 4.3 µs per `INCR` with the
//!   benchmark's own work, against 3.7 to 4.2 µs plain): a write is queued and gets its reply
//!   through a channel, and a call's request carries many writes.
//! - Throughput (`scripts/bench-exactly-once.sh`, release build, client and server sharing two
//!   cores, 50 tasks): exactly-once `INCR` 0.52 to 0.62 of plain `INCR`, `LPUSH` 0.55 to 0.66
//!   (seven runs); p50 latency 250 to 400 µs against 170 to 215 µs, p99 0.5 to 1.8 ms against
//!   0.3 to 1.0 ms. At 256 tasks, about 60 writes per call and 240 to 265 k writes/s.
//!
//! # Storage
//! - A generated token's record is a field of a small hash (see `token.rs`): 64 records per
//!   hash, one hash per 64 writes of an instance within a period of a quarter of
//!   [`ExactlyOnceConfig::token_ttl`]. The hash expires the TTL and one period after its first
//!   record: every record is kept at least the TTL after its write was first sent, and at most
//!   the TTL, one period and the client's deadline. Redis keeps such a hash as a listpack:
//!   **14 bytes of `used_memory` per `INCR`** measured (Redis 7.0), against 154 for a key of
//!   its own: plan on `writes per second x 1.25 x TTL x ~15 B` (10,000 writes/s with the
//!   default 60 s TTL: about 11 MB). Replies longer than 64 bytes (Redis's
//!   `hash-max-listpack-value`) turn their hash into a hash table: more memory per record.
//! - A caller-chosen key's record is a key of its own (`prefix`, the slot's tag in a cluster,
//!   `k:` and the key), kept exactly the TTL.
//! - A record is a one-byte type tag and the reply (2 to 21 bytes for an integer).
//!
//! # Tokens never collide
//! A token is a random 128-bit instance id, drawn from the operating system once per
//! [`ExactlyOnce`] (shared by its clones), and a 64-bit sequence number counted by that instance,
//! both in URL-safe base64.
//! Two tokens of one instance differ by their sequence; two instances collide only if they draw
//! the same id: with a million instances alive within one TTL the probability is about
//! 10^12 / 2^129, below 10^-26. Caller-chosen keys ([`ExactlyOnce::send_with_key`]) live in their
//! own namespace (`k:` after the prefix) and are meant to be shared: the same key from any
//! client means the same logical write.
//!
//! # Limits
//! - Integer replies beyond 2^53 lose precision: Redis's Lua represents numbers as doubles.
//! - RESP2 only (the client's default): through RESP3 a script's nil comes back as a boolean, so
//!   a client configured with `protocol=resp3` is refused at construction.
//! - In a transaction, a command Redis would reject when queued (unknown command, wrong number
//!   of arguments) does not abort the transaction (`EXECABORT`): it gets an error entry and the
//!   other commands run.
//! - The token must outlive every retry: [`ExactlyOnceConfig::token_ttl`] must be at least the
//!   client's deadline (checked at construction).
//!
//! # Metrics and events
//! `resilient_redis_exactly_once_replays_total` (counter) and a `debug` event count the retries
//! answered from a recorded reply; [`ExactlyOnce::stats`] has the same figures.

mod batch;
mod check;
mod script;
mod slot;
mod token;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::TryRng;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value, aio::ConnectionLike};
use tokio::time::Instant;

use crate::{
    client::Client,
    commands::CommandSafety,
    error::{Error, ErrorKind, Outcome},
    retry::cooperating,
    striped::StripedCounter,
    topology::cluster::ClusterClient,
};
use check::check_command;
use script::{Answer, Commands, Invoke, Script};
use slot::Placement;
use token::{INSTANCE_LEN, Token, TokenKey};

/// Settings of [`ExactlyOnce`].
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
    /// [`ErrorKind::InvalidConfig`]: a TTL under 1 s or over 10 years, a prefix with braces or
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

/// The client underneath.
#[derive(Clone)]
enum Backend {
    Standalone(Client),
    Cluster(ClusterClient),
}

impl Backend {
    async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Backend::Standalone(c) => c.req_packed_command(cmd).await,
            Backend::Cluster(c) => c.req_packed_command(cmd).await,
        }
    }

    async fn pipeline(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Backend::Standalone(c) => c.req_packed_commands(pipeline, offset, count).await,
            Backend::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
        }
    }

    fn db(&self) -> i64 {
        match self {
            Backend::Standalone(c) => c.get_db(),
            Backend::Cluster(c) => c.get_db(),
        }
    }

    /// The total deadline of a call.
    fn deadline(&self) -> Duration {
        match self {
            Backend::Standalone(c) => c.call_deadline(),
            Backend::Cluster(c) => c.call_deadline(),
        }
    }

    /// The same backend with another deadline per call.
    fn with_deadline(&self, deadline: Duration) -> Result<Backend, Error> {
        Ok(match self {
            Backend::Standalone(c) => Backend::Standalone(c.with_deadline(deadline)?),
            Backend::Cluster(c) => Backend::Cluster(c.with_deadline(deadline)?),
        })
    }
}

struct Shared {
    config: ExactlyOnceConfig,
    /// `token_ttl` in milliseconds, as the script's argument: the TTL of a caller-chosen key.
    ttl_ms: String,
    /// The TTL of a hash of generated records: `token_ttl` and one period (see `token.rs`).
    hash_ttl_ms: String,
    /// When the instance was made: periods count from here.
    epoch: Instant,
    /// The length of a period: a quarter of `token_ttl`.
    period: Duration,
    /// The instance id (base64): the first part of every generated token.
    instance: [u8; INSTANCE_LEN],
    cluster: bool,
    script: Script,
    /// The script that runs a batch of writes (see `batch.rs`).
    batch_script: Script,
    sequence: AtomicU64,
    writes: StripedCounter,
    reads: StripedCounter,
    replays: AtomicU64,
    script_loads: AtomicU64,
    script_calls: StripedCounter,
    replays_metric: metrics::Counter,
}

/// A client whose writes run at most once, whatever the retries: see the [module
/// docs](self) for how.
///
/// Cheap to clone (clones share the instance id, the token sequence and the counters) and
/// implements [`redis::aio::ConnectionLike`]: [`redis::AsyncCommands`] methods, [`redis::pipe()`]
/// (plain and atomic) go through it. Build it from a [`Client`] or a [`ClusterClient`] with
/// `exactly_once`, and use it for the writes that must not run twice (or for everything: reads
/// pass straight through).
///
/// # Behavior
/// - A write is retried by the client's own rules, treated as safe to repeat: after a connection
///   lost mid-flight, the retry either applies the write (the first attempt never ran) or returns
///   the recorded reply of the attempt that did. The call fails as ambiguous only when the client
///   gives up (deadline, retry budget, circuit breaker) after such a failure.
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
    backend: Backend,
    shared: Arc<Shared>,
    /// Outside `Shared`: its worker holds `Shared`, and ends when the last handle is dropped.
    batcher: Arc<batch::Batcher>,
}

impl Client {
    /// A handle whose writes run exactly once, with idempotency tokens checked by the server. It
    /// shares the connections, budget and breaker of `self`; see [`ExactlyOnce`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`]: an invalid `config`, a `token_ttl` shorter than the client's
    /// deadline, or a RESP3 connection. [`ErrorKind::Unavailable`] if the operating system gives
    /// no randomness for the instance id.
    pub fn exactly_once(&self, config: ExactlyOnceConfig) -> Result<ExactlyOnce, Error> {
        let protocol = self.config().connection_info()?.redis_settings().protocol();
        check_client(&config, self.call_deadline(), protocol)?;
        ExactlyOnce::new(Backend::Standalone(self.idempotent()), config, false)
    }
}

impl ClusterClient {
    /// A handle whose writes run exactly once, with idempotency tokens checked by the server
    /// (Redis >= 7.0). It shares the connections, slot map, budget and breakers of `self`; see
    /// [`ExactlyOnce`].
    ///
    /// # Errors
    /// As [`Client::exactly_once`].
    pub fn exactly_once(&self, config: ExactlyOnceConfig) -> Result<ExactlyOnce, Error> {
        use redis::IntoConnectionInfo;
        let mut protocol = redis::ProtocolVersion::RESP2;
        for url in &self.config().urls {
            let info = url.as_str().into_connection_info().map_err(|e| {
                Error::config(format!("invalid cluster URL {url:?}")).with_source(e)
            })?;
            if info.redis_settings().protocol() != redis::ProtocolVersion::RESP2 {
                protocol = info.redis_settings().protocol();
            }
        }
        check_client(&config, self.call_deadline(), protocol)?;
        ExactlyOnce::new(Backend::Cluster(self.idempotent()), config, true)
    }
}

fn check_client(
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

impl ExactlyOnce {
    fn new(backend: Backend, config: ExactlyOnceConfig, cluster: bool) -> Result<Self, Error> {
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
                metrics::counter!("resilient_redis_exactly_once_replays_total"),
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
    /// (see the [module docs](self)).
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

impl Shared {
    /// [`Shared::write_or_read`], giving the scheduler its turn after a failure (see
    /// [`crate::retry::cooperate`]): a refused command fails without waiting for anything.
    async fn command(
        self: &Arc<Self>,
        batcher: &Arc<batch::Batcher>,
        backend: &mut Backend,
        cmd: &Cmd,
        token: Token<'_>,
    ) -> RedisResult<Value> {
        cooperating(self.write_or_read(batcher, backend, cmd, token)).await
    }

    async fn write_or_read(
        self: &Arc<Self>,
        batcher: &Arc<batch::Batcher>,
        backend: &mut Backend,
        cmd: &Cmd,
        token: Token<'_>,
    ) -> RedisResult<Value> {
        if check_command(cmd).map_err(Error::into_redis)? == CommandSafety::ReadOnly {
            self.reads.add(1);
            return backend.command(cmd).await;
        }
        if !self.cluster && self.config.max_batch > 1 && matches!(token, Token::Generated) {
            // Group commit (see `batch.rs`).
            // One clock reading: the token's period and the write's place in the queue.
            let now = Instant::now();
            let record = self
                .token_key(token, Placement::Keyless, now)
                .map_err(Error::into_redis)?;
            let (reply, answer) = tokio::sync::oneshot::channel();
            let entry = batch::Entry {
                record,
                cmd: cmd.clone(),
                reply: Some(reply),
                queued_at: now,
            };
            return match batcher.submit(self, backend, entry) {
                None => answer.await.unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Server,
                        Outcome::Ambiguous,
                        "exactly-once: the write's batch was dropped (its runtime stopped)",
                    )
                    .into_redis())
                }),
                Some(entry) => {
                    self.invoke(backend, &entry.record, &[], Commands::One(&entry.cmd))
                        .await
                }
            };
        }
        let keys = if self.cluster {
            slot::command_keys(cmd)
        } else {
            Vec::new()
        };
        let key = self
            .token_key(token, slot::placement_of(&keys), Instant::now())
            .map_err(Error::into_redis)?;
        self.invoke(backend, &key, &keys, Commands::One(cmd)).await
    }

    /// [`Shared::group_once`], giving the scheduler its turn after a failure.
    async fn group(
        &self,
        backend: &mut Backend,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
        token: Token<'_>,
    ) -> RedisResult<Vec<Value>> {
        cooperating(self.group_once(backend, pipeline, offset, count, token)).await
    }

    async fn group_once(
        &self,
        backend: &mut Backend,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
        token: Token<'_>,
    ) -> RedisResult<Vec<Value>> {
        let mut safety = CommandSafety::ReadOnly;
        let mut keys = Vec::new();
        for cmd in pipeline.cmd_iter() {
            safety = safety.max(check_command(cmd).map_err(Error::into_redis)?);
            if self.cluster {
                keys.extend(slot::command_keys(cmd));
            }
        }
        if safety == CommandSafety::ReadOnly {
            self.reads.add(1);
            return backend.pipeline(pipeline, offset, count).await;
        }
        let key = self
            .token_key(token, slot::placement_of(&keys), Instant::now())
            .map_err(Error::into_redis)?;
        let results = match self
            .invoke(backend, &key, &keys, Commands::Group(pipeline))
            .await?
        {
            Value::Array(results) => results,
            // The script failed as a whole (nothing ran): the pipeline's error.
            Value::ServerError(e) => return Err(e.into()),
            other => return Err(unexpected(other)),
        };
        Ok(wire_replies(pipeline, results, offset, count))
    }

    /// Sends the script for `commands` with its `record` (with the commands' `keys` declared
    /// too, in a cluster), once more with `EVAL` after `NOSCRIPT`, and returns the reply.
    async fn invoke(
        &self,
        backend: &mut Backend,
        record: &TokenKey,
        keys: &[&[u8]],
        commands: Commands<'_>,
    ) -> RedisResult<Value> {
        let shared = self;
        shared.writes.add(1);
        shared.script_calls.add(1);
        let ttl_ms = if record.field().is_empty() {
            &shared.ttl_ms
        } else {
            &shared.hash_ttl_ms
        };
        let mut how = Invoke::Sha;
        loop {
            let request = script::invocation(
                &shared.script,
                how,
                record.as_bytes(),
                record.field(),
                keys,
                ttl_ms.as_bytes(),
                commands,
            );
            let answer = match backend.command(&request).await {
                Ok(value) => script::read_answer(value),
                Err(e) if e.code() == Some("NOSCRIPT") => Answer::NoScript,
                Err(e) => return Err(e),
            };
            match answer {
                Answer::Reply { value, replayed } => {
                    if replayed {
                        shared.replayed(record);
                    }
                    return Ok(value);
                }
                Answer::NoScript if how == Invoke::Sha => {
                    // Nothing ran: send the whole script (which also caches it).
                    shared.loaded_script();
                    how = Invoke::Body;
                }
                Answer::NoScript => return Err(unexpected(Value::Nil)),
                Answer::Error(value) => return Ok(value),
                Answer::Unexpected(value) => return Err(unexpected(value)),
            }
        }
    }
}

impl Shared {
    fn new(
        config: ExactlyOnceConfig,
        instance: [u8; INSTANCE_LEN],
        cluster: bool,
        replays_metric: metrics::Counter,
    ) -> Shared {
        let period = config.token_ttl / 4;
        Shared {
            ttl_ms: config.token_ttl.as_millis().to_string(),
            hash_ttl_ms: (config.token_ttl + period).as_millis().to_string(),
            epoch: Instant::now(),
            period,
            instance,
            cluster,
            script: Script::new(cluster),
            batch_script: Script::batch(),
            sequence: AtomicU64::new(0),
            writes: StripedCounter::default(),
            reads: StripedCounter::default(),
            replays: AtomicU64::new(0),
            script_loads: AtomicU64::new(0),
            script_calls: StripedCounter::default(),
            replays_metric,
            config,
        }
    }

    /// Counts a write answered from its record.
    fn replayed(&self, record: &TokenKey) {
        self.replays.fetch_add(1, Ordering::Relaxed);
        self.replays_metric.increment(1);
        tracing::debug!(
            token = %String::from_utf8_lossy(record.as_bytes()),
            field = %String::from_utf8_lossy(record.field()),
            "exactly-once: the write had already been applied; answered from its recorded reply"
        );
    }

    /// Counts a script sent whole after `NOSCRIPT`.
    fn loaded_script(&self) {
        self.script_loads.fetch_add(1, Ordering::Relaxed);
    }

    /// The token key of one call (see `token.rs`), in the slot of its keys in a cluster.
    fn token_key(
        &self,
        token: Token<'_>,
        placement: Placement,
        now: Instant,
    ) -> Result<TokenKey, Error> {
        let tag: &[u8] = match (self.cluster, placement) {
            (false, _) => b"",
            (true, Placement::Slot(slot)) => slot::tag_for_slot(slot),
            (true, Placement::CrossSlot) => {
                return Err(Error::new(
                    ErrorKind::Refused,
                    Outcome::Failed,
                    "exactly-once: the keys of this call are in several hash slots, and its token must share their slot; put them in one slot with a hash tag ({user1}:a, {user1}:b)",
                ));
            }
            (true, Placement::Keyless) => {
                return Err(Error::new(
                    ErrorKind::Refused,
                    Outcome::Failed,
                    "exactly-once: in a cluster a write must name a key (its token is stored in that key's slot)",
                ));
            }
        };
        let period = match token {
            Token::Generated => {
                (now.saturating_duration_since(self.epoch).as_nanos()
                    / self.period.as_nanos().max(1)) as u64
            }
            Token::Caller(_) => 0,
        };
        Ok(TokenKey::new(
            self.config.key_prefix.as_bytes(),
            tag,
            token,
            &self.instance,
            &self.sequence,
            period,
        ))
    }
}

/// The offsets of a whole pipeline's replies, as redis-rs asks for them.
fn whole(pipeline: &Pipeline) -> (usize, usize) {
    if pipeline.is_transaction() {
        (pipeline.len() + 1, 1)
    } else {
        (0, pipeline.len())
    }
}

/// The replies the server would have sent for the pipeline on the wire (for a transaction:
/// `OK`, one `QUEUED` per command, then the `EXEC` array), from `offset`, `count` of them.
fn wire_replies(
    pipeline: &Pipeline,
    results: Vec<Value>,
    offset: usize,
    count: usize,
) -> Vec<Value> {
    if !pipeline.is_transaction() {
        return results.into_iter().skip(offset).take(count).collect();
    }
    let n = pipeline.len();
    if offset == n + 1 && count == 1 {
        return vec![Value::Array(results)];
    }
    std::iter::once(Value::Okay)
        .chain((0..n).map(|_| Value::SimpleString("QUEUED".to_owned())))
        .chain(std::iter::once(Value::Array(results)))
        .skip(offset)
        .take(count)
        .collect()
}

fn unexpected(value: Value) -> RedisError {
    Error::new(
        ErrorKind::Server,
        Outcome::Ambiguous,
        format!("exactly-once: unexpected answer from the script: {value:?}"),
    )
    .into_redis()
}

/// The client's error inside a [`RedisError`] from the [`ConnectionLike`] path.
fn error_of(e: RedisError) -> Error {
    match Error::from_redis(&e) {
        Some(inner) => inner.clone(),
        None => Error::new(ErrorKind::Server, Outcome::of(&e), "request failed").with_source(e),
    }
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
        self.backend.db()
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

    fn shared(cluster: bool) -> Shared {
        Shared::new(
            ExactlyOnceConfig::default(),
            *b"0123456789abcdef012345",
            cluster,
            metrics::Counter::noop(),
        )
    }

    #[test]
    fn token_keys_are_unique_per_call_and_placed_in_the_slot() {
        let s = shared(false);
        let key = |t| {
            let key = s.token_key(t, Placement::Keyless, Instant::now()).unwrap();
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            (text(key.as_bytes()), text(key.field()))
        };
        let hash = "xo:0123456789abcdef012345A.A".to_owned();
        assert_eq!(key(Token::Generated), (hash.clone(), "A".into()));
        assert_eq!(key(Token::Generated), (hash, "B".into()));
        // 0xabc = 42 * 64 + 60: hash 42 (`q`), field 60 (`8`).
        s.sequence.store(0xabc, Ordering::Relaxed);
        assert_eq!(
            key(Token::Generated),
            ("xo:0123456789abcdef012345q.A".into(), "8".into())
        );
        assert_eq!(
            key(Token::Caller(b"order-1")),
            ("xo:k:order-1".into(), String::new())
        );

        let c = shared(true);
        let slot_of_foo = slot::key_slot(b"foo");
        let k = c
            .token_key(
                Token::Generated,
                Placement::Slot(slot_of_foo),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(slot::key_slot(k.as_bytes()), slot_of_foo);
        let k = c
            .token_key(
                Token::Caller(b"{odd}key"),
                Placement::Slot(slot_of_foo),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(slot::key_slot(k.as_bytes()), slot_of_foo);
        for bad in [Placement::CrossSlot, Placement::Keyless] {
            let Err(e) = c.token_key(Token::Generated, bad, Instant::now()) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(e.kind(), ErrorKind::Refused);
        }
    }

    #[test]
    fn transaction_replies_have_the_wire_shape() {
        let mut p = redis::pipe();
        p.atomic().incr("a", 1).incr("b", 1);
        let results = vec![Value::Int(1), Value::Int(2)];
        let (offset, count) = whole(&p);
        assert_eq!(
            wire_replies(&p, results.clone(), offset, count),
            vec![Value::Array(results.clone())]
        );
        assert_eq!(
            wire_replies(&p, results.clone(), 0, 4),
            vec![
                Value::Okay,
                Value::SimpleString("QUEUED".into()),
                Value::SimpleString("QUEUED".into()),
                Value::Array(results.clone())
            ]
        );
        let mut plain = redis::pipe();
        plain.incr("a", 1).incr("b", 1);
        assert_eq!(wire_replies(&plain, results.clone(), 0, 2), results);
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ExactlyOnce>();
        check::<ExactlyOnceConfig>();
        check::<ExactlyOnceStats>();
    }
}
