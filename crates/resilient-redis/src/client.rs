//! [`Client`]: the request path.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use rand::{SeedableRng, rngs::SmallRng};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value, aio::ConnectionLike};
use resilience::{
    Attempt, Call, CircuitBreaker, Classification, Idempotency, RetryBudget, RetryPolicy,
    ThrottleTotals, TotalsThrottle,
};
use tokio::time::{Instant, Sleep};

use crate::{
    commands::{self, CommandSafety},
    config::ClientConfig,
    connection::{Lease, LeaseId, Pool, StallVerdict},
    error::{Error, ErrorKind, Outcome},
    request::{Reply, Request},
    retry::{
        AttemptError, PolicyParts, build_policy, classify_reply, connection_lost, cooperate,
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
    handle: Handle,
    /// What calls through [`ConnectionLike`] (`&mut self`) keep from one call to the next.
    /// Apart from [`Handle`] so that a call can borrow both at once without a wrapping future.
    local: Local,
}

/// A handle's own state, reused from call to call.
#[derive(Default)]
struct Local {
    /// The connection this handle used last, reused while it is still the pool's live one: no
    /// lock and no clone per call, as with a bare `MultiplexedConnection` held by one task.
    cached: Option<Lease>,
    /// The response-window timer (see [`arm`]): one per handle instead of one per call, so a
    /// call neither registers nor removes a timer in the runtime's timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Clone for Local {
    fn clone(&self) -> Self {
        Local {
            cached: self.cached.clone(),
            timer: None,
        }
    }
}

/// Points `timer` at `limit` for a call that started at `now`, and returns it. A timer still
/// set for an earlier call's window (before `limit`, not yet passed) is left alone: it may
/// fire early, and [`ReplyOrLimit`] then sets it again. So a stream of calls resets it about
/// once per window, not once per call.
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, limit: Instant, now: Instant) -> Pin<&mut Sleep> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(limit)));
    let set = timer.deadline();
    if set <= now || set > limit {
        timer.as_mut().reset(limit);
    }
    timer.as_mut()
}

/// A reply, or `None` when `limit` passed first; `timer` was [`arm`]ed for it.
struct ReplyOrLimit<'a, F> {
    reply: Pin<&'a mut F>,
    timer: Pin<&'a mut Sleep>,
    limit: Instant,
}

impl<F: Future> Future for ReplyOrLimit<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(reply) = self.reply.as_mut().poll(cx) {
            return Poll::Ready(Some(reply));
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Fired: at `limit`, or earlier when it was still set for an earlier call.
            if self.timer.deadline() >= self.limit {
                return Poll::Ready(None);
            }
            let limit = self.limit;
            self.timer.as_mut().reset(limit);
        }
    }
}

/// What a call needs besides the cached connection: the request path lives here.
#[derive(Clone)]
struct Handle {
    inner: Arc<Inner>,
    policy: RetryPolicy,
    call: CallOptions,
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
            handle: Handle {
                inner,
                policy,
                call: CallOptions::default(),
            },
            local: Local::default(),
        })
    }

    /// A handle whose calls are treated as safe to repeat, whatever the command table says (for
    /// a script you know is idempotent, for example). Shares everything with `self`.
    pub fn idempotent(&self) -> Client {
        let mut c = self.clone();
        c.handle.call.idempotent = Some(true);
        c
    }

    /// A handle whose calls are never re-sent after an ambiguous failure, whatever the command
    /// table says. Shares everything with `self`.
    pub fn non_idempotent(&self) -> Client {
        let mut c = self.clone();
        c.handle.call.idempotent = Some(false);
        c
    }

    /// A handle with another total deadline per call. Shares everything with `self`.
    pub fn with_deadline(&self, deadline: Duration) -> Result<Client, Error> {
        if deadline.is_zero() {
            return Err(Error::config("deadline must be greater than zero"));
        }
        Ok(Client {
            handle: Handle {
                inner: self.handle.inner.clone(),
                policy: build_policy(self.handle.inner.policy_parts(deadline))?,
                call: self.handle.call,
            },
            local: Local::default(),
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.handle.inner.config
    }

    /// This handle's total deadline per call (see [`Client::with_deadline`]).
    pub(crate) fn call_deadline(&self) -> Duration {
        self.handle
            .policy
            .config()
            .deadline
            .unwrap_or(self.handle.inner.config.deadline)
    }

    /// Counters since the client was created (shared by all clones).
    pub fn stats(&self) -> ClientStats {
        let s = &self.handle.inner.stats;
        ClientStats {
            calls: s.calls.get(),
            attempts: s.attempts.get(),
            retries: s.retries.load(Ordering::Relaxed),
            ambiguous: s.ambiguous.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            reconnects: self.handle.inner.pool.reconnects.load(Ordering::Relaxed),
            rejected_locally: s.rejected_locally.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
        }
    }

    /// Live connections in the pool, and the pool's size.
    pub fn connections(&self) -> (usize, usize) {
        self.handle.inner.pool.connections()
    }

    /// The circuit breaker, if enabled.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.handle.inner.breaker.as_ref()
    }

    /// The retry budget, if enabled.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.handle.inner.budget.as_ref()
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.handle.inner.pool
    }

    /// Runs one command and returns its reply value, with the client's error type. Server error
    /// replies that are not retried come back as `Ok(Value::ServerError(..))`, as redis-rs does.
    pub async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        self.handle
            .execute(Request::Cmd(cmd), &mut Local::default(), |r| {
                r.map(Reply::into_value)
            })
            .await
    }

    /// Runs a pipeline (plain or atomic) and returns the replies, with the client's error type.
    pub async fn send_pipeline(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Error> {
        self.handle
            .execute(Request::pipeline(pipeline), &mut Local::default(), |r| {
                r.map(Reply::into_values)
            })
            .await
    }
}

