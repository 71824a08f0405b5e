//! Calls whose slot the client cannot name (keyless commands such as `PING`, `FLUSHALL`,
//! `SCRIPT LOAD`, or any call before the first slot map) go through redis-rs's cluster
//! connection, which knows how to fan them out.
//!
//! # redis-rs's own retries are off
//! redis-rs's cluster connection retries internally (16 times by default) and re-sends a
//! request after an I/O error *whatever the command*: an `INCR` whose connection broke after it
//! was written is sent again, and the caller never learns that it may have run twice. Its waits
//! (at least 1.28 s after `TRYAGAIN`/`CLUSTERDOWN`) are not bounded by a deadline either. The
//! connection is therefore built with `retries(0)`, so every failure comes back to the client's
//! policy, and without an overall response timeout: the call's deadline bounds each call.
//!
//! Its single connection task can stop answering (redis-rs 1.8, during a slot migration): a
//! call that gets no answer within 2 x `response_timeout` + 500 ms makes the client PING through
//! it and replace it if that is stuck too ([`Keyless::check`]).

use std::{
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    ConnectionInfo, RedisResult, Value,
    aio::ConnectionLike,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

use crate::{
    config::ClientConfig,
    error::{Error, ErrorKind, Outcome},
    request::{Reply, Request},
};

/// redis-rs's cluster connection, replaced when its task stops answering.
pub(crate) struct Keyless {
    /// redis-rs's client, to replace a connection whose driver stopped answering.
    client: redis::cluster::ClusterClient,
    /// The connection and its generation (bumped on each replacement).
    conn: RwLock<(ClusterConnection, u64)>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Connections replaced because they stopped answering.
    pub(crate) replaced: AtomicU64,
}

impl Keyless {
    /// Connects to the cluster of these seeds with `template`'s credentials, TLS and TCP
    /// settings.
    pub(crate) async fn connect(
        config: &ClientConfig,
        template: &ConnectionInfo,
        seeds: &[(String, u16)],
    ) -> Result<Keyless, Error> {
        let infos: Vec<ConnectionInfo> = seeds
            .iter()
            .map(|(host, port)| {
                let addr = crate::config::Transport::of(template.addr()).addr(host, *port);
                template.clone().set_addr(addr)
            })
            .collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(infos);
        if let Some(tls) = &config.tls {
            if let Some(certificates) = tls.certificates()? {
                builder = builder.certs(certificates);
            }
            if tls.insecure_skip_verify {
                builder = builder.tls(redis::TlsMode::Insecure);
            }
        }
        let client = builder
            .retries(0)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.response_timeout)
            .overall_response_timeout(None)
            .tcp_settings(template.tcp_settings().clone())
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
            if crate::error::Failure::of(&e).kind == ErrorKind::Auth {
                Error::new(
                    ErrorKind::Auth,
                    Outcome::Failed,
                    "the cluster's nodes rejected the credentials (or the URL gives none)",
                )
                .with_source(e)
            } else {
                Error::new(
                    ErrorKind::Unavailable,
                    Outcome::Failed,
                    "cannot connect to the cluster",
                )
                .with_source(e)
            }
        })?;
        Ok(Keyless {
            client,
            conn: RwLock::new((conn, 0)),
            replacing: tokio::sync::Mutex::new(()),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            replaced: AtomicU64::new(0),
        })
    }

    /// The current connection and its generation.
    pub(crate) fn conn(&self) -> (ClusterConnection, u64) {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How long a call through this connection may go unanswered before the connection is
    /// suspected stuck.
    pub(crate) fn stuck_after(&self) -> Duration {
        self.response_timeout * 2 + Duration::from_millis(500)
    }

    /// Sends through the connection, routed by redis-rs. `None`: no answer within
    /// [`Keyless::stuck_after`]; the connection was checked (and replaced if stuck).
    pub(crate) async fn send(&self, request: Request<'_>) -> Option<RedisResult<Reply>> {
        let (mut conn, generation) = self.conn();
        let sent = async {
            match request {
                Request::Cmd(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                } => conn
                    .req_packed_commands(pipeline, offset, count)
                    .await
                    .map(Reply::Many),
            }
        };
        match tokio::time::timeout(self.stuck_after(), sent).await {
            Ok(result) => Some(result),
            Err(_) => {
                self.check(generation).await;
                None
            }
        }
    }

    /// Sends `cmd` to a random node, for health checks.
    pub(crate) async fn to_any_node(&self, cmd: redis::Cmd) -> RedisResult<Value> {
        let (mut conn, _) = self.conn();
        conn.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
            .await
    }

    /// A call through connection `generation` got no answer in time: if that connection does
    /// not answer a PING either, its task is stuck; replace it with a new one.
    async fn check(&self, generation: u64) {
        let _one = self.replacing.lock().await;
        let (mut conn, current) = self.conn();
        if current != generation {
            return;
        }
        let ping = conn.route_command(
            redis::cmd("PING"),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        );
        if let Ok(Ok(_)) = tokio::time::timeout(self.response_timeout, ping).await {
            return;
        }
        let limit = self.connect_timeout * 2 + self.response_timeout;
        match tokio::time::timeout(limit, self.client.get_async_connection()).await {
            Ok(Ok(fresh)) => {
                tracing::warn!("cluster connection stopped answering; replaced it");
                self.replaced.fetch_add(1, Ordering::Relaxed);
                *self.conn.write().unwrap_or_else(|p| p.into_inner()) = (fresh, generation + 1);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot replace a stuck cluster connection"),
            Err(_) => tracing::warn!("cannot replace a stuck cluster connection in time"),
        }
    }
}
