//! The background task of a pool: reconnects dead slots one at a time (paced by the jittered
//! reconnect backoff, at once after a master switch), and PINGs idle connections.

use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

use rand::rngs::SmallRng;
use tokio::sync::{Notify, watch};

use super::{
    Endpoint, Lease, Master, Pool, REPLICA_RETRY, StallVerdict,
    role::{Role, role},
};

impl Pool {
    /// The slots whose connection is dead.
    fn dead_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].live.read().expect("slot lock").is_none())
            .collect()
    }

    /// Live slots that saw no reply since the previous idle check (the checks run every
    /// `idle_check_interval`), and the flags reset for the next interval.
    fn idle_slots(&self) -> Vec<Lease> {
        (0..self.slots.len())
            .filter_map(|i| {
                let slot = &self.slots[i];
                let idle = !slot.replied.swap(false, Ordering::Relaxed);
                let live = slot.live.read().expect("slot lock");
                match (idle, live.as_ref()) {
                    (true, Some(l)) => Some(Lease {
                        conn: l.conn.clone(),
                        slot: i,
                        generation: l.generation,
                    }),
                    _ => None,
                }
            })
            .collect()
    }
}

/// The background task of a pool: reconnects dead slots, one at a time, and checks idle ones.
pub(super) async fn reconnector(
    pool: Weak<Pool>,
    wake: Arc<Notify>,
    backoff: resilience::Backoff,
    idle_check: Option<Duration>,
    mut changes: Option<watch::Receiver<Master>>,
    mut rng: SmallRng,
) {
    let mut failures: u32 = 0;
    let mut previous: Option<Duration> = None;
    // Dead replica slots are not tried again before this (after one failed to connect).
    let mut replicas_after = tokio::time::Instant::now();
    loop {
        let Some(p) = pool.upgrade() else { return };
        if p.renewal_due()
            .is_some_and(|at| at <= tokio::time::Instant::now())
        {
            // Also while a slot keeps failing to reconnect: the live ones must not expire.
            p.renew_credentials().await;
        }
        let dead = p.dead_slots();
        if dead.is_empty() {
            failures = 0;
            previous = None;
            let renewal = p.renewal_due();
            drop(p);
            let wait = idle_check.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = wake.notified() => {}
                _ = super::renewal::until(renewal) => {
                    // Credentials about to expire: every live connection sends AUTH again.
                    let Some(p) = pool.upgrade() else { return };
                    p.renew_credentials().await;
                }
                _ = master_changed(&mut changes) => {
                    let Some(p) = pool.upgrade() else { return };
                    p.invalidate_stale();
                }
                _ = tokio::time::sleep(wait) => {
                    // Idle check: PING connections that have not seen a reply for a while.
                    let Some(p) = pool.upgrade() else { return };
                    if idle_check.is_some() {
                        check_idle(&p).await;
                        check_role(&p).await;
                    }
                }
            }
            continue;
        }
        if let Endpoint::Fixed(fixed) = &p.endpoint {
            // Demoted again soon after the last demotion: pace the reconnection.
            let pause = fixed.take_pause(&backoff, &mut rng);
            if !pause.is_zero() {
                drop(p);
                tracing::debug!(?pause, "demoted again: pacing the reconnection");
                tokio::time::sleep(pause).await;
                continue;
            }
        }
        for slot in dead.clone() {
            let opening = tokio::time::Instant::now();
            let opened = if slot < p.masters {
                p.endpoint
                    .open(&p.conn_config)
                    .await
                    .map(|(c, e)| (c, e, None))
            } else {
                p.endpoint
                    .open_replica(&p.conn_config)
                    .await
                    .map(|(c, e, addr)| (c, e, Some(addr)))
            };
            match opened {
                Ok((conn, epoch, addr)) => {
                    metrics::histogram!(crate::observe::CONNECTION_CREATE_TIME)
                        .record(opening.elapsed().as_secs_f64());
                    if !p.install(slot, conn, epoch, addr) {
                        // Opened for a master replaced since: try again with the new one.
                        continue;
                    }
                    p.reconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(crate::observe::RECONNECTIONS).increment(1);
                    tracing::info!(slot, "reconnected");
                    failures = 0;
                    previous = None;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let mut delay = backoff.delay(failures, previous, &mut rng);
                    previous = Some(delay);
                    let replica = slot >= p.masters;
                    if replica {
                        // No replica to read from is not an outage: retry calmly.
                        delay = delay.max(REPLICA_RETRY);
                        replicas_after = tokio::time::Instant::now() + REPLICA_RETRY;
                    } else {
                        p.note_connect_failure(&e);
                        // The master is unreachable: its replicas may still serve reads
                        // (ReadFrom), so theirs do not wait behind its backoff (a failover's
                        // CLIENT KILL on the replicas, for one).
                        if tokio::time::Instant::now() >= replicas_after {
                            for &r in dead.iter().filter(|&&r| r >= p.masters) {
                                match p.endpoint.open_replica(&p.conn_config).await {
                                    Ok((conn, epoch, addr)) => {
                                        if p.install(r, conn, epoch, Some(addr)) {
                                            p.reconnects.fetch_add(1, Ordering::Relaxed);
                                            tracing::info!(slot = r, "reconnected to a replica");
                                        }
                                    }
                                    Err(e) => {
                                        tracing::debug!(slot = r, error = %e, "replica reconnect failed");
                                        replicas_after =
                                            tokio::time::Instant::now() + REPLICA_RETRY;
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    tracing::debug!(slot, error = %e, ?delay, "reconnect failed");
                    metrics::counter!(crate::observe::RECONNECT_FAILURES).increment(1);
                    drop(p);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // A master connection broke meanwhile: the master's slots come first
                        // (their own failures back off without this wake-up).
                        _ = wake.notified(), if replica => {}
                        _ = master_changed(&mut changes) => {
                            // A new master: connect to it now, without backoff.
                            let Some(p) = pool.upgrade() else { return };
                            p.invalidate_stale();
                            failures = 0;
                            previous = None;
                        }
                    }
                    break;
                }
            }
        }
    }
}

/// Resolves when the master changes; never for a fixed server.
pub(crate) async fn master_changed(changes: &mut Option<watch::Receiver<Master>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The resolver is gone (the pool is being dropped).
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn check_idle(pool: &Arc<Pool>) {
    for mut lease in pool.idle_slots() {
        let ping = redis::cmd("PING");
        match tokio::time::timeout(pool.response_timeout, lease.conn.send_packed_command(&ping))
            .await
        {
            Ok(Ok(_)) => pool.touch(lease.slot),
            Ok(Err(e)) if e.is_io_error() => pool.mark_broken(lease.id(), &e.to_string()),
            Ok(Err(_)) => {} // BUSY, LOADING...: the connection works.
            Err(_) => {
                if pool.diagnose_stall().await == StallVerdict::Answers {
                    pool.mark_broken(lease.id(), "idle connection stopped answering");
                }
            }
        }
    }
}

/// At a primary endpoint, asks the server behind one live connection whether it is still a
/// primary: a failover behind one hostname is then found even by a client that only reads
/// (reads get no `READONLY`).
async fn check_role(pool: &Arc<Pool>) {
    let Endpoint::Fixed(fixed) = &pool.endpoint else {
        return;
    };
    if !fixed.requires_primary() {
        return;
    }
    let live = pool.slots[..pool.masters].iter().find_map(|slot| {
        let live = slot.live.read().expect("slot lock");
        live.as_ref().map(|l| (l.conn.clone(), l.epoch))
    });
    let Some((mut conn, epoch)) = live else {
        return;
    };
    // A broken or slow connection is the idle check's and the callers' to find.
    if let Ok(Role::Replica) = role(&mut conn, pool.response_timeout).await {
        pool.demoted(epoch, "ROLE");
    }
}
