//! [`SentinelResolver`]: finds the master of a Sentinel deployment and follows its failovers.
//!
//! # Behavior
//! - Discovery asks the known sentinels in turn (the last one that answered first) for
//!   `SENTINEL GET-MASTER-ADDR-BY-NAME`, and confirms with `ROLE` that the node it names is a
//!   master before using it. The same round learns the other sentinels (`SENTINEL SENTINELS`)
//!   and the healthy replicas (`SENTINEL REPLICAS`).
//! - One pub/sub connection per known sentinel listens for `+switch-master`. The first
//!   announcement of a new address switches at once: the pool's background task drops every
//!   connection to the old master and connects to the new one without backoff. A subscription
//!   that breaks is re-established with jittered backoff, followed by a rediscovery (a switch may
//!   have been announced while it was down).
//! - Failures (a dead connection, a timeout, a `READONLY` reply, a connection refused) ask for a
//!   rediscovery. Requests are coalesced into one background task, which runs at most once per
//!   `rediscover_interval` plus a random extra of up to the same time, so a failure seen by many
//!   callers (or many clients) does not become a stampede on the sentinels. The topology is also
//!   refreshed every [`REFRESH_EVERY`].
//! - Every task stops when the resolver is dropped (with the client's last clone).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use redis::{AsyncConnectionConfig, RedisResult, aio::MultiplexedConnection};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::{
    Connector,
    role::{Role, role},
};
use crate::{
    config::{ClientConfig, SentinelConfig, Transport},
    error::{Error, ErrorKind, Outcome},
};

/// The topology is refreshed at least this often, failures or not.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// A host and port.
pub(crate) type Addr = (String, u16);

/// The master as the resolver knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Master {
    /// Its address; `None` before the first discovery.
    pub(crate) addr: Option<Addr>,
    /// Incremented each time the address changes.
    pub(crate) epoch: u64,
}

/// What the resolver knows, for [`Client::health`](crate::Client::health).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TopologyView {
    pub(crate) master: Option<Addr>,
    pub(crate) replicas: Vec<Addr>,
    pub(crate) sentinels: Vec<Addr>,
}

#[derive(Default)]
struct Known {
    sentinels: Vec<Addr>,
    replicas: Vec<Addr>,
    /// Index in `sentinels` of the last sentinel that answered: asked first next time.
    preferred: usize,
}

/// Finds the master through the sentinels and follows its failovers.
pub(crate) struct SentinelResolver {
    config: SentinelConfig,
    /// Opens connections to the data nodes: their settings and credentials; the address is
    /// the master's or a replica's.
    connector: Connector,
    /// Plain TCP or TLS to the master and replicas (as the URL says).
    data_transport: Transport,
    /// Plain TCP or TLS to the sentinels ([`SentinelConfig::sentinel_tls`]).
    sentinel_transport: Transport,
    sentinel_conn_config: AsyncConnectionConfig,
    response_timeout: Duration,
    master: watch::Sender<Master>,
    known: Mutex<Known>,
    watched: Mutex<HashSet<Addr>>,
    rediscover: Arc<Notify>,
    /// Never sent to: its receivers see `changed()` fail when the resolver is dropped, which
    /// ends the background tasks.
    alive: watch::Sender<()>,
    rng: Mutex<SmallRng>,
    /// Round-robin over the known replicas.
    next_replica: AtomicUsize,
    /// With [`ReadFrom::Zone`](crate::ReadFrom::Zone): the nodes' zones and the caller's.
    zone: Option<(HashMap<String, String>, Arc<str>)>,
    /// Discovery rounds run (each asks the sentinels in turn until one answers).
    discoveries: AtomicU64,
    /// [`ReadFrom::Nearest`](crate::ReadFrom::Nearest): replica connections go to the replica
    /// that answers first.
    nearest: bool,
    /// The replicas a failover may promote, for durable writes (see [`super::promotable`]).
    promotable: super::promotable::Promotable,
}

