//! [`ClusterClient`]: the resilient client for Redis Cluster, on redis-rs's async cluster
//! connection with the policy core on top.
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
//! 4. redis-rs routes and sends. `MOVED` and `ASK` are followed at once inside the attempt: no
//!    backoff, no retry budget (`ASK` is sent as `ASKING` + the command in one pipeline, so no
//!    other request can slip between them on the shared connection).
//! 5. Failures are classified as for the standalone client: `TRYAGAIN`, `CLUSTERDOWN`,
//!    `READONLY`, `LOADING`, ... are retried with jittered backoff within the budget and the
//!    deadline; a connection lost mid-flight is ambiguous and retried only for commands safe to
//!    repeat; `CROSSSLOT` and other replies come back unchanged, never retried.
//!
//! # redis-rs's own retries are off
//! redis-rs's cluster connection retries internally (16 times by default) and re-sends a request
//! after an I/O error *whatever the command*: an `INCR` whose connection broke after it was
//! written is sent again, and the caller never learns that it may have run twice. Its waits
//! (at least 1.28 s after `TRYAGAIN`/`CLUSTERDOWN`) are not bounded by a deadline either. The
//! client therefore builds it with `retries(0)`, which makes every failure, redirects included,
//! come back to this module; redirects are followed here (they are not failures) and everything
//! else goes through the same policy as the standalone client. Its overall response timeout is
//! off: the call's deadline bounds each call instead.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::{RngExt, SeedableRng, rngs::SmallRng};
use redis::{
    Arg, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::ConnectionLike,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};
use resilience::{
    Attempt, Backoff, BreakerConfig, CircuitBreaker, Classification, Idempotency, Jitter,
    RetryBudget, RetryBudgetConfig, RetryConfig, RetryPolicy,
};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::{
    ClientConfig,
    commands::{self, CommandSafety},
    config::ErrorRule,
    error::{Error, ErrorKind, Outcome},
    retry::{AttemptError, classify_reply, connection_lost, give_up_error},
};

const SLOTS: u16 = 16384;

/// Configuration of a [`ClusterClient`].
///
/// # Default
/// | setting | default | why |
/// |---|---|---|
/// | `urls` | `redis://127.0.0.1:7000` | seed nodes; one reachable seed is enough |
/// | `connect_timeout` | 1 s | |
/// | `response_timeout` | 1 s | a reply later than this fails the attempt as ambiguous |
/// | `deadline` | 5 s | total per call: covers a failover (about 2 to 3 s with `cluster-node-timeout 1000`) |
/// | `max_attempts` | 20 | attempts that reach a node; `CLUSTERDOWN` during a failover lasts about 1 s and is retried every 10 to 250 ms |
/// | `retry_backoff` | exponential 10 ms x2 up to 250 ms, full jitter | |
/// | `max_redirects` | 5 | `MOVED`/`ASK` hops within one attempt before it counts as a retryable failure |
/// | `budget` | 10 % of successes, 10 retries/s floor, 1000 tokens | as [`ClientConfig`] |
/// | `breaker` | per node: opens when 50 % of the node's last 1000 attempts within 10 s (at least 50) failed for the node's fault; open 2 s | as [`ClientConfig`], one per node |
/// | `min_refresh_interval` | 100 ms | at most ~10 slot-map refreshes per second per client, even while a node is down |
/// | `refresh_jitter` | 100 ms | each refresh waits a further random 0 to 100 ms, so clients do not refresh in step after a failover |
/// | `refresh_interval` | 10 s | background refresh when nothing happens |
/// | `tcp_keepalive` | 10 s | |
/// | `throttle_delay` | 100 ms | |
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Seed nodes: `redis://[[user]:password@]host:port`.
    pub urls: Vec<String>,
    /// Time allowed to open one connection to a node.
    pub connect_timeout: Duration,
    /// Time to wait for one reply before the attempt fails (ambiguous: it may have run).
    pub response_timeout: Duration,
    /// Total time for one call, waits, redirects and retries included.
    pub deadline: Duration,
    /// Attempts that reach a node, the first included. Waiting for a node and following a
    /// redirect are not attempts.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub retry_backoff: Backoff,
    /// Redirects (`MOVED`, `ASK`) followed within one attempt.
    pub max_redirects: u32,
    /// The retry budget shared by every clone of the client; `None` disables it.
    pub budget: Option<RetryBudgetConfig>,
    /// The circuit breaker of each node (one per node address); `None` disables them.
    pub breaker: Option<BreakerConfig>,
    /// Minimum time between two slot-map refreshes.
    pub min_refresh_interval: Duration,
    /// Random extra delay, from zero to this, before each refresh.
    pub refresh_jitter: Duration,
    /// Refresh the slot map this often even when nothing suggests a change; `None` disables.
    pub refresh_interval: Option<Duration>,
    /// TCP keepalive idle time; `None` leaves the system default.
    pub tcp_keepalive: Option<Duration>,
    /// Minimum wait before retrying after a `THROTTLED` reply.
    pub throttle_delay: Duration,
    /// Extra rules for server error codes (see [`ClientConfig::error_rules`]).
    pub error_rules: HashMap<String, ErrorRule>,
    /// Seed for the jitter of retries and refreshes (deterministic tests); `None` seeds from
    /// the operating system.
    pub rng_seed: Option<u64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let client = ClientConfig::default();
        ClusterConfig {
            urls: vec!["redis://127.0.0.1:7000".to_owned()],
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
            max_attempts: 20,
            retry_backoff: Backoff::exponential(
                Duration::from_millis(10),
                2.0,
                Duration::from_millis(250),
            )
            .expect("valid constant backoff")
            .with_jitter(Jitter::Full),
            max_redirects: 5,
            budget: client.budget,
            breaker: client.breaker.map(|b| BreakerConfig {
                name: "resilient_redis_cluster".into(),
                ..b
            }),
            min_refresh_interval: Duration::from_millis(100),
            refresh_jitter: Duration::from_millis(100),
            refresh_interval: Some(Duration::from_secs(10)),
            tcp_keepalive: client.tcp_keepalive,
            throttle_delay: client.throttle_delay,
            error_rules: HashMap::new(),
            rng_seed: None,
        }
    }
}

