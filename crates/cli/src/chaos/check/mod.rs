//! The checker: the recorded history against the final state, read on the masters after the
//! topology settled.
//!
//! # Behavior
//! - `counter`, `cas`: `ok ≤ final ≤ ok + ambiguous`. With `--exactly-once`, `counter` has no
//!   ambiguous call and `final == ok` — but with `--durability replicated`, where a write no
//!   replica could confirm within its deadline is ambiguous by design
//!   ([`resilient_redis::ErrorKind::Unconfirmed`]), exactly-once writes included.
//! - `set`, `queue`: every acknowledged element or item is present, none twice, none that was
//!   neither acknowledged nor ambiguous (a definite failure that was applied after all).
//! - `register`: every read returns the task's last acknowledged write or a later one (unless
//!   reads may go to replicas), and only values written (acknowledged or ambiguous).
//! - `pubsub`: nothing received twice, nothing acknowledged missing outside a reported gap.
//! - Liveness: no call outlives its deadline by more than 100 ms; after each fault ends, every
//!   caller that was failing succeeds again within [`RECOVERY_LIMIT`] of the topology serving
//!   again (as the watcher saw it).
//! - **Server losses**: an acknowledged write missing from the final state (or a register read
//!   going back) is Redis's own doing when its key's slot changed master (a failover, not a
//!   migration) after it was acknowledged (see [`Tally::switch_for`] for the slack either
//!   way). It is counted separately, with
//!   the fault that caused the failover. With `--durability replicated`, only a `kill` of the
//!   master may cause one, or faults hitting the master and a replica of its shard at once
//!   (every copy the write was confirmed on may be gone). Anything else missing is an anomaly
//!   of the client's own.

use std::collections::{BTreeMap, HashMap, HashSet};

use redis::AsyncCommands as _;
use serde::Serialize;

use super::lab::Reader;
use super::nemesis::Applied;
use super::schedule::FaultKind;
use super::watch::Watched;
use super::workloads::{Part, Recorded, WorkloadKind, keys};
use crate::error::CliError;
use workloads::{check_counter, check_pubsub, check_queue, check_registers, check_sets};

mod workloads;

/// How long after the topology serves again a failing caller must succeed.
pub(crate) const RECOVERY_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long after an observed master switch a write may still have been acknowledged by an old
/// master that has not learned it was replaced (a paused cluster master, thawed after the
/// failover, until gossip reaches it).
pub(crate) const OLD_MASTER_SLACK: u64 = 3_000;
/// How late the watcher may see a switch the client already followed (its polling period and
/// a probe).
pub(crate) const SWITCH_LATENCY: u64 = 150;
/// At most this many anomalies of one kind are described.
const EXAMPLES: usize = 5;

/// What the checker needs besides the history.
pub(crate) struct Rules {
    /// `counter` ran through exactly-once writes.
    pub(crate) exactly_once: bool,
    /// Writes waited for a replica (`--durability replicated`).
    pub(crate) replicated: bool,
    /// Reads may go to replicas (`--read-from` other than master).
    pub(crate) replica_reads: bool,
    /// The run's length in ms.
    pub(crate) run_ms: u64,
    /// The run was on a cluster (see [`Rules::bus`] and [`Rules::one_shard`]).
    pub(crate) cluster: bool,
}

impl Rules {
    /// Pub/sub crosses the cluster bus (a cluster): a `PUBLISH` is acknowledged by the node
    /// that took it, before the bus carries it to the subscriber's node.
    pub(crate) fn bus(&self) -> bool {
        self.cluster
    }

    /// Every slot has one master (standalone, Sentinel): a fault of "the master" hits the
    /// master of every key.
    pub(crate) fn one_shard(&self) -> bool {
        !self.cluster
    }
}

