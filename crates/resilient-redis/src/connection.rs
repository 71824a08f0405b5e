//! The pool of multiplexed connections to one server, kept alive in the background.
//!
//! # Behavior
//! - `pool_size` redis-rs [`MultiplexedConnection`]s; calls go round-robin over the live ones.
//! - A connection found broken (an I/O error on a call, a failed idle check, a stall diagnosed as
//!   the connection's fault) is marked dead by its generation; a single background task per pool
//!   reconnects dead slots one at a time, paced by the jittered `reconnect_backoff`. Callers never
//!   connect themselves, so there is no reconnect storm from one process.
//! - A caller that finds no live connection waits (up to its deadline) for the next reconnection
//!   instead of failing; waiting sends nothing to the server and spends no retry budget. Once the
//!   server has been unreachable for `unavailable_after`, callers fail at once instead.
//! - Idle connections are PINGed every `idle_check_interval`, so a dead one is replaced before a
//!   caller needs it.
//! - When a reply is late, [`Pool::diagnose_stall`] tells whether the server or the connection is
//!   at fault by PINGing on a fresh connection (one probe at a time, shared by all callers).
//! - With Sentinel, connections go to the master the [`SentinelResolver`] names. When it
//!   announces a new master, the background task drops every connection to the old one and
//!   connects to the new one at once, without backoff; callers waiting for a connection get it
//!   as soon as it is up. A broken connection asks the resolver for a rediscovery.
//! - With Sentinel and a [`ReadFrom`] other than `Master`, the pool also keeps `pool_size`
//!   connections to replicas (after the master's slots) for read-only commands; they are
//!   reconnected by the same task, after the master's. (A late reply on a replica is diagnosed
//!   by probing the master.)

use std::{
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, future::Shared};
use rand::{SeedableRng, rngs::SmallRng};
use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::{
    config::{ClientConfig, ReadFrom},
    error::{Error, ErrorKind, Outcome},
    replies::Code,
    routing::{Endpoint, Master, SentinelResolver, TopologyView},
};

/// A connection lent to one attempt.
#[derive(Clone)]
pub(crate) struct Lease {
    pub(crate) conn: MultiplexedConnection,
    pub(crate) slot: usize,
    pub(crate) generation: u64,
}

/// Which connection a lease was: enough to mark it broken later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseId {
    pub(crate) slot: usize,
    pub(crate) generation: u64,
}

impl Lease {
    pub(crate) fn id(&self) -> LeaseId {
        LeaseId {
            slot: self.slot,
            generation: self.generation,
        }
    }
}

#[derive(Clone)]
struct Live {
    conn: MultiplexedConnection,
    generation: u64,
    /// The master epoch the connection was opened for (always 0 for a fixed server).
    epoch: u64,
}

struct Slot {
    live: RwLock<Option<Live>>,
    /// Generation of the live connection, 0 when there is none: lets a caller check a cached
    /// lease with one atomic load instead of the lock and a clone.
    current: AtomicU64,
    /// A reply arrived since the last idle check. A flag, not a timestamp: the request path
    /// then reads no clock, and writes the cache line only once per check interval.
    replied: AtomicBool,
}

/// What a fresh connection says about a late reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StallVerdict {
    /// The server answered a PING on a fresh connection: it is alive.
    Answers,
    /// The server accepted a connection but did not answer in time: it is stalled.
    Silent,
    /// The server could not be reached at all.
    Unreachable(String),
}

/// Connection generations, unique in the process: a lease of one pool never passes for the
/// live connection of another (a cluster's clients hold one pool per node).
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// Minimum pause after a failed replica connection.
const REPLICA_RETRY: Duration = Duration::from_millis(500);

/// How many idle dedicated connections for blocking commands are kept.
const MAX_IDLE_BLOCKING: usize = 16;

type ProbeFuture = Shared<futures::future::BoxFuture<'static, StallVerdict>>;

/// Connection state that callers and the reconnector share.
struct Down {
    since: Option<Instant>,
    last_error: Option<String>,
}

