use std::net::SocketAddr;

use super::*;
use crate::chaos::history::{Late, Read, TaskLog, Write};
use crate::chaos::workloads::{Part, item};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn rules() -> Rules {
    Rules {
        exactly_once: false,
        replicated: false,
        replica_reads: false,
        run_ms: 60_000,
        cluster: false,
    }
}

/// One owner throughout, or a failover at `switch` ms.
fn watched(switch: Option<u64>) -> Watched {
    let mut owners = vec![(0, vec![(0, 16383, addr(1))])];
    if let Some(at) = switch {
        owners.push((at, vec![(0, 16383, addr(2))]));
    }
    Watched {
        owners,
        serving: vec![(0, true)],
    }
}

/// The master of every slot from each `(ms, port)` on.
fn owners(changes: &[(u64, u16)]) -> Watched {
    Watched {
        owners: changes
            .iter()
            .map(|&(at, port)| (at, vec![(0, 16383, addr(port))]))
            .collect(),
        serving: vec![(0, true)],
    }
}

fn kill_at(ms: u64) -> Applied {
    Applied {
        step: 0,
        kind: FaultKind::Kill,
        shard: 0,
        node: Some(addr(1)),
        master: true,
        start_ms: ms,
        end_ms: ms + 2_000,
        slot: None,
        error: None,
    }
}

fn set_log(writes: &[(u64, u64, bool)]) -> Recorded {
    let mut log = TaskLog {
        ok: writes.iter().filter(|w| w.2).count() as u64,
        ..TaskLog::default()
    };
    log.writes = writes
        .iter()
        .map(|&(value, at_ms, acked)| Write {
            value,
            at_ms,
            acked,
        })
        .collect();
    let mut recorded = Recorded::default();
    recorded
        .logs
        .insert((WorkloadKind::Set, Part::Main, 0), log);
    recorded
}

fn set_state(values: &[u64]) -> Final {
    let mut state = Final::default();
    state.sets.insert(0, values.iter().copied().collect());
    state
}

/// Task 0's register: acknowledged `(value, at_ms)` writes, `(value, floor, start_ms, end_ms)`
/// reads, and the value it ends at.
fn register_log(writes: &[(u64, u64)], reads: &[(u64, (u64, u64), u64, u64)]) -> Recorded {
    let log = TaskLog {
        ok: (writes.len() + reads.len()) as u64,
        writes: writes
            .iter()
            .map(|&(value, at_ms)| Write {
                value,
                at_ms,
                acked: true,
            })
            .collect(),
        reads: reads
            .iter()
            .map(|&(value, floor, start_ms, end_ms)| Read {
                value,
                floor: Some(floor),
                start_ms,
                end_ms,
            })
            .collect(),
        ..TaskLog::default()
    };
    let mut recorded = Recorded::default();
    recorded
        .logs
        .insert((WorkloadKind::Register, Part::Main, 0), log);
    recorded
}

fn register_state(value: u64) -> Final {
    let mut state = Final::default();
    state.registers.insert(0, value);
    state
}

/// Each server loss as `(switch_ms, count, step, fault)`.
fn losses(verdict: &Verdict) -> Vec<(u64, u64, Option<usize>, Option<FaultKind>)> {
    verdict
        .server_losses
        .iter()
        .map(|l| (l.switch_ms, l.count, l.step, l.fault))
        .collect()
}

/// Checks one task's `log` (workload `kind`, part `part`, task `t`) through a kill at 4 s.
fn check_task(key: (WorkloadKind, Part, u32), log: TaskLog) -> Verdict {
    let mut recorded = Recorded::default();
    recorded.logs.insert(key, log);
    check(
        &recorded,
        &set_state(&[]),
        &watched(None),
        &[kill_at(4_000)],
        &rules(),
    )
}

fn kinds(verdict: &Verdict) -> Vec<&'static str> {
    verdict.anomalies.iter().map(|a| a.kind).collect()
}

#[test]
fn a_missing_write_without_a_failover_is_the_clients() {
    let recorded = set_log(&[(1, 100, true), (2, 200, true), (3, 300, false)]);
    let verdict = check(&recorded, &set_state(&[1]), &watched(None), &[], &rules());
    assert_eq!(kinds(&verdict), vec!["lost"]);
    assert!(verdict.server_losses.is_empty());
}

