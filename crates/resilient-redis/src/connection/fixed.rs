//! A fixed address: one server, a cluster node, or a managed service's primary endpoint.
//!
//! Behind a managed service's primary endpoint (ElastiCache, MemoryDB, Memorystore, Azure
//! Cache, a proxy or a DNS name that follows the primary), a failover moves the *name* to the
//! new primary while open connections stay on the demoted node, which answers every write with
//! `READONLY`. With [`ClientConfig::require_primary`](crate::ClientConfig::require_primary) (the
//! default for a single server), connections are kept only to a primary:
//! - a new connection is checked with `ROLE` and refused when the server says it is a replica:
//!   a failed connect, paced by the reconnect backoff, so a name that still points at the old
//!   node is asked again calmly. A server that does not allow `ROLE` (ACL, a proxy that does not
//!   know it) is taken at its word.
//! - `READONLY` on a connection of the current epoch, or the background `ROLE` check finding a
//!   replica, ends the epoch: the pool drops every connection opened before (the machinery of
//!   a Sentinel master switch: dedicated blocking connections go, subscriptions resubscribe),
//!   and the next connect resolves the name again.
//! - Demotions in quick succession (a node that stays read-only while `ROLE` is denied) pace the
//!   reconnections: the n-th of a streak waits the reconnect backoff's n-th step, so there is at
//!   most one reconnection per backoff step, never a storm.

use std::{sync::Mutex, time::Duration};

use rand::rngs::SmallRng;
use redis::{AsyncConnectionConfig, RedisResult, aio::MultiplexedConnection};
use tokio::{sync::watch, time::Instant};

use super::{
    Connector, Master,
    role::{Role, role},
};

/// Demotions further apart than this are separate failovers, not a streak.
const STREAK_WINDOW: Duration = Duration::from_secs(1);

/// One address, and whether connections are kept only to a primary there.
pub(crate) struct Fixed {
    /// How connections are opened (credentials, name).
    pub(crate) connector: Connector,
    /// Connections are kept only to a primary (see the module's docs).
    require_primary: bool,
    /// Time allowed for the `ROLE` check of a new connection.
    role_timeout: Duration,
    /// Bumped at each demotion; `addr` stays `None` (the address is fixed).
    epochs: watch::Sender<Master>,
    streak: Mutex<Streak>,
}

#[derive(Default)]
struct Streak {
    /// When the last demotion ended an epoch.
    last: Option<Instant>,
    /// Demotions in the current streak.
    count: u32,
    /// The reconnection after the last demotion is still to be paced.
    pause_pending: bool,
}

impl Fixed {
    /// `connector`'s address; `require_primary` for a single server's URL (not for a cluster
    /// node: the cluster's slot map says which node is a master).
    pub(crate) fn new(connector: Connector, require_primary: bool, role_timeout: Duration) -> Self {
        Fixed {
            connector,
            require_primary,
            role_timeout,
            epochs: watch::channel(Master {
                addr: None,
                epoch: 0,
            })
            .0,
            streak: Mutex::new(Streak::default()),
        }
    }

