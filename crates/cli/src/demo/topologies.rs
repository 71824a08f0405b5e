//! The Sentinel and cluster demos: SIGKILL of a master under load, the failover as phases.
//!
//! # Behavior
//! - Sentinel: 1 master, 2 replicas, 3 sentinels (quorum 2, `down-after-milliseconds` 1000,
//!   `failover-timeout` 1000). The resilient client finds the master through the sentinels; the
//!   raw client connects to the master the sentinels name at start. The demo subscribes to
//!   `+switch-master` on every sentinel before the kill; the phase "master killed" lasts until
//!   the first announcement arrives, then "+switch-master to HOST:PORT" is watched for `--settle-ms`. The chart
//!   marks the kill-to-switch interval and the switch; "first ok after" counts from the switch.
//! - Cluster: 3 masters, 3 replicas (`cluster-node-timeout` 1000). The resilient client is
//!   [`resilient_redis::Client`] built from the seeds; the raw client redis-rs's async cluster connection with
//!   its defaults. The master of slot 0 is SIGKILLed; the phase lasts until the cluster names
//!   another master for slot 0 and every running node reports `cluster_state:ok` again.
//! - A failover that does not happen within [`FAILOVER_LIMIT`] fails the demo (exit 1).

use std::process::ExitCode;

use futures::StreamExt as _;
use tokio::time::{Duration, Instant};

use super::{AfterFault, DemoArgs, Session, lab_failed};
use crate::client::{RawClient, RawCluster, connect_resilient, preflight, sentinel_master_url};
use crate::error::CliError;
use crate::target::{Access, Target};

/// How long the demo waits for a failover before giving up.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// Expected failover time with these settings (sizes the timeline; measured about 2.3 s).
const EXPECTED_FAILOVER: Duration = Duration::from_secs(4);

