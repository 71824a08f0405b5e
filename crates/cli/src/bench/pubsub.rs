//! `bench --workload pubsub`: one publisher task per channel sends sequence-numbered messages
//! (`PUBLISH`, or `SPUBLISH` with `--sharded`) at `--rate` messages per second over all
//! `--channels`, while one resilient subscription (`subscribe` / `ssubscribe`) receives them.
//! Run it while a topology fails over (the `demo` lab, your own chaos) and the report says what
//! the subscriber missed and whether it was told.
//!
//! # Behavior
//! - Channels are `{prefix}{i}` (`--key` is the prefix, default `bench:ch`), so they spread over
//!   a cluster's slots. Each publisher sends 1, 2, 3, … on its channel, one at a time.
//! - At the end the publishers stop, their last calls are awaited, and the subscriber gets up
//!   to 5 s to receive what was acknowledged. The history is then checked
//!   ([`redis_lab::history::Sequences`]): `duplicates` (a message received twice) and `lost`
//!   (acknowledged, not received, not covered by a reported gap) should be 0; `in_gaps` is what
//!   pub/sub lost and said so.
//! - Exit status 0 whatever the figures: the report is the result.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use futures::StreamExt;
use redis_lab::history::{Published, SequenceCheck, Sequences};
use resilient_redis::{Client, Outcome, PubSubEvent};
use serde::Serialize;
use tokio::time::{Duration, Instant};

use crate::error::CliError;

/// How long the subscriber gets to receive what was acknowledged, after the publishers stop.
const DRAIN: Duration = Duration::from_secs(5);

/// What a pub/sub run needs from `bench`'s arguments.
pub(crate) struct PubSubPlan {
    /// Channel name prefix.
    pub(crate) prefix: String,
    pub(crate) channels: u32,
    pub(crate) sharded: bool,
    /// Messages per second over all channels.
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    /// The target, as reports name it.
    pub(crate) target: String,
    /// Print progress on stderr.
    pub(crate) progress: bool,
}

/// One pub/sub run, as printed by `bench --workload pubsub --json`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PubSubReport {
    /// `"resilient"`.
    pub(crate) client: &'static str,
    /// `"pubsub"`.
    pub(crate) workload: &'static str,
    /// The target (URL, sentinels or cluster seeds, secrets redacted).
    pub(crate) target: String,
    pub(crate) channels: u32,
    /// Shard channels (`SSUBSCRIBE` / `SPUBLISH`).
    pub(crate) sharded: bool,
    /// Messages per second asked for, over all channels.
    pub(crate) rate_offered: f64,
    /// Measured publishing time, in seconds.
    pub(crate) duration_s: f64,
    /// Publications the server acknowledged.
    pub(crate) published: u64,
    /// Publications whose outcome is unknown (the reply was lost).
    pub(crate) ambiguous: u64,
    /// Publications surely not made.
    pub(crate) failed: u64,
    /// Messages received (duplicates included).
    pub(crate) received: u64,
    /// Messages received more than once.
    pub(crate) duplicates: u64,
    /// Acknowledged, not received, inside a reported gap.
    pub(crate) missing_in_gaps: u64,
    /// Acknowledged, not received, not covered by a reported gap.
    pub(crate) lost_outside_gaps: u64,
    /// Gap events the subscription reported.
    pub(crate) gaps: u64,
    /// The longest gap, in ms.
    pub(crate) longest_gap_ms: f64,
    /// Times topics were subscribed again (`ResilientPubSub::resubscriptions`).
    pub(crate) resubscriptions: u64,
    /// Messages a new node delivered again after a gap, dropped by the subscription.
    pub(crate) echoes_dropped: u64,
    /// A few duplicated or lost messages, described.
    pub(crate) examples: Vec<String>,
}

impl PubSubReport {
    /// The human summary.
    pub(crate) fn human(&self) -> String {
        format!(
            "pubsub ({kind}, {channels} channels) on {target}: {published} published in {d:.1} s \
             ({rate:.0}/s; {ambiguous} ambiguous, {failed} failed), {received} received\n\
             {gaps} gaps (longest {longest:.1} ms, {resub} resubscriptions): {in_gaps} missing \
             inside them; {lost} lost outside gaps, {dup} duplicates, {echoes} echoes dropped",
            kind = if self.sharded { "sharded" } else { "channels" },
            channels = self.channels,
            target = self.target,
            published = self.published,
            d = self.duration_s,
            rate = self.published as f64 / self.duration_s.max(1e-9),
            ambiguous = self.ambiguous,
            failed = self.failed,
            received = self.received,
            gaps = self.gaps,
            longest = self.longest_gap_ms,
            resub = self.resubscriptions,
            in_gaps = self.missing_in_gaps,
            lost = self.lost_outside_gaps,
            dup = self.duplicates,
            echoes = self.echoes_dropped,
        )
    }
}

