//! Optimistic transactions (`Client::transaction`: WATCH, reads, MULTI .. EXEC) against real
//! servers, through conflicts and killed connections.
//!
//! Run with `--nocapture` for the figures.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::AsyncCommands;
use redis_lab::{ClusterConfig as LabConfig, RedisCluster, RedisServer};
use resilient_redis::{Client, ClientConfig, Durability, ErrorKind, Outcome};
use tokio::{task::JoinSet, time::Instant};

/// One read-increment-write of `key` through the API.
async fn increment(client: &Client, key: &'static str) -> Result<(), resilient_redis::Error> {
    client
        .transaction(&[key], move |mut tx| async move {
            let n: Option<i64> = tx.get(key).await?;
            Ok(redis::pipe().set(key, n.unwrap_or(0) + 1).ignore().clone())
        })
        .await
}

/// MULTI refused while the writes after it run on their own (`BUSY` from a script that ends a
/// moment later, `THROTTLED` from a proxy, here an ACL): the transaction was applied in part,
/// so it is reported so (`Outcome::Applied`), never as a failure the caller would run again
/// (chaos seed 49572930933259 applied one increment twice that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_multi_whose_writes_ran_is_not_a_clean_failure() {
    let server = RedisServer::start().await.unwrap();
    let mut admin = server.admin().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let () = admin.set("tx:n", 1).await.unwrap();
    common::deny(&mut admin, "multi").await;
    let error = increment(&client, "tx:n")
        .await
        .expect_err("MULTI is refused");
    assert_eq!(error.outcome(), Outcome::Applied, "{error}");
    let n: i64 = admin.get("tx:n").await.unwrap();
    assert_eq!(n, 2, "the write ran once, outside the transaction");
    // Refused with every write refused too: nothing ran, a plain failure.
    common::deny(&mut admin, "set").await;
    let error = increment(&client, "tx:n")
        .await
        .expect_err("MULTI and SET are refused");
    assert_eq!(error.outcome(), Outcome::Failed, "{error}");
    let n: i64 = admin.get("tx:n").await.unwrap();
    assert_eq!(n, 2);
}

/// Tasks incrementing one counter through the API until stopped, and what they saw.
struct Incrementers {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
    ok: Arc<AtomicU64>,
    ambiguous: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Incrementers {
    /// `tasks` tasks incrementing `key` through `client`, each calling again at once.
    fn start(client: &Client, tasks: usize, key: &'static str) -> Incrementers {
        let mut load = Incrementers {
            stop: Arc::new(AtomicBool::new(false)),
            tasks: JoinSet::new(),
            ok: Arc::new(AtomicU64::new(0)),
            ambiguous: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
        };
        for _ in 0..tasks {
            let (client, stop, ok, ambiguous, failed) = (
                client.clone(),
                load.stop.clone(),
                load.ok.clone(),
                load.ambiguous.clone(),
                load.failed.clone(),
            );
            load.tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match increment(&client, key).await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) if e.outcome() == Outcome::Ambiguous => {
                            ambiguous.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
        load
    }

    /// Successful increments so far.
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the tasks and returns (ok, ambiguous, failed); no hang: every task ends within
    /// its deadline once stopped.
    async fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let ended = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(t) = self.tasks.join_next().await {
                t.unwrap();
            }
        })
        .await;
        assert!(ended.is_ok(), "a transaction hung");
        (
            self.ok.load(Ordering::Relaxed),
            self.ambiguous.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Replies come back as from `EXEC`; reads only inside the closure; nothing to write is fine;
/// concurrent increments conflict and are run again, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_reads_then_writes_atomically_and_reruns_on_conflict() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let (set, value): (String, i64) = client
        .transaction(&["a"], |mut tx| async move {
            let a: Option<i64> = tx.get("a").await?;
            Ok(redis::pipe().set("a", a.unwrap_or(41) + 1).get("a").clone())
        })
        .await
        .unwrap();
    assert_eq!((set.as_str(), value), ("OK", 42));
    // A write inside the closure is refused, before anything is queued.
    let err = client
        .transaction::<_, (), _, _>(&["a"], |mut tx| async move {
            let () = tx.set("a", 0).await?;
            Ok(redis::pipe())
        })
        .await
        .unwrap_err();
    assert_eq!(err.outcome(), Outcome::Failed, "{err}");
    assert!(err.to_string().contains("only reads"), "{err}");
    let mut admin = server.admin().await.unwrap();
    let a: i64 = admin.get("a").await.unwrap();
    assert_eq!(a, 42);
    // Nothing to write.
    let (): () = client
        .transaction(&["a"], |_tx| async move { Ok(redis::pipe()) })
        .await
        .unwrap();
    // No key to watch: refused.
    let none: [&str; 0] = [];
    let err = client
        .transaction::<_, (), _, _>(&none, |_tx| async move { Ok(redis::pipe()) })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);

