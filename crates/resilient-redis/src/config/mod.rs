//! Client configuration: a plain struct with [`Default`], typed durations, and constructors from a
//! URL or from environment variables. Every value is checked once, when the client is built.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use resilience::{AdaptiveThrottleConfig, Backoff, BreakerConfig, Jitter, RetryBudgetConfig};

use crate::{credentials::CredentialsProvider, error::Error};

mod cluster;
mod durability;
mod env;
mod read_from;
mod redact;
mod sentinel;
mod tls;
mod url_check;
mod url_forms;

pub use crate::replies::ErrorRule;
pub use cluster::ClusterConfig;
pub use durability::{DEFAULT_DURABILITY_TIMEOUT, Durability};
pub use env::ENV_VARS;
pub use read_from::ReadFrom;
pub(crate) use read_from::{nearest, zone_rank};
pub use redact::redact_url;
use sentinel::SENTINEL_PORT;
pub use sentinel::SentinelConfig;
pub use tls::TlsConfig;
pub(crate) use tls::Transport;
use url_forms::{parse_cluster_url, parse_sentinel_url};

/// Configuration of a [`Client`](crate::Client).
///
/// # Default
/// | setting | default | why |
/// |---|---|---|
/// | `url` | `redis://127.0.0.1:6379` | |
/// | `sentinel` | `None` (set by a `redis+sentinel://` URL) | see [`SentinelConfig`] |
/// | `cluster` | `None` (set by a `redis+cluster://` URL) | see [`ClusterConfig`] |
/// | `read_from` | [`ReadFrom::Master`] | every read sees the latest write; other modes read from replicas (Sentinel, Cluster) |
/// | `zones` | empty | the zones of the nodes, for [`ReadFrom::Zone`] |
/// | `max_replica_lag` | `None`: replicas are read however far behind | a bound on staleness: replicas further behind their master are skipped |
/// | `require_primary` | `true` | a single server's URL is a primary endpoint: after a failover behind the name, the client follows it instead of writing to the demoted node |
/// | `durability` | [`Durability::Fast`] | a write is acknowledged when the master replies; `Replicated` waits for replicas too (a failover cannot take it back) at the cost of a replica round trip per write |
/// | `tls` | `None`: a `rediss://` URL verifies the server against the system roots | see [`TlsConfig`] |
/// | `connect_timeout` | 1 s | a healthy server on a LAN answers a connect in milliseconds |
/// | `response_timeout` | 500 ms | redis-rs's default; past it the client checks whether the server or the connection is at fault (it does not re-send at once) |
/// | `deadline` | 5 s | total for one call, waits and retries included: rides out a restart, `DEBUG SLEEP 3`, or a Sentinel failover (about 2.5 s with `down-after-milliseconds 1000`) |
/// | `max_attempts` | 6 | attempts that reach the server; waiting for a reconnection is not an attempt |
/// | `retry_backoff` | exponential 10 ms x2 up to 1 s, full jitter | |
/// | `reconnect_backoff` | exponential 10 ms x2 up to 150 ms, equal jitter | a server back after an outage is found within ~150 ms (the first call succeeds within 250 ms even with callers in a tight loop on one thread); jitter spreads many clients |
/// | `unavailable_after` | 5 s | once the server has been unreachable this long, calls fail at once instead of waiting |
/// | `budget` | 10 % of successes, 10 retries/s floor, 1000 tokens | retries can add at most ~10 % load in a long outage; 1000 covers one retry for every in-flight call after a restart |
/// | `breaker` | opens when 50 % of the last 1000 attempts within 10 s (at least 50) failed for the server's fault; open 2 s; 3 probes | a rate, not a streak: a restart fails every in-flight call at once, which must not open it |
/// | `pool_size` | 1 | one multiplexed connection carries >100k ops/s; raise it for very large fan-in |
/// | `tcp_keepalive` | 10 s | |
/// | `tcp_nodelay` | `false` (redis-rs's default) | with many callers on one multiplexed connection, Nagle's algorithm merges their small writes into fewer packets: about 30 % less CPU per call at 50 callers on loopback; replies carry the ACKs, so request/response traffic is not delayed |
/// | `idle_check_interval` | 1 s | an idle connection is PINGed so a dead one is replaced before a caller needs it |
/// | `throttle_delay` | 100 ms | minimum wait after a `THROTTLED` reply |
/// | `credentials` | `None`: the URL's user and password | see [`crate::credentials`] |
/// | `client_name` | `None`: connections are not named | |
/// | `trace_keys` | `false`: no key in any span | keys are often personal data; values are never recorded |
/// | `span_level` | `DEBUG` | as tower-http's request spans: an application logging at `INFO` pays nothing for them (measured: a `fmt` subscriber that formats a span per call halves throughput at 50 callers) |
/// | `adaptive_throttle` | K = 2 over 10 s (10 buckets of 1 s) | the SRE book's default: while the server refuses work (`THROTTLED`, `BUSY`, `LOADING`), about twice what it accepts is still sent and the rest fails fast as [`ErrorKind::RejectedLocally`](crate::ErrorKind::RejectedLocally) |
#[derive(Clone)]
pub struct ClientConfig {
    /// The server: `redis://[[user]:password@]host[:port][/db]`, or a Sentinel deployment:
    /// `redis+sentinel://[[user]:password@]host1:port1[,host2:port2,...]/MASTERNAME[/db]`
    /// (sentinel ports default to 26379; user and password are those of the master and replicas,
    /// percent-encoded; the sentinels' own password is [`SentinelConfig::sentinel_password`]),
    /// or a Redis Cluster: `redis+cluster://[[user]:password@]host1:port1[,host2:port2,...]`
    /// (seed nodes; one that answers is enough).
    ///
    /// TLS: `rediss://`, `rediss+cluster://` and `rediss+sentinel://` (TLS to the data nodes and, unless
    /// [`SentinelConfig::sentinel_tls`] is cleared, to the sentinels). The server certificate is
    /// verified against [`ClientConfig::tls`]'s CA or the system roots; a `#insecure` fragment
    /// (`rediss://host:6380/#insecure`) turns verification off (see
    /// [`TlsConfig::insecure_skip_verify`] for why not to).
    pub url: String,
    /// Follow a Sentinel deployment instead of one fixed server. [`ClientConfig::from_url`] fills
    /// it from a `redis+sentinel://` URL. When it is set and `url` is a `redis://` URL, only the
    /// credentials and database of `url` are used (its host is ignored).
    pub sentinel: Option<SentinelConfig>,
    /// Follow a Redis Cluster instead of one fixed server. [`ClientConfig::from_url`] fills it
    /// from a `redis+cluster://` URL (see [`ClientConfig::cluster`] for a list of seed URLs).
    /// The credentials and TLS mode of `url` apply to every node.
    pub cluster: Option<ClusterConfig>,
    /// A single server's URL names a *primary* endpoint (the default): connections are kept
    /// only to a server that says it is a primary (`ROLE` on connect, and once per
    /// `idle_check_interval`), and a `READONLY` reply replaces every connection opened before
    /// it. After a failover behind one hostname (a managed service's primary endpoint, a DNS
    /// name or proxy that follows the primary), the client moves to the new primary within a
    /// round trip of the first `READONLY`, and the write that got it is retried there (it was
    /// not applied). Set `false` to use a replica's address on purpose (reads only). Not used
    /// with Sentinel (which checks roles itself) or a cluster (whose slot map does).
    pub require_primary: bool,
    /// Where read-only commands go (Sentinel and Cluster): see [`ReadFrom`].
    pub read_from: ReadFrom,
    /// The availability zone of each node, for [`ReadFrom::Zone`]: `host:port` (as the
    /// sentinels or the cluster name the node) or, on a Cluster, the node id (`CLUSTER MYID`,
    /// which survives a change of address) to zone. Nodes not in it are of unknown zone.
    pub zones: HashMap<String, String>,
    /// With replica reads: replicas further behind their master than this are not read from
    /// (reads go to another copy, as when a replica is dead). The client measures it every
    /// 250 ms in the background, from the replication offsets `INFO replication` gives on the
    /// master and each replica, turned into time (how long ago the master was where the
    /// replica is). A replica is skipped until first measured; while the master cannot be
    /// asked (a failover), replicas are held to how far behind they were when it last answered.
    /// `None`: no bound.
    pub max_replica_lag: Option<Duration>,
    /// When a write is acknowledged: when the master replies ([`Durability::Fast`]), or once
    /// replicas confirm it too ([`Durability::Replicated`]). Per handle:
    /// [`Client::with_durability`](crate::Client::with_durability).
    pub durability: Durability,
    /// Certificates for TLS: a private CA, a client certificate (mutual TLS). Only used with a
    /// `rediss://` or `rediss+sentinel://` URL (or [`SentinelConfig::sentinel_tls`]); setting it
    /// with a plain URL is an error, so a typo cannot silently send passwords in clear.
    pub tls: Option<TlsConfig>,
    /// Time allowed to open one connection (TCP connect and handshake).
    pub connect_timeout: Duration,
    /// Time to wait for a reply before checking, on a fresh connection, whether the server or this
    /// connection is at fault. The request is not cut or re-sent when the server is merely slow.
    pub response_timeout: Duration,
    /// Total time for one call, including waits for reconnection and retries.
    pub deadline: Duration,
    /// Attempts that reach the server, the first included.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub retry_backoff: Backoff,
    /// Delay between reconnection attempts (one reconnection at a time per client).
    pub reconnect_backoff: Backoff,
    /// When the server has been unreachable for this long, calls fail at once (`Unavailable`)
    /// instead of waiting for it; the background reconnection goes on.
    pub unavailable_after: Duration,
    /// The retry budget shared by every clone of the client; `None` disables it.
    pub budget: Option<RetryBudgetConfig>,
    /// The circuit breaker (one per node, built from this); `None` disables it. Its
    /// `state_gauge` is not used: the client publishes each node's breaker state itself
    /// ([`observe::BREAKER_STATE`](crate::observe::BREAKER_STATE)).
    pub breaker: Option<BreakerConfig>,
    /// Number of multiplexed connections; calls are spread over the live ones.
    pub pool_size: usize,
    /// TCP keepalive idle time; `None` leaves the system default.
    pub tcp_keepalive: Option<Duration>,
    /// `TCP_NODELAY` on the client's connections (off: Nagle's algorithm coalesces small writes).
    pub tcp_nodelay: bool,
    /// Idle connections are PINGed at this interval; `None` disables the check.
    pub idle_check_interval: Option<Duration>,
    /// Minimum wait before retrying after a `THROTTLED` reply.
    pub throttle_delay: Duration,
    /// Adaptive client-side throttling (Google SRE book, "Handling Overload"): while the server
    /// refuses work with overload replies (`THROTTLED`, `BUSY`, `LOADING`, or a
    /// [`ErrorRule::RetryAfter`] code), attempts are rejected locally with probability
    /// `max(0, (requests - K x accepts) / (requests + 1))` over the window, so a saturated server
    /// is not sent work it would refuse. `None` disables it. Costs one atomic load per attempt
    /// while the server accepts everything.
    pub adaptive_throttle: Option<AdaptiveThrottleConfig>,
    /// Extra rules for server error codes, by code (`"MYVENDORBUSY"` -> [`ErrorRule::Retry`]).
    /// They take precedence over the built-in rules.
    pub error_rules: HashMap<String, ErrorRule>,
    /// Seed for the jitter of retries and reconnections (deterministic tests); `None` seeds from
    /// the operating system.
    pub rng_seed: Option<u64>,
    /// If `true`, [`Client::with_config`](crate::Client::with_config) returns even when the server
    /// cannot be reached yet; calls then wait for it (up to their deadline).
    pub connect_lazily: bool,
    /// Where the credentials come from when they change: a [`CredentialsProvider`] asked before
    /// every connection and re-authentication ([`PasswordFile`](crate::credentials::PasswordFile),
    /// [`TokenProvider`](crate::credentials::TokenProvider), or your own). `None`: the URL's
    /// user and password. A provider's user name, when it gives none, is the URL's. See
    /// [`crate::credentials`] for what the client does with them.
    pub credentials: Option<Arc<dyn CredentialsProvider>>,
    /// The name of every connection the client opens (`CLIENT SETNAME`), shown by `CLIENT LIST`
    /// so operators see who is connected; `None` leaves them unnamed. Letters, digits and
    /// punctuation, no spaces (the server's rule). Each connection also says
    /// `CLIENT SETINFO lib-name resilient-redis` and `lib-ver` (this crate's version), on every
    /// server that knows the command (Redis 7.2 and later; older ones ignore it, at no cost:
    /// it rides in the connection's handshake). A server that refuses `SETNAME` (an ACL user
    /// without `+client|setname`) is asked once per pool: the connections work unnamed, and a
    /// warning says so. Pub/sub connections and redis-rs's cluster connection are not named
    /// (redis-rs sends no command of ours on them before they subscribe or route).
    pub client_name: Option<String>,
    /// Records each command's keys in its span's `db.query.text` (`SET user:1 ?`: every other
    /// argument is replaced by `?`, so values are never recorded). Off by default: keys often
    /// carry personal data. See [`crate::observe`].
    pub trace_keys: bool,
    /// The level of each call's span (see [`crate::observe`]); `None`: no span, whatever the
    /// subscriber wants. `DEBUG` by default: an application logging at `INFO` does not build a
    /// span per call; to export them (OpenTelemetry), enable `resilient_redis=debug` for the
    /// exporting layer, or set `INFO` here.
    pub span_level: Option<tracing::Level>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            sentinel: None,
            cluster: None,
            require_primary: true,
            read_from: ReadFrom::Master,
            zones: HashMap::new(),
            max_replica_lag: None,
            durability: Durability::Fast,
            tls: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(500),
            deadline: Duration::from_secs(5),
            max_attempts: 6,
            retry_backoff: Backoff::exponential(
                Duration::from_millis(10),
                2.0,
                Duration::from_secs(1),
            )
            .expect("valid constant backoff")
            .with_jitter(Jitter::Full),
            reconnect_backoff: Backoff::exponential(
                Duration::from_millis(10),
                2.0,
                Duration::from_millis(150),
            )
            .expect("valid constant backoff")
            .with_jitter(Jitter::Equal),
            unavailable_after: Duration::from_secs(5),
            budget: Some(RetryBudgetConfig {
                retry_ratio: 0.1,
                min_retries_per_sec: 10.0,
                max_tokens: 1000,
            }),
            breaker: Some(default_breaker()),
            pool_size: 1,
            tcp_keepalive: Some(Duration::from_secs(10)),
            tcp_nodelay: false,
            idle_check_interval: Some(Duration::from_secs(1)),
            throttle_delay: Duration::from_millis(100),
            adaptive_throttle: Some(AdaptiveThrottleConfig::default()),
            error_rules: HashMap::new(),
            rng_seed: None,
            connect_lazily: false,
            credentials: None,
            client_name: None,
            trace_keys: false,
            span_level: Some(tracing::Level::DEBUG),
        }
    }
}