/// Runs the publishers and the subscription on `client`, then checks the history.
pub(crate) async fn run(client: Client, plan: PubSubPlan) -> Result<PubSubReport, CliError> {
    let names: Vec<String> = (0..plan.channels)
        .map(|i| format!("{}{i}", plan.prefix))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let subscribed = if plan.sharded {
        client.ssubscribe(&refs).await
    } else {
        client.subscribe(&refs, &[]).await
    };
    let mut stream = subscribed.map_err(|e| CliError::runtime(format!("cannot subscribe: {e}")))?;
    let history = Arc::new(Mutex::new(Sequences::new()));
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let subscriber = {
        let (history, longest, counters) = (history.clone(), longest.clone(), counters.clone());
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    PubSubEvent::Message(m) => match m.get_payload::<u64>() {
                        Ok(seq) => h.received(m.get_channel_name(), seq),
                        Err(_) => continue, // Someone else's message on our channel.
                    },
                    PubSubEvent::Gap(g) => {
                        h.gap(&g.topic.name);
                        let mut l = longest.lock().unwrap_or_else(|p| p.into_inner());
                        *l = (*l).max(g.ended.duration_since(g.began));
                    }
                }
                counters
                    .0
                    .store(stream.resubscriptions(), Ordering::Relaxed);
                counters.1.store(stream.echoes_dropped(), Ordering::Relaxed);
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let period = Duration::from_secs_f64(f64::from(plan.channels) / plan.rate);
    let command = if plan.sharded { "SPUBLISH" } else { "PUBLISH" };
    let started = Instant::now();
    let mut publishers = tokio::task::JoinSet::new();
    for name in names {
        let (mut client, stop, history) = (client.clone(), stop.clone(), history.clone());
        publishers.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                seq += 1;
                let result: redis::RedisResult<i64> = redis::cmd(command)
                    .arg(&name)
                    .arg(seq)
                    .query_async(&mut client)
                    .await;
                let outcome = match result {
                    Ok(_) => Published::Acknowledged,
                    Err(e) if Outcome::of(&e) == Outcome::Failed => Published::Failed,
                    Err(_) => Published::Ambiguous,
                };
                history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .published(&name, seq, outcome);
            }
        });
    }
    let end = started + plan.duration;
    while Instant::now() < end {
        tokio::time::sleep((end - Instant::now()).min(Duration::from_secs(1))).await;
        if plan.progress {
            let check = history.lock().unwrap_or_else(|p| p.into_inner()).check();
            eprint!(
                "\r{:>5.1} s  {} published, {} received, {} gaps   ",
                started.elapsed().as_secs_f64(),
                check.acknowledged,
                check.received,
                check.gaps
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(ended) = publishers.join_next().await {
        ended.map_err(|e| CliError::runtime(format!("a publisher failed: {e}")))?;
    }
    let duration = started.elapsed();
    let drain_end = Instant::now() + DRAIN;
    let check: SequenceCheck = loop {
        let check = history.lock().unwrap_or_else(|p| p.into_inner()).check();
        if check.lost == 0 || Instant::now() >= drain_end {
            break check;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    subscriber.abort();
    if plan.progress {
        eprintln!();
    }
    let longest = *longest.lock().unwrap_or_else(|p| p.into_inner());
    Ok(PubSubReport {
        client: "resilient",
        workload: "pubsub",
        target: plan.target,
        channels: plan.channels,
        sharded: plan.sharded,
        rate_offered: plan.rate,
        duration_s: duration.as_secs_f64(),
        published: check.acknowledged,
        ambiguous: check.ambiguous,
        failed: check.failed,
        received: check.received,
        duplicates: check.duplicates,
        missing_in_gaps: check.in_gaps,
        lost_outside_gaps: check.lost,
        gaps: check.gaps,
        longest_gap_ms: longest.as_secs_f64() * 1000.0,
        resubscriptions: counters.0.load(Ordering::Relaxed),
        echoes_dropped: counters.1.load(Ordering::Relaxed),
        examples: check.examples,
    })
}
