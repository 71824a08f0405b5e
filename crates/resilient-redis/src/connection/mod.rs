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
//! - A cluster's client keeps one pool per master (see `routing::cluster`).
//!
//! - Every connection is opened by the endpoint's [`Connector`] (credentials of the moment, the
//!   connection's name); live connections whose credentials expire send `AUTH` again before
//!   they do ([`renewal`]). A connection whose credentials the server rejects is replaced; while
//!   the server rejects the new ones too, callers wait as in an outage and fail with
//!   [`ErrorKind::Auth`].
//!
//! Finding a connection for a call is [`lease`]'s; late replies and busy servers are
//! [`stall`]'s; the reconnection task is [`background`]'s.

mod background;
mod connector;
mod endpoint;
pub(crate) mod fixed;
mod handshake;
mod lease;
pub(crate) mod probe;
mod promotable;
mod renewal;
mod replicas;
mod role;
pub(crate) mod sentinel;
mod stall;
mod wait_group;

pub(crate) use background::master_changed;
use background::reconnector;
pub(crate) use connector::{Connector, is_rejection};
pub(crate) use endpoint::Endpoint;
use fixed::Fixed;
pub(crate) use replicas::{RELEARN_AFTER, Wanted};
pub(crate) use sentinel::{Master, SentinelResolver, TopologyView};
pub(crate) use wait_group::{Answer, Turn, WaitGroup};

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::Shared;
use rand::{SeedableRng, rngs::SmallRng};
use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::{
    config::{ClientConfig, ReadFrom},
    error::{Error, ErrorKind, Outcome},
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
    /// A Sentinel replica connection's server (`host:port`), for the call's span.
    replica: Option<Arc<str>>,
}

struct Slot {
    live: RwLock<Option<Live>>,
    /// Generation of the live connection, 0 when there is none: lets a caller check a cached
    /// lease with one atomic load instead of the lock and a clone.
    current: AtomicU64,
    /// A reply arrived since the last idle check. A flag, not a timestamp: the request path
    /// then reads no clock, and writes the cache line only once per check interval.
    replied: AtomicBool,
    /// Group commit of durable writes on the live connection (made at the first one).
    durable: Mutex<Option<Arc<WaitGroup>>>,
    /// The live connection's round trip and (a replica's) lag, with Sentinel replica reads
    /// that need them ([`probe`]).
    measured: probe::Measured,
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
    /// The last connection failed because the server rejected the credentials (after one
    /// refresh from the provider): waiting callers fail as [`ErrorKind::Auth`].
    auth_rejected: bool,
}

/// A dedicated connection (for a blocking command), with the re-authentication round it was
/// opened in: one opened before the credentials were renewed is not reused.
pub(crate) struct Dedicated {
    pub(crate) conn: MultiplexedConnection,
    round: u64,
    /// The master epoch it was opened in: one opened before a master change is not reused.
    pub(crate) epoch: u64,
    /// Its `CLIENT ID` on the server, and the server's address when the endpoint knows it
    /// (Sentinel): what [`Pool::unblock`] needs.
    id: Option<i64>,
    addr: Option<sentinel::Addr>,
}

/// What asking a server to end a blocked command (`CLIENT UNBLOCK`) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unblock {
    /// The command was blocked and is ended now: its reply (an `UNBLOCKED` error) follows.
    Unblocked,
    /// It was not blocked any more: its reply is on its way.
    NotBlocked,
    /// The server did not answer (frozen, cut off).
    NoAnswer,
    /// The server cannot be reached apart from the connection (one hostname), or the
    /// connection's id is unknown.
    Unsupported,
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
    blocking_idle: Mutex<Vec<Dedicated>>,
    /// Calls waiting for a connection (the `pending_requests` gauge).
    waiting: AtomicUsize,
    pub(crate) reconnects: AtomicU64,
    /// Epochs ended by a demotion (see [`fixed`]).
    pub(crate) demotions: AtomicU64,
    /// How many replicas a durable write waits for, when the caller did not say.
    replicas: Mutex<replicas::ReplicaCount>,
    /// [`ClientConfig::max_replica_lag`].
    max_replica_lag: Option<Duration>,
    /// The node's round trip and lag, for a cluster node (measured by the router).
    measured: probe::Measured,
}

