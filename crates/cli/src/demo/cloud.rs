//! The managed-cloud demo (`--scenario cloud`): a failover behind one hostname and a password
//! rotation, as a managed service (ElastiCache, MemoryDB, Memorystore, Azure Cache) does them.
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
//! - Both clients log in as ACL user `app`: the raw one with the password in its URL, the
//!   resilient one with a password file (`--password-file`), as a mounted secret. The rotation:
//!   the file gets the new password, then the server does, and `app`'s connections are closed
//!   (as a rotation that recycles connections does). The raw client reconnects with the old
//!   password (every call fails `WRONGPASS`); the resilient one reads the file again.

use std::process::ExitCode;

use redis_lab::{FaultProxy, RedisServer};
use tokio::time::Duration;

use super::{AfterFault, DemoArgs, Session, lab_failed};
use crate::client::{RawClient, connect_resilient, preflight};
use crate::error::CliError;
use crate::target::{Access, Target};

/// How long the replica may take to sync before the demo gives up.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// The ACL user both clients log in as.
const USER: &str = "app";

/// A fresh random password.
fn new_password() -> String {
    use rand::{RngExt as _, distr::Alphanumeric};
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Writes `password` to the demo's password file (owner-only, replaced atomically as a secret
/// mount's update is).
fn write_password(path: &std::path::Path, password: &str) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |err: std::io::Error| {
        CliError::runtime(format!(
            "cannot write the password file {}: {err}",
            path.display()
        ))
    };
    let staged = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staged)
        .map_err(fail)?;
    std::io::Write::write_all(&mut file, format!("{password}\n").as_bytes()).map_err(fail)?;
    std::fs::rename(&staged, path).map_err(fail)
}

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
    let first = new_password();
    let password_file = args.out.join("cloud-password");
    write_password(&password_file, &first)?;
    for server in [&a, &b] {
        server
            .rotate_user(USER, &first)
            .await
            .map_err(lab_failed("ACL SETUSER"))?;
    }
    println!(
        "both clients log in as user {USER}: raw with the password in its URL, resilient with \
         --password-file {}",
        password_file.display()
    );

    let user_url = url.replacen("redis://", &format!("redis://{USER}@"), 1);
    let target = Target::Standalone {
        url: user_url.clone(),
    };
    let access = Access {
        password_file: Some(password_file.clone()),
        ..Access::default()
    };
    let mut resilient = connect_resilient(&target, &access, None).await?;
    preflight(&mut resilient, &user_url).await?;
    let raw_url = url.replacen("redis://", &format!("redis://{USER}:{first}@"), 1);
    let mut raw = RawClient::connect(&raw_url, None).await?;
    preflight(&mut raw, &user_url).await?;

    let planned = args.settle_ms * 3;
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
    let rotation = async {
        let second = new_password();
        write_password(&password_file, &second)?;
        // The primary first: the failover made it B.
        for server in [&b, &a] {
            server
                .rotate_user(USER, &second)
                .await
                .map_err(lab_failed("ACL SETUSER"))?;
        }
        let after: AfterFault = Some(("new password only".to_owned(), "rotated"));
        Ok(after)
    };
    session
        .fault("password rotated".to_owned(), "rotation", rotation)
        .await?;
    let result = session.finish((a, b, proxy)).await;
    let _ = std::fs::remove_file(&password_file);
    result
}
