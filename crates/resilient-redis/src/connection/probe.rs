//! What the client measures of the nodes in the background, for reads that choose among
//! copies: each connection's round trip ([`ReadFrom::Nearest`](crate::ReadFrom::Nearest)) and
//! how far behind its master a replica is
//! ([`ClientConfig::max_replica_lag`](crate::ClientConfig::max_replica_lag)).
//!
//! Every [`PERIOD`], one `INFO replication` per connection (per node in a cluster) gives both:
//! its round trip, and the node's replication offset. A master's offsets over the last seconds
//! ([`OffsetHistory`]) turn a replica's offset into time: the replica holds the data the master
//! held when it was at that offset, so it is behind by the time since then. (Bytes alone would
//! not say it: a megabyte is a few milliseconds of a busy master and hours of an idle one.)
//!
//! The request path only reads two relaxed atomics per connection ([`Measured`]).

use std::{
    collections::VecDeque,
    sync::{
        Weak,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use redis::{Value, aio::MultiplexedConnection};
use tokio::time::Instant;

use super::{LeaseId, Pool};

/// How often the nodes are measured: a replica that falls behind is skipped within this.
pub(crate) const PERIOD: Duration = Duration::from_millis(250);

/// How many master offsets are kept (16 s at [`PERIOD`]): a replica further behind than that
/// counts as behind by at least that.
const HISTORY: usize = 64;

/// A connection's (or node's) latest measurements, read on the request path.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    /// The smoothed round trip in microseconds; 0 until measured.
    rtt_us: AtomicU32,
    /// The node is a replica further behind its master than `max_replica_lag` (or not measured
    /// yet while a bound is set).
    lagging: AtomicBool,
}

impl Measured {
    /// A fresh connection: not measured yet, lagging until measured when `strict` (a bound is
    /// set).
    pub(crate) fn reset(&self, strict: bool) {
        self.rtt_us.store(0, Ordering::Relaxed);
        self.lagging.store(strict, Ordering::Relaxed);
    }

    /// The smoothed round trip in microseconds, `None` until measured.
    #[inline]
    pub(crate) fn rtt_us(&self) -> Option<u32> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us),
        }
    }

    /// Whether the node is too far behind its master to be read from.
    #[inline]
    pub(crate) fn lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    /// Records one round trip (an exponentially weighted average, half for the newest: a
    /// spike is halved, a lasting change shows within a few periods).
    pub(crate) fn record_rtt(&self, sample: Duration) {
        let us = u32::try_from(sample.as_micros()).unwrap_or(u32::MAX).max(1);
        let smoothed = match self.rtt_us() {
            None => us,
            Some(old) => (u64::from(old).saturating_add(u64::from(us)) / 2).max(1) as u32,
        };
        self.rtt_us.store(smoothed, Ordering::Relaxed);
    }

    pub(crate) fn set_lagging(&self, lagging: bool) {
        self.lagging.store(lagging, Ordering::Relaxed);
    }
}

/// Which of `candidates` (round trips in µs, `None` unmeasured) are *nearest*: within a margin
/// of the lowest measured one (a quarter of it plus 50 µs), so that equally near nodes take
/// turns instead of one taking every read on noise. Unmeasured nodes come after measured ones.
/// Returns the rank of each: 0 nearest, 1 farther, 2 unmeasured (see `routing`'s `nearest`).
pub(crate) fn rtt_rank(rtt_us: Option<u32>, lowest_us: Option<u32>) -> u8 {
    match (rtt_us, lowest_us) {
        (None, _) => 2,
        (Some(_), None) => 0,
        (Some(us), Some(low)) => u8::from(u64::from(us) > u64::from(low) * 5 / 4 + 50),
    }
}

/// What an `INFO replication` reply says of replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replication {
    /// The node is a master (else a replica).
    pub(crate) master: bool,
    /// A master's offset, or the offset up to which a replica has applied its master's stream.
    pub(crate) offset: u64,
}

/// Reads role and offset from an `INFO replication` reply (`None` without an offset).
pub(crate) fn replication(reply: &Value) -> Option<Replication> {
    let info = crate::commands::replication(reply)?;
    Some(Replication {
        master: info.master,
        offset: info.offset?,
    })
}

/// Sends `INFO replication` on `conn`: its round trip and what it says, `None` when the node
/// does not answer within `timeout` (or answers something else).
pub(crate) async fn measure(
    conn: &mut MultiplexedConnection,
    timeout: Duration,
) -> Option<(Duration, Replication)> {
    let mut info = redis::cmd("INFO");
    info.arg("replication");
    let sent = Instant::now();
    let reply = tokio::time::timeout(timeout, conn.send_packed_command(&info))
        .await
        .ok()?
        .ok()?;
    Some((sent.elapsed(), replication(&reply)?))
}

