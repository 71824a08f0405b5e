//! What one application-level call is, and how its result is counted (shared by bench and demo).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::ValueEnum;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use redis::{Cmd, RedisError, Value};
use tokio::time::{Duration, Instant};

use resilient_redis::{ErrorKind, Outcome};

use crate::client::AppClient;

/// The command mix of a run (`--workload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// Each task alternates SET and GET of random keys.
    GetSet,
    /// Each task GETs random keys of the key space (`--keys`), which the bench fills first:
    /// with `--read-from`, the report says how many reads went to replicas.
    Get,
    /// Every task INCRs the same key (`--key`).
    Incr,
    /// Every task LPUSHes the value (`--value-size` bytes) onto the same list (`--key`).
    Lpush,
    /// Every task increments the same key (`--key`) through an optimistic transaction
    /// (`WATCH`, `GET`, `MULTI` `SET` `EXEC`; re-run on a conflict): resilient client only.
    Cas,
    /// One publisher per channel (`--channels`) sends sequence-numbered messages at `--rate`
    /// (default 2,000/s) to one resilient subscription; the report counts what arrived, the
    /// gaps, and what was lost outside them or received twice (resilient client only).
    Pubsub,
    /// `--concurrency` producers `LPUSH` unique items onto `--key` while as many consumers
    /// `BLMOVE` them into processing lists; the report says where every item ended (resilient
    /// client only).
    Queue,
}

impl Workload {
    /// The name used in reports (`"get-set"` / `"incr"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::GetSet => "get-set",
            Workload::Get => "get",
            Workload::Incr => "incr",
            Workload::Lpush => "lpush",
            Workload::Cas => "cas",
            Workload::Pubsub => "pubsub",
            Workload::Queue => "queue",
        }
    }
}

/// What the calls of a run are made of (`--workload`, `--keys`, `--value-size`, `--key`, `--seed`).
#[derive(Clone, Debug)]
pub(crate) struct Mix {
    /// The command mix.
    pub(crate) workload: Workload,
    /// Size of the get-set key space.
    pub(crate) keys: u64,
    /// The SET value.
    pub(crate) value: Vec<u8>,
    /// The key every INCR goes to.
    pub(crate) counter_key: String,
    /// Seed of the key-choice RNGs.
    pub(crate) seed: u64,
}

/// The calls of one task, in order: get-set alternates SET and GET of keys drawn uniformly from
/// `bench:0 .. bench:{keys-1}` with an RNG seeded from the mix's seed and the task's index; get
/// GETs keys drawn the same way;
/// incr INCRs the counter key; lpush LPUSHes the value onto it; cas sends the same INCR, which
/// the client runs as a transaction ([`crate::client::CasApp`]).
pub(crate) struct Commands {
    mix: std::sync::Arc<Mix>,
    rng: SmallRng,
    key: String,
    set_next: bool,
    /// The one command of the single-key workloads (INCR or LPUSH).
    fixed: Cmd,
    current: Cmd,
}

impl Commands {
    /// The calls of task number `index`.
    pub(crate) fn new(mix: std::sync::Arc<Mix>, index: u64) -> Commands {
        let rng = SmallRng::seed_from_u64(
            mix.seed
                .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        let fixed = match mix.workload {
            Workload::Lpush => {
                let mut lpush = redis::cmd("LPUSH");
                lpush.arg(&mix.counter_key).arg(&mix.value);
                lpush
            }
            _ => {
                let mut incr = redis::cmd("INCR");
                incr.arg(&mix.counter_key);
                incr
            }
        };
        Commands {
            mix,
            rng,
            key: String::with_capacity(32),
            set_next: true,
            fixed,
            current: Cmd::new(),
        }
    }

    /// The next call.
    pub(crate) fn next_cmd(&mut self) -> &Cmd {
        match self.mix.workload {
            Workload::Incr
            | Workload::Lpush
            | Workload::Cas
            | Workload::Pubsub
            | Workload::Queue => &self.fixed,
            Workload::GetSet | Workload::Get => {
                self.key.clear();
                let _ = write!(
                    self.key,
                    "bench:{}",
                    self.rng.random_range(0..self.mix.keys)
                );
                let set = self.set_next && self.mix.workload == Workload::GetSet;
                self.current = if set {
                    let mut set = redis::cmd("SET");
                    set.arg(&self.key).arg(&self.mix.value);
                    set
                } else {
                    let mut get = redis::cmd("GET");
                    get.arg(&self.key);
                    get
                };
                self.set_next = !self.set_next;
                &self.current
            }
        }
    }
}

/// How one completed call ended, from the application's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    /// The call succeeded.
    Ok,
    /// The call failed and its outcome is known: surely not applied, or (kind `conversion`)
    /// applied with a reply of another type than the workload asked for; the name is the error
    /// kind.
    Failed(String),
    /// The call failed and may have been applied; the name is the error kind.
    Ambiguous(String),
}

