//! What a failed attempt means, and how the policy's verdict becomes the client's error. Shared
//! by every topology.

use std::time::Duration;

use redis::{RedisError, ServerError};
use resilience::{
    Backoff, CircuitBreaker, Classification, GiveUp, RetryBudget, RetryConfig, RetryError,
    RetryPolicy, Verdict,
};

use crate::{
    error::{Error, ErrorKind, Outcome},
    replies::{Hints, Meaning},
};

/// A failed attempt with what it means.
pub(crate) struct AttemptError {
    pub(crate) error: Error,
    pub(crate) class: Classification,
    /// What the server's error reply asks of the client, when a reply caused the failure.
    pub(crate) reply: Option<Hints>,
}

impl AttemptError {
    /// A failure that no server reply caused (a lost connection, a deadline, a refusal), with
    /// the client error the caller sees if it is the last and how the policy treats it.
    pub(crate) fn new(
        kind: ErrorKind,
        outcome: Outcome,
        message: impl Into<String>,
        source: Option<RedisError>,
        class: Classification,
    ) -> AttemptError {
        let mut error = Error::new(kind, outcome, message);
        if let Some(s) = source {
            error = error.with_source(s);
        }
        AttemptError {
            error,
            class,
            reply: None,
        }
    }

    /// The failure a server error reply makes, per the [reply table](crate::replies):
    /// `pipelined` when it was one command's reply in a pipeline (the others may have run).
    pub(crate) fn from_reply(err: &ServerError, meaning: Meaning, pipelined: bool) -> AttemptError {
        let (outcome, message, class) = if pipelined {
            (
                Outcome::Ambiguous,
                format!("a pipelined command got {}", err.code()),
                meaning.class.ambiguous(),
            )
        } else {
            (
                Outcome::Failed,
                format!("server replied {}", err.code()),
                meaning.class,
            )
        };
        AttemptError {
            error: Error::new(
                if meaning.throttled {
                    ErrorKind::Throttled
                } else {
                    ErrorKind::Server
                },
                outcome,
                message,
            )
            .with_source(RedisError::from(err.clone())),
            class,
            reply: Some(meaning.hints),
        }
    }
}

impl AttemptError {
    /// What the failure means to the retry policy: its class, and its [reason](Self::reason)
    /// (the classifier of every policy run; the reason is looked up only after a failure).
    pub(crate) fn verdict(&self) -> Verdict {
        self.class.because(self.reason())
    }

