//! The gauges each client pushes on its own: connections, waiting calls, breaker state, retry
//! budget and throttle, every [`SAMPLE_EVERY`](super::SAMPLE_EVERY), from a task that lives as
//! long as the client.

use std::sync::{Arc, Weak};

use metrics::Gauge;
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    BREAKER_STATE, BUDGET_TOKENS, CONNECTION_COUNT, PENDING_REQUESTS, SAMPLE_EVERY,
    THROTTLE_PROBABILITY,
};
use crate::routing::Node;

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

    /// Pushes the state of `node` now.
    fn sample(
        &self,
        node: &Node,
        now: Instant,
        totals: impl FnOnce() -> resilience::ThrottleTotals,
    ) {
        let (used, idle, pending) = node.pool.occupancy();
        self.used.set(used as f64);
        self.idle.set(idle as f64);
        self.pending.set(pending as f64);
        if let Some(b) = &node.breaker {
            self.breaker.set(b.state_at(now).gauge_value());
        }
        if let Some(t) = &node.throttle {
            self.throttle.set(t.throttle.probability_at(now, totals));
        }
    }

    /// The breaker gauge, for the breaker's listener to push each transition.
    pub(crate) fn breaker(&self) -> Gauge {
        self.breaker.clone()
    }
}

/// What the sampler reads: the client's nodes and its budget.
pub(crate) trait Sampled: Send + Sync + 'static {
    /// Calls `f` with every node the client has and its throttle totals.
    fn each_node(&self, f: &mut dyn FnMut(&Node, &dyn Fn() -> resilience::ThrottleTotals));
    /// The retry budget's balance, if there is a budget.
    fn budget_tokens(&self) -> Option<f64>;
}

/// Pushes the gauges of `client` every [`SAMPLE_EVERY`] until it is dropped.
pub(crate) fn spawn_sampler<S: Sampled>(client: Weak<S>) {
    let budget = metrics::gauge!(BUDGET_TOKENS);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(client): Option<Arc<S>> = client.upgrade() else {
                return;
            };
            let now = Instant::now();
            client.each_node(&mut |node, totals| node.gauges.sample(node, now, totals));
            if let Some(tokens) = client.budget_tokens() {
                budget.set(tokens);
            }
        }
    });
}

/// Pushes the budget's balance after a retry took from it.
pub(crate) fn budget_after_retry(tokens: f64) {
    metrics::gauge!(BUDGET_TOKENS).set(tokens);
}
