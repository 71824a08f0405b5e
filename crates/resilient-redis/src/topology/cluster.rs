//! [`ClusterClient`]: the resilient client for Redis Cluster: its own slot map and one
//! redis-rs multiplexed connection per node, with the policy core on top.
//!
//! # How a call flows
//! 1. The command table gives the call its safety (as for [`Client`](crate::Client)); blocking
//!    and connection-state commands are refused.
//! 2. The key's slot gives the node, from a slot map the client keeps (`CLUSTER SLOTS`,
//!    refreshed in the background, rate-limited and jittered). A node known to be down is not
//!    sent to: the call waits (within its deadline) until the slot moves to another node or the
//!    node answers again. Waiting sends nothing and spends no retry budget.
//! 3. The node's own circuit breaker admits the attempt (one breaker per node: a failing shard
//!    does not block the others).
//! 4. The request goes out on the client's own connection to that node (opened on first use,
//!    bounded by `connect_timeout` and `response_timeout`, dropped when it breaks). `MOVED` and
//!    `ASK` are followed at once inside the attempt: no backoff, no retry budget (`ASK` is sent
//!    as `ASKING` + the command in one pipeline, so no other request can slip between them on
//!    the shared connection). Only calls whose slot the client cannot name (keyless commands,
//!    or before the first slot map) go through redis-rs's cluster connection.
//! 5. Failures are classified as for the standalone client: `TRYAGAIN`, `CLUSTERDOWN`,
//!    `READONLY`, `LOADING`, ... are retried with jittered backoff within the budget and the
//!    deadline; a connection lost mid-flight is ambiguous and retried only for commands safe to
//!    repeat; `CROSSSLOT` and other replies come back unchanged, never retried.
//!
//! # Why not redis-rs's cluster connection for keyed calls
//! redis-rs 1.8's cluster connection drives every node's requests from one task, and that task
//! stops polling all in-flight requests while it refreshes its slot map or reconnects to the
//! seeds (`poll_flush` polls only the recovery future; `refresh_slots` holds the connection
//! map's write lock across network I/O). After a master's SIGKILL under load this held every
//! shard's requests for over 3 s in about 1 run in 3 to 5, until a watchdog replaced the
//! connection; with per-node connections a dead node fails only its own requests, and slot-map
//! refreshes and probes of down nodes use those connections too.
//!
//! # redis-rs's own retries are off
//! redis-rs's cluster connection (still used for keyless calls and [`ClusterClient::health`])
//! retries internally (16 times by default) and re-sends a request
//! after an I/O error *whatever the command*: an `INCR` whose connection broke after it was
//! written is sent again, and the caller never learns that it may have run twice. Its waits
//! (at least 1.28 s after `TRYAGAIN`/`CLUSTERDOWN`) are not bounded by a deadline either. The
//! client therefore builds it with `retries(0)`, which makes every failure, redirects included,
//! come back to this module; redirects are followed here (they are not failures) and everything
//! else goes through the same policy as the standalone client. Its overall response timeout is
//! off: the call's deadline bounds each call instead.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::{SeedableRng, rngs::SmallRng};
use redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::ConnectionLike,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};
use resilience::{
    Attempt, BreakerConfig, CircuitBreaker, Classification, Idempotency, RetryBudget, RetryPolicy,
    ThrottleTotals, TotalsThrottle,
};
use tokio::time::Instant;

use crate::{
    ClientConfig,
    commands::{CommandSafety, command_slot},
    error::{Error, ErrorKind, Outcome},
    request::{Reply, Request},
    retry::{
        AttemptError, PolicyParts, build_policy, connection_lost, cooperate, give_up_error,
        idempotency_of, is_overload_refusal, record_failure, throttle_admit,
    },
};

mod classify;
mod config;
mod health;
mod nodes;
mod slots;