    // 20 tasks x 50 increments of one counter: every one applied once.
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                increment(&client, "c").await.unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let c: i64 = admin.get("c").await.unwrap();
    assert_eq!(c, 1000, "{:?}", client.stats());
    assert!(client.stats().conflicts > 0, "{:?}", client.stats());
}

/// The target: 50 tasks incrementing one counter through the API for 5 s while
/// `CLIENT KILL TYPE normal` runs every 200 ms: ok <= final <= ok + ambiguous (no lost update),
/// conflicts reported, no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_under_client_kill_lose_no_update() {
    let server = RedisServer::start().await.unwrap();
    let config = ClientConfig {
        deadline: Duration::from_secs(5),
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    let load = Incrementers::start(&client, 50, "counter");
    let mut admin = server.admin().await.unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut kills = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await;
        kills += 1;
    }
    let (ok, ambiguous, failed) = load.finish().await;
    let final_value: i64 = admin.get("counter").await.unwrap();
    let stats = client.stats();
    eprintln!(
        "transactions under {kills} CLIENT KILLs: ok {ok}, ambiguous {ambiguous}, failed {failed}, \
         final {final_value}, conflicts {}, retries {}",
        stats.conflicts, stats.retries
    );
    assert!(ok > 100, "too few increments: {ok}");
    common::assert_no_lost_update(ok, ambiguous, final_value);
    assert!(stats.conflicts > 0, "{stats:?}");
}

/// A lab cluster of 3 masters without replicas.
async fn lab_cluster() -> RedisCluster {
    RedisCluster::start(LabConfig {
        replicas_per_master: 0,
        ..LabConfig::default()
    })
    .await
    .expect("start a lab cluster (redis-server 7 must be installed)")
}

async fn cluster_client(cluster: &RedisCluster, deadline: Duration) -> Client {
    Client::with_config(ClientConfig {
        deadline,
        ..ClientConfig::cluster(&cluster.urls()).unwrap()
    })
    .await
    .unwrap()
}

/// The lab node listening at `addr`.
fn node_at(cluster: &RedisCluster, addr: std::net::SocketAddr) -> &RedisServer {
    cluster.nodes().iter().find(|n| n.addr() == addr).unwrap()
}

async fn node_id(node: &RedisServer) -> String {
    let mut conn = node.admin().await.unwrap();
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// In a cluster a transaction runs on its slot's master: keys of several slots, or a write
/// outside the watched slot, are refused before anything is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_transaction_stays_in_one_slot() {
    let cluster = lab_cluster().await;
    let client = cluster_client(&cluster, Duration::from_secs(5)).await;
    let (value,): (i64,) = client
        .transaction(&["{acct}:a", "{acct}:b"], |mut tx| async move {
            let a: Option<i64> = tx.get("{acct}:a").await?;
            let b: Option<i64> = tx.get("{acct}:b").await?;
            let sum = a.unwrap_or(1) + b.unwrap_or(2);
            Ok(redis::pipe()
                .set("{acct}:a", sum)
                .ignore()
                .get("{acct}:a")
                .clone())
        })
        .await
        .unwrap();
    assert_eq!(value, 3);
    // Watched keys of two slots.
    let err = client
        .transaction::<_, (), _, _>(&["a", "b"], |_tx| async move { Ok(redis::pipe()) })
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.outcome()),
        (ErrorKind::Refused, Outcome::Failed),
        "{err}"
    );
    assert!(err.to_string().contains("hash tag"), "{err}");
    // A write outside the watched slot: refused, nothing applied (the write in the slot
    // neither).
    let err = client
        .transaction::<_, (), _, _>(&["{acct}:a"], |_tx| async move {
            Ok(redis::pipe()
                .set("{acct}:a", 100)
                .ignore()
                .set("elsewhere", 1)
                .ignore()
                .clone())
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.outcome()),
        (ErrorKind::Refused, Outcome::Failed),
        "{err}"
    );
    let mut plain = client.clone();
    let a: i64 = plain.get("{acct}:a").await.unwrap();
    let elsewhere: Option<i64> = plain.get("elsewhere").await.unwrap();
    assert_eq!((a, elsewhere), (3, None));
}

