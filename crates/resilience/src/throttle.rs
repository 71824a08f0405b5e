//! Adaptive client-side throttling, as in Google's SRE book ("Handling Overload").
//!
//! Each client tracks, over a sliding window, the requests its application made (`requests`) and
//! the ones the backend accepted (`accepts`). While the backend accepts everything the two are
//! equal and nothing is rejected. When the backend starts refusing work (throttling, overload),
//! the client rejects new requests locally with probability
//!
//! ```text
//! max(0, (requests - K * accepts) / (requests + 1))
//! ```
//!
//! so a saturated backend is not flooded with work it would refuse anyway, while roughly
//! `K * accepts` requests still reach it, enough to notice when it recovers. `K = 2` (the book's
//! default) lets twice the accepted load through.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

use crate::ConfigError;

/// Configuration of an [`AdaptiveThrottle`].
///
/// # Default
/// `k` 2.0, a 10 s window in 10 buckets of 1 s, a probe at least every 20 ms.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveThrottleConfig {
    /// The multiplier `K`: how many requests per accepted request may still be sent. At least 1.
    pub k: f64,
    /// The sliding window the counts cover.
    pub window: Duration,
    /// How many buckets the window is divided into (its time resolution). From 1 to 1000.
    pub buckets: u32,
    /// While requests are being rejected, one is let through at least this often whatever the
    /// formula says, so a window that holds no accepts (the backend refused a burst, then the
    /// application kept calling in a tight loop) still probes the backend and recovers within
    /// a second instead of starving itself. `None`: the formula alone.
    pub probe_interval: Option<Duration>,
}

impl Default for AdaptiveThrottleConfig {
    fn default() -> Self {
        Self {
            k: 2.0,
            window: Duration::from_secs(10),
            buckets: 10,
            probe_interval: Some(Duration::from_millis(20)),
        }
    }
}

impl AdaptiveThrottleConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// `k` below 1 or not finite, a zero window, or `buckets` outside 1..=1000.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let config = self;
        if !(config.k.is_finite() && config.k >= 1.0) {
            return Err(ConfigError::new(
                "AdaptiveThrottleConfig::k",
                format!("must be a finite number >= 1, got {}", config.k),
            ));
        }
        if config.window.is_zero() {
            return Err(ConfigError::new(
                "AdaptiveThrottleConfig::window",
                "must be greater than zero",
            ));
        }
        if !(1..=1000).contains(&config.buckets) {
            return Err(ConfigError::new(
                "AdaptiveThrottleConfig::buckets",
                format!("must be from 1 to 1000, got {}", config.buckets),
            ));
        }
        if config.probe_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "AdaptiveThrottleConfig::probe_interval",
                "must be greater than zero (None disables probes)",
            ));
        }
        Ok(())
    }
}

/// The SRE book's local rejection probability: `max(0, (requests - k * accepts) / (requests + 1))`.
pub fn reject_probability(requests: u64, accepts: u64, k: f64) -> f64 {
    let requests = requests as f64;
    ((requests - k * accepts as f64) / (requests + 1.0)).clamp(0.0, 1.0)
}

pub(crate) fn bucket_width(config: &AdaptiveThrottleConfig) -> Duration {
    (config.window / config.buckets).max(Duration::from_micros(1))
}

pub(crate) fn slot_of(origin: Instant, width: Duration, now: Instant) -> u64 {
    (now.saturating_duration_since(origin).as_nanos() / width.as_nanos().max(1)) as u64
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index of the time slot this bucket holds (`elapsed / bucket_width`).
    slot: u64,
    requests: u64,
    accepts: u64,
}

#[derive(Debug)]
struct Inner {
    config: AdaptiveThrottleConfig,
    origin: Instant,
    width: Duration,
    buckets: Mutex<Vec<Bucket>>,
    /// When a request was last sent, in ns after `origin`.
    last_admit: std::sync::atomic::AtomicU64,
}

/// Adaptive client-side throttling over a sliding window. Cheap to clone: clones share counts.
///
/// # Behavior
/// - [`AdaptiveThrottle::admit`] records one request and decides, with the injected RNG, whether
///   to send it (`true`) or reject it locally (`false`).
/// - [`AdaptiveThrottle::record_accept`] records that the backend accepted a request (any reply
///   that is not an overload refusal counts as accepted).
/// - Counts older than the window are forgotten, so the throttle recovers on its own.
///
/// # Example
/// ```
/// use resilience::{AdaptiveThrottle, AdaptiveThrottleConfig};
/// use rand::{SeedableRng, rngs::SmallRng};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), resilience::ConfigError> {
/// let throttle = AdaptiveThrottle::new(AdaptiveThrottleConfig::default())?;
/// let mut rng = SmallRng::seed_from_u64(7);
/// for _ in 0..100 {
///     if throttle.admit(&mut rng) {
///         // ... send; the backend refuses everything ...
///     }
/// }
/// assert!(throttle.reject_probability() > 0.9);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveThrottle {
    inner: Arc<Inner>,
}

