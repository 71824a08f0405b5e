//! A real Redis Cluster: reaches ok with replicas attached; a slot migration moves its keys.

use std::time::Duration;

use redis_lab::{ClusterConfig, RedisCluster};
use tokio::time::Instant;

/// Keys `{tag}:0..n` all hash to the slot of `tag`.
fn keys(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{{tag}}}:{i}")).collect()
}

#[tokio::test]
async fn cluster_reaches_ok_and_migrates_a_slot_with_its_keys() {
    let started = Instant::now();
    let cluster = RedisCluster::start(ClusterConfig::default()).await.unwrap();
    let ready_after = started.elapsed();
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.urls().len(), 6);
    cluster.wait_ok(Duration::from_secs(5)).await.unwrap();

    // "{a}" hashes to slot 15495 (last master); 250 keys need three MIGRATE batches.
    let slot = 15495;
    let owner = cluster.master_for_slot(slot).await.unwrap();
    assert_eq!(owner, cluster.nodes()[2].addr());
    let mut owner_conn = cluster.nodes()[2].admin().await.unwrap();
    let computed: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{a}")
        .query_async(&mut owner_conn)
        .await
        .unwrap();
    assert_eq!(computed, slot);
    for key in keys("a", 250) {
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(&key)
            .query_async(&mut owner_conn)
            .await
            .unwrap();
    }

    let target = cluster.nodes()[0].addr();
    let migration = Instant::now();
    cluster.migrate_slot(slot, target).await.unwrap();
    let migrated_after = migration.elapsed();
    assert_eq!(cluster.master_for_slot(slot).await.unwrap(), target);
    cluster.wait_ok(Duration::from_secs(10)).await.unwrap();

    let mut target_conn = cluster.nodes()[0].admin().await.unwrap();
    let count: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut target_conn)
        .await
        .unwrap();
    assert_eq!(count, 250);
    let value: String = redis::cmd("GET")
        .arg("{a}:7")
        .query_async(&mut target_conn)
        .await
        .unwrap();
    assert_eq!(value, "{a}:7");
    let left: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut owner_conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // The old owner now redirects.
    let moved: redis::RedisResult<String> = redis::cmd("GET")
        .arg("{a}:7")
        .query_async(&mut owner_conn)
        .await;
    let error = moved.unwrap_err();
    assert!(
        error.to_string().to_ascii_uppercase().contains("MOVED"),
        "{error}"
    );
    eprintln!("cluster ready after {ready_after:?}, slot migrated after {migrated_after:?}");

    // Migrating to a replica is refused.
    let replica = cluster.nodes()[3].addr();
    assert!(cluster.migrate_slot(0, replica).await.is_err());
}

#[tokio::test]
async fn invalid_cluster_config_is_rejected() {
    let error = RedisCluster::start(ClusterConfig {
        masters: 0,
        ..ClusterConfig::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(error, redis_lab::LabError::InvalidConfig(_)),
        "{error}"
    );
}

#[tokio::test]
async fn killed_master_is_replaced_by_its_replica() {
    let mut cluster = RedisCluster::start(ClusterConfig::default()).await.unwrap();
    let old = cluster.master_for_slot(0).await.unwrap();
    assert_eq!(old, cluster.nodes()[0].addr());
    let replica = cluster.nodes()[3].addr();
    let killed = Instant::now();
    cluster.nodes_mut()[0].kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(owner) = cluster.master_for_slot(0).await
            && owner != old
        {
            assert_eq!(owner, replica);
            break;
        }
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_ok(Duration::from_secs(30)).await.unwrap();
    eprintln!("cluster failover after {:?}", killed.elapsed());

    // The old master comes back as a replica of its replacement.
    cluster.nodes_mut()[0].restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.nodes()[0]
        .info_field("replication", "role")
        .await
        .unwrap()
        != "slave"
    {
        assert!(
            Instant::now() < deadline,
            "old master never became a replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_ok(Duration::from_secs(30)).await.unwrap();
}