    /// Opens a connection, with the epoch it was opened in; with `require_primary`, refused
    /// (an error) when the server says it is a replica.
    pub(crate) async fn open(
        &self,
        conn_config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, u64)> {
        // The epoch before connecting: a demotion meanwhile makes the connection stale.
        let epoch = self.epoch();
        let mut conn = self.connector.open(None, conn_config).await?;
        if self.require_primary && role(&mut conn, self.role_timeout).await? == Role::Replica {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the server is a replica (ROLE), not a primary: after a failover behind this \
                 address the name may still point at the demoted node (set \
                 ClientConfig::require_primary = false to use a replica on purpose)",
            )
            .into());
        }
        Ok((conn, epoch))
    }

    /// The current epoch: it changes at each demotion.
    pub(crate) fn epoch(&self) -> u64 {
        self.epochs.borrow().epoch
    }

    /// Epoch changes, when connections here can move (`require_primary`).
    pub(crate) fn changes(&self) -> Option<watch::Receiver<Master>> {
        self.require_primary.then(|| self.epochs.subscribe())
    }

    /// Whether connections are kept only to a primary.
    pub(crate) fn requires_primary(&self) -> bool {
        self.require_primary
    }

    /// The server a connection of `epoch` reached was found demoted: ends that epoch, unless a
    /// demotion already did (`true`: this one did).
    pub(crate) fn demoted(&self, epoch: u64) -> bool {
        if !self.require_primary {
            return false;
        }
        let ended = self.epochs.send_if_modified(|m| {
            if m.epoch != epoch {
                return false;
            }
            m.epoch += 1;
            true
        });
        if ended {
            let mut streak = self.streak.lock().expect("streak lock");
            let now = Instant::now();
            let recent = streak
                .last
                .is_some_and(|last| now.duration_since(last) < STREAK_WINDOW);
            streak.count = if recent { streak.count + 1 } else { 1 };
            streak.last = Some(now);
            streak.pause_pending = streak.count > 1;
        }
        ended
    }

    /// The node no longer serves as a master (a cluster node that owns no slot any more): ends
    /// the epoch whatever `require_primary` says, so a reply from it that arrives afterwards is
    /// not taken as a master's (see `client/durable.rs`).
    pub(crate) fn retire(&self) {
        self.epochs.send_modify(|m| m.epoch += 1);
    }

    /// How long the reconnection after a demotion waits: nothing after a lone demotion (a
    /// failover: reconnect at once), the backoff's step for the n-th of a streak. Asked once per
    /// demotion.
    pub(crate) fn take_pause(&self, backoff: &resilience::Backoff, rng: &mut SmallRng) -> Duration {
        let mut streak = self.streak.lock().expect("streak lock");
        if !std::mem::take(&mut streak.pause_pending) {
            return Duration::ZERO;
        }
        backoff.delay(streak.count - 1, None, rng)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn fixed(require_primary: bool) -> Fixed {
        let info = redis::IntoConnectionInfo::into_connection_info("redis://127.0.0.1:1")
            .expect("a valid URL");
        let connector = Connector::new(&crate::ClientConfig::default(), info);
        Fixed::new(connector, require_primary, Duration::from_millis(100))
    }

    #[test]
    fn a_demotion_ends_its_epoch_once() {
        let f = fixed(true);
        assert_eq!(f.epoch(), 0);
        assert!(f.demoted(0));
        assert_eq!(f.epoch(), 1);
        // Other connections of the old epoch report it too: already done.
        assert!(!f.demoted(0));
        assert_eq!(f.epoch(), 1);
        assert!(f.demoted(1));
        assert_eq!(f.epoch(), 2);
    }

    #[test]
    fn a_replica_endpoint_never_moves() {
        let f = fixed(false);
        assert!(!f.demoted(0));
        assert_eq!(f.epoch(), 0);
        assert!(f.changes().is_none());
    }

    #[test]
    fn a_lone_demotion_reconnects_at_once_a_streak_backs_off() {
        let f = fixed(true);
        let backoff = resilience::Backoff::exponential(
            Duration::from_millis(10),
            2.0,
            Duration::from_millis(200),
        )
        .expect("a valid backoff");
        let mut rng = SmallRng::seed_from_u64(7);
        assert!(f.demoted(0));
        assert_eq!(f.take_pause(&backoff, &mut rng), Duration::ZERO);
        // The node stays read-only: the next demotions come quickly.
        assert!(f.demoted(1));
        let second = f.take_pause(&backoff, &mut rng);
        assert!(second >= Duration::from_millis(10), "{second:?}");
        assert_eq!(
            f.take_pause(&backoff, &mut rng),
            Duration::ZERO,
            "once per demotion"
        );
        assert!(f.demoted(2));
        let third = f.take_pause(&backoff, &mut rng);
        assert!(third >= Duration::from_millis(20), "{third:?}");
    }
}