    /// Why the attempt failed, as the retries metric names it: the reply's code, or the kind
    /// of error.
    pub(crate) fn reason(&self) -> &'static str {
        match self
            .error
            .redis_error()
            .and_then(crate::replies::Code::of_redis)
        {
            Some(code) if self.reply.is_some() => code.as_str(),
            _ => self.error.kind().as_str(),
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// Whether a call may be re-sent after an attempt that may have run: the handle's override
/// ([`Client::idempotent`](crate::Client::idempotent) and friends) if any, else the command
/// table's verdict. Shared by every topology.
pub(crate) fn idempotency_of(
    override_: Option<bool>,
    safety: crate::commands::CommandSafety,
) -> resilience::Idempotency {
    if override_.unwrap_or_else(|| safety.is_retry_safe()) {
        resilience::Idempotency::Idempotent
    } else {
        resilience::Idempotency::NotIdempotent
    }
}

/// Gives the scheduler its turn after a call that failed. A failure can come back without
/// waiting for anything (an outage's fail-fast answer, an open breaker, a local rejection, a
/// refused command), and a caller that calls again at once would then keep its worker thread
/// from everything else: the reconnection, the timers that end other calls at their deadline,
/// the other tasks. This spends one unit of tokio's cooperative budget, and yields once the
/// task has spent it all (128 units per turn): a failure costs a counter decrement, and a task
/// that only fails gives up its thread every 128 calls. Every public call path runs it on error.
pub(crate) async fn cooperate() {
    tokio::task::consume_budget().await;
}

/// Adaptive throttling's decision for one attempt while `throttle` is engaged: `Err` rejects
/// it locally. `totals` is read only if needed; `rejected` counts rejections.
#[cold]
pub(crate) fn throttle_admit(
    throttle: &resilience::TotalsThrottle,
    totals: impl Fn() -> resilience::ThrottleTotals,
    rng: &std::sync::Mutex<rand::rngs::SmallRng>,
    rejected: &std::sync::atomic::AtomicU64,
) -> Result<(), AttemptError> {
    let decision = throttle.admit_at(
        tokio::time::Instant::now(),
        totals,
        &mut *rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let Err(p) = decision else {
        return Ok(());
    };
    rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!(crate::observe::REJECTED_LOCALLY).increment(1);
    Err(AttemptError {
        error: Error::new(
            ErrorKind::RejectedLocally,
            Outcome::Failed,
            format!(
                "rejected locally: the server is refusing work (adaptive throttling, p = {p:.2})"
            ),
        ),
        class: Classification::fail().server_fault(false),
        reply: None,
    })
}

/// The call's deadline passed while the request was in flight.
pub(crate) fn deadline_in_flight() -> AttemptError {
    AttemptError {
        error: Error::new(
            ErrorKind::DeadlineExceeded,
            Outcome::Ambiguous,
            "deadline exceeded while waiting for the reply",
        ),
        class: Classification::fail().ambiguous().server_fault(true),
        reply: None,
    }
}

pub(crate) fn connection_lost(message: &str, source: Option<RedisError>) -> AttemptError {
    AttemptError::new(
        ErrorKind::ConnectionLost,
        Outcome::Ambiguous,
        message,
        source,
        Classification::retry().ambiguous().server_fault(true),
    )
}

/// What a topology's retry policy is made of.
pub(crate) struct PolicyParts<'a> {
    pub(crate) name: &'static str,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) deadline: Duration,
    /// `false` when every attempt returns by its deadline on its own (the policy then
    /// registers no timer of its own per call).
    pub(crate) cut_attempts: bool,
    pub(crate) budget: Option<&'a RetryBudget>,
    pub(crate) breaker: Option<&'a CircuitBreaker>,
    pub(crate) rng_seed: Option<u64>,
}

/// The retry policy of a client: backoff, deadline, budget and breaker shared by its clones;
/// its retries are noted in the calls' spans (see [`crate::observe::retry_listener`]).
pub(crate) fn build_policy(parts: PolicyParts<'_>) -> Result<RetryPolicy, Error> {
    let retry = RetryConfig {
        max_attempts: parts.max_attempts,
        backoff: parts.backoff,
        deadline: Some(parts.deadline),
        attempt_timeout: None,
        max_hint: Duration::from_secs(5),
        reject_hint_above: Duration::from_secs(300),
        name: parts.name.into(),
        cut_attempts: parts.cut_attempts,
    };
    let mut policy = RetryPolicy::new(retry)
        .map_err(|e| Error::config(e.to_string()))?
        .with_listener(crate::observe::retry_listener(parts.budget.cloned()));
    if let Some(b) = parts.budget {
        policy = policy.with_budget(b.clone());
    }
    if let Some(b) = parts.breaker {
        policy = policy.with_breaker(b.clone());
    }
    if let Some(seed) = parts.rng_seed {
        policy = policy.with_rng_seed(seed);
    }
    Ok(policy)
}

/// Turns the policy's verdict into the client's error, keeping the outcome honest.
pub(crate) fn give_up_error(e: RetryError<AttemptError>) -> Error {
    // An attempt known to have applied the command (an atomic pipeline whose `MULTI` was
    // refused while its writes ran) says so whatever came before it.
    let applied = e
        .error
        .as_ref()
        .is_some_and(|a| a.error.outcome() == Outcome::Applied);
    let outcome = if applied {
        Outcome::Applied
    } else if e.may_have_applied {
        Outcome::Ambiguous
    } else {
        Outcome::Failed
    };
    let attempts = e.attempts;
    if let Some(a) = &e.error
        && a.error.kind() == ErrorKind::BreakerOpen
    {
        // A node's open breaker keeps its own message and retry hint, but not its outcome: an
        // earlier attempt may have applied the command.
        return a
            .error
            .clone()
            .with_attempts(attempts)
            .with_outcome(outcome);
    }
    let last = e.error.map(|a| a.error);
    let (kind, message) = match (&e.reason, &last) {
        (GiveUp::NotRetryable, Some(l)) => (l.kind(), l.message().to_owned()),
        (GiveUp::AmbiguousNotIdempotent, Some(l)) => (
            l.kind(),
            format!(
                "{}; not re-sent because the command is not safe to repeat",
                l.message()
            ),
        ),
        (GiveUp::BreakerOpen { retry_in }, _) => {
            let err = Error::new(
                ErrorKind::BreakerOpen,
                outcome,
                format!(
                    "circuit breaker open after repeated server failures; next probe in {} ms",
                    retry_in.as_millis()
                ),
            )
            .with_attempts(attempts)
            .with_retry_in(*retry_in);
            return err;
        }
        (GiveUp::BudgetExhausted, l) => (
            ErrorKind::BudgetExhausted,
            format!(
                "retry budget exhausted (retries are limited to protect the server){}",
                l.as_ref()
                    .map(|l| format!("; last error: {}", l.message()))
                    .unwrap_or_default()
            ),
        ),
        (GiveUp::DeadlineExceeded, l) | (GiveUp::AttemptTimedOut, l) => (
            ErrorKind::DeadlineExceeded,
            format!(
                "deadline exceeded after {attempts} attempt(s){}",
                l.as_ref()
                    .map(|l| format!("; last error: {}", l.message()))
                    .unwrap_or_default()
            ),
        ),
        (GiveUp::AttemptsExhausted, l) => (
            l.as_ref().map(|l| l.kind()).unwrap_or(ErrorKind::Server),
            format!(
                "gave up after {attempts} attempts{}",
                l.as_ref()
                    .map(|l| format!("; last error: {}", l.message()))
                    .unwrap_or_default()
            ),
        ),
        (_, l) => (
            l.as_ref().map(|l| l.kind()).unwrap_or(ErrorKind::Server),
            l.as_ref()
                .map(|l| l.message().to_owned())
                .unwrap_or_else(|| "call failed".into()),
        ),
    };
    let mut err = Error::new(kind, outcome, message).with_attempts(attempts);
    if let Some(source) = last.and_then(|l| l.redis_error().cloned()) {
        err = err.with_source(source);
    }
    err
}

/// Records a failed call: the client's counter for its outcome, the
/// `resilient_redis.call_failures{error.type, outcome}` metric, and a `warn` event when the
/// command may have been applied. Shared by every topology.
pub(crate) fn record_failure(
    err: &Error,
    ambiguous: &std::sync::atomic::AtomicU64,
    failed: &std::sync::atomic::AtomicU64,
) {
    let (counter, outcome) = if err.is_ambiguous() {
        (ambiguous, "ambiguous")
    } else {
        (failed, "failed")
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!(crate::observe::CALL_FAILURES, "error.type" => err.kind().as_str(), "outcome" => outcome)
        .increment(1);
    if err.is_ambiguous() {
        tracing::warn!(error = %err, "call failed with an ambiguous outcome");
    }
}

#[cfg(test)]
mod tests {
    use resilience::{Classification, GiveUp, RetryError};

    use super::*;

    /// Soak seed 259122271005485 (Sentinel, replicated): a SET applied, its confirmation
    /// ambiguous, then the node's breaker refused the retry. The call may have applied it.
    #[test]
    fn a_breaker_refusing_a_retry_keeps_an_earlier_attempts_ambiguity() {
        let refused = |may_have_applied| RetryError {
            reason: GiveUp::NotRetryable,
            error: Some(AttemptError {
                error: Error::new(ErrorKind::BreakerOpen, Outcome::Failed, "breaker open")
                    .with_retry_in(std::time::Duration::from_secs(1)),
                class: Classification::fail(),
                reply: None,
            }),
            attempts: 2,
            may_have_applied,
        };
        let error = give_up_error(refused(true));
        assert_eq!(error.kind(), ErrorKind::BreakerOpen);
        assert_eq!(error.outcome(), Outcome::Ambiguous);
        assert_eq!(give_up_error(refused(false)).outcome(), Outcome::Failed);
    }
}
