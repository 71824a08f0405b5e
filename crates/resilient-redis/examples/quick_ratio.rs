//! Throwaway: healthy-path throughput, raw vs resilient, alternating.
use redis::{AsyncCommands, aio::ConnectionLike};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

async fn run<C: ConnectionLike + Clone + Send + Sync + 'static>(
    c: C,
    tasks: usize,
    secs: f64,
) -> (f64, Vec<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut hs = vec![];
    for t in 0..tasks {
        let (mut c, stop, ops) = (c.clone(), stop.clone(), ops.clone());
        hs.push(tokio::spawn(async move {
            let mut lat = vec![];
            let val = vec![b'x'; 64];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let k = format!("k{t}:{}", i % 1000);
                let s = Instant::now();
                let () = c.set(&k, &val).await.unwrap();
                lat.push(s.elapsed().as_micros() as u64);
                let s = Instant::now();
                let _: Vec<u8> = c.get(&k).await.unwrap();
                lat.push(s.elapsed().as_micros() as u64);
                ops.fetch_add(2, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = vec![];
    for h in hs {
        all.extend(h.await.unwrap());
    }
    all.sort();
    (ops.load(Ordering::Relaxed) as f64 / secs, all)
}

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let tasks: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(50);
    let raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let res = resilient_redis::Client::connect(&url).await.unwrap();
    if let Some(mode) = std::env::args().nth(3) {
        let (x, _) = if mode == "raw" {
            run(raw.clone(), tasks, 5.0).await
        } else {
            run(res.clone(), tasks, 5.0).await
        };
        println!("{mode}: {x:.0} ops/s");
        return;
    }
    for round in 0..3 {
        let (r, rl) = run(raw.clone(), tasks, 3.0).await;
        let (s, sl) = run(res.clone(), tasks, 3.0).await;
        let p99 = |v: &Vec<u64>| v[v.len() * 99 / 100];
        println!(
            "round {round}: raw {r:.0} ops/s p99 {}us | resilient {s:.0} ops/s p99 {}us | ratio {:.3} p99 ratio {:.3}",
            p99(&rl),
            p99(&sl),
            s / r,
            p99(&sl) as f64 / p99(&rl) as f64
        );
    }
}
