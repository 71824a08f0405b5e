//! How many replicas a Sentinel failover may promote, as the sentinels see them: what a durable
//! write waits for besides the replicas attached to the master (see [`super::replicas`]).
//!
//! # Why
//! `INFO replication` on the master counts the replicas attached to it. Sentinel may promote a
//! replica that is not: one restarted and not yet pointed back at the master, one whose link
//! broke a moment ago (Sentinel promotes replicas disconnected for less than ten times
//! `down-after-milliseconds`). A write confirmed by every *attached* replica is then lost when
//! that one is promoted: chaos found a routine `SENTINEL FAILOVER` taking back hundreds of
//! writes so confirmed. So a durable write under Sentinel waits for as many replicas as the
//! larger of the two counts; while a known replica is not attached (or not caught up), writes
//! come back unconfirmed (ambiguous), as they should.
//!
//! A failover under way is another matter: the replica it promotes has left the master, and
//! every write the master takes from then on is lost, however many of the other replicas
//! confirm it. So while the sentinels think the master down, are failing it over, or name
//! another master, no durable write to it is confirmed: one not sent yet is refused (a
//! definite failure, retried on the new master), one already applied stays unconfirmed.
//!
//! # Behavior
//! - The count is the replicas that `SENTINEL REPLICAS <name>` lists without `s_down`, `o_down`
//!   or `disconnected` (Sentinel does not promote those), with a priority other than 0, and
//!   reporting the replica role (a deposed master is listed before the sentinels convert it:
//!   it has none of the new master's writes to lose, and counting it would hold every write
//!   until its conversion).
//! - The same round asks `SENTINEL MASTER <name>`: flags `s_down`, `o_down` or
//!   `failover_in_progress`, a replica flagged `promoted`, or another address than the
//!   client's master make the view [`SentinelView::FailingOver`]. (Chaos seed
//!   127960300911698: a master restarted mid-failover took back writes that its one attached
//!   replica confirmed, while the sentinels promoted the other.)
//! - Asked of the sentinels in turn (the resolver's preferred one first) when a durable write
//!   first needs it, then every [`super::replicas::RELEARN_AFTER`] by a task that ends with the
//!   resolver. Until a sentinel answers, the view is unknown and the master's own count is
//!   used (sentinels that cannot be reached cannot run a failover either).

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use super::{
    SentinelResolver,
    replicas::RELEARN_AFTER,
    sentinel::{Addr, dropped},
};

/// Unknown: no sentinel has answered yet.
const UNKNOWN: u32 = u32::MAX;
/// [`SentinelView::FailingOver`], as stored.
const FAILING_OVER: u32 = u32::MAX - 1;

/// What the sentinels say of the master, for durable writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentinelView {
    /// This many replicas a failover may promote.
    Promotable(u32),
    /// The sentinels think the master down, are failing it over, or name another master: no
    /// write to it can be confirmed now.
    FailingOver,
}

impl SentinelView {
    /// The view as stored, with the master epoch it was taken in.
    fn stored(self, epoch: u64) -> u64 {
        let n = match self {
            SentinelView::Promotable(n) => n.min(FAILING_OVER - 1),
            SentinelView::FailingOver => FAILING_OVER,
        };
        ((epoch as u32 as u64) << 32) | u64::from(n)
    }

    /// The stored view, if it was taken in `epoch`.
    fn load(stored: u64, epoch: u64) -> Option<SentinelView> {
        if stored >> 32 != u64::from(epoch as u32) {
            return None;
        }
        match stored as u32 {
            UNKNOWN => None,
            FAILING_OVER => Some(SentinelView::FailingOver),
            n => Some(SentinelView::Promotable(n)),
        }
    }
}

/// The last view of the sentinels (with the master epoch it was taken in: a view of the
/// previous master says nothing of the new one), and whether the task refreshing it runs.
#[derive(Debug)]
pub(crate) struct Promotable {
    view: AtomicU64,
    started: AtomicBool,
}

