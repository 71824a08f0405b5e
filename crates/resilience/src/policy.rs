//! The executor: runs an operation under backoff, stop conditions, classification, retry
//! budget and circuit breaker.

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::event::{Event, Listener};
use crate::observe::PolicyMetrics;
use crate::{
    Backoff, BreakerPermit, CircuitBreaker, Classification, ConfigError, RetryAction, RetryBudget,
};

/// Settings of a [`RetryPolicy`]: plain data; per-call state lives in the call.
///
/// # Default
/// `max_attempts = 3`, `backoff` exponential 50 ms x 2 capped at 2 s with [`Jitter::Full`]
/// (`crate::Jitter::Full`), no `deadline`, no `attempt_timeout`, `max_hint = 10 s`,
/// `reject_hint_above = 60 s`, `name = "default"`. Three attempts absorb a failover blip
/// without tripling load for long; the deadline and attempt timeout depend on the caller's
/// latency budget, so they are off unless set.
///
/// [`Jitter::Full`]: crate::Jitter::Full
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Total attempts including the first; at least 1 (1 = never retry).
    pub max_attempts: u32,
    /// Delay before each retry.
    pub backoff: Backoff,
    /// Total time for the whole call, measured from the start of [`RetryPolicy::run`]. The
    /// policy never sleeps past it: when the next delay would cross it, the call gives up at
    /// once with [`GiveUp::DeadlineExceeded`]. An attempt still running at the deadline is cut.
    pub deadline: Option<Duration>,
    /// Maximum time for one attempt; an attempt still running is cut (and counts as possibly
    /// applied).
    pub attempt_timeout: Option<Duration>,
    /// A server hint ([`RetryAction::RetryAfter`]) is clamped to this.
    pub max_hint: Duration,
    /// A hint above this is absurd: the call gives up with [`GiveUp::NotRetryable`]. Must be
    /// at least `max_hint`.
    pub reject_hint_above: Duration,
    /// Label for tracing, metrics and events.
    pub name: Cow<'static, str>,
    /// Whether the policy cuts an attempt still running at its deadline (the call deadline or
    /// the attempt timeout). Set it to `false` only when the operation itself returns by
    /// [`Attempt::deadline`]: the policy then registers no timer of its own per call, which
    /// matters at hundreds of thousands of calls per second. It still never sleeps past the
    /// deadline.
    ///
    /// # Default
    /// `true`.
    pub cut_attempts: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default_retry(),
            deadline: None,
            attempt_timeout: None,
            max_hint: Duration::from_secs(10),
            reject_hint_above: Duration::from_secs(60),
            name: Cow::Borrowed("default"),
            cut_attempts: true,
        }
    }
}

/// Whether running the operation twice has the same effect as running it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to repeat: a possibly-applied failure is retried.
    Idempotent,
    /// Not safe to repeat: a possibly-applied failure ends the call with
    /// [`GiveUp::AmbiguousNotIdempotent`].
    NotIdempotent,
}

/// The context handed to each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// When this attempt will be cut: the earlier of the call deadline and the attempt
    /// timeout. `None` if neither is set.
    pub deadline: Option<Instant>,
    /// When the attempt started, if the policy read the clock for it (it does after a failure,
    /// and before the first attempt when a deadline, an attempt timeout or
    /// [`RetryPolicy::start`] gave it): an operation can use it instead of reading the
    /// clock again.
    pub started: Option<Instant>,
}

impl Attempt {
    /// Time left before [`Attempt::deadline`] (zero if passed); `None` if there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Why a call gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The classifier said [`RetryAction::DoNotRetry`], or the server hint was absurd (above
    /// [`RetryConfig::reject_hint_above`]).
    NotRetryable,
    /// `max_attempts` attempts ran and the last one failed.
    AttemptsExhausted,
    /// The call deadline passed, or the next delay would cross it.
    DeadlineExceeded,
    /// The retry budget refused the retry.
    BudgetExhausted,
    /// The circuit breaker refused the attempt (no attempt ran for it).
    BreakerOpen {
        /// When the breaker will admit probes (zero: it is probing now).
        retry_in: Duration,
    },
    /// A non-idempotent attempt failed in a way that may have applied: the outcome is unknown
    /// and the call was not retried.
    AmbiguousNotIdempotent,
    /// The last attempt was cut by `attempt_timeout` and no attempt was left.
    AttemptTimedOut,
}