/// A slot in the middle of a migration: once the counter has moved, its old master answers
/// `ASK` and the transaction runs on the new one, each command after `ASKING`; once the
/// migration ends, `MOVED` sends it there for good. No increment lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_transaction_follows_a_slot_being_migrated() {
    let cluster = lab_cluster().await;
    let client = cluster_client(&cluster, Duration::from_secs(5)).await;
    let key = "{migrating}:counter";
    let slot = common::key_slot(key);
    for _ in 0..3 {
        increment(&client, key).await.unwrap();
    }
    let from = cluster.master_for_slot(slot).await.unwrap();
    let to = cluster
        .nodes()
        .iter()
        .map(|n| n.addr())
        .find(|a| *a != from)
        .unwrap();
    let (source, target) = (node_at(&cluster, from), node_at(&cluster, to));
    let (source_id, target_id) = (node_id(source).await, node_id(target).await);
    let (mut src, mut dst) = (source.admin().await.unwrap(), target.admin().await.unwrap());
    let setslot = |state: &str, id: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .clone()
    };
    let () = setslot("IMPORTING", &source_id)
        .query_async(&mut dst)
        .await
        .unwrap();
    let () = setslot("MIGRATING", &target_id)
        .query_async(&mut src)
        .await
        .unwrap();
    let () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to.port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(key)
        .query_async(&mut src)
        .await
        .unwrap();
    let redirects = client.stats().redirects;
    for _ in 0..5 {
        increment(&client, key).await.unwrap();
    }
    assert!(
        client.stats().redirects >= redirects + 5,
        "each run was sent to the old master first, then asked the new one: {:?}",
        client.stats()
    );
    let (_, on_target): ((), i64) = redis::pipe()
        .cmd("ASKING")
        .get(key)
        .query_async(&mut dst)
        .await
        .unwrap();
    assert_eq!(on_target, 8, "the increments ran on the importing node");
    for node in cluster.nodes() {
        let mut conn = node.admin().await.unwrap();
        let () = setslot("NODE", &target_id)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        increment(&client, key).await.unwrap();
    }
    let final_value: i64 = dst.get(key).await.unwrap();
    assert_eq!(final_value, 10);
}

/// Moves `slot` to `to` while `CLIENT KILL` runs: the kills also cut the lab's own connections
/// (and `MIGRATE`'s, between the nodes), so a step that failed is taken again (each is safe to
/// repeat: the migration goes on from where the nodes are).
async fn migrate_through_kills(cluster: &RedisCluster, slot: u16, to: std::net::SocketAddr) {
    let mut tries = 0;
    while let Err(e) = cluster.migrate_slot(slot, to).await {
        tries += 1;
        assert!(tries < 20, "the migration keeps failing: {e}");
        eprintln!("migration step cut by a CLIENT KILL ({e}): again");
    }
}

/// The cluster target: 50 tasks incrementing one counter through the API for 5 s,
/// `CLIENT KILL TYPE normal` on every master every 200 ms, and the counter's slot migrated to
/// another master in the middle (and back): ok <= final <= ok + ambiguous, conflicts reported,
/// no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_increments_under_client_kill_and_migration_lose_no_update() {
    let cluster = lab_cluster().await;
    let client = cluster_client(&cluster, Duration::from_secs(5)).await;
    let key = "{hot}:counter";
    let slot = common::key_slot(key);
    let load = Incrementers::start(&client, 50, key);
    // CLIENT KILL on every master every 200 ms, beside the migrations.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let mut admins = Vec::new();
        for node in cluster.nodes() {
            admins.push(node.admin().await.unwrap());
        }
        tokio::spawn(async move {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                for admin in &mut admins {
                    let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("normal")
                        .arg("SKIPME")
                        .arg("yes")
                        .query_async(admin)
                        .await;
                }
                kills += 1;
            }
            kills
        })
    };
    let started = Instant::now();
    let home = cluster.master_for_slot(slot).await.unwrap();
    let away = cluster
        .nodes()
        .iter()
        .map(|n| n.addr())
        .find(|a| *a != home)
        .unwrap();
    tokio::time::sleep_until(started + Duration::from_millis(1500)).await;
    migrate_through_kills(&cluster, slot, away).await;
    tokio::time::sleep_until(started + Duration::from_millis(3000)).await;
    migrate_through_kills(&cluster, slot, home).await;
    tokio::time::sleep_until(started + Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, ambiguous, failed) = load.finish().await;
    let kills = killer.await.unwrap();
    let mut owner = node_at(&cluster, home).admin().await.unwrap();
    let final_value: i64 = owner.get(key).await.unwrap();
    let stats = client.stats();
    eprintln!(
        "cluster transactions under {kills} rounds of CLIENT KILL and 2 migrations: ok {ok}, \
         ambiguous {ambiguous}, failed {failed}, final {final_value}, conflicts {}, retries {}, \
         redirects {}",
        stats.conflicts, stats.retries, stats.redirects
    );
    assert!(ok > 100, "too few increments: {ok}");
    common::assert_no_lost_update(ok, ambiguous, final_value);
    assert!(stats.conflicts > 0, "{stats:?}");
    assert!(
        stats.redirects > 0,
        "the migrations were not seen: {stats:?}"
    );
}