impl ClusterConfig {
    /// The defaults with these seed URLs, checked.
    ///
    /// ```
    /// let config = resilient_redis::ClusterConfig::from_urls(&["redis://127.0.0.1:7000"])?;
    /// assert_eq!(config.max_redirects, 5);
    /// assert!(resilient_redis::ClusterConfig::from_urls(&[] as &[&str]).is_err());
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    pub fn from_urls<S: AsRef<str>>(urls: &[S]) -> Result<Self, Error> {
        let config = ClusterConfig {
            urls: urls.iter().map(|u| u.as_ref().to_owned()).collect(),
            ..ClusterConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), Error> {
        if self.urls.is_empty() {
            return Err(Error::config("urls: at least one seed node is needed"));
        }
        for url in &self.urls {
            ClientConfig {
                url: url.clone(),
                ..ClientConfig::default()
            }
            .connection_info()?;
        }
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(Error::config(format!("{name} must be greater than zero")))
            } else {
                Ok(())
            }
        };
        positive("connect_timeout", self.connect_timeout)?;
        positive("response_timeout", self.response_timeout)?;
        positive("deadline", self.deadline)?;
        positive("min_refresh_interval", self.min_refresh_interval)?;
        if let Some(d) = self.refresh_interval {
            positive("refresh_interval", d)?;
        }
        if let Some(d) = self.tcp_keepalive {
            positive("tcp_keepalive", d)?;
        }
        if self.max_attempts == 0 {
            return Err(Error::config("max_attempts must be at least 1"));
        }
        Ok(())
    }

    /// The settings the shared reply classification reads.
    fn reply_rules(&self) -> ClientConfig {
        ClientConfig {
            throttle_delay: self.throttle_delay,
            error_rules: self.error_rules.clone(),
            ..ClientConfig::default()
        }
    }
}

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
    conn: ClusterConnection,
    topology: Arc<Topology>,
    budget: Option<RetryBudget>,
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
    stats: Counters,
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
    ambiguous: AtomicU64,
    failed: AtomicU64,
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
    /// Calls that failed with an ambiguous outcome.
    pub ambiguous: u64,
    /// Calls that failed with a definite outcome.
    pub failed: u64,
    /// Slot-map refreshes done.
    pub refreshes: u64,
}

#[derive(Clone, Copy)]
enum Request<'a> {
    Cmd(&'a Cmd),
    Pipeline {
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    },
}

enum Reply {
    One(Value),
    Many(Vec<Value>),
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
        let client = redis::cluster::ClusterClientBuilder::new(config.urls.clone())
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
        let topology = Arc::new(Topology::new());
        let inner = Arc::new(Inner {
            rules: config.reply_rules(),
            config,
            conn,
            topology: topology.clone(),
            budget,
            breakers: Mutex::new(HashMap::new()),
            stats: Counters::default(),
        });
        if let Err(e) = refresh_once(&inner).await {
            tracing::warn!(error = %e, "first slot-map load failed; redis-rs routes meanwhile");
        }
        tokio::spawn(refresher(Arc::downgrade(&inner), topology, rng));
        let policy = build_policy(&inner.config, inner.budget.as_ref(), inner.config.deadline)?;
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
            policy: build_policy(&self.inner.config, self.inner.budget.as_ref(), deadline)?,
            ..self.clone()
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The retry budget, if enabled.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    /// The circuit breaker of the node at `addr` (`host:port`), once a call has used it.
    pub fn breaker(&self, addr: &str) -> Option<CircuitBreaker> {
        lock(&self.inner.breakers).get(addr).cloned()
    }

