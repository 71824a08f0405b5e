//! Where a pool's connections go: one fixed address (a cluster node is one too, and so is a
//! managed service's primary endpoint, see [`super::fixed`]), or the master that a Sentinel
//! deployment names (see [`super::sentinel`]).

use std::sync::Arc;

use redis::{AsyncConnectionConfig, RedisResult, aio::MultiplexedConnection};
use tokio::sync::watch;

use super::{Connector, Master, SentinelResolver, TopologyView, fixed::Fixed};

/// The server behind a pool.
pub(crate) enum Endpoint {
    /// One address. (Boxed: with TLS settings a `ConnectionInfo` is large.)
    Fixed(Box<Fixed>),
    /// The current master of a Sentinel deployment.
    Sentinel(Arc<SentinelResolver>),
}

impl Endpoint {
    /// Opens a connection to the server, with the master epoch it was opened for (always 0 for a
    /// fixed server).
    pub(crate) async fn open(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, u64)> {
        match self {
            Endpoint::Fixed(fixed) => fixed.open(conn_config).await,
            Endpoint::Sentinel(resolver) => resolver.open_master(conn_config).await,
        }
    }

    /// The master's address and epoch when the endpoint knows it (Sentinel); `None` for a fixed
    /// address (behind one hostname the server is reached only through it).
    pub(crate) fn master_addr(&self) -> Option<(super::sentinel::Addr, u64)> {
        match self {
            Endpoint::Fixed(_) => None,
            Endpoint::Sentinel(resolver) => {
                let master = resolver.master();
                master.addr.map(|a| (a, master.epoch))
            }
        }
    }

    /// Opens a connection to the server at `addr`, whatever its role (Sentinel only).
    pub(crate) async fn open_at(
        &self,
        addr: &super::sentinel::Addr,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        match self {
            Endpoint::Sentinel(resolver) => resolver.open_at(addr, conn_config).await,
            Endpoint::Fixed(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a fixed endpoint is reached only at its address",
            )
            .into()),
        }
    }

    /// Opens a connection to a replica (Sentinel only), with the master epoch it was opened for.
    pub(crate) async fn open_replica(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, u64, super::sentinel::Addr)> {
        match self {
            Endpoint::Sentinel(resolver) => resolver.open_replica(conn_config).await,
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "replica connections need Sentinel",
            )
            .into()),
        }
    }

    /// Opens a subscriber's connection (RESP3, pushes to `conn_config`'s sender) to the server
    /// (the master, with Sentinel), and says when its credentials are due for renewal.
    pub(crate) async fn open_subscriber(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, Option<tokio::time::Instant>)> {
        match self {
            Endpoint::Fixed(fixed) => fixed.connector.open_subscriber(None, conn_config).await,
            Endpoint::Sentinel(resolver) => resolver.open_master_subscriber(conn_config).await,
        }
    }

    /// How connections to the server are opened (credentials, name).
    pub(crate) fn connector(&self) -> &Connector {
        match self {
            Endpoint::Fixed(fixed) => &fixed.connector,
            Endpoint::Sentinel(resolver) => resolver.connector(),
        }
    }

    /// The current master epoch: it changes each time the master changes (for a fixed
    /// address, each time the server behind it was found demoted).
    pub(crate) fn epoch(&self) -> u64 {
        match self {
            Endpoint::Fixed(fixed) => fixed.epoch(),
            Endpoint::Sentinel(resolver) => resolver.master().epoch,
        }
    }

    /// Master changes, for the pool's background task and subscriptions; `None` for an
    /// address whose connections never move (a cluster node, a replica endpoint).
    pub(crate) fn changes(&self) -> Option<watch::Receiver<Master>> {
        match self {
            Endpoint::Fixed(fixed) => fixed.changes(),
            Endpoint::Sentinel(resolver) => Some(resolver.subscribe()),
        }
    }

    /// A connection broke, timed out or was told `READONLY`: the master may have moved. Asks
    /// for a (rate-limited) rediscovery.
    pub(crate) fn suspect(&self) {
        if let Endpoint::Sentinel(resolver) = self {
            resolver.request_rediscovery();
        }
    }

    /// What the client knows of the topology; `None` for a fixed server.
    pub(crate) fn view(&self) -> Option<TopologyView> {
        match self {
            Endpoint::Fixed(_) => None,
            Endpoint::Sentinel(resolver) => Some(resolver.view()),
        }
    }
}
