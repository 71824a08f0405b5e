//! Opening one connection: the URL's settings, the credentials of the moment, the connection's
//! name. Every connection the client opens to a data node goes through a [`Connector`] (a
//! pool's, a blocking command's, a subscription's, a stall probe's, a Sentinel master's or
//! replica's, a cluster node's), so credentials and names are applied in one place.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisError, RedisResult, Value,
    aio::MultiplexedConnection,
};
use tokio::time::Instant;

use crate::{
    config::ClientConfig,
    credentials::{self, Credentials, CredentialsProvider},
    replies::Code,
};

/// Opens connections to one node (or, given an address, to any node of the deployment) with
/// the client's settings and current credentials.
pub(crate) struct Connector {
    /// The URL's settings (TLS, TCP, database, protocol, lib name) and the node's address.
    info: ConnectionInfo,
    shared: Arc<Shared>,
    /// The earliest renewal time ([`Credentials::renew_at`]) of the credentials handed to
    /// connections since the last re-authentication round: when the pool's connections must
    /// `AUTH` again. Per pool (see [`Connector::for_node`]).
    renew_at: Mutex<Option<Instant>>,
    /// Re-authentication rounds so far: a dedicated connection opened in an earlier round is
    /// not reused.
    round: AtomicU64,
    /// Cluster replica reads: each connection sends `READONLY` once open.
    readonly: bool,
}

/// What every node's connector shares.
struct Shared {
    provider: Option<Arc<dyn CredentialsProvider>>,
    name: Option<String>,
    /// The server refused `CLIENT SETNAME` once: it is not asked again.
    name_refused: AtomicBool,
    connect_timeout: Duration,
}

/// Whether `e` says the server rejected the credentials (`WRONGPASS`, `NOAUTH`, `invalid
/// password` in the handshake), as opposed to a permission (`NOPERM`) or anything else.
pub(crate) fn is_rejection(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed || Code::of_redis(e) == Some(Code::Auth)
}

impl Connector {
    /// A connector to `info`'s address with `config`'s credentials and connection name.
    pub(crate) fn new(config: &ClientConfig, info: ConnectionInfo) -> Connector {
        Connector {
            info,
            shared: Arc::new(Shared {
                provider: config.credentials.clone(),
                name: config.client_name.clone(),
                name_refused: AtomicBool::new(false),
                connect_timeout: config.connect_timeout,
            }),
            renew_at: Mutex::new(None),
            round: AtomicU64::new(0),
            readonly: false,
        }
    }

    /// This connector, its connections sending `READONLY` if `readonly` (a cluster client that
    /// reads from replicas).
    pub(crate) fn with_readonly(self, readonly: bool) -> Connector {
        Connector { readonly, ..self }
    }

    /// A connector to another node (a cluster's): the same settings, its own pool's renewal
    /// schedule.
    pub(crate) fn for_node(&self, addr: ConnectionAddr) -> Connector {
        Connector {
            info: self.info.clone().set_addr(addr),
            shared: self.shared.clone(),
            renew_at: Mutex::new(None),
            round: AtomicU64::new(0),
            readonly: self.readonly,
        }
    }

    /// The URL's settings (credentials as the URL gives them).
    pub(crate) fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The URL's settings with the credentials of the moment (for redis-rs's cluster
    /// connection, which takes them once).
    pub(crate) async fn current_info(&self) -> RedisResult<ConnectionInfo> {
        match &self.shared.provider {
            None => Ok(self.info.clone()),
            Some(p) => Ok(credentials::apply(&self.info, &self.ask(p.as_ref()).await?)),
        }
    }

    /// Opens a multiplexed connection, to `addr` or to this connector's node, and names it.
    pub(crate) async fn open(
        &self,
        addr: Option<&ConnectionAddr>,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let (mut conn, _) = self
            .authenticated(addr, |client| async move {
                client
                    .get_multiplexed_async_connection_with_config(conn_config)
                    .await
            })
            .await?;
        self.name(&mut conn).await?;
        if self.readonly {
            self.readonly(&mut conn).await?;
        }
        Ok(conn)
    }