use classify::{Redirect, redirect_of};
pub use config::ClusterConfig;
pub use health::{ClusterHealth, ClusterNodeHealth};
use nodes::Nodes;
use slots::{Topology, refresh_once, refresher};

/// A Redis Cluster client that survives failovers and resharding, and never reports an
/// ambiguous write as a plain failure.
///
/// Cheap to clone (clones share connections, slot map, budget and breakers); implements
/// [`redis::aio::ConnectionLike`], so [`redis::AsyncCommands`] and single-slot pipelines work.
///
/// # Behavior
/// - `MOVED` and `ASK` are followed at once, without backoff and without spending retry budget
///   (up to `max_redirects` per attempt).
/// - A call for a slot whose node is down waits, sending nothing, until the slot map (refreshed
///   at most every `min_refresh_interval` + jitter) shows another master or the node answers
///   again; then it is sent. Calls for other slots are not held up.
/// - `TRYAGAIN`, `CLUSTERDOWN` and `READONLY` (the cluster is reconfiguring) are retried with
///   backoff and do not count against the node's breaker; `LOADING`, `BUSY`, `MASTERDOWN` and
///   lost connections do.
/// - A connection lost after the request was written makes the attempt ambiguous: retried only
///   for commands safe to repeat ([`crate::commands`]), else the call fails with
///   [`Outcome::Ambiguous`].
/// - `CROSSSLOT` (keys of one command in several slots) and other error replies come back
///   unchanged and are never retried; a pipeline whose keys span slots is refused by redis-rs
///   before sending.
/// - Blocking commands (`BLPOP`, ...) are refused: on the cluster's shared per-node connection
///   they would hold up every other request to that node.
/// - A pipeline that meets `ASK` (its slot is being migrated) is retried with backoff when it is
///   safe to repeat, and fails as ambiguous otherwise: its commands may have run on either node.
/// - Keyed calls go out on the client's own connection to the slot's node (one multiplexed
///   connection per node): a dead or slow node holds up only the calls for its slots.
/// - A keyless call (sent through redis-rs's cluster connection) that gets no answer within
///   2 x `response_timeout` + 500 ms is stuck inside redis-rs's connection task: the client PINGs
///   through it, replaces the connection if that is stuck too, and retries the call if it is
///   safe to repeat (ambiguous otherwise).
///
/// # redis-rs underneath
/// Keyed calls use one redis-rs [`MultiplexedConnection`](redis::aio::MultiplexedConnection)
/// per node, routed by the client's own slot map. Keyless calls and `health` use redis-rs's
/// async cluster connection, built with `retries(0)` and no overall response timeout. redis-rs's own retries would re-send a request after an I/O error whatever
/// the command (an `INCR` could run twice and the caller would never know), follow `ASK` with a
/// separate `ASKING` that another request can overtake, and wait at least 1.28 s after
/// `TRYAGAIN`/`CLUSTERDOWN` regardless of any deadline; with `retries(0)` every failure, redirects
/// included, comes back to this client, which follows redirects itself and applies its policy
/// to the rest.
///
/// # Example
/// ```no_run
/// use redis::AsyncCommands;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut cluster = resilient_redis::ClusterClient::connect(&[
///     "redis://10.0.0.1:7000",
///     "redis://10.0.0.2:7000",
/// ])
/// .await?;
/// let _: () = cluster.set("{user:1}:name", "ada").await?;
/// let name: String = cluster.get("{user:1}:name").await?;
/// println!("{name}\n{}", cluster.health().await);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
    policy: RetryPolicy,
    idempotent: Option<bool>,
}

