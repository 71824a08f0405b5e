//! Retry budget: a token bucket shared by every clone of a policy, across tasks and threads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::ConfigError;

const MILLI: u64 = 1000;
/// One retry costs one token.
const RETRY_COST: u64 = MILLI;

/// Settings of a [`RetryBudget`]. See [`RetryBudget`]'s `# Design` section for the reasoning
/// behind the defaults.
///
/// # Default
/// `retry_ratio = 0.1`, `min_retries_per_sec = 10.0`, `max_tokens = 100`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    /// Tokens deposited by each successful call (one retry costs one token), in `[0, 1]`.
    pub retry_ratio: f64,
    /// Floor: tokens refilled per second regardless of traffic, up to one second's worth
    /// (at least one token). `0.0` disables the floor.
    pub min_retries_per_sec: f64,
    /// Maximum balance, in tokens (retries). At least 1.
    pub max_tokens: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            retry_ratio: 0.1,
            min_retries_per_sec: 10.0,
            max_tokens: 100,
        }
    }
}

/// A retry budget (token bucket). Cheap to clone: clones share one bucket.
///
/// # Design
/// - A retry costs one token; a successful call deposits [`RetryBudgetConfig::retry_ratio`]
///   tokens (default 0.1). Over time retries are therefore bounded by 10 % of successful
///   traffic: Google SRE's rule ("retries < 10 % of requests") and the amplification target
///   `attempts / calls <= 1.1`. Finagle deposits 20 %; AWS's standard quota (success refunds 1,
///   retry costs 5) is also 20 % in steady state. We chose the stricter SRE figure because a
///   Redis client sends many small requests and 10 % already absorbs the usual blips.
/// - A floor refills [`RetryBudgetConfig::min_retries_per_sec`] tokens per second (default 10,
///   Finagle's floor) up to one second's worth, so a low-traffic client can still retry. The
///   bucket starts with that one second's worth.
/// - The balance is capped at [`RetryBudgetConfig::max_tokens`] (default 100, the same number
///   of retries as AWS's 500-token quota at 5 tokens a retry), so a long healthy period cannot
///   bank an unbounded burst of retries for the next outage. Unlike gRPC's throttling (retry only
///   while tokens > half, failure costs 1), a failure itself costs nothing here: only the retry
///   that follows it does, which is what multiplies load.
/// - Lock-free: two `AtomicU64`s (milli-tokens and the last floor refill). A deposit into a full
///   bucket is a single relaxed load, so the success path does not bounce a cache line between
///   threads. Time is read from `tokio::time::Instant`, so paused-time tests control the floor.
///
/// # Behavior
/// - [`RetryBudget::try_withdraw`] takes one token for one retry, or returns `false` when the
///   balance is below one token (the retry must not happen).
/// - [`RetryBudget::deposit`] adds `retry_ratio` tokens for one successful call.
/// - The floor refill is computed lazily on withdrawal from `tokio::time::Instant`.
///
/// # Example
/// ```
/// use resilience::{RetryBudget, RetryBudgetConfig};
/// let budget = RetryBudget::new(RetryBudgetConfig { min_retries_per_sec: 0.0, ..Default::default() })?;
/// for _ in 0..10 { budget.deposit(); }          // 10 successes -> 1 token
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// # Ok::<(), resilience::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    config: RetryBudgetConfig,
    origin: Instant,
    /// Balance in milli-tokens. May briefly exceed `max` by a few deposits; always clamped on
    /// read.
    tokens: AtomicU64,
    /// Nanoseconds since `origin` up to which the floor has been credited.
    last_refill: AtomicU64,
    deposit: u64,
    max: u64,
    floor_cap: u64,
    /// Floor refill rate in milli-tokens per nanosecond.
    floor_rate: f64,
}