    /// `READONLY` on a new cluster connection: a replica then serves reads of its master's
    /// slots on it instead of redirecting them. A refusal is not an error: reads there are
    /// redirected to the master.
    async fn readonly(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let limit = self.shared.connect_timeout;
        match tokio::time::timeout(limit, conn.send_packed_command(&redis::cmd("READONLY"))).await {
            Ok(Ok(Value::ServerError(e))) => {
                tracing::debug!(reply = %e, "the server refused READONLY: reads there go to the master");
                Ok(())
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.code().is_some() => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no reply to READONLY within the connect timeout",
            )
            .into()),
        }
    }

    /// Opens a subscriber's connection, to `addr` or to this connector's node: a multiplexed
    /// connection in RESP3 (so that pushes, `SSUBSCRIBE` and `PING` share it), named, and says
    /// when its credentials are due for renewal (the subscription moves to a fresh connection
    /// then).
    pub(crate) async fn open_subscriber(
        &self,
        addr: Option<&ConnectionAddr>,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, Option<Instant>)> {
        let settings = self
            .info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let resp3 = Connector {
            info: self.info.clone().set_redis_settings(settings),
            shared: self.shared.clone(),
            renew_at: Mutex::new(None),
            round: AtomicU64::new(0),
            readonly: false,
        };
        let (mut conn, renew_at) = resp3
            .authenticated(addr, |client| async move {
                client
                    .get_multiplexed_async_connection_with_config(conn_config)
                    .await
            })
            .await?;
        resp3.name(&mut conn).await?;
        Ok((conn, renew_at))
    }

    /// Runs `connect` with a client carrying the current credentials; if the server rejects
    /// them, tells the provider and tries once more with what it gives then. Also returns when
    /// the credentials used are due for renewal.
    async fn authenticated<T, F, Fut>(
        &self,
        addr: Option<&ConnectionAddr>,
        connect: F,
    ) -> RedisResult<(T, Option<Instant>)>
    where
        F: Fn(redis::Client) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let info = match addr {
            Some(addr) => self.info.clone().set_addr(addr.clone()),
            None => self.info.clone(),
        };
        let Some(provider) = &self.shared.provider else {
            return Ok((connect(redis::Client::open(info)?).await?, None));
        };
        let credentials = self.ask(provider.as_ref()).await?;
        match connect(redis::Client::open(credentials::apply(
            &info,
            &credentials,
        ))?)
        .await
        {
            Err(e) if is_rejection(&e) => {
                tracing::debug!(
                    source = %provider.describe(),
                    "the server rejected the credentials: asking for fresh ones once"
                );
                provider.rejected();
                let credentials = self.ask(provider.as_ref()).await?;
                let conn = connect(redis::Client::open(credentials::apply(
                    &info,
                    &credentials,
                ))?)
                .await?;
                Ok((conn, self.handed_out(&credentials)))
            }
            Err(e) => Err(e),
            Ok(conn) => Ok((conn, self.handed_out(&credentials))),
        }
    }

    /// The provider's credentials, or its error as an authentication failure that names it.
    async fn ask(&self, provider: &dyn CredentialsProvider) -> RedisResult<Credentials> {
        provider.credentials().await.map_err(|e| {
            RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "no credentials",
                format!("{} failed: {e}", provider.describe()),
            ))
        })
    }

    /// Notes that a connection uses `credentials`; returns when they are due for renewal.
    fn handed_out(&self, credentials: &Credentials) -> Option<Instant> {
        let at = credentials.renew_at()?;
        let mut renew_at = self.renew_at.lock().expect("renewal lock");
        *renew_at = Some(renew_at.map_or(at, |current| current.min(at)));
        Some(at)
    }

    /// `CLIENT SETNAME` on a new connection, unless no name is configured or the server
    /// refused it before. A refusal is not an error: the connection works unnamed.
    async fn name(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let Some(name) = &self.shared.name else {
            return Ok(());
        };
        if self.shared.name_refused.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("SETNAME").arg(name);
        let limit = self.shared.connect_timeout;
        match tokio::time::timeout(limit, conn.send_packed_command(&cmd)).await {
            // Not authenticated: the caller's first command says so, better than a warning.
            Ok(Ok(Value::ServerError(e))) if Code::of(&e) == Code::Auth => Ok(()),
            Ok(Ok(Value::ServerError(e))) => {
                if !self.shared.name_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        name = %name,
                        reply = %e,
                        "the server refused CLIENT SETNAME: connections stay unnamed"
                    );
                }
                Ok(())
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no reply to CLIENT SETNAME within the connect timeout",
            )
            .into()),
        }
    }

    /// When the pool's connections must `AUTH` again; `None` if their credentials do not
    /// expire.
    pub(crate) fn renewal_due(&self) -> Option<Instant> {
        *self.renew_at.lock().expect("renewal lock")
    }

    /// Starts a re-authentication round: fresh credentials (`after_rejection`: the server
    /// rejected the last ones), noted as handed out. `None` without a provider.
    pub(crate) async fn renew(&self, after_rejection: bool) -> Option<RedisResult<Credentials>> {
        let provider = self.shared.provider.as_ref()?;
        if after_rejection {
            provider.rejected();
        } else {
            *self.renew_at.lock().expect("renewal lock") = None;
            self.round.fetch_add(1, Ordering::Relaxed);
        }
        let credentials = self.ask(provider.as_ref()).await;
        if let Ok(c) = &credentials {
            self.handed_out(c);
        }
        Some(credentials)
    }

    /// A renewal round failed to get credentials: try again at `at`.
    pub(crate) fn retry_renewal_at(&self, at: Instant) {
        let mut renew_at = self.renew_at.lock().expect("renewal lock");
        *renew_at = Some(renew_at.map_or(at, |current| current.min(at)));
    }

    /// The `AUTH` command that re-authenticates a connection of this connector with
    /// `credentials`.
    pub(crate) fn auth_command(&self, credentials: &Credentials) -> redis::Cmd {
        credentials::auth_command(&self.info, credentials)
    }

    /// The current re-authentication round (see [`Connector::renew`]).
    pub(crate) fn round(&self) -> u64 {
        self.round.load(Ordering::Relaxed)
    }

    /// The server rejected the credentials of a live connection: the provider must not give
    /// them again.
    pub(crate) fn rejected(&self) {
        if let Some(p) = &self.shared.provider {
            p.rejected();
        }
    }
}
