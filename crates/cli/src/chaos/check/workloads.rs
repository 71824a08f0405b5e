//! Each workload's invariant, checked against the final state (see the parent module's
//! behavior list); what breaks one is tallied as an anomaly or, when a failover explains it,
//! as a server loss.

use std::collections::HashSet;

use super::{EXAMPLES, Final, OLD_MASTER_SLACK, Tally, WorkloadRow};
use crate::chaos::history::TaskLog;
use crate::chaos::schedule::FaultKind;
use crate::chaos::workloads::{Part, Recorded, WorkloadKind, item, keys};

pub(super) fn check_counter(
    tally: &mut Tally<'_>,
    row: &mut WorkloadRow,
    recorded: &Recorded,
    kind: WorkloadKind,
    value: i64,
    key: &str,
    exactly_once: bool,
) {
    let name = row.workload;
    row.final_value = Some(value);
    row.checked = row.ok + row.ambiguous;
    let (ok, ambiguous) = (row.ok as i64, row.ambiguous as i64);
    if exactly_once && ambiguous > 0 {
        tally.anomaly(name, "ambiguous-exactly-once", || {
            format!("{ambiguous} exactly-once increments came back ambiguous")
        });
    }
    if value > ok + ambiguous {
        tally.anomaly(name, "over-applied", || {
            format!("final {value} > ok {ok} + ambiguous {ambiguous}: a write applied twice")
        });
    }
    if value >= ok {
        return;
    }
    // Which increments were lost: each value returned twice lost its earlier copy (the counter
    // went back, then up again), each value above the final one was lost too.
    let mut returned: Vec<(u64, u64)> = recorded
        .logs
        .iter()
        .filter(|((k, _, _), _)| *k == kind)
        .flat_map(|(_, log)| log.writes.iter().map(|w| (w.value, w.at_ms)))
        .collect();
    returned.sort();
    let mut lost: Vec<(u64, u64)> = returned
        .windows(2)
        .filter(|pair| pair[0].0 == pair[1].0)
        .map(|pair| pair[0])
        .collect();
    lost.extend(returned.iter().filter(|(v, _)| *v > value as u64).copied());
    let shortfall = (ok - value) as usize;
    for (v, at) in lost.iter().take(shortfall) {
        tally.lost(name, key, *at, || {
            format!("the increment to {v} acknowledged at {at} ms was taken back (final {value})")
        });
    }
    // Lost increments the returned values do not show: against the first failover.
    for _ in lost.len()..shortfall {
        tally.lost(name, key, 0, || format!("final {value} < ok {ok}"));
    }
}

pub(super) fn check_sets(
    tally: &mut Tally<'_>,
    row: &mut WorkloadRow,
    recorded: &Recorded,
    state: &Final,
) {
    for (&(kind, _, t), log) in &recorded.logs {
        if kind != WorkloadKind::Set {
            continue;
        }
        let key = keys::set(t);
        let empty = HashSet::new();
        let found = state.sets.get(&t).unwrap_or(&empty);
        row.checked += log.writes.len() as u64;
        check_written(tally, "set", &key, log, |v| found.contains(&v));
        let known: HashSet<u64> = log.writes.iter().map(|w| w.value).collect();
        for v in found.iter().filter(|v| !known.contains(v)) {
            tally.anomaly("set", "failed-write-applied", || {
                format!("{key}: element {v} is present, its SADD failed")
            });
        }
    }
}

/// Each acknowledged write of `log` must be `present`.
pub(super) fn check_written(
    tally: &mut Tally<'_>,
    workload: &'static str,
    key: &str,
    log: &TaskLog,
    present: impl Fn(u64) -> bool,
) {
    for w in log.writes.iter().filter(|w| w.acked && !present(w.value)) {
        tally.lost(workload, key, w.at_ms, || {
            format!(
                "{key}: {} acknowledged at {} ms is missing",
                w.value, w.at_ms
            )
        });
    }
}

pub(super) fn check_registers(
    tally: &mut Tally<'_>,
    row: &mut WorkloadRow,
    recorded: &Recorded,
    state: &Final,
) {
    for (&(kind, _, t), log) in &recorded.logs {
        if kind != WorkloadKind::Register {
            continue;
        }
        let key = keys::register(t);
        let known: HashSet<u64> = log.writes.iter().map(|w| w.value).collect();
        let last_acked = log.writes.iter().rev().find(|w| w.acked);
        let value = state.registers.get(&t).copied().unwrap_or(0);
        row.checked += log.reads.len() as u64 + 1;
        if value != 0 && !known.contains(&value) {
            tally.anomaly("register", "failed-write-applied", || {
                format!("{key} ends at {value}, whose SET failed")
            });
        }
        if let Some(w) = last_acked
            && value < w.value
        {
            tally.lost("register", &key, w.at_ms, || {
                format!(
                    "{key} ends at {value}, {} was acknowledged at {} ms",
                    w.value, w.at_ms
                )
            });
        }
        for read in &log.reads {
            if read.value != 0 && !known.contains(&read.value) {
                tally.anomaly("register", "unwritten-read", || {
                    format!(
                        "{key}: read {} at {} ms, never written",
                        read.value, read.start_ms
                    )
                });
            }
            if tally.rules.replica_reads {
                continue;
            }
            if let Some((floor, acked_at)) = read.floor
                && read.value < floor
            {
                let what = || {
                    format!(
                        "{key}: read {} at {} ms after {floor} was acknowledged at {acked_at} ms",
                        read.value, read.start_ms
                    )
                };
                // The switch must come by the time the read was served (give or take the
                // watcher's lag: a node's slot map follows the cluster's by gossip). A read may
                // be served as late as its reply: one retried through a failover reads the new
                // master, and one queued behind a write a master paused (`SHUTDOWN` waiting for
                // a replica) is answered only when it gives up.
                let until = read.end_ms + OLD_MASTER_SLACK;
                match tally.switch_for(&key, acked_at, Some(until)) {
                    Some(switch) => tally.lost_to("register", Some(switch), what),
                    None => tally.anomaly("register", "stale-read", what),
                }
            }
        }
    }
}

