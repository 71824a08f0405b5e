//! [`Client`]: the handle callers hold, and its shared state. The request path is in
//! [`call`], with the slow paths beside it: a late reply ([`late_reply`]), blocking commands
//! ([`blocking`]); the response-window timer is [`timer`]'s, the counters [`stats`]', what the
//! sampled gauges show [`sample`]'s.

mod admit;
mod atomic;
mod blocking;
mod call;
mod cluster;
mod durable;
mod late_reply;
mod sample;
mod stats;
mod timer;
mod transaction;

use std::{
    pin::Pin,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use rand::{SeedableRng, rngs::SmallRng};
use redis::{Cmd, Pipeline, RedisFuture, Value, aio::ConnectionLike};
use resilience::{CircuitBreaker, RetryBudget, RetryPolicy, TotalsThrottle};
use tokio::time::{Instant, Sleep};

use crate::{
    config::{ClientConfig, Durability},
    connection::{Lease, Pool},
    error::Error,
    observe::{self, Operations},
    replies::Deployment,
    request::{Reply, Request},
    retry::{PolicyParts, build_policy},
    routing::{Node, Router, cluster::ClusterRouter},
};
pub use stats::ClientStats;
use stats::Counters;
pub use transaction::Transaction;

/// A Redis client that survives dropped connections, restarts, stalls and throttling, and never
/// reports an ambiguous write as a plain failure.
///
/// `Client` is cheap to clone (clones share connections, retry budget and circuit breaker) and
/// implements [`redis::aio::ConnectionLike`], so every [`redis::AsyncCommands`] method,
/// [`redis::pipe()`] (plain and atomic) and [`redis::Script`] work unchanged.
///
/// # Behavior
/// - A call waits (up to its deadline) while the connection is being re-established, then is sent
///   once: waiting costs the server nothing and spends no retry budget.
/// - A reply that is late (past `response_timeout`) is not re-sent: the client asks a fresh
///   connection whether the server answers. A stalled server is waited for; a dead connection is
///   replaced, and the call is retried if it is safe to repeat.
/// - Failures where the server surely did not run the command (`LOADING`, `BUSY`, `MASTERDOWN`,
///   `READONLY`, `TRYAGAIN`, `CLUSTERDOWN`, `NOREPLICAS`, `THROTTLED`, no connection) are retried
///   with jittered backoff, within the retry budget and the call's deadline.
/// - Failures after the request may have been written (a connection lost mid-flight) are retried
///   only when the command is safe to repeat (see [`crate::commands`]); otherwise the call fails
///   with an [`Outcome::Ambiguous`](crate::Outcome::Ambiguous) error.
/// - Other error replies (`WRONGTYPE`, `NOSCRIPT`, syntax errors, ...) come back unchanged.
///
/// # Example
/// ```no_run
/// use redis::AsyncCommands;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut client = resilient_redis::Client::connect("redis://127.0.0.1:6379").await?;
/// let _: () = client.set("greeting", "hello").await?;
/// let value: String = client.get("greeting").await?;
/// // INCR is not safe to repeat: after a broken connection it may fail as "ambiguous".
/// let n: i64 = client.incr("visits", 1).await?;
/// # let _ = (value, n); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    handle: Handle,
    /// What calls through [`ConnectionLike`] (`&mut self`) keep from one call to the next.
    /// Apart from [`Handle`] so that a call can borrow both at once without a wrapping future.
    local: Local,
}

/// A handle's own state, reused from call to call.
#[derive(Default)]
struct Local {
    /// The connection this handle used last, reused while it is still the pool's live one: no
    /// lock and no clone per call, as with a bare `MultiplexedConnection` held by one task.
    cached: Option<Lease>,
    /// The response-window timer (see [`arm`]): one per handle instead of one per call, so a
    /// call neither registers nor removes a timer in the runtime's timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Clone for Local {
    fn clone(&self) -> Self {
        Local {
            cached: self.cached.clone(),
            timer: None,
        }
    }
}