impl Handle {
    /// Runs one call and hands its outcome to `finish` (which converts it for the caller:
    /// taking it here spares a wrapping future that would move this one when done).
    async fn execute<T>(
        &self,
        request: Request<'_>,
        local: &mut Local,
        finish: impl FnOnce(Result<Reply, Error>) -> T,
    ) -> T {
        let Local { cached, timer } = local;
        let stats = &self.inner.stats;
        stats.calls.add(1);
        let started = Instant::now();
        let safety = match request.safety() {
            Ok(safety) => safety,
            Err(why) => {
                cooperate().await;
                return finish(Err(Error::new(ErrorKind::Refused, Outcome::Failed, why)));
            }
        };
        let result = 'call: {
            if let Some(error) = self.inner.pool.failing_fast() {
                // The server has been unreachable for a while: fail at once (one atomic load
                // while it is up), without the retry policy's machinery.
                break 'call Err(error);
            }
            if safety == CommandSafety::Blocking {
                // Boxed: the rare path keeps its (large) connect future out of every call's.
                break 'call Box::pin(self.execute_blocking(request)).await;
            }
            // The first attempt runs here, in this one state machine; the retry policy takes
            // over (boxed) only after a failure. Written out rather than as nested helpers: at
            // a few µs per call, each nested future's dispatch and copy shows. (Values kept
            // across an await are kept small: they make the call's state.)
            let idempotency = idempotency_of(self.call.idempotent, safety);
            let retry_safe = idempotency == Idempotency::Idempotent;
            // [sentinel] `read_only` routes the call to a replica with ReadFrom.
            let read_only = safety == CommandSafety::ReadOnly;
            let call = match self.policy.start(started) {
                Ok(call) => call,
                Err(e) => break 'call Err(give_up_error(e)),
            };
            let deadline = call.attempt().deadline;
            let first = if let Err(e) = self.inner.admit() {
                Err((e, None))
            } else if let Request::Cmd(cmd) = request
                && let Some(lease) = self.lease_in(cached, read_only)
            {
                // A single command and a connection at hand: send it.
                stats.attempts.add(1);
                let id = lease.id();
                let fut = lease.conn.send_packed_command(cmd);
                tokio::pin!(fut);
                let (limit, cut) = self.reply_limit(deadline, started);
                let waiting = ReplyOrLimit {
                    reply: fut.as_mut(),
                    timer: arm(timer, limit, started),
                    limit,
                };
                let outcome = match waiting.await {
                    Some(result) => Ok(result.map(Reply::One)),
                    None if cut => Err(deadline_in_flight()),
                    None => Box::pin(self.wait_late_reply(fut, id, deadline))
                        .await
                        .map(|late| late.map(Reply::One)),
                };
                outcome
                    .and_then(|o| self.settle(o, id, retry_safe))
                    .map_err(|e| (e, Some(id)))
            } else {
                // A pipeline, or no connection at hand: the general attempt.
                let slot = Mutex::new(cached.take());
                let attempt = call.attempt();
                let result =
                    Box::pin(self.attempt(request, attempt, retry_safe, read_only, &slot)).await;
                *cached = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
                result.map_err(|e| (e, None))
            };
            match first {
                Ok(reply) => {
                    call.succeeded();
                    Ok(reply)
                }
                Err((error, sent_on)) => {
                    let retried = self.retry_call(
                        call,
                        request,
                        idempotency,
                        read_only,
                        cached,
                        error,
                        sent_on,
                    );
                    Box::pin(retried).await
                }
            }
        };
        self.inner.call_duration[kind_index(safety)].record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            record_failure(e, &stats.ambiguous, &stats.failed);
            cooperate().await;
        }
        finish(result)
    }

    /// The handle's cached connection if it is still the pool's live one for this call, else
    /// one from the pool without waiting; `None` if there is none.
    #[inline]
    fn ready_lease(&self, mut cached: Option<Lease>, read_only: bool) -> Option<Lease> {
        self.lease_in(&mut cached, read_only);
        cached
    }

    /// [`Handle::ready_lease`] kept in `cached`, where the call borrows it. The common case
    /// moves nothing: the cached lease is still the pool's live connection, and the call is not
    /// a read that the pool sends to a replica.
    #[inline]
    fn lease_in<'c>(
        &self,
        cached: &'c mut Option<Lease>,
        read_only: bool,
    ) -> Option<&'c mut Lease> {
        let pool = &self.inner.pool;
        let usable =
            |l: &Lease| pool.is_current(l) && !(read_only && pool.routes_reads_elsewhere());
        if !cached.as_ref().is_some_and(usable) {
            *cached = pool.try_acquire_for(read_only);
        }
        cached.as_mut()
    }

    /// The policy's retries after the first attempt failed with `error`. `sent_on`: the
    /// connection the fast path sent it on, whose failure is not handled yet.
    #[allow(clippy::too_many_arguments)]
    async fn retry_call(
        &self,
        call: Call<'_>,
        request: Request<'_>,
        idempotency: Idempotency,
        read_only: bool,
        cached: &mut Option<Lease>,
        error: AttemptError,
        sent_on: Option<LeaseId>,
    ) -> Result<Reply, Error> {
        if let Some(lease) = sent_on {
            self.after_failure(&error, lease, call.attempt().deadline)
                .await;
        }
        let retry_safe = idempotency == Idempotency::Idempotent;
        // The handle's cached connection, lent to the attempts and given back after.
        let slot = Mutex::new(cached.take());
        let result = call
            .retry(
                idempotency,
                |e: &AttemptError| e.class,
                |attempt: Attempt| self.attempt(request, attempt, retry_safe, read_only, &slot),
                error,
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
        // The first attempt was admitted by `execute`.
        if attempt.number > 1 {
            self.inner.admit()?;
        }
        let pool = &self.inner.pool;
        let reusable = cached.lock().unwrap_or_else(PoisonError::into_inner).take();
        // The policy's clock reading for this attempt, unless it waited for a connection.
        let mut started = attempt.started;
        let mut lease = match self.ready_lease(reusable, read_only) {
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
        let lease_id = lease.id();
        let result = self
            .send_on(&mut lease, request, retry_safe, attempt.deadline, started)
            .await;
        match &result {
            Ok(_) => *cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease),
            Err(e) => self.after_failure(e, lease_id, attempt.deadline).await,
        }
        result
    }

    /// What a failed attempt on connection `lease` teaches: a demoted node, an overloaded
    /// server. Returns when the attempt may be retried.
    async fn after_failure(&self, e: &AttemptError, lease: LeaseId, deadline: Option<Instant>) {
        let code = e.error.redis_error().and_then(|s| s.code());
        // [sentinel] A READONLY reply: the node was demoted. Replace this connection (the next
        // one goes to the master, checked with ROLE) and rediscover; the policy retries.
        if code == Some("READONLY") {
            self.inner.pool.on_readonly(lease);
        }
        if is_overload_refusal(e) {
            self.inner.refused();
        }
        if matches!(code, Some("BUSY" | "LOADING")) {
            // Waiting is not retrying: hold the retry until the server can take it.
            let gate = Box::pin(self.inner.pool.wait_until_not_busy());
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, gate).await;
                }
                None => gate.await,
            }
        }
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
        let id = lease.id();
        let conn = &mut lease.conn;
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
        // The attempt's start when known (a connection was at hand: it is a few µs old).
        let (limit, cut) = self.reply_limit(deadline, started.unwrap_or_else(Instant::now));
        let outcome = match tokio::time::timeout_at(limit, &mut fut).await {
            Ok(result) => result,
            Err(_) if cut => return Err(deadline_in_flight()),
            Err(_) => Box::pin(self.wait_late_reply(fut, id, deadline)).await?,
        };
        self.settle(outcome, id, retry_safe)
    }

    /// When a request sent at `sent` stops waiting for its reply: the response window's end or
    /// the deadline, whichever is first (`true`: the deadline). This is the only timer of an
    /// attempt that gets its reply in time.
    #[inline]
    fn reply_limit(&self, deadline: Option<Instant>, sent: Instant) -> (Instant, bool) {
        let window_end = sent + self.inner.config.response_timeout;
        match deadline {
            Some(d) if d < window_end => (d, true),
            _ => (window_end, false),
        }
    }

    /// An attempt's outcome from redis-rs's: a broken connection is marked and its request is
    /// ambiguous; a retryable error reply becomes an attempt error.
    fn settle(
        &self,
        outcome: redis::RedisResult<Reply>,
        lease: LeaseId,
        retry_safe: bool,
    ) -> Result<Reply, AttemptError> {
        let pool = &self.inner.pool;
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

    /// The slow path of [`Handle::send_on`]: a reply is late. Finds out whether the server is
    /// stalled (keep waiting: re-sending would only queue the request twice) or the connection
    /// is dead (give up on it; the caller retries if the request is safe to repeat).
    async fn wait_late_reply<F, T>(
        &self,
        fut: std::pin::Pin<&mut F>,
        lease: LeaseId,
        deadline: Option<Instant>,
    ) -> Result<redis::RedisResult<T>, AttemptError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, self.diagnose_late_reply(fut, lease))
                .await
                .unwrap_or_else(|_| Err(deadline_in_flight())),
            None => self.diagnose_late_reply(fut, lease).await,
        }
    }

    async fn diagnose_late_reply<F, T>(
        &self,
        mut fut: std::pin::Pin<&mut F>,
        lease: LeaseId,
    ) -> Result<redis::RedisResult<T>, AttemptError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
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
    // The call's future is boxed as is (no wrapping future): it borrows the handle and the
    // cached connection side by side.
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Client { handle, local } = self;
        Box::pin(handle.execute(Request::Cmd(cmd), local, |r| {
            r.map(Reply::into_value).map_err(Error::into_redis)
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Client { handle, local } = self;
        let request = Request::Pipeline {
            pipeline,
            offset,
            count,
        };
        Box::pin(handle.execute(request, local, |r| {
            r.map(Reply::into_values).map_err(Error::into_redis)
        }))
    }

    fn get_db(&self) -> i64 {
        self.handle.inner.db
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (up, total) = self.handle.inner.pool.connections();
        f.debug_struct("Client")
            .field("url", &crate::redact_url(&self.handle.inner.config.url))
            .field("connections_up", &up)
            .field("connections_total", &total)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::{future::pending, time::Duration};

    use tokio::time::{Instant, advance};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Polls `fut` once, without waiting.
    fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(fut).poll(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_left_from_an_earlier_call_does_not_end_the_window_early() {
        let mut timer = None;
        let t0 = Instant::now();
        // An earlier call's window: until t0 + 100 ms.
        arm(&mut timer, t0 + 100 * MS, t0);
        advance(50 * MS).await;
        // This call's window ends at t0 + 250 ms: the timer is left set for t0 + 100 ms.
        let limit = t0 + 250 * MS;
        let never = pending::<()>();
        tokio::pin!(never);
        let mut waiting = ReplyOrLimit {
            reply: never.as_mut(),
            timer: arm(&mut timer, limit, Instant::now()),
            limit,
        };
        assert_eq!(
            waiting.timer.deadline(),
            t0 + 100 * MS,
            "not reset per call"
        );
        assert!(poll_once(&mut waiting).is_pending());
        advance(60 * MS).await; // t0 + 110 ms: the old timer fired
        assert!(
            poll_once(&mut waiting).is_pending(),
            "the window is not over"
        );
        assert_eq!(waiting.timer.deadline(), limit, "set again for this call");
        advance(139 * MS).await; // t0 + 249 ms
        assert!(poll_once(&mut waiting).is_pending());
        advance(2 * MS).await;
        assert_eq!(
            poll_once(&mut waiting),
            Poll::Ready(None),
            "the window is over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_set_too_late_or_already_passed_is_set_again() {
        let mut timer = None;
        let t0 = Instant::now();
        arm(&mut timer, t0 + 500 * MS, t0);
        // A shorter window (a call with little deadline left): the timer comes earlier.
        assert_eq!(arm(&mut timer, t0 + 20 * MS, t0).deadline(), t0 + 20 * MS);
        advance(30 * MS).await;
        // Passed: a new call's window starts from scratch.
        let now = Instant::now();
        assert_eq!(
            arm(&mut timer, now + 500 * MS, now).deadline(),
            now + 500 * MS
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_wins_over_the_timer() {
        let mut timer = None;
        let now = Instant::now();
        let ready = std::future::ready(7);
        tokio::pin!(ready);
        let mut waiting = ReplyOrLimit {
            reply: ready.as_mut(),
            timer: arm(&mut timer, now, now),
            limit: now,
        };
        assert_eq!(poll_once(&mut waiting), Poll::Ready(Some(7)));
    }
}
