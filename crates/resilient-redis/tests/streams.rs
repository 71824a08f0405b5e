//! Stream consumer groups through `CLIENT KILL` every 200 ms: a producer `XADD`s numbered
//! entries while 4 consumers of one group read (`XREADGROUP`, blocking), process and
//! acknowledge them through [`StreamConsumer`]. A killed read whose reply is lost has moved
//! entries into the consumer's pending list: the consumer reads them back, so every entry is
//! processed and ends acknowledged (nothing pending), none is lost, none appears that nobody
//! added.
//!
//! Figures are printed; run with `--nocapture` to see them.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{AsyncCommands, Value};
use redis_lab::RedisServer;
use resilient_redis::{Client, Outcome, streams::StreamConsumer};

/// What the producer and the consumers saw.
#[derive(Default)]
struct History {
    /// Entry numbers whose `XADD` was acknowledged / may have been applied.
    added: HashSet<u64>,
    maybe_added: HashSet<u64>,
    /// How many times each entry number was handed to a consumer.
    processed: HashMap<u64, u32>,
    errors: Vec<String>,
}

/// One consumer: reads, processes and acknowledges until `stop` and nothing is left for it.
async fn consume(
    mut consumer: StreamConsumer,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    loop {
        let entries = match consumer.read(10, Some(Duration::from_millis(100))).await {
            Ok(entries) => entries,
            Err(e) => {
                assert_eq!(
                    e.outcome(),
                    Outcome::Failed,
                    "a read is never ambiguous: {e}"
                );
                continue;
            }
        };
        if entries.is_empty() && stop.load(Ordering::Relaxed) && !consumer.recovering() {
            return consumer.recoveries();
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        {
            let mut h = history.lock().unwrap();
            for entry in &entries {
                let n: u64 = entry.get("n").expect("every entry has its number");
                *h.processed.entry(n).or_default() += 1;
            }
        }
        if let Err(e) = consumer.ack(&ids).await {
            history.lock().unwrap().errors.push(format!("XACK: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_loses_nothing_under_client_kill() {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let (stream, group) = ("jobs", "workers");
    assert!(
        client
            .stream_consumer(stream, group, "c0")
            .create_group("0")
            .await
            .unwrap()
    );
    assert!(
        !client
            .stream_consumer(stream, group, "c0")
            .create_group("0")
            .await
            .unwrap()
    );

    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = tokio::task::JoinSet::new();
    for c in 0..4 {
        let consumer = client.stream_consumer(stream, group, &format!("c{c}"));
        consumers.spawn(consume(consumer, history.clone(), stop.clone()));
    }
    let producer = {
        let (mut client, history) = (client.clone(), history.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for n in 1..=5_000u64 {
                tick.tick().await;
                let added: redis::RedisResult<String> = client.xadd(stream, "*", &[("n", n)]).await;
                let mut h = history.lock().unwrap();
                match added {
                    Ok(_) => {
                        h.added.insert(n);
                    }
                    Err(e) if Outcome::of(&e) == Outcome::Failed => {
                        h.errors.push(format!("XADD: {e}"));
                    }
                    Err(_) => {
                        h.maybe_added.insert(n);
                    }
                }
            }
        })
    };
    let mut kills = 0;
    while !producer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        kills += server.client_kill_normal().await.unwrap();
    }
    producer.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut recoveries = 0;
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = consumers.join_next().await {
            recoveries += r.unwrap();
        }
    })
    .await;
    assert!(drained.is_ok(), "the consumers never finished");

    // The server's view: every entry, and what is still pending.
    let mut admin = server.admin().await.unwrap();
    let entries: redis::streams::StreamRangeReply = admin.xrange_all(stream).await.unwrap();
    let pending: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut admin)
        .await
        .unwrap();
    let still_pending = match &pending {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n as u64,
            _ => panic!("{pending:?}"),
        },
        _ => panic!("{pending:?}"),
    };
    let h = history.lock().unwrap();
    let in_stream: HashMap<u64, String> = entries
        .ids
        .iter()
        .map(|e| (e.get::<u64>("n").unwrap(), e.id.clone()))
        .collect();
    let lost: Vec<u64> = h
        .added
        .iter()
        .filter(|n| !h.processed.contains_key(n))
        .copied()
        .collect();
    let unknown = in_stream
        .keys()
        .filter(|n| !h.added.contains(n) && !h.maybe_added.contains(n))
        .count();
    let never_processed = in_stream
        .keys()
        .filter(|n| !h.processed.contains_key(n))
        .count();
    let redelivered = h.processed.values().filter(|c| **c > 1).count();
    eprintln!(
        "stream through {kills} kills: {} added ({} ambiguous), {} entries, {} processed \
         ({redelivered} more than once), {recoveries} lost reads recovered, {still_pending} \
         pending at the end, {} lost, {unknown} never added, {} errors",
        h.added.len(),
        h.maybe_added.len(),
        in_stream.len(),
        h.processed.len(),
        lost.len(),
        h.errors.len()
    );
    assert!(kills > 10, "the kills hit nothing: {kills}");
    assert!(
        lost.is_empty(),
        "acknowledged entries never processed: {lost:?}"
    );
    assert_eq!(never_processed, 0, "entries never handed to a consumer");
    assert_eq!(unknown, 0, "entries nobody added");
    assert_eq!(still_pending, 0, "entries left unacknowledged: {pending:?}");
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert!(
        recoveries > 0,
        "no read lost its reply in {kills} kills: the test proves nothing"
    );
}