    /// The master of `slot` in the client's slot map, as `host:port`.
    pub fn master_for_slot(&self, slot: u16) -> Option<String> {
        self.inner.topology.master_of(slot)
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
            ambiguous: s.ambiguous.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            refreshes: self.inner.topology.refreshes.load(Ordering::Relaxed),
        }
    }

    /// Runs one command, with the client's error type. Error replies that are not retried come
    /// back as `Ok(Value::ServerError(..))`, as redis-rs does.
    pub async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        match self.execute(Request::Cmd(cmd)).await? {
            Reply::One(v) => Ok(v),
            Reply::Many(mut v) => Ok(v.pop().unwrap_or(Value::Nil)),
        }
    }

    /// Runs a pipeline (plain or atomic; all its keys in one slot) with the client's error type.
    pub async fn send_pipeline(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Error> {
        let (offset, count) = if pipeline.is_transaction() {
            (pipeline.len() + 1, 1)
        } else {
            (0, pipeline.len())
        };
        match self
            .execute(Request::Pipeline {
                pipeline,
                offset,
                count,
            })
            .await?
        {
            Reply::Many(v) => Ok(v),
            Reply::One(v) => Ok(vec![v]),
        }
    }

    async fn execute(&self, request: Request<'_>) -> Result<Reply, Error> {
        let stats = &self.inner.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let (safety, slot) = match request {
            Request::Cmd(cmd) => (commands::command_safety(cmd), command_slot(cmd)),
            Request::Pipeline { pipeline, .. } => (
                commands::pipeline_safety(pipeline),
                pipeline.cmd_iter().find_map(command_slot),
            ),
        };
        let safety = safety.map_err(|why| Error::new(ErrorKind::Refused, Outcome::Failed, why))?;
        if safety == CommandSafety::Blocking {
            return Err(Error::new(
                ErrorKind::Refused,
                Outcome::Failed,
                "blocking commands are not sent through ClusterClient: they would hold up every request to the node; use a dedicated connection",
            ));
        }
        let idempotency = match self.idempotent {
            Some(true) => Idempotency::Idempotent,
            Some(false) => Idempotency::NotIdempotent,
            None if safety.is_retry_safe() => Idempotency::Idempotent,
            None => Idempotency::NotIdempotent,
        };
        let retry_safe = idempotency == Idempotency::Idempotent;
        let result = self
            .policy
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
            });
        if let Err(e) = &result {
            let counter = if e.is_ambiguous() {
                &stats.ambiguous
            } else {
                &stats.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if e.is_ambiguous() {
                tracing::warn!(error = %e, "cluster call failed with an ambiguous outcome");
            }
        }
        result
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
                    Some(addr.clone())
                }
            };
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
                })?),
                None => None,
            };
            let result = self.send_to(request, &target).await;
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
                    });
                }
                target = match kind {
                    Redirect::Moved => Target::Moved(addr),
                    Redirect::Ask => Target::Asking(addr),
                };
                continue;
            }
            let failure = self.classify(error, node.as_deref());
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
    ) -> Result<Option<String>, AttemptError> {
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
                });
            }
        }
    }

    fn node_breaker(&self, node: &str) -> Option<CircuitBreaker> {
        let config = self.inner.config.breaker.as_ref()?;
        let mut breakers = lock(&self.inner.breakers);
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

    async fn send_to(&self, request: Request<'_>, target: &Target) -> RedisResult<Reply> {
        let mut conn = self.inner.conn.clone();
        let by_address = |addr: &str| -> RedisResult<SingleNodeRoutingInfo> {
            let (host, port) = split_addr(addr).ok_or_else(|| {
                RedisError::from((
                    redis::ErrorKind::Client,
                    "bad node address",
                    addr.to_owned(),
                ))
            })?;
            Ok(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            })
        };
        match (request, target) {
            (Request::Cmd(cmd), Target::Slot) => conn.req_packed_command(cmd).await.map(Reply::One),
            (
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                },
                Target::Slot,
            ) => conn
                .req_packed_commands(pipeline, offset, count)
                .await
                .map(Reply::Many),
            (Request::Cmd(cmd), Target::Moved(addr)) => conn
                .route_command(cmd.clone(), RoutingInfo::SingleNode(by_address(addr)?))
                .await
                .map(Reply::One),
            (Request::Cmd(cmd), Target::Asking(addr)) => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING").add_command(cmd.clone());
                let mut replies = conn.route_pipeline(asking, 1, 1, by_address(addr)?).await?;
                Ok(Reply::One(replies.pop().unwrap_or(Value::Nil)))
            }
            (
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                },
                Target::Moved(addr) | Target::Asking(addr),
            ) => conn
                .route_pipeline(pipeline.clone(), offset, count, by_address(addr)?)
                .await
                .map(Reply::Many),
        }
    }

    /// Turns retryable error replies into errors; every other reply goes back as is.
    fn check_reply(&self, reply: Reply, retry_safe: bool) -> Result<Reply, RedisError> {
        match &reply {
            Reply::One(Value::ServerError(err)) if self.reply_is_retryable(err) => {
                Err(RedisError::from(err.clone()))
            }
            Reply::Many(values) if retry_safe => {
                match values.iter().find_map(|v| match v {
                    Value::ServerError(err) if self.reply_is_retryable(err) => Some(err),
                    _ => None,
                }) {
                    Some(err) => Err(RedisError::from(err.clone())),
                    None => Ok(reply),
                }
            }
            _ => Ok(reply),
        }
    }

    fn reply_is_retryable(&self, err: &redis::ServerError) -> bool {
        matches!(err.code(), "MOVED" | "ASK") || classify_reply(&self.inner.rules, err).is_some()
    }

    /// What a failed send means.
    fn classify(&self, error: RedisError, node: Option<&str>) -> Failure {
        let topology = &self.inner.topology;
        let code = error.code().map(str::to_owned);
        if let Some(code) = code.as_deref() {
            let class = match code {
                // The cluster is reconfiguring: not the node's fault.
                "TRYAGAIN" | "CLUSTERDOWN" => Some(Classification::retry().server_fault(false)),
                "READONLY" => {
                    topology.request_refresh();
                    Some(Classification::retry().server_fault(false))
                }
                _ => match &error.clone().try_into() {
                    Ok(server) => classify_reply(&self.inner.rules, server).map(|(c, _)| c),
                    Err(_) => None,
                },
            };
            let kind = match code {
                "THROTTLED" => ErrorKind::Throttled,
                _ => ErrorKind::Server,
            };
            return Failure::sent(AttemptError {
                error: Error::new(kind, Outcome::Failed, format!("server replied {code}"))
                    .with_source(error),
                class: class.unwrap_or_else(Classification::fail),
            });
        }
        if error.kind() == redis::ErrorKind::ClusterConnectionNotFound
            || error.is_connection_refusal()
        {
            // Nothing was written: the node has no live connection.
            if let Some(n) = node {
                topology.mark_down(n);
            }
            topology.request_refresh();
            return Failure {
                not_sent: true,
                attempt: AttemptError {
                    error: Error::new(
                        ErrorKind::Unavailable,
                        Outcome::Failed,
                        "no connection to the node of the slot",
                    )
                    .with_source(error),
                    class: Classification::retry(),
                },
            };
        }
        if error.is_io_error() || error.kind() == redis::ErrorKind::Parse {
            if !error.is_timeout()
                && let Some(n) = node
            {
                topology.mark_down(n);
            }
            topology.request_refresh();
            return Failure::sent(connection_lost(
                "the connection to the node broke while the request was in flight",
                Some(error),
            ));
        }
        // A client-side error from redis-rs (never reached the wire).
        Failure::sent(AttemptError {
            error: Error::new(ErrorKind::Server, Outcome::Failed, "request failed")
                .with_source(error),
            class: Classification::fail(),
        })
    }

    /// The health of the cluster: `CLUSTER INFO` and `CLUSTER NODES` from one node, and the
    /// client's breakers.
    pub async fn health(&self) -> ClusterHealth {
        let conn = self.inner.conn.clone();
        let query = |cmd: Cmd| {
            let mut conn = conn.clone();
            async move {
                tokio::time::timeout(
                    self.inner.config.response_timeout * 2,
                    conn.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)),
                )
                .await
                .map_err(|_| "timed out".to_owned())?
                .and_then(|v| redis::from_redis_value::<String>(v).map_err(RedisError::from))
                .map_err(|e| e.to_string())
            }
        };
        let mut health = ClusterHealth {
            healthy: false,
            reason: None,
            cluster_state: None,
            nodes: Vec::new(),
        };
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        match query(info).await {
            Ok(text) => {
                health.cluster_state =
                    crate::health::info_field(&text, "cluster_state").map(str::to_owned)
            }
            Err(e) => health.reason = Some(format!("CLUSTER INFO: {e}")),
        }
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        match query(nodes).await {
            Ok(text) => health.nodes = parse_cluster_nodes(&text),
            Err(e) => {
                health.reason.get_or_insert(format!("CLUSTER NODES: {e}"));
            }
        }
        for node in &mut health.nodes {
            node.breaker = match self.breaker(&node.addr) {
                Some(b) => b.state().as_str().to_owned(),
                None if self.inner.config.breaker.is_some() => "closed".into(),
                None => "disabled".into(),
            };
        }
        if health.reason.is_none() {
            if health.cluster_state.as_deref() != Some("ok") {
                health.reason = Some(format!(
                    "cluster_state is {}",
                    health.cluster_state.as_deref().unwrap_or("unknown")
                ));
            } else if let Some(n) = health.nodes.iter().find(|n| n.breaker == "open") {
                health.reason = Some(format!("circuit breaker of {} is open", n.addr));
            } else if let Some(n) = health.nodes.iter().find(|n| n.failing()) {
                health.reason = Some(format!("node {} is failing", n.addr));
            }
        }
        health.healthy = health.reason.is_none();
        health
    }
}