impl Default for Promotable {
    fn default() -> Self {
        Promotable {
            view: AtomicU64::new(u64::from(UNKNOWN)),
            started: AtomicBool::new(false),
        }
    }
}

impl SentinelResolver {
    /// What the sentinels say of the master: how many replicas they could promote, or that a
    /// failover is under way (see the module docs); `None` until a sentinel has answered. The
    /// first call asks at once and starts the refreshing task.
    pub(crate) async fn promotable_replicas(self: &Arc<Self>) -> Option<SentinelView> {
        let state = self.promotable();
        if !state.started.swap(true, Ordering::AcqRel) {
            // The task first (this call may be cut short by its caller's deadline).
            tokio::spawn(refresh(Arc::downgrade(self), self.alive()));
            self.ask_and_store().await;
        }
        self.promotable_known()
    }

    /// The last view of the sentinels, without asking: `None` until a sentinel has answered
    /// about the current master (see [`SentinelResolver::promotable_replicas`]).
    pub(crate) fn promotable_known(&self) -> Option<SentinelView> {
        let stored = self.promotable().view.load(Ordering::Relaxed);
        SentinelView::load(stored, self.master().epoch)
    }

    /// Asks the sentinels and keeps their answer, with the epoch it is about.
    async fn ask_and_store(&self) {
        let epoch = self.master().epoch;
        if let Some(view) = self.ask_promotable().await {
            let state = self.promotable();
            state.view.store(view.stored(epoch), Ordering::Relaxed);
        }
    }

    /// One sentinel's view: the first of the known sentinels to answer.
    async fn ask_promotable(&self) -> Option<SentinelView> {
        let (sentinels, preferred) = self.known_sentinels();
        let n = sentinels.len();
        for i in 0..n {
            let sentinel = &sentinels[(preferred + i) % n];
            let asked = async {
                let mut conn = self.sentinel_connection(sentinel).await?;
                redis::pipe()
                    .cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(self.master_name())
                    .cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(self.master_name())
                    .query_async::<(Fields, Vec<Fields>)>(&mut conn)
                    .await
            };
            match tokio::time::timeout(self.response_timeout(), asked).await {
                Ok(Ok((master, replicas))) => {
                    let current = self.master().addr;
                    let view = view(&master, &replicas, current.as_ref());
                    if view == SentinelView::FailingOver {
                        tracing::debug!(
                            flags = master.get("flags").map(String::as_str).unwrap_or(""),
                            "the sentinels are failing the master over: durable writes wait"
                        );
                    }
                    return Some(view);
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "SENTINEL REPLICAS failed"),
                Err(_) => tracing::debug!("SENTINEL REPLICAS timed out"),
            }
        }
        None
    }
}

/// One entry of a `SENTINEL MASTER` or `SENTINEL REPLICAS` reply.
type Fields = HashMap<String, String>;

fn has_flag(fields: &Fields, any: &[&str]) -> bool {
    fields
        .get("flags")
        .is_some_and(|flags| flags.split(',').any(|f| any.contains(&f)))
}

/// The view of a `SENTINEL MASTER` and `SENTINEL REPLICAS` reply, for a client whose master
/// is `current`.
fn view(master: &Fields, replicas: &[Fields], current: Option<&Addr>) -> SentinelView {
    let failing = has_flag(master, &["s_down", "o_down", "failover_in_progress"])
        || replicas.iter().any(|r| has_flag(r, &["promoted"]));
    let named = master
        .get("ip")
        .zip(master.get("port").and_then(|p| p.parse::<u16>().ok()));
    let elsewhere =
        matches!((current, named), (Some((host, port)), Some((ip, p))) if host != ip || *port != p);
    if failing || elsewhere {
        SentinelView::FailingOver
    } else {
        SentinelView::Promotable(promotable(replicas))
    }
}

