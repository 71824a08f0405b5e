//! The nemesis's schedule: which faults, when, on which node, as a pure function of the seed.
//!
//! # Behavior
//! - [`Schedule::draw`] gives the same steps for the same seed, shape, duration and fault list:
//!   a failing run is reproduced by its seed alone.
//! - The first fault starts after a quiet baseline ([`BASELINE`]); each fault is held for 0.5 to
//!   4 s, then the topology gets 3 to 6 s of quiet before the next one, so every fault's
//!   recovery is seen on its own. About one step in four starts together with a second fault
//!   on another node (a *combination*).
//! - Faults end [`TAIL`] before the run's end at the latest, so the last recovery is measured.
//! - Victims are roles, not addresses ("the master of shard 1", "replica 0 of shard 0"): the
//!   nemesis resolves them when the step starts, since failovers move masters.
//! - Only faults the topology can take are drawn: `failover` needs a replica, `migrate` a
//!   second shard, the proxy faults (`partition`, `cut`, `latency`, `throttle`) a proxied lab.

use std::time::Duration;

use clap::ValueEnum;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// The quiet time before the first fault.
pub(crate) const BASELINE: Duration = Duration::from_secs(2);
/// The quiet time after the last fault ends, before the run's end.
pub(crate) const TAIL: Duration = Duration::from_secs(4);

/// A kind of fault (`--faults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FaultKind {
    /// SIGKILL of a node, restarted when the fault ends.
    Kill,
    /// `SHUTDOWN` of a node, started again when the fault ends.
    Restart,
    /// SIGSTOP of a node, SIGCONT when the fault ends: a stalled server.
    Pause,
    /// `CLIENT KILL TYPE normal` on a node.
    ClientKill,
    /// The node's proxy drops every packet (a black hole) until the fault ends.
    Partition,
    /// The node's proxy closes connections after forwarding part of a reply: lost replies.
    Cut,
    /// The node's proxy delays every chunk.
    Latency,
    /// `SENTINEL FAILOVER`, or `CLUSTER FAILOVER` on a replica of the shard.
    Failover,
    /// A slot holding workload keys moves to another master under load.
    Migrate,
    /// A Lua script keeps the node busy (`-BUSY` to everyone else) until the fault ends.
    Busy,
    /// The node's proxy answers `-THROTTLED` above a rate.
    Throttle,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub(crate) const ALL: [FaultKind; 11] = [
        FaultKind::Kill,
        FaultKind::Restart,
        FaultKind::Pause,
        FaultKind::ClientKill,
        FaultKind::Partition,
        FaultKind::Cut,
        FaultKind::Latency,
        FaultKind::Failover,
        FaultKind::Migrate,
        FaultKind::Busy,
        FaultKind::Throttle,
    ];

    /// The name on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::ClientKill => "client-kill",
            FaultKind::Partition => "partition",
            FaultKind::Cut => "cut",
            FaultKind::Latency => "latency",
            FaultKind::Failover => "failover",
            FaultKind::Migrate => "migrate",
            FaultKind::Busy => "busy",
            FaultKind::Throttle => "throttle",
        }
    }

    /// Whether a fault of this kind goes through the node's proxy.
    pub(crate) fn needs_proxy(self) -> bool {
        matches!(
            self,
            FaultKind::Partition | FaultKind::Cut | FaultKind::Latency | FaultKind::Throttle
        )
    }

    /// Whether the topology can take this fault at all.
    fn applies(self, shape: Shape) -> bool {
        match self {
            FaultKind::Failover => shape.replicas > 0,
            FaultKind::Migrate => shape.shards > 1,
            kind if kind.needs_proxy() => shape.proxied,
            _ => true,
        }
    }

    /// Whether a replica may be this fault's victim (the others act on a master or a shard).
    fn hits_replicas(self) -> bool {
        !matches!(
            self,
            FaultKind::Failover | FaultKind::Migrate | FaultKind::Busy | FaultKind::Throttle
        )
    }

    /// Whether the fault makes its node unavailable while it lasts.
    pub(crate) fn takes_node_down(self) -> bool {
        matches!(
            self,
            FaultKind::Kill | FaultKind::Restart | FaultKind::Pause | FaultKind::Partition
        )
    }

    /// Whether the fault lasts (held, then undone) rather than happening at once.
    pub(crate) fn is_held(self) -> bool {
        !matches!(
            self,
            FaultKind::ClientKill | FaultKind::Failover | FaultKind::Migrate
        )
    }
}