impl GiveUp {
    /// Number of variants (for per-reason metric handles).
    pub(crate) const KINDS: usize = 7;

    pub(crate) fn index(&self) -> usize {
        match self {
            GiveUp::NotRetryable => 0,
            GiveUp::AttemptsExhausted => 1,
            GiveUp::DeadlineExceeded => 2,
            GiveUp::BudgetExhausted => 3,
            GiveUp::BreakerOpen { .. } => 4,
            GiveUp::AmbiguousNotIdempotent => 5,
            GiveUp::AttemptTimedOut => 6,
        }
    }

    /// A stable snake-case name (the `reason` metric label).
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUp::NotRetryable => "not_retryable",
            GiveUp::AttemptsExhausted => "attempts_exhausted",
            GiveUp::DeadlineExceeded => "deadline_exceeded",
            GiveUp::BudgetExhausted => "budget_exhausted",
            GiveUp::BreakerOpen { .. } => "breaker_open",
            GiveUp::AmbiguousNotIdempotent => "ambiguous_not_idempotent",
            GiveUp::AttemptTimedOut => "attempt_timed_out",
        }
    }
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::NotRetryable => f.write_str("error is not retryable"),
            GiveUp::AttemptsExhausted => f.write_str("attempts exhausted"),
            GiveUp::DeadlineExceeded => f.write_str("deadline exceeded"),
            GiveUp::BudgetExhausted => f.write_str("retry budget exhausted"),
            GiveUp::BreakerOpen { retry_in } => {
                write!(f, "circuit breaker open (probing in {retry_in:?})")
            }
            GiveUp::AmbiguousNotIdempotent => {
                f.write_str("outcome unknown: a non-idempotent attempt may have been applied")
            }
            GiveUp::AttemptTimedOut => f.write_str("last attempt timed out"),
        }
    }
}

/// A call that gave up.
#[derive(Debug)]
pub struct RetryError<E> {
    /// Why the call gave up.
    pub reason: GiveUp,
    /// The last error returned by the operation; `None` if no attempt ran or the last attempt
    /// was cut by a timeout.
    pub error: Option<E>,
    /// Attempts that ran.
    pub attempts: u32,
    /// `true` if any attempt may have applied (a cut attempt counts). An ambiguous attempt 1
    /// followed by a definite failure on attempt 2 is still ambiguous overall.
    pub may_have_applied: bool,
}

