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

use std::{
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
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
    config::ClientConfig,
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
}

struct Slot {
    live: RwLock<Option<Live>>,
    /// Milliseconds since the pool's origin of the last reply on this slot.
    last_reply_ms: AtomicU64,
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

/// How many idle dedicated connections for blocking commands are kept.
const MAX_IDLE_BLOCKING: usize = 16;

type ProbeFuture = Shared<futures::future::BoxFuture<'static, StallVerdict>>;

/// Connection state that callers and the reconnector share.
struct Down {
    since: Option<Instant>,
    last_error: Option<String>,
}

pub(crate) struct Pool {
    client: redis::Client,
    conn_config: AsyncConnectionConfig,
    response_timeout: Duration,
    unavailable_after: Duration,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    generation: AtomicU64,
    ready: watch::Sender<u64>,
    wake: Arc<Notify>,
    down: Mutex<Down>,
    probe: Mutex<Option<ProbeFuture>>,
    busy_gate: Mutex<Option<Shared<futures::future::BoxFuture<'static, ()>>>>,
    /// Idle dedicated connections for blocking commands, reused so a consumer looping on BLPOP
    /// does not open a connection per call.
    blocking_idle: Mutex<Vec<MultiplexedConnection>>,
    origin: Instant,
    pub(crate) reconnects: AtomicU64,
}

impl Pool {
    /// Builds the pool and, unless `lazily`, opens the first connection (a clear error if the
    /// server cannot be reached or rejects the credentials). Starts the background task.
    pub(crate) async fn start(config: &ClientConfig) -> Result<Arc<Pool>, Error> {
        let info = config.connection_info()?;
        let client = redis::Client::open(info).map_err(|e| {
            Error::config(format!("invalid connection settings for {}", config.url)).with_source(e)
        })?;
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(None);
        let slots = (0..config.pool_size)
            .map(|_| Slot {
                live: RwLock::new(None),
                last_reply_ms: AtomicU64::new(0),
            })
            .collect();
        let pool = Arc::new(Pool {
            client,
            conn_config,
            response_timeout: config.response_timeout,
            unavailable_after: config.unavailable_after,
            slots,
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            ready: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
            down: Mutex::new(Down {
                since: Some(Instant::now()),
                last_error: None,
            }),
            probe: Mutex::new(None),
            busy_gate: Mutex::new(None),
            blocking_idle: Mutex::new(Vec::new()),
            origin: Instant::now(),
            reconnects: AtomicU64::new(0),
        });
        if !config.connect_lazily {
            let conn = pool
                .open()
                .await
                .map_err(|e| connect_error(&config.url, e))?;
            pool.install(0, conn);
        }
        let rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        tokio::spawn(reconnector(
            Arc::downgrade(&pool),
            pool.wake.clone(),
            config.reconnect_backoff,
            config.idle_check_interval,
            rng,
        ));
        pool.wake.notify_one();
        Ok(pool)
    }

    /// Opens one new multiplexed connection.
    async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.conn_config)
            .await
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

