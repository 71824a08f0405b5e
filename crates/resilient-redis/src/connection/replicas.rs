//! How many replicas a durable write waits for when the caller did not say: every replica the
//! master has (see [`Durability`](crate::Durability)).
//!
//! Learned from `INFO replication` on the master (`connected_slaves`: every attached replica,
//! a syncing one included, where `ROLE` lists only those already online), asked again after
//! each `WAIT` that fell short and at most [`RELEARN_AFTER`] after the last answer (a replica
//! that attached since is counted within that time). Every `WAIT` also has `ROLE` behind it,
//! which names the replicas online once it has answered (about half the server's cost of
//! `INFO replication`, and no text to parse): one not seen before makes the master be asked
//! again at once.
//!
//! The count is every replica the master reported attached (by address) within [`GONE_AFTER`]
//! in this master epoch: it rises at once, and falls only when a replica has been away that
//! long. That asymmetry is the point: a deposed master loses the promoted replica first, and a
//! count that followed it down at once would let the deposed master acknowledge writes the
//! new master never gets. Counting by address also catches a replica that left (being
//! promoted) while another attached (chaos seed 127960300911698: a deposed master converted
//! into a replica joined the old master a moment before the sentinels switched to the other
//! one, and confirmed writes the new master never got). A replica removed for good (scale-in)
//! makes writes wait until then, and fail as unconfirmed meanwhile.
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

use super::{Endpoint, Pool, promotable::SentinelView};

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
    /// Every replica the master reported attached in this epoch (its `ip:port`), with when it
    /// was last reported; one absent for [`GONE_AFTER`] is forgotten.
    seen: Vec<(String, Instant)>,
    /// The least count of this epoch: 1 when the previous master had replicas.
    floor: u32,
    /// When the master last answered.
    learned_at: Option<Instant>,
    /// The master's replication id when it last answered.
    replid: Option<String>,
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

    /// The count learned for `epoch`, without asking or refreshing.
    fn peek(&self, epoch: u64) -> Option<u32> {
        (epoch == self.epoch).then_some(self.wanted).flatten()
    }

    /// A `WAIT` fell short: ask the master again before the next durable write.
    pub(crate) fn fell_short(&mut self, epoch: u64) {
        self.enter(epoch);
        self.refresh = true;
    }

    /// The master reports the replicas `attached` (named by address, see
    /// [`crate::commands::replica_names`]) at `now`; returns the count to wait for: every
    /// replica reported within [`GONE_AFTER`]. A replica that left and another that joined
    /// count as two: the one that left may be the one a failover is promoting.
    pub(crate) fn observe(&mut self, epoch: u64, attached: &[String], now: Instant) -> u32 {
        self.enter(epoch);
        self.refresh = false;
        self.learned_at = Some(now);
        self.note(attached, now);
        self.seen
            .retain(|(_, at)| now.duration_since(*at) < GONE_AFTER);
        let wanted = self.seen_count().max(self.floor);
        self.wanted = Some(wanted);
        wanted
    }

    /// The master of `epoch` lists the replicas `online` (by `ROLE`, right behind a `WAIT`)
    /// at `now`: they count as in [`ReplicaCount::observe`], but the count is not taken as
    /// learned (`ROLE` lists neither the replicas still syncing nor the master's replication
    /// id). Returns whether one of them was not seen before in this epoch: the master is to
    /// be asked again (`INFO replication`) before a `WAIT` it answered is judged. Nothing is
    /// recorded while the count is unknown, or when the master hides its replicas' addresses
    /// in `INFO` (the names would not match).
    pub(crate) fn saw(&mut self, epoch: u64, online: &[String], now: Instant) -> bool {
        if epoch != self.epoch || self.seen.iter().any(|(n, _)| n.starts_with('#')) {
            return false;
        }
        let Some(wanted) = self.wanted else {
            return false;
        };
        let joined = self.note(online, now);
        self.wanted = Some(wanted.max(self.seen_count()));
        joined
    }

    /// How many replicas were reported in this epoch (within [`GONE_AFTER`] once pruned).
    fn seen_count(&self) -> u32 {
        u32::try_from(self.seen.len()).unwrap_or(u32::MAX)
    }

    /// Records the replicas `names` as reported at `now`; returns whether one was not seen
    /// before.
    fn note(&mut self, names: &[String], now: Instant) -> bool {
        let mut joined = false;
        for name in names {
            match self.seen.iter_mut().find(|(n, _)| n == name) {
                Some((_, at)) => *at = now,
                None => {
                    self.seen.push((name.clone(), now));
                    joined = true;
                }
            }
        }
        joined
    }

    /// The master of `epoch` answers with replication id `replid`. Another id than before is
    /// another server (a failover behind one hostname keeps the epoch until a demotion is
    /// seen): the replicas seen start over, from one replica if the last master had any (its
    /// replicas are not this one's; the old replica is the master now).
    pub(crate) fn master_is(&mut self, epoch: u64, replid: &str) {
        self.enter(epoch);
        if self.replid.as_deref().is_some_and(|old| old != replid) {
            self.epoch = epoch.wrapping_add(1);
            self.enter(epoch);
        }
        self.replid = Some(replid.to_owned());
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

/// How many replicas a durable write waits for, or why it cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// This many replicas.
    Replicas(u32),
    /// The server answers as a replica: it was demoted since the connection was opened.
    Demoted,
    /// The sentinels are failing the master over (see [`super::promotable`]): no write to it
    /// can be confirmed.
    FailingOver,
}

