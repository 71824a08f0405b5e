//! Pub/sub on a Redis Cluster (3 masters, 3 replicas, `cluster-node-timeout 1000`): channels
//! (`SUBSCRIBE` on any node) and shard channels (`SSUBSCRIBE` on the slot's owner) through the
//! SIGKILL of a master and a slot migration, under 2,000 messages/s per kind over 32 channels.
//!
//! Every lost subscription shows in the stream as a gap at its place: every acknowledged
//! message is received exactly once unless a gap of its channel covers it, and every gap ends
//! (the channel subscribed again) within 500 ms of its new owner being known.
//!
//! Figures are printed; run with `--nocapture` to see them.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use redis_lab::history::{Published, SequenceCheck, Sequences};
use redis_lab::{ClusterConfig as LabConfig, RedisCluster};
use resilient_redis::{Client, ClientConfig, Gap, GapCause, Outcome, PubSubEvent, ResilientPubSub};

use common::{key_slot, wait_until};

/// Channels per kind.
const CHANNELS: usize = 32;
/// Messages per second per kind (over all its channels).
const RATE: u64 = 2_000;

/// One kind's run: publishers, the subscriber, what each saw.
struct Run {
    kind: &'static str,
    /// What the publishers were told and what the subscriber received, in order.
    history: Arc<Mutex<Sequences>>,
    /// The gaps the subscriber was told of.
    gaps: Arc<Mutex<Vec<Gap>>>,
    acked: Arc<AtomicU64>,
    /// Messages the subscription dropped as echoes (delivered again by a new node).
    echoes: Arc<AtomicU64>,
}

impl Run {
    /// Starts the subscriber (already subscribed: `stream`) and one publisher task per channel
    /// (each at `RATE / CHANNELS` messages per second, `SPUBLISH` for shard channels).
    fn start(
        kind: &'static str,
        channels: Vec<String>,
        mut stream: ResilientPubSub,
        client: &Client,
        stop: &Arc<AtomicBool>,
        subscribers: &mut tokio::task::JoinSet<()>,
        publishers: &mut tokio::task::JoinSet<()>,
    ) -> Run {
        let history = Arc::new(Mutex::new(Sequences::new()));
        let gaps: Arc<Mutex<Vec<Gap>>> = Arc::default();
        let acked = Arc::new(AtomicU64::new(0));
        let echoes = Arc::new(AtomicU64::new(0));
        {
            let (history, gaps, echoes) = (history.clone(), gaps.clone(), echoes.clone());
            subscribers.spawn(async move {
                while let Some(event) = stream.next().await {
                    echoes.store(stream.echoes_dropped(), Ordering::Relaxed);
                    let mut history = history.lock().unwrap();
                    match event {
                        PubSubEvent::Message(m) => {
                            let seq: u64 = m.get_payload().unwrap();
                            history.received(m.get_channel_name(), seq);
                        }
                        PubSubEvent::Gap(g) => {
                            history.gap(&g.topic.name);
                            gaps.lock().unwrap().push(g);
                        }
                    }
                }
            });
        }
        let command = if kind == "shard" {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let period = Duration::from_micros(1_000_000 * CHANNELS as u64 / RATE);
        for channel in channels {
            let (mut client, stop, history, acked) =
                (client.clone(), stop.clone(), history.clone(), acked.clone());
            publishers.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    seq += 1;
                    let result: redis::RedisResult<i64> = redis::cmd(command)
                        .arg(&channel)
                        .arg(seq)
                        .query_async(&mut client)
                        .await;
                    let outcome = match result {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            Published::Acknowledged
                        }
                        Err(e) if Outcome::of(&e) == Outcome::Failed => Published::Failed,
                        Err(_) => Published::Ambiguous,
                    };
                    history.lock().unwrap().published(&channel, seq, outcome);
                }
            });
        }
        Run {
            kind,
            history,
            gaps,
            acked,
            echoes,
        }
    }

    /// Whether every acknowledged message has arrived or is covered by a gap (the end of the
    /// run: nothing more is coming).
    fn drained(&self) -> bool {
        self.check().lost == 0
    }

    /// Checks what was received against what was acknowledged.
    fn check(&self) -> SequenceCheck {
        self.history.lock().unwrap().check()
    }
}

/// Channel names spread over every shard: `chN`, whose slots fall all over the map.
fn channels(prefix: &str) -> Vec<String> {
    (0..CHANNELS).map(|i| format!("{prefix}{i}")).collect()
}

