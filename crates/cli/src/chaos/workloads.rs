//! The workloads a chaos run drives through the resilient client, each on keys of its own.
//!
//! # Behavior
//! - `--concurrency` tasks per workload (for `queue`, as many producers and consumers; for
//!   `pubsub`, publishers on a channel each and one subscription for them all).
//! - Tasks behave like application callers: after a success each waits for its next tick
//!   (`--rate` calls per second per task, so the run's load stays modest and the same on
//!   every machine); after an error, even-numbered tasks call again at once (a tight loop, as
//!   many worker loops are written) and odd-numbered ones pause 10 ms, as an app logging the
//!   error would.
//! - Keys: `chaos:counter` and `chaos:cas` (one key every task shares), `chaos:set:{task}`,
//!   `chaos:register:{task}`, the queue `{chaos:queue}` with its processing lists
//!   `{chaos:queue}:processing:{task}` (one cluster slot), channels `chaos:ch:{task}`.
//! - `counter` INCRs (through [`resilient_redis::ExactlyOnce`] with `--exactly-once`); `set`
//!   SADDs unique elements; `register` alternates `SET` of the next number and `GET` of its own
//!   key; `queue` LPUSHes unique items while consumers `BLMOVE` them (1 s blocking); `cas`
//!   increments its key through [`resilient_redis::Client::transaction`]; `pubsub` publishes
//!   sequence numbers ([`redis_lab::history::Sequences`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ValueEnum;
use futures::StreamExt as _;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisError};
use redis_lab::history::{Published, SequenceCheck, Sequences};
use resilient_redis::{Client, Outcome, PubSubEvent};
use serde::Serialize;
use tokio::task::JoinSet;

use super::history::{Clock, Late, Read, TaskLog, Write};
use crate::error::CliError;

/// How long a consumer's `BLMOVE` blocks.
const BLOCK: Duration = Duration::from_secs(1);
/// How long the subscriber gets after the publishers stop to receive what was acknowledged.
const DRAIN: Duration = Duration::from_secs(5);

/// A workload (`--workload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum WorkloadKind {
    /// INCR of one shared key.
    Counter,
    /// SADD of unique elements.
    Set,
    /// SET and GET of one key per task, each task reading its own writes.
    Register,
    /// LPUSH of unique items, BLMOVE into processing lists.
    Queue,
    /// An increment through an optimistic transaction (WATCH / MULTI / EXEC).
    Cas,
    /// Sequence-numbered messages to one subscription.
    Pubsub,
}

impl WorkloadKind {
    /// Every workload.
    pub(crate) const ALL: [WorkloadKind; 6] = [
        WorkloadKind::Counter,
        WorkloadKind::Set,
        WorkloadKind::Register,
        WorkloadKind::Queue,
        WorkloadKind::Cas,
        WorkloadKind::Pubsub,
    ];

    /// The name on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            WorkloadKind::Counter => "counter",
            WorkloadKind::Set => "set",
            WorkloadKind::Register => "register",
            WorkloadKind::Queue => "queue",
            WorkloadKind::Cas => "cas",
            WorkloadKind::Pubsub => "pubsub",
        }
    }
}

/// The keys of the workloads.
pub(crate) mod keys {
    /// The counter.
    pub(crate) const COUNTER: &str = "chaos:counter";
    /// The transaction's counter.
    pub(crate) const CAS: &str = "chaos:cas";
    /// The queue.
    pub(crate) const QUEUE: &str = "{chaos:queue}";

    /// Task `t`'s set.
    pub(crate) fn set(t: u32) -> String {
        format!("chaos:set:{t}")
    }

    /// Task `t`'s register.
    pub(crate) fn register(t: u32) -> String {
        format!("chaos:register:{t}")
    }

    /// Consumer `t`'s processing list.
    pub(crate) fn processing(t: u32) -> String {
        format!("{QUEUE}:processing:{t}")
    }

    /// Publisher `t`'s channel.
    pub(crate) fn channel(t: u32) -> String {
        format!("chaos:ch:{t}")
    }

    /// Every data key of a run with `tasks` tasks per workload (for `migrate`).
    pub(crate) fn all(tasks: u32) -> Vec<String> {
        let mut all = vec![COUNTER.to_owned(), CAS.to_owned(), QUEUE.to_owned()];
        for t in 0..tasks {
            all.push(set(t));
            all.push(register(t));
        }
        all
    }
}

