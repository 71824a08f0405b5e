//! A real Sentinel topology: agreement, failover after SIGKILL of the master, rejoin.

use std::time::Duration;

use redis_lab::{SentinelConfig, SentinelTopology};
use tokio::time::Instant;

#[tokio::test]
async fn sentinels_agree_then_fail_over_after_sigkill() {
    let started = Instant::now();
    let mut topology = SentinelTopology::start(SentinelConfig {
        replicas: 2,
        ..SentinelConfig::default()
    })
    .await
    .unwrap();
    let ready_after = started.elapsed();
    assert_eq!(topology.master_name(), "mymaster");
    assert_eq!(topology.sentinel_addrs().len(), 3);
    assert_eq!(topology.servers().len(), 3);
    let old = topology.master_addr().await.unwrap();
    assert_eq!(old, topology.servers()[0].addr());

    let mut conn = topology.servers()[0].admin().await.unwrap();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The write reaches both replicas before the master dies.
    let synced: u64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(synced, 2);
    let pid = topology.servers()[0].pid().unwrap();
    let killed = Instant::now();
    topology.server_by_addr_mut(old).unwrap().kill().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    let new = topology
        .wait_for_new_master(old, Duration::from_secs(30))
        .await
        .unwrap();
    let failover_after = killed.elapsed();
    assert_ne!(new, old);
    assert_eq!(topology.master_addr().await.unwrap(), new);
    let promoted = topology.servers().iter().find(|s| s.addr() == new).unwrap();
    let mut conn = promoted.admin().await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "v");
    eprintln!("sentinel topology ready after {ready_after:?}, failover after {failover_after:?}");

    // The old master restarts on its port and the sentinels turn it into a replica (they also
    // CLIENT KILL its normal clients while reconfiguring it, so errors are expected meanwhile).
    topology
        .server_by_addr_mut(old)
        .unwrap()
        .restart()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let role = topology.servers()[0]
            .info_field("replication", "role")
            .await;
        let link = topology.servers()[0]
            .info_field("replication", "master_link_status")
            .await;
        if role.is_ok_and(|r| r == "slave") && link.is_ok_and(|l| l == "up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old master never rejoined as a replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A sentinel restarts from the config file it rewrote and agrees with the others again
    // (on `new`, unless a loaded machine caused another failover meanwhile).
    let sentinel = &mut topology.sentinels_mut()[0];
    sentinel.kill().unwrap();
    sentinel.restart().await.unwrap();
    let current = topology
        .wait_for_new_master(old, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(topology.servers().iter().any(|s| s.addr() == current));
}

#[tokio::test]
async fn invalid_config_is_rejected_before_starting_anything() {
    let error = SentinelTopology::start(SentinelConfig {
        quorum: 4,
        ..SentinelConfig::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(error, redis_lab::LabError::InvalidConfig(_)),
        "{error}"
    );
}

#[tokio::test]
async fn extra_directives_reach_every_data_server() {
    let topology = SentinelTopology::start(SentinelConfig {
        sentinels: 1,
        quorum: 1,
        extra: vec![
            ("appendonly".to_owned(), "yes".to_owned()),
            ("appendfsync".to_owned(), "always".to_owned()),
        ],
        ..SentinelConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(topology.servers().len(), 2);
    for server in topology.servers() {
        let mut conn = server.admin().await.unwrap();
        for (name, value) in [("appendonly", "yes"), ("appendfsync", "always")] {
            let got: (String, String) = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(got.1, value, "{name} on {server:?}");
        }
    }
    // Written after the topology's own: the replica still replicates.
    let role = topology.servers()[1]
        .info_field("replication", "role")
        .await
        .unwrap();
    assert_eq!(role, "slave");
}