impl AdaptiveThrottle {
    /// A throttle with no history (it admits everything until the backend refuses work).
    ///
    /// # Errors
    /// `k` below 1 or not finite, a zero window, or `buckets` outside 1..=1000.
    pub fn new(config: AdaptiveThrottleConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let width = bucket_width(&config);
        Ok(Self {
            inner: Arc::new(Inner {
                buckets: Mutex::new(vec![Bucket::default(); config.buckets as usize]),
                config,
                origin: Instant::now(),
                width,
                last_admit: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveThrottleConfig {
        &self.inner.config
    }

    fn slot_at(&self, now: Instant) -> u64 {
        slot_of(self.inner.origin, self.inner.width, now)
    }

    /// Applies `f` to the bucket of `now`, resetting it if it held an older slot.
    fn with_bucket(&self, now: Instant, f: impl FnOnce(&mut Bucket)) {
        let slot = self.slot_at(now);
        let mut buckets = self
            .inner
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = buckets.len() as u64;
        let b = &mut buckets[(slot % n) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        f(b);
    }

    /// `(requests, accepts)` over the window ending at `now`.
    pub fn counts_at(&self, now: Instant) -> (u64, u64) {
        let slot = self.slot_at(now);
        let buckets = self
            .inner
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = buckets.len() as u64;
        buckets
            .iter()
            .filter(|b| b.slot + n > slot && b.slot <= slot)
            .fold((0, 0), |(r, a), b| (r + b.requests, a + b.accepts))
    }

    /// The probability of rejecting a new request locally, at `now`.
    pub fn reject_probability_at(&self, now: Instant) -> f64 {
        let (requests, accepts) = self.counts_at(now);
        reject_probability(requests, accepts, self.inner.config.k)
    }

    /// The probability of rejecting a new request locally, now.
    pub fn reject_probability(&self) -> f64 {
        self.reject_probability_at(Instant::now())
    }

    /// Records one request at `now` and decides whether to send it (`true`) or reject it
    /// locally (`false`).
    pub fn admit_at<R: Rng + ?Sized>(&self, now: Instant, rng: &mut R) -> bool {
        use std::sync::atomic::Ordering;
        let p = self.reject_probability_at(now);
        self.with_bucket(now, |b| b.requests += 1);
        let nanos = now.saturating_duration_since(self.inner.origin).as_nanos() as u64;
        let last = &self.inner.last_admit;
        if p <= 0.0 || rng.random::<f64>() >= p {
            last.fetch_max(nanos, Ordering::Relaxed);
            return true;
        }
        // A probe: one request per `probe_interval` goes through whatever the formula says.
        let previous = last.load(Ordering::Relaxed);
        self.inner.config.probe_interval.is_some_and(|every| {
            nanos.saturating_sub(previous) >= every.as_nanos() as u64
                && last
                    .compare_exchange(previous, nanos, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
        })
    }

    /// Records one request and decides whether to send it (`true`) or reject it locally.
    pub fn admit<R: Rng + ?Sized>(&self, rng: &mut R) -> bool {
        self.admit_at(Instant::now(), rng)
    }

    /// Records that the backend accepted a request, at `now`.
    pub fn record_accept_at(&self, now: Instant) {
        self.with_bucket(now, |b| b.accepts += 1);
    }

    /// Records that the backend accepted a request.
    pub fn record_accept(&self) {
        self.record_accept_at(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::SmallRng};

    fn throttle() -> AdaptiveThrottle {
        AdaptiveThrottle::new(AdaptiveThrottleConfig::default()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_backend_is_never_throttled() {
        let t = throttle();
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..10_000 {
            assert!(t.admit(&mut rng));
            t.record_accept();
        }
        assert_eq!(t.reject_probability(), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_formula_is_the_books() {
        let t = throttle();
        let mut rng = SmallRng::seed_from_u64(1);
        // 100 requests, 20 accepted: p = (100 - 2 * 20) / 101.
        for i in 0..100 {
            t.admit_at(Instant::now(), &mut rng);
            if i < 20 {
                t.record_accept();
            }
        }
        let p = t.reject_probability();
        assert!((p - 60.0 / 101.0).abs() < 1e-9, "{p}");
    }

    /// Against a backend that accepts at most `capacity` per second, the requests that reach it
    /// settle near K x capacity, whatever the offered load.
    #[tokio::test(start_paused = true)]
    async fn sent_load_settles_near_k_times_accepted() {
        let t = throttle();
        let mut rng = SmallRng::seed_from_u64(42);
        let (capacity, offered) = (100u64, 1000u64);
        let mut sent_last_10s = 0;
        for second in 0..30 {
            let mut accepted = 0;
            let mut sent = 0;
            for _ in 0..offered {
                if t.admit(&mut rng) {
                    sent += 1;
                    if accepted < capacity {
                        accepted += 1;
                        t.record_accept();
                    }
                }
                tokio::time::advance(Duration::from_micros(1_000_000 / offered)).await;
            }
            if second >= 20 {
                sent_last_10s += sent;
            }
        }
        let per_second = sent_last_10s as f64 / 10.0;
        assert!(
            (150.0..=260.0).contains(&per_second),
            "sent {per_second}/s for 100/s accepted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn history_older_than_the_window_is_forgotten() {
        let t = throttle();
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..1000 {
            t.admit(&mut rng);
        }
        assert!(t.reject_probability() > 0.99);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(t.counts_at(Instant::now()), (0, 0));
        assert_eq!(t.reject_probability(), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_decisions() {
        let run = || {
            let t = throttle();
            let mut rng = SmallRng::seed_from_u64(9);
            (0..500).map(|_| t.admit(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let bad = |c: AdaptiveThrottleConfig| AdaptiveThrottle::new(c).unwrap_err().to_string();
        assert!(
            bad(AdaptiveThrottleConfig {
                k: 0.5,
                ..Default::default()
            })
            .contains("k")
        );
        assert!(
            bad(AdaptiveThrottleConfig {
                window: Duration::ZERO,
                ..Default::default()
            })
            .contains("window")
        );
        assert!(
            bad(AdaptiveThrottleConfig {
                buckets: 0,
                ..Default::default()
            })
            .contains("buckets")
        );
    }
}