/// What the lab looks like, as far as drawing faults goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Masters (1 but for a cluster).
    pub(crate) shards: usize,
    /// Replicas of each master.
    pub(crate) replicas: usize,
    /// Whether every data node has a proxy in front of it.
    pub(crate) proxied: bool,
}

/// Which node a step hits, as a role resolved when the step starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "role")]
pub(crate) enum Victim {
    /// The master of a shard (shard 0 but for a cluster).
    Master {
        /// The shard.
        shard: usize,
    },
    /// One of a shard's replicas.
    Replica {
        /// The shard.
        shard: usize,
        /// Which of its replicas, in the lab's order.
        index: usize,
    },
}

impl Victim {
    /// The shard.
    pub(crate) fn shard(self) -> usize {
        match self {
            Victim::Master { shard } | Victim::Replica { shard, .. } => shard,
        }
    }
}

impl std::fmt::Display for Victim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Victim::Master { shard } => write!(f, "master of shard {shard}"),
            Victim::Replica { shard, index } => write!(f, "replica {index} of shard {shard}"),
        }
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Step {
    /// When it starts, from the start of the run, in milliseconds.
    pub(crate) at_ms: u64,
    /// How long it is held, in milliseconds (0 for the faults that happen at once).
    pub(crate) hold_ms: u64,
    /// What it is.
    pub(crate) kind: FaultKind,
    /// Where.
    pub(crate) victim: Victim,
    /// The kind's parameter: latency in ms, cut every Nth connection, throttle ops/s, or the
    /// index of the workload key whose slot migrates; 0 otherwise.
    pub(crate) param: u64,
}

impl Step {
    /// One line: `12.3 s  kill master of shard 0 for 2.1 s`.
    pub(crate) fn describe(&self) -> String {
        let what = match self.kind {
            FaultKind::Latency => format!("latency {} ms on", self.param),
            FaultKind::Cut => format!("cut every {}th connection to", self.param),
            FaultKind::Throttle => format!("throttle to {}/s on", self.param),
            FaultKind::Migrate => format!("migrate the slot of key #{} from", self.param),
            kind => kind.name().to_owned(),
        };
        let held = if self.hold_ms > 0 {
            format!(" for {:.1} s", self.hold_ms as f64 / 1000.0)
        } else {
            String::new()
        };
        format!(
            "{:>6.1} s  {what} {}{held}",
            self.at_ms as f64 / 1000.0,
            self.victim
        )
    }
}

/// The whole schedule of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Schedule {
    /// The steps, by start time.
    pub(crate) steps: Vec<Step>,
}

impl Schedule {
    /// Draws the schedule of a run of `duration` on `shape` from `seed`, with faults of the
    /// given kinds only (those the shape can take; see the module docs).
    pub(crate) fn draw(seed: u64, shape: Shape, duration: Duration, kinds: &[FaultKind]) -> Self {
        let kinds: Vec<FaultKind> = kinds.iter().copied().filter(|k| k.applies(shape)).collect();
        let mut steps = Vec::new();
        if kinds.is_empty() {
            return Schedule { steps };
        }
        let mut rng = SmallRng::seed_from_u64(seed);
        let last_end = duration.saturating_sub(TAIL).as_millis() as u64;
        let mut at = BASELINE.as_millis() as u64;
        while at < last_end {
            let first = draw_step(&mut rng, shape, &kinds, at, last_end);
            let mut end = first.at_ms + first.hold_ms;
            let combined = rng.random_range(0..4) == 0;
            if combined {
                // A second fault at the same moment, on another node.
                let second = draw_step(&mut rng, shape, &kinds, at, last_end);
                if second.victim != first.victim {
                    end = end.max(second.at_ms + second.hold_ms);
                    steps.push(first);
                    steps.push(second);
                } else {
                    steps.push(first);
                }
            } else {
                steps.push(first);
            }
            at = end + rng.random_range(3_000..=6_000);
        }
        Schedule { steps }
    }

