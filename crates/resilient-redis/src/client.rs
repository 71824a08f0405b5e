//! [`Client`]: the request path.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::{SeedableRng, rngs::SmallRng};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value, aio::ConnectionLike};
use resilience::{
    Attempt, CircuitBreaker, Classification, Idempotency, RetryBudget, RetryPolicy, ThrottleTotals,
    TotalsThrottle,
};
use tokio::time::Instant;

use crate::{
    commands::{self, CommandSafety},
    config::ClientConfig,
    connection::{Lease, LeaseId, Pool, StallVerdict},
    error::{Error, ErrorKind, Outcome},
    request::{Reply, Request},
    retry::{
        AttemptError, PolicyParts, build_policy, classify_reply, connection_lost,
        deadline_in_flight, give_up_error, idempotency_of, is_overload_refusal, record_failure,
        throttle_admit,
    },
    striped::StripedCounter,
};

/// A Redis client that survives dropped connections, restarts, stalls and throttling, and never
/// reports an ambiguous write as a plain failure.
///
/// `Client` is cheap to clone (clones share connections, retry budget and circuit breaker) and
/// implements [`redis::aio::ConnectionLike`], so every [`redis::AsyncCommands`] method,
/// [`redis::pipe()`] (plain and atomic) and [`redis::Script`] work unchanged.
///
/// # Behavior
/// - A call waits (up to its deadline) while the connection is being re-established, then is sent
///   once: waiting costs the server nothing and spends no retry budget.
/// - A reply that is late (past `response_timeout`) is not re-sent: the client asks a fresh
///   connection whether the server answers. A stalled server is waited for; a dead connection is
///   replaced, and the call is retried if it is safe to repeat.
/// - Failures where the server surely did not run the command (`LOADING`, `BUSY`, `MASTERDOWN`,
///   `READONLY`, `TRYAGAIN`, `CLUSTERDOWN`, `NOREPLICAS`, `THROTTLED`, no connection) are retried
///   with jittered backoff, within the retry budget and the call's deadline.
/// - Failures after the request may have been written (a connection lost mid-flight) are retried
///   only when the command is safe to repeat (see [`crate::commands`]); otherwise the call fails
///   with an [`Outcome::Ambiguous`] error.
/// - Other error replies (`WRONGTYPE`, `NOSCRIPT`, syntax errors, ...) come back unchanged.
///
/// # Example
/// ```no_run
/// use redis::AsyncCommands;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut client = resilient_redis::Client::connect("redis://127.0.0.1:6379").await?;
/// let _: () = client.set("greeting", "hello").await?;
/// let value: String = client.get("greeting").await?;
/// // INCR is not safe to repeat: after a broken connection it may fail as "ambiguous".
/// let n: i64 = client.incr("visits", 1).await?;
/// # let _ = (value, n); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    policy: RetryPolicy,
    call: CallOptions,
    /// The connection this handle used last. Calls through [`ConnectionLike`] (`&mut self`)
    /// reuse it while it is still the pool's live one: no lock and no clone per call, as with a
    /// bare `MultiplexedConnection` held by one task.
    cached: Option<Lease>,
}

/// Per-handle overrides, set with [`Client::idempotent`] and friends.
#[derive(Clone, Copy, Debug, Default)]
struct CallOptions {
    idempotent: Option<bool>,
}

struct Inner {
    config: ClientConfig,
    pool: Arc<Pool>,
    budget: Option<RetryBudget>,
    breaker: Option<CircuitBreaker>,
    /// Adaptive client-side throttling over [`Counters`]; see [`Inner::admit`].
    throttle: Option<TotalsThrottle>,
    /// Draws the local rejections (only while the throttle is engaged).
    throttle_rng: Mutex<SmallRng>,
    stats: Counters,
    db: i64,
    /// `resilient_redis_call_duration_seconds` by command kind, registered once (the success path
    /// only records).
    call_duration: [metrics::Histogram; 4],
}

impl Inner {
    fn policy_parts(&self, deadline: Duration) -> PolicyParts<'_> {
        PolicyParts {
            name: "resilient_redis",
            max_attempts: self.config.max_attempts,
            backoff: self.config.retry_backoff,
            deadline,
            // Every attempt returns by its deadline on its own (`send_on` bounds its one timer
            // by it), so the policy registers no second timer per call.
            cut_attempts: false,
            budget: self.budget.as_ref(),
            breaker: self.breaker.as_ref(),
            rng_seed: self.config.rng_seed,
        }
    }
}

