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
//! # Behavior
//! - The count is the replicas that `SENTINEL REPLICAS <name>` lists without `s_down`, `o_down`
//!   or `disconnected` (Sentinel does not promote those), with a priority other than 0, and
//!   reporting the replica role (a deposed master is listed before the sentinels convert it:
//!   it has none of the new master's writes to lose, and counting it would hold every write
//!   until its conversion).
//! - Asked of the sentinels in turn (the resolver's preferred one first) when a durable write
//!   first needs it, then every [`super::replicas::RELEARN_AFTER`] by a task that ends with the
//!   resolver. Until a sentinel answers, the count is unknown and the master's own count is
//!   used (sentinels that cannot be reached cannot run a failover either).

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

use super::{SentinelResolver, replicas::RELEARN_AFTER, sentinel::dropped};

/// Unknown: no sentinel has answered yet.
const UNKNOWN: u32 = u32::MAX;

/// The last count of promotable replicas, and whether the task refreshing it runs.
#[derive(Debug)]
pub(crate) struct Promotable {
    count: AtomicU32,
    started: AtomicBool,
}

impl Default for Promotable {
    fn default() -> Self {
        Promotable {
            count: AtomicU32::new(UNKNOWN),
            started: AtomicBool::new(false),
        }
    }
}

impl SentinelResolver {
    /// How many replicas the sentinels could promote (see the module docs); `None` until a
    /// sentinel has answered. The first call asks at once and starts the refreshing task.
    pub(crate) async fn promotable_replicas(self: &Arc<Self>) -> Option<u32> {
        let state = self.promotable();
        if !state.started.swap(true, Ordering::AcqRel) {
            // The task first (this call may be cut short by its caller's deadline).
            tokio::spawn(refresh(Arc::downgrade(self), self.alive()));
            if let Some(n) = self.ask_promotable().await {
                state.count.store(n, Ordering::Relaxed);
            }
        }
        self.promotable_known()
    }

    /// The last count of promotable replicas, without asking: `None` until a sentinel has
    /// answered (see [`SentinelResolver::promotable_replicas`]).
    pub(crate) fn promotable_known(&self) -> Option<u32> {
        match self.promotable().count.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// One sentinel's count of promotable replicas: the first of the known sentinels to answer.
    async fn ask_promotable(&self) -> Option<u32> {
        let (sentinels, preferred) = self.known_sentinels();
        let n = sentinels.len();
        for i in 0..n {
            let sentinel = &sentinels[(preferred + i) % n];
            let asked = async {
                let mut conn = self.sentinel_connection(sentinel).await?;
                redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(self.master_name())
                    .query_async::<Vec<HashMap<String, String>>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(self.response_timeout(), asked).await {
                Ok(Ok(replicas)) => return Some(promotable(&replicas)),
                Ok(Err(e)) => tracing::debug!(error = %e, "SENTINEL REPLICAS failed"),
                Err(_) => tracing::debug!("SENTINEL REPLICAS timed out"),
            }
        }
        None
    }
}

/// The replicas of a `SENTINEL REPLICAS` reply that a failover may promote.
fn promotable(replicas: &[HashMap<String, String>]) -> u32 {
    let eligible = replicas.iter().filter(|r| {
        let flags = r.get("flags").map(String::as_str).unwrap_or("");
        let down = flags
            .split(',')
            .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"));
        let never = r.get("slave-priority").is_some_and(|p| p == "0");
        // A deposed master the sentinels have not yet turned into a replica is listed too.
        let replica = r.get("role-reported").is_none_or(|role| role == "slave");
        !down && !never && replica
    });
    u32::try_from(eligible.count()).unwrap_or(UNKNOWN - 1)
}

/// Refreshes the count every [`RELEARN_AFTER`] until the resolver is dropped.
async fn refresh(resolver: Weak<SentinelResolver>, mut alive: tokio::sync::watch::Receiver<()>) {
    loop {
        tokio::select! {
            () = dropped(&mut alive) => return,
            () = tokio::time::sleep(RELEARN_AFTER) => {}
        }
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        if let Some(n) = resolver.ask_promotable().await {
            resolver.promotable().count.store(n, Ordering::Relaxed);
        }
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
}
