//! How many replicas a durable write waits for when the caller did not say: every replica the
//! master has (see [`Durability`](crate::Durability)).
//!
//! Learned from `INFO replication` on the master (`connected_slaves`: every attached replica,
//! a syncing one included, where `ROLE` lists only those already online), asked again after
//! each `WAIT` that fell short and at most [`RELEARN_AFTER`] after the last answer (a replica
//! that attached since is counted within that time).
//!
//! The count only rises within a master epoch, at once; it falls only when the master has
//! reported the lower count for [`GONE_AFTER`] without a break. That asymmetry is the point: a
//! deposed master loses the promoted replica first, and a count that followed it down at once
//! would let the deposed master acknowledge writes the new master never gets. A replica
//! removed for good (scale-in) makes writes wait until then, and fail as unconfirmed meanwhile.
//!
//! A new master (a new epoch) starts from what its `ROLE` says, but from at least one replica
//! when the previous master had any: right after a failover the new master has no replica yet,
//! and writes it alone acknowledged would be lost if it failed in turn; they wait (within their
//! deadline) for the first replica to attach, about a second with Sentinel.
//!
//! Under Sentinel the count is also at least the replicas the sentinels could promote now
//! ([`super::promotable`]): one that is not attached would otherwise be promoted without
//! writes its peers confirmed.

use std::time::Duration;

use redis::{Value, aio::MultiplexedConnection};
use tokio::time::Instant;

use super::{Endpoint, Pool};

/// How long the master must report fewer replicas before the count follows it down: longer
/// than a failover takes to demote the old master (seconds with Sentinel's defaults, under a
/// minute for managed services).
pub(crate) const GONE_AFTER: Duration = Duration::from_secs(30);

/// How long a learned count is used before the master is asked again.
pub(crate) const RELEARN_AFTER: Duration = Duration::from_secs(1);

/// The replica count of one master epoch.
#[derive(Debug, Default)]
pub(crate) struct ReplicaCount {
    epoch: u64,
    /// `None` until learned in this epoch.
    wanted: Option<u32>,
    /// The count is to be asked again (a `WAIT` fell short).
    refresh: bool,
    /// A lower count, reported without a break since then.
    lower_since: Option<(u32, Instant)>,
    /// The least count of this epoch: 1 when the previous master had replicas.
    floor: u32,
    /// When the master last answered.
    learned_at: Option<Instant>,
}

impl ReplicaCount {
    /// The count for `epoch` at `now`, `None` when it is to be learned (or learned again).
    pub(crate) fn get(&mut self, epoch: u64, now: Instant) -> Option<u32> {
        self.enter(epoch);
        let fresh = self
            .learned_at
            .is_some_and(|at| now.duration_since(at) < RELEARN_AFTER);
        if self.refresh || !fresh {
            None
        } else {
            self.wanted
        }
    }

    /// A `WAIT` fell short: ask the master again before the next durable write.
    pub(crate) fn fell_short(&mut self, epoch: u64) {
        self.enter(epoch);
        self.refresh = true;
    }

    /// The master (and the sentinels) report `seen` replicas at `now`; returns the count to wait
    /// for.
    pub(crate) fn observe(&mut self, epoch: u64, seen: u32, now: Instant) -> u32 {
        self.enter(epoch);
        self.refresh = false;
        self.learned_at = Some(now);
        let seen = seen.max(self.floor);
        let wanted = match self.wanted {
            Some(w) if seen < w => match self.lower_since {
                Some((_, since)) if now.duration_since(since) >= GONE_AFTER => {
                    self.lower_since = None;
                    seen
                }
                Some((_, since)) => {
                    self.lower_since = Some((seen, since));
                    w
                }
                None => {
                    self.lower_since = Some((seen, now));
                    w
                }
            },
            _ => {
                self.lower_since = None;
                seen
            }
        };
        self.wanted = Some(wanted);
        wanted
    }

    /// A new epoch (a new master) starts from nothing, but from one replica if the last had.
    fn enter(&mut self, epoch: u64) {
        if epoch != self.epoch {
            let floor = u32::from(self.wanted.is_some_and(|w| w > 0) || self.floor > 0);
            *self = ReplicaCount {
                epoch,
                floor,
                ..ReplicaCount::default()
            };
        }
    }
}

/// What an `INFO replication` reply says of the server's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InfoRole {
    /// A master, with this many replicas (`connected_slaves`).
    Master(u32),
    /// A replica: the server was demoted.
    Replica,
    /// Not an `INFO replication` reply (an error reply such as `NOPERM`, or garbage).
    Unknown,
}

/// Reads the role (and a master's replica count) from an `INFO replication` reply.
pub(crate) fn role_in_info(reply: &Value) -> InfoRole {
    match crate::commands::replication(reply) {
        Some(info) if info.master => info
            .replicas
            .and_then(|n| u32::try_from(n).ok())
            .map_or(InfoRole::Unknown, InfoRole::Master),
        Some(_) => InfoRole::Replica,
        None => InfoRole::Unknown,
    }
}