/// What a call needs besides the cached connection: the request path lives here.
#[derive(Clone)]
struct Handle {
    inner: Arc<Inner>,
    policy: RetryPolicy,
    call: CallOptions,
}

/// Per-handle overrides, set with [`Client::idempotent`] and friends.
#[derive(Clone, Copy, Debug, Default)]
struct CallOptions {
    idempotent: Option<bool>,
    /// The configuration's, or [`Client::with_durability`]'s.
    durability: Durability,
}

struct Inner {
    config: ClientConfig,
    /// Which node a request goes to: the part that depends on the deployment.
    router: Router,
    budget: Option<RetryBudget>,
    /// Draws the local rejections of the nodes' adaptive throttles (only while one is engaged).
    throttle_rng: Mutex<SmallRng>,
    stats: Counters,
    /// The column of the reply table this client reads.
    deployment: Deployment,
    db: i64,
    /// `db.client.operation.duration` by operation and outcome (see [`crate::observe`]).
    operations: Operations,
}

impl Inner {
    fn policy_parts(&self, deadline: Duration) -> PolicyParts<'_> {
        PolicyParts {
            name: "resilient_redis",
            max_attempts: self.config.max_attempts,
            backoff: self.config.retry_backoff,
            deadline,
            // Every attempt returns by its deadline on its own (`send_on` bounds its one timer
            // by it), so the policy registers no second timer per call.
            cut_attempts: false,
            budget: self.budget.as_ref(),
            // The breakers are the nodes' (one per node), asked right before each send.
            breaker: None,
            rng_seed: self.config.rng_seed,
        }
    }
}

/// Feeds the nodes' adaptive throttles one snapshot per bucket, for as long as the client lives.
fn spawn_throttle_ticker(inner: &Arc<Inner>) {
    let Some(throttle) = &inner.config.adaptive_throttle else {
        return;
    };
    let Ok(every) = TotalsThrottle::new(throttle.clone()).map(|t| t.tick_interval()) else {
        return;
    };
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let now = Instant::now();
            inner.router.each_node(|node| {
                if let Some(t) = &node.throttle {
                    t.throttle.tick_at(now, inner.throttle_totals(node));
                }
            });
        }
    });
}

