//! Backoff kinds and jitter. Every delay is a pure function of the retry number, the previous
//! delay and an injected RNG, so a seeded RNG gives a reproducible sequence.

use std::time::Duration;

use rand::{Rng, RngExt};

use crate::ConfigError;

/// Randomisation applied to the delay computed by a [`Backoff`].
///
/// # Default
/// [`Jitter::None`]. ([`RetryConfig::default`](crate::RetryConfig) uses [`Jitter::Full`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The delay as computed.
    #[default]
    None,
    /// Uniform in `[0, d]` ("full jitter"): spreads retries best; the mean is `d / 2`.
    Full,
    /// `d / 2` plus uniform in `[0, d / 2]` ("equal jitter"): never shorter than half the delay.
    Equal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Constant {
        delay: Duration,
    },
    Linear {
        initial: Duration,
        step: Duration,
        max: Duration,
    },
    Exponential {
        initial: Duration,
        multiplier: f64,
        max: Duration,
    },
    Decorrelated {
        base: Duration,
        max: Duration,
    },
}

/// How long to wait before each retry: a plain, copyable description (no per-call state).
///
/// # Behavior
/// - `retry` is the 1-based number of the retry: `1` is the delay before the second attempt.
/// - [`Backoff::constant`]: always `delay`.
/// - [`Backoff::linear`]: `min(initial + step * (retry - 1), max)`.
/// - [`Backoff::exponential`]: `min(initial * multiplier^(retry - 1), max)`.
/// - [`Backoff::decorrelated`]: uniform in `[base, min(3 * previous, max)]`, where `previous` is
///   the previous delay (or `base` for the first retry). This is the "decorrelated jitter" of the
///   AWS architecture blog; it is random by itself, so [`Jitter::None`] is the usual choice.
/// - The [`Jitter`] is applied last, to the delay computed above.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use rand::SeedableRng;
/// use resilience::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(50), 2.0, Duration::from_secs(2))?
///     .with_jitter(Jitter::Full);
/// let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
/// let d = backoff.delay(3, None, &mut rng);
/// assert!(d <= Duration::from_millis(200));
/// # Ok::<(), resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    kind: Kind,
    jitter: Jitter,
}

impl Backoff {
    /// The same `delay` before every retry (zero is allowed: retry at once).
    pub fn constant(delay: Duration) -> Self {
        Self {
            kind: Kind::Constant { delay },
            jitter: Jitter::None,
        }
    }

    /// `initial`, then `initial + step`, `initial + 2 * step`, ... capped at `max`.
    ///
    /// # Errors
    /// `max < initial`.
    pub fn linear(initial: Duration, step: Duration, max: Duration) -> Result<Self, ConfigError> {
        if max < initial {
            return Err(ConfigError::new(
                "Backoff::linear::max",
                "must be >= initial",
            ));
        }
        Ok(Self {
            kind: Kind::Linear { initial, step, max },
            jitter: Jitter::None,
        })
    }

    /// `initial`, then multiplied by `multiplier` for each further retry, each delay capped at
    /// `max`.
    ///
    /// # Errors
    /// `initial` is zero, `multiplier` is not finite or below `1.0`, or `max < initial`.
    pub fn exponential(
        initial: Duration,
        multiplier: f64,
        max: Duration,
    ) -> Result<Self, ConfigError> {
        if initial.is_zero() {
            return Err(ConfigError::new(
                "Backoff::exponential::initial",
                "must be > 0",
            ));
        }
        if !multiplier.is_finite() || multiplier < 1.0 {
            return Err(ConfigError::new(
                "Backoff::exponential::multiplier",
                format!("must be finite and >= 1.0, got {multiplier}"),
            ));
        }
        if max < initial {
            return Err(ConfigError::new(
                "Backoff::exponential::max",
                "must be >= initial",
            ));
        }
        Ok(Self {
            kind: Kind::Exponential {
                initial,
                multiplier,
                max,
            },
            jitter: Jitter::None,
        })
    }