#[test]
fn a_missing_write_before_a_failover_is_a_server_loss_with_its_cause() {
    let recorded = set_log(&[(1, 100, true), (2, 5_000, true)]);
    let applied = [kill_at(5_050)];
    let verdict = check(
        &recorded,
        &set_state(&[1]),
        &watched(Some(7_000)),
        &applied,
        &rules(),
    );
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(verdict.server_losses.len(), 1);
    let loss = &verdict.server_losses[0];
    assert_eq!(
        (loss.count, loss.switch_ms, loss.fault),
        (1, 7_000, Some(FaultKind::Kill))
    );
    // Long after the failover, it is the client's again.
    let late = set_log(&[(1, 100, true), (2, 20_000, true)]);
    let verdict = check(
        &late,
        &set_state(&[1]),
        &watched(Some(7_000)),
        &applied,
        &rules(),
    );
    assert_eq!(kinds(&verdict), vec!["lost"]);
}

#[test]
fn with_replicated_durability_only_a_kill_may_lose_a_write() {
    let recorded = set_log(&[(1, 5_000, true)]);
    let mut pause = kill_at(5_050);
    pause.kind = FaultKind::Pause;
    let rules = Rules {
        replicated: true,
        ..rules()
    };
    let verdict = check(
        &recorded,
        &set_state(&[]),
        &watched(Some(7_000)),
        &[pause],
        &rules,
    );
    assert_eq!(kinds(&verdict), vec!["lost"]);
    let verdict = check(
        &recorded,
        &set_state(&[]),
        &watched(Some(7_000)),
        &[kill_at(5_050)],
        &rules,
    );
    assert!(verdict.anomalies.is_empty());
}

#[test]
fn a_failed_write_found_applied_is_an_anomaly() {
    // Element 2's SADD failed (not recorded), yet it is there.
    let recorded = set_log(&[(1, 100, true), (3, 300, true)]);
    let verdict = check(
        &recorded,
        &set_state(&[1, 2, 3]),
        &watched(None),
        &[],
        &rules(),
    );
    assert_eq!(kinds(&verdict), vec!["failed-write-applied"]);
}

#[test]
fn counters_hold_between_ok_and_ok_plus_ambiguous() {
    let mut log = TaskLog {
        ok: 10,
        ambiguous: 2,
        ..TaskLog::default()
    };
    let mut recorded = Recorded::default();
    recorded
        .logs
        .insert((WorkloadKind::Counter, Part::Main, 0), log.clone());
    for (value, expected) in [
        (10, vec![]),
        (12, vec![]),
        (13, vec!["over-applied"]),
        (9, vec!["lost"]),
    ] {
        let state = Final {
            counter: value,
            ..Final::default()
        };
        let verdict = check(&recorded, &state, &watched(None), &[], &rules());
        assert_eq!(kinds(&verdict), expected, "final {value}");
    }
    // Exactly-once: no ambiguous call at all.
    log.ambiguous = 1;
    recorded
        .logs
        .insert((WorkloadKind::Counter, Part::Main, 0), log);
    let state = Final {
        counter: 10,
        ..Final::default()
    };
    let rules = Rules {
        exactly_once: true,
        ..rules()
    };
    let verdict = check(&recorded, &state, &watched(None), &[], &rules);
    assert_eq!(kinds(&verdict), vec!["ambiguous-exactly-once"]);
}

#[test]
fn a_counter_that_went_back_shows_which_increment_a_failover_took() {
    let writes = [(1, 100), (2, 200), (3, 300), (3, 500), (4, 600)];
    let log = TaskLog {
        ok: 5,
        writes: writes
            .iter()
            .map(|&(value, at_ms)| Write {
                value,
                at_ms,
                acked: true,
            })
            .collect(),
        ..TaskLog::default()
    };
    let mut recorded = Recorded::default();
    recorded
        .logs
        .insert((WorkloadKind::Counter, Part::Main, 0), log);
    let state = Final {
        counter: 4,
        ..Final::default()
    };
    let verdict = check(
        &recorded,
        &state,
        &watched(Some(400)),
        &[kill_at(350)],
        &rules(),
    );
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(verdict.server_losses.len(), 1);
    assert_eq!(verdict.server_losses[0].switch_ms, 400);
    // Without the failover the same history is the client's anomaly.
    let verdict = check(&recorded, &state, &watched(None), &[], &rules());
    assert_eq!(kinds(&verdict), vec!["lost"]);
}