struct Inner {
    config: ClusterConfig,
    rules: ClientConfig,
    /// redis-rs's client, to replace a cluster connection whose driver stopped answering.
    client: redis::cluster::ClusterClient,
    /// The cluster connection and its generation (bumped on each replacement).
    conn: RwLock<(ClusterConnection, u64)>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
    /// The client's own connection to each node: keyed calls, slot-map refreshes and probes.
    nodes: Nodes,
    topology: Arc<Topology>,
    budget: Option<RetryBudget>,
    breakers: RwLock<HashMap<String, CircuitBreaker>>,
    /// Adaptive throttling, one per node.
    throttles: RwLock<HashMap<String, Arc<NodeThrottle>>>,
    throttle_rng: Mutex<SmallRng>,
    stats: Counters,
}

/// A node's adaptive throttle and the counts it works on.
struct NodeThrottle {
    throttle: TotalsThrottle,
    attempts: AtomicU64,
    refused: AtomicU64,
    rejected: AtomicU64,
}

impl NodeThrottle {
    fn totals(&self) -> ThrottleTotals {
        let attempts = self.attempts.load(Ordering::Relaxed);
        ThrottleTotals {
            requests: attempts + self.rejected.load(Ordering::Relaxed),
            accepts: attempts.saturating_sub(self.refused.load(Ordering::Relaxed)),
        }
    }
}

impl Inner {
    /// The current cluster connection and its generation.
    fn conn(&self) -> (ClusterConnection, u64) {
        read(&self.conn).clone()
    }

    /// A call through connection `generation` got no answer in time: if that connection does
    /// not answer a PING either, its task is stuck (redis-rs 1.8 can stop serving every request
    /// during a slot migration); replace it with a new one.
    async fn check_driver(&self, generation: u64) {
        let _one = self.replacing.lock().await;
        let (mut conn, current) = self.conn();
        if current != generation {
            return;
        }
        let ping = conn.route_command(
            redis::cmd("PING"),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        );
        if let Ok(Ok(_)) = tokio::time::timeout(self.config.response_timeout, ping).await {
            return;
        }
        let limit = self.config.connect_timeout * 2 + self.config.response_timeout;
        match tokio::time::timeout(limit, self.client.get_async_connection()).await {
            Ok(Ok(fresh)) => {
                tracing::warn!("cluster connection stopped answering; replaced it");
                self.stats.replaced.fetch_add(1, Ordering::Relaxed);
                *self.conn.write().unwrap_or_else(|p| p.into_inner()) = (fresh, generation + 1);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot replace a stuck cluster connection"),
            Err(_) => tracing::warn!("cannot replace a stuck cluster connection in time"),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.topology.closed.store(true, Ordering::Relaxed);
        self.topology.wake.notify_one();
    }
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    redirects: AtomicU64,
    waits: AtomicU64,
    replaced: AtomicU64,
    ambiguous: AtomicU64,
    failed: AtomicU64,
    rejected_locally: AtomicU64,
    refused: AtomicU64,
}

/// Cumulative counters of a [`ClusterClient`] (shared by its clones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Calls made (commands and pipelines).
    pub calls: u64,
    /// Attempts, retries included (redirects are not attempts).
    pub attempts: u64,
    /// Attempts after the first of a call (each one spent backoff and budget).
    pub retries: u64,
    /// `MOVED` and `ASK` redirects followed (no backoff, no budget).
    pub redirects: u64,
    /// Times a call waited for the node of its slot to be replaced or come back.
    pub waits: u64,
    /// Cluster connections replaced because they stopped answering.
    pub replaced: u64,
    /// Calls that failed with an ambiguous outcome.
    pub ambiguous: u64,
    /// Calls that failed with a definite outcome.
    pub failed: u64,
    /// Slot-map refreshes done.
    pub refreshes: u64,
    /// Calls rejected locally by a node's adaptive throttle (never sent; also in `failed`).
    pub rejected_locally: u64,
    /// Attempts a node refused for overload (`THROTTLED`, `BUSY`, `LOADING`, ...).
    pub refused: u64,
}

/// Where an attempt sends.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Target {
    /// Let redis-rs route by slot.
    Slot,
    /// A node named by a `MOVED` reply.
    Moved(String),
    /// A node named by an `ASK` reply: `ASKING` first.
    Asking(String),
}

