//! The gauges each client pushes on its own: connections, waiting calls, breaker state, retry
//! budget and throttle, every [`SAMPLE_EVERY`](super::SAMPLE_EVERY), from a task that lives as
//! long as the client. What they show is read by the client (`client::sample`) and handed
//! here: this module knows gauges, not clients or nodes.

use std::sync::{Mutex, PoisonError};

use metrics::Gauge;
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    BREAKER_STATE, BUDGET_TOKENS, CONNECTION_COUNT, PENDING_REQUESTS, SAMPLE_EVERY,
    THROTTLE_PROBABILITY,
};

/// What one node's gauges show at one instant.
pub(crate) struct NodeSample {
    /// Live connections, parked connections for blocking commands, calls waiting for a
    /// connection.
    pub(crate) occupancy: (usize, usize, usize),
    /// The breaker's state as a gauge value, if the node has a breaker.
    pub(crate) breaker: Option<f64>,
    /// The adaptive throttle's rejection probability, if the node has a throttle.
    pub(crate) throttle: Option<f64>,
}

/// The gauges of one node, registered once.
///
/// # Behavior
/// - [`NodeGauges::push`] (the sampler) and [`NodeGauges::breaker_state`] (the breaker's
///   listener, at each transition) set them.
/// - [`NodeGauges::retire`], once the node has left the client's routing table, sets every one
///   to 0, once: the `metrics` facade cannot unregister a series, so a recorder keeps showing it
///   (at 0 from then on, which reads as "nothing open, nothing waiting, nothing rejected"),
///   unless it drops series that stop moving. Pushes after that are ignored: the sampler may
///   still hold the node from a moment before, and its breaker may still see calls in flight.
pub(crate) struct NodeGauges {
    used: Gauge,
    idle: Gauge,
    pending: Gauge,
    breaker: Gauge,
    throttle: Gauge,
    /// Whether the node was retired. A lock rather than a flag, so that a push that found the
    /// node live cannot land after the zeros.
    retired: Mutex<bool>,
}

impl NodeGauges {
    /// The gauges of the node named `name` (`host:port`, or the configured name).
    pub(crate) fn new(name: &str) -> NodeGauges {
        let pool = || ("db.client.connection.pool.name", name.to_owned());
        let (k, v) = pool();
        let used =
            metrics::gauge!(CONNECTION_COUNT, k => v, "db.client.connection.state" => "used");
        let (k, v) = pool();
        let idle =
            metrics::gauge!(CONNECTION_COUNT, k => v, "db.client.connection.state" => "idle");
        let (k, v) = pool();
        let pending = metrics::gauge!(PENDING_REQUESTS, k => v);
        NodeGauges {
            used,
            idle,
            pending,
            breaker: metrics::gauge!(BREAKER_STATE, "node" => name.to_owned()),
            throttle: metrics::gauge!(THROTTLE_PROBABILITY, "node" => name.to_owned()),
            retired: Mutex::new(false),
        }
    }

    /// Pushes `sample`, unless the node was retired.
    pub(crate) fn push(&self, sample: NodeSample) {
        let retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        if *retired {
            return;
        }
        let (used, idle, pending) = sample.occupancy;
        self.used.set(used as f64);
        self.idle.set(idle as f64);
        self.pending.set(pending as f64);
        if let Some(state) = sample.breaker {
            self.breaker.set(state);
        }
        if let Some(p) = sample.throttle {
            self.throttle.set(p);
        }
    }

    /// Pushes the breaker's state (a [`resilience::BreakerState::gauge_value`]), unless the
    /// node was retired.
    pub(crate) fn breaker_state(&self, state: f64) {
        let retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        if !*retired {
            self.breaker.set(state);
        }
    }

    /// The node left the client's routing table: sets every gauge to 0 (once) and ignores
    /// pushes from now on.
    pub(crate) fn retire(&self) {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        if std::mem::replace(&mut *retired, true) {
            return;
        }
        for gauge in [
            &self.used,
            &self.idle,
            &self.pending,
            &self.breaker,
            &self.throttle,
        ] {
            gauge.set(0.0);
        }
    }
}

/// Calls `sample` with the time every [`SAMPLE_EVERY`], until it returns `false` (its client
/// is gone).
pub(crate) fn spawn_sampler(mut sample: impl FnMut(Instant) -> bool + Send + 'static) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !sample(Instant::now()) {
                return;
            }
        }
    });
}

/// Pushes the budget's balance (sampled, and after a retry took from it).
pub(crate) fn budget_tokens(tokens: f64) {
    metrics::gauge!(BUDGET_TOKENS).set(tokens);
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;

    /// The five gauges' values, by name and label values.
    fn values(snapshotter: &Snapshotter) -> Vec<(String, f64)> {
        let mut out: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let DebugValue::Gauge(v) = value else {
                    return None;
                };
                let key = key.key();
                let labels: Vec<_> = key.labels().map(|l| l.value().to_owned()).collect();
                Some((format!("{}{labels:?}", key.name()), v.into_inner()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn a_retired_node_shows_zeros_and_is_pushed_no_more() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let gauges = NodeGauges::new("10.0.0.1:7000");
            let busy = || NodeSample {
                occupancy: (2, 1, 3),
                breaker: Some(1.0),
                throttle: Some(0.5),
            };
            gauges.push(busy());
            let shown = values(&snapshotter);
            assert_eq!(shown.len(), 5, "{shown:?}");
            assert!(shown.iter().all(|(_, v)| *v > 0.0), "{shown:?}");

            gauges.retire();
            let zeros = values(&snapshotter);
            assert_eq!(zeros.len(), 5, "{zeros:?}");
            assert!(zeros.iter().all(|(_, v)| *v == 0.0), "{zeros:?}");

            // A sample taken before the retirement, a transition of a call still in flight,
            // a second retirement: nothing moves.
            gauges.push(busy());
            gauges.breaker_state(2.0);
            gauges.retire();
            assert_eq!(values(&snapshotter), zeros);
        });
    }
}