#[test]
fn a_register_read_going_back_is_stale_unless_a_failover_explains_it() {
    let recorded = register_log(&[(1, 100), (2, 200)], &[(1, (2, 200), 300, 305)]);
    let state = register_state(2);
    let verdict = check(&recorded, &state, &watched(None), &[], &rules());
    assert_eq!(kinds(&verdict), vec!["stale-read"]);
    let verdict = check(
        &recorded,
        &state,
        &watched(Some(250)),
        &[kill_at(210)],
        &rules(),
    );
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(verdict.server_losses[0].count, 1);
    // Reads from replicas may lag.
    let rules = Rules {
        replica_reads: true,
        ..rules()
    };
    assert!(
        check(&recorded, &state, &watched(None), &[], &rules)
            .anomalies
            .is_empty()
    );
}

/// Soak seed 118517015129018 (cluster, `--exactly-once`): a master paused past the node
/// timeout is replaced; resumed, it acknowledges a SET it had queued, and the next GET, on the
/// new master, reads the value before. Redis's loss, caused by the pause, even though the slot
/// changes owner again much later (a kill): the later switch explains nothing before it.
#[test]
fn a_read_going_back_is_charged_to_the_switch_before_it_not_a_later_one() {
    let recorded = register_log(
        &[(831, 19_250), (832, 19_257)],
        &[(831, (832, 19_257), 19_257, 19_260)],
    );
    let state = register_state(832);
    let watched = owners(&[(0, 1), (18_900, 2), (39_643, 1)]);
    let mut pause = kill_at(16_650);
    pause.kind = FaultKind::Pause;
    let mut kill = kill_at(37_129);
    kill.step = 8;
    let applied = [pause, kill];
    let verdict = check(&recorded, &state, &watched, &applied, &rules());
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(verdict.server_losses.len(), 1);
    let loss = &verdict.server_losses[0];
    assert_eq!(
        (loss.switch_ms, loss.step, loss.fault),
        (18_900, Some(0), Some(FaultKind::Pause))
    );
    // Without the switch before it, the later one does not excuse the read.
    let later_only = owners(&[(0, 1), (39_643, 2)]);
    let verdict = check(&recorded, &state, &later_only, &applied, &rules());
    assert_eq!(kinds(&verdict), vec!["stale-read"]);
}

/// Soak seed 127759111868895 (Sentinel, `--durability replicated`): a switch at 11.6 s, then
/// the new master paused and its one replica killed at once (16.3 s); the sentinels promoted
/// the master deposed at 11.6 s, not yet turned into a replica, which never had the writes
/// acknowledged since. Every one of them is the double fault's loss, also those acknowledged
/// within the slack after the first switch, which a deposed master would have kept.
#[test]
fn a_loss_is_charged_to_the_switch_that_brings_the_deposed_master_back() {
    let recorded = set_log(&[(1, 11_000, true), (2, 13_600, true), (3, 15_000, true)]);
    let watched = owners(&[(0, 1), (11_640, 2), (18_971, 1)]);
    let partition = Applied {
        kind: FaultKind::Partition,
        ..kill_at(8_691)
    };
    // The one attached replica killed (not the master).
    let kill = Applied {
        step: 2,
        node: Some(addr(3)),
        master: false,
        ..kill_at(16_317)
    };
    let pause = Applied {
        step: 3,
        kind: FaultKind::Pause,
        node: Some(addr(2)),
        ..kill_at(16_317)
    };
    let rules = Rules {
        replicated: true,
        ..rules()
    };
    let applied = [partition, kill, pause];
    let verdict = check(&recorded, &set_state(&[1]), &watched, &applied, &rules);
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(
        losses(&verdict),
        vec![(18_971, 2, Some(3), Some(FaultKind::Pause))]
    );
    // When another node takes the slot at the later switch, a deposed master may have
    // acknowledged the write acknowledged 2 s after the first: that one stays the first
    // switch's, which replicated writes may not lose.
    let mut elsewhere = watched.clone();
    elsewhere.owners[2].1 = vec![(0, 16383, addr(3))];
    let verdict = check(&recorded, &set_state(&[1]), &elsewhere, &applied, &rules);
    assert_eq!(kinds(&verdict), vec!["lost"]);
    assert_eq!(verdict.anomalies[0].count, 1);
}

