//! One real `redis-server` (or `redis-sentinel`) process on a loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::binaries::find_binary;
use crate::conf::quote;
use crate::error::LabError;
use crate::tls::LabTls;
use crate::util::{Poll, connect, free_port, info_value, loopback, tail};

/// How a [`RedisServer`] is started.
///
/// # Default
/// A free loopback port, no password, no extra directives, 10 s to become ready,
/// `busy-reply-threshold` 100 ms.
///
/// # Behavior
/// Every server is started with `bind 127.0.0.1`, its own temporary `dir`, `save ""`,
/// `appendonly no`, `enable-debug-command yes`, `daemonize no`, `protected-mode no`
/// and `logfile <dir>/redis.log`. The [`extra`](Self::extra) directives come last,
/// so they override any of these (but leave `port`, `bind`, `dir` and `logfile` alone: the
/// [`RedisServer`] handle relies on them).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The port to listen on; `None` picks a free one (retrying if another process grabs it first).
    pub port: Option<u16>,
    /// Sets `requirepass` (and `masterauth`, so replicas of a password-protected master work).
    pub password: Option<String>,
    /// Extra config directives written as `name value` lines, value verbatim
    /// (so multi-argument directives such as `("save", "60 1")` work; an empty value is written as `""`).
    pub extra: Vec<(String, String)>,
    /// How long to wait for the server to answer after spawning it.
    pub start_timeout: Duration,
    /// `busy-reply-threshold`: how long a script runs before other clients get `-BUSY`.
    pub busy_reply_threshold: Duration,
    /// Listen on TLS only (see [`LabTls`]); [`RedisServer::url`] is then `rediss://`.
    pub tls: Option<LabTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            port: None,
            password: None,
            extra: Vec::new(),
            start_timeout: Duration::from_secs(10),
            busy_reply_threshold: Duration::from_millis(100),
            tls: None,
        }
    }
}

impl ServerConfig {
    /// The launch description of a server with this config (`cluster_bus`: allocate `cluster-port`).
    pub(crate) fn into_launch(self, cluster_bus: bool) -> Launch {
        let mut directives = vec![format!(
            "busy-reply-threshold {}",
            self.busy_reply_threshold.as_millis().max(1)
        )];
        directives.extend(self.extra.iter().map(|(name, value)| {
            if value.is_empty() {
                format!("{name} \"\"")
            } else {
                format!("{name} {value}")
            }
        }));
        Launch {
            kind: Kind::Server,
            port: self.port,
            cluster_bus,
            announce_bus_port: false,
            password: self.password,
            directives,
            start_timeout: self.start_timeout,
            tls: self.tls,
        }
    }
}

/// Directives every data server of a topology gets: replicas sync at once, and the master
/// pings them every second, so a fresh replica's offset leaves 0 quickly (Redis Cluster hides
/// replicas with offset 0 from `CLUSTER SLOTS`; the default period is 10 s).
pub(crate) fn topology_server_config(extra: &[(&str, String)]) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.extra.extend([
        ("repl-diskless-sync-delay".to_owned(), "0".to_owned()),
        ("repl-ping-replica-period".to_owned(), "1".to_owned()),
    ]);
    config
        .extra
        .extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    config
}

/// Which binary a [`RedisServer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Server,
    Sentinel,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Server => "redis-server",
            Kind::Sentinel => "redis-sentinel",
        }
    }
}

/// Everything needed to (re)launch a process; crate-internal counterpart of [`ServerConfig`].
pub(crate) struct Launch {
    pub(crate) kind: Kind,
    pub(crate) port: Option<u16>,
    /// Whether to allocate and set `cluster-port`.
    pub(crate) cluster_bus: bool,
    /// Whether to also write `cluster-announce-bus-port` with the allocated bus port (needs
    /// `cluster_bus`).
    pub(crate) announce_bus_port: bool,
    pub(crate) password: Option<String>,
    /// Directives after the base ones, already formatted as `name value`.
    pub(crate) directives: Vec<String>,
    pub(crate) start_timeout: Duration,
    /// TLS only, on the port.
    pub(crate) tls: Option<LabTls>,
}

/// How many times a start is retried with fresh ports when the chosen port was taken meanwhile.
const PORT_RETRIES: usize = 5;