impl Pool {
    /// Builds the pool and, unless `lazily`, opens the first connection (a clear error if the
    /// server cannot be reached or rejects the credentials). Starts the background task.
    pub(crate) async fn start(config: &ClientConfig) -> Result<Arc<Pool>, Error> {
        let info = config.connection_info()?;
        let sentinel = config.sentinel_config()?;
        let read_from = if sentinel.is_some() {
            config.read_from.clone()
        } else {
            ReadFrom::Master
        };
        let endpoint = match sentinel {
            Some(sentinel) => {
                Endpoint::Sentinel(SentinelResolver::start(config, sentinel, info).await?)
            }
            None => Endpoint::Fixed(Box::new(Fixed::new(
                Connector::new(config, info),
                config.require_primary,
                config.response_timeout,
            ))),
        };
        Pool::with_endpoint(config, endpoint, read_from, config.connect_lazily).await
    }

    /// A pool for one node of a cluster, opening its connections with `connector`: it
    /// connects in the background (the first caller waits for it, within its deadline).
    pub(crate) fn start_node(config: &ClientConfig, connector: Connector) -> Arc<Pool> {
        // Not `require_primary`: the cluster's slot map says which node is a master.
        let fixed = Fixed::new(connector, false, config.response_timeout);
        let pool = Pool::build(config, Endpoint::Fixed(Box::new(fixed)), ReadFrom::Master);
        pool.run_in_background(config);
        pool
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
                handshake::first_connection(&pool.endpoint, &pool.conn_config, config).await?;
            pool.install(0, conn, epoch, None);
            // (A master switch during this first connection is followed by the background task.)
        }
        pool.run_in_background(config);
        Ok(pool)
    }

    /// The pool, with no connection yet.
    fn build(config: &ClientConfig, endpoint: Endpoint, read_from: ReadFrom) -> Arc<Pool> {
        let replicas = if !read_from.uses_replicas() {
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
                durable: Mutex::new(None),
                measured: probe::Measured::default(),
            })
            .collect();
        let measured = probe::Measured::default();
        measured.reset(config.max_replica_lag.is_some());
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
                auth_rejected: false,
            }),
            down_since: AtomicU64::new(1),
            origin: Instant::now(),
            probe: Mutex::new(None),
            busy_gate: Mutex::new(None),
            blocking_idle: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
            reconnects: AtomicU64::new(0),
            demotions: AtomicU64::new(0),
            replicas: Mutex::new(replicas::ReplicaCount::default()),
            max_replica_lag: config.max_replica_lag,
            measured,
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
        if self.read_from.uses_replicas()
            && (self.max_replica_lag.is_some() || self.read_from == ReadFrom::Nearest)
        {
            tokio::spawn(probe::prober(Arc::downgrade(self)));
        }
        self.wake.notify_one();
    }

    /// Opens one new multiplexed connection.
    async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.endpoint.open(&self.conn_config).await.map(|(c, _)| c)
    }

    /// A subscriber's connection (RESP3, pushes to `conn_config`'s sender) to the server (the
    /// master, with Sentinel), within the connect timeout, with the master epoch it was opened
    /// for and when its credentials are due for renewal.
    pub(crate) async fn open_subscriber(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> redis::RedisResult<(MultiplexedConnection, u64, Option<Instant>)> {
        let epoch = self.endpoint.epoch();
        let timeout = self.conn_config_timeout;
        let (conn, renew_at) =
            tokio::time::timeout(timeout, self.endpoint.open_subscriber(conn_config))
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "subscriber connect timed out",
                    ))
                })??;
        Ok((conn, epoch, renew_at))
    }

    /// Master changes (Sentinel); `None` for a fixed server.
    pub(crate) fn master_changes(&self) -> Option<watch::Receiver<Master>> {
        self.endpoint.changes()
    }

    /// What the client knows of a Sentinel topology; `None` for a fixed server.
    pub(crate) fn topology(&self) -> Option<TopologyView> {
        self.endpoint.view()
    }

    /// A `READONLY` reply on the connection of `lease`: the node was demoted. With Sentinel,
    /// drops that connection (the next one goes to the master, checked with `ROLE`) and asks
    /// for a rediscovery. At a primary endpoint (see [`fixed`]), ends the connection's epoch:
    /// every connection opened before it goes. Nothing for a cluster node (the cluster's slot
    /// map follows) or a replica endpoint.
    pub(crate) fn on_readonly(&self, lease: LeaseId) {
        match &self.endpoint {
            Endpoint::Sentinel(_) => {
                self.mark_broken(lease, "READONLY: the node is no longer the master");
            }
            Endpoint::Fixed(_) => {
                let epoch = self.slots[lease.slot]
                    .live
                    .read()
                    .expect("slot lock")
                    .as_ref()
                    .filter(|l| l.generation == lease.generation)
                    .map(|l| l.epoch);
                if let Some(epoch) = epoch {
                    self.demoted(epoch, "READONLY");
                }
            }
        }
    }

    /// The server a connection opened in `epoch` reached is no longer a primary (`how`: what
    /// said so). At a primary endpoint, ends the epoch and drops its connections (once per
    /// epoch, whoever reports it); nothing elsewhere.
    pub(crate) fn demoted(&self, epoch: u64, how: &str) {
        if let Endpoint::Fixed(fixed) = &self.endpoint
            && fixed.demoted(epoch)
        {
            tracing::warn!(
                how,
                "the server behind the address is no longer a primary (a failover behind one \
                 hostname?): reconnecting"
            );
            self.demotions.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::observe::DEMOTIONS).increment(1);
            // At once, not when the background task sees the change: the callers' retries
            // must not find the old connections.
            self.invalidate_stale();
        }
    }

    /// The node no longer owns any slot (a cluster master demoted or removed): replies its
    /// connections send from now on do not count as a master's acknowledgement.
    pub(crate) fn retire(&self) {
        if let Endpoint::Fixed(fixed) = &self.endpoint {
            fixed.retire();
        }
    }

    /// A dedicated connection opened in `epoch` was told its server was demoted (`READONLY`,
    /// `UNBLOCKED`): the pool moves on as for [`Pool::on_readonly`], and with Sentinel the idle
    /// dedicated connections go and a rediscovery is asked for.
    pub(crate) fn on_dedicated_demoted(&self, epoch: u64) {
        match &self.endpoint {
            Endpoint::Fixed(_) => self.demoted(epoch, "UNBLOCKED or READONLY"),
            Endpoint::Sentinel(_) => {
                self.blocking_idle.lock().expect("idle lock").clear();
                self.endpoint.suspect();
            }
        }
    }

    /// The current master epoch of the endpoint: it changes each time the master changes.
    pub(crate) fn epoch(&self) -> u64 {
        self.endpoint.epoch()
    }

    /// Whether the server answers a `PING` on a pooled connection within the response timeout
    /// (`true` when no connection is at hand: the pool's own checks cover that case).
    pub(crate) async fn answers(&self) -> bool {
        let Some(mut lease) = self.try_acquire_for(false) else {
            return true;
        };
        let ping = redis::cmd("PING");
        matches!(
            tokio::time::timeout(self.response_timeout, lease.conn.send_packed_command(&ping))
                .await,
            Ok(Ok(_))
        )
    }

    /// Resolves once the master of `epoch` has been replaced (a Sentinel switch, a primary
    /// endpoint's demotion); never for a server that has no successor (a fixed address, a
    /// cluster node: its slot map says when it stops owning a slot).
    pub(crate) async fn replaced(&self, epoch: u64) {
        let mut changes = self.endpoint.changes();
        while self.endpoint.epoch() == epoch {
            master_changed(&mut changes).await;
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
            self.wake.notify_one();
        }
    }

    /// A dedicated connection for a blocking command: an idle one, or a new one.
    pub(crate) async fn open_dedicated(&self) -> redis::RedisResult<Dedicated> {
        loop {
            let idle = self.blocking_idle.lock().expect("idle lock").pop();
            let Some(mut idle) = idle else { break };
            if idle.round != self.endpoint.connector().round() {
                continue; // Opened with credentials renewed since.
            }
            if idle.epoch != self.endpoint.epoch() {
                continue; // Opened for a master replaced since.
            }
            let conn = &mut idle.conn;
            // A blocking command written on a dead connection would come back ambiguous: check
            // an idle connection first (one round trip, small next to a blocking wait).
            let ping = redis::cmd("PING");
            if let Ok(Ok(redis::Value::SimpleString(_))) =
                tokio::time::timeout(self.response_timeout, conn.send_packed_command(&ping)).await
            {
                return Ok(idle);
            }
        }
        let round = self.endpoint.connector().round();
        let addr = self.endpoint.master_addr();
        let (mut conn, epoch) = self.endpoint.open(&self.conn_config).await?;
        // Its id, so that a call blocked on it can be ended from another connection.
        let id = tokio::time::timeout(
            self.response_timeout,
            conn.send_packed_command(&redis::cmd("CLIENT").arg("ID").clone()),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|v| match v {
            redis::Value::Int(id) => Some(id),
            _ => None,
        });
        Ok(Dedicated {
            conn,
            round,
            epoch,
            id,
            addr: addr.filter(|(_, e)| *e == epoch).map(|(a, _)| a),
        })
    }

    /// Asks the server of `dedicated` to end the command blocked on it (`CLIENT UNBLOCK id
    /// ERROR`), over a pooled connection (`pooled`: a cluster node's pool is the same server)
    /// or a fresh one to its address (Sentinel: the old master), within the response timeout.
    pub(crate) async fn unblock(&self, dedicated: &Dedicated, pooled: bool) -> Unblock {
        let Some(id) = dedicated.id else {
            return Unblock::Unsupported;
        };
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(id).arg("ERROR");
        let asked = async {
            let mut conn = if pooled {
                match self.try_acquire_for(false) {
                    Some(lease) => lease.conn,
                    None => return None,
                }
            } else {
                let addr = dedicated.addr.as_ref()?;
                self.endpoint.open_at(addr, &self.conn_config).await.ok()?
            };
            conn.send_packed_command(&cmd).await.ok()
        };
        match tokio::time::timeout(self.response_timeout, asked).await {
            Ok(Some(redis::Value::Int(1))) => Unblock::Unblocked,
            Ok(Some(redis::Value::Int(_))) => Unblock::NotBlocked,
            Ok(None) if !pooled && dedicated.addr.is_none() => Unblock::Unsupported,
            _ => Unblock::NoAnswer,
        }
    }

    /// Returns a dedicated connection whose blocking command completed normally (kept for the
    /// next one unless its credentials were renewed meanwhile, since RESP2 cannot `AUTH` a
    /// blocked connection, or its master was replaced).
    pub(crate) fn return_dedicated(&self, conn: Dedicated) {
        if conn.round != self.endpoint.connector().round() || conn.epoch != self.endpoint.epoch() {
            return;
        }
        let mut idle = self.blocking_idle.lock().expect("idle lock");
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(conn);
        }
    }

    /// Puts `conn` in `slot`; `false` (and nothing done) if it was opened for a master that has
    /// been replaced since.
    fn install(
        &self,
        slot: usize,
        conn: MultiplexedConnection,
        epoch: u64,
        replica: Option<sentinel::Addr>,
    ) -> bool {
        if epoch != self.endpoint.epoch() {
            return false;
        }
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        // Not measured yet (a replica is not read from until it is, when a lag bound is set).
        self.slots[slot]
            .measured
            .reset(self.max_replica_lag.is_some() && slot >= self.masters);
        // A cluster node's own measure too: a replica that reconnects (restarted, perhaps
        // resyncing with stale data) is not read from until measured again; the master of a
        // shard ignores the flag.
        self.measured.reset(self.max_replica_lag.is_some());
        *self.slots[slot].live.write().expect("slot lock") = Some(Live {
            conn,
            generation,
            epoch,
            replica: replica.map(|(host, port)| crate::addr::join_addr(&host, port).into()),
        });
        self.slots[slot]
            .current
            .store(generation, Ordering::Release);
        self.touch(slot);
        if slot < self.masters {
            let mut down = self.down.write().expect("down lock");
            down.since = None;
            down.auth_rejected = false;
            self.down_since.store(0, Ordering::Relaxed);
        }
        self.ready.send_modify(|g| *g = generation);
        true
    }

    /// The group commit state of the connection `lease` (see [`wait_group`]): shared by every
    /// durable write on it; a lease of a connection already replaced gets one of its own.
    pub(crate) fn wait_group(&self, lease: LeaseId) -> Arc<WaitGroup> {
        let slot = &self.slots[lease.slot];
        let mut group = slot.durable.lock().expect("wait group lock");
        match group.as_ref() {
            Some(g) if g.generation() == lease.generation => g.clone(),
            _ if slot.current.load(Ordering::Acquire) == lease.generation => {
                let fresh = Arc::new(WaitGroup::new(lease.generation));
                *group = Some(fresh.clone());
                fresh
            }
            _ => Arc::new(WaitGroup::new(lease.generation)),
        }
    }

    /// Records that a reply arrived on `slot` (for the idle check).
    pub(crate) fn touch(&self, slot: usize) {
        let replied = &self.slots[slot].replied;
        if !replied.load(Ordering::Relaxed) {
            replied.store(true, Ordering::Relaxed);
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

    /// The server a connection in `slot` goes to, when the pool follows a Sentinel master
    /// (`Some(None)`: not known); `None` for a fixed address (the node's).
    pub(crate) fn sentinel_addr(&self, slot: usize) -> Option<Option<Arc<str>>> {
        match &self.endpoint {
            Endpoint::Fixed(_) => None,
            Endpoint::Sentinel(_) if slot >= self.masters => Some(
                self.slots[slot]
                    .live
                    .read()
                    .expect("slot lock")
                    .as_ref()
                    .and_then(|l| l.replica.clone()),
            ),
            Endpoint::Sentinel(_) => Some(
                self.endpoint
                    .master_addr()
                    .map(|((host, port), _)| crate::addr::join_addr(&host, port).into()),
            ),
        }
    }

    /// Live connections (masters' and replicas'), parked connections for blocking commands,
    /// and calls waiting for a connection: what the connection gauges show.
    pub(crate) fn occupancy(&self) -> (usize, usize, usize) {
        let live = self
            .slots
            .iter()
            .filter(|s| s.current.load(Ordering::Relaxed) != 0)
            .count();
        let idle = self.blocking_idle.lock().expect("idle lock").len();
        (live, idle, self.waiting.load(Ordering::Relaxed))
    }

    /// The last connection error, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.down.read().expect("down lock").last_error.clone()
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

/// The error of a call that fails fast because the server is known to be down (or has been
/// rejecting the credentials: `auth_rejected`).
fn unavailable(down_for: Duration, last_error: Option<&str>, auth_rejected: bool) -> Error {
    let last = last_error.unwrap_or("no connection yet");
    let secs = down_for.as_secs_f64();
    if auth_rejected {
        return Error::new(
            ErrorKind::Auth,
            Outcome::Failed,
            format!(
                "the server has rejected the credentials for {secs:.1} s (last error: {last}); \
                 failing fast until it accepts them"
            ),
        );
    }
    Error::new(
        ErrorKind::Unavailable,
        Outcome::Failed,
        format!(
            "server unreachable for {secs:.1} s (last error: {last}); failing fast until it is back"
        ),
    )
}