/// What one failed send means, and whether anything was written.
struct Failure {
    attempt: AttemptError,
    not_sent: bool,
}

impl Failure {
    fn sent(attempt: AttemptError) -> Failure {
        Failure {
            attempt,
            not_sent: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Redirect {
    Moved,
    Ask,
}

/// The redirect in an error: kind, node address, slot.
fn redirect_of(error: &RedisError) -> Option<(Redirect, String, u16)> {
    let kind = match error.code()? {
        "MOVED" => Redirect::Moved,
        "ASK" => Redirect::Ask,
        _ => return None,
    };
    let (addr, slot) = error.redirect_node()?;
    Some((kind, addr.to_owned(), slot))
}

fn build_policy(
    config: &ClusterConfig,
    budget: Option<&RetryBudget>,
    deadline: Duration,
) -> Result<RetryPolicy, Error> {
    let retry = RetryConfig {
        max_attempts: config.max_attempts,
        backoff: config.retry_backoff,
        deadline: Some(deadline),
        attempt_timeout: None,
        max_hint: Duration::from_secs(5),
        reject_hint_above: Duration::from_secs(300),
        name: "resilient_redis_cluster".into(),
        // (lead) New field in resilience: the policy cuts attempts at the deadline.
        cut_attempts: true,
    };
    let mut policy = RetryPolicy::new(retry).map_err(|e| Error::config(e.to_string()))?;
    if let Some(b) = budget {
        policy = policy.with_budget(b.clone());
    }
    if let Some(seed) = config.rng_seed {
        policy = policy.with_rng_seed(seed);
    }
    Ok(policy)
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
                Ok(Reply::Many(v)) => Ok(v),
                Ok(Reply::One(v)) => Ok(vec![v]),
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
            .field("seeds", &self.inner.config.urls)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Slot map and topology refresh

/// One row of `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    start: u16,
    end: u16,
    master: String,
}

/// The client's view of the cluster: slot owners, nodes known to be down, and the refresher's
/// wake-up.
struct Topology {
    /// Sorted, non-overlapping ranges.
    slots: RwLock<Vec<SlotRange>>,
    /// Nodes that failed (connection lost or refused), until they answer again or leave the map.
    down: Mutex<HashSet<String>>,
    /// Bumped on every change of `slots` or `down`; waiters watch it.
    epoch: watch::Sender<u64>,
    wake: Notify,
    closed: AtomicBool,
    refreshes: AtomicU64,
}

impl Topology {
    fn new() -> Topology {
        Topology {
            slots: RwLock::new(Vec::new()),
            down: Mutex::new(HashSet::new()),
            epoch: watch::Sender::new(0),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            refreshes: AtomicU64::new(0),
        }
    }

    fn master_of(&self, slot: u16) -> Option<String> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        range_of(&slots, slot).map(|r| r.master.clone())
    }

    fn is_down(&self, node: &str) -> bool {
        lock(&self.down).contains(node)
    }

    fn mark_down(&self, node: &str) {
        if lock(&self.down).insert(node.to_owned()) {
            tracing::info!(
                node,
                "cluster node unreachable; its slots wait for a failover or its return"
            );
            self.bump();
        }
    }

    fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// A `MOVED` says where one slot lives now: use it before the next refresh.
    fn note_moved(&self, slot: u16, addr: &str) {
        {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            if range_of(&slots, slot).is_some_and(|r| r.master == addr) {
                return;
            }
            set_slot_owner(&mut slots, slot, addr);
        }
        self.bump();
        self.request_refresh();
    }

    fn bump(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Installs a fresh map; forgets down nodes that no longer own slots.
    fn install(&self, fresh: Vec<SlotRange>) {
        let changed = {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            let changed = *slots != fresh;
            if changed {
                *slots = fresh;
            }
            changed
        };
        let forgot = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            let mut down = lock(&self.down);
            let before = down.len();
            down.retain(|n| slots.iter().any(|r| &r.master == n));
            before != down.len()
        };
        if changed {
            tracing::info!("cluster slot map changed");
        }
        if changed || forgot {
            self.bump();
        }
    }

    fn mark_up(&self, node: &str) {
        if lock(&self.down).remove(node) {
            tracing::info!(node, "cluster node answers again");
            self.bump();
        }
    }

    fn down_nodes(&self) -> Vec<String> {
        lock(&self.down).iter().cloned().collect()
    }
}

fn range_of(slots: &[SlotRange], slot: u16) -> Option<&SlotRange> {
    let i = slots.partition_point(|r| r.end < slot);
    slots.get(i).filter(|r| r.start <= slot && slot <= r.end)
}

/// Gives `slot` to `addr`, splitting its range.
fn set_slot_owner(slots: &mut Vec<SlotRange>, slot: u16, addr: &str) {
    let i = slots.partition_point(|r| r.end < slot);
    let new = SlotRange {
        start: slot,
        end: slot,
        master: addr.to_owned(),
    };
    match slots.get(i).cloned() {
        Some(r) if r.start <= slot && slot <= r.end => {
            let mut parts = Vec::with_capacity(3);
            if r.start < slot {
                parts.push(SlotRange {
                    end: slot - 1,
                    ..r.clone()
                });
            }
            parts.push(new);
            if slot < r.end {
                parts.push(SlotRange {
                    start: slot + 1,
                    ..r
                });
            }
            slots.splice(i..=i, parts);
        }
        _ => slots.insert(i, new),
    }
}

/// When the next refresh may run: not before `min_interval` after the last one, plus a random
/// share (`jitter_fraction` in 0..=1) of `jitter`.
fn next_refresh_at(
    last: Option<Instant>,
    now: Instant,
    min_interval: Duration,
    jitter: Duration,
    jitter_fraction: f64,
) -> Instant {
    let earliest = last.map_or(now, |l| (l + min_interval).max(now));
    earliest + jitter.mul_f64(jitter_fraction.clamp(0.0, 1.0))
}

/// The background task: refreshes on request (rate-limited, jittered), periodically, and keeps
/// refreshing and probing while a node is down.
async fn refresher(inner: Weak<Inner>, topology: Arc<Topology>, mut rng: SmallRng) {
    let mut last: Option<Instant> = Some(Instant::now());
    loop {
        let (periodic, min_interval, jitter) = match inner.upgrade() {
            Some(i) => (
                i.config.refresh_interval,
                i.config.min_refresh_interval,
                i.config.refresh_jitter,
            ),
            None => return,
        };
        let urgent = !topology.down_nodes().is_empty();
        if !urgent {
            let notified = topology.wake.notified();
            match periodic {
                Some(p) => {
                    let _ = tokio::time::timeout(p, notified).await;
                }
                None => notified.await,
            }
        }
        if topology.closed.load(Ordering::Relaxed) {
            return;
        }
        let at = next_refresh_at(
            last,
            Instant::now(),
            min_interval,
            jitter,
            rng.random::<f64>(),
        );
        tokio::time::sleep_until(at).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        last = Some(Instant::now());
        if let Err(e) = refresh_once(&inner).await {
            tracing::debug!(error = %e, "cluster slot-map refresh failed");
        }
        for node in topology.down_nodes() {
            if probe(&inner, &node).await {
                topology.mark_up(&node);
            }
        }
    }
}

/// One `CLUSTER SLOTS` from any node.
async fn refresh_once(inner: &Inner) -> Result<(), String> {
    let mut conn = inner.conn.clone();
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let value = tokio::time::timeout(
        inner.config.response_timeout,
        conn.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)),
    )
    .await
    .map_err(|_| "CLUSTER SLOTS timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let slots = parse_cluster_slots(&value).ok_or("unexpected CLUSTER SLOTS reply")?;
    inner.topology.refreshes.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("resilient_redis_cluster_refreshes_total").increment(1);
    inner.topology.install(slots);
    Ok(())
}

/// Whether the node answers PING on the cluster connection.
async fn probe(inner: &Inner, node: &str) -> bool {
    let Some((host, port)) = split_addr(node) else {
        return false;
    };
    let mut conn = inner.conn.clone();
    let ping = conn.route_command(
        redis::cmd("PING"),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        }),
    );
    matches!(
        tokio::time::timeout(inner.config.response_timeout, ping).await,
        Ok(Ok(Value::SimpleString(_)
            | Value::Okay
            | Value::BulkString(_)))
    )
}

fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[').trim_end_matches(']'),
        port.parse().ok()?,
    ))
}

fn parse_cluster_slots(value: &Value) -> Option<Vec<SlotRange>> {
    let Value::Array(rows) = value else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut ranges = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Array(items) = row else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), Value::Array(master), ..] = items.as_slice()
        else {
            return None;
        };
        let host = master.first().and_then(text)?;
        let Some(Value::Int(port)) = master.get(1) else {
            return None;
        };
        ranges.push(SlotRange {
            start: u16::try_from(*start).ok()?,
            end: u16::try_from(*end).ok()?,
            master: format!("{host}:{port}"),
        });
    }
    ranges.sort_by_key(|r| r.start);
    Some(ranges)
}

// ---------------------------------------------------------------------------------------------
// Key slots

/// CRC16-XMODEM, as Redis Cluster uses for key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key (honouring `{hash tags}`).
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// The slot of a command's keys when they all share one slot; `None` for keyless commands,
/// keys in several slots, or commands whose key position is not known here. Used to pick the
/// node's breaker and to wait for a down node; redis-rs does its own routing.
fn command_slot(cmd: &Cmd) -> Option<u16> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let keys: Vec<&[u8]> = match name.as_slice() {
        b"PING" | b"ECHO" | b"INFO" | b"TIME" | b"DBSIZE" | b"CLUSTER" | b"CONFIG" | b"SCRIPT"
        | b"FUNCTION" | b"FLUSHALL" | b"FLUSHDB" | b"KEYS" | b"SCAN" | b"RANDOMKEY" | b"CLIENT"
        | b"COMMAND" | b"LASTSAVE" | b"ROLE" | b"WAIT" | b"PUBLISH" | b"ACL" | b"MEMORY"
        | b"LATENCY" | b"SLOWLOG" | b"DEBUG" | b"MIGRATE" | b"READONLY" | b"READWRITE"
        | b"ASKING" | b"AUTH" | b"HELLO" | b"SPUBLISH" => return None,
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            args.get(3..3 + n)?.to_vec()
        }
        b"MGET" | b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"SINTER" | b"SUNION" | b"SDIFF"
        | b"PFCOUNT" => args[1..].to_vec(),
        b"MSET" | b"MSETNX" => args[1..].iter().step_by(2).copied().collect(),
        b"OBJECT" | b"XINFO" | b"XGROUP" | b"BITOP" => vec![*args.get(2)?],
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            let rest = &args[at + 1..];
            rest[..rest.len() / 2].to_vec()
        }
        _ => vec![*args.get(1)?],
    };
    let mut slots = keys.iter().map(|k| key_slot(k));
    let first = slots.next()?;
    slots.all(|s| s == first).then_some(first)
}