/// The Sentinel demo.
pub(crate) async fn run_sentinel(args: &DemoArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(true).map_err(|err| CliError::runtime(err.to_string()))?;
    println!("starting 1 master, 2 replicas and 3 sentinels (down-after 1000 ms) ...");
    let mut topology = redis_lab::SentinelTopology::start(redis_lab::SentinelConfig {
        replicas: 2,
        sentinels: 3,
        quorum: 2,
        down_after: Duration::from_millis(1000),
        failover_timeout: Duration::from_millis(1000),
        ..redis_lab::SentinelConfig::default()
    })
    .await
    .map_err(lab_failed("cannot start the Sentinel topology"))?;
    let master = topology
        .master_addr()
        .await
        .map_err(lab_failed("no master"))?;
    let sentinels: Vec<(String, u16)> = topology
        .sentinel_addrs()
        .iter()
        .map(|addr| (addr.ip().to_string(), addr.port()))
        .collect();
    let name = topology.master_name().to_owned();
    println!(
        "master {master}, sentinels {}",
        sentinels
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let target = Target::Sentinel {
        sentinels: sentinels.clone(),
        master: name.clone(),
    };
    let mut resilient = connect_resilient(&target, &Access::default(), None).await?;
    preflight(&mut resilient, &target.describe()).await?;
    let raw_url = sentinel_master_url(&sentinels, &name).await?;
    let mut raw = RawClient::connect(&raw_url, None).await?;
    preflight(&mut raw, &raw_url).await?;

    // Subscribed on every sentinel before the kill: the switch cannot be missed, and the phase
    // changes at the first announcement.
    let mut streams = Vec::new();
    for (host, port) in &sentinels {
        let failed = |err: redis::RedisError| {
            CliError::runtime(format!(
                "SUBSCRIBE +switch-master on sentinel {host}:{port}: {err}"
            ))
        };
        let mut pubsub = redis::Client::open(format!("redis://{host}:{port}"))
            .map_err(failed)?
            .get_async_pubsub()
            .await
            .map_err(failed)?;
        pubsub.subscribe("+switch-master").await.map_err(failed)?;
        streams.push(pubsub.into_on_message());
    }
    let mut messages = futures::stream::select_all(streams);

    let planned = args.settle_ms * 2 + EXPECTED_FAILOVER;
    let mut session = Session::start(args, &resilient, &raw, planned);
    session.baseline().await;
    let kill = async {
        let killed_at = Instant::now();
        topology
            .server_by_addr_mut(master)
            .ok_or_else(|| CliError::runtime(format!("{master} is not a lab server")))?
            .kill()
            .map_err(lab_failed("SIGKILL of the master"))?;
        let deadline = Instant::now() + FAILOVER_LIMIT;
        loop {
            let message = tokio::time::timeout_at(deadline, messages.next())
                .await
                .map_err(|_| {
                    CliError::runtime(format!(
                        "no +switch-master within {} s of the kill",
                        FAILOVER_LIMIT.as_secs()
                    ))
                })?
                .ok_or_else(|| CliError::runtime("the sentinel closed the subscription"))?;
            let payload: String = message.get_payload().unwrap_or_default();
            // "<name> <old-ip> <old-port> <new-ip> <new-port>"
            let fields: Vec<&str> = payload.split_whitespace().collect();
            if let [switched, _, _, ip, port] = fields.as_slice()
                && *switched == name
            {
                let after: AfterFault = Some((
                    format!(
                        "+switch-master to {ip}:{port} ({:.1} s after the kill)",
                        killed_at.elapsed().as_secs_f64()
                    ),
                    "switch",
                ));
                return Ok(after);
            }
        }
    };
    session
        .fault(
            format!("master {master} killed (SIGKILL)"),
            "master killed",
            kill,
        )
        .await?;
    drop(messages);
    session.finish(topology).await
}

/// The cluster demo.
pub(crate) async fn run_cluster(args: &DemoArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    println!("starting a cluster of 3 masters and 3 replicas (cluster-node-timeout 1000 ms) ...");
    let mut cluster = redis_lab::RedisCluster::start(redis_lab::ClusterConfig {
        masters: 3,
        replicas_per_master: 1,
        node_timeout: Duration::from_millis(1000),
        ..redis_lab::ClusterConfig::default()
    })
    .await
    .map_err(lab_failed("cannot start the cluster"))?;
    let urls = cluster.urls();
    println!("cluster nodes {}", urls.join(","));
    println!(
        "(for the resilient client in a cluster, \"reconnects\" also counts its slot-map refreshes)"
    );
    let target = Target::Cluster { urls: urls.clone() };
    let mut resilient = connect_resilient(&target, &Access::default(), None).await?;
    preflight(&mut resilient, &target.describe()).await?;
    let mut raw = RawCluster::connect(&urls, None).await?;
    preflight(&mut raw, &target.describe()).await?;

    // The victim is the master of slot 0; the failover is over when slot 0 has another master.
    let victim = cluster
        .master_for_slot(0)
        .await
        .map_err(lab_failed("CLUSTER SLOTS"))?;
    let index = cluster
        .nodes()
        .iter()
        .position(|node| node.addr() == victim)
        .ok_or_else(|| CliError::runtime(format!("{victim} is not a lab node")))?;
    let planned = args.settle_ms * 2 + EXPECTED_FAILOVER;
    let mut session = Session::start(args, &resilient, &raw, planned);
    session.baseline().await;
    let kill = async {
        let killed_at = Instant::now();
        cluster.nodes_mut()[index]
            .kill()
            .map_err(lab_failed("SIGKILL of the master"))?;
        let deadline = Instant::now() + FAILOVER_LIMIT;
        let promoted = loop {
            match cluster.master_for_slot(0).await {
                Ok(addr) if addr != victim => break addr,
                _ if Instant::now() >= deadline => {
                    return Err(CliError::runtime(format!(
                        "no replica promoted within {} s of the kill",
                        FAILOVER_LIMIT.as_secs()
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        cluster
            .wait_ok(deadline.saturating_duration_since(Instant::now()))
            .await
            .map_err(lab_failed("the cluster did not recover"))?;
        let after: AfterFault = Some((
            format!(
                "replica {promoted} promoted ({:.1} s after the kill)",
                killed_at.elapsed().as_secs_f64()
            ),
            "promoted",
        ));
        Ok(after)
    };
    session
        .fault(
            format!("master {victim} killed (SIGKILL)"),
            "master killed",
            kill,
        )
        .await?;
    session.finish(cluster).await
}