/// An anomaly of the client's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Anomaly {
    /// The workload.
    pub(crate) workload: &'static str,
    /// What went wrong: `lost`, `duplicate`, `failed-write-applied`, `over-applied`,
    /// `stale-read`, `unwritten-read`, `ambiguous-exactly-once`, `late-call`, `slow-recovery`,
    /// `never-recovered`, `pubsub-lost`, `pubsub-duplicate`.
    pub(crate) kind: &'static str,
    /// How many of this kind.
    pub(crate) count: u64,
    /// A few of them, described (the ops involved).
    pub(crate) examples: Vec<String>,
}

/// Acknowledged writes Redis lost in a failover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ServerLoss {
    /// The workload.
    pub(crate) workload: &'static str,
    /// How many writes (or register reads that went back).
    pub(crate) count: u64,
    /// When the failover was seen, in ms.
    pub(crate) switch_ms: u64,
    /// The schedule step that caused it, and its kind.
    pub(crate) step: Option<usize>,
    /// The kind of that step.
    pub(crate) fault: Option<FaultKind>,
}

/// One workload's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct WorkloadRow {
    /// The workload.
    pub(crate) workload: &'static str,
    /// Calls that succeeded.
    pub(crate) ok: u64,
    /// Calls that surely did nothing.
    pub(crate) failed: u64,
    /// Calls whose effect is unknown.
    pub(crate) ambiguous: u64,
    /// Operations the checker compared with the final state.
    pub(crate) checked: u64,
    /// The final value, for the counters.
    pub(crate) final_value: Option<i64>,
}

/// Each fault's recovery.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Recovery {
    /// The schedule step.
    pub(crate) step: usize,
    /// Callers failing when it ended.
    pub(crate) callers: u32,
    /// From its end to the last of them succeeding again, in ms (`None`: one never did).
    pub(crate) recovery_ms: Option<u64>,
    /// From its end to the topology serving again, in ms.
    pub(crate) topology_ms: Option<u64>,
}

/// What the checker found.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Verdict {
    /// Per workload.
    pub(crate) workloads: Vec<WorkloadRow>,
    /// The client's own anomalies.
    pub(crate) anomalies: Vec<Anomaly>,
    /// Redis's own losses.
    pub(crate) server_losses: Vec<ServerLoss>,
    /// Per fault.
    pub(crate) recoveries: Vec<Recovery>,
}

/// The final state the checker needs.
#[derive(Debug, Default)]
pub(crate) struct Final {
    counter: i64,
    cas: i64,
    sets: HashMap<u32, HashSet<u64>>,
    registers: HashMap<u32, u64>,
    /// Every queue item found, with how many times.
    queue: HashMap<String, u32>,
}

/// Reads the final state of the workloads' keys.
///
/// # Errors
/// [`CliError::Runtime`] when a read fails.
pub(crate) async fn read_final(
    reader: &mut Reader,
    kinds: &[WorkloadKind],
    tasks: u32,
) -> Result<Final, CliError> {
    let conn = reader;
    let failed =
        |what: String| move |e: redis::RedisError| CliError::runtime(format!("{what}: {e}"));
    let mut state = Final::default();
    for kind in kinds {
        match kind {
            WorkloadKind::Counter => {
                let n: Option<i64> = conn
                    .get(keys::COUNTER)
                    .await
                    .map_err(failed("GET".into()))?;
                state.counter = n.unwrap_or(0);
            }
            WorkloadKind::Cas => {
                let n: Option<i64> = conn.get(keys::CAS).await.map_err(failed("GET".into()))?;
                state.cas = n.unwrap_or(0);
            }
            WorkloadKind::Set => {
                for t in 0..tasks {
                    let members: Vec<u64> = conn
                        .smembers(keys::set(t))
                        .await
                        .map_err(failed(keys::set(t)))?;
                    state.sets.insert(t, members.into_iter().collect());
                }
            }
            WorkloadKind::Register => {
                for t in 0..tasks {
                    let v: Option<u64> = conn
                        .get(keys::register(t))
                        .await
                        .map_err(failed(keys::register(t)))?;
                    state.registers.insert(t, v.unwrap_or(0));
                }
            }
            WorkloadKind::Queue => {
                let lists =
                    std::iter::once(keys::QUEUE.to_owned()).chain((0..tasks).map(keys::processing));
                for list in lists {
                    let items: Vec<String> = conn
                        .lrange(&list, 0, -1)
                        .await
                        .map_err(failed(list.clone()))?;
                    for i in items {
                        *state.queue.entry(i).or_default() += 1;
                    }
                }
            }
            WorkloadKind::Pubsub => {}
        }
    }
    Ok(state)
}