/// A real `redis-server` (or `redis-sentinel`) child process on `127.0.0.1`.
///
/// # Behavior
/// - Runs in its own temporary directory (config file, log, dumps); the directory lives as long
///   as the value, so [`restart`](Self::restart) finds its data and config again.
/// - Dropping it sends SIGKILL, reaps the process and removes the directory, also while a test
///   panics. The process is also spawned with `kill_on_drop`.
/// - Fault helpers open a fresh admin connection for every call.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), redis_lab::LabError> {
/// let server = redis_lab::RedisServer::start().await?;
/// let mut conn = server.admin().await?;
/// let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
/// assert_eq!(pong, "PONG");
/// # Ok(()) }
/// ```
pub struct RedisServer {
    kind: Kind,
    binary: PathBuf,
    port: u16,
    bus_port: Option<u16>,
    password: Option<String>,
    tls: Option<LabTls>,
    conf_path: PathBuf,
    log_path: PathBuf,
    start_timeout: Duration,
    child: Option<Child>,
    // Declared last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("kind", &self.kind)
            .field("addr", &self.addr())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl RedisServer {
    /// Starts a server with [`ServerConfig::default`] on a free loopback port and waits for `PING`.
    ///
    /// # Errors
    /// [`LabError::BinaryNotFound`], [`LabError::StartFailed`] (with the log tail), [`LabError::Io`].
    pub async fn start() -> Result<Self, LabError> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Starts a server with `config` and waits until it answers (`INFO server` from its own pid,
    /// so a foreign process holding the port is never mistaken for it).
    ///
    /// # Errors
    /// As [`start`](Self::start), plus [`LabError::InvalidConfig`] for a zero timeout.
    pub async fn start_with(config: ServerConfig) -> Result<Self, LabError> {
        if config.start_timeout.is_zero() {
            return Err(LabError::InvalidConfig(
                "ServerConfig::start_timeout must be > 0".into(),
            ));
        }
        Self::launch(config.into_launch(false)).await
    }

    /// Spawns the process described by `launch`, retrying with fresh ports on a bind race.
    pub(crate) async fn launch(launch: Launch) -> Result<Self, LabError> {
        let binary = find_binary(launch.kind.binary())?;
        let dir = tempfile::Builder::new()
            .prefix("redis-lab-")
            .tempdir()
            .map_err(|e| LabError::io("creating a temporary directory", e))?;
        let conf_path = dir.path().join(match launch.kind {
            Kind::Server => "redis.conf",
            Kind::Sentinel => "sentinel.conf",
        });
        let log_path = dir.path().join("redis.log");
        let mut server = RedisServer {
            kind: launch.kind,
            binary,
            port: 0,
            bus_port: None,
            password: launch.password.clone(),
            tls: launch.tls.clone(),
            conf_path,
            log_path,
            start_timeout: launch.start_timeout,
            child: None,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = match launch.port {
                Some(port) => port,
                None => free_port()?,
            };
            server.bus_port = if launch.cluster_bus {
                Some(free_port()?)
            } else {
                None
            };
            let conf = render_config(
                &launch,
                server.dir.path(),
                &server.log_path,
                server.port,
                server.bus_port,
            );
            std::fs::write(&server.conf_path, conf)
                .map_err(|e| LabError::io(format!("writing {}", server.conf_path.display()), e))?;
            // A previous attempt's log would confuse the bind-race detection.
            let _ = std::fs::remove_file(&server.log_path);
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(error) => {
                    server.kill_quietly();
                    let bind_race = launch.port.is_none()
                        && std::fs::read_to_string(&server.log_path)
                            .is_ok_and(|log| log.contains("Address already in use"));
                    if !bind_race || attempt >= PORT_RETRIES {
                        return Err(error);
                    }
                    tracing::debug!(
                        port = server.port,
                        "port taken while starting redis, retrying"
                    );
                }
            }
        }
    }

    /// Spawns the binary with the config file and waits until it answers `PING`.
    async fn spawn_and_wait(&mut self) -> Result<(), LabError> {
        let mut command = Command::new(&self.binary);
        command
            .arg(&self.conf_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| LabError::io(format!("spawning {}", self.binary.display()), e))?;
        tracing::debug!(pid = child.id(), addr = %self.addr(), kind = ?self.kind, "spawned");
        self.child = Some(child);
        self.wait_started(self.start_timeout).await
    }

    /// Polls `PING` until it answers, failing early (with the log tail) if the process exits.
    async fn wait_started(&mut self, timeout: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.start_failed(format!("process exited with {status}")));
            }
            let last = match self.ping(Duration::from_millis(500)).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if started.elapsed() >= timeout {
                return Err(self.start_failed(format!(
                    "no PING answer within {timeout:?} (last error: {last})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn start_failed(&self, reason: String) -> LabError {
        LabError::StartFailed {
            what: self.describe(),
            reason,
            log: self.log_path.display().to_string(),
            log_tail: tail(&self.log_path, 20),
        }
    }

    fn describe(&self) -> String {
        format!("{} on {}", self.kind.binary(), self.addr())
    }

    /// `Some(status)` if the child has exited (and was reaped), `None` while running or never started.
    fn exit_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown status ({e})")),
        }
    }

    /// Checks that the process listening on our port answers and is *our* child (another
    /// process may hold the port while ours is failing to bind it).
    async fn ping(&self, response_timeout: Duration) -> Result<(), String> {
        let mut conn = connect(&self.url(), self.tls.as_ref(), response_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let answering = info_value(&info, "process_id");
        match (answering, self.pid()) {
            (Some(answering), Some(ours)) if answering == ours.to_string() => Ok(()),
            (answering, ours) => Err(format!(
                "port answered by process {answering:?}, ours is {ours:?}"
            )),
        }
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The port the server listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster bus port, for cluster nodes.
    pub fn bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` with a password;
    /// `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        self.url_on_port(self.port)
    }

    /// [`url`](Self::url) with another port (e.g. the proxy a topology announces for it).
    pub(crate) fn url_on_port(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(password) => format!(
                "{scheme}://:{}@127.0.0.1:{}",
                percent_encode(password),
                port
            ),
            None => format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    /// The TLS settings of a TLS-only server ([`ServerConfig::tls`]).
    pub fn tls(&self) -> Option<&LabTls> {
        self.tls.as_ref()
    }

    /// The password set with [`ServerConfig::password`].
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The process id while the process is running (or exited but not yet reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The temporary directory holding the config file, the log and any dump.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file (kept in [`dir`](Self::dir)).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Opens a fresh multiplexed connection (30 s response timeout) for the test itself.
    ///
    /// # Errors
    /// [`LabError::Redis`] if the server does not accept the connection.
    pub async fn admin(&self) -> Result<MultiplexedConnection, LabError> {
        self.admin_with_timeout(Duration::from_secs(30)).await
    }

    async fn admin_with_timeout(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, LabError> {
        connect(&self.url(), self.tls.as_ref(), response_timeout)
            .await
            .map_err(|e| LabError::redis(format!("connecting to {}", self.describe()), e))
    }

    /// Runs one command on a fresh connection (5 s response timeout), for topology plumbing.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, LabError> {
        let mut conn = self.admin_with_timeout(Duration::from_secs(5)).await?;
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| LabError::redis(format!("command on {}", self.describe()), e))
    }

    /// Stops the server gracefully (SIGTERM) and waits until it exited; SIGKILL after 15 s.
    /// Does nothing if it is not running. The directory is kept for [`restart`](Self::restart).
    ///
    /// # Errors
    /// [`LabError::Io`] if the process cannot be signalled or waited for.
    pub async fn stop(&mut self) -> Result<(), LabError> {
        if !self.is_running() {
            self.child = None;
            return Ok(());
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            // ESRCH means it died meanwhile; the wait below reaps it either way.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            // A paused server handles SIGTERM only once it runs again.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        }
        match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
            Ok(Ok(_)) => {
                self.child = None;
                Ok(())
            }
            Ok(Err(e)) => Err(LabError::io(format!("waiting for {}", self.describe()), e)),
            Err(_) => {
                tracing::warn!(addr = %self.addr(), "SIGTERM ignored for 15 s, sending SIGKILL");
                self.kill()
            }
        }
    }

    /// Freezes the server with SIGSTOP: a stalled node, whose connections stay open and whose
    /// port still accepts (the kernel completes the handshake) but nothing answers, until
    /// [`resume`](Self::resume).
    ///
    /// # Errors
    /// [`LabError::NotRunning`] if the process is gone, [`LabError::Io`] if it cannot be
    /// signalled.
    pub fn pause(&self) -> Result<(), LabError> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a server frozen by [`pause`](Self::pause) run again (SIGCONT).
    ///
    /// # Errors
    /// As [`pause`](Self::pause).
    pub fn resume(&self) -> Result<(), LabError> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), LabError> {
        let pid = self
            .child
            .as_ref()
            .and_then(tokio::process::Child::id)
            .ok_or_else(|| LabError::NotRunning(self.describe()))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, signal).map_err(|e| {
            LabError::io(
                format!("sending {signal} to {}", self.describe()),
                std::io::Error::from_raw_os_error(e as i32),
            )
        })
    }

    /// Kills the server with SIGKILL and reaps it (synchronously). Does nothing if not running.
    ///
    /// # Errors
    /// [`LabError::Io`] if the process cannot be killed or reaped within 10 s.
    pub fn kill(&mut self) -> Result<(), LabError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            self.child = None;
            return Ok(());
        }
        // start_kill fails only if the child was already reaped.
        let _ = child.start_kill();
        // A wall-clock bound on purpose: this also runs in Drop, possibly outside any runtime.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    self.child = None;
                    return Ok(());
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(None) => {
                    return Err(LabError::io(
                        format!("reaping {}", self.describe()),
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "still alive 10 s after SIGKILL",
                        ),
                    ));
                }
                Err(e) => return Err(LabError::io(format!("reaping {}", self.describe()), e)),
            }
        }
    }

    fn kill_quietly(&mut self) {
        if let Err(error) = self.kill() {
            tracing::warn!(%error, "could not kill a redis process");
        }
    }

    /// Starts the process again on the same port, with the same directory and config file
    /// (a sentinel keeps the state it rewrote), and waits for `PING`. A running process is stopped first.
    ///
    /// # Errors
    /// [`LabError::StartFailed`] (e.g. the port was taken meanwhile), [`LabError::Io`].
    pub async fn restart(&mut self) -> Result<(), LabError> {
        self.stop().await?;
        self.spawn_and_wait()
            .await
            .inspect_err(|_| self.kill_quietly())
    }

    /// Polls `PING` until the server answers or `timeout` passes.
    ///
    /// # Errors
    /// [`LabError::NotRunning`] if the process is gone, [`LabError::Timeout`] otherwise.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), LabError> {
        let poll = Poll::new(format!("{} to answer PING", self.describe()), timeout)
            .every(Duration::from_millis(10));
        loop {
            if self.child.is_none() {
                return Err(LabError::NotRunning(self.describe()));
            }
            match self.ping(Duration::from_millis(500)).await {
                Ok(()) => return Ok(()),
                Err(e) => poll.wait(e).await?,
            }
        }
    }

    /// Whether the process is alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        if self.exit_status().is_some() {
            self.child = None;
        }
        self.child.is_some()
    }

    /// `CLIENT KILL TYPE normal SKIPME yes`: disconnects every normal client; returns how many.
    ///
    /// # Errors
    /// [`LabError::Redis`].
    pub async fn client_kill_normal(&self) -> Result<u64, LabError> {
        let mut conn = self.admin().await?;
        redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
            .query_async(&mut conn)
            .await
            .map_err(|e| LabError::redis(format!("CLIENT KILL on {}", self.describe()), e))
    }

    /// Gives ACL user `name` (created with every permission if new) `password` as its only
    /// password, then closes that user's connections: a credential rotation that recycles
    /// connections, as a managed service's does. The lab's own connections (the default user)
    /// are untouched. Returns how many connections were closed.
    ///
    /// # Errors
    /// [`LabError::Redis`].
    pub async fn rotate_user(&self, name: &str, password: &str) -> Result<u64, LabError> {
        let mut conn = self.admin().await?;
        let context = || format!("ACL SETUSER {name} on {}", self.describe());
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg(&["on", "resetpass"])
            .arg(format!(">{password}"))
            .arg(&["~*", "&*", "+@all"])
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| LabError::redis(context(), e))?;
        redis::cmd("CLIENT")
            .arg(&["KILL", "USER", name])
            .query_async(&mut conn)
            .await
            .map_err(|e| LabError::redis(context(), e))
    }

    /// `DEBUG SLEEP`: blocks the whole server for `d`; returns when the sleep is over.
    ///
    /// Needs `enable-debug-command yes`, which every lab server has.
    ///
    /// # Errors
    /// [`LabError::Redis`].
    pub async fn debug_sleep(&self, d: Duration) -> Result<(), LabError> {
        let mut conn = self.admin_with_timeout(d + Duration::from_secs(10)).await?;
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(format!("{:.3}", d.as_secs_f64()))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| LabError::redis(format!("DEBUG SLEEP on {}", self.describe()), e))
    }

    /// Runs a read-only Lua busy loop for `d`: after `busy-reply-threshold` (100 ms by default)
    /// other clients get `-BUSY` until it ends. Returns when the script is over.
    ///
    /// # Errors
    /// [`LabError::Redis`] (e.g. `SCRIPT KILL` was sent meanwhile).
    pub async fn busy_script(&self, d: Duration) -> Result<(), LabError> {
        const SCRIPT: &str = "local function now() local t = redis.call('TIME') \
            return tonumber(t[1]) * 1000000 + tonumber(t[2]) end \
            local start = now() local n = 0 \
            while now() - start < tonumber(ARGV[1]) do n = n + 1 end \
            return n";
        let mut conn = self.admin_with_timeout(d + Duration::from_secs(10)).await?;
        redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(0)
            .arg(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| LabError::redis(format!("busy EVAL on {}", self.describe()), e))
    }

    /// `REPLICAOF`: makes this server a replica of `primary` (returns once told: see
    /// [`RedisServer::wait_link_up`] for the sync), or with `None`, `REPLICAOF NO ONE` (a
    /// promotion).
    ///
    /// # Errors
    /// [`LabError::Redis`].
    pub async fn replicaof(&self, primary: Option<&RedisServer>) -> Result<(), LabError> {
        let mut conn = self.admin().await?;
        let mut cmd = redis::cmd("REPLICAOF");
        match primary {
            Some(p) => cmd.arg(p.addr().ip().to_string()).arg(p.port()),
            None => cmd.arg("NO").arg("ONE"),
        };
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(|e| LabError::redis(format!("REPLICAOF on {}", self.describe()), e))
    }

    /// Waits (up to `timeout`) until this replica's link to its primary is up (synced).
    ///
    /// # Errors
    /// [`LabError::Redis`], or [`LabError::Timeout`] if the link is not up in time.
    pub async fn wait_link_up(&self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let link = self.info_field("replication", "master_link_status").await?;
            if link == "up" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("the replication link of {}", self.describe()),
                    waited: timeout,
                    last: format!("master_link_status:{link}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One field of `INFO <section>`, e.g. `("stats", "total_commands_processed")`.
    ///
    /// # Errors
    /// [`LabError::Redis`], or [`LabError::Topology`] if the field is absent.
    pub async fn info_field(&self, section: &str, field: &str) -> Result<String, LabError> {
        let mut conn = self.admin().await?;
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await
            .map_err(|e| LabError::redis(format!("INFO {section} on {}", self.describe()), e))?;
        info_value(&info, field).ok_or_else(|| {
            LabError::Topology(format!(
                "INFO {section} of {} has no field {field}",
                self.describe()
            ))
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_quietly();
    }
}

/// The config file for one launch attempt.
fn render_config(
    launch: &Launch,
    dir: &Path,
    log_path: &Path,
    port: u16,
    bus_port: Option<u16>,
) -> String {
    let mut lines = match &launch.tls {
        None => vec![format!("port {port}")],
        Some(tls) => {
            let mut tls_lines = vec!["port 0".to_owned(), format!("tls-port {port}")];
            tls_lines.extend(tls.directives(bus_port.is_some()));
            tls_lines
        }
    };
    lines.extend([
        "bind 127.0.0.1".to_owned(),
        format!("dir {}", quote(&dir.display().to_string())),
        format!("logfile {}", quote(&log_path.display().to_string())),
        "daemonize no".to_owned(),
        "protected-mode no".to_owned(),
    ]);
    if launch.kind == Kind::Server {
        lines.extend([
            "save \"\"".to_owned(),
            "appendonly no".to_owned(),
            "enable-debug-command yes".to_owned(),
        ]);
    }
    if let Some(bus_port) = bus_port {
        lines.push(format!("cluster-port {bus_port}"));
        if launch.announce_bus_port {
            lines.push(format!("cluster-announce-bus-port {bus_port}"));
        }
    }
    if let Some(password) = &launch.password {
        lines.push(format!("requirepass {}", quote(password)));
        lines.push(format!("masterauth {}", quote(password)));
    }
    lines.extend(launch.directives.iter().cloned());
    lines.push(String::new());
    lines.join("\n")
}

/// Percent-encodes a password for the userinfo part of a URL.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
