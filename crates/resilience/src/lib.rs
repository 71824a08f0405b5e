//! Retry with backoff and jitter, a shared retry budget, and a circuit breaker: the policy core
//! of resilient-redis. No Redis, no sockets: the caller classifies its own errors.
//!
//! # Tour
//! - [`Backoff`] + [`Jitter`]: how long to wait before each retry; a pure function of the retry
//!   number, the previous delay and an injected RNG.
//! - [`Classification`]: what one failed attempt means: [`RetryAction`] (retry, retry after a
//!   server hint, stop), whether it *may have applied*, and whether it is the server's fault;
//!   with a reason ([`Verdict`]), why it failed, for the retry counter.
//! - [`RetryBudget`]: a token bucket shared by all clones, bounding retries to ~10 % of
//!   successful traffic plus a small floor, so an outage cannot multiply load.
//! - [`CircuitBreaker`]: closed / open / half-open on consecutive failures or a failure rate.
//! - [`RetryPolicy`]: composes them; [`RetryPolicy::run`] executes an async operation.
//! - [`http`]: status-code classification and `Retry-After` parsing.
//! - `tower` (feature `tower`): the policy as a `tower` layer.
//!
//! The heart of the design is the *may have applied* flag: a failure after the request may
//! have reached the server is retried only for an [`Idempotency::Idempotent`] operation;
//! otherwise the call ends with [`GiveUp::AmbiguousNotIdempotent`] and the caller learns that
//! the outcome is unknown.
//!
//! ```no_run
//! use std::time::Duration;
//! use resilience::{Classification, Idempotency, RetryConfig, RetryPolicy};
//!
//! # async fn send() -> Result<u64, std::io::Error> { Ok(1) }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = RetryPolicy::new(RetryConfig {
//!     max_attempts: 4,
//!     deadline: Some(Duration::from_secs(1)),
//!     ..RetryConfig::default()
//! })?;
//! let n = policy
//!     .run(Idempotency::NotIdempotent, |_e: &std::io::Error| Classification::retry(), |_attempt| send())
//!     .await?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! # Observability
//! Events are emitted only on slow paths (never for a first-attempt success): to the
//! [`Listener`] of the policy or breaker, as `tracing` events with target `resilience`, and as
//! `metrics` series (names in [`observe`]):
//!
//! | name | kind | labels | when |
//! |---|---|---|---|
//! | `resilience.retries` | counter | `policy`, `reason` ([`Verdict::retry_reason`] of the attempt's error, as in [`Event::Retry`]; `attempt_timed_out` for a cut attempt) | an attempt failed and will be retried (tracing `DEBUG` "retrying"), or the caller counted a retry of its own ([`RetryPolicy::count_retry`]) |
//! | `resilience.give_ups` | counter | `policy`, `reason` ([`GiveUp::as_str`]) | a call gave up (tracing `DEBUG` "giving up") |
//! | `resilience.budget.exhausted` | counter | `policy` | the budget refused a retry (tracing `WARN`) |
//! | `resilience.breaker.transitions` | counter | `breaker`, `to` (`closed`/`open`/`half_open`) | a breaker changed state (tracing `WARN` when opening, else `INFO`) |
//! | `resilience.breaker.state` | gauge | `breaker` | 0 closed, 1 open, 2 half-open; set on each transition (unless [`BreakerConfig::state_gauge`] is off) |
//!
//! The `policy` and `breaker` labels are [`RetryConfig::name`] and [`BreakerConfig::name`].

mod backoff;
mod breaker;
mod budget;
mod classify;
mod error;
mod event;
pub mod http;
pub mod observe;
mod policy;
mod throttle;
mod totals_throttle;
#[cfg(feature = "tower")]
pub mod tower;

pub use backoff::{Backoff, Jitter};
pub use breaker::{BreakerConfig, BreakerOpen, BreakerPermit, BreakerState, CircuitBreaker};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use classify::{Classification, RetryAction, Verdict};
pub use error::ConfigError;
pub use event::{Event, Listener};
pub use policy::{Attempt, Call, GiveUp, Idempotency, RetryConfig, RetryError, RetryPolicy};
pub use throttle::{AdaptiveThrottle, AdaptiveThrottleConfig, reject_probability};
pub use totals_throttle::{ThrottleTotals, TotalsThrottle};