/// How the workloads run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The workloads.
    pub(crate) kinds: Vec<WorkloadKind>,
    /// Tasks per workload.
    pub(crate) tasks: u32,
    /// Calls per second per task while healthy.
    pub(crate) rate: u32,
    /// `counter` through exactly-once writes.
    pub(crate) exactly_once: bool,
    /// The client's total deadline per call.
    pub(crate) deadline: Duration,
}

/// What a task of a workload was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    /// The workload's main loop (for `queue`, a producer).
    Main,
    /// A `queue` consumer.
    Consumer,
}

/// Everything the workloads recorded.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// Each task's log, by workload, part and task number.
    pub(crate) logs: BTreeMap<(WorkloadKind, Part, u32), TaskLog>,
    /// The pub/sub history, checked.
    pub(crate) pubsub: Option<SequenceCheck>,
}

/// The workloads while they run.
pub(crate) struct Running {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<((WorkloadKind, Part, u32), TaskLog)>,
    pubsub: Option<(Arc<Mutex<Sequences>>, tokio::task::JoinHandle<()>)>,
}

/// Paces a task: `rate` calls per second after successes, none after errors (tight) or 10 ms.
struct Pace {
    every: Duration,
    next: tokio::time::Instant,
    tight: bool,
}

impl Pace {
    fn new(rate: u32, task: u32) -> Self {
        Pace {
            every: Duration::from_secs(1) / rate.max(1),
            next: tokio::time::Instant::now(),
            tight: task.is_multiple_of(2),
        }
    }