impl<E> RetryError<E> {
    /// The last error returned by the operation, if any.
    pub fn into_error(self) -> Option<E> {
        self.error
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt(s): {}",
            self.attempts, self.reason
        )?;
        if self.may_have_applied && self.reason != GiveUp::AmbiguousNotIdempotent {
            f.write_str(" (an attempt may have been applied)")?;
        }
        if let Some(e) = &self.error {
            write!(f, "; last error: {e}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The retry policy: a [`RetryConfig`] plus an optional shared [`RetryBudget`] and
/// [`CircuitBreaker`]. Cheap to clone (one `Arc`); `Send + Sync`.
///
/// # Behavior of [`RetryPolicy::run`]
/// For each attempt:
/// 1. If a breaker is set and refuses, give up at once with [`GiveUp::BreakerOpen`] (no
///    attempt runs).
/// 2. Run the attempt, raced with `tokio::time::timeout_at` against the earlier of the call
///    deadline and the attempt timeout. The operation's future is polled first, so a result
///    ready at the same instant as the deadline wins.
/// 3. Success: credit the budget and the breaker, return the value. This path does not
///    allocate and emits nothing.
/// 4. Failure: classify it; the breaker records a failure only if `server_fault` (a cut
///    attempt always counts as a server fault and as possibly applied). Then, in order:
///    cut by the call deadline -> `DeadlineExceeded`; `DoNotRetry` -> `NotRetryable`;
///    possibly applied and [`Idempotency::NotIdempotent`] -> `AmbiguousNotIdempotent`;
///    hint above `reject_hint_above` -> `NotRetryable`; attempts used up ->
///    `AttemptsExhausted` (`AttemptTimedOut` if the last attempt was cut); delay =
///    `max(backoff, min(hint, max_hint))`; if now + delay reaches the deadline ->
///    `DeadlineExceeded` at once (no sleep); budget refuses -> `BudgetExhausted` (checked
///    last so that no token is spent on a retry that would not happen); else sleep and retry.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use resilience::{Classification, Idempotency, RetryConfig, RetryPolicy, RetryBudget,
///                  RetryBudgetConfig, CircuitBreaker, BreakerConfig};
///
/// # async fn get(_: Option<Duration>) -> Result<String, std::io::Error> { Ok(String::new()) }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = RetryPolicy::new(RetryConfig {
///     max_attempts: 4,
///     deadline: Some(Duration::from_secs(2)),
///     ..RetryConfig::default()
/// })?
/// .with_budget(RetryBudget::new(RetryBudgetConfig::default())?)
/// .with_breaker(CircuitBreaker::new(BreakerConfig::default())?);
///
/// let value = policy
///     .run(
///         Idempotency::Idempotent,
///         |e: &std::io::Error| match e.kind() {
///             std::io::ErrorKind::ConnectionReset => Classification::retry().ambiguous(),
///             std::io::ErrorKind::ConnectionRefused => Classification::retry(),
///             _ => Classification::fail(),
///         },
///         |attempt| get(attempt.remaining()),
///     )
///     .await?;
/// # let _ = value; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    inner: Arc<Inner>,
}

struct Inner {
    config: RetryConfig,
    budget: Option<RetryBudget>,
    breaker: Option<CircuitBreaker>,
    listener: Option<Listener>,
    seed: u64,
    /// Calls that needed randomness so far; with `seed` it derives each call's RNG.
    rng_calls: AtomicU64,
    /// Whether a call must read the clock before its first attempt (deadline, attempt timeout
    /// or breaker). Without any of them the success path reads no clock.
    needs_clock: bool,
    metrics: PolicyMetrics,
}

impl Inner {
    fn duplicate(&self) -> Self {
        Self {
            config: self.config.clone(),
            budget: self.budget.clone(),
            breaker: self.breaker.clone(),
            listener: self.listener.clone(),
            seed: self.seed,
            rng_calls: AtomicU64::new(self.rng_calls.load(Ordering::Relaxed)),
            needs_clock: self.needs_clock,
            metrics: PolicyMetrics::new(),
        }
    }
}

/// Display of a cut attempt in [`Event::Retry`].
struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("attempt timed out")
    }
}

/// One failed attempt, as seen by the decision logic.
struct Failure {
    action: RetryAction,
    may_have_applied: bool,
    cut: bool,
}