impl CallOutcome {
    /// Classifies a call's result with the resilient-redis classifier (which works on any
    /// `RedisError`, raw ones included).
    pub(crate) fn of<T>(result: &Result<T, RedisError>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(err) => {
                let kind = resilient_redis::error_kind_name(err);
                match Outcome::of(err) {
                    Outcome::Failed | Outcome::Applied => CallOutcome::Failed(kind),
                    Outcome::Ambiguous => CallOutcome::Ambiguous(kind),
                }
            }
        }
    }

    /// Whether the application saw an error.
    pub(crate) fn is_error(&self) -> bool {
        !matches!(self, CallOutcome::Ok)
    }

    /// Whether the client refused the call locally (adaptive throttling) without sending it.
    pub(crate) fn is_rejected_locally(&self) -> bool {
        matches!(self, CallOutcome::Failed(kind) if kind == ErrorKind::RejectedLocally.as_str())
    }
}

/// Counts of completed calls by outcome.
///
/// `ops() == ok + failed + ambiguous` by construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Calls that succeeded.
    pub(crate) ok: u64,
    /// Calls that failed and were surely not applied.
    pub(crate) failed: u64,
    /// Calls that failed and may have been applied.
    pub(crate) ambiguous: u64,
    /// Of the failed calls, those the client refused locally (adaptive throttling).
    pub(crate) rejected_locally: u64,
    /// Failed and ambiguous calls by error kind.
    pub(crate) errors_by_kind: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one call.
    pub(crate) fn record(&mut self, outcome: CallOutcome) {
        if outcome.is_rejected_locally() {
            self.rejected_locally += 1;
        }
        match outcome {
            CallOutcome::Ok => self.ok += 1,
            CallOutcome::Failed(kind) => {
                self.failed += 1;
                *self.errors_by_kind.entry(kind).or_default() += 1;
            }
            CallOutcome::Ambiguous(kind) => {
                self.ambiguous += 1;
                *self.errors_by_kind.entry(kind).or_default() += 1;
            }
        }
    }

    /// Adds another tally into this one.
    pub(crate) fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.ambiguous += other.ambiguous;
        self.rejected_locally += other.rejected_locally;
        for (kind, count) in &other.errors_by_kind {
            *self.errors_by_kind.entry(kind.clone()).or_default() += count;
        }
    }

    /// Completed calls: `ok + failed + ambiguous`.
    pub(crate) fn ops(&self) -> u64 {
        self.ok + self.failed + self.ambiguous
    }
}

/// A call's latency in whole µs for a histogram (at least 1: HdrHistogram's lowest value).
pub(crate) fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Sends `cmd` on the worker's client, times it and classifies it; lets the client react to an
/// error (the raw baseline replaces a broken connection) before returning.
pub(crate) async fn timed_call<C: AppClient>(client: &mut C, cmd: &Cmd) -> (CallOutcome, Duration) {
    let start = Instant::now();
    let (outcome, done) = call(client, cmd).await;
    (outcome, done.duration_since(start))
}

/// Sends `cmd` on the worker's client and classifies the result; returns when the call completed
/// (before the client reacts to an error, e.g. the raw baseline replacing its connection).
pub(crate) async fn call<C: AppClient>(client: &mut C, cmd: &Cmd) -> (CallOutcome, Instant) {
    let result = cmd.query_async::<Value>(client.conn()).await;
    let done = Instant::now();
    let outcome = CallOutcome::of(&result);
    if let Err(err) = &result {
        client.after_error(err).await;
    }
    (outcome, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_every_outcome_once() {
        let mut tally = Tally::default();
        tally.record(CallOutcome::Ok);
        tally.record(CallOutcome::Ok);
        tally.record(CallOutcome::Failed("BUSY".into()));
        tally.record(CallOutcome::Ambiguous("io".into()));
        tally.record(CallOutcome::Ambiguous("io".into()));
        assert_eq!(
            (tally.ok, tally.failed, tally.ambiguous, tally.ops()),
            (2, 1, 2, 5)
        );
        assert_eq!(tally.errors_by_kind.get("io"), Some(&2));
        assert_eq!(tally.errors_by_kind.get("BUSY"), Some(&1));

        tally.record(CallOutcome::Failed(
            ErrorKind::RejectedLocally.as_str().into(),
        ));
        assert_eq!((tally.failed, tally.rejected_locally), (2, 1));
        assert!(!CallOutcome::Ambiguous("rejected_locally".into()).is_rejected_locally());

        let mut total = Tally::default();
        total.merge(&tally);
        total.merge(&tally);
        assert_eq!((total.ops(), total.rejected_locally), (12, 2));
        assert_eq!(total.errors_by_kind.get("io"), Some(&4));
    }

    #[test]
    fn server_error_reply_is_failed_and_io_error_is_ambiguous() {
        let server: Result<(), RedisError> =
            Err(RedisError::from((redis::ErrorKind::Client, "client-side")));
        assert!(matches!(CallOutcome::of(&server), CallOutcome::Failed(_)));
        let io: Result<(), RedisError> = Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(matches!(CallOutcome::of(&io), CallOutcome::Ambiguous(_)));
        assert_eq!(CallOutcome::of::<()>(&Ok(())), CallOutcome::Ok);
    }
}