// ---------------------------------------------------------------------------------------------
// Health

/// The health of a cluster, as [`ClusterClient::health`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterHealth {
    /// `true` when `cluster_state` is `ok`, no node is flagged failing and no breaker is open.
    pub healthy: bool,
    /// Why the cluster is not healthy, when it is not.
    pub reason: Option<String>,
    /// `cluster_state` from `CLUSTER INFO` (`ok` or `fail`).
    pub cluster_state: Option<String>,
    /// Every node, from `CLUSTER NODES`.
    pub nodes: Vec<ClusterNodeHealth>,
}

/// One node of [`ClusterHealth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeHealth {
    /// Node id.
    pub id: String,
    /// `host:port` for clients.
    pub addr: String,
    /// `master` or `replica`.
    pub role: String,
    /// The flags of `CLUSTER NODES` (`myself`, `master`, `slave`, `fail?`, `fail`, ...).
    pub flags: Vec<String>,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// `connected` or `disconnected` (the cluster bus link, as the answering node sees it).
    pub link_state: String,
    /// Number of slots the node serves.
    pub slots: u32,
    /// The client's circuit breaker for this node (`closed`, `open`, `half_open`, `disabled`).
    pub breaker: String,
}

impl ClusterNodeHealth {
    /// Whether the node is flagged failing (`fail` or `fail?`).
    pub fn failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNodeHealth> {
    let mut nodes: Vec<ClusterNodeHealth> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split(['@', ',']).next().unwrap_or(f[1]).to_owned();
            let flags: Vec<String> = f[2].split(',').map(str::to_owned).collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                        (Ok(a), Ok(b)) if b >= a => b - a + 1,
                        _ => 0,
                    },
                    None => u32::from(s.parse::<u32>().is_ok()),
                })
                .sum();
            Some(ClusterNodeHealth {
                id: f[0].to_owned(),
                addr,
                role: if flags.iter().any(|x| x == "master") {
                    "master".into()
                } else {
                    "replica".into()
                },
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                flags,
                link_state: f[7].to_owned(),
                slots,
                breaker: String::new(),
            })
        })
        .collect();
    nodes.sort_by(|a, b| b.role.cmp(&a.role).reverse().then(a.addr.cmp(&b.addr)));
    nodes
}