    fn install(&self, slot: usize, conn: MultiplexedConnection) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.slots[slot].live.write().expect("slot lock") = Some(Live { conn, generation });
        self.touch(slot);
        {
            let mut down = self.down.lock().expect("down lock");
            down.since = None;
        }
        self.ready.send_modify(|g| *g = generation);
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Records that a reply arrived on `slot` (for the idle check).
    pub(crate) fn touch(&self, slot: usize) {
        self.slots[slot]
            .last_reply_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    fn try_lease(&self) -> Option<Lease> {
        let n = self.slots.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        for i in 0..n {
            let slot = (start + i) % n;
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

    /// A live connection, waiting up to `deadline` for a reconnection when there is none.
    pub(crate) async fn acquire(&self, deadline: Option<Instant>) -> Result<Lease, Error> {
        if let Some(lease) = self.try_lease() {
            return Ok(lease);
        }
        loop {
            // Subscribe before looking again, so a reconnection in between is not missed.
            let mut ready = self.ready.subscribe();
            if let Some(lease) = self.try_lease() {
                return Ok(lease);
            }
            let (since, last_error) = {
                let down = self.down.lock().expect("down lock");
                (down.since, down.last_error.clone())
            };
            let last = last_error.unwrap_or_else(|| "no connection yet".to_owned());
            if let Some(since) = since
                && since.elapsed() >= self.unavailable_after
            {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    Outcome::Failed,
                    format!(
                        "server unreachable for {:.1} s (last error: {last}); failing fast until it is back",
                        since.elapsed().as_secs_f64()
                    ),
                ));
            }
            self.wake.notify_one();
            let changed = ready.changed();
            let waited = match deadline {
                Some(d) => tokio::time::timeout_at(d, changed).await.ok(),
                None => Some(changed.await),
            };
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
            drop(live);
            tracing::debug!(slot = lease.slot, why, "connection marked broken");
            self.note_down(why);
            self.wake.notify_one();
        }
    }

    fn note_down(&self, why: &str) {
        let any_live = self
            .slots
            .iter()
            .any(|s| s.live.read().expect("slot lock").is_some());
        let mut down = self.down.lock().expect("down lock");
        if !any_live && down.since.is_none() {
            down.since = Some(Instant::now());
        }
        down.last_error = Some(why.to_owned());
    }

    /// How many slots hold a live connection, and how many slots there are.
    pub(crate) fn connections(&self) -> (usize, usize) {
        let up = self
            .slots
            .iter()
            .filter(|s| s.live.read().expect("slot lock").is_some())
            .count();
        (up, self.slots.len())
    }

    /// The last connection error, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.down.lock().expect("down lock").last_error.clone()
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
                                Ok(redis::Value::ServerError(e))
                                    if matches!(e.code(), "BUSY" | "LOADING") => {}
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

    /// Live slots idle for longer than `interval`.
    fn idle_slots(&self, interval: Duration) -> Vec<Lease> {
        let now = self.now_ms();
        let limit = interval.as_millis() as u64;
        (0..self.slots.len())
            .filter_map(|i| {
                let slot = &self.slots[i];
                let idle = now.saturating_sub(slot.last_reply_ms.load(Ordering::Relaxed)) >= limit;
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

fn connect_error(url: &str, e: redis::RedisError) -> Error {
    let (kind, what) = match e.kind() {
        redis::ErrorKind::AuthenticationFailed => (ErrorKind::Auth, "authentication failed"),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
            (ErrorKind::Auth, "permission denied")
        }
        _ if e.code() == Some("WRONGPASS") || e.code() == Some("NOAUTH") => {
            (ErrorKind::Auth, "authentication failed")
        }
        _ => (ErrorKind::Unavailable, "cannot connect"),
    };
    Error::new(kind, Outcome::Failed, format!("{what} to {url}")).with_source(e)
}

/// The background task of a pool: reconnects dead slots, one at a time, and checks idle ones.
async fn reconnector(
    pool: Weak<Pool>,
    wake: Arc<Notify>,
    backoff: resilience::Backoff,
    idle_check: Option<Duration>,
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
            if tokio::time::timeout(wait, wake.notified()).await.is_err() {
                // Idle check: PING connections that have not seen a reply for a while.
                let Some(p) = pool.upgrade() else { return };
                if let Some(interval) = idle_check {
                    check_idle(&p, interval).await;
                }
            }
            continue;
        }
        for slot in dead {
            match p.open().await {
                Ok(conn) => {
                    p.install(slot, conn);
                    p.reconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("resilient_redis_reconnects_total").increment(1);
                    tracing::info!(slot, "reconnected");
                    failures = 0;
                    previous = None;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    p.note_down(&e.to_string());
                    let delay = backoff.delay(failures, previous, &mut rng);
                    previous = Some(delay);
                    tracing::debug!(slot, error = %e, ?delay, "reconnect failed");
                    metrics::counter!("resilient_redis_reconnect_failures_total").increment(1);
                    drop(p);
                    tokio::time::sleep(delay).await;
                    break;
                }
            }
        }
    }
}

async fn check_idle(pool: &Arc<Pool>, interval: Duration) {
    for mut lease in pool.idle_slots(interval) {
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
