//! The nemesis: applies the schedule's faults to the lab at their times, and undoes the held
//! ones when they end.
//!
//! # Behavior
//! - A step's victim is resolved when it starts (the master *now*); what it resolved to, and
//!   when the fault really began and ended, are kept for the report and the checker.
//! - A step that cannot be applied (no replica to fail over to, a node already down) is kept
//!   with its error and skipped: the run goes on.
//! - `busy` runs its script on a connection of its own, so a fault starting at the same moment
//!   is not held up by it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::history::Clock;
use super::lab::Lab;
use super::schedule::{FaultKind, Schedule, Step};
use crate::error::CliError;

/// A busy loop of `ARGV[1]` microseconds (read-only: `-BUSY` to every other client).
const BUSY_SCRIPT: &str = "local function now() local t = redis.call('TIME') \
    return tonumber(t[1]) * 1000000 + tonumber(t[2]) end \
    local start = now() while now() - start < tonumber(ARGV[1]) do end return 1";

/// What became of one step.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Applied {
    /// Its index in the schedule.
    pub(crate) step: usize,
    /// Its kind.
    pub(crate) kind: FaultKind,
    /// The shard of its victim.
    pub(crate) shard: usize,
    /// The node it hit (its own address).
    pub(crate) node: Option<SocketAddr>,
    /// The victim was its shard's master when the step began.
    pub(crate) master: bool,
    /// When it began, in ms from the start of the run.
    pub(crate) start_ms: u64,
    /// When it was over (undone, or done for the faults that happen at once).
    pub(crate) end_ms: u64,
    /// For `migrate`, the slot moved.
    pub(crate) slot: Option<u16>,
    /// Why it could not be applied or undone.
    pub(crate) error: Option<String>,
}

/// Applies `schedule` to `lab`; `keys` are the workload keys `migrate` picks from.
pub(crate) async fn run(
    lab: &mut Lab,
    schedule: &Schedule,
    clock: Clock,
    keys: &[String],
) -> Vec<Applied> {
    // Starts and ends, in time order (an end before a start at the same time).
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, step) in schedule.steps.iter().enumerate() {
        events.push((step.at_ms, true, i));
        if step.kind.is_held() {
            events.push((step.at_ms + step.hold_ms, false, i));
        }
    }
    events.sort_by_key(|&(at, start, i)| (at, start, i));
    let mut applied: Vec<Applied> = Vec::new();
    for (at, start, i) in events {
        tokio::time::sleep_until(clock.at(at)).await;
        let step = &schedule.steps[i];
        if start {
            let began = clock.ms();
            let mut record = Applied {
                step: i,
                kind: step.kind,
                shard: step.victim.shard(),
                node: None,
                master: matches!(step.victim, super::schedule::Victim::Master { .. }),
                start_ms: began,
                end_ms: began,
                slot: None,
                error: None,
            };
            match begin(lab, step, keys).await {
                Ok((node, slot)) => {
                    record.node = node;
                    record.slot = slot;
                }
                Err(err) => record.error = Some(err.to_string()),
            }
            record.end_ms = clock.ms();
            applied.push(record);
        } else if let Some(record) = applied.iter_mut().find(|r| r.step == i) {
            if let (Some(node), None) = (record.node, &record.error)
                && let Err(err) = end(lab, step, node).await
            {
                record.error = Some(format!("undoing: {err}"));
            }
            record.end_ms = clock.ms();
        }
    }
    applied
}

/// Starts `step`: gives the node it hit and, for `migrate`, the slot.
async fn begin(
    lab: &mut Lab,
    step: &Step,
    keys: &[String],
) -> Result<(Option<SocketAddr>, Option<u16>), CliError> {
    let lab_failed = |what: &'static str| {
        move |err: redis_lab::LabError| CliError::runtime(format!("{what}: {err}"))
    };
    let shard = match step.victim {
        super::schedule::Victim::Master { shard }
        | super::schedule::Victim::Replica { shard, .. } => shard,
    };
    match step.kind {
        FaultKind::Failover => {
            let node = lab.master(shard).await?;
            lab.failover(shard).await?;
            return Ok((Some(node), None));
        }
        FaultKind::Migrate => {
            let key = &keys[step.param as usize % keys.len().max(1)];
            let from = lab.master(shard).await.ok();
            let (slot, _to) = lab.migrate(key).await?;
            return Ok((from, Some(slot)));
        }
        _ => {}
    }
    let node = lab.resolve(step.victim).await?;
    match step.kind {
        FaultKind::Kill => lab
            .server_mut(node)?
            .kill()
            .map_err(lab_failed("SIGKILL"))?,
        FaultKind::Restart => lab
            .server_mut(node)?
            .stop()
            .await
            .map_err(lab_failed("SHUTDOWN"))?,
        FaultKind::Pause => lab.server(node)?.pause().map_err(lab_failed("SIGSTOP"))?,
        FaultKind::ClientKill => {
            lab.server(node)?
                .client_kill_normal()
                .await
                .map_err(lab_failed("CLIENT KILL"))?;
        }
        FaultKind::Busy => {
            let hold = Duration::from_millis(step.hold_ms);
            let config = redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(hold + Duration::from_secs(10)));
            let mut conn = redis::Client::open(format!("redis://{node}"))
                .map_err(|e| CliError::runtime(format!("busy: {e}")))?
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| CliError::runtime(format!("busy: {e}")))?;
            tokio::spawn(async move {
                let _: redis::RedisResult<i64> = redis::cmd("EVAL")
                    .arg(BUSY_SCRIPT)
                    .arg(0)
                    .arg(hold.as_micros() as u64)
                    .query_async(&mut conn)
                    .await;
            });
        }
        kind => {
            let proxy = lab
                .proxy(node)
                .ok_or_else(|| CliError::runtime(format!("{node} has no proxy")))?;
            match kind {
                FaultKind::Partition => proxy.set_blackhole(true),
                FaultKind::Cut => proxy.set_drop_every(Some(step.param)),
                FaultKind::Latency => proxy.set_latency(Some(Duration::from_millis(step.param))),
                FaultKind::Throttle => proxy.set_throttle(Some(step.param as u32)),
                other => unreachable!("{other:?} is handled above"),
            }
        }
    }
    Ok((Some(node), None))
}

/// Ends a held `step` on `node`.
async fn end(lab: &mut Lab, step: &Step, node: SocketAddr) -> Result<(), CliError> {
    let lab_failed = |what: &'static str| {
        move |err: redis_lab::LabError| CliError::runtime(format!("{what}: {err}"))
    };
    match step.kind {
        FaultKind::Kill | FaultKind::Restart => lab
            .server_mut(node)?
            .restart()
            .await
            .map_err(lab_failed("restart"))?,
        FaultKind::Pause => lab.server(node)?.resume().map_err(lab_failed("SIGCONT"))?,
        FaultKind::Busy => {}
        kind if kind.needs_proxy() => {
            let proxy = lab
                .proxy(node)
                .ok_or_else(|| CliError::runtime(format!("{node} has no proxy")))?;
            match kind {
                FaultKind::Partition => {
                    // A connection that saw a byte while blackholed stays stuck (the proxy
                    // cannot tell what was lost): the partition heals with fresh connections,
                    // as peers would see after their TCP timeouts.
                    proxy.set_blackhole(false);
                    proxy.drop_all();
                }
                FaultKind::Cut => proxy.set_drop_every(None),
                FaultKind::Latency => proxy.set_latency(None),
                _ => proxy.set_throttle(None),
            }
        }
        _ => {}
    }
    Ok(())
}