impl Inner {
    /// The totals the adaptive throttle works on: every attempt sent or rejected locally is a
    /// request; every attempt the server did not refuse for overload is an accept.
    fn throttle_totals(&self) -> ThrottleTotals {
        let s = &self.stats;
        let attempts = s.attempts.get();
        ThrottleTotals {
            requests: attempts + s.rejected_locally.load(Ordering::Relaxed),
            accepts: attempts.saturating_sub(s.refused.load(Ordering::Relaxed)),
        }
    }

    /// Decides, while the server refuses work, whether to send an attempt. One relaxed load
    /// while the server accepts everything.
    #[inline]
    fn admit(&self) -> Result<(), AttemptError> {
        match &self.throttle {
            Some(t) if t.is_engaged() => self.admit_engaged(t),
            _ => Ok(()),
        }
    }

    #[cold]
    fn admit_engaged(&self, throttle: &TotalsThrottle) -> Result<(), AttemptError> {
        throttle_admit(
            throttle,
            || self.throttle_totals(),
            &self.throttle_rng,
            &self.stats.rejected_locally,
        )
    }

    /// Records an overload refusal (`THROTTLED`, `BUSY`, `LOADING`, a `RetryAfter` rule).
    #[cold]
    fn refused(&self) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = &self.throttle {
            t.refused_at(Instant::now());
        }
    }
}

/// Feeds the adaptive throttle's snapshots once per bucket, for as long as the client lives.
fn spawn_throttle_ticker(inner: &Arc<Inner>) {
    let Some(throttle) = &inner.throttle else {
        return;
    };
    let every = throttle.tick_interval();
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if let Some(t) = &inner.throttle {
                t.tick_at(Instant::now(), inner.throttle_totals());
            }
        }
    });
}

const KINDS: [&str; 4] = ["read", "idempotent_write", "write", "blocking"];

fn kind_index(safety: CommandSafety) -> usize {
    match safety {
        CommandSafety::ReadOnly => 0,
        CommandSafety::Idempotent => 1,
        CommandSafety::NonIdempotent => 2,
        CommandSafety::Blocking => 3,
    }
}

#[derive(Default)]
struct Counters {
    calls: StripedCounter,
    attempts: StripedCounter,
    retries: AtomicU64,
    ambiguous: AtomicU64,
    failed: AtomicU64,
    rejected_locally: AtomicU64,
    /// Overload refusals from the server (`THROTTLED`, `BUSY`, `LOADING`, ...).
    refused: AtomicU64,
}

/// Cumulative counters of a client (shared by its clones) since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls made (commands and pipelines).
    pub calls: u64,
    /// Attempts sent to the server, retries included (a call that fails while waiting for a
    /// connection, or is rejected locally, makes none).
    pub attempts: u64,
    /// Attempts sent after the first of a call.
    pub retries: u64,
    /// Calls that failed with an ambiguous outcome.
    pub ambiguous: u64,
    /// Calls that failed with a definite outcome.
    pub failed: u64,
    /// Successful reconnections.
    pub reconnects: u64,
    /// Calls rejected locally by adaptive throttling (never sent; also counted in `failed`).
    pub rejected_locally: u64,
    /// Attempts the server refused for overload (`THROTTLED`, `BUSY`, `LOADING`, ...).
    pub refused: u64,
}