/// The schedule step behind a failover, and its kind.
type Cause = (Option<usize>, Option<FaultKind>);

/// Tallies anomalies and server losses while checking.
struct Tally<'a> {
    watched: &'a Watched,
    applied: &'a [Applied],
    rules: &'a Rules,
    anomalies: BTreeMap<(&'static str, &'static str), (u64, Vec<String>)>,
    /// By workload and failover time: the count, and the step that caused it.
    losses: BTreeMap<(&'static str, u64), (u64, Cause)>,
}

impl Tally<'_> {
    fn anomaly(
        &mut self,
        workload: &'static str,
        kind: &'static str,
        example: impl FnOnce() -> String,
    ) {
        let entry = self.anomalies.entry((workload, kind)).or_default();
        entry.0 += 1;
        if entry.1.len() < EXAMPLES {
            entry.1.push(example());
        }
    }

    /// The master switch of `key`'s slot that explains losing a write acknowledged at `ms`
    /// (not after `until`, when given: a read that went back was served by then). Candidates
    /// start [`OLD_MASTER_SLACK`] before the acknowledgement: a deposed master that has not
    /// learned it was replaced still acknowledges writes. The one closest to the
    /// acknowledgement within [`SWITCH_LATENCY`] after it explains it best (a deposed master
    /// acknowledged it, or the watcher saw a switch the client had already followed); else the
    /// first one after it (the write was the old master's unreplicated tail).
    ///
    /// A write acknowledged after a switch, lost, and followed by a switch that gives the slot
    /// back to the master deposed then, is the later switch's: had the deposed master
    /// acknowledged it, the write would have come back with it (soak seed 127759111868895: a
    /// Sentinel master paused with its one replica killed; the sentinels promoted the master
    /// of the switch 7 s earlier, not yet turned into a replica, which never had the writes the
    /// client made since).
    fn switch_for(&self, key: &str, ms: u64, until: Option<u64>) -> Option<u64> {
        let slot = resilient_redis::commands::key_slot(key.as_bytes());
        let candidates: Vec<u64> = self
            .watched
            .owner_changes_after(slot, ms.saturating_sub(OLD_MASTER_SLACK))
            .into_iter()
            .filter(|&at| !self.migrated(slot, at) && until.is_none_or(|u| at <= u))
            .collect();
        let around = candidates
            .iter()
            .copied()
            .filter(|&at| at <= ms + SWITCH_LATENCY)
            .max();
        let after = candidates.iter().copied().find(|&at| at > ms);
        // A master killed after the acknowledgement and back before any failover restarts
        // with what it last saved (or nothing), and its replicas resync from it: what it
        // acknowledged since is gone without a switch (soak seed 197886462243110: Sentinel, the
        // master SIGKILLed for 1 s came back without its last 3 s of writes, and its replicas
        // resynced from it). Its return counts as the switch, unless a switch nearer the
        // acknowledgement explains it.
        let reset = self
            .applied
            .iter()
            .filter(|a| {
                self.rules.one_shard()
                    && a.kind == FaultKind::Kill
                    && a.master
                    && a.error.is_none()
                    && a.start_ms >= ms
                    && after.is_none_or(|s| a.end_ms <= s)
                    && until.is_none_or(|u| a.end_ms <= u)
            })
            .map(|a| a.end_ms)
            .min();
        if let Some(reset) = reset
            && around.is_none_or(|before| ms > before + SWITCH_LATENCY)
        {
            return Some(reset);
        }
        match (around, after) {
            (Some(before), Some(after)) if ms > before + SWITCH_LATENCY => {
                let deposed = self.watched.owner_at(slot, before.saturating_sub(1));
                let returns = deposed.is_some() && self.watched.owner_at(slot, after) == deposed;
                Some(if returns { after } else { before })
            }
            (Some(before), _) => Some(before),
            (None, after) => after,
        }
    }

    /// Whether `slot` changing owner at `at` is the nemesis's migration.
    fn migrated(&self, slot: u16, at: u64) -> bool {
        self.applied.iter().any(|a| {
            a.kind == FaultKind::Migrate
                && a.slot == Some(slot)
                && a.start_ms <= at
                && at <= a.end_ms + 1_000
        })
    }

    /// Whether `cause` may take back writes replicas confirmed: a SIGKILL (the master's
    /// unreplicated tail), or faults on the master and a replica at once.
    fn may_lose_replicated(&self, cause: &Applied) -> bool {
        if cause.kind == FaultKind::Kill {
            return true;
        }
        // Two steps started together on the shard, both taking their node down.
        cause.kind.takes_node_down()
            && self.applied.iter().any(|a| {
                a.step != cause.step
                    && a.start_ms.abs_diff(cause.start_ms) < 100
                    && a.error.is_none()
                    && a.shard == cause.shard
                    && a.node != cause.node
                    && a.kind.takes_node_down()
            })
    }

    /// Counts a lost acknowledged write of `key` at `ms`: Redis's own when a failover explains
    /// it, else an anomaly.
    fn lost(&mut self, workload: &'static str, key: &str, ms: u64, what: impl FnOnce() -> String) {
        let switch = self.switch_for(key, ms, None);
        self.lost_to(workload, switch, what);
    }

    /// Counts a lost acknowledged write: Redis's own when `switch` (a failover) explains it and
    /// the durability allows its cause, else an anomaly.
    fn lost_to(
        &mut self,
        workload: &'static str,
        switch: Option<u64>,
        what: impl FnOnce() -> String,
    ) {
        match switch {
            Some(switch) => {
                let cause = self
                    .applied
                    .iter()
                    .filter(|a| {
                        a.start_ms <= switch
                            && a.error.is_none()
                            && !matches!(a.kind, FaultKind::Migrate | FaultKind::ClientKill)
                    })
                    .max_by_key(|a| a.start_ms);
                let (step, fault) = (cause.map(|a| a.step), cause.map(|a| a.kind));
                if self.rules.replicated && !cause.is_some_and(|c| self.may_lose_replicated(c)) {
                    self.anomaly(workload, "lost", || {
                        format!(
                            "{} (replicated; failover at {switch} ms by {fault:?})",
                            what()
                        )
                    });
                    return;
                }
                let entry = self.losses.entry((workload, switch)).or_default();
                entry.0 += 1;
                entry.1 = (step, fault);
            }
            None => self.anomaly(workload, "lost", what),
        }
    }
}

