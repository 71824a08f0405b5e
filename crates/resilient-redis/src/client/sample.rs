//! What the client shows of its nodes: each node's adaptive-throttle probability, read in one
//! loop for [`Client::throttle_probability`](super::Client::throttle_probability) and for the
//! sampled gauges ([`crate::observe::gauges`]), which it pushes.

use resilience::RetryBudget;
use tokio::time::Instant;

use super::Inner;
use crate::{observe::gauges, routing::Node};

impl Inner {
    /// Calls `f` with every node and its adaptive throttle's probability of rejecting a call at
    /// `now` (`None`: throttling is off). Reads only: see
    /// [`TotalsThrottle::probability_at`](resilience::TotalsThrottle::probability_at).
    pub(super) fn each_node_throttle(&self, now: Instant, mut f: impl FnMut(&Node, Option<f64>)) {
        self.router.each_node(|node| {
            let p = node.throttle.as_ref().map(|t| {
                t.throttle
                    .probability_at(now, || self.throttle_totals(node))
            });
            f(node, p);
        });
    }

    /// Pushes the sampled gauges: each node's, and the retry budget's balance.
    pub(super) fn sample(&self, now: Instant) {
        self.each_node_throttle(now, |node, throttle| {
            node.gauges.push(gauges::NodeSample {
                occupancy: node.pool.occupancy(),
                breaker: node.breaker.as_ref().map(|b| b.state_at(now).gauge_value()),
                throttle,
            });
        });
        if let Some(tokens) = self.budget.as_ref().map(RetryBudget::available) {
            gauges::budget_tokens(tokens);
        }
    }
}