    /// The distinct kinds in the schedule.
    #[cfg(test)]
    fn kinds(&self) -> Vec<FaultKind> {
        let mut kinds: Vec<FaultKind> = self.steps.iter().map(|s| s.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// One step starting at `at`, ending by `last_end`.
fn draw_step(
    rng: &mut SmallRng,
    shape: Shape,
    kinds: &[FaultKind],
    at: u64,
    last_end: u64,
) -> Step {
    let kind = kinds[rng.random_range(0..kinds.len())];
    let shard = rng.random_range(0..shape.shards);
    let victim = if shape.replicas > 0 && kind.hits_replicas() && rng.random_range(0..3) == 0 {
        Victim::Replica {
            shard,
            index: rng.random_range(0..shape.replicas),
        }
    } else {
        Victim::Master { shard }
    };
    let hold_ms = if kind.is_held() {
        rng.random_range(500..=4_000u64)
            .min(last_end.saturating_sub(at))
    } else {
        0
    };
    let param = match kind {
        FaultKind::Latency => rng.random_range(20..=300),
        FaultKind::Cut => rng.random_range(5..=50),
        FaultKind::Throttle => rng.random_range(200..=2_000),
        FaultKind::Migrate => rng.random_range(0..1_000),
        _ => 0,
    };
    Step {
        at_ms: at,
        hold_ms,
        kind,
        victim,
        param,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: Shape = Shape {
        shards: 3,
        replicas: 1,
        proxied: true,
    };
    const STANDALONE: Shape = Shape {
        shards: 1,
        replicas: 0,
        proxied: true,
    };

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = Schedule::draw(7, CLUSTER, Duration::from_secs(60), &FaultKind::ALL);
        let b = Schedule::draw(7, CLUSTER, Duration::from_secs(60), &FaultKind::ALL);
        let c = Schedule::draw(8, CLUSTER, Duration::from_secs(60), &FaultKind::ALL);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.steps.len() >= 5, "{:?}", a.steps);
    }

    #[test]
    fn faults_stay_inside_the_run_and_leave_room_to_recover() {
        for seed in 0..200 {
            let s = Schedule::draw(seed, CLUSTER, Duration::from_secs(60), &FaultKind::ALL);
            for pair in s.steps.windows(2) {
                assert!(pair[0].at_ms <= pair[1].at_ms);
            }
            for step in &s.steps {
                assert!(Duration::from_millis(step.at_ms) >= BASELINE);
                let end = Duration::from_millis(step.at_ms + step.hold_ms);
                assert!(end <= Duration::from_secs(60) - TAIL, "{step:?}");
            }
        }
    }

    #[test]
    fn only_faults_the_topology_can_take_are_drawn() {
        for seed in 0..200 {
            let s = Schedule::draw(seed, STANDALONE, Duration::from_secs(60), &FaultKind::ALL);
            for step in &s.steps {
                assert!(!matches!(
                    step.kind,
                    FaultKind::Failover | FaultKind::Migrate
                ));
                assert_eq!(step.victim, Victim::Master { shard: 0 });
            }
            let unproxied = Shape {
                proxied: false,
                ..CLUSTER
            };
            let s = Schedule::draw(seed, unproxied, Duration::from_secs(60), &FaultKind::ALL);
            assert!(s.steps.iter().all(|step| !step.kind.needs_proxy()));
        }
    }

    #[test]
    fn a_fault_list_limits_the_kinds() {
        let s = Schedule::draw(
            1,
            CLUSTER,
            Duration::from_secs(120),
            &[FaultKind::Kill, FaultKind::Migrate],
        );
        assert_eq!(s.kinds(), vec![FaultKind::Kill, FaultKind::Migrate]);
        let none = Schedule::draw(
            1,
            STANDALONE,
            Duration::from_secs(60),
            &[FaultKind::Failover],
        );
        assert!(none.steps.is_empty());
    }

    #[test]
    fn every_kind_and_combinations_appear_over_seeds() {
        let mut seen = std::collections::HashSet::new();
        let mut combined = 0;
        for seed in 0..50 {
            let s = Schedule::draw(seed, CLUSTER, Duration::from_secs(60), &FaultKind::ALL);
            seen.extend(s.steps.iter().map(|step| step.kind));
            combined += s
                .steps
                .windows(2)
                .filter(|p| p[0].at_ms == p[1].at_ms)
                .count();
        }
        assert_eq!(seen.len(), FaultKind::ALL.len());
        assert!(combined > 10, "{combined}");
    }
}