    /// Decorrelated jitter: each delay uniform in `[base, min(3 * previous, max)]`.
    ///
    /// # Errors
    /// `base` is zero or `max < base`.
    pub fn decorrelated(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::new(
                "Backoff::decorrelated::base",
                "must be > 0",
            ));
        }
        if max < base {
            return Err(ConfigError::new(
                "Backoff::decorrelated::max",
                "must be >= base",
            ));
        }
        Ok(Self {
            kind: Kind::Decorrelated { base, max },
            jitter: Jitter::None,
        })
    }

    /// The default of [`RetryConfig`](crate::RetryConfig): exponential 50 ms x 2 capped at 2 s,
    /// full jitter (valid by construction).
    pub(crate) const fn default_retry() -> Self {
        Self {
            kind: Kind::Exponential {
                initial: Duration::from_millis(50),
                multiplier: 2.0,
                max: Duration::from_secs(2),
            },
            jitter: Jitter::Full,
        }
    }

    /// Applies `jitter` to every delay.
    #[must_use]
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    /// The jitter applied to every delay.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The largest delay this backoff can return (before any server hint).
    pub fn max_delay(&self) -> Duration {
        match self.kind {
            Kind::Constant { delay } => delay,
            Kind::Linear { max, .. }
            | Kind::Exponential { max, .. }
            | Kind::Decorrelated { max, .. } => max,
        }
    }

    /// The delay before retry number `retry` (1-based: `1` is the delay before the second
    /// attempt). `previous` is the delay used before the previous retry, if any (only the
    /// decorrelated kind reads it). Pure: the same arguments and RNG state give the same delay.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        retry: u32,
        previous: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let retry = retry.max(1);
        let base = match self.kind {
            Kind::Constant { delay } => delay,
            Kind::Linear { initial, step, max } => step
                .checked_mul(retry - 1)
                .and_then(|extra| initial.checked_add(extra))
                .map_or(max, |d| d.min(max)),
            Kind::Exponential {
                initial,
                multiplier,
                max,
            } => {
                // Exponent beyond i32 saturates to infinity, which is capped below.
                let exp = i32::try_from(retry - 1).unwrap_or(i32::MAX);
                let secs = initial.as_secs_f64() * multiplier.powi(exp);
                Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
            }
            Kind::Decorrelated { base, max } => {
                let prev = previous.unwrap_or(base).max(base);
                let upper = prev.saturating_mul(3).min(max);
                uniform(base, upper, rng)
            }
        };
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => uniform(Duration::ZERO, base, rng),
            Jitter::Equal => {
                let half = base / 2;
                half + uniform(Duration::ZERO, base - half, rng)
            }
        }
    }
}

/// Uniform in `[low, high]` (inclusive) at nanosecond resolution; `low` if `high <= low`.
fn uniform<R: Rng + ?Sized>(low: Duration, high: Duration, rng: &mut R) -> Duration {
    if high <= low {
        return low;
    }
    let span = u64::try_from((high - low).as_nanos()).unwrap_or(u64::MAX);
    low + Duration::from_nanos(rng.random_range(0..=span))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn seq(b: &Backoff, n: u32, seed: u64) -> Vec<Duration> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut prev = None;
        (1..=n)
            .map(|r| {
                let d = b.delay(r, prev, &mut rng);
                prev = Some(d);
                d
            })
            .collect()
    }

    #[test]
    fn constant_sequence() {
        assert_eq!(seq(&Backoff::constant(ms(7)), 3, 1), vec![ms(7); 3]);
    }

    #[test]
    fn linear_sequence_is_capped() {
        let b = Backoff::linear(ms(10), ms(20), ms(55)).unwrap();
        assert_eq!(seq(&b, 5, 1), vec![ms(10), ms(30), ms(50), ms(55), ms(55)]);
    }

    #[test]
    fn exponential_sequence_is_capped() {
        let b = Backoff::exponential(ms(50), 2.0, ms(500)).unwrap();
        assert_eq!(
            seq(&b, 6, 1),
            vec![ms(50), ms(100), ms(200), ms(400), ms(500), ms(500)]
        );
        // Huge retry numbers saturate at the cap instead of overflowing.
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(b.delay(u32::MAX, None, &mut rng), ms(500));
    }

    #[test]
    fn decorrelated_stays_within_base_and_three_times_previous() {
        let b = Backoff::decorrelated(ms(10), ms(1000)).unwrap();
        let s = seq(&b, 50, 42);
        let mut prev = ms(10);
        for d in s {
            assert!(
                d >= ms(10) && d <= (prev * 3).min(ms(1000)),
                "{d:?} prev {prev:?}"
            );
            prev = d;
        }
    }

    #[test]
    fn jitter_bounds_and_seed_reproducibility() {
        let b = Backoff::exponential(ms(100), 2.0, ms(100)).unwrap();
        for d in seq(&b.with_jitter(Jitter::Full), 200, 3) {
            assert!(d <= ms(100));
        }
        for d in seq(&b.with_jitter(Jitter::Equal), 200, 3) {
            assert!(d >= ms(50) && d <= ms(100));
        }
        let full = b.with_jitter(Jitter::Full);
        assert_eq!(seq(&full, 20, 9), seq(&full, 20, 9));
        assert_ne!(seq(&full, 20, 9), seq(&full, 20, 10));
    }

    #[test]
    fn constructors_validate_and_name_the_setting() {
        let e = Backoff::exponential(ms(1), 0.5, ms(2)).unwrap_err();
        assert_eq!(e.setting(), "Backoff::exponential::multiplier");
        assert!(e.to_string().contains("multiplier"));
        assert!(Backoff::exponential(ms(1), f64::NAN, ms(2)).is_err());
        assert!(Backoff::exponential(Duration::ZERO, 2.0, ms(2)).is_err());
        assert!(Backoff::exponential(ms(3), 2.0, ms(2)).is_err());
        assert!(Backoff::linear(ms(3), ms(1), ms(2)).is_err());
        assert!(Backoff::decorrelated(Duration::ZERO, ms(2)).is_err());
        assert!(Backoff::decorrelated(ms(3), ms(2)).is_err());
    }
}
