//! [`FaultProxy`]: a TCP proxy on loopback that injects faults between a client and Redis.

mod bucket;
mod conn;
mod resp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::error::LabError;
use crate::util::loopback;
use bucket::TokenBucket;

/// Counters of a [`FaultProxy`] since it started or since [`FaultProxy::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Connections the proxy cut on purpose ([`FaultProxy::drop_all`], [`FaultProxy::set_drop_every`]).
    pub connections_dropped: u64,
    /// Commands forwarded to the upstream server.
    pub commands_forwarded: u64,
    /// Commands answered with `-THROTTLED` by the proxy itself.
    pub commands_throttled: u64,
    /// Bytes written to upstream servers.
    pub bytes_to_server: u64,
    /// Bytes written to clients (upstream replies and local `-THROTTLED` replies).
    pub bytes_to_client: u64,
    /// Bytes from clients that a blackhole swallowed.
    pub bytes_blackholed: u64,
}

/// The atomics behind [`ProxyStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_dropped: AtomicU64,
    pub(crate) commands_forwarded: AtomicU64,
    pub(crate) commands_throttled: AtomicU64,
    pub(crate) bytes_to_server: AtomicU64,
    pub(crate) bytes_to_client: AtomicU64,
    pub(crate) bytes_blackholed: AtomicU64,
}

/// `latency_nanos` value meaning "no latency".
const NO_LATENCY: u64 = u64::MAX;

/// State shared by the accept loop, every connection and the [`FaultProxy`] handle.
/// How many accept times a proxy remembers.
const MAX_ACCEPT_TIMES: usize = 1_000_000;

#[derive(Debug)]
pub(crate) struct Shared {
    upstream: Mutex<SocketAddr>,
    latency_nanos: AtomicU64,
    /// 0 = off.
    drop_every: AtomicU64,
    /// Connections accepted since the last `set_drop_every`.
    accept_seq: AtomicU64,
    blackhole: AtomicBool,
    throttle: Mutex<Option<TokenBucket>>,
    pub(crate) counters: Counters,
    /// When each connection was accepted (since start or the last `reset_stats`), up to
    /// [`MAX_ACCEPT_TIMES`].
    accept_times: Mutex<Vec<Instant>>,
    /// Bumped by `drop_all`; every connection closes when it changes.
    generation: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When a chunk read now may be delivered, or `None` without latency.
    pub(crate) fn due(&self) -> Option<Instant> {
        match self.latency_nanos.load(Ordering::Relaxed) {
            NO_LATENCY => None,
            nanos => Some(Instant::now() + Duration::from_nanos(nanos)),
        }
    }

    pub(crate) fn blackhole(&self) -> bool {
        self.blackhole.load(Ordering::Relaxed)
    }

    /// Whether the throttle lets one more command through now.
    pub(crate) fn admit(&self) -> bool {
        let mut throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        match throttle.as_mut() {
            None => true,
            Some(bucket) => bucket.try_take(Instant::now()),
        }
    }
}

