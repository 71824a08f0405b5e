//! `bench --workload queue`: a reliable queue on one list. `--concurrency` producers `LPUSH`
//! unique items onto `--key` (default `bench:queue`) while as many consumers move them with
//! `BLMOVE key processing RIGHT LEFT` into a processing list each; run it through a failover
//! and the report says whether every item is still somewhere, once.
//!
//! # Behavior
//! - The queue and its processing lists (`{key}:processing:N`, or `{tag}:processing:N` when the
//!   key has a hash tag: one cluster slot) are deleted first: give the bench a key of its own.
//! - Consumers block at most 1 s per `BLMOVE`, so they stop soon after `--duration`. Producers
//!   stop at `--duration`; their last calls are awaited.
//! - At the end the lists are read back: `missing` counts acknowledged items in no list beyond
//!   what the ambiguous pops may have taken (a pop whose reply was lost may have moved an item
//!   the consumer never saw: it is in a processing list, or lost with a killed master),
//!   `doubled` items in two places, `unknown` items nobody pushed.
//! - Exit status 0 whatever the figures: the report is the result.

use std::collections::{HashMap, HashSet};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use redis::AsyncCommands;
use resilient_redis::{Client, Failure, Outcome};
use serde::Serialize;
use tokio::time::{Duration, Instant};

use crate::error::CliError;

/// What a queue run needs from `bench`'s arguments.
pub(crate) struct QueuePlan {
    pub(crate) key: String,
    /// Producers, and as many consumers.
    pub(crate) concurrency: u32,
    pub(crate) duration: Duration,
    /// The target, as reports name it.
    pub(crate) target: String,
    /// Print progress on stderr.
    pub(crate) progress: bool,
}

/// One queue run, as printed by `bench --workload queue --json`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct QueueReport {
    /// `"resilient"`.
    pub(crate) client: &'static str,
    /// `"queue"`.
    pub(crate) workload: &'static str,
    pub(crate) target: String,
    /// Producers (and consumers).
    pub(crate) concurrency: u32,
    /// Measured run time, in seconds.
    pub(crate) duration_s: f64,
    /// Items whose `LPUSH` was acknowledged.
    pub(crate) produced: u64,
    /// `LPUSH`es whose outcome is unknown.
    pub(crate) ambiguous_pushes: u64,
    /// `BLMOVE`s that returned an item.
    pub(crate) consumed: u64,
    /// `BLMOVE`s whose reply was lost (each may have moved one item).
    pub(crate) ambiguous_pops: u64,
    /// Calls that surely did nothing.
    pub(crate) failed: u64,
    /// Items left in the queue at the end.
    pub(crate) in_flight: u64,
    /// Acknowledged items in no list, beyond what the ambiguous pops may have taken.
    pub(crate) missing: u64,
    /// Items found in two places.
    pub(crate) doubled: u64,
    /// Items found that nobody pushed.
    pub(crate) unknown: u64,
    /// Acknowledged items per second.
    pub(crate) produced_per_sec: f64,
}

impl QueueReport {
    /// The human summary.
    pub(crate) fn human(&self) -> String {
        format!(
            "queue on {target} ({n} producers, {n} consumers): {produced} produced in {d:.1} s \
             ({rate:.0}/s, {ap} ambiguous), {consumed} consumed ({apop} ambiguous pops), {in_flight} \
             left in the queue, {failed} failed\n\
             {missing} missing, {doubled} doubled, {unknown} never pushed",
            target = self.target,
            n = self.concurrency,
            produced = self.produced,
            d = self.duration_s,
            rate = self.produced_per_sec,
            ap = self.ambiguous_pushes,
            consumed = self.consumed,
            apop = self.ambiguous_pops,
            in_flight = self.in_flight,
            failed = self.failed,
            missing = self.missing,
            doubled = self.doubled,
            unknown = self.unknown,
        )
    }
}

/// What the producers and consumers saw.
#[derive(Default)]
struct Seen {
    pushed: HashSet<String>,
    maybe_pushed: HashSet<String>,
    consumed: u64,
    ambiguous_pops: u64,
    failed: u64,
}

/// The processing list of consumer `c`: in the queue key's slot.
fn processing_list(key: &str, c: u32) -> String {
    match (key.find('{'), key.find('}')) {
        (Some(open), Some(close)) if close > open + 1 => {
            format!("{}:processing:{c}", &key[open..=close])
        }
        _ => format!("{{{key}}}:processing:{c}"),
    }
}

