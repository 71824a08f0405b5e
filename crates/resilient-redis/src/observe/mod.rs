//! What the client shows operators: one `tracing` span per call and `metrics` series named as
//! the [OpenTelemetry database conventions] say, plus the client's own.
//!
//! # Spans
//! Every application call (a command, a pipeline, a blocking command) runs in one span at
//! [`ClientConfig::span_level`](crate::ClientConfig::span_level) (`DEBUG` by default), target
//! `resilient_redis`, name `redis`, whatever its retries: attempts are counted in it, and
//! retries are `DEBUG` events inside it. To export the spans without logging every call, give
//! the exporting layer its own filter (`Targets::new().with_default(Level::INFO)
//! .with_target("resilient_redis", Level::DEBUG)`, as `crates/examples/examples/otel.rs` does). Its fields:
//!
//! | field | value |
//! |---|---|
//! | `otel.name`, `db.operation.name` | the command (`GET`), `PIPELINE` or `MULTI` |
//! | `otel.kind` | `client` |
//! | `db.system.name` | `redis` |
//! | `db.namespace` | the database index |
//! | `server.address`, `server.port` | the node that answered the last attempt |
//! | `db.response.status_code` | the error code of an error reply (`WRONGTYPE`, `READONLY`, ...) |
//! | `error.type`, `otel.status_code` | for a call that failed: the [`ErrorKind`](crate::ErrorKind) (or the reply's code), `ERROR` |
//! | `resilient_redis.outcome` | `ok`, `failed` or `ambiguous` (an error reply is `failed`) |
//! | `resilient_redis.attempts` | attempts sent (as [`ClientStats::attempts`](crate::ClientStats::attempts) counts them) |
//! | `resilient_redis.retry_reasons` | why each retry was made, in order (`connection_lost,LOADING`) |
//! | `resilient_redis.connection_wait_ms` | time spent waiting for a connection or for the topology |
//! | `resilient_redis.route` | `master`, `replica` or `redirected` (a cluster `MOVED`/`ASK` was followed) |
//! | `db.query.text` | only with [`ClientConfig::trace_keys`](crate::ClientConfig::trace_keys): the command with its keys, every other argument as `?` |
//!
//! No key or value is recorded by default. With no subscriber interested in the span's level
//! for the target, a call pays one level check (the span is not built). When spans are built,
//! what they cost is the subscriber's: measured at 50 callers, a `fmt` subscriber (which
//! formats every span's fields) halves throughput, which is why they are not at `INFO` by
//! default; see the README for the figures.
//!
//! # Metrics
//! Through the [`metrics`] facade; install a recorder before building the client. Names with
//! dots (exporters for Prometheus write `db_client_operation_duration`):
//!
//! | name | kind, unit | labels | when |
//! |---|---|---|---|
//! | [`OPERATION_DURATION`] | histogram, s | `db.system.name`, `db.operation.name`, `outcome` (`ok`, `failed`, `ambiguous`) | every call |
//! | [`CONNECTION_COUNT`] | gauge | `db.client.connection.pool.name` (node), `db.client.connection.state` (`used`: live multiplexed connections, which every call shares; `idle`: parked connections for blocking commands) | sampled |
//! | [`PENDING_REQUESTS`] | gauge | `db.client.connection.pool.name` | calls waiting for a connection; sampled |
//! | [`CONNECTION_CREATE_TIME`] | histogram, s | | each connection opened by the pools |
//! | [`RETRIES`] (`resilience.retries`, the retry policy's own series) | counter | `policy` (`resilient_redis`), `reason`: a reply code (`READONLY`, `LOADING`, ...) or an [`ErrorKind`](crate::ErrorKind) (`connection_lost`, ...); `blocking_resend` for a blocking command sent again | each retry the policy decides on, and each time a blocking command is sent again |
//! | [`BREAKER_STATE`] | gauge: 0 closed, 1 open, 2 half-open | `node` | at each transition, and sampled (the nodes' breakers do not set the policy core's `resilience.breaker.state`: one series per breaker) |
//! | [`BUDGET_TOKENS`] | gauge | | retries the budget allows now; sampled, and after each retry |
//! | [`THROTTLE_PROBABILITY`] | gauge | `node` | the adaptive throttle's local rejection probability; sampled |
//! | [`RECONNECTIONS`], [`RECONNECT_FAILURES`] | counter | | |
//! | [`MASTER_SWITCHES`], [`SENTINEL_DISCOVERIES`] | counter | | (Sentinel) |
//! | [`DEMOTIONS`] | counter | | the server behind one address stopped being a primary |
//! | [`CLUSTER_REFRESHES`] | counter | | (Cluster) slot-map refreshes |
//! | [`EXACTLY_ONCE_REPLAYS`] | counter | | retries answered from a recorded reply |
//! | [`REJECTED_LOCALLY`] | counter | | calls refused by adaptive throttling |
//! | [`REAUTHENTICATIONS`] | counter | | live connections that sent `AUTH` again |
//! | [`CALL_FAILURES`] | counter | `error.type` ([`ErrorKind::as_str`](crate::ErrorKind::as_str)), `outcome` | |
//!
//! "Sampled": a task of each client pushes the gauge every [`SAMPLE_EVERY`] for as long as the
//! client lives (no call pays for it).
//!
//! A Redis Cluster node that leaves the client's routing table (it owns no slot any more: its
//! slots moved away, or a failover demoted it) has its gauges (those labelled with its address)
//! set to 0 once, then no longer pushed. The `metrics` facade cannot unregister a series, so a
//! recorder keeps showing it, at 0 ("no connection, no call waiting, breaker closed, nothing
//! rejected"), not at its last value; a recorder that drops series that stop moving
//! (`metrics-exporter-prometheus` with `idle_timeout`) forgets it. If the node comes back, it
//! pushes them again.
//!
//! [OpenTelemetry database conventions]: https://opentelemetry.io/docs/specs/semconv/database/