/// Soak seed 197886462243110 (Sentinel, `--durability replicated`): the master, SIGKILLed
/// for 1 s, was back before the sentinels failed it over, without its last 3 s of writes, and
/// its replicas resynced from it. The writes it acknowledged in those 3 s are the kill's loss,
/// although the slot changed owner only later (a restart, which may not lose them).
#[test]
fn a_master_killed_and_back_before_a_failover_loses_what_it_acknowledged() {
    let recorded = set_log(&[(1, 11_000, true), (2, 12_600, true), (3, 15_500, true)]);
    let watched = owners(&[(0, 1), (11_500, 2), (23_210, 1)]);
    let kill = Applied {
        step: 2,
        node: Some(addr(2)),
        end_ms: 16_700,
        ..kill_at(15_650)
    };
    let restart = Applied {
        step: 3,
        kind: FaultKind::Restart,
        node: Some(addr(2)),
        end_ms: 22_640,
        ..kill_at(20_520)
    };
    let rules = Rules {
        replicated: true,
        ..rules()
    };
    let applied = [kill.clone(), restart.clone()];
    let verdict = check(&recorded, &set_state(&[1]), &watched, &applied, &rules);
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(
        losses(&verdict),
        vec![(16_700, 2, Some(2), Some(FaultKind::Kill))]
    );
    // A replica killed, not the master: nothing reset the data, the restart's switch may not
    // lose them.
    let replica = Applied {
        master: false,
        ..kill
    };
    let verdict = check(
        &recorded,
        &set_state(&[1]),
        &watched,
        &[replica, restart.clone()],
        &rules,
    );
    assert_eq!(kinds(&verdict), vec!["lost"]);
    // In a cluster a master's kill may be another shard's: not used.
    let cluster = Rules {
        cluster: true,
        ..rules
    };
    let verdict = check(&recorded, &set_state(&[1]), &watched, &applied, &cluster);
    assert_eq!(kinds(&verdict), vec!["lost"]);
}

/// Soak seed 217349713543986 (Sentinel): a `SHUTDOWN` of the master waited 10 s for a paused
/// replica, holding a task's connection behind a paused write; its `GET`, started 10 ms after
/// the task's last acknowledged `SET`, was answered 4.3 s later by the replica Sentinel
/// promoted, which had missed seconds of writes. Redis's loss, charged to that failover: the
/// read was served when it ended, not when it started.
#[test]
fn a_read_is_served_by_the_time_it_ends_not_when_it_starts() {
    let recorded = register_log(
        &[(1_600, 42_000), (1_863, 49_987)],
        &[(1_600, (1_863, 49_987), 49_997, 54_300)],
    );
    let state = register_state(1_600);
    let restart = || Applied {
        kind: FaultKind::Restart,
        ..kill_at(49_940)
    };
    let verdict = check(
        &recorded,
        &state,
        &watched(Some(54_234)),
        &[restart()],
        &rules(),
    );
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(verdict.server_losses.len(), 1);
    assert_eq!(verdict.server_losses[0].switch_ms, 54_234);
    // Answered at once, before that failover, the same read is the client's.
    let recorded = register_log(
        &[(1_600, 42_000), (1_863, 49_987)],
        &[(1_600, (1_863, 49_987), 49_997, 50_000)],
    );
    let verdict = check(
        &recorded,
        &state,
        &watched(Some(54_234)),
        &[restart()],
        &rules(),
    );
    assert_eq!(kinds(&verdict), vec!["stale-read"]);
}

#[test]
fn queue_items_must_be_somewhere_once() {
    let mut log = TaskLog {
        ok: 2,
        ..TaskLog::default()
    };
    log.writes = vec![
        Write {
            value: 1,
            at_ms: 100,
            acked: true,
        },
        Write {
            value: 2,
            at_ms: 200,
            acked: true,
        },
    ];
    let mut recorded = Recorded::default();
    recorded
        .logs
        .insert((WorkloadKind::Queue, Part::Main, 0), log);
    let mut state = Final::default();
    state.queue.insert(item(0, 1), 1);
    state.queue.insert(item(0, 2), 2);
    let verdict = check(&recorded, &state, &watched(None), &[], &rules());
    assert_eq!(kinds(&verdict), vec!["duplicate"]);
}