impl Pool {
    /// How many replicas a durable write on `conn` (a master connection of epoch `epoch`) waits
    /// for: every replica of the master (see the module docs), asked with `INFO replication` on
    /// `conn` when not known for this epoch; `None` when the server answers as a replica (it
    /// was demoted since the connection was opened). Under Sentinel, also every replica a
    /// failover may promote ([`super::promotable`]). The question waits for its answer no
    /// longer than the response window or `deadline`, whichever ends first.
    pub(crate) async fn replicas_to_wait_for(
        &self,
        conn: &mut MultiplexedConnection,
        epoch: u64,
        deadline: Option<Instant>,
    ) -> redis::RedisResult<Option<u32>> {
        if let Some(n) = self
            .replicas
            .lock()
            .expect("replicas lock")
            .get(epoch, Instant::now())
        {
            let promotable = match &self.endpoint {
                Endpoint::Sentinel(resolver) => resolver.promotable_known(),
                Endpoint::Fixed(_) => None,
            };
            return Ok(Some(n.max(promotable.unwrap_or(0))));
        }
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        let window_end = Instant::now() + self.response_timeout;
        let limit = deadline.map_or(window_end, |d| d.min(window_end));
        let reply = tokio::time::timeout_at(limit, conn.send_packed_command(&info))
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer to INFO replication (asked for the replica count of a durable \
                     write)",
                ))
            })??;
        let attached = match role_in_info(&reply) {
            InfoRole::Master(n) => n,
            InfoRole::Replica => return Ok(None),
            InfoRole::Unknown => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "durable writes need the master's replica count",
                    "INFO replication did not answer as a master: give the replica count \
                     explicitly (Durability::Replicated { replicas: Some(n), .. })"
                        .to_owned(),
                )));
            }
        };
        // Under Sentinel, also every replica a failover may promote (see `promotable`).
        let promotable = match &self.endpoint {
            Endpoint::Sentinel(resolver) => {
                tokio::time::timeout_at(limit, resolver.promotable_replicas())
                    .await
                    .ok()
                    .flatten()
            }
            Endpoint::Fixed(_) => None,
        };
        // The attached count falls only slowly (see `replicas`); the sentinels' view is taken
        // as it is now (it lists a promoted replica's peers a moment before they attach).
        let kept =
            self.replicas
                .lock()
                .expect("replicas lock")
                .observe(epoch, attached, Instant::now());
        let wanted = kept.max(promotable.unwrap_or(0));
        tracing::debug!(
            epoch,
            attached,
            ?promotable,
            wanted,
            "durable writes wait for the master's replicas"
        );
        Ok(Some(wanted))
    }

    /// A durable write's `WAIT` fell short on a connection of `epoch`: the replica count is
    /// asked again before the next one.
    pub(crate) fn replicas_fell_short(&self, epoch: u64) {
        self.replicas
            .lock()
            .expect("replicas lock")
            .fell_short(epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_rises_at_once_and_falls_only_after_a_while() {
        let t0 = Instant::now();
        let mut c = ReplicaCount::default();
        assert_eq!(c.get(0, t0), None);
        assert_eq!(c.observe(0, 2, t0), 2);
        assert_eq!(c.get(0, t0), Some(2));
        assert_eq!(
            c.get(0, t0 + RELEARN_AFTER),
            None,
            "asked again after a while"
        );
        // A failover under way: the deposed master lost a replica. Still 2.
        c.fell_short(0);
        assert_eq!(c.get(0, t0), None, "asked again after a short WAIT");
        assert_eq!(c.observe(0, 1, t0 + Duration::from_secs(1)), 2);
        assert_eq!(c.observe(0, 1, t0 + Duration::from_secs(20)), 2);
        // The replica was removed for good: the count follows after GONE_AFTER.
        assert_eq!(c.observe(0, 1, t0 + Duration::from_secs(31)), 1);
        // A replica added: at once.
        assert_eq!(c.observe(0, 3, t0 + Duration::from_secs(32)), 3);
        // A break in the lower reports starts the wait over.
        assert_eq!(c.observe(0, 2, t0 + Duration::from_secs(33)), 3);
        assert_eq!(c.observe(0, 3, t0 + Duration::from_secs(40)), 3);
        assert_eq!(c.observe(0, 2, t0 + Duration::from_secs(64)), 3);
        // A new master: learned afresh, but from one replica, as the last one had some.
        assert_eq!(c.get(1, t0 + Duration::from_secs(65)), None);
        assert_eq!(c.observe(1, 0, t0 + Duration::from_secs(65)), 1);
        assert_eq!(c.observe(1, 2, t0 + Duration::from_secs(66)), 2);
        // A deployment without replicas stays at 0.
        let mut alone = ReplicaCount::default();
        assert_eq!(alone.observe(0, 0, t0), 0);
        assert_eq!(alone.get(1, t0), None);
        assert_eq!(alone.observe(1, 0, t0), 0);
    }

    #[test]
    fn info_replies_give_the_replica_count() {
        let info = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let master = info(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=1,state=online\r\n",
        );
        assert_eq!(role_in_info(&master), InfoRole::Master(2));
        let alone = info("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n");
        assert_eq!(role_in_info(&alone), InfoRole::Master(0));
        let replica = info("# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n");
        assert_eq!(role_in_info(&replica), InfoRole::Replica);
        assert_eq!(role_in_info(&Value::Nil), InfoRole::Unknown);
        let denied = redis::parse_redis_value(b"-NOPERM no permission\r\n").unwrap();
        assert_eq!(role_in_info(&denied), InfoRole::Unknown);
    }
}