pub(crate) mod call;
pub(crate) mod gauges;
mod operations;

use std::time::Duration;

pub(crate) use gauges::spawn_sampler;
pub(crate) use operations::Operations;

/// Seconds per call (`histogram`), by operation and outcome.
pub const OPERATION_DURATION: &str = "db.client.operation.duration";
/// Connections by state (`gauge`).
pub const CONNECTION_COUNT: &str = "db.client.connection.count";
/// Calls waiting for a connection (`gauge`).
pub const PENDING_REQUESTS: &str = "db.client.connection.pending_requests";
/// Seconds to open a connection (`histogram`).
pub const CONNECTION_CREATE_TIME: &str = "db.client.connection.create_time";
/// Retries, by policy and reason (`counter`): the retry policy's own series
/// ([`resilience::observe::RETRIES`]), whose `policy` label is `resilient_redis`.
pub const RETRIES: &str = resilience::observe::RETRIES;
/// Circuit breaker state per node (`gauge`: 0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "resilient_redis.breaker.state";
/// Retry budget balance, in retries (`gauge`).
pub const BUDGET_TOKENS: &str = "resilient_redis.budget.tokens";
/// Adaptive throttle's local rejection probability per node (`gauge`).
pub const THROTTLE_PROBABILITY: &str = "resilient_redis.throttle.probability";
/// Connections re-established (`counter`).
pub const RECONNECTIONS: &str = "resilient_redis.reconnections";
/// Failed reconnection attempts (`counter`).
pub const RECONNECT_FAILURES: &str = "resilient_redis.reconnect_failures";
/// (Sentinel) Master changes followed (`counter`).
pub const MASTER_SWITCHES: &str = "resilient_redis.master_switches";
/// (Sentinel) Rounds of asking the sentinels (`counter`).
pub const SENTINEL_DISCOVERIES: &str = "resilient_redis.sentinel.discoveries";
/// The server behind one address stopped being a primary (`counter`).
pub const DEMOTIONS: &str = "resilient_redis.demotions";
/// (Cluster) Slot-map refreshes (`counter`).
pub const CLUSTER_REFRESHES: &str = "resilient_redis.cluster.refreshes";
/// Exactly-once retries answered from a recorded reply (`counter`).
pub const EXACTLY_ONCE_REPLAYS: &str = "resilient_redis.exactly_once.replays";
/// Calls refused by adaptive throttling (`counter`).
pub const REJECTED_LOCALLY: &str = "resilient_redis.rejected_locally";
/// Live connections that sent `AUTH` again with renewed credentials (`counter`).
pub const REAUTHENTICATIONS: &str = "resilient_redis.reauthentications";
/// Failed calls by error kind and outcome (`counter`).
pub const CALL_FAILURES: &str = "resilient_redis.call_failures";

/// How often each client pushes its sampled gauges.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Describes every series (unit and help text) to the recorder installed now.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Duration of Redis calls, retries included"
    );
    describe_gauge!(CONNECTION_COUNT, "Connections by state");
    describe_gauge!(PENDING_REQUESTS, "Calls waiting for a connection");
    describe_histogram!(
        CONNECTION_CREATE_TIME,
        Unit::Seconds,
        "Time to open a connection"
    );
    describe_counter!(RETRIES, "Retries, by policy and reason");
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state per node: 0 closed, 1 open, 2 half-open"
    );
    describe_gauge!(BUDGET_TOKENS, "Retries the retry budget allows now");
    describe_gauge!(
        THROTTLE_PROBABILITY,
        "Probability that adaptive throttling rejects a call locally"
    );
    describe_counter!(RECONNECTIONS, "Connections re-established");
    describe_counter!(RECONNECT_FAILURES, "Failed reconnection attempts");
    describe_counter!(MASTER_SWITCHES, "Master changes followed (Sentinel)");
    describe_counter!(SENTINEL_DISCOVERIES, "Rounds of asking the sentinels");
    describe_counter!(DEMOTIONS, "Times the server stopped being a primary");
    describe_counter!(CLUSTER_REFRESHES, "Cluster slot-map refreshes");
    describe_counter!(
        EXACTLY_ONCE_REPLAYS,
        "Exactly-once retries answered from a recorded reply"
    );
    describe_counter!(REJECTED_LOCALLY, "Calls refused by adaptive throttling");
    describe_counter!(
        REAUTHENTICATIONS,
        "Live connections that sent AUTH again with renewed credentials"
    );
    describe_counter!(CALL_FAILURES, "Failed calls by error kind and outcome");
}

/// Notes one retry, for `reason`, in a `DEBUG` event and the call's span (the retry policy
/// counts it in [`RETRIES`]). `attempt`: the number of the attempt it makes (0: a blocking
/// command sent again).
#[cold]
pub(crate) fn retried(reason: &'static str, attempt: u32) {
    tracing::debug!(target: "resilient_redis", reason, attempt, "retrying");
    call::note_retry(reason);
}

/// The listener of a client's retry policy: notes each retry the policy decides on (see
/// [`retried`]) and pushes the budget's balance after it.
pub(crate) fn retry_listener(budget: Option<resilience::RetryBudget>) -> resilience::Listener {
    std::sync::Arc::new(move |event| {
        if let resilience::Event::Retry {
            reason, attempt, ..
        } = *event
        {
            retried(reason, attempt + 1);
            if let Some(budget) = &budget {
                gauges::budget_tokens(budget.available());
            }
        }
    })
}