pub(super) fn check_queue(
    tally: &mut Tally<'_>,
    row: &mut WorkloadRow,
    recorded: &Recorded,
    state: &Final,
) {
    let mut known: HashSet<String> = HashSet::new();
    for (&(kind, part, t), log) in &recorded.logs {
        if kind != WorkloadKind::Queue || part != Part::Main {
            continue;
        }
        row.checked += log.writes.len() as u64;
        known.extend(log.writes.iter().map(|w| item(t, w.value)));
        let found = |v: u64| state.queue.contains_key(&item(t, v));
        check_written(tally, "queue", keys::QUEUE, log, found);
    }
    for (i, n) in &state.queue {
        if *n > 1 {
            tally.anomaly("queue", "duplicate", || format!("item {i} found {n} times"));
        }
        if !known.contains(i) {
            tally.anomaly("queue", "failed-write-applied", || {
                format!("item {i} is present, its LPUSH failed")
            });
        }
    }
}

/// How close to a node's death an acknowledged `PUBLISH` may be and still be the bus's loss.
const BUS_SLACK_MS: u64 = 1_000;

/// Pub/sub: nothing received twice, nothing acknowledged missing outside a reported gap. In a
/// cluster, a `PUBLISH` is acknowledged by the node that took it and reaches the subscriber's
/// node over the cluster bus, at most once: one acknowledged within [`BUS_SLACK_MS`] of a node
/// being killed or shut down, or of its return (its peers' bus links to it are not up yet: a
/// broadcast skips a node without a link), may die on the way, and so may one acknowledged
/// while a node is paused (or within [`BUS_SLACK_MS`] of it), with the bus links its peers
/// tear down and open again once it stops answering for half the node timeout. Redis's loss,
/// charged to the fault; any other loss is the client's.
pub(super) fn check_pubsub(
    tally: &mut Tally<'_>,
    recorded: &Recorded,
    pubsub: &redis_lab::history::SequenceCheck,
) {
    if pubsub.duplicates > 0 {
        let entry = tally
            .anomalies
            .entry(("pubsub", "pubsub-duplicate"))
            .or_default();
        entry.0 += pubsub.duplicates;
        entry
            .1
            .extend(pubsub.examples.iter().take(EXAMPLES).cloned());
    }
    for (channel, seq) in &pubsub.lost_messages {
        let at = recorded
            .logs
            .iter()
            .filter(|((kind, _, t), _)| {
                *kind == WorkloadKind::Pubsub && keys::channel(*t) == *channel
            })
            .flat_map(|(_, log)| log.writes.iter())
            .find(|w| w.value == *seq)
            .map(|w| w.at_ms);
        let cause = at.filter(|_| tally.rules.bus()).and_then(|at| {
            tally
                .applied
                .iter()
                .filter(|a| {
                    let near = |t: u64| t + BUS_SLACK_MS >= at && t <= at + BUS_SLACK_MS;
                    // A node's death and its return break its bus links; a pause, for as
                    // long as it lasts.
                    let broken = match a.kind {
                        FaultKind::Kill | FaultKind::Restart => near(a.start_ms) || near(a.end_ms),
                        FaultKind::Pause => {
                            a.start_ms <= at + BUS_SLACK_MS && at <= a.end_ms + BUS_SLACK_MS
                        }
                        _ => false,
                    };
                    a.error.is_none() && broken
                })
                .min_by_key(|a| a.start_ms.abs_diff(at))
        });
        match cause {
            Some(cause) => {
                let entry = tally.losses.entry(("pubsub", cause.start_ms)).or_default();
                entry.0 += 1;
                entry.1 = (Some(cause.step), Some(cause.kind));
            }
            None => tally.anomaly("pubsub", "pubsub-lost", || {
                format!(
                    "{channel}: {seq} acknowledged at {} lost outside a gap",
                    at.map_or("?".to_owned(), |at| format!("{at} ms"))
                )
            }),
        }
    }
}