impl Client {
    /// Connects with the default configuration (see [`ClientConfig`]) to `url`.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidConfig`]: a malformed URL or unknown scheme (the message names the
    ///   part at fault: the port, the database), or a database the server does not have (`/99`).
    /// - [`ErrorKind::Unavailable`]: a server that cannot be reached within the connect timeout;
    ///   the message says whether the TCP connection or the Redis handshake did not complete, and
    ///   after how long.
    /// - [`ErrorKind::Auth`]: rejected credentials, or none where the server requires a password
    ///   (the first connection is checked with a `PING`).
    ///
    /// [`ErrorKind::InvalidConfig`]: crate::ErrorKind::InvalidConfig
    /// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
    /// [`ErrorKind::Auth`]: crate::ErrorKind::Auth
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::with_config(ClientConfig::from_url(url)?).await
    }

    /// Connects with `config`, checked first.
    pub async fn with_config(config: ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        observe::describe();
        let db = config.connection_info()?.redis_settings().db();
        let budget = match &config.budget {
            Some(b) => Some(
                RetryBudget::new(b.clone()).map_err(|e| Error::config(format!("budget: {e}")))?,
            ),
            None => None,
        };
        // Checked before connecting (each node builds its own breaker and throttle from them).
        if let Some(b) = &config.breaker {
            CircuitBreaker::new(b.clone()).map_err(|e| Error::config(format!("breaker: {e}")))?;
        }
        if let Some(t) = &config.adaptive_throttle {
            TotalsThrottle::new(t.clone())
                .map_err(|e| Error::config(format!("adaptive_throttle: {e}")))?;
        }
        let throttle_rng = Mutex::new(match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x7468_726f_7474_6c65),
            None => rand::make_rng(),
        });
        let (deployment, router) = if config.cluster.is_some() {
            (
                Deployment::Cluster,
                Router::Cluster(ClusterRouter::start(&config).await?),
            )
        } else {
            let deployment = match config.sentinel_config()? {
                Some(_) => Deployment::Sentinel,
                None => Deployment::Standalone,
            };
            let pool = Pool::start(&config).await?;
            let addr = crate::addr::addr_of(config.connection_info()?.addr()).unwrap_or_default();
            let node = Node::new(Arc::from(addr), pool, &config, false)?;
            (deployment, Router::Single(Box::new(node)))
        };
        let inner = Arc::new(Inner {
            deployment,
            config,
            router,
            budget,
            throttle_rng,
            stats: Counters::default(),
            db,
            operations: Operations::new(),
        });
        let policy = build_policy(inner.policy_parts(inner.config.deadline))?;
        spawn_throttle_ticker(&inner);
        let client = Arc::downgrade(&inner);
        observe::spawn_sampler(move |now| client.upgrade().map(|c| c.sample(now)).is_some());
        let call = CallOptions {
            idempotent: None,
            durability: inner.config.durability,
        };
        Ok(Client {
            handle: Handle {
                inner,
                policy,
                call,
            },
            local: Local::default(),
        })
    }

    /// A handle whose calls are treated as safe to repeat, whatever the command table says (for
    /// a script you know is idempotent, for example). Shares everything with `self`.
    pub fn idempotent(&self) -> Client {
        let mut c = self.clone();
        c.handle.call.idempotent = Some(true);
        c
    }

    /// A handle whose calls are never re-sent after an ambiguous failure, whatever the command
    /// table says. Shares everything with `self`.
    pub fn non_idempotent(&self) -> Client {
        let mut c = self.clone();
        c.handle.call.idempotent = Some(false);
        c
    }

    /// A handle with another total deadline per call. Shares everything with `self`.
    pub fn with_deadline(&self, deadline: Duration) -> Result<Client, Error> {
        if deadline.is_zero() {
            return Err(Error::config("deadline must be greater than zero"));
        }
        Ok(Client {
            handle: Handle {
                inner: self.handle.inner.clone(),
                policy: build_policy(self.handle.inner.policy_parts(deadline))?,
                call: self.handle.call,
            },
            local: Local::default(),
        })
    }

    /// A handle whose writes are acknowledged as `durability` says (see [`Durability`]),
    /// whatever the configuration's. Shares everything with `self`; an exactly-once handle made
    /// from it keeps it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig): a `WAIT` timeout of zero
    /// or not shorter than `response_timeout`.
    pub fn with_durability(&self, durability: Durability) -> Result<Client, Error> {
        durability.validate(self.handle.inner.config.response_timeout)?;
        let mut c = self.clone();
        c.handle.call.durability = durability;
        Ok(c)
    }

    /// This handle's durability (see [`Client::with_durability`]).
    pub fn durability(&self) -> Durability {
        self.handle.call.durability
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.handle.inner.config
    }

    /// This handle's total deadline per call (see [`Client::with_deadline`]).
    pub(crate) fn call_deadline(&self) -> Duration {
        self.handle.deadline()
    }

    /// Counters since the client was created (shared by all clones).
    pub fn stats(&self) -> ClientStats {
        let inner = &self.handle.inner;
        let s = &inner.stats;
        let (reconnects, demotions, redirects, waits, refreshes, replaced) = match &inner.router {
            Router::Single(node) => (
                node.pool.reconnects.load(Ordering::Relaxed),
                node.pool.demotions.load(Ordering::Relaxed),
                0,
                0,
                0,
                0,
            ),
            Router::Cluster(c) => (
                c.reconnects(),
                0,
                c.redirects.load(Ordering::Relaxed),
                c.waits.load(Ordering::Relaxed),
                c.refreshes(),
                c.keyless.replaced.load(Ordering::Relaxed),
            ),
        };
        ClientStats {
            redirects,
            waits,
            refreshes,
            replaced,
            calls: s.calls.get(),
            attempts: s.attempts.get(),
            retries: s.retries.load(Ordering::Relaxed),
            ambiguous: s.ambiguous.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            reconnects,
            demotions,
            rejected_locally: s.rejected_locally.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            unconfirmed: s.unconfirmed.load(Ordering::Relaxed),
            deposed_replies: s.deposed_replies.load(Ordering::Relaxed),
            replica_waits: s.replica_waits.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            replica_reads: s.replica_reads.load(Ordering::Relaxed),
        }
    }

    /// Live connections in the pool, and the pool's size.
    pub fn connections(&self) -> (usize, usize) {
        self.handle.inner.router.connections()
    }

    /// The circuit breaker, if enabled (a cluster has one per node: see
    /// [`Client::node_breaker`]).
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.handle.inner.router.single()?.breaker.as_ref()
    }

    /// The circuit breaker of the cluster node at `addr` (`host:port`), once the client has
    /// sent to it; `None` for a single server (see [`Client::breaker`]).
    pub fn node_breaker(&self, addr: &str) -> Option<CircuitBreaker> {
        match &self.handle.inner.router {
            Router::Cluster(c) => c.node_if_known(addr)?.breaker.clone(),
            Router::Single(_) => None,
        }
    }

    /// In a cluster, the master of `slot` in the client's slot map (`host:port`); `None` if the
    /// map names none, or for a single server.
    pub fn master_for_slot(&self, slot: u16) -> Option<String> {
        match &self.handle.inner.router {
            Router::Cluster(c) => c.master_addr(slot),
            Router::Single(_) => None,
        }
    }

    /// The adaptive throttle's probability of rejecting a call locally now (the highest over a
    /// cluster's nodes): 0 while the server takes all the work; `None` when adaptive throttling
    /// is off.
    pub fn throttle_probability(&self) -> Option<f64> {
        let mut highest: Option<f64> = None;
        self.handle
            .inner
            .each_node_throttle(Instant::now(), |_, p| {
                if let Some(p) = p {
                    highest = Some(highest.map_or(p, |h| h.max(p)));
                }
            });
        highest
    }

    /// The retry budget, if enabled.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.handle.inner.budget.as_ref()
    }

    /// The pool of a single server or Sentinel deployment; `None` for a cluster.
    pub(crate) fn pool(&self) -> Option<&Arc<Pool>> {
        self.handle.inner.router.single().map(|n| &n.pool)
    }

    pub(crate) fn router(&self) -> &Router {
        &self.handle.inner.router
    }

    /// Runs one command and returns its reply value, with the client's error type. Server error
    /// replies that are not retried come back as `Ok(Value::ServerError(..))`, as redis-rs does.
    pub async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        self.handle
            .execute(Request::Cmd(cmd), &mut Local::default(), |r| {
                r.map(Reply::into_value)
            })
            .await
    }

    /// Runs a pipeline (plain or atomic) and returns the replies, with the client's error type.
    pub async fn send_pipeline(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Error> {
        self.handle
            .execute(Request::pipeline(pipeline), &mut Local::default(), |r| {
                r.map(Reply::into_values)
            })
            .await
    }
}

impl ConnectionLike for Client {
    // The call's future is boxed as is (no wrapping future): it borrows the handle and the
    // cached connection side by side.
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Client { handle, local } = self;
        Box::pin(handle.execute(Request::Cmd(cmd), local, |r| {
            r.map(Reply::into_value).map_err(Error::into_redis)
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Client { handle, local } = self;
        let request = Request::Pipeline {
            pipeline,
            offset,
            count,
        };
        Box::pin(handle.execute(request, local, |r| {
            r.map(Reply::into_values).map_err(Error::into_redis)
        }))
    }

    fn get_db(&self) -> i64 {
        self.handle.inner.db
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (up, total) = self.handle.inner.router.connections();
        f.debug_struct("Client")
            .field("url", &crate::redact_url(&self.handle.inner.config.url))
            .field("connections_up", &up)
            .field("connections_total", &total)
            .finish()
    }
}