/// Runs the producers and consumers on `client`, then reads the lists back.
pub(crate) async fn run(client: Client, plan: QueuePlan) -> Result<QueueReport, CliError> {
    let lists: Vec<String> = std::iter::once(plan.key.clone())
        .chain((0..plan.concurrency).map(|c| processing_list(&plan.key, c)))
        .collect();
    {
        let mut admin = client.clone();
        for list in &lists {
            let _: () = admin
                .del(list)
                .await
                .map_err(|e| CliError::runtime(format!("cannot clear {list}: {e}")))?;
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    let mut consumers = tokio::task::JoinSet::new();
    for p in 0..plan.concurrency {
        let (mut producer, pushed, done, key) =
            (client.clone(), seen.clone(), stop.clone(), plan.key.clone());
        producers.spawn(async move {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let item = format!("{p}:{n}");
                let result: redis::RedisResult<i64> = producer.lpush(&key, &item).await;
                let mut seen = pushed.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(_) => {
                        seen.pushed.insert(item);
                    }
                    Err(e) if Failure::of(&e).outcome == Outcome::Failed => seen.failed += 1,
                    Err(_) => {
                        seen.maybe_pushed.insert(item);
                    }
                }
            }
        });
        let (mut client, seen, stop, key) =
            (client.clone(), seen.clone(), stop.clone(), plan.key.clone());
        let to = processing_list(&plan.key, p);
        consumers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let moved: redis::RedisResult<Option<String>> = redis::cmd("BLMOVE")
                    .arg(&key)
                    .arg(&to)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .arg(1)
                    .query_async(&mut client)
                    .await;
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                match moved {
                    Ok(Some(_)) => seen.consumed += 1,
                    Ok(None) => {}
                    Err(e) if Failure::of(&e).outcome == Outcome::Failed => seen.failed += 1,
                    Err(_) => seen.ambiguous_pops += 1,
                }
            }
        });
    }
    let end = started + plan.duration;
    while Instant::now() < end {
        tokio::time::sleep((end - Instant::now()).min(Duration::from_secs(1))).await;
        if plan.progress {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            eprint!(
                "\r{:>5.1} s  {} produced, {} consumed   ",
                started.elapsed().as_secs_f64(),
                seen.pushed.len(),
                seen.consumed
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(ended) = producers.join_next().await {
        ended.map_err(|e| CliError::runtime(format!("a producer failed: {e}")))?;
    }
    while let Some(ended) = consumers.join_next().await {
        ended.map_err(|e| CliError::runtime(format!("a consumer failed: {e}")))?;
    }
    let duration = started.elapsed();
    if plan.progress {
        eprintln!();
    }

    // Where every item is now.
    let mut found: HashMap<String, u32> = HashMap::new();
    let mut in_flight = 0;
    let mut reader = client.clone();
    for (i, list) in lists.iter().enumerate() {
        let items: Vec<String> = reader
            .lrange(list, 0, -1)
            .await
            .map_err(|e| CliError::runtime(format!("cannot read {list} back: {e}")))?;
        if i == 0 {
            in_flight = items.len() as u64;
        }
        for item in items {
            *found.entry(item).or_default() += 1;
        }
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let absent = seen
        .pushed
        .iter()
        .filter(|i| !found.contains_key(*i))
        .count() as u64;
    let produced = seen.pushed.len() as u64;
    Ok(QueueReport {
        client: "resilient",
        workload: "queue",
        target: plan.target,
        concurrency: plan.concurrency,
        duration_s: duration.as_secs_f64(),
        produced,
        ambiguous_pushes: seen.maybe_pushed.len() as u64,
        consumed: seen.consumed,
        ambiguous_pops: seen.ambiguous_pops,
        failed: seen.failed,
        in_flight,
        missing: absent.saturating_sub(seen.ambiguous_pops),
        doubled: found.values().filter(|n| **n > 1).count() as u64,
        unknown: found
            .keys()
            .filter(|i| !seen.pushed.contains(*i) && !seen.maybe_pushed.contains(*i))
            .count() as u64,
        produced_per_sec: produced as f64 / duration.as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::processing_list;

    #[test]
    fn processing_lists_share_the_queue_slot() {
        assert_eq!(processing_list("jobs", 3), "{jobs}:processing:3");
        assert_eq!(processing_list("{q}:jobs", 0), "{q}:processing:0");
    }
}