/// The master at `addr` with a subscriber on `channel` (`PUBSUB NUMSUB`).
async fn has_subscriber(cluster: &RedisCluster, addr: SocketAddr, channel: &str) -> bool {
    let Some(node) = cluster.nodes().iter().find(|n| n.addr() == addr) else {
        return false;
    };
    let Ok(mut conn) = node.admin().await else {
        return false;
    };
    let reply: redis::RedisResult<Vec<redis::Value>> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await;
    matches!(reply.as_deref(), Ok([_, redis::Value::Int(n)]) if *n > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_a_killed_master_and_a_migration() {
    let mut cluster = RedisCluster::start(LabConfig::default())
        .await
        .expect("start a lab cluster (redis-server 7 must be installed)");
    let client = Client::with_config(ClientConfig::cluster(&cluster.urls()).unwrap())
        .await
        .unwrap();
    let (plain, shard) = (channels("ch"), channels("sh"));
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let plain_stream = client.subscribe(&refs(&plain), &[]).await.unwrap();
    let shard_stream = client.ssubscribe(&refs(&shard)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (mut subscribers, mut publishers) =
        (tokio::task::JoinSet::new(), tokio::task::JoinSet::new());
    let started = Instant::now();
    let runs = [
        Run::start(
            "plain",
            plain,
            plain_stream,
            &client,
            &stop,
            &mut subscribers,
            &mut publishers,
        ),
        Run::start(
            "shard",
            shard,
            shard_stream,
            &client,
            &stop,
            &mut subscribers,
            &mut publishers,
        ),
    ];
    // A healthy phase, to measure the rate (not a synchronisation).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let healthy: Vec<f64> = runs
        .iter()
        .map(|r| r.acked.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
        .collect();

    // Kill the master the channels' subscription is on (it also owns a third of the shard
    // channels).
    let mut victim = None;
    for slot in [0u16, 5461, 10923] {
        let master = cluster.master_for_slot(slot).await.unwrap();
        if has_subscriber(&cluster, master, "ch0").await {
            victim = Some((slot, master));
        }
    }
    let (victim_slot, victim) = victim.expect("the channels' subscription is on a master");
    let index = cluster
        .nodes()
        .iter()
        .position(|n| n.addr() == victim)
        .unwrap();
    let killed_at = Instant::now();
    cluster.nodes_mut()[index].kill().unwrap();
    wait_until(
        "the replica to take over",
        Duration::from_secs(20),
        || async { matches!(cluster.master_for_slot(victim_slot).await, Ok(m) if m != victim) },
    )
    .await;
    let promoted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Move a subscribed shard channel's slot to another master.
    let channel = "sh0";
    let slot = key_slot(channel);
    let from = cluster.master_for_slot(slot).await.unwrap();
    let mut to = from;
    for s in [0u16, 5461, 10923] {
        let m = cluster.master_for_slot(s).await.unwrap();
        if m != from {
            to = m;
        }
    }
    let migrating_at = Instant::now();
    cluster.migrate_slot(slot, to).await.unwrap();
    let migrated_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    // Every publication ends (within its deadline) before the check, so none is acknowledged
    // after it.
    while let Some(ended) = publishers.join_next().await {
        ended.unwrap();
    }

    // Drain: wait until every acknowledged message has arrived or is covered by a gap.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while !runs.iter().all(Run::drained) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    subscribers.abort_all();

    let mut failures = Vec::new();
    for (run, rate) in runs.iter().zip(&healthy) {
        let check = run.check();
        let gaps = run.gaps.lock().unwrap().clone();
        // How long after its new owner was known each gap ended: the promoted replica (kill),
        // or the migration's target (known when every node agrees).
        let after_known: Vec<(&Gap, Duration)> = gaps
            .iter()
            .map(|g| {
                let known = if g.began < migrating_at {
                    promoted_at
                } else {
                    migrated_at
                };
                (g, g.ended.saturating_duration_since(known))
            })
            .collect();
        let worst = after_known
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default();
        let late: Vec<String> = after_known
            .iter()
            .filter(|(_, after)| *after > Duration::from_millis(500))
            .map(|(g, after)| format!("{} {:?} ended {after:?} after", g.topic.name, g.cause))
            .collect();
        let longest = gaps
            .iter()
            .map(|g| g.ended - g.began)
            .max()
            .unwrap_or_default();
        let kill_gaps = gaps.iter().filter(|g| g.began < migrating_at).count();
        eprintln!(
            "{}: healthy {rate:.0} msg/s; {} acknowledged ({} ambiguous, {} failed), {} received, \
             {} duplicates ({} echoes dropped), {} missing inside gaps, {} lost outside gaps; {} gaps ({kill_gaps} \
             at the kill {:?} after it, longest {longest:?}); subscribed again at most \
             {worst:?} after the new owner was known, {} late",
            run.kind,
            check.acknowledged,
            check.ambiguous,
            check.failed,
            check.received,
            check.duplicates,
            run.echoes.load(Ordering::Relaxed),
            check.in_gaps,
            check.lost,
            gaps.len(),
            promoted_at - killed_at,
            late.len()
        );
        if *rate < RATE as f64 * 0.9 {
            failures.push(format!("{}: healthy rate {rate:.0} msg/s", run.kind));
        }
        if check.duplicates > 0 || check.lost > 0 {
            failures.push(format!(
                "{}: {} duplicates, {} lost outside gaps: {:?}",
                run.kind, check.duplicates, check.lost, check.examples
            ));
        }
        if kill_gaps == 0 {
            failures.push(format!("{}: the kill left no gap", run.kind));
        }
        if !late.is_empty() {
            failures.push(format!("{}: late resubscriptions {late:?}", run.kind));
        }
    }
    // The migrated channel's gap.
    let moved = runs[1]
        .gaps
        .lock()
        .unwrap()
        .iter()
        .any(|g| g.topic.name == channel && g.began >= migrating_at);
    if !moved {
        failures.push("the migrated shard channel shows no gap".into());
    }
    assert!(drained, "messages never arrived: {failures:?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A frozen node (SIGSTOP: its connections stay open and TCP sees nothing wrong) is found by
/// the subscription's liveness `PING`: the channels move to a live master, with an
/// `Unresponsive` gap each, and messages arrive again while the node is still frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_left_for_a_live_one() {
    let cluster = RedisCluster::start(LabConfig::default())
        .await
        .expect("start a lab cluster (redis-server 7 must be installed)");
    let client = Client::with_config(ClientConfig::cluster(&cluster.urls()).unwrap())
        .await
        .unwrap();
    let names = channels("fz");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut stream = client.subscribe(&refs, &[]).await.unwrap();
    let mut frozen = None;
    for slot in [0u16, 5461, 10923] {
        let master = cluster.master_for_slot(slot).await.unwrap();
        if has_subscriber(&cluster, master, "fz0").await {
            frozen = Some(master);
        }
    }
    let frozen = frozen.expect("the subscription is on a master");
    // Channels whose slot another master serves: publishing to them does not wait for the
    // frozen node's failover.
    let mut elsewhere = Vec::new();
    for name in &names {
        if cluster.master_for_slot(key_slot(name)).await.unwrap() != frozen {
            elsewhere.push(name.clone());
        }
    }
    let node = cluster.nodes().iter().find(|n| n.addr() == frozen).unwrap();
    node.pause().unwrap();
    let paused_at = Instant::now();

    let mut publisher = client.clone();
    let (mut gaps, mut heard_after) = (Vec::<Gap>::new(), 0u32);
    let mut round = 0u64;
    while gaps.len() < names.len() || heard_after == 0 {
        assert!(
            paused_at.elapsed() < Duration::from_secs(20),
            "{} gaps, {heard_after} messages after them, 20 s after the freeze",
            gaps.len()
        );
        round += 1;
        for name in &elsewhere {
            let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(name)
                .arg(round)
                .query_async(&mut publisher)
                .await;
        }
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(20), stream.next()).await
        {
            match event {
                PubSubEvent::Gap(gap) => gaps.push(gap),
                PubSubEvent::Message(m) if gaps.iter().any(|g| g.covers(&m)) => heard_after += 1,
                PubSubEvent::Message(_) => {}
            }
        }
    }
    let found = gaps
        .iter()
        .map(|g| g.ended.saturating_duration_since(paused_at))
        .max();
    node.resume().unwrap();
    eprintln!(
        "frozen node left: {} gaps, all ended at most {found:?} after the freeze; {heard_after} \
         messages after them while it was still frozen",
        gaps.len()
    );
    for gap in &gaps {
        assert_eq!(gap.cause, GapCause::Unresponsive, "{gap:?}");
    }
    assert_eq!(stream.resubscriptions(), 1);
}
