//! No blocked call outlives its node: a command blocked with a timeout of 0 on a master that
//! freezes (SIGSTOP: no reply, no reset) ends once the master is replaced, instead of waiting for
//! a server that may never answer again. `BLPOP` may have taken an element whose reply is stuck
//! in the frozen server: it ends ambiguous. `XREAD BLOCK` takes nothing: it is sent again on the
//! new master and returns the entry added there.
//!
//! Figures are printed; run with `--nocapture` to see them.

mod common;

use std::{net::SocketAddr, time::Duration};

use redis::AsyncCommands;
use redis_lab::{ClusterConfig, RedisCluster, RedisServer};
use resilient_redis::{Client, ClientConfig, Outcome};
use tokio::{task::JoinHandle, time::Instant};

use common::wait_until;

/// A blocked `BLPOP` (its reply and when it came) and a blocked `XREAD`.
type Calls = (
    JoinHandle<(redis::RedisResult<(String, String)>, Instant)>,
    JoinHandle<redis::RedisResult<redis::Value>>,
);

/// The deadline of the tests' clients.
const DEADLINE: Duration = Duration::from_secs(10);

/// The resilient client of a Sentinel URL.
async fn client_of(url: &str) -> Client {
    Client::with_config(ClientConfig {
        deadline: DEADLINE,
        ..ClientConfig::from_url(url).unwrap()
    })
    .await
    .unwrap()
}

/// `BLPOP key 0` and `XREAD BLOCK 0 STREAMS stream $` on `client`, each on its own task.
fn block_on(client: &Client, key: &'static str, stream: &'static str) -> Calls {
    let mut popper = client.clone();
    let pop = tokio::spawn(async move {
        let result = redis::cmd("BLPOP")
            .arg(key)
            .arg(0)
            .query_async(&mut popper)
            .await;
        (result, Instant::now())
    });
    let mut reader = client.clone();
    let read = tokio::spawn(async move {
        redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(0)
            .arg("STREAMS")
            .arg(stream)
            .arg("$")
            .query_async(&mut reader)
            .await
    });
    (pop, read)
}

/// Waits until `server` has `n` clients blocked.
async fn blocked(server: &RedisServer, n: u64) {
    wait_until("the calls to block", Duration::from_secs(15), || async {
        server
            .info_field("clients", "blocked_clients")
            .await
            .is_ok_and(|b| b.parse::<u64>().is_ok_and(|b| b >= n))
    })
    .await;
}