/// A TCP proxy from a free loopback port to an upstream Redis, with switchable faults.
///
/// # Behavior
/// - Every accepted connection opens its own upstream connection to the upstream address
///   current at accept time ([`set_upstream`](Self::set_upstream) affects new connections).
/// - Requests and replies are parsed (RESP2/RESP3, inline commands), so commands are counted,
///   throttled replies are written in pipeline order and cuts happen inside a reply. A stream
///   that is not RESP is forwarded byte by byte (then nothing is counted or throttled).
/// - Faults can be switched at any time; all of them are off at start.
/// - Dropping the proxy stops accepting and closes every connection.
/// - Limitation: after `SUBSCRIBE`-like commands or `MONITOR` a connection no longer tracks
///   reply order, so `-THROTTLED` replies are written immediately there.
///
/// # Example
/// ```no_run
/// # async fn demo(server: std::net::SocketAddr) -> Result<(), redis_lab::LabError> {
/// let proxy = redis_lab::FaultProxy::start(server).await?;
/// proxy.set_throttle(Some(1000));
/// let client = redis::Client::open(proxy.url()).unwrap();
/// // ... run the client under test ...
/// println!("{:?}", proxy.stats());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:<free port>` forwarding to `upstream`. Needs a Tokio runtime.
    ///
    /// # Errors
    /// [`LabError::Io`] if no listening socket can be bound.
    pub async fn start(upstream: SocketAddr) -> Result<Self, LabError> {
        Self::start_on(loopback(0), upstream).await
    }

    /// Starts a proxy listening on `listen` (port 0 picks a free one) forwarding to `upstream`.
    ///
    /// # Errors
    /// [`LabError::Io`] if `listen` cannot be bound.
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> Result<Self, LabError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| LabError::io(format!("binding the proxy on {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LabError::io("reading the proxy's local address", e))?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            latency_nanos: AtomicU64::new(NO_LATENCY),
            drop_every: AtomicU64::new(0),
            accept_seq: AtomicU64::new(0),
            blackhole: AtomicBool::new(false),
            throttle: Mutex::new(None),
            counters: Counters::default(),
            accept_times: Mutex::new(Vec::new()),
            generation: watch::Sender::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, %upstream, "fault proxy started");
        Ok(Self {
            addr,
            shared,
            accept_task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://<addr>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The upstream that new connections go to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream()
    }

    /// Sends new connections to `upstream`; open connections keep their server.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = upstream;
    }

    /// Delays every chunk in both directions by `latency` (order kept; pipelines are not
    /// serialised, so throughput is unchanged). `None` removes the delay.
    pub fn set_latency(&self, latency: Option<Duration>) {
        let nanos = latency.map_or(NO_LATENCY, |l| {
            u64::try_from(l.as_nanos())
                .unwrap_or(NO_LATENCY - 1)
                .min(NO_LATENCY - 1)
        });
        self.shared.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Closes every open connection now, on both sides. Each closed connection adds one to
    /// [`ProxyStats::connections_dropped`] as its task observes the signal (within milliseconds).
    pub fn drop_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Cuts every `n`th connection accepted from now on in the middle of a reply: the first
    /// reply to a command other than `HELLO`/`AUTH`/`CLIENT`/`SELECT`/`READONLY`/`READWRITE`
    /// is forwarded half, then both sides are closed. `None` (or `Some(0)`) turns it off.
    pub fn set_drop_every(&self, n: Option<u64>) {
        self.shared.accept_seq.store(0, Ordering::Relaxed);
        self.shared
            .drop_every
            .store(n.unwrap_or(0), Ordering::Relaxed);
    }

    /// While on, accepted connections get no upstream and no answer: bytes are read and
    /// discarded. Open connections that see a byte while it is on stay blackholed until closed.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }

    /// Limits commands to `ops_per_sec` across all connections (token bucket, burst a tenth of
    /// the rate, at least 1); commands beyond it get `-THROTTLED too many requests` from the
    /// proxy, in pipeline order, and never reach the server. `None` (or `Some(0)`) turns it off.
    pub fn set_throttle(&self, ops_per_sec: Option<u32>) {
        let bucket = ops_per_sec
            .filter(|&n| n > 0)
            .map(|n| TokenBucket::new(n, Instant::now()));
        *self
            .shared
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = bucket;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            connections_dropped: c.connections_dropped.load(Ordering::Relaxed),
            commands_forwarded: c.commands_forwarded.load(Ordering::Relaxed),
            commands_throttled: c.commands_throttled.load(Ordering::Relaxed),
            bytes_to_server: c.bytes_to_server.load(Ordering::Relaxed),
            bytes_to_client: c.bytes_to_client.load(Ordering::Relaxed),
            bytes_blackholed: c.bytes_blackholed.load(Ordering::Relaxed),
        }
    }

    /// When each connection was accepted, oldest first, since the proxy started or the last
    /// [`reset_stats`](Self::reset_stats) (at most the first 1,000,000). For measuring how
    /// reconnections spread over time (thundering herds).
    pub fn accept_times(&self) -> Vec<Instant> {
        self.shared
            .accept_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets every counter to zero and forgets the accept times.
    pub fn reset_stats(&self) {
        self.shared
            .accept_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let c = &self.shared.counters;
        for counter in [
            &c.connections_accepted,
            &c.connections_dropped,
            &c.commands_forwarded,
            &c.commands_throttled,
            &c.bytes_to_server,
            &c.bytes_to_client,
            &c.bytes_blackholed,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns every connection task; aborting it closes them all.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    shared.counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut times = shared.accept_times.lock().unwrap_or_else(|p| p.into_inner());
                        if times.len() < MAX_ACCEPT_TIMES {
                            times.push(Instant::now());
                        }
                    }
                    let seq = shared.accept_seq.fetch_add(1, Ordering::Relaxed) + 1;
                    let every = shared.drop_every.load(Ordering::Relaxed);
                    let cut = every > 0 && seq.is_multiple_of(every);
                    let generation = shared.generation.subscribe();
                    connections.spawn(conn::run(Arc::clone(&shared), socket, cut, generation));
                }
                Err(error) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