/// A master's replication offsets over the last [`HISTORY`] samples.
#[derive(Debug, Default)]
pub(crate) struct OffsetHistory {
    samples: VecDeque<(Instant, u64)>,
}

impl OffsetHistory {
    /// The master was at `offset` at `at`.
    pub(crate) fn record(&mut self, at: Instant, offset: u64) {
        if self.samples.back().is_some_and(|&(_, last)| offset < last) {
            // A new replication history (the master restarted empty): the old one says nothing.
            self.samples.clear();
        }
        if self.samples.len() == HISTORY {
            self.samples.pop_front();
        }
        self.samples.push_back((at, offset));
    }

    /// How far behind the master a replica that applied up to `offset` is: how long before
    /// the master's last sample the master was at `offset` (interpolated between samples). 0
    /// when it has everything the master had then, or when nothing is known of the master (a
    /// replica is not held stale for a master that cannot be asked: during a failover it holds
    /// the freshest data there is).
    pub(crate) fn lag(&self, offset: u64) -> Duration {
        let Some(&(last_at, last)) = self.samples.back() else {
            return Duration::ZERO;
        };
        if offset >= last {
            return Duration::ZERO;
        }
        // The first sample past `offset` (there is one: the last).
        let i = self.samples.partition_point(|&(_, o)| o <= offset);
        if i == 0 {
            // Behind the whole history: at least that far.
            return last_at.duration_since(self.samples[0].0);
        }
        let (t0, o0) = self.samples[i - 1];
        let (t1, o1) = self.samples[i];
        let fraction = (offset - o0) as f64 / (o1 - o0) as f64;
        let passed_at = t0 + t1.duration_since(t0).mul_f64(fraction);
        last_at.duration_since(passed_at)
    }
}

/// How long a Sentinel replica connection may stay too far behind before it is replaced by one
/// to the next replica (which may be fresher); not at the first lagging sample, so that a
/// short burst does not make connections churn.
const REPLACE_AFTER: Duration = Duration::from_secs(1);

impl Pool {
    /// The node's measurements, for a cluster node (see [`Pool::measure_node`]).
    #[inline]
    pub(crate) fn measured(&self) -> &Measured {
        &self.measured
    }

    /// Measures the node on one of its live connections (a cluster node): records the round
    /// trip and returns what `INFO replication` said; `None` when no connection answered.
    pub(crate) async fn measure_node(&self) -> Option<Replication> {
        let mut conn = self.slots.iter().find_map(|s| {
            s.live
                .read()
                .expect("slot lock")
                .as_ref()
                .map(|l| l.conn.clone())
        })?;
        let (rtt, replication) = measure(&mut conn, self.response_timeout).await?;
        self.measured.record_rtt(rtt);
        Some(replication)
    }

    /// Whether the connection in `slot` is to a replica too far behind to be read from.
    #[inline]
    pub(super) fn slot_lagging(&self, slot: usize) -> bool {
        slot >= self.masters && self.slots[slot].measured.lagging()
    }

    /// The measured round trip of the connection in `slot`.
    #[inline]
    pub(super) fn slot_rtt_us(&self, slot: usize) -> Option<u32> {
        self.slots[slot].measured.rtt_us()
    }
}