/// A call whose first attempt the caller runs itself, on a path of its own (see
/// [`RetryPolicy::start`]); the policy takes over only if that attempt fails.
///
/// This is [`RetryPolicy::run`] cut in two for a caller whose success path must be as lean as
/// a bare call (one state machine, no closure): the decisions are the same.
///
/// # Example
/// ```
/// use resilience::{Classification, Idempotency, RetryConfig, RetryPolicy};
/// # async fn get(_: Option<std::time::Duration>) -> Result<u32, std::io::Error> { Ok(7) }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = RetryPolicy::new(RetryConfig::default())?;
/// let classify = |_: &std::io::Error| Classification::retry();
/// let call = policy.start::<std::io::Error>(tokio::time::Instant::now())?;
/// let value = match get(call.attempt().remaining()).await {
///     Ok(value) => {
///         call.succeeded();
///         value
///     }
///     Err(error) => {
///         call.retry(Idempotency::Idempotent, classify, |a| get(a.remaining()), error)
///             .await?
///     }
/// };
/// # assert_eq!(value, 7); Ok(()) }
/// ```
#[must_use = "a call must end with `succeeded` or `retry`"]
pub struct Call<'p> {
    policy: &'p RetryPolicy,
    permit: Option<BreakerPermit<'p>>,
    call_deadline: Option<Instant>,
    first: Attempt,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("call_deadline", &self.call_deadline)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// Creates a policy without budget or breaker. The jitter RNG is seeded once from the OS
    /// (use [`RetryPolicy::with_rng_seed`] for reproducible delays).
    ///
    /// # Errors
    /// `max_attempts == 0`, a zero `deadline` or `attempt_timeout`, or
    /// `reject_hint_above < max_hint`.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        if config.max_attempts == 0 {
            return Err(ConfigError::new(
                "RetryConfig::max_attempts",
                "must be >= 1",
            ));
        }
        if config.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "RetryConfig::deadline",
                "must be > 0 (use None for no deadline)",
            ));
        }
        if config.attempt_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "RetryConfig::attempt_timeout",
                "must be > 0 (use None for no timeout)",
            ));
        }
        if config.reject_hint_above < config.max_hint {
            return Err(ConfigError::new(
                "RetryConfig::reject_hint_above",
                "must be >= max_hint",
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                budget: None,
                breaker: None,
                listener: None,
                seed: os_seed(),
                rng_calls: AtomicU64::new(0),
                needs_clock: config.deadline.is_some() || config.attempt_timeout.is_some(),
                metrics: PolicyMetrics::new(),
                config,
            }),
        })
    }

    fn modify(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| shared.duplicate());
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Shares `budget` with this policy (and with every other holder of the budget).
    #[must_use]
    pub fn with_budget(self, budget: RetryBudget) -> Self {
        self.modify(|i| i.budget = Some(budget))
    }

    /// Guards every attempt with `breaker`. If a listener is set, it is also registered on the
    /// breaker for [`Event::BreakerTransition`] (set each of the two once).
    #[must_use]
    pub fn with_breaker(self, breaker: CircuitBreaker) -> Self {
        self.modify(|i| {
            if let Some(l) = &i.listener {
                breaker.add_listener(l.clone());
            }
            i.breaker = Some(breaker);
            i.needs_clock = true;
        })
    }

    /// Makes jitter deterministic: each call that needs randomness gets an RNG derived from
    /// `seed` and a per-policy counter of such calls (shared by clones made after this).
    #[must_use]
    pub fn with_rng_seed(self, seed: u64) -> Self {
        self.modify(|i| {
            i.seed = seed;
            i.rng_calls = AtomicU64::new(0);
        })
    }

    /// Calls `listener` for every [`Event`] (retry, give-up, budget exhausted, and transitions
    /// of the breaker if one is set). Replaces a previous listener of this policy.
    #[must_use]
    pub fn with_listener(self, listener: Listener) -> Self {
        self.modify(|i| {
            if let Some(b) = &i.breaker {
                b.add_listener(listener.clone());
            }
            i.listener = Some(listener);
        })
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.inner.config
    }

    /// The shared retry budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    /// The circuit breaker, if any.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }

    /// Runs `op` until it succeeds or the policy gives up; see the type-level docs for the
    /// exact rules. `classify` is called once per failed attempt.
    ///
    /// # Errors
    /// A [`RetryError`] with the reason, the last error, the number of attempts, and whether
    /// any attempt may have applied.
    pub async fn run<T, E, Op, Fut, C>(
        &self,
        idempotency: Idempotency,
        classify: C,
        mut op: Op,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Classification,
        E: fmt::Display,
    {
        // `now` is read only if something needs it before the first attempt; after a failure
        // it is always read.
        let now = self.inner.needs_clock.then(Instant::now);
        let call = self.begin(now)?;
        // The first attempt runs here and the retry loop, boxed, only after a failure: the
        // state of a call that succeeds at once is this attempt and little else.
        let Attempt {
            number,
            deadline,
            started,
        } = call.first;
        let outcome = self.attempt(&mut op, number, deadline, started).await;
        if let Some(Ok(value)) = outcome {
            call.succeeded();
            return Ok(value);
        }
        Box::pin(call.resume(idempotency, classify, op, outcome)).await
    }

    /// Starts a call whose first attempt the caller runs itself (see [`Call`]): the call's
    /// deadline counts from `started`, and the breaker is asked for a permit now.
    ///
    /// # Errors
    /// [`GiveUp::BreakerOpen`] when the breaker refuses the first attempt (no attempt runs).
    pub fn start<E: fmt::Display>(&self, started: Instant) -> Result<Call<'_>, RetryError<E>> {
        self.begin(Some(started))
    }

    fn begin<E: fmt::Display>(&self, now: Option<Instant>) -> Result<Call<'_>, RetryError<E>> {
        let call_deadline = match (self.inner.config.deadline, now) {
            (Some(d), Some(start)) => Some(start.checked_add(d).unwrap_or_else(far_future)),
            _ => None,
        };
        let permit = match self.permit(now) {
            Ok(permit) => permit,
            Err(retry_in) => {
                return Err(self.give_up(GiveUp::BreakerOpen { retry_in }, None, 0, false));
            }
        };
        Ok(Call {
            policy: self,
            permit,
            call_deadline,
            first: Attempt {
                number: 1,
                deadline: earliest(call_deadline, self.attempt_deadline(now)),
                started: now,
            },
        })
    }

    /// A breaker permit for the next attempt (`None` without a breaker); `Err` with the time
    /// until the open breaker lets a probe through.
    fn permit(&self, now: Option<Instant>) -> Result<Option<BreakerPermit<'_>>, Duration> {
        match &self.inner.breaker {
            None => Ok(None),
            Some(breaker) => breaker
                .try_acquire_at(now.unwrap_or_else(Instant::now))
                .map(Some)
                .map_err(|open| open.retry_in),
        }
    }

    fn attempt_deadline(&self, now: Option<Instant>) -> Option<Instant> {
        match (self.inner.config.attempt_timeout, now) {
            (Some(t), Some(now)) => Some(now.checked_add(t).unwrap_or_else(far_future)),
            _ => None,
        }
    }

    /// Runs attempt `number`; `None` when it was cut at `deadline` (`cut_attempts`).
    async fn attempt<T, E, Op, Fut>(
        &self,
        op: &mut Op,
        number: u32,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Option<Result<T, E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Pinned once here and raced by reference: passing the future by value into a helper
        // would store it twice in this state machine.
        let mut fut = pin!(op(Attempt {
            number,
            deadline,
            started,
        }));
        match deadline {
            // Boxed: its timer would otherwise be part of every call's state, cut or not.
            Some(deadline) if self.inner.config.cut_attempts => {
                Box::pin(run_until(deadline, fut.as_mut())).await
            }
            _ => Some(fut.as_mut().await),
        }
    }

    fn succeeded(&self, permit: Option<BreakerPermit<'_>>) {
        if let Some(permit) = permit {
            permit.success();
        }
        if let Some(budget) = &self.inner.budget {
            budget.deposit();
        }
    }
}

