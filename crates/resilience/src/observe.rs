//! The names of the `metrics` series the policy core emits on its slow paths (what each counts
//! is in the [crate docs](crate#observability); keep the two in sync), and the handles and
//! `tracing` events behind them.
//!
//! Labels take `&Cow<'static, str>` on purpose: cloning a borrowed `Cow` into a metric label
//! does not allocate, unlike converting a `&str`.
#![allow(
    clippy::ptr_arg,
    reason = "a borrowed Cow label clones without allocating"
)]

use std::borrow::Cow;
use std::fmt;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge};

use crate::{BreakerState, GiveUp};

/// Retries, by policy and reason (`counter`).
pub const RETRIES: &str = "resilience.retries";
/// Calls that gave up, by policy and reason (`counter`).
pub const GIVE_UPS: &str = "resilience.give_ups";
/// Retries the budget refused, by policy (`counter`).
pub const BUDGET_EXHAUSTED: &str = "resilience.budget.exhausted";
/// Breaker transitions, by breaker and state entered (`counter`).
pub const BREAKER_TRANSITIONS: &str = "resilience.breaker.transitions";
/// Breaker state, by breaker (`gauge`: 0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "resilience.breaker.state";

/// Metric handles of one policy, registered on first use (with the recorder current then) and
/// reused, so that slow paths do not rebuild label sets or allocate.
pub(crate) struct PolicyMetrics {
    /// One counter per retry reason seen (a handful): looked up by a read lock and a short scan.
    retries: RwLock<Vec<(&'static str, Counter)>>,
    budget_exhausted: OnceLock<Counter>,
    give_ups: [OnceLock<Counter>; GiveUp::KINDS],
}

impl PolicyMetrics {
    pub(crate) fn new() -> Self {
        Self {
            retries: RwLock::new(Vec::new()),
            budget_exhausted: OnceLock::new(),
            give_ups: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub(crate) fn retry(
        &self,
        policy: &Cow<'static, str>,
        reason: &'static str,
        attempt: u32,
        delay: Duration,
        error: &dyn fmt::Display,
    ) {
        tracing::debug!(
            target: "resilience",
            policy = %policy,
            reason,
            attempt,
            delay_ms = delay.as_secs_f64() * 1e3,
            error = %error,
            "retrying"
        );
        self.count_retry(policy, reason);
    }

    /// Adds one to the retry counter of `reason`.
    pub(crate) fn count_retry(&self, policy: &Cow<'static, str>, reason: &'static str) {
        let counted = |counters: &[(&'static str, Counter)]| {
            let counter = counters.iter().find(|(r, _)| *r == reason);
            counter.map(|(_, c)| c.increment(1)).is_some()
        };
        if counted(&self.retries.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        let mut counters = self.retries.write().unwrap_or_else(PoisonError::into_inner);
        if counted(&counters) {
            return;
        }
        let counter = metrics::counter!(RETRIES, "policy" => policy.clone(), "reason" => reason);
        counter.increment(1);
        counters.push((reason, counter));
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
                    GIVE_UPS,
                    "policy" => policy.clone(),
                    "reason" => reason.as_str()
                )
            })
            .increment(1);
    }

    pub(crate) fn budget_exhausted(&self, policy: &Cow<'static, str>, attempt: u32) {
        tracing::warn!(target: "resilience", policy = %policy, attempt, "retry budget exhausted");
        self.budget_exhausted
            .get_or_init(|| metrics::counter!(BUDGET_EXHAUSTED, "policy" => policy.clone()))
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

    /// Reports a transition; sets the state gauge only if `state_gauge`
    /// ([`BreakerConfig::state_gauge`](crate::BreakerConfig::state_gauge)).
    pub(crate) fn transition(
        &self,
        breaker: &Cow<'static, str>,
        state_gauge: bool,
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
                    BREAKER_TRANSITIONS,
                    "breaker" => breaker.clone(),
                    "to" => to.as_str()
                )
            })
            .increment(1);
        if state_gauge {
            self.state
                .get_or_init(|| metrics::gauge!(BREAKER_STATE, "breaker" => breaker.clone()))
                .set(to.gauge_value());
        }
    }
}