/// Measures a Sentinel pool's connections every [`PERIOD`] (with
/// [`ReadFrom::Nearest`](crate::ReadFrom::Nearest) or a lag bound): round trips, the master's
/// offsets, and each replica connection's lag. A replica connection lagging for
/// [`REPLACE_AFTER`] is replaced (by one to the next replica). Ends with the pool.
pub(super) async fn prober(pool: Weak<Pool>) {
    let mut history = OffsetHistory::default();
    let mut lagging_since: Vec<Option<Instant>> = Vec::new();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(p) = pool.upgrade() else { return };
        lagging_since.resize(p.slots.len(), None);
        let live: Vec<(LeaseId, MultiplexedConnection)> = p
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let live = s.live.read().expect("slot lock");
                let l = live.as_ref()?;
                Some((
                    LeaseId {
                        slot,
                        generation: l.generation,
                    },
                    l.conn.clone(),
                ))
            })
            .collect();
        let timeout = p.response_timeout;
        let measured = futures::future::join_all(
            live.into_iter()
                .map(|(id, mut conn)| async move { (id, measure(&mut conn, timeout).await) }),
        )
        .await;
        let now = Instant::now();
        // The master's offset first: the replicas are measured against it.
        for (id, m) in &measured {
            if let (true, Some((rtt, r))) = (id.slot < p.masters, m) {
                p.slots[id.slot].measured.record_rtt(*rtt);
                if r.master {
                    history.record(now, r.offset);
                }
            }
        }
        for (id, m) in measured {
            let (false, Some((rtt, r))) = (id.slot < p.masters, m) else {
                continue;
            };
            let slot = &p.slots[id.slot];
            if slot.current.load(Ordering::Acquire) != id.generation {
                // Replaced meanwhile: the new connection is measured next time.
                continue;
            }
            slot.measured.record_rtt(rtt);
            let lag = if r.master {
                Duration::ZERO
            } else {
                history.lag(r.offset)
            };
            let lagging = p.max_replica_lag.is_some_and(|bound| lag > bound);
            slot.measured.set_lagging(lagging);
            let since = &mut lagging_since[id.slot];
            if !lagging {
                *since = None;
            } else if now.duration_since(*since.get_or_insert(now)) >= REPLACE_AFTER {
                *since = None;
                tracing::info!(
                    slot = id.slot,
                    ?lag,
                    "replica too far behind its master: connecting to the next one"
                );
                p.mark_broken(id, "replica too far behind its master");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn info_gives_role_and_offset() {
        let master = info(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_repl_offset:11894\r\n",
        );
        assert_eq!(
            replication(&master),
            Some(Replication {
                master: true,
                offset: 11894
            })
        );
        // Redis 7: read 11894, applied 6002 (a paused replica).
        let replica = info(
            "role:slave\r\nslave_read_repl_offset:11894\r\nslave_repl_offset:6002\r\nmaster_repl_offset:6002\r\n",
        );
        assert_eq!(
            replication(&replica),
            Some(Replication {
                master: false,
                offset: 6002
            })
        );
        let old = info("role:slave\r\nmaster_repl_offset:42\r\n");
        assert_eq!(replication(&old).map(|r| r.offset), Some(42));
        assert_eq!(replication(&info("role:master\r\n")), None);
        assert_eq!(replication(&Value::Nil), None);
    }

    #[test]
    fn a_replica_offset_turns_into_time_behind_the_master() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = OffsetHistory::default();
        assert_eq!(h.lag(0), Duration::ZERO, "nothing known of the master");
        h.record(ms(0), 1000);
        h.record(ms(250), 2000);
        h.record(ms(500), 2000); // idle
        h.record(ms(750), 4000);
        assert_eq!(h.lag(4000), Duration::ZERO);
        assert_eq!(h.lag(5000), Duration::ZERO, "ahead of the last sample");
        assert_eq!(h.lag(3000), Duration::from_millis(125), "interpolated");
        // At 2000 since 250 ms: it has what the master had until 500 ms.
        assert_eq!(h.lag(2000), Duration::from_millis(250));
        assert_eq!(h.lag(1500), Duration::from_millis(625));
        assert_eq!(
            h.lag(10),
            Duration::from_millis(750),
            "behind the whole history"
        );
        // A restarted master starts a new history.
        h.record(ms(1000), 5);
        assert_eq!(h.lag(5), Duration::ZERO);
        // The history is bounded.
        for i in 0..200 {
            h.record(ms(1000 + i * 250), 100 + i);
        }
        assert_eq!(h.samples.len(), HISTORY);
        assert_eq!(h.lag(0), Duration::from_millis(250 * (HISTORY as u64 - 1)));
    }

    #[test]
    fn round_trips_are_smoothed_and_ranked_with_a_margin() {
        let m = Measured::default();
        assert_eq!(m.rtt_us(), None);
        m.record_rtt(Duration::from_micros(400));
        assert_eq!(m.rtt_us(), Some(400));
        m.record_rtt(Duration::from_micros(800));
        assert_eq!(m.rtt_us(), Some(600));
        m.reset(true);
        assert_eq!(m.rtt_us(), None);
        assert!(m.lagging());
        // Lowest 200 µs: up to 300 µs is as near.
        assert_eq!(rtt_rank(Some(200), Some(200)), 0);
        assert_eq!(rtt_rank(Some(300), Some(200)), 0);
        assert_eq!(rtt_rank(Some(301), Some(200)), 1);
        assert_eq!(rtt_rank(Some(5000), Some(200)), 1);
        assert_eq!(rtt_rank(None, Some(200)), 2);
        assert_eq!(rtt_rank(Some(900), None), 0);
    }
}
