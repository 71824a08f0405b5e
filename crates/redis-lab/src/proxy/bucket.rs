//! The token bucket behind [`FaultProxy::set_throttle`](super::FaultProxy::set_throttle).

use tokio::time::Instant;

/// Admits `rate` commands per second on average, with bursts of up to `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `ops_per_sec` (> 0) with a burst of a tenth of a second's worth (at least 1).
    pub(crate) fn new(ops_per_sec: u32, now: Instant) -> Self {
        let rate = f64::from(ops_per_sec.max(1));
        let burst = (rate / 10.0).max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if available.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn admits_burst_then_rate() {
        let mut bucket = TokenBucket::new(100, Instant::now());
        let burst = (0..50).filter(|_| bucket.try_take(Instant::now())).count();
        assert_eq!(burst, 10);
        tokio::time::advance(Duration::from_millis(50)).await;
        let refilled = (0..50).filter(|_| bucket.try_take(Instant::now())).count();
        assert_eq!(refilled, 5);
        tokio::time::advance(Duration::from_secs(10)).await;
        let capped = (0..50).filter(|_| bucket.try_take(Instant::now())).count();
        assert_eq!(capped, 10);
    }
}