impl<'p> Call<'p> {
    /// The first attempt's context: number 1, its deadline (the earlier of the call deadline
    /// and the attempt timeout) and its start. The caller's attempt must end by
    /// [`Attempt::deadline`] on its own: the policy does not cut it.
    pub fn attempt(&self) -> Attempt {
        self.first
    }

    /// The first attempt succeeded: credits the breaker and the budget, as
    /// [`RetryPolicy::run`] does.
    pub fn succeeded(self) {
        self.policy.succeeded(self.permit);
    }

    /// The first attempt failed with `error`: classifies it and retries with `op` as
    /// [`RetryPolicy::run`] would have (attempt numbers go on from 2).
    ///
    /// # Errors
    /// As [`RetryPolicy::run`].
    pub async fn retry<T, E, Op, Fut, C>(
        self,
        idempotency: Idempotency,
        classify: C,
        op: Op,
        error: E,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Classification,
        E: fmt::Display,
    {
        self.resume(idempotency, classify, op, Some(Err(error)))
            .await
    }

    /// The retry loop, from the first attempt's failure (`None`: it was cut).
    async fn resume<T, E, Op, Fut, C>(
        self,
        idempotency: Idempotency,
        classify: C,
        mut op: Op,
        first: Option<Result<T, E>>,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Classification,
        E: fmt::Display,
    {
        let policy: &'p RetryPolicy = self.policy;
        let inner = &*policy.inner;
        let config = &inner.config;
        let Call {
            mut permit,
            call_deadline,
            ..
        } = self;
        let mut outcome = first;
        let mut now: Option<Instant>;
        let mut attempts = 1u32;
        let mut may_have_applied = false;
        let mut previous: Option<Duration> = None;
        let mut rng: Option<SmallRng> = None;
        let mut last_error: Option<E>;

        loop {
            let failure = match outcome {
                Some(Ok(value)) => {
                    policy.succeeded(permit);
                    return Ok(value);
                }
                Some(Err(error)) => {
                    let c = classify(&error);
                    let at = Instant::now();
                    now = Some(at);
                    if let Some(permit) = permit
                        && c.server_fault
                    {
                        permit.failure_at(at);
                    }
                    last_error = Some(error);
                    Failure {
                        action: c.action,
                        may_have_applied: c.may_have_applied,
                        cut: false,
                    }
                }
                None => {
                    let at = Instant::now();
                    now = Some(at);
                    if let Some(permit) = permit {
                        permit.failure_at(at);
                    }
                    last_error = None;
                    Failure {
                        action: RetryAction::Retry,
                        may_have_applied: true,
                        cut: true,
                    }
                }
            };
            may_have_applied |= failure.may_have_applied;
            let now_at = now.unwrap_or_else(Instant::now);

            let past_deadline = |at: Option<Instant>| match (at, call_deadline) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(at), Some(deadline)) => at >= deadline,
            };
            let stop = if failure.cut && past_deadline(Some(now_at)) {
                Some(GiveUp::DeadlineExceeded)
            } else if failure.action == RetryAction::DoNotRetry {
                Some(GiveUp::NotRetryable)
            } else if failure.may_have_applied && idempotency == Idempotency::NotIdempotent {
                Some(GiveUp::AmbiguousNotIdempotent)
            } else if matches!(failure.action, RetryAction::RetryAfter(h) if h > config.reject_hint_above)
            {
                Some(GiveUp::NotRetryable)
            } else if attempts >= config.max_attempts {
                Some(if failure.cut {
                    GiveUp::AttemptTimedOut
                } else {
                    GiveUp::AttemptsExhausted
                })
            } else {
                None
            };
            if let Some(reason) = stop {
                return Err(policy.give_up(reason, last_error, attempts, may_have_applied));
            }

            let rng = rng.get_or_insert_with(|| {
                let n = inner.rng_calls.fetch_add(1, Ordering::Relaxed);
                SmallRng::seed_from_u64(splitmix64(inner.seed ^ splitmix64(n)))
            });
            let mut delay = config.backoff.delay(attempts, previous, rng);
            if let RetryAction::RetryAfter(hint) = failure.action {
                delay = delay.max(hint.min(config.max_hint));
            }
            let wake = now_at.checked_add(delay);
            if past_deadline(wake) {
                return Err(policy.give_up(
                    GiveUp::DeadlineExceeded,
                    last_error,
                    attempts,
                    may_have_applied,
                ));
            }
            if let Some(budget) = &inner.budget
                && !budget.try_withdraw_at(now_at)
            {
                inner.metrics.budget_exhausted(&config.name, attempts);
                if let Some(l) = &inner.listener {
                    l(&Event::BudgetExhausted {
                        policy: &config.name,
                        attempt: attempts,
                    });
                }
                return Err(policy.give_up(
                    GiveUp::BudgetExhausted,
                    last_error,
                    attempts,
                    may_have_applied,
                ));
            }

            let shown: &dyn fmt::Display = match &last_error {
                Some(e) => e,
                None => &TimedOut,
            };
            inner.metrics.retry(&config.name, attempts, delay, shown);
            if let Some(l) = &inner.listener {
                l(&Event::Retry {
                    policy: &config.name,
                    attempt: attempts,
                    delay,
                    error: shown,
                });
            }
            // `wake` is Some: a None (overflow) would have been past any deadline, and without
            // a deadline we cap the sleep at the far future.
            tokio::time::sleep_until(wake.unwrap_or_else(far_future)).await;
            now = Some(Instant::now());
            previous = Some(delay);
            // Timers wake late (Tokio rounds a sleep up to its next millisecond): no attempt
            // starts at or after the deadline.
            if past_deadline(now) {
                return Err(policy.give_up(
                    GiveUp::DeadlineExceeded,
                    last_error,
                    attempts,
                    may_have_applied,
                ));
            }

            permit = match policy.permit(now) {
                Ok(permit) => permit,
                Err(retry_in) => {
                    // Report the previous attempt's error.
                    return Err(policy.give_up(
                        GiveUp::BreakerOpen { retry_in },
                        last_error,
                        attempts,
                        may_have_applied,
                    ));
                }
            };
            attempts += 1;
            let deadline = earliest(call_deadline, policy.attempt_deadline(now));
            outcome = policy.attempt(&mut op, attempts, deadline, now).await;
        }
    }
}

