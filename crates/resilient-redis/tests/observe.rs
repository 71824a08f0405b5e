//! Spans and metrics (#15) against a real server: what a `CLIENT KILL` under load shows an
//! operator, and that no key or value reaches a span or a metric label unless asked for.
//!
//! Each test runs on a current-thread runtime with its own `tracing` subscriber and `metrics`
//! recorder set for the thread: the client's tasks run there too, and tests do not see each
//! other's series.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use redis::AsyncCommands;
use redis_lab::RedisServer;
use resilient_redis::{Client, ClientConfig, ReadFrom, observe};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{
    Layer,
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
};

type Fields = BTreeMap<String, String>;

/// Keeps the fields of every closed `redis` span of the client, and of every event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    open: HashMap<u64, Fields>,
    spans: Vec<Fields>,
    events: Vec<Fields>,
}

struct Fill<'a>(&'a mut Fields);

impl Visit for Fill<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let meta = attrs.metadata();
        if meta.target() != "resilient_redis" || meta.name() != "redis" {
            return;
        }
        let mut fields = Fields::new();
        attrs.record(&mut Fill(&mut fields));
        self.0.lock().unwrap().open.insert(id.into_u64(), fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(fields) = self.0.lock().unwrap().open.get_mut(&id.into_u64()) {
            values.record(&mut Fill(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Fill(&mut fields));
        self.0.lock().unwrap().events.push(fields);
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut captured = self.0.lock().unwrap();
        if let Some(fields) = captured.open.remove(&id.into_u64()) {
            captured.spans.push(fields);
        }
    }
}

impl Capture {
    fn spans(&self) -> Vec<Fields> {
        self.0.lock().unwrap().spans.clone()
    }
}

/// A `metrics` recorder that keeps every series' current value: counters and gauges as last
/// set, histograms' samples. (metrics-util's `DebuggingRecorder` resets counters and gauges at
/// each snapshot: a gauge read as 0 there may only be unset since the previous look.)
struct Kept(Registry<Key, AtomicStorage>);

impl Recorder for Kept {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// Every series the recorder holds, by name and labels, as of the last [`Series::take`]:
/// counters' and gauges' values, histograms' sample counts.
#[derive(Default)]
struct Series {
    values: HashMap<(String, Vec<(String, String)>), f64>,
    samples: HashMap<(String, Vec<(String, String)>), u64>,
}

impl Series {
    fn take(&mut self, kept: &Kept) {
        kept.0.visit_counters(|key, c| {
            self.values
                .insert(id_of(key), c.load(Ordering::Relaxed) as f64);
        });
        kept.0.visit_gauges(|key, g| {
            self.values
                .insert(id_of(key), f64::from_bits(g.load(Ordering::Relaxed)));
        });
        kept.0.visit_histograms(|key, h| {
            self.samples.insert(id_of(key), h.data().len() as u64);
        });
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.values.iter().find_map(|((n, l), v)| {
            (n == name
                && labels
                    .iter()
                    .all(|(k, w)| l.iter().any(|(a, b)| a == k && b == w)))
            .then_some(*v)
        })
    }

    /// The sum of a counter over its label sets, with each set.
    fn counter_by(&self, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.values
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }

    fn samples_of(&self, name: &str) -> u64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, c)| c)
            .sum()
    }

    fn all_labels(&self) -> Vec<String> {
        self.values
            .keys()
            .chain(self.samples.keys())
            .flat_map(|(_, l)| l.iter().map(|(k, v)| format!("{k}={v}")))
            .collect()
    }
}

fn id_of(key: &Key) -> (String, Vec<(String, String)>) {
    (
        key.name().to_owned(),
        key.labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect(),
    )
}

/// A subscriber that captures spans and a recorder of metrics, for this thread (the test's
/// current-thread runtime: the client's tasks run on it too) until the guards drop.
fn observe_this_thread() -> (
    Capture,
    &'static Kept,
    (
        tracing::subscriber::DefaultGuard,
        metrics::LocalRecorderGuard<'static>,
    ),
) {
    // Leaked: the guard borrows it for the rest of the test.
    let recorder: &'static Kept = Box::leak(Box::new(Kept(Registry::atomic())));
    let capture = Capture::default();
    let tracing =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let metrics = metrics::set_default_local_recorder(recorder);
    (capture, recorder, (tracing, metrics))
}