#[test]
fn a_caller_failing_long_after_the_topology_serves_is_a_slow_recovery() {
    let log = TaskLog {
        ok: 2,
        failed: 5,
        outages: vec![(
            4_000,
            Some(4_000 + 2_000 + RECOVERY_LIMIT.as_millis() as u64 + 1),
        )],
        ..TaskLog::default()
    };
    let verdict = check_task((WorkloadKind::Set, Part::Main, 0), log);
    assert_eq!(kinds(&verdict), vec!["slow-recovery"]);
    assert_eq!(verdict.recoveries[0].callers, 1);
    // A queue consumer still failing at the end: described by its last failed call.
    let log = TaskLog {
        failed: 5,
        outages: vec![(4_000, None)],
        last_failure: Some((
            Late {
                op: "BLMOVE",
                start_ms: 40_000,
                took_ms: 10_001,
            },
            "deadline exceeded".to_owned(),
        )),
        ..TaskLog::default()
    };
    let verdict = check_task((WorkloadKind::Queue, Part::Consumer, 3), log);
    assert_eq!(kinds(&verdict), vec!["never-recovered"]);
    assert_eq!(
        verdict.anomalies[0].examples,
        vec![
            "task 3 (consumer) failing since step 0 (kill) never succeeded again; its last \
             call, BLMOVE at 40000 ms, failed after 10001 ms: deadline exceeded"
        ]
    );
}

/// Soak seed 202908824175848 (cluster): a `PUBLISH` acknowledged 80 ms before its node was
/// killed never crossed the cluster bus. Redis's loss there; anywhere else, or long before any
/// kill, the client's.
#[test]
fn a_message_lost_with_a_killed_node_is_the_buses_only_in_a_cluster() {
    let mut log = TaskLog {
        ok: 1,
        ..TaskLog::default()
    };
    log.writes.push(Write {
        value: 2260,
        at_ms: 22_600,
        acked: true,
    });
    let mut recorded = Recorded::default();
    recorded
        .logs
        .insert((WorkloadKind::Pubsub, Part::Main, 2), log);
    recorded.pubsub = Some(redis_lab::history::SequenceCheck {
        acknowledged: 1,
        lost: 1,
        lost_messages: vec![("chaos:ch:2".to_owned(), 2260)],
        ..Default::default()
    });
    let cluster = Rules {
        cluster: true,
        ..rules()
    };
    let lost_near = |fault: Applied, rules: &Rules| {
        check(
            &recorded,
            &Final::default(),
            &watched(None),
            &[fault],
            rules,
        )
    };
    let verdict = lost_near(kill_at(22_680), &cluster);
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(verdict.server_losses.len(), 1);
    assert_eq!(verdict.server_losses[0].fault, Some(FaultKind::Kill));
    // One server (publisher and subscriber on the same node): the client's.
    let verdict = lost_near(kill_at(22_680), &rules());
    assert_eq!(kinds(&verdict), vec!["pubsub-lost"]);
    // No node died near it: the client's.
    let verdict = lost_near(kill_at(40_000), &cluster);
    assert_eq!(kinds(&verdict), vec!["pubsub-lost"]);
    // Soak 4's seed 30973328686558 (cluster): messages acknowledged as a node's 1.1 s pause
    // ended (the node timeout is 1 s: its peers had torn down their bus links to it).
    let held = |kind, start_ms, end_ms| Applied {
        kind,
        start_ms,
        end_ms,
        ..kill_at(0)
    };
    let pause = |start_ms, end_ms| held(FaultKind::Pause, start_ms, end_ms);
    let verdict = lost_near(pause(21_500, 22_580), &cluster);
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    assert_eq!(verdict.server_losses[0].fault, Some(FaultKind::Pause));
    // Soak 4's seed 216572282153513 (cluster): acknowledged 20 ms after a restarted node
    // came back, before its peers' bus links to it were up. In the middle of a long outage,
    // more than 1 s from either end: the client's.
    let restart = |start_ms, end_ms| held(FaultKind::Restart, start_ms, end_ms);
    let verdict = lost_near(restart(20_000, 22_580), &cluster);
    assert!(verdict.anomalies.is_empty(), "{:?}", verdict.anomalies);
    let verdict = lost_near(restart(20_000, 24_000), &cluster);
    assert_eq!(kinds(&verdict), vec!["pubsub-lost"]);
    // A pause that ended long before it: the client's.
    let verdict = lost_near(pause(10_000, 11_000), &cluster);
    assert_eq!(kinds(&verdict), vec!["pubsub-lost"]);
}