pub(crate) struct Pool {
    endpoint: Endpoint,
    /// Slots `0..masters` connect to the master; the others to replicas.
    masters: usize,
    read_from: ReadFrom,
    /// The connect timeout (for connections opened outside `conn_config`).
    conn_config_timeout: Duration,
    conn_config: AsyncConnectionConfig,
    response_timeout: Duration,
    unavailable_after: Duration,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    ready: watch::Sender<u64>,
    wake: Arc<Notify>,
    down: RwLock<Down>,
    /// `Down::since` as nanoseconds after `origin`, plus one; 0 while a master connection is
    /// live. Lets a call fail fast without taking a lock.
    down_since: AtomicU64,
    origin: Instant,
    probe: Mutex<Option<ProbeFuture>>,
    busy_gate: Mutex<Option<Shared<futures::future::BoxFuture<'static, ()>>>>,
    /// Idle dedicated connections for blocking commands, reused so a consumer looping on BLPOP
    /// does not open a connection per call.
    blocking_idle: Mutex<Vec<MultiplexedConnection>>,
    pub(crate) reconnects: AtomicU64,
}

impl Pool {
    /// Builds the pool and, unless `lazily`, opens the first connection (a clear error if the
    /// server cannot be reached or rejects the credentials). Starts the background task.
    pub(crate) async fn start(config: &ClientConfig) -> Result<Arc<Pool>, Error> {
        let info = config.connection_info()?;
        let sentinel = config.sentinel_config()?;
        let read_from = sentinel.as_ref().map(|s| s.read_from).unwrap_or_default();
        let endpoint = match sentinel {
            Some(sentinel) => {
                Endpoint::Sentinel(SentinelResolver::start(config, sentinel, info).await?)
            }
            None => Endpoint::Fixed(Box::new(redis::Client::open(info).map_err(|e| {
                let shown = crate::redact_url(&config.url);
                Error::config(format!("invalid connection settings for {shown}")).with_source(e)
            })?)),
        };
        Pool::with_endpoint(config, endpoint, read_from, config.connect_lazily).await
    }

    /// A pool for one node of a cluster, at `info`'s address: it connects in the background
    /// (the first caller waits for it, within its deadline).
    pub(crate) fn start_node(
        config: &ClientConfig,
        info: redis::ConnectionInfo,
    ) -> Result<Arc<Pool>, Error> {
        let client = redis::Client::open(info).map_err(|e| {
            Error::config("invalid connection settings for a cluster node").with_source(e)
        })?;
        let pool = Pool::build(config, Endpoint::Fixed(Box::new(client)), ReadFrom::Master);
        pool.run_in_background(config);
        Ok(pool)
    }

    async fn with_endpoint(
        config: &ClientConfig,
        endpoint: Endpoint,
        read_from: ReadFrom,
        lazily: bool,
    ) -> Result<Arc<Pool>, Error> {
        let pool = Pool::build(config, endpoint, read_from);
        if !lazily {
            let (conn, epoch) =
                crate::handshake::first_connection(&pool.endpoint, &pool.conn_config, config)
                    .await?;
            pool.install(0, conn, epoch);
            // (A master switch during this first connection is followed by the background task.)
        }
        pool.run_in_background(config);
        Ok(pool)
    }

    /// The pool, with no connection yet.
    fn build(config: &ClientConfig, endpoint: Endpoint, read_from: ReadFrom) -> Arc<Pool> {
        let replicas = if read_from == ReadFrom::Master {
            0
        } else {
            config.pool_size
        };
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(None);
        let slots = (0..config.pool_size + replicas)
            .map(|_| Slot {
                live: RwLock::new(None),
                replied: AtomicBool::new(false),
                current: AtomicU64::new(0),
            })
            .collect();
        Arc::new(Pool {
            endpoint,
            masters: config.pool_size,
            read_from,
            conn_config_timeout: config.connect_timeout,
            conn_config,
            response_timeout: config.response_timeout,
            unavailable_after: config.unavailable_after,
            slots,
            next: AtomicUsize::new(0),
            ready: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
            down: RwLock::new(Down {
                since: Some(Instant::now()),
                last_error: None,
            }),
            down_since: AtomicU64::new(1),
            origin: Instant::now(),
            probe: Mutex::new(None),
            busy_gate: Mutex::new(None),
            blocking_idle: Mutex::new(Vec::new()),
            reconnects: AtomicU64::new(0),
        })
    }