/// 20 tasks of SET then GET on their own keys until `stop`.
fn load(client: &Client, stop: &Arc<AtomicBool>) -> tokio::task::JoinSet<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..20 {
        let (mut client, stop) = (client.clone(), stop.clone());
        tasks.spawn(async move {
            let mut errors = 0;
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("load:{t}:{}", i % 16);
                let set: redis::RedisResult<()> = client.set(&key, i).await;
                let get: redis::RedisResult<Option<u64>> = client.get(&key).await;
                errors += u64::from(set.is_err()) + u64::from(get.is_err());
            }
            errors
        });
    }
    tasks
}

#[tokio::test]
async fn a_client_kill_under_load_is_counted_by_reason_and_traced_per_call() {
    let (capture, recorded, _guards) = observe_this_thread();

    let server = RedisServer::start().await.expect("start redis-server");
    let client = Client::connect(&server.url()).await.expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = load(&client, &stop);

    // Kill the client's connection under load until an in-flight call had to be retried (the
    // first kill almost always does: every task has a request in flight whenever this one runs).
    let mut kills = 0;
    while client.stats().retries == 0 && kills < 5 {
        let calls = client.stats().calls;
        common::wait_until("calls before the kill", Duration::from_secs(10), || {
            let c = client.clone();
            async move { c.stats().calls >= calls + 200 }
        })
        .await;
        let killed = server.client_kill_normal().await.expect("client kill");
        assert!(killed >= 1, "killed {killed} connections");
        kills += 1;
        common::wait_until("the reconnection", Duration::from_secs(10), || {
            let c = client.clone();
            async move { c.stats().reconnects >= kills }
        })
        .await;
    }
    let calls = client.stats().calls;
    common::wait_until("calls after the kill", Duration::from_secs(10), || {
        let c = client.clone();
        async move { c.stats().calls >= calls + 200 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    while let Some(e) = tasks.join_next().await {
        errors += e.expect("load task");
    }
    assert_eq!(errors, 0, "the load saw errors");

    // The sampled gauges: one live connection, no call waiting, the breaker closed.
    let mut series = Series::default();
    common::wait_until("the sampled gauges", Duration::from_secs(5), || {
        series.take(recorded);
        let used = series.value(
            observe::CONNECTION_COUNT,
            &[("db.client.connection.state", "used")],
        );
        std::future::ready(used == Some(1.0))
    })
    .await;
    let stats = client.stats();
    eprintln!("kills {kills}, {stats:?}");
    assert!(stats.retries > 0, "no call was retried after {kills} kills");
    assert_eq!(
        series.value(observe::PENDING_REQUESTS, &[]),
        Some(0.0),
        "calls still waiting"
    );
    assert_eq!(
        series.value(observe::BREAKER_STATE, &[]),
        Some(0.0),
        "breaker not closed"
    );
    assert!(series.value(observe::BUDGET_TOKENS, &[]).unwrap_or(0.0) > 0.0);
    // The server refused nothing: the throttle rejects nothing, in the gauge as in the client.
    assert_eq!(series.value(observe::THROTTLE_PROBABILITY, &[]), Some(0.0));
    assert_eq!(client.throttle_probability(), Some(0.0));

    // One reconnection per kill, counted by the metric as by the stats.
    assert_eq!(stats.reconnects, kills);
    assert_eq!(
        series.value(observe::RECONNECTIONS, &[]),
        Some(kills as f64)
    );
    assert!(series.samples_of(observe::CONNECTION_CREATE_TIME) >= kills);

    // Retries by reason: a lost connection (or waiting for the new one), nothing else; counted
    // once, in the retry policy's series.
    let retries = series.counter_by(observe::RETRIES);
    let total: f64 = retries.iter().map(|(_, v)| v).sum();
    assert!(series.counter_by("resilient_redis.retries").is_empty());
    for (labels, _) in &retries {
        let policy = &labels.iter().find(|(k, _)| k == "policy").unwrap().1;
        assert_eq!(policy, "resilient_redis");
        let reason = &labels.iter().find(|(k, _)| k == "reason").unwrap().1;
        assert!(
            ["connection_lost", "unavailable"].contains(&reason.as_str()),
            "unexpected retry reason {reason}"
        );
    }
    assert!(total >= stats.retries as f64, "{retries:?} vs {stats:?}");

    // One span per call, whose attempts, outcomes and retry reasons add up to the counts.
    let spans = capture.spans();
    assert_eq!(spans.len() as u64, stats.calls, "one span per call");
    let attempts: u64 = spans
        .iter()
        .map(|s| s["resilient_redis.attempts"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(attempts, stats.attempts, "attempts in spans vs stats");
    let reasons: usize = spans
        .iter()
        .filter_map(|s| s.get("resilient_redis.retry_reasons"))
        .map(|r| r.split(',').count())
        .sum();
    assert_eq!(
        reasons as f64, total,
        "retry reasons in spans vs the metric"
    );
    let not_ok = spans
        .iter()
        .filter(|s| s["resilient_redis.outcome"] != "ok")
        .count() as u64;
    assert_eq!(not_ok, stats.failed + stats.ambiguous);
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    for s in &spans {
        assert_eq!(s["db.system.name"], "redis");
        assert!(
            ["SET", "GET"].contains(&s["db.operation.name"].as_str()),
            "{s:?}"
        );
        assert_eq!(s["db.namespace"], "0");
        assert_eq!(s["server.address"], "127.0.0.1", "{s:?}");
        assert_eq!(s["server.port"], port, "{s:?}");
        assert_eq!(s["resilient_redis.route"], "master");
    }
    // The duration histogram has every call, by operation.
    assert_eq!(
        series.samples_of(observe::OPERATION_DURATION),
        stats.calls,
        "one duration sample per call"
    );
}

#[tokio::test]
async fn no_key_or_value_in_spans_or_labels_unless_keys_are_asked_for() {
    let (capture, recorded, _guards) = observe_this_thread();
    let server = RedisServer::start().await.expect("start redis-server");

    const KEY: &str = "sekrit-key-7f3a";
    const VALUE: &str = "sekrit-value-9b2c";
    let calls = |mut client: Client| async move {
        let () = client.set(KEY, VALUE).await.unwrap();
        let got: String = client.get(KEY).await.unwrap();
        assert_eq!(got, VALUE);
        // An error reply, a pipeline, a transaction and a non-idempotent write.
        let wrong: redis::RedisResult<i64> = client.hset(KEY, VALUE, VALUE).await;
        assert!(wrong.is_err());
        let _: (String,) = redis::pipe()
            .get(KEY)
            .query_async(&mut client)
            .await
            .unwrap();
        let _: (i64,) = redis::pipe()
            .atomic()
            .incr(format!("{KEY}:n"), 1)
            .query_async(&mut client)
            .await
            .unwrap();
        let _: i64 = client.append(format!("{KEY}:s"), VALUE).await.unwrap();
    };

    let client = Client::connect(&server.url()).await.unwrap();
    calls(client.clone()).await;
    let spans = capture.spans();
    assert_eq!(spans.len(), 6);
    let ops: Vec<&str> = spans
        .iter()
        .map(|s| s["db.operation.name"].as_str())
        .collect();
    assert_eq!(ops, ["SET", "GET", "HSET", "PIPELINE", "MULTI", "APPEND"]);
    assert_eq!(spans[2]["resilient_redis.outcome"], "failed");
    assert_eq!(spans[2]["db.response.status_code"], "WRONGTYPE");
    assert_eq!(spans[2]["otel.status_code"], "ERROR");
    let mut series = Series::default();
    series.take(recorded);
    let seen = |capture: &Capture, series: &Series| {
        let c = capture.0.lock().unwrap();
        c.spans
            .iter()
            .chain(&c.events)
            .flat_map(|f| f.iter().map(|(k, v)| format!("{k}={v}")))
            .chain(series.all_labels())
            .collect::<Vec<_>>()
    };
    for text in seen(&capture, &series) {
        assert!(
            !text.contains("sekrit"),
            "a key or value was recorded: {text}"
        );
    }

    // Asked for: keys in `db.query.text`, values never.
    let mut config = ClientConfig::from_url(&server.url()).unwrap();
    config.trace_keys = true;
    calls(Client::with_config(config).await.unwrap()).await;
    let spans = capture.spans();
    assert_eq!(spans[6]["db.query.text"], format!("SET {KEY} ?"));
    assert_eq!(spans[8]["db.query.text"], format!("HSET {KEY} ? ?"));
    series.take(recorded);
    for text in seen(&capture, &series) {
        assert!(!text.contains(VALUE), "a value was recorded: {text}");
    }
}

/// The fields of the spans closed while `f` ran.
async fn spans_of<F: Future<Output = ()>>(capture: &Capture, f: F) -> Vec<Fields> {
    let before = capture.spans().len();
    f.await;
    capture.spans()[before..].to_vec()
}

#[tokio::test]
async fn spans_name_the_node_that_answered_and_the_route_on_sentinel_and_cluster() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let (capture, _, _guards) = observe_this_thread();

    // Sentinel, reads from replicas: a write names the master, a read the replica it went to.
    let topology = common::sentinel_lab().await;
    let mut config = ClientConfig::from_url(&common::sentinel_url(&topology)).unwrap();
    config.read_from = ReadFrom::Replica;
    let mut client = Client::with_config(config).await.unwrap();
    let master = topology.master_addr().await.unwrap();
    let spans = spans_of(&capture, async {
        let () = client.set("k", "v").await.unwrap();
        let _: Option<String> = client.get("k").await.unwrap();
    })
    .await;
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["resilient_redis.route"], "master");
    assert_eq!(spans[0]["server.port"], master.port().to_string());
    assert_eq!(spans[1]["resilient_redis.route"], "replica");
    let replica_ports: Vec<String> = topology
        .servers()
        .iter()
        .filter(|s| s.addr() != master)
        .map(|s| s.addr().port().to_string())
        .collect();
    assert!(
        replica_ports.contains(&spans[1]["server.port"]),
        "{spans:?} vs replicas {replica_ports:?}"
    );
    drop((client, topology));

    // Cluster: each command names the master of its key's slot.
    let cluster = redis_lab::RedisCluster::start(redis_lab::ClusterConfig::default())
        .await
        .unwrap();
    let mut client = Client::with_config(ClientConfig::cluster(&cluster.urls()).unwrap())
        .await
        .unwrap();
    for key in ["a", "b", "c", "d"] {
        let spans = spans_of(&capture, async {
            let () = client.set(key, "v").await.unwrap();
        })
        .await;
        let owner = cluster
            .master_for_slot(common::key_slot(key))
            .await
            .unwrap();
        assert_eq!(spans[0]["server.port"], owner.port().to_string(), "{key}");
        assert_eq!(spans[0]["resilient_redis.route"], "master");
    }
    // A slot moved behind the client's back: the call follows MOVED, and says so.
    let slot = common::key_slot("a");
    let owner = cluster.master_for_slot(slot).await.unwrap();
    let to = cluster.nodes()[..3]
        .iter()
        .map(|n| n.addr())
        .find(|a| *a != owner)
        .unwrap();
    cluster.migrate_slot(slot, to).await.unwrap();
    let spans = spans_of(&capture, async {
        let () = client.set("a", "w").await.unwrap();
    })
    .await;
    assert_eq!(spans[0]["resilient_redis.route"], "redirected", "{spans:?}");
    assert_eq!(spans[0]["server.port"], to.port().to_string());
    assert_eq!(
        spans[0]["resilient_redis.attempts"], "1",
        "a redirect is not a retry"
    );
}

/// A cluster node that leaves the client's routing table (here a graceful `CLUSTER FAILOVER`
/// demotes it) has its gauges set to 0, not left at their last value (its breaker open, which
/// would read as an open breaker forever), and pushed no more, while the nodes that remain are
/// still sampled.
#[tokio::test]
async fn a_node_that_leaves_the_slot_map_has_its_gauges_zeroed() {
    let _serial = common::ONE_AT_A_TIME.lock().await;
    let (_capture, recorded, _guards) = observe_this_thread();
    let cluster = redis_lab::RedisCluster::start(redis_lab::ClusterConfig::default())
        .await
        .unwrap();
    // A breaker that opens on one server fault and stays open; a slot map refreshed often
    // (calls refused by the open breaker do not reach the node to learn of the failover).
    let mut config = ClientConfig::cluster(&cluster.urls()).unwrap();
    config.breaker = Some(resilient_redis::resilience::BreakerConfig {
        consecutive_failures: Some(1),
        failure_rate: None,
        open_duration: Duration::from_secs(600),
        ..config.breaker.clone().unwrap()
    });
    if let Some(c) = config.cluster.as_mut() {
        c.refresh_interval = Some(Duration::from_millis(200));
    }
    let mut client = Client::with_config(config).await.unwrap();
    let used = |series: &Series, node: &str| {
        series.value(
            observe::CONNECTION_COUNT,
            &[
                ("db.client.connection.pool.name", node),
                ("db.client.connection.state", "used"),
            ],
        )
    };
    let mut series = Series::default();

    // The master of "a" serves a call, then answers one with a server fault (a script's
    // MASTERDOWN reply): its breaker opens, and its gauge says so.
    let slot = common::key_slot("a");
    let old = cluster.master_for_slot(slot).await.unwrap().to_string();
    let () = client.set("a", "v").await.unwrap();
    let fault: redis::RedisResult<()> = redis::cmd("EVAL")
        .arg("return redis.error_reply('MASTERDOWN injected by the test')")
        .arg(1)
        .arg("a")
        .query_async(&mut client)
        .await;
    assert!(fault.is_err());
    assert!(!client.node_breaker(&old).unwrap().is_closed());
    common::wait_until("the master's gauges", Duration::from_secs(10), || {
        series.take(recorded);
        let breaker = series.value(observe::BREAKER_STATE, &[("node", &old)]);
        std::future::ready(breaker == Some(1.0) && used(&series, &old).is_some())
    })
    .await;

    // A graceful failover demotes it, and a slot map refresh drops the node.
    let replica = common::replica_of(&cluster, old.parse().unwrap())
        .await
        .expect("a replica of the master");
    let promoted = replica.addr().to_string();
    let mut admin = replica.admin().await.unwrap();
    let () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut admin)
        .await
        .unwrap();
    common::wait_until(
        "the client to drop the demoted master",
        Duration::from_secs(30),
        || std::future::ready(client.node_breaker(&old).is_none()),
    )
    .await;

    // Its gauges were zeroed as it went.
    series.take(recorded);
    let of_old = |series: &Series| -> Vec<(String, f64)> {
        let mut of_old: Vec<_> = series
            .values
            .iter()
            .filter(|((_, labels), _)| labels.iter().any(|(_, v)| *v == old))
            .map(|((name, labels), v)| (format!("{name}{labels:?}"), *v))
            .collect();
        of_old.sort_by(|a, b| a.0.cmp(&b.0));
        of_old
    };
    let zeroed = of_old(&series);
    assert_eq!(zeroed.len(), 5, "{zeroed:?}");
    assert!(zeroed.iter().all(|(_, v)| *v == 0.0), "{zeroed:?}");

    // A node the client had no pool for gets one and is sampled: the sampler ran after the
    // demoted node left, and pushed nothing for it.
    let mut third = None;
    for key in (0..64).map(|i| format!("k{i}")) {
        let owner = cluster.master_for_slot(common::key_slot(&key)).await;
        let owner = owner.unwrap().to_string();
        if owner != old && owner != promoted {
            third = Some((key, owner));
            break;
        }
    }
    let (key, third) = third.expect("a key on the third master");
    assert!(
        client.node_breaker(&third).is_none(),
        "no pool yet for {third}"
    );
    let () = client.set(&key, "v").await.unwrap();
    common::wait_until("the third master's gauges", Duration::from_secs(10), || {
        series.take(recorded);
        std::future::ready(used(&series, &third).is_some_and(|n| n >= 1.0))
    })
    .await;
    assert_eq!(of_old(&series), zeroed);
}