impl RetryPolicy {
    #[cold]
    fn give_up<E: fmt::Display>(
        &self,
        reason: GiveUp,
        error: Option<E>,
        attempts: u32,
        may_have_applied: bool,
    ) -> RetryError<E> {
        let inner = &*self.inner;
        let shown = error.as_ref().map(|e| e as &dyn fmt::Display);
        inner.metrics.give_up(
            &inner.config.name,
            reason,
            attempts,
            may_have_applied,
            shown,
        );
        if let Some(l) = &inner.listener {
            l(&Event::GiveUp {
                policy: &inner.config.name,
                reason,
                attempts,
                may_have_applied,
                error: shown,
            });
        }
        RetryError {
            reason,
            error,
            attempts,
            may_have_applied,
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.inner.config)
            .field("budget", &self.inner.budget)
            .field("breaker", &self.inner.breaker)
            .field("listener", &self.inner.listener.is_some())
            .finish()
    }
}

/// Runs `fut` until `deadline`. The future is polled once before any timer is created (so an
/// immediately ready result costs no timer registration), then raced with `timeout_at`, which
/// also polls the future before the timer: a result ready at the deadline instant wins.
#[inline]
async fn run_until<F: Future>(deadline: Instant, mut fut: Pin<&mut F>) -> Option<F::Output> {
    let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    if let Poll::Ready(output) = first {
        return Some(output);
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An instant about 30 years ahead, for durations too large to add.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed from the OS; falls back to the clock and an address if the OS has no entropy.
fn os_seed() -> u64 {
    use rand::Rng;
    match SmallRng::try_from_rng(&mut rand::rngs::SysRng) {
        Ok(mut rng) => rng.next_u64(),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let local = 0u8;
            splitmix64(t ^ (&raw const local as usize as u64))
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