impl fmt::Display for ClusterHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "healthy:       {}",
            if self.healthy { "yes" } else { "no" }
        )?;
        if let Some(r) = &self.reason {
            writeln!(f, "reason:        {r}")?;
        }
        writeln!(
            f,
            "cluster_state: {}",
            self.cluster_state.as_deref().unwrap_or("-")
        )?;
        write!(f, "nodes:         {}", self.nodes.len())?;
        for n in &self.nodes {
            write!(
                f,
                "\n  {:<21} {:<7} slots {:>5}  link {:<12} breaker {:<9} flags {}",
                n.addr,
                n.role,
                n.slots,
                n.link_state,
                n.breaker,
                n.flags.join(",")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{a}"), 15495);
        assert_eq!(key_slot(b"{a}:7"), 15495);
        // An empty tag hashes the whole key.
        assert_eq!(key_slot(b"{}foo"), crc16(b"{}foo") % SLOTS);
    }

    #[test]
    fn command_slot_finds_the_key() {
        let get = redis::cmd("GET").arg("foo").clone();
        assert_eq!(command_slot(&get), Some(12182));
        assert_eq!(command_slot(redis::cmd("PING").arg("x")), None);
        let same = redis::cmd("MGET").arg("{a}1").arg("{a}2").clone();
        assert_eq!(command_slot(&same), Some(15495));
        let split = redis::cmd("MGET").arg("foo").arg("bar").clone();
        assert_eq!(command_slot(&split), None);
        let eval = redis::cmd("EVAL").arg("return 1").arg(1).arg("bar").clone();
        assert_eq!(command_slot(&eval), Some(5061));
        let xread = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("foo")
            .arg("0")
            .clone();
        assert_eq!(command_slot(&xread), Some(12182));
    }

    #[test]
    fn slot_map_parses_and_follows_moved() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
        ]);
        let mut slots = parse_cluster_slots(&reply).unwrap();
        assert_eq!(slots[0].master, "127.0.0.1:7000");
        assert_eq!(range_of(&slots, 5460).unwrap().master, "127.0.0.1:7000");
        assert_eq!(range_of(&slots, 5461).unwrap().master, "127.0.0.1:7001");
        set_slot_owner(&mut slots, 6000, "127.0.0.1:7002");
        let owners: Vec<(u16, u16, &str)> = slots
            .iter()
            .map(|r| (r.start, r.end, r.master.as_str()))
            .collect();
        assert_eq!(
            owners,
            vec![
                (0, 5460, "127.0.0.1:7000"),
                (5461, 5999, "127.0.0.1:7001"),
                (6000, 6000, "127.0.0.1:7002"),
                (6001, 16383, "127.0.0.1:7001"),
            ]
        );
        assert!(parse_cluster_slots(&Value::Nil).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_are_rate_limited_and_jittered() {
        let now = Instant::now();
        let min = Duration::from_millis(100);
        let jitter = Duration::from_millis(100);
        assert_eq!(next_refresh_at(None, now, min, jitter, 0.0), now);
        let last = now - Duration::from_millis(30);
        assert_eq!(
            next_refresh_at(Some(last), now, min, jitter, 0.0),
            now + Duration::from_millis(70)
        );
        assert_eq!(
            next_refresh_at(Some(last), now, min, jitter, 0.5),
            now + Duration::from_millis(120)
        );
        let long_ago = now - Duration::from_secs(1);
        assert_eq!(
            next_refresh_at(Some(long_ago), now, min, jitter, 1.0),
            now + jitter
        );
        // The same seed gives the same jitter sequence.
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..4)
                .map(|_| next_refresh_at(None, now, min, jitter, rng.random::<f64>()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn cluster_nodes_are_parsed() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238315232 5 disconnected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        let m = nodes.iter().find(|n| n.addr == "127.0.0.1:30002").unwrap();
        assert_eq!((m.role.as_str(), m.slots), ("master", 5462));
        let me = nodes.iter().find(|n| n.addr == "127.0.0.1:30001").unwrap();
        assert_eq!(me.slots, 5461);
        let r = nodes.iter().find(|n| n.addr == "127.0.0.1:30004").unwrap();
        assert_eq!(r.role, "replica");
        assert_eq!(r.master_id.as_deref(), Some("e7d1"));
        assert!(nodes.iter().any(|n| n.failing()));
    }

    #[test]
    fn config_is_validated() {
        assert!(ClusterConfig::from_urls(&["redis://127.0.0.1:7000"]).is_ok());
        let err = ClusterConfig::from_urls(&["http://x"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        let c = ClusterConfig {
            max_attempts: 0,
            ..ClusterConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_attempts")
        );
        let c = ClusterConfig {
            min_refresh_interval: Duration::ZERO,
            ..ClusterConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("min_refresh")
        );
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ClusterClient>();
        check::<ClusterConfig>();
        check::<ClusterHealth>();
    }
}
