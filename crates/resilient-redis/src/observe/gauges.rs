//! The gauges each client pushes on its own: connections, waiting calls, breaker state, retry
//! budget and throttle, every [`SAMPLE_EVERY`](super::SAMPLE_EVERY), from a task that lives as
//! long as the client. What they show is read by the client (`client::sample`) and handed
//! here: this module knows gauges, not clients or nodes.

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
pub(crate) struct NodeGauges {
    used: Gauge,
    idle: Gauge,
    pending: Gauge,
    breaker: Gauge,
    throttle: Gauge,
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
        }
    }

    /// Pushes `sample`.
    pub(crate) fn push(&self, sample: NodeSample) {
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

    /// The breaker gauge, for the breaker's listener to push each transition.
    pub(crate) fn breaker(&self) -> Gauge {
        self.breaker.clone()
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
