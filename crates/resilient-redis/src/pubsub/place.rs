//! Where a subscription's topics go: the part of pub/sub that depends on the deployment.
//!
//! - One server, Sentinel, a managed primary endpoint: every topic on one link to the server
//!   (the master); a new master (a Sentinel switch, a demoted endpoint) moves them all.
//! - Cluster: channels and patterns on one link to any live master (a message published on
//!   any node reaches every node); each shard channel on a link to its slot's master, moved
//!   when the slot map names another one or the server ends the subscription (`sunsubscribe`).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
};

use rand::{RngExt, rngs::SmallRng};
use redis::{AsyncConnectionConfig, RedisResult, aio::MultiplexedConnection};
use tokio::{sync::watch, time::Instant};

use super::topic::TopicKind;
use crate::{
    connection::{Master, Pool},
    routing::cluster::ClusterRouter,
};

/// The address of the single server's link.
pub(super) const SINGLE: &str = "-";

/// A link being opened: the connection, its master epoch, when its credentials are due for
/// renewal.
pub(super) type Opening = Pin<
    Box<dyn Future<Output = RedisResult<(MultiplexedConnection, u64, Option<Instant>)>> + Send>,
>;

/// The deployment a subscription follows (held weakly: the subscription ends with the client).
pub(super) enum Place {
    /// One server, Sentinel's master, or a managed primary endpoint.
    Single(Weak<Pool>),
    /// A Redis Cluster.
    Cluster(Weak<ClusterRouter>),
}

/// What tells a subscription that its topics may have to move.
pub(super) enum Changes {
    /// The master of a one-server endpoint or Sentinel deployment (`None`: it never moves).
    Master(Option<watch::Receiver<Master>>),
    /// The slot map's versions.
    SlotMap(watch::Receiver<u64>),
}

impl Changes {
    /// Resolves at the next change; never when nothing can change (or the client is gone).
    pub(super) async fn next(&mut self) {
        let ended = match self {
            Changes::Master(changes) => {
                crate::connection::master_changed(changes).await;
                return;
            }
            Changes::SlotMap(epochs) => epochs.changed().await.is_err(),
        };
        if ended {
            std::future::pending::<()>().await;
        }
    }
}

impl Place {
    /// What tells a subscription of this deployment that its topics may have to move; `None`
    /// once the client is gone.
    pub(super) fn changes(&self) -> Option<Changes> {
        Some(match self {
            Place::Single(pool) => Changes::Master(pool.upgrade()?.master_changes()),
            Place::Cluster(router) => Changes::SlotMap(router.upgrade()?.epochs()),
        })
    }

    /// Where a topic goes now (a link's address), given the links open (`open`); `None` when no
    /// node can take it yet (no master known, or it is down: wait for the topology), or the
    /// client is gone.
    pub(super) fn target(
        &self,
        kind: TopicKind,
        slot: u16,
        open: &[&str],
        rng: &mut SmallRng,
    ) -> Option<String> {
        let router = match self {
            Place::Single(pool) => {
                pool.upgrade()?;
                return Some(SINGLE.to_owned());
            }
            Place::Cluster(router) => router.upgrade()?,
        };
        if kind == TopicKind::ShardChannel {
            let master = router.master_addr(slot)?;
            return router.is_live_master(&master).then_some(master);
        }
        // Channels and patterns: a link already open to a live master, else a random one.
        if let Some(addr) = open.iter().find(|a| router.is_live_master(a)) {
            return Some((*addr).to_owned());
        }
        let masters = router.live_masters();
        if masters.is_empty() {
            return None;
        }
        Some(masters[rng.random_range(0..masters.len())].clone())
    }

    /// Opens a link to `addr` (from [`Place::target`]) with `settings` (its push sender).
    pub(super) fn open(&self, addr: &str, settings: AsyncConnectionConfig) -> Opening {
        match self {
            Place::Single(pool) => {
                let pool = pool.clone();
                Box::pin(async move {
                    let pool = pool.upgrade().ok_or_else(gone)?;
                    pool.open_subscriber(&settings).await
                })
            }
            Place::Cluster(router) => {
                let (router, addr) = (router.clone(), addr.to_owned());
                Box::pin(async move {
                    let router = router.upgrade().ok_or_else(gone)?;
                    let (conn, renew_at) = router.open_subscriber(&addr, &settings).await?;
                    Ok((conn, 0, renew_at))
                })
            }
        }
    }

    /// Whether a link opened in master epoch `epoch` is to a master that has been replaced
    /// (one server or Sentinel).
    pub(super) fn replaced(&self, epoch: u64) -> bool {
        match self {
            Place::Single(pool) => pool.upgrade().is_some_and(|p| p.epoch() != epoch),
            Place::Cluster(_) => false,
        }
    }

    /// Whether a shard channel of `slot` on a link to `addr` should move (the slot map names
    /// another master for it).
    pub(super) fn moved_away(&self, slot: u16, addr: &str) -> bool {
        match self {
            Place::Single(_) => false,
            Place::Cluster(router) => router
                .upgrade()
                .is_some_and(|r| r.master_addr(slot).is_some_and(|m| m != addr)),
        }
    }

    /// A link to `addr` was lost, could not be opened, or stopped answering (`down`: the node
    /// is flagged down, as a call to it would have done): the slot map is refreshed.
    pub(super) fn lost(&self, addr: &str, down: bool) {
        if let Place::Cluster(router) = self
            && let Some(router) = router.upgrade()
        {
            if down {
                router.node_failed(addr);
            } else {
                router.request_refresh();
            }
        }
    }

    /// A `MOVED` reply to `SSUBSCRIBE`: `slot` lives at `addr`.
    pub(super) fn moved(&self, slot: u16, addr: &str) {
        if let Place::Cluster(router) = self
            && let Some(router) = router.upgrade()
        {
            router.moved(slot, addr);
        }
    }

    /// Whether the client is gone.
    pub(super) fn gone(&self) -> bool {
        match self {
            Place::Single(pool) => pool.strong_count() == 0,
            Place::Cluster(router) => router.strong_count() == 0,
        }
    }
}

/// The error of a subscription whose client is gone.
fn gone() -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "the client is gone").into()
}

/// `Arc` of a router, for [`Place::Cluster`].
pub(super) fn cluster(router: &Arc<ClusterRouter>) -> Place {
    Place::Cluster(Arc::downgrade(router))
}