/// The two calls once the frozen master was replaced: `BLPOP` ended ambiguous, before the old
/// master was thawed; `XREAD` returns the entry added on the new master.
async fn check(
    client: &Client,
    calls: Calls,
    frozen_at: Instant,
    stream: &'static str,
    what: &str,
    new_master: impl std::future::Future<Output = &RedisServer>,
) {
    let (pop, read) = calls;
    let (popped, ended) = tokio::time::timeout(Duration::from_secs(30), pop)
        .await
        .expect("BLPOP still blocked 30 s after its master froze")
        .unwrap();
    let err = popped.expect_err("nothing was pushed");
    let failure = resilient_redis::Failure::of(&err);
    assert_eq!(failure.outcome, Outcome::Ambiguous, "{err}");
    eprintln!(
        "{what}: BLPOP 0 on the frozen master ended {:?} after the freeze: {err}",
        ended - frozen_at
    );
    // `$` means "entries added after this call": wait for it to be blocked on the new master.
    blocked(new_master.await, 1).await;
    let mut writer = client.clone();
    let _: String = writer.xadd(stream, "*", &[("n", 1)]).await.unwrap();
    let entries = tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("XREAD still blocked after an entry was added on the new master")
        .unwrap()
        .unwrap();
    assert!(
        format!("{entries:?}").contains(stream),
        "XREAD returned {entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_blocked_on_a_frozen_sentinel_master_end_after_the_failover() {
    let topology = common::sentinel_lab().await;
    let client = client_of(&common::sentinel_url(&topology)).await;
    let old = topology.master_addr().await.unwrap();
    let master = topology.servers().iter().find(|s| s.addr() == old).unwrap();
    let calls = block_on(&client, "jobs", "events");
    blocked(master, 2).await;
    master.pause().unwrap();
    let frozen_at = Instant::now();
    let new_master = async {
        let new = topology
            .wait_for_new_master(old, Duration::from_secs(30))
            .await
            .unwrap();
        topology.servers().iter().find(|s| s.addr() == new).unwrap()
    };
    check(&client, calls, frozen_at, "events", "Sentinel", new_master).await;
    master.resume().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_blocked_on_a_frozen_cluster_master_end_after_the_failover() {
    let cluster = RedisCluster::start(ClusterConfig::default()).await.unwrap();
    let client = Client::with_config(ClientConfig {
        deadline: DEADLINE,
        ..ClientConfig::cluster(&cluster.urls()).unwrap()
    })
    .await
    .unwrap();
    // One slot for both keys: one master to freeze.
    let (key, stream) = ("{blocked}:jobs", "{blocked}:events");
    let slot = common::key_slot(key);
    let old: SocketAddr = cluster.master_for_slot(slot).await.unwrap();
    let master = cluster.nodes().iter().find(|n| n.addr() == old).unwrap();
    let calls = block_on(&client, key, stream);
    blocked(master, 2).await;
    master.pause().unwrap();
    let frozen_at = Instant::now();
    let new_master = async {
        wait_until(
            "a replica to take over",
            Duration::from_secs(30),
            || async { cluster.master_for_slot(slot).await.is_ok_and(|m| m != old) },
        )
        .await;
        let new = cluster.master_for_slot(slot).await.unwrap();
        cluster.nodes().iter().find(|n| n.addr() == new).unwrap()
    };
    check(&client, calls, frozen_at, stream, "Cluster", new_master).await;
    master.resume().unwrap();
}

/// A graceful `SENTINEL FAILOVER`: the old master is alive and demoted, and answers the blocked
/// call `UNBLOCKED` (nothing taken): `BLPOP` is sent again on the new master and returns the
/// element pushed there, not ambiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_blocked_on_a_demoted_sentinel_master_moves_to_the_new_one() {
    let topology = common::sentinel_lab().await;
    let client = client_of(&common::sentinel_url(&topology)).await;
    let old = topology.master_addr().await.unwrap();
    let master = topology.servers().iter().find(|s| s.addr() == old).unwrap();
    let (pop, read) = block_on(&client, "jobs", "events");
    blocked(master, 2).await;
    let promoted = topology.wait_for_new_master(old, Duration::from_secs(30));
    common::sentinel_failover(&topology).await;
    let new = promoted.await.unwrap();
    let new_master = topology.servers().iter().find(|s| s.addr() == new).unwrap();
    blocked(new_master, 2).await;
    let mut writer = client.clone();
    let _: i64 = writer.lpush("jobs", "a").await.unwrap();
    let _: String = writer.xadd("events", "*", &[("n", 1)]).await.unwrap();
    let (popped, _) = tokio::time::timeout(Duration::from_secs(15), pop)
        .await
        .expect("BLPOP still blocked")
        .unwrap();
    assert_eq!(popped.expect("BLPOP moved to the new master").1, "a");
    let entries = tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("XREAD still blocked")
        .unwrap()
        .unwrap();
    assert!(format!("{entries:?}").contains("events"), "{entries:?}");
}

/// What the queue's producers and consumers saw.
#[derive(Default)]
struct QueueRun {
    /// Items whose `LPUSH` succeeded / may have been applied.
    pushed: std::collections::HashSet<String>,
    maybe_pushed: std::collections::HashSet<String>,
    /// `BLMOVE`s that may have moved an item whose reply was lost.
    ambiguous_pops: u64,
    failed: Vec<String>,
}

/// The queue target on Sentinel: 10 producers `LPUSH` unique items, 10 consumers
/// `BLMOVE queue processing:N RIGHT LEFT 0` for 20 s, the master SIGKILLed in the middle, with
/// durable acknowledgements (so a kill takes back nothing acknowledged). At the end every
/// acknowledged item is in exactly one place (the queue or a processing list) unless an ambiguous
/// pop may have taken it, nothing is there twice, nothing there was never pushed, and no consumer
/// stays blocked past the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_keeps_every_item_through_a_killed_master() {
    let mut topology = common::sentinel_lab().await;
    let client = Client::with_config(ClientConfig {
        deadline: DEADLINE,
        durability: resilient_redis::Durability::replicated(),
        ..ClientConfig::from_url(&common::sentinel_url(&topology)).unwrap()
    })
    .await
    .unwrap();
    let kill = async || {
        common::kill_sentinel_master(&mut topology).await;
    };
    queue_through_a_kill(client, "queue", "Sentinel", kill).await;
}

/// The same queue on a cluster (3+3): its lists share a slot (a hash tag), whose master is
/// SIGKILLed in the middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_queue_keeps_every_item_through_a_killed_master() {
    let mut cluster = RedisCluster::start(ClusterConfig::default()).await.unwrap();
    let client = Client::with_config(ClientConfig {
        deadline: DEADLINE,
        durability: resilient_redis::Durability::replicated(),
        ..ClientConfig::cluster(&cluster.urls()).unwrap()
    })
    .await
    .unwrap();
    let queue = "{q}:queue";
    let slot = common::key_slot(queue);
    let kill = async || {
        let old = cluster.master_for_slot(slot).await.unwrap();
        common::kill_cluster_node(&mut cluster, old);
        wait_until(
            "a replica to take over",
            Duration::from_secs(30),
            || async { cluster.master_for_slot(slot).await.is_ok_and(|m| m != old) },
        )
        .await;
    };
    queue_through_a_kill(client, queue, "Cluster", kill).await;
}

