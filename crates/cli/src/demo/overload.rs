//! `demo --scenario overload`: the three clients against a capacity-limited server, offered load
//! stepping up to twice its capacity.
//!
//! # Behavior
//! - Starts one lab redis-server and one [`FaultProxy`] per client in front of it, each
//!   throttled to `--capacity-ops-per-sec` (commands beyond it are answered `-THROTTLED`). One
//!   proxy per client, not one shared: each client then meets the same overload on its own, and
//!   the naive client's retry storm cannot eat the capacity the resilient client is measured
//!   against (a shared proxy would measure the mix, not each client). The proxies' token buckets
//!   stand for the capacity; the redis-server behind them is far from saturated.
//! - Runs `resilient`, `naive` and `raw` side by side, open-loop ([`crate::open_loop`]), with
//!   `--callers` callers each (default 200), the get-set workload, and the offered rate stepping
//!   through 0.5x, 1x, 1.5x and 2x the capacity, `--step-secs` each (default 5 s: 20 s of load).
//! - Shows a live view (per client: offered, goodput and attempts per second, attempts per
//!   offered call, dropped calls), then a table per step, then writes
//!   `resilient-redis-overload.svg` into `--out`: goodput and attempts per second per client,
//!   the capacity as a dashed line, the steps marked.
//! - Exit 0 only when, in the 2x step, the resilient client's goodput is at least 0.9 x capacity
//!   and its attempts per offered call at most 1.1 (both printed), else 1.

use std::process::ExitCode;
use std::sync::Arc;

use redis_lab::{FaultProxy, RedisServer};
use tokio::time::{Duration, Instant};

use super::DemoArgs;
use super::live::LiveView;
use crate::bench::new_histogram;
use crate::chart::{self, FaultMark, Panel};
use crate::client::{AppClient, NaiveClient, RawClient, connect_resilient, preflight};
use crate::error::CliError;
use crate::open_loop::{self, Counts, OpenLoopRun, Step, Timeline};
use crate::target::{Access, Target};
use crate::workload::{Mix, Workload};

/// The chart's file name inside `--out`.
pub(crate) const OVERLOAD_CHART_FILE: &str = "resilient-redis-overload.svg";
/// The offered load of each step, as a multiple of the capacity.
const STEPS: [(f64, &str); 4] = [(0.5, "0.5x"), (1.0, "1x"), (1.5, "1.5x"), (2.0, "2x")];
/// Target in the last step: goodput at least this fraction of the capacity.
const MIN_GOODPUT_RATIO: f64 = 0.9;
/// Target in the last step: attempts per offered call at most this.
const MAX_AMPLIFICATION: f64 = 1.1;
/// Width of the timeline's buckets (steps last whole seconds).
const BUCKET: Duration = Duration::from_secs(1);
/// How long calls in flight at the end may take (the naive client's 5 s deadline, and some).
const DRAIN: Duration = Duration::from_secs(10);
/// How often the live view is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// The clients, in the order they are shown.
const CLIENTS: [&str; 3] = ["resilient", "naive", "raw"];

/// One step's figures for one client.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StepFigures {
    /// The counts over the step's buckets.
    pub(crate) counts: Counts,
    /// Successful calls per second.
    pub(crate) goodput: f64,
    /// Attempts per offered call.
    pub(crate) amplification: f64,
    /// 99th percentile latency from due time of the calls completed in the step, in ms.
    pub(crate) p99_ms: f64,
}

impl StepFigures {
    /// The figures of `counts` gathered over `length`, with the step's latency p99 (µs).
    pub(crate) fn of(counts: Counts, length: Duration, p99_us: u64) -> StepFigures {
        let goodput = counts.ok as f64 / length.as_secs_f64().max(1e-9);
        let amplification = if counts.offered > 0 {
            counts.attempts as f64 / counts.offered as f64
        } else {
            0.0
        };
        StepFigures {
            counts,
            goodput,
            amplification,
            p99_ms: p99_us as f64 / 1000.0,
        }
    }

    /// Whether the resilient client's targets hold for a server of `capacity` calls/s.
    pub(crate) fn meets_targets(&self, capacity: f64) -> bool {
        self.goodput >= MIN_GOODPUT_RATIO * capacity && self.amplification <= MAX_AMPLIFICATION
    }
}

