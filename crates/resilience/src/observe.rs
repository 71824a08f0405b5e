//! `tracing` events and `metrics` series for the slow paths. Names are documented in the crate
//! docs (`#observability`); keep the two in sync.
//!
//! Labels take `&Cow<'static, str>` on purpose: cloning a borrowed `Cow` into a metric label
//! does not allocate, unlike converting a `&str`.
#![allow(
    clippy::ptr_arg,
    reason = "a borrowed Cow label clones without allocating"
)]

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge};

use crate::{BreakerState, GiveUp};

pub(crate) const RETRIES_TOTAL: &str = "resilience.retries";
pub(crate) const GIVE_UPS_TOTAL: &str = "resilience.give_ups";
pub(crate) const BUDGET_EXHAUSTED_TOTAL: &str = "resilience.budget.exhausted";
pub(crate) const BREAKER_TRANSITIONS_TOTAL: &str = "resilience.breaker.transitions";
pub(crate) const BREAKER_STATE: &str = "resilience.breaker.state";

/// Metric handles of one policy, registered on first use (with the recorder current then) and
/// reused, so that slow paths do not rebuild label sets or allocate.
pub(crate) struct PolicyMetrics {
    retries: OnceLock<Counter>,
    budget_exhausted: OnceLock<Counter>,
    give_ups: [OnceLock<Counter>; GiveUp::KINDS],
}

impl PolicyMetrics {
    pub(crate) fn new() -> Self {
        Self {
            retries: OnceLock::new(),
            budget_exhausted: OnceLock::new(),
            give_ups: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub(crate) fn retry(
        &self,
        policy: &Cow<'static, str>,
        attempt: u32,
        delay: Duration,
        error: &dyn fmt::Display,
    ) {
        tracing::debug!(
            target: "resilience",
            policy = %policy,
            attempt,
            delay_ms = delay.as_secs_f64() * 1e3,
            error = %error,
            "retrying"
        );
        self.retries
            .get_or_init(|| metrics::counter!(RETRIES_TOTAL, "policy" => policy.clone()))
            .increment(1);
    }

    pub(crate) fn give_up(
        &self,
        policy: &Cow<'static, str>,
        reason: GiveUp,
        attempts: u32,
        may_have_applied: bool,
        error: Option<&dyn fmt::Display>,
    ) {
        let error = error.map(tracing::field::display);
        tracing::debug!(
            target: "resilience",
            policy = %policy,
            reason = reason.as_str(),
            attempts,
            may_have_applied,
            error,
            "giving up"
        );
        self.give_ups[reason.index()]
            .get_or_init(|| {
                metrics::counter!(
                    GIVE_UPS_TOTAL,
                    "policy" => policy.clone(),
                    "reason" => reason.as_str()
                )
            })
            .increment(1);
    }

    pub(crate) fn budget_exhausted(&self, policy: &Cow<'static, str>, attempt: u32) {
        tracing::warn!(target: "resilience", policy = %policy, attempt, "retry budget exhausted");
        self.budget_exhausted
            .get_or_init(|| metrics::counter!(BUDGET_EXHAUSTED_TOTAL, "policy" => policy.clone()))
            .increment(1);
    }
}

/// Metric handles of one breaker, registered on first use and reused.
pub(crate) struct BreakerMetrics {
    /// Indexed by [`BreakerState::gauge_value`]: closed, open, half-open.
    transitions: [OnceLock<Counter>; 3],
    state: OnceLock<Gauge>,
}

impl BreakerMetrics {
    pub(crate) fn new() -> Self {
        Self {
            transitions: std::array::from_fn(|_| OnceLock::new()),
            state: OnceLock::new(),
        }
    }

    pub(crate) fn transition(
        &self,
        breaker: &Cow<'static, str>,
        from: BreakerState,
        to: BreakerState,
    ) {
        if matches!(to, BreakerState::Open { .. }) {
            tracing::warn!(target: "resilience", breaker = %breaker, from = from.as_str(), to = to.as_str(), "circuit breaker transition");
        } else {
            tracing::info!(target: "resilience", breaker = %breaker, from = from.as_str(), to = to.as_str(), "circuit breaker transition");
        }
        let index = to.gauge_value() as usize;
        self.transitions[index]
            .get_or_init(|| {
                metrics::counter!(
                    BREAKER_TRANSITIONS_TOTAL,
                    "breaker" => breaker.clone(),
                    "to" => to.as_str()
                )
            })
            .increment(1);
        self.state
            .get_or_init(|| metrics::gauge!(BREAKER_STATE, "breaker" => breaker.clone()))
            .set(to.gauge_value());
    }
}