/// Checks the history against the final state (see the module docs).
pub(crate) fn check(
    recorded: &Recorded,
    state: &Final,
    watched: &Watched,
    applied: &[Applied],
    rules: &Rules,
) -> Verdict {
    let mut tally = Tally {
        watched,
        applied,
        rules,
        anomalies: BTreeMap::new(),
        losses: BTreeMap::new(),
    };
    let mut rows: BTreeMap<WorkloadKind, WorkloadRow> = BTreeMap::new();
    for (&(kind, _, _), log) in &recorded.logs {
        let row = rows.entry(kind).or_insert_with(|| WorkloadRow {
            workload: kind.name(),
            ..WorkloadRow::default()
        });
        row.ok += log.ok;
        row.failed += log.failed;
        row.ambiguous += log.ambiguous;
        for late in &log.late {
            tally.anomaly(kind.name(), "late-call", || {
                format!(
                    "{} at {} ms took {} ms",
                    late.op, late.start_ms, late.took_ms
                )
            });
        }
    }
    for (kind, row) in rows.iter_mut() {
        match kind {
            WorkloadKind::Counter => {
                check_counter(
                    &mut tally,
                    row,
                    recorded,
                    *kind,
                    state.counter,
                    keys::COUNTER,
                    rules.exactly_once && !rules.replicated,
                );
            }
            WorkloadKind::Cas => {
                check_counter(
                    &mut tally,
                    row,
                    recorded,
                    *kind,
                    state.cas,
                    keys::CAS,
                    false,
                );
            }
            WorkloadKind::Set => check_sets(&mut tally, row, recorded, state),
            WorkloadKind::Register => check_registers(&mut tally, row, recorded, state),
            WorkloadKind::Queue => check_queue(&mut tally, row, recorded, state),
            WorkloadKind::Pubsub => {
                if let Some(pubsub) = &recorded.pubsub {
                    row.checked = pubsub.acknowledged;
                    check_pubsub(&mut tally, recorded, pubsub);
                }
            }
        }
    }
    let recoveries = recoveries(&mut tally, recorded);
    Verdict {
        workloads: rows.into_values().collect(),
        anomalies: tally
            .anomalies
            .into_iter()
            .map(|((workload, kind), (count, examples))| Anomaly {
                workload,
                kind,
                count,
                examples,
            })
            .collect(),
        server_losses: tally
            .losses
            .into_iter()
            .map(
                |((workload, switch_ms), (count, (step, fault)))| ServerLoss {
                    workload,
                    count,
                    switch_ms,
                    step,
                    fault,
                },
            )
            .collect(),
        recoveries,
    }
}