/// Runs the overload scenario.
pub(crate) async fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    let server = RedisServer::start()
        .await
        .map_err(|err| CliError::runtime(format!("cannot start redis-server: {err}")))?;
    let capacity = args.capacity_ops_per_sec;
    let mut proxies = Vec::new();
    for _ in CLIENTS {
        let proxy = FaultProxy::start(server.addr())
            .await
            .map_err(|err| CliError::runtime(format!("cannot start the proxy: {err}")))?;
        proxy.set_throttle(Some(capacity));
        proxies.push(proxy);
    }
    println!(
        "redis-server at {}; one proxy per client, each throttled to {capacity} ops/s: {}",
        server.url(),
        CLIENTS
            .iter()
            .zip(&proxies)
            .map(|(name, proxy)| format!("{name} {}", proxy.addr()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let url = |index: usize| proxies[index].url();
    let mut resilient = connect_resilient(
        &Target::Standalone { url: url(0) },
        &Access::default(),
        None,
    )
    .await?;
    preflight(&mut resilient, &url(0)).await?;
    let mut naive = NaiveClient::connect(&url(1), None).await?;
    preflight(&mut naive, &url(1)).await?;
    let mut raw = RawClient::connect(&url(2), None).await?;
    preflight(&mut raw, &url(2)).await?;

    let step_length = args.step_secs;
    let steps: Vec<Step> = STEPS
        .iter()
        .map(|(multiple, _)| Step {
            length: step_length,
            rate: multiple * f64::from(capacity),
        })
        .collect();
    let planned = step_length * STEPS.len() as u32;
    let buckets = (planned + DRAIN).as_secs() as usize + 2;
    let start = Instant::now();
    let timelines: [Arc<Timeline>; 3] =
        [(); 3].map(|()| Arc::new(Timeline::new(start, BUCKET, buckets)));
    let mix = Arc::new(Mix {
        workload: Workload::GetSet,
        keys: 10_000,
        value: vec![b'v'; 64],
        counter_key: "demo:counter".to_owned(),
        seed: 1,
    });
    let callers = args.callers as usize;
    let [t0, t1, t2] = timelines.each_ref().map(Arc::clone);
    let runs = futures::future::join3(
        open_loop::run(
            &resilient,
            Arc::clone(&mix),
            &steps,
            callers,
            t0,
            DRAIN,
            new_histogram,
        ),
        open_loop::run(
            &naive,
            Arc::clone(&mix),
            &steps,
            callers,
            t1,
            DRAIN,
            new_histogram,
        ),
        open_loop::run(&raw, mix, &steps, callers, t2, DRAIN, new_histogram),
    );
    let mut view = LiveView::new(
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        Duration::from_secs(1),
    );
    let mut runs = std::pin::pin!(runs);
    let mut tick = tokio::time::interval(REDRAW_EVERY);
    let (first, second, third) = loop {
        tokio::select! {
            done = &mut runs => break done,
            _ = tick.tick() => redraw(&mut view, &timelines, step_length, capacity),
        }
    };
    redraw(&mut view, &timelines, step_length, capacity);
    view.detach();
    let elapsed = start.elapsed();
    let _runs: [OpenLoopRun; 3] = [first?, second?, third?];
    let counters = [resilient.counters(), naive.counters(), raw.counters()];
    let proxy_stats: Vec<_> = proxies.iter().map(FaultProxy::stats).collect();
    drop(proxies);
    drop(server);

    let per_step = step_buckets(step_length);
    let figures: Vec<[StepFigures; 3]> = (0..STEPS.len())
        .map(|step| {
            [0, 1, 2].map(|client| {
                let (from, to) = (step * per_step, (step + 1) * per_step);
                let timeline = &timelines[client];
                StepFigures::of(
                    timeline.sum(from, to),
                    step_length,
                    timeline.latency_us(from, to, 0.99),
                )
            })
        })
        .collect();
    println!();
    println!("{}", render_table(&figures, capacity));
    for ((name, stats), counters) in CLIENTS.iter().zip(&proxy_stats).zip(counters) {
        println!(
            "{name}: proxy forwarded {}, throttled {}; client attempts {}, retries {}",
            stats.commands_forwarded,
            stats.commands_throttled,
            counters
                .attempts
                .map_or_else(|| "= calls sent".to_owned(), |a| a.to_string()),
            counters.retries
        );
    }

    let used = timelines[0].used(start + elapsed);
    let path = args.out.join(OVERLOAD_CHART_FILE);
    chart::write_panels_svg(
        &path,
        &panels(&timelines, used, capacity),
        &step_marks(step_length),
        used as f64 * BUCKET.as_secs_f64(),
    )?;
    let shown = std::path::absolute(&path).unwrap_or(path);
    println!("chart: {}", shown.display());

    let last = &figures[STEPS.len() - 1];
    let capacity = f64::from(capacity);
    let line = |index: usize| {
        format!(
            "{} goodput {:.0}/s ({:.2} x capacity), attempts/offered {:.2}",
            CLIENTS[index],
            last[index].goodput,
            last[index].goodput / capacity,
            last[index].amplification
        )
    };
    println!("2x step: {} | {} | {}", line(0), line(1), line(2));
    let verdict = format!(
        "targets for the resilient client at 2x: goodput >= {MIN_GOODPUT_RATIO} x capacity \
         ({:.0}/s), attempts/offered <= {MAX_AMPLIFICATION}",
        MIN_GOODPUT_RATIO * capacity
    );
    if last[0].meets_targets(capacity) {
        println!("OK: {verdict}: met.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAIL: {verdict}: missed.");
        Ok(ExitCode::from(1))
    }
}

/// Buckets per step (steps last whole seconds; at least one bucket).
fn step_buckets(step: Duration) -> usize {
    (step.as_nanos() / BUCKET.as_nanos()).max(1) as usize
}

/// A mark at the start of each step, labelled with its multiple of the capacity.
fn step_marks(step: Duration) -> Vec<FaultMark> {
    STEPS
        .iter()
        .enumerate()
        .map(|(index, (_, label))| FaultMark {
            start: step * index as u32,
            end: step * index as u32,
            label,
        })
        .collect()
}

/// Goodput and attempts per second per client, at bucket middles.
fn panels(timelines: &[Arc<Timeline>; 3], used: usize, capacity: u32) -> [Panel; 2] {
    let width = BUCKET.as_secs_f64();
    let line = |pick: fn(&Counts) -> u64| {
        CLIENTS
            .iter()
            .zip(timelines)
            .map(|(name, timeline)| {
                let points = (0..used)
                    .map(|index| {
                        let counts = timeline.counts(index);
                        ((index as f64 + 0.5) * width, pick(&counts) as f64 / width)
                    })
                    .collect();
                (*name, points)
            })
            .collect()
    };
    let reference = Some((f64::from(capacity), format!("capacity {capacity}/s")));
    [
        Panel {
            title: "Goodput (successful calls/s)".to_owned(),
            y_desc: "ok calls/s",
            lines: line(|c| c.ok),
            reference: reference.clone(),
        },
        Panel {
            title: "Attempts sent to the server (per s, retries included)".to_owned(),
            y_desc: "attempts/s",
            lines: line(|c| c.attempts),
            reference,
        },
    ]
}

/// The per-step table.
pub(crate) fn render_table(figures: &[[StepFigures; 3]], capacity: u32) -> String {
    let mut out = format!(
        "{:<6} {:>10}  {:<10} {:>10} {:>17} {:>9} {:>9} {:>9} {:>10} {:>10}\n",
        "step",
        "offered/s",
        "client",
        "goodput/s",
        "attempts/offered",
        "dropped",
        "failed",
        "rejected",
        "ambiguous",
        "p99 ms"
    );
    out.push_str(&format!("{}\n", "-".repeat(110)));
    for ((multiple, label), row) in STEPS.iter().zip(figures) {
        for (index, figures) in row.iter().enumerate() {
            let (step, offered) = if index == 0 {
                (
                    (*label).to_owned(),
                    format!("{:.0}", multiple * f64::from(capacity)),
                )
            } else {
                (String::new(), String::new())
            };
            let c = &figures.counts;
            out.push_str(&format!(
                "{step:<6} {offered:>10}  {:<10} {:>10.0} {:>17.2} {:>9} {:>9} {:>9} {:>10} {:>10.1}\n",
                CLIENTS[index],
                figures.goodput,
                figures.amplification,
                c.dropped,
                c.failed,
                c.rejected_locally,
                c.ambiguous,
                figures.p99_ms
            ));
        }
    }
    out.pop();
    out
}

/// Redraws the live view: the current step, and per client the last full second.
fn redraw(view: &mut LiveView, timelines: &[Arc<Timeline>; 3], step: Duration, capacity: u32) {
    let elapsed = timelines[0].start().elapsed();
    let per_step = step_buckets(step);
    let current = ((elapsed.as_nanos() / step.as_nanos().max(1)) as usize).min(STEPS.len() - 1);
    let (multiple, label) = STEPS[current];
    // The last full bucket, and the full buckets of the current step so far.
    let last = (elapsed.as_nanos() / BUCKET.as_nanos()) as usize;
    let step_from = current * per_step;
    // Attempts are sampled at bucket boundaries: only full buckets of the step are compared.
    let lines: Vec<(&str, Counts, String)> = CLIENTS
        .iter()
        .zip(timelines)
        .map(|(name, timeline)| {
            let second = last
                .checked_sub(1)
                .map(|i| timeline.counts(i))
                .unwrap_or_default();
            let so_far = timeline.sum(step_from, last);
            let amplification = if so_far.offered > 0 {
                format!("{:.2}", so_far.attempts as f64 / so_far.offered as f64)
            } else {
                "-".to_owned()
            };
            (*name, second, amplification)
        })
        .collect();
    let header = format!(
        "t={:5.1} s  step {label}: {:.0} offered/s per client (capacity {capacity}/s)",
        elapsed.as_secs_f64(),
        multiple * f64::from(capacity)
    );
    view.show(
        elapsed,
        || {
            let mut block = vec![
                header.clone(),
                format!(
                    "  {:<10} {:>10} {:>10} {:>11} {:>17} {:>8} {:>11}",
                    "client",
                    "offered/s",
                    "goodput/s",
                    "attempts/s",
                    "attempts/offered",
                    "dropped",
                    "rejected/s"
                ),
            ];
            for (name, c, amplification) in &lines {
                block.push(format!(
                    "  {name:<10} {:>10} {:>10} {:>11} {amplification:>17} {:>8} {:>11}",
                    c.offered, c.ok, c.attempts, c.dropped, c.rejected_locally
                ));
            }
            block
        },
        || {
            let parts: Vec<String> = lines
                .iter()
                .map(|(name, c, amplification)| {
                    format!(
                        "{name} {} ok/s, {} attempts/s, {amplification} attempts/offered, {} dropped, {} rejected/s",
                        c.ok, c.attempts, c.dropped, c.rejected_locally
                    )
                })
                .collect();
            format!(
                "t={:.1} s [{label} {:.0}/s] {}",
                elapsed.as_secs_f64(),
                multiple * f64::from(capacity),
                parts.join(" | ")
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(offered: u64, ok: u64, attempts: u64) -> Counts {
        Counts {
            offered,
            ok,
            attempts,
            ..Counts::default()
        }
    }

    #[test]
    fn targets_are_goodput_and_amplification_in_the_step() {
        let step = Duration::from_secs(5);
        let good = StepFigures::of(counts(20_000, 9_000, 21_000), step, 1500);
        assert_eq!(good.p99_ms, 1.5);
        assert_eq!(good.goodput, 1800.0);
        assert_eq!(good.amplification, 1.05);
        assert!(good.meets_targets(2000.0));
        let starved = StepFigures::of(counts(20_000, 8_900, 20_000), step, 0);
        assert!(!starved.meets_targets(2000.0), "1780/s < 0.9 x 2000");
        let amplified = StepFigures::of(counts(20_000, 10_000, 22_001), step, 0);
        assert!(!amplified.meets_targets(2000.0), "attempts/offered > 1.1");
        assert_eq!(
            StepFigures::of(Counts::default(), step, 0).amplification,
            0.0
        );
    }

    #[test]
    fn steps_are_marked_at_their_starts() {
        let marks = step_marks(Duration::from_secs(5));
        let starts: Vec<(u64, &str)> = marks.iter().map(|m| (m.start.as_secs(), m.label)).collect();
        assert_eq!(starts, [(0, "0.5x"), (5, "1x"), (10, "1.5x"), (15, "2x")]);
        assert_eq!(step_buckets(Duration::from_secs(5)), 5);
        assert_eq!(step_buckets(Duration::from_millis(300)), 1);
    }

    #[test]
    fn table_has_a_row_per_step_and_client() {
        let row = [0, 1, 2].map(|_| StepFigures::of(counts(10, 5, 11), Duration::from_secs(1), 0));
        let table = render_table(&[row.clone(), row.clone(), row.clone(), row], 2000);
        assert_eq!(table.lines().count(), 2 + 12);
        let widths: Vec<usize> = table.lines().map(str::len).collect();
        assert!(
            widths.iter().all(|&w| w == widths[0]),
            "ragged table:\n{table}"
        );
        assert!(
            table.lines().nth(2).is_some_and(|l| l.starts_with("0.5x")),
            "{table}"
        );
        assert!(table.contains("1.10"), "{table}");
    }
}