/// The client's default breaker: it opens on a failure *rate*, not on a streak. A restart or a
/// `CLIENT KILL` fails every in-flight call at once, which is one event, not fifty: a streak rule
/// would open the breaker on every such blip and turn it into errors. Half of the last 1000
/// attempts within 10 s (at least 50 of them) failing for the server's fault opens it for 2 s.
fn default_breaker() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(0.5),
        window_calls: 1000,
        window_duration: Duration::from_secs(10),
        minimum_calls: 50,
        open_duration: Duration::from_secs(2),
        half_open_max_probes: 3,
        close_after_successes: 3,
        name: "resilient_redis".into(),
        // Published per node by the client instead.
        state_gauge: false,
    }
}

impl ClientConfig {
    /// The defaults with this server URL. The URL is checked here.
    ///
    /// ```
    /// let config = resilient_redis::ClientConfig::from_url("redis://127.0.0.1:6379/0")?;
    /// assert_eq!(config.deadline, std::time::Duration::from_secs(5));
    /// assert!(resilient_redis::ClientConfig::from_url("http://nope").is_err());
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    ///
    /// A `redis+sentinel://` URL also sets [`ClientConfig::sentinel`]:
    /// ```
    /// let config = resilient_redis::ClientConfig::from_url(
    ///     "redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2/mymaster/2",
    /// )?;
    /// let sentinel = config.sentinel.as_ref().unwrap();
    /// assert_eq!(sentinel.master_name, "mymaster");
    /// assert_eq!(sentinel.sentinels[1], ("10.0.0.2".to_owned(), 26379));
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    ///
    /// TLS: `rediss://` (and `rediss+sentinel://`, which also sets
    /// [`SentinelConfig::sentinel_tls`]); the server is verified against the system roots unless
    /// [`ClientConfig::tls`] names a CA (see [`TlsConfig`] for a private CA and mutual TLS):
    /// ```
    /// let config = resilient_redis::ClientConfig::from_url("rediss://:secret@10.0.0.1:6380/0")?;
    /// assert!(config.tls.is_none());
    /// let config = resilient_redis::ClientConfig::from_url("rediss+sentinel://10.0.0.1/mymaster")?;
    /// assert!(config.sentinel.unwrap().sentinel_tls);
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let mut config = ClientConfig {
            url: url.to_owned(),
            ..ClientConfig::default()
        };
        config.sentinel = parse_sentinel_url(url)?.map(|(sentinel, _)| sentinel);
        config.cluster = parse_cluster_url(url)?.map(|(seeds, _)| ClusterConfig {
            seeds,
            ..ClusterConfig::default()
        });
        config.connection_info()?;
        Ok(config)
    }

    /// What these settings add to the [reply table](crate::replies).
    pub(crate) fn reply_rules(&self) -> crate::replies::Rules<'_> {
        crate::replies::Rules {
            custom: &self.error_rules,
            throttle_delay: self.throttle_delay,
            renewable_credentials: self.credentials.is_some(),
        }
    }

    /// Checks every setting; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), Error> {
        self.connection_info()?;
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
        positive("unavailable_after", self.unavailable_after)?;
        if self.max_attempts == 0 {
            return Err(Error::config("max_attempts must be at least 1"));
        }
        if self.pool_size == 0 || self.pool_size > 1024 {
            return Err(Error::config(format!(
                "pool_size must be from 1 to 1024 (got {})",
                self.pool_size
            )));
        }
        if let Some(d) = self.idle_check_interval {
            positive("idle_check_interval", d)?;
        }
        self.durability.validate(self.response_timeout)?;
        if let Some(d) = self.tcp_keepalive {
            positive("tcp_keepalive", d)?;
        }
        if let Some(t) = &self.adaptive_throttle {
            t.validate()
                .map_err(|e| Error::config(format!("adaptive_throttle: {e}")))?;
        }
        if let Some(c) = &self.cluster {
            c.validate(self)?;
        }
        if let Some(name) = &self.client_name
            && (name.is_empty() || !name.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(Error::config(format!(
                "client_name {name:?}: a connection name is letters, digits and punctuation, without spaces"
            )));
        }
        if self.read_from.uses_replicas()
            && self.cluster.is_none()
            && parse_cluster_url(&self.url)?.is_none()
            && self.sentinel_config()?.is_none()
        {
            return Err(Error::config(format!(
                "read_from {:?} needs replicas: a Sentinel (redis+sentinel://) or Cluster (redis+cluster://) deployment; a single server has none",
                self.read_from
            )));
        }
        if let Some(lag) = self.max_replica_lag {
            if !self.read_from.uses_replicas() {
                return Err(Error::config(
                    "max_replica_lag bounds replica reads, but read_from is master: set read_from too",
                ));
            }
            positive("max_replica_lag", lag)?;
        }
        if let ReadFrom::Zone(zone) = &self.read_from
            && self.zones.is_empty()
        {
            return Err(Error::config(format!(
                "read_from zone:{zone} needs the nodes' zones (zones, env RESILIENT_REDIS_ZONES=host:port=ZONE,...)"
            )));
        }
        if let Some(s) = self.sentinel_config()? {
            if s.sentinels.is_empty() {
                return Err(Error::config(
                    "sentinel.sentinels must name at least one sentinel",
                ));
            }
            if s.master_name.is_empty() {
                return Err(Error::config("sentinel.master_name must not be empty"));
            }
            positive("sentinel.rediscover_interval", s.rediscover_interval)?;
            if self.tls.is_some()
                && !s.sentinel_tls
                && !Transport::of(self.connection_info()?.addr()).is_tls()
            {
                return Err(Error::config(
                    "tls is set but neither the data nodes (rediss+sentinel://) nor the sentinels (sentinel.sentinel_tls) use TLS",
                ));
            }
            self.sentinel_transport(&s)?;
        }
        Ok(())
    }

    /// The redis-rs connection info for the URL, with the TCP settings of this config.
    /// With Sentinel, the address is a placeholder that the client replaces with the master's.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo, Error> {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        let sentinel_data_url = parse_sentinel_url(&self.url)?.map(|(_, data_url)| data_url);
        let data_url = match &sentinel_data_url {
            Some(_) => sentinel_data_url.clone(),
            None => parse_cluster_url(&self.url)?.map(|(_, data_url)| data_url),
        };
        let url = data_url.as_deref().unwrap_or(&self.url).trim();
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://")
            || url.starts_with("redis+unix://"))
        {
            let shown = redact_url(url);
            return Err(Error::config(format!(
                "invalid URL {shown:?}: expected redis://[[user]:password@]host[:port][/db]"
            )));
        }
        let info = url.into_connection_info().map_err(|e| {
            let shown = redact_url(url);
            let problem = url_check::url_problem(url);
            Error::config(format!("invalid URL {shown:?}: {problem}")).with_source(e)
        })?;
        let tls_addr = match info.addr() {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => Some(Transport::tls(self.tls.as_ref(), *insecure)?.addr(host, *port)),
            // With Sentinel, `tls` may be for the sentinels only.
            _ if self.tls.is_some() && sentinel_data_url.is_none() && self.sentinel.is_none() => {
                return Err(Error::config(format!(
                    "tls is set but the URL {url:?} is not a rediss:// URL: use rediss:// for TLS"
                )));
            }
            _ => None,
        };
        let info = match tls_addr {
            Some(addr) => info.set_addr(addr),
            None => info,
        };
        // Operators see the library in `CLIENT LIST` (Redis 7.2+); redis-rs pipelines the
        // `CLIENT SETINFO` calls with its handshake and ignores their replies, so an older
        // server's "unknown subcommand" costs nothing.
        let settings = info
            .redis_settings()
            .clone()
            .set_lib_name(LIB_NAME, env!("CARGO_PKG_VERSION"));
        let info = info.set_redis_settings(settings);
        let mut tcp = redis::io::tcp::TcpSettings::default().set_nodelay(self.tcp_nodelay);
        if let Some(idle) = self.tcp_keepalive {
            tcp = tcp.set_keepalive(
                socket2::TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval(idle / 2 + Duration::from_millis(1)),
            );
        }
        Ok(info.set_tcp_settings(tcp))
    }
}