/// Runs the queue on `client` (list `queue`, processing lists `{queue}:processing:N`) for about
/// 8 s, then `kill` (which SIGKILLs the master and waits for a new one), 10 s
/// more; then stops the producers, ends the consumers with markers and checks where every item
/// is (see [`a_queue_keeps_every_item_through_a_killed_master`]).
async fn queue_through_a_kill(
    client: Client,
    queue: &'static str,
    topology: &str,
    kill: impl AsyncFnOnce(),
) {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    // The processing lists share the queue's hash tag (a cluster slot), if it has one.
    let processing = |c: usize| match queue.split_once('}') {
        Some((tag, _)) => format!("{tag}}}:processing:{c}"),
        None => format!("processing:{c}"),
    };
    let run = Arc::new(Mutex::new(QueueRun::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..10 {
        let (mut client, run, stop) = (client.clone(), run.clone(), stop.clone());
        producers.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let item = format!("{p}:{n}");
                let result: redis::RedisResult<i64> = client.lpush(queue, &item).await;
                let mut run = run.lock().unwrap();
                match result {
                    Ok(_) => {
                        run.pushed.insert(item);
                    }
                    Err(e) if resilient_redis::Failure::of(&e).outcome == Outcome::Failed => {
                        run.failed.push(format!("LPUSH: {e}"));
                    }
                    Err(_) => {
                        run.maybe_pushed.insert(item);
                    }
                }
            }
        });
    }
    let mut consumers = tokio::task::JoinSet::new();
    for c in 0..10 {
        let (mut client, run, to) = (client.clone(), run.clone(), processing(c));
        consumers.spawn(async move {
            loop {
                let moved: redis::RedisResult<Option<String>> = redis::cmd("BLMOVE")
                    .arg(queue)
                    .arg(&to)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .arg(0)
                    .query_async(&mut client)
                    .await;
                match moved {
                    Ok(Some(item)) if item == "stop" => return,
                    Ok(_) => {}
                    Err(e) if resilient_redis::Failure::of(&e).outcome == Outcome::Failed => {
                        run.lock().unwrap().failed.push(format!("BLMOVE: {e}"));
                    }
                    Err(_) => run.lock().unwrap().ambiguous_pops += 1,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    kill().await;
    // The lists are read through the client: wherever the master is at the end (a second
    // failover under load may follow the first). The stop markers are not items: they need no
    // replica's confirmation (a durable push waits for the replicas the old master had, and
    // the new master may still be without one of them: once, the markers' push came back
    // ambiguous, as it must when unconfirmed).
    let mut admin = client
        .with_durability(resilient_redis::Durability::Fast)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    while producers.join_next().await.is_some() {}
    // One stop marker per consumer, at the tail the consumers pop from (after every item).
    let markers = vec!["stop"; 10];
    let backlog: u64 = admin.lpush(queue, &markers).await.unwrap();
    // The consumers first work through the backlog (the markers last): wait while it shrinks.
    eprintln!("{topology} queue: {backlog} items (10 markers included) waiting at the end");
    let mut left = backlog;
    while left > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now: u64 = admin.llen(queue).await.unwrap();
        if now >= left {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut admin)
                .await
                .unwrap_or_default();
            panic!(
                "the consumers stopped taking items: {now} left, {} consumers running; clients \
                 of the master: {clients}; {:?}",
                consumers.len(),
                client.stats()
            );
        }
        left = now;
    }
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while consumers.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap_or_default();
        let left: Vec<String> = admin.lrange(queue, 0, -1).await.unwrap_or_default();
        let blocked: Vec<&str> = clients.lines().filter(|l| l.contains("flags=b")).collect();
        panic!(
            "{} consumers stayed blocked past the end of the run; the queue holds {left:?}; \
             blocked on the master: {blocked:#?}",
            consumers.len()
        );
    }
    // Where every item is now.
    let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut lists = vec![queue.to_owned()];
    lists.extend((0..10).map(processing));
    for list in &lists {
        let items: Vec<String> = admin.lrange(list, 0, -1).await.unwrap();
        for item in items.into_iter().filter(|i| i != "stop") {
            *seen.entry(item).or_default() += 1;
        }
    }
    let run = run.lock().unwrap();
    let doubled = seen.values().filter(|n| **n > 1).count();
    let missing = run.pushed.iter().filter(|i| !seen.contains_key(*i)).count() as u64;
    let unknown = seen
        .keys()
        .filter(|i| !run.pushed.contains(*i) && !run.maybe_pushed.contains(*i))
        .count();
    eprintln!(
        "queue through a killed {topology} master: {} pushed ({} ambiguous), {} items in the lists, \
         {missing} acknowledged missing, {} ambiguous pops, {doubled} doubled, {unknown} never \
         pushed, {} failed",
        run.pushed.len(),
        run.maybe_pushed.len(),
        seen.len(),
        run.ambiguous_pops,
        run.failed.len()
    );
    assert_eq!(doubled, 0, "items in two places");
    assert_eq!(unknown, 0, "items nobody pushed");
    assert!(
        missing <= run.ambiguous_pops,
        "{missing} acknowledged items gone, only {} pops were ambiguous",
        run.ambiguous_pops
    );
    assert!(run.failed.is_empty(), "{:?}", run.failed);
}
