//! The managed-cloud demo (`--scenario cloud`): a failover behind one hostname, as a managed
//! service (ElastiCache, MemoryDB, Memorystore, Azure Cache) does it.
//!
//! # Behavior
//! - Starts a primary A, a replica B, and a lab proxy in front of A: the proxy is the
//!   "hostname" both clients connect to. It sends *new* connections to the current primary and
//!   leaves open ones where they are.
//! - The failover: `REPLICAOF NO ONE` on B, the proxy pointed at B, `REPLICAOF B` on A. Open
//!   connections stay on A, which now answers every write with `READONLY`. The phase lasts until
//!   A has been told it is a replica; "first ok after" counts from then.
//! - The raw client replaces its connection only after an I/O error, so it keeps writing to A
//!   (every write fails); the resilient client moves to the new primary (see
//!   `ClientConfig::require_primary`).

use std::process::ExitCode;

use redis_lab::{FaultProxy, RedisServer};
use tokio::time::Duration;

use super::{AfterFault, DemoArgs, Session, lab_failed};
use crate::client::{RawClient, connect_resilient, preflight};
use crate::error::CliError;
use crate::target::{Access, Target};

/// How long the replica may take to sync before the demo gives up.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// The managed-cloud demo.
pub(crate) async fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    redis_lab::require_binaries(false).map_err(|err| CliError::runtime(err.to_string()))?;
    println!("starting a primary, a replica, and a proxy as the service's hostname ...");
    let start = || async { RedisServer::start().await };
    let a = start()
        .await
        .map_err(lab_failed("cannot start redis-server"))?;
    let b = start()
        .await
        .map_err(lab_failed("cannot start redis-server"))?;
    b.replicaof(Some(&a))
        .await
        .map_err(lab_failed("REPLICAOF"))?;
    b.wait_link_up(SYNC_LIMIT)
        .await
        .map_err(lab_failed("the replica did not sync"))?;
    let proxy = FaultProxy::start(a.addr())
        .await
        .map_err(lab_failed("cannot start the proxy"))?;
    let url = proxy.url();
    println!(
        "primary A {}, replica B {}, hostname {url} -> A",
        a.addr(),
        b.addr()
    );

    let target = Target::Standalone { url: url.clone() };
    let mut resilient = connect_resilient(&target, &Access::default(), None).await?;
    preflight(&mut resilient, &url).await?;
    let mut raw = RawClient::connect(&url, None).await?;
    preflight(&mut raw, &url).await?;

    let planned = args.settle_ms * 2;
    let mut session = Session::start(args, &resilient, &raw, planned);
    session.baseline().await;
    let failover = async {
        b.replicaof(None)
            .await
            .map_err(lab_failed("REPLICAOF NO ONE on B"))?;
        proxy.set_upstream(b.addr());
        a.replicaof(Some(&b))
            .await
            .map_err(lab_failed("REPLICAOF B on A"))?;
        let after: AfterFault = Some(("A demoted (READONLY)".to_owned(), "A demoted"));
        Ok(after)
    };
    session
        .fault(
            "failover behind the hostname".to_owned(),
            "failover",
            failover,
        )
        .await?;
    session.finish((a, b, proxy)).await
}