/// Each fault's recovery: callers failing when it ended must succeed again within
/// [`RECOVERY_LIMIT`] of the topology serving again.
fn recoveries(tally: &mut Tally<'_>, recorded: &Recorded) -> Vec<Recovery> {
    let mut out = Vec::new();
    let limit = RECOVERY_LIMIT.as_millis() as u64;
    let applied: Vec<Applied> = tally.applied.to_vec();
    for a in &applied {
        let end = a.end_ms;
        let topology = tally.watched.serving_from(end);
        let mut callers = 0;
        let mut worst: Option<u64> = Some(0);
        for (&(kind, part, t), log) in &recorded.logs {
            let Some(&(_, back)) = log
                .outages
                .iter()
                .find(|(from, back)| *from <= end && back.is_none_or(|b| b > end))
            else {
                continue;
            };
            callers += 1;
            match back {
                Some(back) => {
                    worst = worst.map(|w| w.max(back - end));
                    let bound = topology.unwrap_or(end).max(end) + limit;
                    if back > bound {
                        tally.anomaly(kind.name(), "slow-recovery", || {
                            format!(
                                "task {t} failing from step {} ({}) succeeded {} ms after it ended, \
                                 {} ms after the topology served",
                                a.step,
                                a.kind.name(),
                                back - end,
                                back.saturating_sub(topology.unwrap_or(end))
                            )
                        });
                    }
                }
                None => {
                    worst = None;
                    if topology.is_some_and(|at| at + limit < tally.rules.run_ms) {
                        tally.anomaly(kind.name(), "never-recovered", || {
                            let last = log.last_failure.as_ref().map_or(String::new(), |(c, e)| {
                                format!(
                                    "; its last call, {} at {} ms, failed after {} ms: {e}",
                                    c.op, c.start_ms, c.took_ms
                                )
                            });
                            let consumer = if part == Part::Consumer {
                                " (consumer)"
                            } else {
                                ""
                            };
                            format!(
                                "task {t}{consumer} failing since step {} ({}) never succeeded \
                                 again{last}",
                                a.step,
                                a.kind.name()
                            )
                        });
                    }
                }
            }
        }
        out.push(Recovery {
            step: a.step,
            callers,
            recovery_ms: if callers == 0 { Some(0) } else { worst },
            topology_ms: topology.map(|at| at - end),
        });
    }
    out
}

#[cfg(test)]
mod tests;