impl ClusterClient {
    /// Connects with the default configuration to the cluster of these seed nodes.
    ///
    /// # Errors
    /// A malformed URL ([`ErrorKind::InvalidConfig`]), or no seed node reachable
    /// ([`ErrorKind::Unavailable`]).
    pub async fn connect<S: AsRef<str>>(urls: &[S]) -> Result<ClusterClient, Error> {
        ClusterClient::with_config(ClusterConfig::from_urls(urls)?).await
    }

    /// Connects with `config`, checked first, and loads the slot map.
    pub async fn with_config(config: ClusterConfig) -> Result<ClusterClient, Error> {
        config.validate()?;
        let mut tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        if let Some(idle) = config.tcp_keepalive {
            tcp = tcp.set_keepalive(
                socket2::TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval(idle / 2 + Duration::from_millis(1)),
            );
        }
        let mut builder = redis::cluster::ClusterClientBuilder::new(config.urls.clone());
        if let Some(tls) = &config.tls {
            if let Some(certificates) = tls.certificates()? {
                builder = builder.certs(certificates);
            }
            if tls.insecure_skip_verify {
                builder = builder.tls(redis::TlsMode::Insecure);
            }
        }
        let client = builder
            .retries(0)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.response_timeout)
            .overall_response_timeout(None)
            .tcp_settings(tcp)
            .build()
            .map_err(|e| Error::config(format!("cluster client: {e}")).with_source(e))?;
        let conn = tokio::time::timeout(
            config.connect_timeout * 2 + config.response_timeout,
            client.get_async_connection(),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                Outcome::Failed,
                "no seed node answered in time",
            )
        })?
        .map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                Outcome::Failed,
                "cannot connect to the cluster",
            )
            .with_source(e)
        })?;
        let budget = match &config.budget {
            Some(b) => Some(
                RetryBudget::new(b.clone()).map_err(|e| Error::config(format!("budget: {e}")))?,
            ),
            None => None,
        };
        if let Some(b) = &config.breaker {
            CircuitBreaker::new(b.clone()).map_err(|e| Error::config(format!("breaker: {e}")))?;
        }
        let rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x5eed),
            None => rand::make_rng(),
        };
        let throttle_rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x7468_726f),
            None => rand::make_rng(),
        };
        let topology = Arc::new(Topology::new());
        let nodes = Nodes::new(&config)?;
        let inner = Arc::new(Inner {
            rules: config.reply_rules(),
            config,
            client,
            conn: RwLock::new((conn, 0)),
            replacing: tokio::sync::Mutex::new(()),
            nodes,
            topology: topology.clone(),
            budget,
            breakers: RwLock::new(HashMap::new()),
            throttles: RwLock::new(HashMap::new()),
            throttle_rng: Mutex::new(throttle_rng),
            stats: Counters::default(),
        });
        if let Err(e) = refresh_once(&inner).await {
            tracing::warn!(error = %e, "first slot-map load failed; redis-rs routes meanwhile");
        }
        tokio::spawn(refresher(Arc::downgrade(&inner), topology, rng));
        let policy = build_policy(policy_parts(
            &inner.config,
            inner.budget.as_ref(),
            inner.config.deadline,
        ))?;
        Ok(ClusterClient {
            inner,
            policy,
            idempotent: None,
        })
    }

    /// A handle whose calls are treated as safe to repeat. Shares everything with `self`.
    pub fn idempotent(&self) -> ClusterClient {
        ClusterClient {
            idempotent: Some(true),
            ..self.clone()
        }
    }

    /// A handle whose calls are never re-sent after an ambiguous failure. Shares everything.
    pub fn non_idempotent(&self) -> ClusterClient {
        ClusterClient {
            idempotent: Some(false),
            ..self.clone()
        }
    }

    /// A handle with another total deadline per call. Shares everything with `self`.
    pub fn with_deadline(&self, deadline: Duration) -> Result<ClusterClient, Error> {
        if deadline.is_zero() {
            return Err(Error::config("deadline must be greater than zero"));
        }
        Ok(ClusterClient {
            policy: build_policy(policy_parts(
                &self.inner.config,
                self.inner.budget.as_ref(),
                deadline,
            ))?,
            ..self.clone()
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// This handle's total deadline per call (see [`ClusterClient::with_deadline`]).
    pub(crate) fn call_deadline(&self) -> Duration {
        self.policy
            .config()
            .deadline
            .unwrap_or(self.inner.config.deadline)
    }

    /// The retry budget, if enabled.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    /// The circuit breaker of the node at `addr` (`host:port`), once a call has used it.
    pub fn breaker(&self, addr: &str) -> Option<CircuitBreaker> {
        read(&self.inner.breakers).get(addr).cloned()
    }

    /// The master of `slot` in the client's slot map, as `host:port`.
    pub fn master_for_slot(&self, slot: u16) -> Option<String> {
        self.inner.topology.master_of(slot).map(|a| a.to_string())
    }

    /// Counters since the client was created (shared by all clones).
    pub fn stats(&self) -> ClusterStats {
        let s = &self.inner.stats;
        ClusterStats {
            calls: s.calls.load(Ordering::Relaxed),
            attempts: s.attempts.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            redirects: s.redirects.load(Ordering::Relaxed),
            waits: s.waits.load(Ordering::Relaxed),
            replaced: s.replaced.load(Ordering::Relaxed),
            ambiguous: s.ambiguous.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            refreshes: self.inner.topology.refreshes.load(Ordering::Relaxed),
            rejected_locally: s.rejected_locally.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
        }
    }

    /// Runs one command, with the client's error type. Error replies that are not retried come
    /// back as `Ok(Value::ServerError(..))`, as redis-rs does.
    pub async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        Ok(self.execute(Request::Cmd(cmd)).await?.into_value())
    }

    /// Runs a pipeline (plain or atomic; all its keys in one slot) with the client's error type.
    pub async fn send_pipeline(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Error> {
        Ok(self
            .execute(Request::pipeline(pipeline))
            .await?
            .into_values())
    }

    async fn execute(&self, request: Request<'_>) -> Result<Reply, Error> {
        let result = self.execute_once(request).await;
        if let Err(e) = &result {
            record_failure(e, &self.inner.stats.ambiguous, &self.inner.stats.failed);
            cooperate().await;
        }
        result
    }

    async fn execute_once(&self, request: Request<'_>) -> Result<Reply, Error> {
        let stats = &self.inner.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let safety = request.safety();
        let slot = match request {
            Request::Cmd(cmd) => command_slot(cmd),
            Request::Pipeline { pipeline, .. } => pipeline.cmd_iter().find_map(command_slot),
        };
        let safety = safety.map_err(|why| Error::new(ErrorKind::Refused, Outcome::Failed, why))?;
        if safety == CommandSafety::Blocking {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "blocking commands are not sent through ClusterClient: they would hold up every request to the node; use a dedicated connection",
            ));
        }
        let idempotency = idempotency_of(self.idempotent, safety);
        let retry_safe = idempotency == Idempotency::Idempotent;
        self.policy
            .run(
                idempotency,
                |e: &AttemptError| e.class,
                |attempt: Attempt| self.attempt(request, slot, attempt, retry_safe),
            )
            .await
            .map_err(|e| {
                // A node's open breaker keeps its own message and retry hint.
                let attempts = e.attempts;
                match &e.error {
                    Some(a) if a.error.kind() == ErrorKind::BreakerOpen => {
                        a.error.clone().with_attempts(attempts)
                    }
                    _ => give_up_error(e),
                }
            })
    }

    /// One attempt: wait for a live node, send, follow redirects.
    async fn attempt(
        &self,
        request: Request<'_>,
        slot: Option<u16>,
        attempt: Attempt,
        retry_safe: bool,
    ) -> Result<Reply, AttemptError> {
        let inner = &*self.inner;
        let topology = &inner.topology;
        inner.stats.attempts.fetch_add(1, Ordering::Relaxed);
        if attempt.number > 1 {
            inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let mut target = Target::Slot;
        let mut hops = 0;
        loop {
            // The node this hop goes to, once it is not known to be down.
            let node = match (&target, slot) {
                (Target::Slot, Some(slot)) => self.live_master(slot, attempt.deadline).await?,
                (Target::Slot, None) => None,
                (Target::Moved(addr) | Target::Asking(addr), _) => {
                    if topology.is_down(addr) {
                        target = Target::Slot;
                        continue;
                    }
                    Some(Arc::from(addr.as_str()))
                }
            };
            let throttle = node.as_deref().and_then(|n| self.node_throttle(n));
            if let Some(t) = &throttle {
                if t.throttle.is_engaged() {
                    throttle_admit(&t.throttle, || t.totals(), &inner.throttle_rng, &t.rejected)
                        .inspect_err(|_| {
                            inner.stats.rejected_locally.fetch_add(1, Ordering::Relaxed);
                        })?;
                }
                t.attempts.fetch_add(1, Ordering::Relaxed);
            }
            let breaker = node.as_deref().and_then(|n| self.node_breaker(n));
            let permit = match &breaker {
                Some(b) => Some(b.try_acquire().map_err(|open| AttemptError {
                    error: Error::new(
                        ErrorKind::BreakerOpen,
                        Outcome::Failed,
                        format!(
                            "circuit breaker of node {} open after repeated failures; next probe in {} ms",
                            node.as_deref().unwrap_or("?"),
                            open.retry_in.as_millis()
                        ),
                    )
                    .with_retry_in(open.retry_in),
                    class: Classification::fail(),
                    reply: None,
                })?),
                None => None,
            };
            let stuck_after = inner.config.response_timeout * 2 + Duration::from_millis(500);
            let result = if let Some(addr) = node.as_deref() {
                // The client's own connection to the node: bounded by the connect and response
                // timeouts, and a dead node holds up nothing but its own requests.
                let asking = matches!(target, Target::Asking(_));
                match tokio::time::timeout(stuck_after, self.send_to_node(addr, request, asking))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => {
                        drop(permit);
                        return Err(connection_lost(
                            "no answer from the node within twice the response timeout",
                            None,
                        ));
                    }
                }
            } else {
                let (conn, generation) = inner.conn();
                match tokio::time::timeout(stuck_after, self.send_to(conn, request)).await {
                    Ok(result) => result,
                    Err(_) => {
                        // Every node request is cut by the response timeout, so a call this late
                        // is stuck inside redis-rs's connection task: check it, replace it if it
                        // is stuck, and retry the call if it is safe to repeat.
                        drop(permit);
                        inner.check_driver(generation).await;
                        return Err(connection_lost(
                            "the cluster connection stopped answering while the request was in flight",
                            None,
                        ));
                    }
                }
            };
            let error = match result {
                Ok(reply) => match self.check_reply(reply, retry_safe) {
                    Ok(reply) => {
                        if let Some(p) = permit {
                            p.success();
                        }
                        return Ok(reply);
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            // A redirect: follow it now, inside this attempt.
            if let Some((kind, addr, moved_slot)) = redirect_of(&error) {
                drop(permit);
                hops += 1;
                inner.stats.redirects.fetch_add(1, Ordering::Relaxed);
                if kind == Redirect::Moved {
                    topology.note_moved(moved_slot, &addr);
                }
                let pipeline = matches!(request, Request::Pipeline { .. });
                if kind == Redirect::Ask && pipeline {
                    // Some of the pipeline's commands may have run on this node.
                    return Err(AttemptError {
                        error: Error::new(
                            ErrorKind::Server,
                            Outcome::Ambiguous,
                            "a pipeline met a slot being migrated (ASK); its commands may have run on either node",
                        )
                        .with_source(error),
                        class: Classification::retry().ambiguous().server_fault(false),
                        reply: None,
                    });
                }
                if hops > inner.config.max_redirects {
                    topology.request_refresh();
                    return Err(AttemptError {
                        error: Error::new(
                            ErrorKind::Server,
                            Outcome::Failed,
                            format!("more than {} redirects", inner.config.max_redirects),
                        )
                        .with_source(error),
                        class: Classification::retry().server_fault(false),
                        reply: None,
                    });
                }
                target = match kind {
                    Redirect::Moved => Target::Moved(addr),
                    Redirect::Ask => Target::Asking(addr),
                };
                continue;
            }
            let pipelined = matches!(request, Request::Pipeline { .. });
            let failure = self.classify(error, node.as_deref(), pipelined);
            if is_overload_refusal(&failure.attempt) {
                inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = &throttle {
                    t.refused.fetch_add(1, Ordering::Relaxed);
                    t.throttle.refused_at(Instant::now());
                }
            }
            if let Some(p) = permit {
                if failure.attempt.class.server_fault {
                    p.failure();
                } else {
                    drop(p);
                }
            }
            // Not sent at all (no connection to the node): wait for it, in this attempt.
            if failure.not_sent && hops < inner.config.max_redirects {
                hops += 1;
                target = Target::Slot;
                continue;
            }
            return Err(failure.attempt);
        }
    }

    /// The master of `slot`, waiting (until `deadline`) while it is known to be down.
    async fn live_master(
        &self,
        slot: u16,
        deadline: Option<Instant>,
    ) -> Result<Option<Arc<str>>, AttemptError> {
        let topology = &self.inner.topology;
        let mut epochs = topology.epoch.subscribe();
        let mut waited = false;
        loop {
            match topology.master_of(slot) {
                Some(node) if topology.is_down(&node) => {}
                other => return Ok(other),
            }
            if !waited {
                waited = true;
                self.inner.stats.waits.fetch_add(1, Ordering::Relaxed);
            }
            topology.request_refresh();
            let changed = epochs.changed();
            let timed_out = match deadline {
                Some(d) => tokio::time::timeout_at(d, changed).await.is_err(),
                None => changed.await.is_err(),
            };
            if timed_out {
                return Err(AttemptError {
                    error: Error::new(
                        ErrorKind::Unavailable,
                        Outcome::Failed,
                        format!(
                            "the node of slot {slot} stayed down and no other took over before the deadline"
                        ),
                    ),
                    class: Classification::fail(),
                    reply: None,
                });
            }
        }
    }

    /// The adaptive throttle of `node`, created on first use.
    fn node_throttle(&self, node: &str) -> Option<Arc<NodeThrottle>> {
        let config = self.inner.config.adaptive_throttle.as_ref()?;
        if let Some(t) = read(&self.inner.throttles).get(node) {
            return Some(t.clone());
        }
        let mut throttles = self
            .inner
            .throttles
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = throttles.get(node) {
            return Some(t.clone());
        }
        let t = Arc::new(NodeThrottle {
            // Validated with the configuration: cannot fail here.
            throttle: TotalsThrottle::new(config.clone()).ok()?,
            attempts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        throttles.insert(node.to_owned(), t.clone());
        Some(t)
    }

    fn node_breaker(&self, node: &str) -> Option<CircuitBreaker> {
        let config = self.inner.config.breaker.as_ref()?;
        if let Some(b) = read(&self.inner.breakers).get(node) {
            return Some(b.clone());
        }
        let mut breakers = self
            .inner
            .breakers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(b) = breakers.get(node) {
            return Some(b.clone());
        }
        let b = CircuitBreaker::new(BreakerConfig {
            name: format!("{}:{node}", config.name).into(),
            ..config.clone()
        })
        .ok()?;
        breakers.insert(node.to_owned(), b.clone());
        Some(b)
    }

    /// Sends on the client's own connection to `addr`; `ASKING` first when `asking`.
    async fn send_to_node(
        &self,
        addr: &str,
        request: Request<'_>,
        asking: bool,
    ) -> RedisResult<Reply> {
        let (mut conn, id) = self.inner.nodes.get(addr).await?;
        let result = match (request, asking) {
            (Request::Cmd(cmd), false) => conn.req_packed_command(cmd).await.map(Reply::One),
            (Request::Cmd(cmd), true) => {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command(cmd.clone());
                let mut replies = conn.req_packed_commands(&pipe, 1, 1).await?;
                Ok(Reply::One(replies.pop().unwrap_or(Value::Nil)))
            }
            (
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                },
                _,
            ) => conn
                .req_packed_commands(pipeline, offset, count)
                .await
                .map(Reply::Many),
        };
        if let Err(e) = &result
            && ((e.is_io_error() && !e.is_timeout()) || e.kind() == redis::ErrorKind::Parse)
        {
            self.inner.nodes.forget(addr, id);
        }
        result
    }

    /// Sends through redis-rs's cluster connection, routed by redis-rs: for calls whose slot
    /// the client cannot name (keyless commands, an empty slot map).
    async fn send_to(
        &self,
        mut conn: ClusterConnection,
        request: Request<'_>,
    ) -> RedisResult<Reply> {
        match request {
            Request::Cmd(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
            Request::Pipeline {
                pipeline,
                offset,
                count,
            } => conn
                .req_packed_commands(pipeline, offset, count)
                .await
                .map(Reply::Many),
        }
    }
}

fn policy_parts<'a>(
    config: &ClusterConfig,
    budget: Option<&'a RetryBudget>,
    deadline: Duration,
) -> PolicyParts<'a> {
    PolicyParts {
        name: "resilient_redis_cluster",
        max_attempts: config.max_attempts,
        backoff: config.retry_backoff,
        deadline,
        // The breakers are per node (checked in the attempt), so the policy gets none.
        cut_attempts: true,
        budget,
        breaker: None,
        rng_seed: config.rng_seed,
    }
}

impl ConnectionLike for ClusterClient {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.send(cmd).await.map_err(Error::into_redis) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self
                .execute(Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                })
                .await
            {
                Ok(reply) => Ok(reply.into_values()),
                Err(e) => Err(e.into_redis()),
            }
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

impl fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterClient")
            .field(
                "seeds",
                &self
                    .inner
                    .config
                    .urls
                    .iter()
                    .map(|u| crate::redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("stats", &self.stats())
            .finish()
    }
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::slots::split_addr;
    use super::*;

    #[test]
    fn redirects_are_read_from_errors() {
        let error = |text: &str| {
            redis::parse_redis_value(text.as_bytes())
                .unwrap()
                .extract_error()
                .unwrap_err()
        };
        assert_eq!(
            redirect_of(&error("-MOVED 3999 127.0.0.1:7001\r\n")),
            Some((Redirect::Moved, "127.0.0.1:7001".to_owned(), 3999))
        );
        assert_eq!(
            redirect_of(&error("-ASK 12 127.0.0.1:7002\r\n")),
            Some((Redirect::Ask, "127.0.0.1:7002".to_owned(), 12))
        );
        assert_eq!(redirect_of(&error("-TRYAGAIN later\r\n")), None);
        assert_eq!(split_addr("127.0.0.1:7001"), Some(("127.0.0.1", 7001)));
        assert_eq!(split_addr("[::1]:7001"), Some(("::1", 7001)));
        assert_eq!(split_addr("nope"), None);
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ClusterClient>();
        check::<ClusterConfig>();
        check::<ClusterHealth>();
    }
}
