//! The executor: runs an operation under backoff, stop conditions, classification, retry
//! budget and circuit breaker.
//!
//! One concept per file: [`RetryConfig`] (`config.rs`); [`Idempotency`], [`Attempt`] and
//! running one attempt to its deadline (`attempt.rs`); [`RetryPolicy::run`] (`run.rs`); the
//! caller-driven [`Call`] (`call.rs`); the retry loop both share (`resume.rs`); [`GiveUp`] and
//! [`RetryError`] (`give_up.rs`); events and metrics (`emit.rs`); jitter RNGs (`rng.rs`).

mod attempt;
mod call;
mod config;
mod emit;
mod give_up;
mod resume;
mod rng;
mod run;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::Listener;
use crate::observe::PolicyMetrics;
use crate::{CircuitBreaker, ConfigError, RetryBudget};

pub use attempt::{Attempt, Idempotency};
pub use call::Call;
pub use config::RetryConfig;
pub use give_up::{GiveUp, RetryError};

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
                seed: rng::os_seed(),
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
    /// breaker for [`Event::BreakerTransition`](crate::Event::BreakerTransition) (set each of the two once).
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

    /// Calls `listener` for every [`Event`](crate::Event) (retry, give-up, budget exhausted, and transitions
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

#[cfg(test)]
mod tests;