/// The `lib-name` every connection gives (`CLIENT SETINFO`).
pub(crate) const LIB_NAME: &str = "resilient-redis";

/// Shows everything but the password in the URL (see [`redact_url`]), and where credentials come
/// from (never what they are).
impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &redact_url(&self.url))
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("deadline", &self.deadline)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("unavailable_after", &self.unavailable_after)
            .field("budget", &self.budget)
            .field("breaker", &self.breaker)
            .field("pool_size", &self.pool_size)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("require_primary", &self.require_primary)
            .field("durability", &self.durability)
            .field("idle_check_interval", &self.idle_check_interval)
            .field("throttle_delay", &self.throttle_delay)
            .field("adaptive_throttle", &self.adaptive_throttle)
            .field("error_rules", &self.error_rules)
            .field("rng_seed", &self.rng_seed)
            .field("connect_lazily", &self.connect_lazily)
            .field(
                "credentials",
                &crate::credentials::describe(self.credentials.as_ref()),
            )
            .field("client_name", &self.client_name)
            .field("trace_keys", &self.trace_keys)
            .field("span_level", &self.span_level)
            .field("read_from", &self.read_from)
            .field("zones", &self.zones)
            .field("max_replica_lag", &self.max_replica_lag)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_setting() {
        let c = ClientConfig {
            pool_size: 0,
            ..ClientConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("pool_size"));
        let c = ClientConfig {
            deadline: Duration::ZERO,
            ..ClientConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("deadline"));
    }

    #[test]
    fn debug_output_shows_no_password() {
        let mut c = ClientConfig::from_url("redis://app:s3cret@127.0.0.1:6379/0").unwrap();
        c.sentinel = Some(SentinelConfig {
            sentinel_password: Some("t0psecret".into()),
            ..SentinelConfig::default()
        });
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0psecret"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://app:***@127.0.0.1:6379/0"),
            "{shown}"
        );
    }

    #[test]
    fn errors_about_a_url_show_no_password() {
        for url in [
            "http://app:s3cret@127.0.0.1:6379",
            "redis://app:s3cret@127.0.0.1:notaport",
            "redis+sentinel://app:s3cret@h:x/m",
        ] {
            let err = ClientConfig::from_url(url)
                .and_then(|c| c.validate())
                .expect_err(url)
                .to_string();
            assert!(!err.contains("s3cret"), "{err}");
            assert!(err.contains("***"), "{err}");
        }
    }
}