impl RetryBudget {
    /// Creates a budget.
    ///
    /// # Errors
    /// `retry_ratio` outside `[0, 1]` or not finite, `min_retries_per_sec` negative or not
    /// finite, `max_tokens == 0`.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&config.retry_ratio) {
            return Err(ConfigError::new(
                "RetryBudgetConfig::retry_ratio",
                "must be in [0, 1]",
            ));
        }
        if !config.min_retries_per_sec.is_finite() || config.min_retries_per_sec < 0.0 {
            return Err(ConfigError::new(
                "RetryBudgetConfig::min_retries_per_sec",
                "must be finite and >= 0",
            ));
        }
        if config.max_tokens == 0 {
            return Err(ConfigError::new(
                "RetryBudgetConfig::max_tokens",
                "must be >= 1",
            ));
        }
        let max = u64::from(config.max_tokens) * MILLI;
        let floor_cap = if config.min_retries_per_sec > 0.0 {
            // One second's worth, at least one retry, at most the cap. Float-to-int `as`
            // saturates, and the value is finite and non-negative here.
            ((config.min_retries_per_sec * MILLI as f64).ceil() as u64).clamp(RETRY_COST, max)
        } else {
            0
        };
        let floor_rate = config.min_retries_per_sec * MILLI as f64 / 1e9;
        let deposit = (config.retry_ratio * MILLI as f64).round() as u64;
        Ok(Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                tokens: AtomicU64::new(floor_cap),
                last_refill: AtomicU64::new(0),
                deposit,
                max,
                floor_cap,
                floor_rate,
                config,
            }),
        })
    }

    /// The settings this budget was built with.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.inner.config
    }

    /// Takes one token for one retry; `false` means the retry must not happen.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now())
    }

    /// [`RetryBudget::try_withdraw`] with an explicit `now` (used by the policy, which has
    /// already read the clock).
    pub fn try_withdraw_at(&self, now: Instant) -> bool {
        let inner = &*self.inner;
        inner.refill(now);
        inner
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                let t = t.min(inner.max);
                t.checked_sub(RETRY_COST)
            })
            .is_ok()
    }

    /// Credits one successful call. A single relaxed load when the bucket is full.
    #[inline]
    pub fn deposit(&self) {
        let inner = &*self.inner;
        if inner.deposit == 0 || inner.tokens.load(Ordering::Relaxed) >= inner.max {
            return;
        }
        inner.tokens.fetch_add(inner.deposit, Ordering::Relaxed);
    }

    /// The current balance in tokens (retries that would be allowed now), for health reports.
    /// Includes the floor refill accrued up to now.
    pub fn available(&self) -> f64 {
        let inner = &*self.inner;
        inner.refill(Instant::now());
        inner.tokens.load(Ordering::Acquire).min(inner.max) as f64 / MILLI as f64
    }
}

impl Inner {
    fn refill(&self, now: Instant) {
        if self.floor_cap == 0 {
            return;
        }
        let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let last = self.last_refill.load(Ordering::Acquire);
        if now_ns <= last {
            return;
        }
        // Saturating float-to-int conversion; the product is finite and non-negative.
        let add = ((now_ns - last) as f64 * self.floor_rate) as u64;
        if add == 0 {
            // Keep `last` so that the fractional credit keeps accruing.
            return;
        }
        if self
            .last_refill
            .compare_exchange(last, now_ns, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // another thread credited this interval
        }
        let cap = self.floor_cap;
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < cap).then(|| t.saturating_add(add).min(cap))
            });
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.inner.config)
            .field(
                "tokens",
                &(self
                    .inner
                    .tokens
                    .load(Ordering::Relaxed)
                    .min(self.inner.max) as f64
                    / MILLI as f64),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn no_floor() -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            min_retries_per_sec: 0.0,
            max_tokens: 5,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn starts_empty_without_floor_and_fills_from_successes() {
        let b = no_floor();
        assert!(!b.try_withdraw());
        for _ in 0..25 {
            b.deposit();
        }
        assert_eq!(b.available(), 2.5);
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[test]
    fn balance_is_capped() {
        let b = no_floor();
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(b.available(), 5.0);
        for _ in 0..5 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn floor_drains_and_refills_with_time() {
        let b = RetryBudget::new(RetryBudgetConfig::default()).unwrap();
        // Starts with one second's worth of floor: 10 retries.
        for _ in 0..10 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_millis(250)).await;
        // 2.5 tokens accrued.
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        // The floor never banks more than one second's worth.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(b.available(), 10.0);
        // Successes can fill above the floor, up to max_tokens.
        for _ in 0..2000 {
            b.deposit();
        }
        assert_eq!(b.available(), 100.0);
    }

    #[test]
    fn clones_share_one_bucket() {
        let a = no_floor();
        let b = a.clone();
        for _ in 0..10 {
            a.deposit();
        }
        assert!(b.try_withdraw());
        assert!(!a.try_withdraw());
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let b = no_floor();
        for _ in 0..50 {
            b.deposit();
        }
        let granted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if b.try_withdraw() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(granted.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn config_is_validated() {
        let bad = |c: RetryBudgetConfig| RetryBudget::new(c).unwrap_err().setting();
        assert_eq!(
            bad(RetryBudgetConfig {
                retry_ratio: 1.5,
                ..Default::default()
            }),
            "RetryBudgetConfig::retry_ratio"
        );
        assert_eq!(
            bad(RetryBudgetConfig {
                retry_ratio: f64::NAN,
                ..Default::default()
            }),
            "RetryBudgetConfig::retry_ratio"
        );
        assert_eq!(
            bad(RetryBudgetConfig {
                min_retries_per_sec: -1.0,
                ..Default::default()
            }),
            "RetryBudgetConfig::min_retries_per_sec"
        );
        assert_eq!(
            bad(RetryBudgetConfig {
                max_tokens: 0,
                ..Default::default()
            }),
            "RetryBudgetConfig::max_tokens"
        );
    }
}