/// The count to wait for: the master's (`kept`), or more if the sentinels could promote more.
fn wanted(kept: u32, view: Option<SentinelView>) -> Wanted {
    match view {
        Some(SentinelView::FailingOver) => Wanted::FailingOver,
        Some(SentinelView::Promotable(n)) => Wanted::Replicas(kept.max(n)),
        None => Wanted::Replicas(kept),
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
    /// `conn` when not known for this epoch. Under Sentinel, also every replica a failover may
    /// promote, and none while the sentinels fail the master over ([`super::promotable`]).
    /// The question waits for its answer no longer than the response window or `deadline`,
    /// whichever ends first.
    pub(crate) async fn replicas_to_wait_for(
        &self,
        conn: &mut MultiplexedConnection,
        epoch: u64,
        deadline: Option<Instant>,
    ) -> redis::RedisResult<Wanted> {
        let known = self
            .replicas
            .lock()
            .expect("replicas lock")
            .get(epoch, Instant::now());
        if let Some(n) = known {
            let view = match &self.endpoint {
                Endpoint::Sentinel(resolver) => resolver.promotable_known(),
                Endpoint::Fixed(_) => None,
            };
            return Ok(wanted(n, view));
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
            InfoRole::Replica => return Ok(Wanted::Demoted),
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
        let view = match &self.endpoint {
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
        let kept = self.observe_info(epoch, attached, &reply);
        let wanted = wanted(kept, view);
        tracing::debug!(
            epoch,
            attached,
            ?view,
            ?wanted,
            "durable writes wait for the master's replicas"
        );
        Ok(wanted)
    }

    /// Records who the master of `epoch` lists online in the `ROLE` reply (`role`) sent right
    /// behind a `WAIT` on `conn`: a replica that joined while one left shows at once in
    /// [`Pool::wanted_after_wait`], before the `WAIT`'s answer is taken as a confirmation. A
    /// replica not seen before makes the master be asked again on `conn` (`INFO replication`,
    /// within the response window and `deadline`): a new replication id is another master
    /// behind the same address, whose replicas start over (a failover behind one hostname).
    pub(crate) async fn observe_after_wait(
        &self,
        conn: &mut MultiplexedConnection,
        epoch: u64,
        role: Option<&Value>,
        deadline: Option<Instant>,
    ) {
        let Some(online) = role.and_then(super::role::master_replicas) else {
            return;
        };
        let joined =
            self.replicas
                .lock()
                .expect("replicas lock")
                .saw(epoch, &online, Instant::now());
        if joined {
            self.replicas_fell_short(epoch);
            // Not answering leaves the newcomer counted: the write waits or is unconfirmed.
            let _ = self.replicas_to_wait_for(conn, epoch, deadline).await;
        }
    }

    /// Records a master's `INFO replication` reply (`attached` replicas): which server it is,
    /// and who is attached; returns the count to wait for.
    fn observe_info(&self, epoch: u64, attached: u32, info: &Value) -> u32 {
        let mut names = crate::commands::replica_names(info);
        names.truncate(attached as usize);
        let replid = crate::commands::master_replid(info);
        let mut count = self.replicas.lock().expect("replicas lock");
        if let Some(replid) = replid {
            count.master_is(epoch, &replid);
        }
        count.observe(epoch, &names, Instant::now())
    }

    /// What a durable write that waited for `wanted` replicas on a connection of `epoch` needs
    /// once its `WAIT` has answered: the count (or the sentinels' view) may have changed while
    /// it waited. [`Wanted::FailingOver`] when the sentinels have begun failing the master
    /// over (the replicas that answered may not include the one promoted), a higher count when
    /// more replicas are known now (one that joined may have answered for one that left);
    /// never [`Wanted::Demoted`].
    pub(crate) fn wanted_after_wait(&self, epoch: u64, wanted: u32) -> Wanted {
        let view = match &self.endpoint {
            Endpoint::Sentinel(resolver) => resolver.promotable_known(),
            Endpoint::Fixed(_) => None,
        };
        let known = self.replicas.lock().expect("replicas lock").peek(epoch);
        match self::wanted(known.unwrap_or(0).max(wanted), view) {
            Wanted::Replicas(n) => Wanted::Replicas(n),
            _ => Wanted::FailingOver,
        }
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

    /// `n` replicas, the same names for the same `n`.
    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:6379")).collect()
    }

    #[test]
    fn the_count_rises_at_once_and_falls_only_after_a_while() {
        let t0 = Instant::now();
        let mut c = ReplicaCount::default();
        assert_eq!(c.get(0, t0), None);
        assert_eq!(c.observe(0, &names(2), t0), 2);
        assert_eq!(c.get(0, t0), Some(2));
        assert_eq!(
            c.get(0, t0 + RELEARN_AFTER),
            None,
            "asked again after a while"
        );
        // A failover under way: the deposed master lost a replica. Still 2.
        c.fell_short(0);
        assert_eq!(c.get(0, t0), None, "asked again after a short WAIT");
        assert_eq!(c.observe(0, &names(1), t0 + Duration::from_secs(1)), 2);
        assert_eq!(c.observe(0, &names(1), t0 + Duration::from_secs(20)), 2);
        // The replica was removed for good: the count follows after GONE_AFTER.
        assert_eq!(c.observe(0, &names(1), t0 + Duration::from_secs(31)), 1);
        // A replica added: at once.
        assert_eq!(c.observe(0, &names(3), t0 + Duration::from_secs(32)), 3);
        // A break in the lower reports starts the wait over.
        assert_eq!(c.observe(0, &names(2), t0 + Duration::from_secs(33)), 3);
        assert_eq!(c.observe(0, &names(3), t0 + Duration::from_secs(40)), 3);
        assert_eq!(c.observe(0, &names(2), t0 + Duration::from_secs(64)), 3);
        // A new master: learned afresh, but from one replica, as the last one had some.
        assert_eq!(c.get(1, t0 + Duration::from_secs(65)), None);
        assert_eq!(c.observe(1, &names(0), t0 + Duration::from_secs(65)), 1);
        assert_eq!(c.observe(1, &names(2), t0 + Duration::from_secs(66)), 2);
        // A deployment without replicas stays at 0.
        let mut alone = ReplicaCount::default();
        assert_eq!(alone.observe(0, &names(0), t0), 0);
        assert_eq!(alone.get(1, t0), None);
        assert_eq!(alone.observe(1, &names(0), t0), 0);
    }

    #[test]
    fn a_replica_that_left_counts_while_another_joins() {
        let t0 = Instant::now();
        let mut c = ReplicaCount::default();
        let a = vec!["10.0.0.1:6379".to_owned()];
        let b = vec!["10.0.0.2:6379".to_owned()];
        assert_eq!(c.observe(0, &a, t0), 1);
        // `a` left (being promoted), then `b` joined: both count until `a` is gone for good.
        assert_eq!(c.observe(0, &[], t0 + Duration::from_secs(2)), 1);
        assert_eq!(c.observe(0, &b, t0 + Duration::from_secs(3)), 2);
        assert_eq!(c.observe(0, &b, t0 + GONE_AFTER), 1);
    }

    #[test]
    fn names_from_role_count_without_relearning() {
        let t0 = Instant::now();
        let mut c = ReplicaCount::default();
        let a = vec!["10.0.0.1:6379".to_owned()];
        let b = vec!["10.0.0.2:6379".to_owned()];
        // Unknown count: nothing recorded.
        assert!(!c.saw(0, &a, t0));
        assert_eq!(c.observe(0, &a, t0), 1);
        // The same replica online: nothing new, and the count is not taken as learned again.
        assert!(!c.saw(0, &a, t0 + Duration::from_millis(900)));
        assert_eq!(c.get(0, t0 + RELEARN_AFTER), None, "INFO asked on schedule");
        assert_eq!(c.observe(0, &a, t0 + RELEARN_AFTER), 1);
        // `a` left and `b` joined: `b` is new, both count.
        assert!(c.saw(0, &b, t0 + RELEARN_AFTER));
        assert_eq!(c.peek(0), Some(2));
        assert!(!c.saw(0, &b, t0 + RELEARN_AFTER), "new only once");
        // Another epoch's names are not this one's.
        assert!(!c.saw(1, &b, t0 + RELEARN_AFTER));
        // A master hiding its replicas' addresses in INFO: ROLE's names would not match.
        let mut hidden = ReplicaCount::default();
        assert_eq!(hidden.observe(0, &["#0".to_owned()], t0), 1);
        assert!(!hidden.saw(0, &a, t0));
        assert_eq!(hidden.peek(0), Some(1));
    }

    #[test]
    fn another_master_behind_the_same_address_starts_over() {
        let t0 = Instant::now();
        let mut c = ReplicaCount::default();
        let a = vec!["10.0.0.1:6379".to_owned()];
        let b = vec!["10.0.0.2:6379".to_owned()];
        c.master_is(0, "one");
        assert_eq!(c.observe(0, &b, t0), 1);
        c.master_is(0, "one");
        assert_eq!(c.observe(0, &b, t0), 1);
        // `b` was promoted behind the same name; `a`, the old master, is its replica now.
        c.master_is(0, "two");
        assert_eq!(
            c.observe(0, &a, t0),
            1,
            "not `b` and `a`: `b` is the master"
        );
        // From one replica, as the last master had one.
        c.master_is(0, "three");
        assert_eq!(c.observe(0, &[], t0), 1);
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