impl SentinelResolver {
    /// Builds the resolver and starts its tasks. Unless `config.connect_lazily`, a first
    /// discovery must find a confirmed master.
    pub(crate) async fn start(
        config: &ClientConfig,
        sentinel: SentinelConfig,
        template: redis::ConnectionInfo,
    ) -> Result<Arc<SentinelResolver>, Error> {
        let rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x5e17_1e1a),
            None => rand::make_rng(),
        };
        let known = Known {
            sentinels: sentinel.sentinels.clone(),
            ..Known::default()
        };
        let sentinel_transport = config.sentinel_transport(&sentinel)?;
        let data_transport = Transport::of(template.addr());
        let connector = Connector::new(config, template);
        let resolver = Arc::new(SentinelResolver {
            sentinel_conn_config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout)),
            response_timeout: config.response_timeout,
            config: sentinel,
            connector,
            data_transport,
            sentinel_transport,
            master: watch::channel(Master::default()).0,
            known: Mutex::new(known),
            watched: Mutex::new(HashSet::new()),
            rediscover: Arc::new(Notify::new()),
            alive: watch::channel(()).0,
            rng: Mutex::new(rng),
            next_replica: AtomicUsize::new(0),
            zone: match &config.read_from {
                crate::ReadFrom::Zone(mine) => Some((config.zones.clone(), mine.clone())),
                _ => None,
            },
            discoveries: AtomicU64::new(0),
            nearest: config.read_from == crate::ReadFrom::Nearest,
            promotable: super::promotable::Promotable::default(),
        });
        let initial = resolver.config.sentinels.clone();
        for addr in initial {
            resolver.watch(addr);
        }
        if !config.connect_lazily {
            resolver.discover_once().await.map_err(|why| {
                Error::new(
                    ErrorKind::Unavailable,
                    Outcome::Failed,
                    format!(
                        "no sentinel named a reachable master {:?}: {why}",
                        resolver.config.master_name
                    ),
                )
            })?;
        }
        tokio::spawn(discovery_loop(
            Arc::downgrade(&resolver),
            resolver.rediscover.clone(),
            resolver.alive.subscribe(),
            resolver.config.rediscover_interval,
        ));
        if config.connect_lazily {
            resolver.request_rediscovery();
        }
        Ok(resolver)
    }

    /// How connections to the data nodes are opened.
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The master as known now.
    pub(crate) fn master(&self) -> Master {
        self.master.borrow().clone()
    }

    /// Master changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Master> {
        self.master.subscribe()
    }

    /// The count of promotable replicas (see [`super::promotable`]).
    pub(super) fn promotable(&self) -> &super::promotable::Promotable {
        &self.promotable
    }

    /// A receiver whose `changed()` fails once the resolver is dropped (see [`dropped`]).
    pub(super) fn alive(&self) -> watch::Receiver<()> {
        self.alive.subscribe()
    }

    /// The known sentinels, and the index of the one to ask first.
    pub(super) fn known_sentinels(&self) -> (Vec<Addr>, usize) {
        let known = self.known.lock().expect("known lock");
        (known.sentinels.clone(), known.preferred)
    }

    /// The monitored master's name.
    pub(super) fn master_name(&self) -> &str {
        &self.config.master_name
    }

    /// How long a sentinel or a server has to answer.
    pub(super) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// A new connection to the sentinel at `addr`.
    pub(super) async fn sentinel_connection(
        &self,
        addr: &Addr,
    ) -> RedisResult<MultiplexedConnection> {
        self.sentinel_client(addr)?
            .get_multiplexed_async_connection_with_config(&self.sentinel_conn_config)
            .await
    }

    /// Asks the background task for a rediscovery (coalesced and rate-limited).
    pub(crate) fn request_rediscovery(&self) {
        self.rediscover.notify_one();
    }

    pub(crate) fn view(&self) -> TopologyView {
        let known = self.known.lock().expect("known lock");
        TopologyView {
            master: self.master().addr,
            replicas: known.replicas.clone(),
            sentinels: known.sentinels.clone(),
        }
    }

    /// Opens a connection to the current master and checks with `ROLE` that it still is one.
    pub(crate) async fn open_master(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, u64)> {
        let master = self.master();
        let Some(addr) = master.addr else {
            self.request_rediscovery();
            return Err(not_connected(format!(
                "no master known yet for {:?}",
                self.config.master_name
            )));
        };
        let result = self.open_confirmed(&addr, conn_config).await;
        if result.is_err() {
            self.request_rediscovery();
        }
        result.map(|conn| (conn, master.epoch))
    }

    /// Opens a connection to one of the healthy replicas and checks with `ROLE` that it is one:
    /// they are tried in turn (starting from the next one each time), those nearest the caller
    /// first with [`ReadFrom::Zone`](crate::ReadFrom::Zone), until one connects.
    pub(crate) async fn open_replica(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, u64, Addr)> {
        let epoch = self.master().epoch;
        let mut candidates: Vec<Addr> = {
            let known = self.known.lock().expect("known lock");
            let n = known.replicas.len();
            if n == 0 {
                return Err(not_connected("no healthy replica known".to_owned()));
            }
            let first = self.next_replica.fetch_add(1, Ordering::Relaxed) % n;
            (0..n)
                .map(|i| known.replicas[(first + i) % n].clone())
                .collect()
        };
        if let Some((zones, mine)) = &self.zone {
            // A stable sort: the turn is kept among replicas equally near.
            candidates.sort_by_key(|(host, port)| {
                crate::config::zone_rank(zones, mine, &crate::addr::join_addr(host, *port))
            });
        }
        if self.nearest {
            return self
                .open_nearest_replica(&candidates, conn_config)
                .await
                .map(|(c, addr)| (c, epoch, addr));
        }
        let mut last = None;
        for addr in &candidates {
            match self.open_with_role(addr, conn_config, Role::Replica).await {
                Ok(conn) => return Ok((conn, epoch, addr.clone())),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| not_connected("no healthy replica known".to_owned())))
    }

    /// With [`ReadFrom::Nearest`](crate::ReadFrom::Nearest): connects to every candidate at
    /// once and keeps the connection that was ready first (its connect, handshake and `ROLE`
    /// took the fewest round trips' worth of time); the others are dropped.
    async fn open_nearest_replica(
        &self,
        candidates: &[Addr],
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, Addr)> {
        let mut attempts: futures::stream::FuturesUnordered<_> = candidates
            .iter()
            .map(|addr| async move {
                let opened = self.open_with_role(addr, conn_config, Role::Replica).await;
                opened.map(|conn| (conn, addr.clone()))
            })
            .collect();
        let mut last = None;
        while let Some(opened) = futures::StreamExt::next(&mut attempts).await {
            match opened {
                Ok(opened) => return Ok(opened),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| not_connected("no healthy replica known".to_owned())))
    }

    /// A subscriber's connection to the current master, and when its credentials are due for
    /// renewal. (Not checked with `ROLE`: messages published on the master reach its replicas
    /// too, and a switch makes the subscriber move anyway.)
    pub(crate) async fn open_master_subscriber(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, Option<Instant>)> {
        let Some(addr) = self.master().addr else {
            self.request_rediscovery();
            return Err(not_connected(format!(
                "no master known yet for {:?}",
                self.config.master_name
            )));
        };
        let addr = self.data_transport.addr(&addr.0, addr.1);
        let result = self
            .connector
            .open_subscriber(Some(&addr), conn_config)
            .await;
        if result.is_err() {
            self.request_rediscovery();
        }
        result
    }

    /// A connection to `addr`, if `ROLE` says it is a master.
    async fn open_confirmed(
        &self,
        addr: &Addr,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        self.open_with_role(addr, conn_config, Role::Primary).await
    }

    /// A connection to `addr`, whatever its role.
    pub(crate) async fn open_at(
        &self,
        addr: &Addr,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let node = self.data_transport.addr(&addr.0, addr.1);
        self.connector.open(Some(&node), conn_config).await
    }

    /// A connection to `addr`, if `ROLE` says it is a `role`.
    async fn open_with_role(
        &self,
        addr: &Addr,
        conn_config: &AsyncConnectionConfig,
        expected: Role,
    ) -> RedisResult<MultiplexedConnection> {
        let node = self.data_transport.addr(&addr.0, addr.1);
        let mut conn = self.connector.open(Some(&node), conn_config).await?;
        let role = role(&mut conn, self.response_timeout)
            .await
            .map_err(|_| not_connected(format!("no ROLE reply from {}:{}", addr.0, addr.1)))?;
        if role == expected {
            Ok(conn)
        } else {
            Err(not_connected(format!(
                "{}:{} is not a {} (ROLE says {})",
                addr.0,
                addr.1,
                expected.name(),
                role.name()
            )))
        }
    }

    /// Follows a `+switch-master` announcement (`<name> <old-ip> <old-port> <new-ip> <new-port>`).
    fn on_switch_master(&self, payload: &str) {
        let Some((ip, port)) = parse_switch(payload, &self.config.master_name) else {
            return;
        };
        if self.set_master((ip.clone(), port)) {
            tracing::info!(master = %format!("{ip}:{port}"), "sentinel announced +switch-master");
        }
        // Refresh the replicas and sentinels (not urgent, rate-limited).
        self.request_rediscovery();
    }

    /// Switches to `addr`; `true` if it is a change.
    fn set_master(&self, addr: Addr) -> bool {
        let changed = self.master.send_if_modified(|m| {
            if m.addr.as_ref() == Some(&addr) {
                return false;
            }
            m.addr = Some(addr);
            m.epoch += 1;
            true
        });
        if changed {
            metrics::counter!(crate::observe::MASTER_SWITCHES).increment(1);
        }
        changed
    }

    /// Asks the known sentinels in turn; the first that names a confirmed master wins.
    async fn discover_once(self: &Arc<Self>) -> Result<(), String> {
        self.discoveries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::observe::SENTINEL_DISCOVERIES).increment(1);
        let (sentinels, preferred) = {
            let known = self.known.lock().expect("known lock");
            (known.sentinels.clone(), known.preferred)
        };
        let mut errors = Vec::new();
        let n = sentinels.len();
        for i in 0..n {
            let index = (preferred + i) % n;
            let sentinel = &sentinels[index];
            match self.ask(sentinel).await {
                Ok((Some(master), others, replicas)) => {
                    self.learn(index, others, replicas);
                    if self.master().addr.as_ref() == Some(&master) {
                        return Ok(());
                    }
                    // Confirm before switching; the pool confirms again on each connection.
                    let check = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.response_timeout))
                        .set_response_timeout(None);
                    match self.open_confirmed(&master, &check).await {
                        Ok(_) => {
                            if self.set_master(master.clone()) {
                                tracing::info!(master = %format!("{}:{}", master.0, master.1), "master discovered through sentinel");
                            }
                            return Ok(());
                        }
                        Err(e) => errors.push(format!("{}:{}: {e}", sentinel.0, sentinel.1)),
                    }
                }
                Ok((None, others, replicas)) => {
                    self.learn(index, others, replicas);
                    errors.push(format!(
                        "{}:{} does not know the master",
                        sentinel.0, sentinel.1
                    ));
                }
                Err(e) => errors.push(format!("{}:{}: {e}", sentinel.0, sentinel.1)),
            }
        }
        if errors.is_empty() {
            errors.push("no sentinel configured".to_owned());
        }
        Err(errors.join("; "))
    }

    /// Records what a sentinel said, and watches the sentinels it knows.
    fn learn(self: &Arc<Self>, answered: usize, others: Vec<Addr>, replicas: Vec<Addr>) {
        let new: Vec<Addr> = {
            let mut known = self.known.lock().expect("known lock");
            known.preferred = answered;
            known.replicas = replicas;
            let new: Vec<Addr> = others
                .into_iter()
                .filter(|s| !known.sentinels.contains(s))
                .collect();
            known.sentinels.extend(new.iter().cloned());
            new
        };
        for addr in new {
            self.watch(addr);
        }
    }

    /// One sentinel's view: the master, the other sentinels and the healthy replicas.
    async fn ask(&self, sentinel: &Addr) -> RedisResult<(Option<Addr>, Vec<Addr>, Vec<Addr>)> {
        let mut conn = self
            .sentinel_client(sentinel)?
            .get_multiplexed_async_connection_with_config(&self.sentinel_conn_config)
            .await?;
        let name = &self.config.master_name;
        let master: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(name)
            .query_async(&mut conn)
            .await?;
        let nodes = |reply: RedisResult<Vec<HashMap<String, String>>>, healthy_only: bool| {
            reply
                .unwrap_or_default()
                .into_iter()
                .filter(|n| {
                    let flags = n.get("flags").map(String::as_str).unwrap_or("");
                    !healthy_only
                        || !flags
                            .split(',')
                            .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
                })
                .filter_map(|n| Some((n.get("ip")?.clone(), n.get("port")?.parse().ok()?)))
                .collect::<Vec<Addr>>()
        };
        let others = nodes(
            redis::cmd("SENTINEL")
                .arg("SENTINELS")
                .arg(name)
                .query_async(&mut conn)
                .await,
            false,
        );
        let replicas = nodes(
            redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(name)
                .query_async(&mut conn)
                .await,
            true,
        );
        Ok((master, others, replicas))
    }

    fn sentinel_client(&self, sentinel: &Addr) -> RedisResult<redis::Client> {
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(password) = &self.config.sentinel_password {
            settings = settings.set_password(password);
        }
        let info = self
            .connector
            .info()
            .clone()
            .set_addr(self.sentinel_transport.addr(&sentinel.0, sentinel.1))
            .set_redis_settings(settings);
        redis::Client::open(info)
    }

    /// Starts listening for `+switch-master` on `addr`, unless already listening.
    fn watch(self: &Arc<Self>, addr: Addr) {
        if self
            .watched
            .lock()
            .expect("watched lock")
            .insert(addr.clone())
        {
            tokio::spawn(watch_sentinel(
                Arc::downgrade(self),
                self.alive.subscribe(),
                addr,
            ));
        }
    }

    fn jitter(&self, upper: Duration) -> Duration {
        let ms = upper.as_millis().max(1) as u64;
        Duration::from_millis(self.rng.lock().expect("rng lock").random_range(0..=ms))
    }
}