/// The replicas of a `SENTINEL REPLICAS` reply that a failover may promote.
fn promotable(replicas: &[Fields]) -> u32 {
    let eligible = replicas.iter().filter(|r| {
        let down = has_flag(r, &["s_down", "o_down", "disconnected"]);
        let never = r.get("slave-priority").is_some_and(|p| p == "0");
        // A deposed master the sentinels have not yet turned into a replica is listed too.
        let replica = r.get("role-reported").is_none_or(|role| role == "slave");
        !down && !never && replica
    });
    u32::try_from(eligible.count()).unwrap_or(FAILING_OVER - 1)
}

/// Refreshes the view every [`RELEARN_AFTER`], and at once when the master changes, until
/// the resolver is dropped.
async fn refresh(resolver: Weak<SentinelResolver>, mut alive: tokio::sync::watch::Receiver<()>) {
    let Some(mut changes) = resolver.upgrade().map(|r| r.subscribe()) else {
        return;
    };
    loop {
        tokio::select! {
            () = dropped(&mut alive) => return,
            () = tokio::time::sleep(RELEARN_AFTER) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        resolver.ask_and_store().await;
        // Not kept across the sleep: the resolver ends with the client's last clone.
        drop(resolver);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(flags: &str, priority: &str) -> HashMap<String, String> {
        HashMap::from([
            ("flags".to_owned(), flags.to_owned()),
            ("slave-priority".to_owned(), priority.to_owned()),
            ("role-reported".to_owned(), "slave".to_owned()),
        ])
    }

    #[test]
    fn replicas_down_disconnected_or_never_promoted_do_not_count() {
        let replicas = [
            replica("slave", "100"),
            replica("slave", "100"),
            replica("s_down,slave", "100"),
            replica("slave,disconnected", "100"),
            replica("slave", "0"),
        ];
        assert_eq!(promotable(&replicas), 2);
        let mut deposed = replica("slave", "100");
        deposed.insert("role-reported".to_owned(), "master".to_owned());
        assert_eq!(promotable(&[deposed]), 0);
        assert_eq!(promotable(&[]), 0);
    }

    #[test]
    fn a_failover_under_way_confirms_nothing() {
        let at = |flags: &str, port: &str| {
            HashMap::from([
                ("flags".to_owned(), flags.to_owned()),
                ("ip".to_owned(), "10.0.0.1".to_owned()),
                ("port".to_owned(), port.to_owned()),
            ])
        };
        let current: Addr = ("10.0.0.1".to_owned(), 6379);
        let two = [replica("slave", "100"), replica("slave", "100")];
        let healthy = view(&at("master", "6379"), &two, Some(&current));
        assert_eq!(healthy, SentinelView::Promotable(2));
        for flags in [
            "master,s_down",
            "master,s_down,o_down",
            "master,failover_in_progress",
        ] {
            let v = view(&at(flags, "6379"), &two, Some(&current));
            assert_eq!(v, SentinelView::FailingOver, "{flags}");
        }
        // The replica being promoted already reports the master role: still a failover.
        let mut promoted = replica("slave,promoted", "100");
        promoted.insert("role-reported".to_owned(), "master".to_owned());
        let v = view(
            &at("master", "6379"),
            &[promoted, replica("slave", "100")],
            Some(&current),
        );
        assert_eq!(v, SentinelView::FailingOver);
        // The sentinels name another master than the client's.
        let v = view(&at("master", "6380"), &two, Some(&current));
        assert_eq!(v, SentinelView::FailingOver);
        assert_eq!(
            view(&at("master", "6380"), &two, None),
            SentinelView::Promotable(2)
        );
        // The stored form round-trips, for the epoch it was taken in only.
        for v in [SentinelView::FailingOver, SentinelView::Promotable(3)] {
            assert_eq!(SentinelView::load(v.stored(7), 7), Some(v));
            assert_eq!(SentinelView::load(v.stored(7), 8), None);
        }
        let state = Promotable::default();
        assert_eq!(
            SentinelView::load(state.view.load(Ordering::Relaxed), 0),
            None
        );
    }
}