impl Client {
    /// Connects with the default configuration (see [`ClientConfig`]) to `url`.
    ///
    /// # Errors
    /// A malformed URL or unknown scheme ([`ErrorKind::InvalidConfig`]), a server that cannot be
    /// reached within the connect timeout ([`ErrorKind::Unavailable`]), or rejected credentials
    /// ([`ErrorKind::Auth`]).
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::with_config(ClientConfig::from_url(url)?).await
    }

    /// Connects with `config`, checked first.
    pub async fn with_config(config: ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let db = config.connection_info()?.redis_settings().db();
        let budget = match &config.budget {
            Some(b) => Some(
                RetryBudget::new(b.clone()).map_err(|e| Error::config(format!("budget: {e}")))?,
            ),
            None => None,
        };
        let breaker = match &config.breaker {
            Some(b) => Some(
                CircuitBreaker::new(b.clone())
                    .map_err(|e| Error::config(format!("breaker: {e}")))?,
            ),
            None => None,
        };
        let throttle = match &config.adaptive_throttle {
            Some(t) => {
                let throttle = TotalsThrottle::new(t.clone())
                    .map_err(|e| Error::config(format!("adaptive_throttle: {e}")))?;
                // The window starts now, with nothing counted (the ticker may start later).
                throttle.tick_at(Instant::now(), ThrottleTotals::default());
                Some(throttle)
            }
            None => None,
        };
        let throttle_rng = Mutex::new(match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x7468_726f_7474_6c65),
            None => rand::make_rng(),
        });
        let pool = Pool::start(&config).await?;
        let inner = Arc::new(Inner {
            config,
            pool,
            budget,
            breaker,
            throttle,
            throttle_rng,
            stats: Counters::default(),
            db,
            call_duration: KINDS.map(
                |kind| metrics::histogram!("resilient_redis_call_duration_seconds", "kind" => kind),
            ),
        });
        let policy = build_policy(inner.policy_parts(inner.config.deadline))?;
        spawn_throttle_ticker(&inner);
        Ok(Client {
            inner,
            policy,
            call: CallOptions::default(),
            cached: None,
        })
    }

    /// A handle whose calls are treated as safe to repeat, whatever the command table says (for
    /// a script you know is idempotent, for example). Shares everything with `self`.
    pub fn idempotent(&self) -> Client {
        let mut c = self.clone();
        c.call.idempotent = Some(true);
        c
    }

    /// A handle whose calls are never re-sent after an ambiguous failure, whatever the command
    /// table says. Shares everything with `self`.
    pub fn non_idempotent(&self) -> Client {
        let mut c = self.clone();
        c.call.idempotent = Some(false);
        c
    }

    /// A handle with another total deadline per call. Shares everything with `self`.
    pub fn with_deadline(&self, deadline: Duration) -> Result<Client, Error> {
        if deadline.is_zero() {
            return Err(Error::config("deadline must be greater than zero"));
        }
        Ok(Client {
            inner: self.inner.clone(),
            policy: build_policy(self.inner.policy_parts(deadline))?,
            call: self.call,
            cached: None,
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// This handle's total deadline per call (see [`Client::with_deadline`]).
    pub(crate) fn call_deadline(&self) -> Duration {
        self.policy
            .config()
            .deadline
            .unwrap_or(self.inner.config.deadline)
    }

    /// Counters since the client was created (shared by all clones).
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            calls: s.calls.get(),
            attempts: s.attempts.get(),
            retries: s.retries.load(Ordering::Relaxed),
            ambiguous: s.ambiguous.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            reconnects: self.inner.pool.reconnects.load(Ordering::Relaxed),
            rejected_locally: s.rejected_locally.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
        }
    }

    /// Live connections in the pool, and the pool's size.
    pub fn connections(&self) -> (usize, usize) {
        self.inner.pool.connections()
    }

    /// The circuit breaker, if enabled.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }

    /// The retry budget, if enabled.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.inner.pool
    }

    /// Runs one command and returns its reply value, with the client's error type. Server error
    /// replies that are not retried come back as `Ok(Value::ServerError(..))`, as redis-rs does.
    pub async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        Ok(self
            .execute(Request::Cmd(cmd), &mut None)
            .await?
            .into_value())
    }

    /// Runs a pipeline (plain or atomic) and returns the replies, with the client's error type.
    pub async fn send_pipeline(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Error> {
        Ok(self
            .execute(Request::pipeline(pipeline), &mut None)
            .await?
            .into_values())
    }

    async fn execute(
        &self,
        request: Request<'_>,
        cached: &mut Option<Lease>,
    ) -> Result<Reply, Error> {
        let stats = &self.inner.stats;
        stats.calls.add(1);
        let started = Instant::now();
        let safety = request
            .safety()
            .map_err(|why| Error::new(ErrorKind::Refused, Outcome::Failed, why))?;
        let result = if let Some(error) = self.inner.pool.failing_fast() {
            // The server has been unreachable for a while: fail at once (one atomic load while
            // it is up), without the retry policy's machinery.
            Err(error)
        } else if safety == CommandSafety::Blocking {
            // Boxed: the rare path keeps its (large) connect future out of every call's future.
            Box::pin(self.execute_blocking(request)).await
        } else {
            self.execute_retrying(request, safety, cached, started)
                .await
        };
        self.inner.call_duration[kind_index(safety)].record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            record_failure(e, &stats.ambiguous, &stats.failed);
        }
        result
    }

    async fn execute_retrying(
        &self,
        request: Request<'_>,
        safety: CommandSafety,
        cached: &mut Option<Lease>,
        started: Instant,
    ) -> Result<Reply, Error> {
        let idempotency = idempotency_of(self.call.idempotent, safety);
        let retry_safe = idempotency == Idempotency::Idempotent;
        // [sentinel] `read_only` routes the call to a replica with ReadFrom.
        let read_only = safety == CommandSafety::ReadOnly;
        // The handle's cached connection, lent to the attempts and given back after.
        let slot = Mutex::new(cached.take());
        let result = self
            .policy
            .run_from(
                started,
                idempotency,
                |e: &AttemptError| e.class,
                |attempt: Attempt| self.attempt(request, attempt, retry_safe, read_only, &slot),
            )
            .await;
        *cached = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
        result.map_err(give_up_error)
    }

    async fn attempt(
        &self,
        request: Request<'_>,
        attempt: Attempt,
        retry_safe: bool,
        read_only: bool,
        cached: &Mutex<Option<Lease>>,
    ) -> Result<Reply, AttemptError> {
        self.inner.admit()?;
        let pool = &self.inner.pool;
        let reusable = cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .filter(|l| pool.is_current(l) && !(read_only && pool.routes_reads_elsewhere()));
        // The policy's clock reading for this attempt, unless it waited for a connection.
        let mut started = attempt.started;
        let mut lease = match reusable.or_else(|| pool.try_acquire_for(read_only)) {
            Some(lease) => lease,
            // The server has been unreachable for a while: fail at once, without waiting.
            None if let Some(error) = pool.failing_fast() => {
                return Err(AttemptError {
                    error,
                    class: Classification::fail().server_fault(false),
                });
            }
            // No live connection: wait for the reconnection (boxed, off the fast path).
            None => {
                started = None;
                Box::pin(pool.acquire_for(read_only, attempt.deadline))
                    .await
                    .map_err(|error| AttemptError {
                        error,
                        // Not sent: nothing to undo, nothing gained by retrying before the
                        // deadline.
                        class: Classification::fail().server_fault(false),
                    })?
            }
        };
        // Counted once there is a connection to send on: waiting is not an attempt.
        let stats = &self.inner.stats;
        stats.attempts.add(1);
        if attempt.number > 1 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        // [sentinel] Remembered for the READONLY check below.
        let lease_id = lease.id();
        let result = self
            .send_on(&mut lease, request, retry_safe, attempt.deadline, started)
            .await;
        if result.is_ok() {
            *cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);
        }
        // [sentinel] A READONLY reply: the node was demoted. Replace this connection (the next
        // one goes to the master, checked with ROLE) and rediscover; the policy retries.
        if let Err(e) = &result {
            if e.error.redis_error().and_then(|s| s.code()) == Some("READONLY") {
                self.inner.pool.on_readonly(lease_id);
            }
            if is_overload_refusal(e) {
                self.inner.refused();
            }
        }
        if let Err(e) = &result
            && let Some(source) = e.error.redis_error()
            && matches!(source.code(), Some("BUSY" | "LOADING"))
        {
            // Waiting is not retrying: hold the retry until the server can take it.
            let gate = Box::pin(self.inner.pool.wait_until_not_busy());
            match attempt.deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, gate).await;
                }
                None => gate.await,
            }
        }
        result
    }

    /// Sends on a leased connection, diagnosing late replies instead of re-sending.
    async fn send_on(
        &self,
        lease: &mut Lease,
        request: Request<'_>,
        retry_safe: bool,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Result<Reply, AttemptError> {
        let Lease {
            conn,
            slot,
            generation,
        } = lease;
        let lease = LeaseId {
            slot: *slot,
            generation: *generation,
        };
        let pool = &self.inner.pool;
        let window = self.inner.config.response_timeout;
        let fut = async move {
            match request {
                Request::Cmd(cmd) => conn.send_packed_command(cmd).await.map(Reply::One),
                // Boxed (as redis-rs's own `ConnectionLike` does): the two futures would
                // otherwise size every call's state by the larger.
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                } => Box::pin(conn.send_packed_commands(pipeline, offset, count))
                    .await
                    .map(Reply::Many),
            }
        };
        tokio::pin!(fut);
        // Fast path: the reply comes within the response timeout. This is the only timer of a
        // call: it is also bounded by the call's deadline.
        // The attempt's start when known (a connection was at hand: it is a few µs old).
        let window_end = started.unwrap_or_else(Instant::now) + window;
        let limit = deadline.map_or(window_end, |d| d.min(window_end));
        let outcome = match tokio::time::timeout_at(limit, &mut fut).await {
            Ok(result) => result,
            Err(_) if limit < window_end => return Err(deadline_in_flight()),
            Err(_) => Box::pin(self.wait_late_reply(fut, lease, deadline)).await?,
        };
        match outcome {
            Ok(reply) => {
                pool.touch(lease.slot);
                self.check_reply(reply, retry_safe)
            }
            Err(e) => {
                if e.is_io_error() || e.kind() == redis::ErrorKind::Parse {
                    pool.mark_broken(lease, &e.to_string());
                    Err(connection_lost(
                        "the connection broke while the request was in flight",
                        Some(e),
                    ))
                } else {
                    // A client-side error from redis-rs (never reached the wire).
                    Err(AttemptError {
                        error: Error::new(ErrorKind::Server, Outcome::Failed, "request failed")
                            .with_source(e),
                        class: Classification::fail().server_fault(false),
                    })
                }
            }
        }
    }

    /// The slow path of [`Client::send_on`]: a reply is late. Finds out whether the server is
    /// stalled (keep waiting: re-sending would only queue the request twice) or the connection
    /// is dead (give up on it; the caller retries if the request is safe to repeat).
    async fn wait_late_reply<F>(
        &self,
        fut: std::pin::Pin<&mut F>,
        lease: LeaseId,
        deadline: Option<Instant>,
    ) -> Result<redis::RedisResult<Reply>, AttemptError>
    where
        F: std::future::Future<Output = redis::RedisResult<Reply>>,
    {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, self.diagnose_late_reply(fut, lease))
                .await
                .unwrap_or_else(|_| Err(deadline_in_flight())),
            None => self.diagnose_late_reply(fut, lease).await,
        }
    }

    async fn diagnose_late_reply<F>(
        &self,
        mut fut: std::pin::Pin<&mut F>,
        lease: LeaseId,
    ) -> Result<redis::RedisResult<Reply>, AttemptError>
    where
        F: std::future::Future<Output = redis::RedisResult<Reply>>,
    {
        let pool = &self.inner.pool;
        let window = self.inner.config.response_timeout;
        let mut server_answered = false;
        let mut first = true;
        let outcome = loop {
            let waited = if first {
                first = false;
                Err(())
            } else {
                tokio::time::timeout(window, &mut fut).await.map_err(|_| ())
            };
            match waited {
                Ok(result) => break result,
                Err(_) if server_answered => {
                    // The server answered a fresh connection a full window ago, and this one is
                    // still silent: the connection is dead.
                    pool.mark_broken(lease, "connection stopped answering");
                    return Err(connection_lost(
                        "the connection stopped answering while the server answers on a fresh one",
                        None,
                    ));
                }
                Err(_) => {
                    let verdict = tokio::select! {
                        biased;
                        result = &mut fut => break result,
                        verdict = pool.diagnose_stall() => verdict,
                    };
                    match verdict {
                        StallVerdict::Answers => server_answered = true,
                        StallVerdict::Silent => {
                            tracing::debug!("server stalled: waiting for the reply, not re-sending")
                        }
                        StallVerdict::Unreachable(why) => {
                            pool.mark_broken(lease, &why);
                            return Err(connection_lost(
                                "the server became unreachable while the request was in flight",
                                None,
                            ));
                        }
                    }
                }
            }
        };
        Ok(outcome)
    }

    /// Turns retryable error replies into attempt errors; every other reply goes back as is.
    fn check_reply(&self, reply: Reply, retry_safe: bool) -> Result<Reply, AttemptError> {
        match &reply {
            Reply::One(Value::ServerError(err)) => match classify_reply(&self.inner.config, err) {
                Some((class, kind)) => Err(AttemptError {
                    error: Error::new(
                        kind,
                        Outcome::Failed,
                        format!("server replied {}", err.code()),
                    )
                    .with_source(RedisError::from(err.clone())),
                    class,
                }),
                None => Ok(reply),
            },
            Reply::Many(values) if retry_safe => {
                // A pipeline that is safe to repeat is sent again whole when one of its commands
                // got a retryable reply (the others may have run: that is why it must be safe).
                for v in values {
                    if let Value::ServerError(err) = v
                        && let Some((class, kind)) = classify_reply(&self.inner.config, err)
                    {
                        return Err(AttemptError {
                            error: Error::new(
                                kind,
                                Outcome::Ambiguous,
                                format!("a pipelined command got {}", err.code()),
                            )
                            .with_source(RedisError::from(err.clone())),
                            class: class.ambiguous(),
                        });
                    }
                }
                Ok(reply)
            }
            _ => Ok(reply),
        }
    }

    /// Blocking commands run on a dedicated connection: they do not hold up other callers, are
    /// not cut by the response timeout, and are never re-sent once written.
    async fn execute_blocking(&self, request: Request<'_>) -> Result<Reply, Error> {
        let Request::Cmd(cmd) = request else {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "blocking commands cannot be pipelined through the client",
            ));
        };
        self.inner.stats.attempts.add(1);
        let config = &self.inner.config;
        let connect_deadline = Instant::now() + config.deadline;
        let conn = loop {
            match tokio::time::timeout_at(connect_deadline, self.inner.pool.open_dedicated()).await
            {
                Ok(Ok(conn)) => break conn,
                Ok(Err(e)) if Instant::now() + config.connect_timeout < connect_deadline => {
                    tracing::debug!(error = %e, "blocking connection failed; waiting for the server");
                    self.inner.pool.acquire(Some(connect_deadline)).await?;
                }
                Ok(Err(e)) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        Outcome::Failed,
                        "cannot connect for a blocking command",
                    )
                    .with_source(e));
                }
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        Outcome::Failed,
                        "no connection for a blocking command before the deadline",
                    ));
                }
            }
        };
        let limit = commands::blocking_timeout(cmd).map(|t| t + config.response_timeout * 2);
        let mut sending = conn.clone();
        let sent = sending.send_packed_command(cmd);
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::ConnectionLost,
                        Outcome::Ambiguous,
                        "no reply to a blocking command long after its own timeout",
                    ));
                }
            },
            None => sent.await,
        };
        match result {
            Ok(v) => {
                self.inner.pool.return_dedicated(conn);
                Ok(Reply::One(v))
            }
            Err(e) if e.is_io_error() => Err(Error::new(
                ErrorKind::ConnectionLost,
                Outcome::Ambiguous,
                "the connection broke during a blocking command",
            )
            .with_source(e)),
            Err(e) => Err(Error::new(
                ErrorKind::Server,
                Outcome::Failed,
                "blocking command failed",
            )
            .with_source(e)),
        }
    }
}

impl ConnectionLike for Client {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut cached = self.cached.take();
            let result = self.execute(Request::Cmd(cmd), &mut cached).await;
            self.cached = cached;
            result.map(Reply::into_value).map_err(Error::into_redis)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut cached = self.cached.take();
            let request = Request::Pipeline {
                pipeline,
                offset,
                count,
            };
            let result = self.execute(request, &mut cached).await;
            self.cached = cached;
            result.map(Reply::into_values).map_err(Error::into_redis)
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (up, total) = self.inner.pool.connections();
        f.debug_struct("Client")
            .field("url", &self.inner.config.url)
            .field("connections_up", &up)
            .field("connections_total", &total)
            .finish()
    }
}