/// The new master in a `+switch-master` payload for `name`.
fn parse_switch(payload: &str, name: &str) -> Option<Addr> {
    let fields: Vec<&str> = payload.split_whitespace().collect();
    match fields.as_slice() {
        [n, _, _, ip, port] if *n == name => Some((ip.to_string(), port.parse().ok()?)),
        _ => None,
    }
}

fn not_connected(message: String) -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::NotConnected, message).into()
}

/// Waits until the resolver is dropped.
pub(super) async fn dropped(alive: &mut watch::Receiver<()>) {
    while alive.changed().await.is_ok() {}
}

/// The single task that runs rediscoveries: coalesced, rate-limited and jittered.
async fn discovery_loop(
    resolver: Weak<SentinelResolver>,
    wake: Arc<Notify>,
    mut alive: watch::Receiver<()>,
    interval: Duration,
) {
    let mut last: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = dropped(&mut alive) => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
        if let Some(last) = last {
            let Some(r) = resolver.upgrade() else { return };
            let at = last + interval + r.jitter(interval);
            drop(r);
            tokio::select! {
                _ = dropped(&mut alive) => return,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        let Some(r) = resolver.upgrade() else { return };
        last = Some(Instant::now());
        if let Err(why) = r.discover_once().await {
            tracing::debug!(why, "sentinel rediscovery found no new master");
        }
    }
}

/// Listens for `+switch-master` on one sentinel, re-subscribing when the connection breaks.
async fn watch_sentinel(
    resolver: Weak<SentinelResolver>,
    mut alive: watch::Receiver<()>,
    addr: Addr,
) {
    let mut failures: u32 = 0;
    loop {
        let Some(r) = resolver.upgrade() else { return };
        let client = r.sentinel_client(&addr);
        let timeout = r.response_timeout * 2;
        drop(r);
        let subscribe = async {
            let mut pubsub = tokio::time::timeout(timeout, client?.get_async_pubsub())
                .await
                .map_err(|_| not_connected("sentinel pub/sub connect timed out".into()))??;
            pubsub.subscribe("+switch-master").await?;
            RedisResult::Ok(pubsub)
        };
        let subscribed = tokio::select! {
            _ = dropped(&mut alive) => return,
            s = subscribe => s,
        };
        match subscribed {
            Ok(pubsub) => {
                tracing::debug!(sentinel = %format!("{}:{}", addr.0, addr.1), "subscribed to +switch-master");
                if failures > 0 {
                    // A switch may have been announced while we were not listening.
                    if let Some(r) = resolver.upgrade() {
                        r.request_rediscovery();
                    }
                }
                failures = 0;
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        _ = dropped(&mut alive) => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    let Some(r) = resolver.upgrade() else { return };
                    if let Ok(payload) = message.get_payload::<String>() {
                        r.on_switch_master(&payload);
                    }
                }
                tracing::debug!(sentinel = %format!("{}:{}", addr.0, addr.1), "sentinel pub/sub connection lost");
            }
            Err(e) => {
                tracing::debug!(sentinel = %format!("{}:{}", addr.0, addr.1), error = %e, "cannot subscribe to sentinel");
            }
        }
        failures = failures.saturating_add(1);
        let Some(r) = resolver.upgrade() else { return };
        // 50 ms doubling up to 2 s, plus up to as much again at random.
        let base = Duration::from_millis(50) * 2u32.saturating_pow(failures.min(6));
        let base = base.min(Duration::from_secs(2));
        let delay = base + r.jitter(base);
        drop(r);
        tokio::select! {
            _ = dropped(&mut alive) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure seen by a thousand callers is one rediscovery per `rediscover_interval` (plus
    /// jitter), not a thousand.
    #[tokio::test(start_paused = true)]
    async fn rediscovery_is_rate_limited() {
        let config = ClientConfig {
            connect_lazily: true,
            rng_seed: Some(7),
            ..ClientConfig::default()
        };
        let sentinel = SentinelConfig {
            // Nothing listens on port 1: every discovery fails at once.
            sentinels: vec![("127.0.0.1".to_owned(), 1)],
            ..SentinelConfig::default()
        };
        let template = config.connection_info().unwrap();
        let resolver = SentinelResolver::start(&config, sentinel, template)
            .await
            .unwrap();
        for _ in 0..100 {
            for _ in 0..10 {
                resolver.request_rediscovery();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // 1 s with requests all the time, rounds at least 100 ms apart (100 to 200 with jitter).
        let rounds = resolver.discoveries.load(Ordering::Relaxed);
        assert!((5..=11).contains(&rounds), "{rounds} discoveries");
        assert_eq!(resolver.master(), Master::default());
    }

    #[test]
    fn switch_payload() {
        let p = "mymaster 127.0.0.1 6379 127.0.0.1 6380";
        assert_eq!(
            parse_switch(p, "mymaster"),
            Some(("127.0.0.1".into(), 6380))
        );
        assert_eq!(parse_switch(p, "other"), None);
        assert_eq!(parse_switch("mymaster 1 2 3", "mymaster"), None);
        assert_eq!(
            parse_switch("mymaster a 1 b port", "mymaster"),
            None,
            "bad port"
        );
    }
}