    /// Starts the background task that (re)connects, checks idle connections and follows
    /// master changes, and wakes it.
    fn run_in_background(self: &Arc<Self>, config: &ClientConfig) {
        let rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        tokio::spawn(reconnector(
            Arc::downgrade(self),
            self.wake.clone(),
            config.reconnect_backoff,
            config.idle_check_interval,
            self.endpoint.changes(),
            rng,
        ));
        self.wake.notify_one();
    }

    /// Opens one new multiplexed connection.
    async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.endpoint.open(&self.conn_config).await.map(|(c, _)| c)
    }

    /// A pub/sub connection to the server (the master, with Sentinel), within the connect
    /// timeout.
    pub(crate) async fn open_pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let timeout = self.conn_config_timeout;
        tokio::time::timeout(timeout, self.endpoint.open_pubsub())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "pub/sub connect timed out",
                ))
            })?
    }

    /// Master changes (Sentinel); `None` for a fixed server.
    pub(crate) fn master_changes(&self) -> Option<watch::Receiver<Master>> {
        self.endpoint.changes()
    }

    /// What the client knows of a Sentinel topology; `None` for a fixed server.
    pub(crate) fn topology(&self) -> Option<TopologyView> {
        self.endpoint.view()
    }

    /// A `READONLY` reply on the connection of `lease`: with Sentinel, the node
    /// was demoted. Drops that connection (the next one goes to the master, checked with
    /// `ROLE`) and asks for a rediscovery. Nothing for a fixed server, where `READONLY` is just
    /// retried.
    pub(crate) fn on_readonly(&self, lease: LeaseId) {
        if let Endpoint::Sentinel(_) = &self.endpoint {
            self.mark_broken(lease, "READONLY: the node is no longer the master");
        }
    }

    /// The master changed: drops every connection to an older master (in-flight requests on
    /// them finish or fail on their own) so the background task reconnects to the new one.
    fn invalidate_stale(&self) {
        let epoch = self.endpoint.epoch();
        let mut dropped = 0;
        for slot in self.slots.iter() {
            let mut live = slot.live.write().expect("slot lock");
            if live.as_ref().is_some_and(|l| l.epoch != epoch) {
                *live = None;
                slot.current.store(0, Ordering::Release);
                dropped += 1;
            }
        }
        self.blocking_idle.lock().expect("idle lock").clear();
        if dropped > 0 {
            tracing::info!(dropped, "the master changed: reconnecting to the new one");
            self.note_down("the master changed");
        }
    }

    /// A dedicated connection for a blocking command: an idle one, or a new one.
    pub(crate) async fn open_dedicated(&self) -> redis::RedisResult<MultiplexedConnection> {
        loop {
            let idle = self.blocking_idle.lock().expect("idle lock").pop();
            let Some(mut conn) = idle else { break };
            // A blocking command written on a dead connection would come back ambiguous: check
            // an idle connection first (one round trip, small next to a blocking wait).
            let ping = redis::cmd("PING");
            if let Ok(Ok(redis::Value::SimpleString(_))) =
                tokio::time::timeout(self.response_timeout, conn.send_packed_command(&ping)).await
            {
                return Ok(conn);
            }
        }
        self.open().await
    }

    /// Returns a dedicated connection whose blocking command completed normally.
    pub(crate) fn return_dedicated(&self, conn: MultiplexedConnection) {
        let mut idle = self.blocking_idle.lock().expect("idle lock");
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(conn);
        }
    }

    /// Puts `conn` in `slot`; `false` (and nothing done) if it was opened for a master that has
    /// been replaced since.
    fn install(&self, slot: usize, conn: MultiplexedConnection, epoch: u64) -> bool {
        if epoch != self.endpoint.epoch() {
            return false;
        }
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        *self.slots[slot].live.write().expect("slot lock") = Some(Live {
            conn,
            generation,
            epoch,
        });
        self.slots[slot]
            .current
            .store(generation, Ordering::Release);
        self.touch(slot);
        if slot < self.masters {
            let mut down = self.down.write().expect("down lock");
            down.since = None;
            self.down_since.store(0, Ordering::Relaxed);
        }
        self.ready.send_modify(|g| *g = generation);
        true
    }

    /// Records that a reply arrived on `slot` (for the idle check).
    pub(crate) fn touch(&self, slot: usize) {
        let replied = &self.slots[slot].replied;
        if !replied.load(Ordering::Relaxed) {
            replied.store(true, Ordering::Relaxed);
        }
    }

    /// A live master connection.
    fn try_lease(&self) -> Option<Lease> {
        self.try_lease_in(0, self.masters)
    }

    /// A live connection among the `n` slots from `first`, round-robin.
    fn try_lease_in(&self, first: usize, n: usize) -> Option<Lease> {
        if n == 0 {
            return None;
        }
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        for i in 0..n {
            let slot = first + (start + i) % n;
            if let Some(live) = self.slots[slot].live.read().expect("slot lock").as_ref() {
                return Some(Lease {
                    conn: live.conn.clone(),
                    slot,
                    generation: live.generation,
                });
            }
        }
        None
    }

    /// A live replica connection, or a master one if `or_master`.
    fn try_lease_read(&self, or_master: bool) -> Option<Lease> {
        self.try_lease_in(self.masters, self.slots.len() - self.masters)
            .or_else(|| if or_master { self.try_lease() } else { None })
    }

    /// A connection for a command: with [`ReadFrom::PreferReplica`] or [`ReadFrom::Replica`],
    /// a replica one for a read-only command; a master one otherwise (see [`Pool::acquire`]).
    pub(crate) async fn acquire_for(
        &self,
        read_only: bool,
        deadline: Option<Instant>,
    ) -> Result<Lease, Error> {
        match self.read_from {
            ReadFrom::PreferReplica if read_only => {
                self.acquire_with(deadline, |p| p.try_lease_read(true))
                    .await
            }
            ReadFrom::Replica if read_only => {
                self.acquire_with(deadline, |p| p.try_lease_read(false))
                    .await
            }
            _ => self.acquire(deadline).await,
        }
    }

    /// The error for a call made while the server has been unreachable for longer than
    /// `unavailable_after`, found without a lock or a wait: the fail-fast path of an outage.
    #[inline]
    pub(crate) fn failing_fast(&self) -> Option<Error> {
        let since = self.down_since.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let down_for = self
            .origin
            .elapsed()
            .saturating_sub(Duration::from_nanos(since - 1));
        if down_for < self.unavailable_after {
            return None;
        }
        let last = self.down.read().expect("down lock").last_error.clone();
        Some(unavailable(down_for, last.as_deref()))
    }

    /// Whether `lease` is still the live connection of its slot (one atomic load).
    pub(crate) fn is_current(&self, lease: &Lease) -> bool {
        self.slots
            .get(lease.slot)
            .is_some_and(|s| s.current.load(Ordering::Acquire) == lease.generation)
    }

    /// Whether the pool has no live connection to the master (or the server) since a
    /// connection broke or could not be opened.
    pub(crate) fn is_down(&self) -> bool {
        self.down_since.load(Ordering::Relaxed) != 0
    }

    /// Whether read-only calls may go elsewhere than the master connections (replica routing);
    /// a cached master lease is then not used for them.
    pub(crate) fn routes_reads_elsewhere(&self) -> bool {
        !matches!(self.read_from, ReadFrom::Master)
    }

    /// The connection [`Pool::acquire_for`] would pick right now, without waiting. The request
    /// path tries this first so that its future stays small (the waiting path is boxed).
    pub(crate) fn try_acquire_for(&self, read_only: bool) -> Option<Lease> {
        match self.read_from {
            ReadFrom::PreferReplica if read_only => self.try_lease_read(true),
            ReadFrom::Replica if read_only => self.try_lease_read(false),
            _ => self.try_lease(),
        }
    }

    /// A live master connection, waiting up to `deadline` for a reconnection when there is none.
    pub(crate) async fn acquire(&self, deadline: Option<Instant>) -> Result<Lease, Error> {
        if let Some(lease) = self.try_lease() {
            return Ok(lease);
        }
        self.acquire_with(deadline, Pool::try_lease).await
    }

    /// The waiting part of [`Pool::acquire`], with `pick` choosing among live connections.
    async fn acquire_with(
        &self,
        deadline: Option<Instant>,
        pick: impl Fn(&Pool) -> Option<Lease>,
    ) -> Result<Lease, Error> {
        loop {
            // Subscribe before looking again, so a reconnection in between is not missed.
            let mut ready = self.ready.subscribe();
            if let Some(lease) = pick(self) {
                return Ok(lease);
            }
            let (since, last_error) = {
                let down = self.down.read().expect("down lock");
                (down.since, down.last_error.clone())
            };
            if let Some(since) = since
                && since.elapsed() >= self.unavailable_after
            {
                return Err(unavailable(since.elapsed(), last_error.as_deref()));
            }
            let last = last_error.unwrap_or_else(|| "no connection yet".to_owned());
            self.wake.notify_one();
            let changed = ready.changed();
            // Wait for a reconnection, up to the deadline, or until the outage has lasted
            // `unavailable_after` (then every waiting call fails fast too, not only new ones).
            let give_up_at = since.map(|s| s + self.unavailable_after);
            let wait_until = match (deadline, give_up_at) {
                (Some(d), Some(g)) => Some(d.min(g)),
                (d, g) => d.or(g),
            };
            let waited = match wait_until {
                Some(d) => tokio::time::timeout_at(d, changed).await.ok(),
                None => Some(changed.await),
            };
            if waited.is_none() && give_up_at.is_some() && wait_until == give_up_at {
                // The outage is now long: the check at the top of the loop fails the call.
                continue;
            }
            if waited.is_none() {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    Outcome::Failed,
                    format!("no connection to the server before the deadline (last error: {last})"),
                ));
            }
        }
    }

    /// Marks the connection of `lease` dead, if it is still the one in its slot, and wakes the
    /// reconnector.
    pub(crate) fn mark_broken(&self, lease: LeaseId, why: &str) {
        let mut live = self.slots[lease.slot].live.write().expect("slot lock");
        if live.as_ref().map(|l| l.generation) == Some(lease.generation) {
            *live = None;
            self.slots[lease.slot].current.store(0, Ordering::Release);
            drop(live);
            tracing::debug!(slot = lease.slot, why, "connection marked broken");
            self.note_down(why);
            self.endpoint.suspect();
            self.wake.notify_one();
        }
    }

    fn note_down(&self, why: &str) {
        let any_live = self.slots[..self.masters]
            .iter()
            .any(|s| s.live.read().expect("slot lock").is_some());
        let mut down = self.down.write().expect("down lock");
        if !any_live && down.since.is_none() {
            let now = Instant::now();
            down.since = Some(now);
            let nanos = now.saturating_duration_since(self.origin).as_nanos() as u64;
            self.down_since.store(nanos + 1, Ordering::Relaxed);
        }
        down.last_error = Some(why.to_owned());
    }

    /// How many master slots hold a live connection, and how many master slots there are.
    pub(crate) fn connections(&self) -> (usize, usize) {
        let up = self.slots[..self.masters]
            .iter()
            .filter(|s| s.live.read().expect("slot lock").is_some())
            .count();
        (up, self.masters)
    }

    /// The last connection error, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.down.read().expect("down lock").last_error.clone()
    }

    /// Diagnoses a late reply: PING on a fresh connection. One probe at a time is shared by all
    /// callers that ask while it runs.
    pub(crate) async fn diagnose_stall(self: &Arc<Self>) -> StallVerdict {
        let probe = {
            let mut slot = self.probe.lock().expect("probe lock");
            match slot.as_ref() {
                Some(p) if p.peek().is_none() => p.clone(),
                _ => {
                    let pool = self.clone();
                    let p = async move { pool.probe_fresh().await }.boxed().shared();
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        probe.await
    }

    /// Waits until the server stops answering `BUSY` / `LOADING`. One prober per pool PINGs every
    /// 20 to 60 ms (jittered) on a pooled connection; every caller that got such a reply waits on
    /// it, so a busy server sees one PING per interval instead of every caller's retries.
    pub(crate) async fn wait_until_not_busy(self: &Arc<Self>) {
        let gate = {
            let mut slot = self.busy_gate.lock().expect("gate lock");
            match slot.as_ref() {
                Some(g) if g.peek().is_none() => g.clone(),
                _ => {
                    let pool = Arc::downgrade(self);
                    let g = async move {
                        let mut rng: SmallRng = rand::make_rng();
                        // Bounded: a caller's own deadline ends its wait far sooner.
                        for _ in 0..2000 {
                            let jitter = Duration::from_millis(rand::RngExt::random_range(
                                &mut rng,
                                20..=60,
                            ));
                            tokio::time::sleep(jitter).await;
                            let Some(pool) = pool.upgrade() else { return };
                            let Some(mut lease) = pool.try_lease() else {
                                return;
                            };
                            drop(pool);
                            let ping = redis::cmd("PING");
                            match lease.conn.send_packed_command(&ping).await {
                                Ok(redis::Value::ServerError(e)) if Code::of(&e).is_busy() => {}
                                _ => return,
                            }
                        }
                    }
                    .boxed()
                    .shared();
                    *slot = Some(g.clone());
                    g
                }
            }
        };
        gate.await
    }

    async fn probe_fresh(&self) -> StallVerdict {
        let window = self.response_timeout;
        let verdict = match tokio::time::timeout(window * 2, self.open()).await {
            Err(_) => StallVerdict::Silent,
            Ok(Err(e)) if e.is_io_error() && !e.is_timeout() => {
                StallVerdict::Unreachable(e.to_string())
            }
            // Timed out, or the handshake got BUSY / LOADING: alive, but not answering us.
            Ok(Err(_)) => StallVerdict::Silent,
            Ok(Ok(mut conn)) => {
                let ping = redis::cmd("PING");
                match tokio::time::timeout(window, conn.send_packed_command(&ping)).await {
                    Ok(Ok(_)) => StallVerdict::Answers,
                    Ok(Err(e)) if e.is_io_error() && !e.is_timeout() => {
                        StallVerdict::Unreachable(e.to_string())
                    }
                    // A busy server (a long script) answers BUSY: alive, but stalled for us.
                    Ok(Err(_)) | Err(_) => StallVerdict::Silent,
                }
            }
        };
        tracing::debug!(?verdict, "stall probe");
        verdict
    }

    /// The slots whose connection is dead.
    fn dead_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].live.read().expect("slot lock").is_none())
            .collect()
    }

    /// Live slots that saw no reply since the previous idle check (the checks run every
    /// `idle_check_interval`), and the flags reset for the next interval.
    fn idle_slots(&self) -> Vec<Lease> {
        (0..self.slots.len())
            .filter_map(|i| {
                let slot = &self.slots[i];
                let idle = !slot.replied.swap(false, Ordering::Relaxed);
                let live = slot.live.read().expect("slot lock");
                match (idle, live.as_ref()) {
                    (true, Some(l)) => Some(Lease {
                        conn: l.conn.clone(),
                        slot: i,
                        generation: l.generation,
                    }),
                    _ => None,
                }
            })
            .collect()
    }
}