    async fn after(&mut self, ok: bool) {
        if ok {
            self.next = (self.next + self.every).max(tokio::time::Instant::now());
            tokio::time::sleep_until(self.next).await;
        } else if !self.tight {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts every workload of `plan` on `client`.
///
/// # Errors
/// [`CliError::Runtime`] when the keys cannot be cleared or the subscription cannot start.
pub(crate) async fn start(client: &Client, plan: &Plan, clock: Clock) -> Result<Running, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    let mut pubsub = None;
    for &kind in &plan.kinds {
        if kind == WorkloadKind::Pubsub {
            pubsub = Some(start_pubsub(client, plan, clock, &stop, &mut tasks).await?);
            continue;
        }
        for t in 0..plan.tasks {
            let env = Env {
                client: client.clone(),
                stop: stop.clone(),
                clock,
                plan: plan.clone(),
                task: t,
            };
            match kind {
                WorkloadKind::Counter if plan.exactly_once => {
                    let xo = client
                        .exactly_once(resilient_redis::ExactlyOnceConfig::default())
                        .map_err(|e| CliError::usage(format!("--exactly-once: {e}")))?;
                    tasks.spawn(counter(env, xo, kind))
                }
                WorkloadKind::Counter => tasks.spawn(counter(env, client.clone(), kind)),
                WorkloadKind::Set => tasks.spawn(set(env)),
                WorkloadKind::Register => tasks.spawn(register(env)),
                WorkloadKind::Queue => {
                    let consumer = Env {
                        client: client.clone(),
                        stop: stop.clone(),
                        clock,
                        plan: plan.clone(),
                        task: t,
                    };
                    tasks.spawn(consume(consumer));
                    tasks.spawn(produce(env))
                }
                WorkloadKind::Cas => tasks.spawn(cas(env)),
                WorkloadKind::Pubsub => unreachable!("started above"),
            };
        }
    }
    Ok(Running {
        stop,
        tasks,
        pubsub,
    })
}

impl Running {
    /// Stops every task, waits for its last call, and gives what they recorded.
    ///
    /// # Errors
    /// [`CliError::Runtime`] when a task panicked.
    pub(crate) async fn stop(mut self) -> Result<Recorded, CliError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut recorded = Recorded::default();
        while let Some(ended) = self.tasks.join_next().await {
            let (id, log) =
                ended.map_err(|e| CliError::runtime(format!("a workload task failed: {e}")))?;
            recorded.logs.insert(id, log);
        }
        if let Some((history, subscriber)) = self.pubsub {
            let end = tokio::time::Instant::now() + DRAIN;
            let check = loop {
                let check = history.lock().unwrap_or_else(|p| p.into_inner()).check();
                if check.lost == 0 || tokio::time::Instant::now() >= end {
                    break check;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            subscriber.abort();
            recorded.pubsub = Some(check);
        }
        Ok(recorded)
    }
}

/// What every task gets.
struct Env {
    client: Client,
    stop: Arc<AtomicBool>,
    clock: Clock,
    plan: Plan,
    task: u32,
}

impl Env {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

type Done = ((WorkloadKind, Part, u32), TaskLog);

/// Records one call's result in `log`; gives the outcome of a failure.
fn note<T>(
    log: &mut TaskLog,
    op: &'static str,
    start: u64,
    end: u64,
    result: &Result<T, RedisError>,
    limit: Duration,
) -> Option<Outcome> {
    let outcome = result.as_ref().err().map(Outcome::of);
    log.call(op, start, end, outcome, limit);
    if let Err(e) = result {
        let call = Late {
            op,
            start_ms: start,
            took_ms: end.saturating_sub(start),
        };
        log.last_failure = Some((call, e.to_string()));
    }
    outcome
}

/// Records a write of `value` that ended at `end` with `outcome` (`None`: acknowledged).
fn wrote(log: &mut TaskLog, value: u64, end: u64, outcome: Option<Outcome>) {
    match outcome {
        None => log.writes.push(Write {
            value,
            at_ms: end,
            acked: true,
        }),
        Some(Outcome::Ambiguous) => log.writes.push(Write {
            value,
            at_ms: end,
            acked: false,
        }),
        Some(_) => {}
    }
}

/// Records the value an acknowledged increment returned (the checker finds lost increments
/// from values returned twice).
fn returned(log: &mut TaskLog, result: Result<u64, RedisError>, end: u64) {
    if let Ok(value) = result {
        log.writes.push(Write {
            value,
            at_ms: end,
            acked: true,
        });
    }
}

async fn counter<C: ConnectionLike + Send>(env: Env, mut conn: C, kind: WorkloadKind) -> Done {
    let mut log = TaskLog::default();
    let mut pace = Pace::new(env.plan.rate, env.task);
    while env.running() {
        let start = env.clock.ms();
        let result: redis::RedisResult<u64> = redis::cmd("INCR")
            .arg(keys::COUNTER)
            .query_async(&mut conn)
            .await;
        let end = env.clock.ms();
        let outcome = note(&mut log, "INCR", start, end, &result, env.plan.deadline);
        returned(&mut log, result, end);
        pace.after(outcome.is_none()).await;
    }
    ((kind, Part::Main, env.task), log)
}

async fn set(mut env: Env) -> Done {
    let mut log = TaskLog::default();
    let mut pace = Pace::new(env.plan.rate, env.task);
    let key = keys::set(env.task);
    let mut n = 0u64;
    while env.running() {
        n += 1;
        let start = env.clock.ms();
        let result: redis::RedisResult<i64> = env.client.sadd(&key, n).await;
        let end = env.clock.ms();
        let outcome = note(&mut log, "SADD", start, end, &result, env.plan.deadline);
        wrote(&mut log, n, end, outcome);
        pace.after(outcome.is_none()).await;
    }
    ((WorkloadKind::Set, Part::Main, env.task), log)
}

async fn register(mut env: Env) -> Done {
    let mut log = TaskLog::default();
    let mut pace = Pace::new(env.plan.rate, env.task);
    let key = keys::register(env.task);
    let mut n = 0u64;
    let mut floor: Option<(u64, u64)> = None;
    let mut write_next = true;
    while env.running() {
        let start = env.clock.ms();
        let ok = if write_next {
            n += 1;
            let result: redis::RedisResult<()> = env.client.set(&key, n).await;
            let end = env.clock.ms();
            let outcome = note(&mut log, "SET", start, end, &result, env.plan.deadline);
            wrote(&mut log, n, end, outcome);
            if outcome.is_none() {
                floor = Some((n, end));
            }
            outcome.is_none()
        } else {
            let result: redis::RedisResult<Option<u64>> = env.client.get(&key).await;
            let end = env.clock.ms();
            let outcome = note(&mut log, "GET", start, end, &result, env.plan.deadline);
            if let Ok(value) = result {
                log.reads.push(Read {
                    value: value.unwrap_or(0),
                    floor,
                    start_ms: start,
                    end_ms: end,
                });
            }
            outcome.is_none()
        };
        write_next = !write_next;
        pace.after(ok).await;
    }
    ((WorkloadKind::Register, Part::Main, env.task), log)
}

async fn produce(mut env: Env) -> Done {
    let mut log = TaskLog::default();
    let mut pace = Pace::new(env.plan.rate, env.task);
    let mut n = 0u64;
    while env.running() {
        n += 1;
        let item = item(env.task, n);
        let start = env.clock.ms();
        let result: redis::RedisResult<i64> = env.client.lpush(keys::QUEUE, item).await;
        let end = env.clock.ms();
        let outcome = note(&mut log, "LPUSH", start, end, &result, env.plan.deadline);
        wrote(&mut log, n, end, outcome);
        pace.after(outcome.is_none()).await;
    }
    ((WorkloadKind::Queue, Part::Main, env.task), log)
}

/// Producer `task`'s item `n`, as pushed: `task:n`.
pub(crate) fn item(task: u32, n: u64) -> String {
    format!("{task}:{n}")
}

async fn consume(mut env: Env) -> Done {
    let mut log = TaskLog::default();
    let mut pace = Pace::new(env.plan.rate, env.task);
    let to = keys::processing(env.task);
    let limit = env.plan.deadline + BLOCK;
    while env.running() {
        let start = env.clock.ms();
        let result: redis::RedisResult<Option<String>> = redis::cmd("BLMOVE")
            .arg(keys::QUEUE)
            .arg(&to)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(BLOCK.as_secs())
            .query_async(&mut env.client)
            .await;
        let end = env.clock.ms();
        let outcome = note(&mut log, "BLMOVE", start, end, &result, limit);
        pace.after(outcome.is_none()).await;
    }
    ((WorkloadKind::Queue, Part::Consumer, env.task), log)
}

async fn cas(env: Env) -> Done {
    let mut log = TaskLog::default();
    let mut pace = Pace::new(env.plan.rate, env.task);
    while env.running() {
        let start = env.clock.ms();
        let result: Result<u64, RedisError> = env
            .client
            .transaction(&[keys::CAS], |mut tx| async move {
                let n: Option<i64> = tx.get(keys::CAS).await?;
                Ok(redis::pipe()
                    .set(keys::CAS, n.unwrap_or(0) + 1)
                    .ignore()
                    .get(keys::CAS)
                    .clone())
            })
            .await
            .map(|(n,): (u64,)| n)
            .map_err(resilient_redis::Error::into_redis);
        let end = env.clock.ms();
        let outcome = note(&mut log, "EXEC", start, end, &result, env.plan.deadline);
        returned(&mut log, result, end);
        pace.after(outcome.is_none()).await;
    }
    ((WorkloadKind::Cas, Part::Main, env.task), log)
}

/// Subscribes to every publisher's channel, then starts the publishers.
async fn start_pubsub(
    client: &Client,
    plan: &Plan,
    clock: Clock,
    stop: &Arc<AtomicBool>,
    tasks: &mut JoinSet<Done>,
) -> Result<(Arc<Mutex<Sequences>>, tokio::task::JoinHandle<()>), CliError> {
    let names: Vec<String> = (0..plan.tasks).map(keys::channel).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut stream = client
        .subscribe(&refs, &[])
        .await
        .map_err(|e| CliError::runtime(format!("cannot subscribe: {e}")))?;
    let history = Arc::new(Mutex::new(Sequences::new()));
    let subscriber = {
        let history = history.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    PubSubEvent::Message(m) => {
                        if let Ok(seq) = m.get_payload::<u64>() {
                            h.received(m.get_channel_name(), seq);
                        }
                    }
                    PubSubEvent::Gap(g) => h.gap(&g.topic.name),
                }
            }
        })
    };
    for (t, name) in (0..plan.tasks).zip(names) {
        let env = Env {
            client: client.clone(),
            stop: stop.clone(),
            clock,
            plan: plan.clone(),
            task: t,
        };
        let history = history.clone();
        tasks.spawn(publish(env, name, history));
    }
    Ok((history, subscriber))
}

async fn publish(mut env: Env, channel: String, history: Arc<Mutex<Sequences>>) -> Done {
    let mut log = TaskLog::default();
    let mut pace = Pace::new(env.plan.rate, env.task);
    let mut seq = 0u64;
    while env.running() {
        seq += 1;
        let start = env.clock.ms();
        let result: redis::RedisResult<i64> = env.client.publish(&channel, seq).await;
        let end = env.clock.ms();
        let outcome = note(&mut log, "PUBLISH", start, end, &result, env.plan.deadline);
        // When it was acknowledged: a loss is checked against the faults of that moment.
        wrote(&mut log, seq, end, outcome);
        let published = match outcome {
            None => Published::Acknowledged,
            Some(Outcome::Failed) => Published::Failed,
            Some(_) => Published::Ambiguous,
        };
        history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .published(&channel, seq, published);
        pace.after(outcome.is_none()).await;
    }
    ((WorkloadKind::Pubsub, Part::Main, env.task), log)
}
