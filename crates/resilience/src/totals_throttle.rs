//! Adaptive client-side throttling over totals the caller already keeps, so a healthy request
//! path pays one relaxed atomic load for it.
//!
//! [`AdaptiveThrottle`](crate::AdaptiveThrottle) counts every request and every accept itself,
//! which costs two writes to shared memory per request. A client that already counts its
//! attempts (and, rarely, its refusals) can hand those cumulative totals to a [`TotalsThrottle`]
//! instead: the throttle keeps one snapshot of the totals per bucket (taken by
//! [`TotalsThrottle::tick_at`], about once per bucket width) and only looks at them while the
//! backend has refused work within the window. The formula is the same
//! ([`reject_probability`](crate::reject_probability)).

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

use crate::ConfigError;
use crate::throttle::{AdaptiveThrottleConfig, bucket_width, reject_probability, slot_of};

/// Cumulative counts since the caller started counting. Both only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleTotals {
    /// Requests the application made (sent or rejected locally).
    pub requests: u64,
    /// Requests the backend accepted (any answer that is not an overload refusal).
    pub accepts: u64,
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    slot: u64,
    totals: ThrottleTotals,
}

/// Adaptive throttling (SRE book) over cumulative totals kept by the caller.
///
/// # Behavior
/// - [`TotalsThrottle::is_engaged`] is `false` until the backend refuses work
///   ([`TotalsThrottle::refused_at`]), and again once a whole window has passed without a
///   refusal: while it is `false` the rejection probability is 0 and nothing else need be done.
/// - [`TotalsThrottle::tick_at`] records the totals at the start of each bucket. Call it at
///   least once per bucket width (a background tick); a missed bucket only makes the window a
///   little longer.
/// - [`TotalsThrottle::probability_at`] computes the book's formula over the requests and
///   accepts since the start of the window, reading only (for a gauge, a health report);
///   [`TotalsThrottle::reject_probability_at`] also records the bucket's snapshot, as the
///   decision path ([`TotalsThrottle::admit_at`]) does.
///
/// # Example
/// ```
/// use resilience::{AdaptiveThrottleConfig, ThrottleTotals, TotalsThrottle};
/// use tokio::time::Instant;
/// # fn main() -> Result<(), resilience::ConfigError> {
/// let throttle = TotalsThrottle::new(AdaptiveThrottleConfig::default())?;
/// let now = Instant::now();
/// throttle.tick_at(now, ThrottleTotals::default());
/// assert!(!throttle.is_engaged());
/// // The backend refused 90 of 100 requests.
/// throttle.refused_at(now);
/// let p = throttle.reject_probability_at(now, || ThrottleTotals { requests: 100, accepts: 10 });
/// assert!((p - 80.0 / 101.0).abs() < 1e-9);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TotalsThrottle {
    config: AdaptiveThrottleConfig,
    origin: Instant,
    width: Duration,
    engaged: AtomicBool,
    /// Slot of the last refusal, plus one (0: never).
    last_refusal: AtomicU64,
    /// Slot of the newest snapshot, plus one (0: none yet).
    newest: AtomicU64,
    /// When a request was last let through while engaged, in ns after `origin`.
    last_admit: AtomicU64,
    snapshots: Mutex<Vec<Option<Snapshot>>>,
}

