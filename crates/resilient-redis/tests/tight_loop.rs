//! Callers that call again at once after an error (no pause, no yield: as many worker loops are
//! written) must neither keep the client from reconnecting nor push a call past its deadline.
//!
//! 50 such tasks run through an 8 s outage, on a multi-thread runtime with 2 workers and on a
//! current-thread runtime. The workload runs on a runtime of its own, in its own thread, so the
//! test's own bookkeeping (stopping and restarting the server, watching the port) is never held
//! up by the callers it watches. Its own test binary: the callers take every core.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::AsyncCommands;
use redis_lab::RedisServer;
use resilient_redis::Client;

const CALLERS: usize = 50;
const OUTAGE: Duration = Duration::from_secs(8);
/// How long after the port accepts again the first call may succeed.
const RECOVERY: Duration = Duration::from_millis(250);
/// How far past its deadline a call may return.
const LATE: Duration = Duration::from_millis(50);

/// The two tests take every core: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn tight_loop_callers_on_two_worker_threads() {
    outage_under_a_tight_loop("multi-thread, 2 workers", || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    });
}

#[test]
fn tight_loop_callers_on_a_current_thread_runtime() {
    outage_under_a_tight_loop("current-thread", || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    });
}

/// What the callers saw, in µs since the test's origin.
#[derive(Default)]
struct Seen {
    /// The end of each first success after one or more errors.
    recoveries: Vec<u64>,
    /// The longest call, and when it started.
    longest: (Duration, u64),
    ok: u64,
    errors: u64,
}

fn outage_under_a_tight_loop(flavor: &str, runtime: fn() -> tokio::runtime::Runtime) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let origin = Instant::now();
    let since = move |t: Instant| t.duration_since(origin).as_micros() as u64;
    let harness = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("harness runtime");
    let mut server = harness
        .block_on(RedisServer::start())
        .expect("start redis-server");
    let (url, addr) = (server.url(), server.addr());
    let stop = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicU64::new(0));
    let (deadline_tx, deadline_rx) = std::sync::mpsc::channel();

    let workload = {
        let (stop, successes) = (stop.clone(), successes.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let client = Client::connect(&url).await.expect("connect");
                deadline_tx.send(client.config().deadline).unwrap();
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..CALLERS {
                    let (mut c, stop, successes) =
                        (client.clone(), stop.clone(), successes.clone());
                    tasks.spawn(async move {
                        let key = format!("tight:{i}");
                        let mut seen = Seen::default();
                        let mut failing = false;
                        while !stop.load(Ordering::Relaxed) {
                            let started = Instant::now();
                            let r: redis::RedisResult<Option<String>> = c.get(&key).await;
                            let ended = Instant::now();
                            let took = ended - started;
                            if took > seen.longest.0 {
                                seen.longest = (took, since(started));
                            }
                            match r {
                                Ok(_) => {
                                    seen.ok += 1;
                                    successes.fetch_add(1, Ordering::Relaxed);
                                    if std::mem::take(&mut failing) {
                                        seen.recoveries.push(since(ended));
                                    }
                                }
                                Err(_) => {
                                    seen.errors += 1;
                                    failing = true;
                                }
                            }
                        }
                        seen
                    });
                }
                let mut all = Seen::default();
                while let Some(seen) = tasks.join_next().await {
                    let seen = seen.expect("caller task");
                    all.recoveries.extend(seen.recoveries);
                    all.longest = all.longest.max(seen.longest);
                    all.ok += seen.ok;
                    all.errors += seen.errors;
                }
                all
            })
        })
    };
    let deadline = deadline_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the workload did not connect");

    let accepted_at = harness.block_on(async {
        let calling = wait_for(Duration::from_secs(10), || {
            successes.load(Ordering::Relaxed) >= 1000
        })
        .await;
        assert!(calling, "the callers never got going");
        server.stop().await.expect("stop redis-server");
        tokio::time::sleep(OUTAGE).await;
        // Watch the port from another task so we know when it accepts again.
        let accept = tokio::spawn(async move {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        server.restart().await.expect("restart redis-server");
        let accepted_at = accept.await.expect("port watcher");
        let before = successes.load(Ordering::Relaxed);
        let back = wait_for(Duration::from_secs(10), || {
            successes.load(Ordering::Relaxed) > before + 1000
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        assert!(
            back,
            "{flavor}: no call succeeded within 10 s of the restart"
        );
        accepted_at
    });
    let seen = workload.join().expect("workload thread");
    drop(server);

    let accepted = since(accepted_at);
    let first_back = seen
        .recoveries
        .iter()
        .copied()
        .filter(|&t| t >= accepted)
        .min()
        .expect("a success after the restart");
    let recovery = Duration::from_micros(first_back - accepted);
    let (longest, longest_from) = seen.longest;
    eprintln!(
        "{flavor}: {} ok, {} errors; first success {recovery:?} after the port accepted; \
         longest call {longest:?} (started {:.3} s after the port accepted; deadline {deadline:?})",
        seen.ok,
        seen.errors,
        (longest_from as f64 - accepted as f64) / 1e6,
    );
    assert!(
        seen.errors > 0,
        "{flavor}: the outage caused no error: not tested"
    );
    assert!(
        recovery <= RECOVERY,
        "{flavor}: first success {recovery:?} after the port accepted (> {RECOVERY:?})"
    );
    assert!(
        longest <= deadline + LATE,
        "{flavor}: a call took {longest:?}, past its deadline {deadline:?} + {LATE:?}"
    );
}

/// Waits until `f` is true, checking every 10 ms, for at most `limit`.
async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