/// Through a `SENTINEL FAILOVER`, with durable acknowledgements (so the failover cannot take
/// back what was acknowledged): a run the demoted master refuses (`READONLY` on `WATCH`, or
/// `EXEC` aborted because a queued write got it) runs again on the new master. ok <= final <=
/// ok + ambiguous, and no transaction fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_a_sentinel_failover() {
    let topology = common::sentinel_lab().await;
    let url = common::sentinel_url(&topology);
    let client = Client::with_config(ClientConfig {
        durability: Durability::replicated(),
        deadline: Duration::from_secs(10),
        ..ClientConfig::from_url(&url).unwrap()
    })
    .await
    .unwrap();
    let load = Incrementers::start(&client, 20, "tx:failover");
    common::wait_until("the load to get going", Duration::from_secs(10), || async {
        load.ok() >= 200
    })
    .await;
    let old = topology.master_addr().await.unwrap();
    let promoted = topology.wait_for_new_master(old, Duration::from_secs(30));
    common::sentinel_failover(&topology).await;
    let new = promoted.await.unwrap();
    let at_failover = load.ok();
    common::wait_until(
        "transactions on the new master",
        Duration::from_secs(20),
        || async { load.ok() >= at_failover + 200 },
    )
    .await;
    let old_server = topology.servers().iter().find(|s| s.addr() == old).unwrap();
    common::wait_demoted(old_server).await;
    let (ok, ambiguous, failed) = load.finish().await;
    let master = topology.servers().iter().find(|s| s.addr() == new).unwrap();
    let mut admin = master.admin().await.unwrap();
    let final_value: i64 = admin.get("tx:failover").await.unwrap();
    let stats = client.stats();
    eprintln!(
        "transactions through SENTINEL FAILOVER (durable): ok {ok}, ambiguous {ambiguous}, \
         failed {failed}, final {final_value}, conflicts {}, retries {}, unconfirmed {}",
        stats.conflicts, stats.retries, stats.unconfirmed
    );
    common::assert_no_lost_update(ok, ambiguous, final_value);
    assert_eq!(failed, 0, "transactions failed through the failover");
}

/// The same for a caller's atomic pipeline (`redis::pipe().atomic()`) sent through the client.
/// redis-rs alone panics in its connection task on it (debug builds; the connection dies under
/// every caller) or reports a transaction error (release builds): the client reads every reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_multi_in_an_atomic_pipeline_is_not_a_clean_failure() {
    let server = RedisServer::start().await.unwrap();
    let mut admin = server.admin().await.unwrap();
    let mut client = Client::connect(&server.url()).await.unwrap();
    let () = admin.set("p:n", 1).await.unwrap();
    // A healthy atomic pipeline answers as redis-rs answers it.
    let (n, m): (i64, i64) = redis::pipe()
        .atomic()
        .incr("p:n", 1)
        .incr("p:m", 5)
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((n, m), (2, 5));
    // A command refused when queued: EXECABORT, the same error as redis-rs's.
    let ours = redis::pipe()
        .atomic()
        .incr("p:n", 1)
        .cmd("NO-SUCH-COMMAND")
        .query_async::<(i64,)>(&mut client)
        .await
        .unwrap_err();
    let theirs = redis::pipe()
        .atomic()
        .incr("p:n", 1)
        .cmd("NO-SUCH-COMMAND")
        .query_async::<(i64,)>(&mut admin)
        .await
        .unwrap_err();
    assert_eq!(ours.kind(), theirs.kind(), "{ours} / {theirs}");
    assert_eq!(Outcome::of(&ours), Outcome::Failed, "{ours}");

    common::deny(&mut admin, "multi").await;
    let error = redis::pipe()
        .atomic()
        .incr("p:n", 1)
        .query_async::<(i64,)>(&mut client)
        .await
        .expect_err("MULTI is refused");
    common::assert_applied(&error);
    let n: i64 = admin.get("p:n").await.unwrap();
    assert_eq!(n, 3, "the write ran once, outside the transaction");
    // Refused with every command refused too: nothing ran, a plain failure.
    common::deny(&mut admin, "set").await;
    let error = redis::pipe()
        .atomic()
        .set("p:n", 9)
        .query_async::<((),)>(&mut client)
        .await
        .expect_err("MULTI and SET are refused");
    assert_eq!(Outcome::of(&error), Outcome::Failed, "{error}");
    let n: i64 = admin.get("p:n").await.unwrap();
    assert_eq!(n, 3);
    // The connection still serves everyone.
    let _: i64 = client.incr("p:after", 1).await.unwrap();
}