impl TotalsThrottle {
    /// A throttle with no history.
    ///
    /// # Errors
    /// Invalid settings (see [`AdaptiveThrottleConfig::validate`]).
    pub fn new(config: AdaptiveThrottleConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            width: bucket_width(&config),
            snapshots: Mutex::new(vec![None; config.buckets as usize]),
            config,
            origin: Instant::now(),
            engaged: AtomicBool::new(false),
            last_refusal: AtomicU64::new(0),
            newest: AtomicU64::new(0),
            last_admit: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveThrottleConfig {
        &self.config
    }

    /// The width of one bucket: how often [`TotalsThrottle::tick_at`] should run.
    pub fn tick_interval(&self) -> Duration {
        self.width
    }

    /// Whether the backend refused work within the window (only then can a request be
    /// rejected locally). One relaxed atomic load.
    #[inline]
    pub fn is_engaged(&self) -> bool {
        self.engaged.load(Ordering::Relaxed)
    }

    /// Records that the backend refused a request at `now` (an overload answer such as
    /// `THROTTLED`).
    pub fn refused_at(&self, now: Instant) {
        let slot = self.slot_at(now);
        self.last_refusal.fetch_max(slot + 1, Ordering::Relaxed);
        if !self.engaged.swap(true, Ordering::Relaxed) {
            tracing::debug!("adaptive throttle engaged: the backend refuses work");
        }
    }

    /// Records `totals` as the start of the bucket of `now` (if not recorded yet), and
    /// disengages once a whole window has passed without a refusal.
    pub fn tick_at(&self, now: Instant, totals: ThrottleTotals) {
        let slot = self.slot_at(now);
        self.snapshot(slot, || totals);
        let last = self.last_refusal.load(Ordering::Relaxed);
        let n = u64::from(self.config.buckets);
        if last != 0 && last - 1 + n <= slot && self.engaged.swap(false, Ordering::Relaxed) {
            tracing::debug!("adaptive throttle disengaged: no refusal for a whole window");
        }
    }

    /// The probability of rejecting a request locally at `now`, given the current totals
    /// (called only while engaged): [`TotalsThrottle::probability_at`], after recording `now`'s
    /// bucket snapshot if it has none yet (as [`TotalsThrottle::tick_at`] does). 0 when not
    /// engaged.
    pub fn reject_probability_at(
        &self,
        now: Instant,
        totals: impl FnOnce() -> ThrottleTotals,
    ) -> f64 {
        if !self.is_engaged() {
            return 0.0;
        }
        let current = totals();
        self.snapshot(self.slot_at(now), || current);
        self.probability_at(now, || current)
    }

    /// The probability of rejecting a request locally at `now`, given the current totals: the
    /// formula over the requests and accepts since the oldest snapshot in the window (none: 0).
    /// A pure read, for observers: it records nothing. 0 when not engaged, without calling
    /// `totals`.
    pub fn probability_at(&self, now: Instant, totals: impl FnOnce() -> ThrottleTotals) -> f64 {
        if !self.is_engaged() {
            return 0.0;
        }
        let slot = self.slot_at(now);
        let current = totals();
        let n = u64::from(self.config.buckets);
        let first = slot.saturating_sub(n - 1);
        let start = {
            let snapshots = self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            snapshots
                .iter()
                .flatten()
                .filter(|s| s.slot >= first && s.slot <= slot)
                .min_by_key(|s| s.slot)
                .map_or(current, |s| s.totals)
        };
        reject_probability(
            current.requests.saturating_sub(start.requests),
            current.accepts.saturating_sub(start.accepts),
            self.config.k,
        )
    }

    /// Decides, at `now` and with `rng`, whether to send a request (`Ok`) or reject it locally
    /// (`Err(p)`, the rejection probability). Records the bucket snapshot and disengages as
    /// [`TotalsThrottle::tick_at`] does; lets one request through per
    /// [`AdaptiveThrottleConfig::probe_interval`] whatever the formula says. The caller counts
    /// the request (sent or rejected) in its totals.
    pub fn admit_at<R: Rng + ?Sized>(
        &self,
        now: Instant,
        totals: impl Fn() -> ThrottleTotals,
        rng: &mut R,
    ) -> Result<(), f64> {
        if !self.is_engaged() {
            return Ok(());
        }
        let current = totals();
        // Records the bucket's snapshot: what follows only reads.
        self.tick_at(now, current);
        let p = self.probability_at(now, || current);
        let nanos = now.saturating_duration_since(self.origin).as_nanos() as u64;
        if p <= 0.0 || rng.random::<f64>() >= p {
            self.last_admit.fetch_max(nanos, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(every) = self.config.probe_interval {
            let last = self.last_admit.load(Ordering::Relaxed);
            if nanos.saturating_sub(last) >= every.as_nanos() as u64
                && self
                    .last_admit
                    .compare_exchange(last, nanos, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(());
            }
        }
        Err(p)
    }

    fn slot_at(&self, now: Instant) -> u64 {
        slot_of(self.origin, self.width, now)
    }

    /// Stores the snapshot of `slot` unless one is already there.
    fn snapshot(&self, slot: u64, totals: impl FnOnce() -> ThrottleTotals) {
        if self.newest.load(Ordering::Relaxed) > slot {
            return;
        }
        let mut snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.newest.load(Ordering::Relaxed) > slot {
            return;
        }
        let n = snapshots.len() as u64;
        snapshots[(slot % n) as usize] = Some(Snapshot {
            slot,
            totals: totals(),
        });
        self.newest.store(slot + 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> TotalsThrottle {
        TotalsThrottle::new(AdaptiveThrottleConfig::default()).unwrap()
    }

    fn totals(requests: u64, accepts: u64) -> ThrottleTotals {
        ThrottleTotals { requests, accepts }
    }

    #[tokio::test(start_paused = true)]
    async fn not_engaged_until_a_refusal() {
        let t = throttle();
        t.tick_at(Instant::now(), totals(0, 0));
        // Even totals that would throttle do not matter without a refusal.
        assert_eq!(
            t.reject_probability_at(Instant::now(), || totals(100, 0)),
            0.0
        );
        t.refused_at(Instant::now());
        assert!(t.is_engaged());
        let p = t.reject_probability_at(Instant::now(), || totals(100, 0));
        assert!((p - 100.0 / 101.0).abs() < 1e-9, "{p}");
    }

    /// History before the window counts for nothing: a long healthy past does not hide a
    /// refusing backend, and a refusing past is forgotten.
    #[tokio::test(start_paused = true)]
    async fn only_the_window_counts() {
        let t = throttle();
        // 20 healthy seconds at 1,000 requests per second, ticked every second.
        let mut total = 0;
        for _ in 0..20 {
            t.tick_at(Instant::now(), totals(total, total));
            total += 1000;
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        t.tick_at(Instant::now(), totals(total, total));
        // Then 10 s in which only 1 in 4 is accepted.
        let (mut req, mut acc) = (total, total);
        for _ in 0..10 {
            t.refused_at(Instant::now());
            req += 1000;
            acc += 250;
            tokio::time::advance(Duration::from_secs(1)).await;
            t.tick_at(Instant::now(), totals(req, acc));
        }
        let p = t.reject_probability_at(Instant::now(), || totals(req, acc));
        // Over the window (9 to 10 buckets): requests - 2 accepts = half the requests.
        assert!((0.45..0.55).contains(&p), "{p}");
        // Healthy again for a whole window: disengaged, nothing rejected.
        for _ in 0..11 {
            req += 1000;
            acc += 1000;
            tokio::time::advance(Duration::from_secs(1)).await;
            t.tick_at(Instant::now(), totals(req, acc));
        }
        assert!(!t.is_engaged());
        assert_eq!(
            t.reject_probability_at(Instant::now(), || totals(req, acc)),
            0.0
        );
    }

    /// A refusal now and then (well under half the requests) rejects nothing.
    #[tokio::test(start_paused = true)]
    async fn occasional_refusals_reject_nothing() {
        let t = throttle();
        t.tick_at(Instant::now(), totals(0, 0));
        t.refused_at(Instant::now());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            t.reject_probability_at(Instant::now(), || totals(1000, 900)),
            0.0
        );
    }

    /// A window with no accepts at all (a refused burst, then a tight loop of calls) would
    /// reject nearly everything forever by the formula alone; the probes let the backend's
    /// accepts back in and the admitted rate climbs to about K x what it accepts.
    #[tokio::test(start_paused = true)]
    async fn probes_recover_a_window_without_accepts() {
        use rand::SeedableRng;
        let t = throttle();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let (mut attempts, mut refused, mut rejected) = (100u64, 100u64, 0u64);
        t.tick_at(Instant::now(), totals(attempts, attempts - refused));
        t.refused_at(Instant::now());
        // The backend accepts up to 50 per 100 ms; the application offers 10,000 per 100 ms.
        let mut sent_last_second = 0;
        for step in 0..30 {
            let mut accepted = 0;
            for _ in 0..10_000 {
                let now = Instant::now();
                let admitted = t.admit_at(
                    now,
                    || totals(attempts + rejected, attempts - refused),
                    &mut rng,
                );
                match admitted {
                    Ok(()) => {
                        attempts += 1;
                        if accepted < 50 {
                            accepted += 1;
                        } else {
                            refused += 1;
                            t.refused_at(now);
                        }
                        if step >= 20 {
                            sent_last_second += 1;
                        }
                    }
                    Err(_) => rejected += 1,
                }
                tokio::time::advance(Duration::from_micros(10)).await;
            }
        }
        // About K x 500/s accepted: 1,000 sent in the last second.
        assert!(
            (700..=1400).contains(&sent_last_second),
            "sent {sent_last_second} in the last second"
        );
    }

    /// Reading the probability records nothing: the window's start is still the next snapshot
    /// taken, not the totals a reader saw.
    #[tokio::test(start_paused = true)]
    async fn probability_at_is_a_pure_read() {
        let t = throttle();
        let now = Instant::now();
        t.refused_at(now);
        // No snapshot in the window: nothing to compare with, whatever the reader passes.
        assert_eq!(t.probability_at(now, || totals(100, 0)), 0.0);
        assert_eq!(t.probability_at(now, || totals(200, 0)), 0.0);
        // The decision path's read does record the bucket's start...
        assert_eq!(t.reject_probability_at(now, || totals(300, 0)), 0.0);
        // ... from which both count.
        let p = t.probability_at(now, || totals(400, 0));
        assert!((p - 100.0 / 101.0).abs() < 1e-9, "{p}");
        assert_eq!(t.reject_probability_at(now, || totals(400, 0)), p);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_tick_makes_the_window_longer_not_wrong() {
        let t = throttle();
        t.tick_at(Instant::now(), totals(0, 0));
        tokio::time::advance(Duration::from_secs(5)).await;
        t.refused_at(Instant::now());
        // No tick for 5 s: the window starts at the oldest snapshot in it.
        let p = t.reject_probability_at(Instant::now(), || totals(300, 100));
        assert!((p - 100.0 / 301.0).abs() < 1e-9, "{p}");
    }
}