/// The rustls error behind a failed connection (a certificate the client does not trust, a
/// peer that does not speak TLS, a client certificate the server refused), if that is the
/// cause.
pub(crate) fn tls_error(e: &redis::RedisError) -> Option<&rustls::Error> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let source = std::error::Error::source(e)?;
    // redis-rs keeps an I/O error as `Arc<dyn Error>` and hands out the `Arc` as the source.
    let io = match source.downcast_ref::<Shared>() {
        Some(shared) => shared.downcast_ref::<std::io::Error>()?,
        None => source.downcast_ref::<std::io::Error>()?,
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The background task of a pool: reconnects dead slots, one at a time, and checks idle ones.
async fn reconnector(
    pool: Weak<Pool>,
    wake: Arc<Notify>,
    backoff: resilience::Backoff,
    idle_check: Option<Duration>,
    mut changes: Option<watch::Receiver<Master>>,
    mut rng: SmallRng,
) {
    let mut failures: u32 = 0;
    let mut previous: Option<Duration> = None;
    loop {
        let Some(p) = pool.upgrade() else { return };
        let dead = p.dead_slots();
        if dead.is_empty() {
            failures = 0;
            previous = None;
            drop(p);
            let wait = idle_check.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = wake.notified() => {}
                _ = master_changed(&mut changes) => {
                    let Some(p) = pool.upgrade() else { return };
                    p.invalidate_stale();
                }
                _ = tokio::time::sleep(wait) => {
                    // Idle check: PING connections that have not seen a reply for a while.
                    let Some(p) = pool.upgrade() else { return };
                    if idle_check.is_some() {
                        check_idle(&p).await;
                    }
                }
            }
            continue;
        }
        for slot in dead {
            let opened = if slot < p.masters {
                p.endpoint.open(&p.conn_config).await
            } else {
                p.endpoint.open_replica(&p.conn_config).await
            };
            match opened {
                Ok((conn, epoch)) => {
                    if !p.install(slot, conn, epoch) {
                        // Opened for a master replaced since: try again with the new one.
                        continue;
                    }
                    p.reconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("resilient_redis_reconnects_total").increment(1);
                    tracing::info!(slot, "reconnected");
                    failures = 0;
                    previous = None;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let mut delay = backoff.delay(failures, previous, &mut rng);
                    previous = Some(delay);
                    let replica = slot >= p.masters;
                    if replica {
                        // No replica to read from is not an outage: retry calmly.
                        delay = delay.max(REPLICA_RETRY);
                    } else {
                        p.note_down(&e.to_string());
                    }
                    tracing::debug!(slot, error = %e, ?delay, "reconnect failed");
                    metrics::counter!("resilient_redis_reconnect_failures_total").increment(1);
                    drop(p);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // A master connection broke meanwhile: the master's slots come first
                        // (their own failures back off without this wake-up).
                        _ = wake.notified(), if replica => {}
                        _ = master_changed(&mut changes) => {
                            // A new master: connect to it now, without backoff.
                            let Some(p) = pool.upgrade() else { return };
                            p.invalidate_stale();
                            failures = 0;
                            previous = None;
                        }
                    }
                    break;
                }
            }
        }
    }
}

/// The error of a call that fails fast because the server is known to be down.
fn unavailable(down_for: Duration, last_error: Option<&str>) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        Outcome::Failed,
        format!(
            "server unreachable for {:.1} s (last error: {}); failing fast until it is back",
            down_for.as_secs_f64(),
            last_error.unwrap_or("no connection yet")
        ),
    )
}

/// Resolves when the master changes; never for a fixed server.
pub(crate) async fn master_changed(changes: &mut Option<watch::Receiver<Master>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The resolver is gone (the pool is being dropped).
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn check_idle(pool: &Arc<Pool>) {
    for mut lease in pool.idle_slots() {
        let ping = redis::cmd("PING");
        match tokio::time::timeout(pool.response_timeout, lease.conn.send_packed_command(&ping))
            .await
        {
            Ok(Ok(_)) => pool.touch(lease.slot),
            Ok(Err(e)) if e.is_io_error() => pool.mark_broken(lease.id(), &e.to_string()),
            Ok(Err(_)) => {} // BUSY, LOADING...: the connection works.
            Err(_) => {
                if pool.diagnose_stall().await == StallVerdict::Answers {
                    pool.mark_broken(lease.id(), "idle connection stopped answering");
                }
            }
        }
    }
}
