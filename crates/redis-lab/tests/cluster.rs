//! A real Redis Cluster: reaches ok with replicas attached; a slot migration moves its keys;
//! behind proxies, the cluster names them while its bus stays direct.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis_lab::{ClusterConfig, FaultProxy, RedisCluster};
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
    // The proxy speaks RESP, not TLS.
    let error = RedisCluster::start(ClusterConfig {
        proxied: true,
        tls: Some(redis_lab::LabTls::new(
            redis_lab::TlsCerts::generate().unwrap(),
        )),
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

/// The ports named in a `CLUSTER SLOTS` reply, masters and replicas.
async fn cluster_slots_ports(node: &redis_lab::RedisServer) -> BTreeSet<u16> {
    let rows: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut node.admin().await.unwrap())
        .await
        .unwrap();
    let mut ports = BTreeSet::new();
    for row in rows {
        let Value::Array(items) = row else {
            panic!("CLUSTER SLOTS row {row:?}")
        };
        for endpoint in &items[2..] {
            let Value::Array(parts) = endpoint else {
                panic!("CLUSTER SLOTS endpoint {endpoint:?}")
            };
            let Value::Int(port) = parts[1] else {
                panic!("CLUSTER SLOTS port {:?}", parts[1])
            };
            ports.insert(u16::try_from(port).unwrap());
        }
    }
    ports
}

/// A client connection (as a cluster client would open to an announced address) that waits up
/// to `timeout` for connecting and for each reply.
async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Long enough for a `WAIT` of 10 s on a loaded machine.
const PATIENT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn proxied_cluster_announces_its_proxies_and_keeps_the_bus_direct() {
    let config = ClusterConfig {
        proxied: true,
        ..ClusterConfig::default()
    };
    let node_timeout = config.node_timeout;
    let cluster = RedisCluster::start(config).await.unwrap();
    cluster.wait_ok(Duration::from_secs(5)).await.unwrap();
    let proxies = cluster.proxies();
    assert_eq!(proxies.len(), 6);

    // The cluster names the proxies, and the seeds are the proxies.
    let proxy_ports: BTreeSet<u16> = proxies.iter().map(|p| p.addr().port()).collect();
    for node in cluster.nodes() {
        assert_eq!(cluster_slots_ports(node).await, proxy_ports, "{node:?}");
    }
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    assert_eq!(cluster.urls(), urls);

    // Either address of a node finds it and its proxy; the lab returns the node's own address.
    let (node0, proxy0) = (cluster.nodes()[0].addr(), proxies[0].addr());
    assert_eq!(cluster.master_for_slot(0).await.unwrap(), node0);
    assert_eq!(cluster.announced_addr(node0), Some(proxy0));
    assert_eq!(cluster.announced_addr(proxy0), Some(proxy0));
    assert_eq!(cluster.proxy_of(node0).unwrap().addr(), proxy0);
    assert_eq!(cluster.proxy_of(proxy0).unwrap().addr(), proxy0);
    assert_eq!(cluster.node_by_addr(proxy0).unwrap().addr(), node0);
    let stranger = "127.0.0.1:1".parse().unwrap();
    assert!(cluster.proxy_of(stranger).is_none());
    assert!(cluster.announced_addr(stranger).is_none());

    // Replicas replicate from their master's proxy.
    for (offset, replica) in cluster.nodes()[3..].iter().enumerate() {
        let port = replica
            .info_field("replication", "master_port")
            .await
            .unwrap();
        assert_eq!(port, proxies[offset].addr().port().to_string());
    }

    // A client starts at any proxy, is redirected to another proxy, and is counted there.
    let slot = 15495; // "{a}", on the third master
    let owner = cluster.master_for_slot(slot).await.unwrap();
    assert_eq!(owner, cluster.nodes()[2].addr());
    let mut seed = connect(&proxies[0].url(), PATIENT).await.unwrap();
    let moved = redis::cmd("GET")
        .arg("{a}")
        .query_async::<Option<String>>(&mut seed)
        .await
        .unwrap_err();
    assert_eq!(
        moved.redirect_node(),
        Some((proxies[2].addr().to_string().as_str(), slot)),
        "{moved}"
    );
    let before = proxies[2].stats();
    let mut conn = connect(&proxies[2].url(), PATIENT).await.unwrap();
    let () = redis::cmd("SET")
        .arg("{a}")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("{a}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "v");
    let after = cluster.proxy_of(owner).unwrap().stats();
    assert_eq!(after.connections_accepted, before.connections_accepted + 1);
    // Its replica's REPLCONF ACKs pass through the same proxy, so at least SET and GET.
    assert!(after.commands_forwarded >= before.commands_forwarded + 2);

    // Blackholing that master's proxy cuts off its clients, not the node: the cluster bus is
    // direct, so no node flags it failing, even after several node timeouts.
    proxies[2].set_blackhole(true);
    assert!(
        connect(&proxies[2].url(), Duration::from_millis(500))
            .await
            .is_err()
    );
    let swallowed = proxies[2].stats().bytes_blackholed;
    let watch = Instant::now();
    while watch.elapsed() < node_timeout * 3 {
        cluster.wait_ok(Duration::from_millis(1)).await.unwrap();
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut cluster.nodes()[0].admin().await.unwrap())
            .await
            .unwrap();
        let flags = nodes
            .lines()
            .find(|l| l.contains(&proxies[2].addr().to_string()))
            .and_then(|l| l.split(' ').nth(2))
            .unwrap()
            .to_owned();
        assert_eq!(flags, "master", "{nodes}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its replica's link goes through the proxy too: its acknowledgements are swallowed, yet
    // the replica reports the link up (until `repl-timeout`, 60 s).
    assert!(proxies[2].stats().bytes_blackholed > swallowed);
    let link = cluster.nodes()[5]
        .info_field("replication", "master_link_status")
        .await
        .unwrap();
    assert_eq!(link, "up");
    let mut direct = cluster.nodes()[2].admin().await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("{a}")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(value, "v");

    // A blackholed connection stays so until closed: lift the blackhole, close them all, and
    // the replica reconnects through the proxy and acknowledges writes again.
    proxies[2].set_blackhole(false);
    proxies[2].drop_all();
    let mut conn = connect(&proxies[2].url(), PATIENT).await.unwrap();
    let () = redis::cmd("SET")
        .arg("{a}")
        .arg("w")
        .query_async(&mut conn)
        .await
        .unwrap();
    // WAIT on the connection that wrote (it waits for that client's own write).
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(acked, 1);
}

#[tokio::test]
async fn proxied_cluster_migrates_a_slot_and_keeps_a_restarted_node_behind_its_proxy() {
    let mut cluster = RedisCluster::start(ClusterConfig {
        proxied: true,
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let slot = 15495; // "{a}", on the third master
    let source = cluster.proxies()[2].addr();
    let target = cluster.proxies()[0].addr();
    let mut conn = connect(&cluster.proxies()[2].url(), PATIENT).await.unwrap();
    let mut pipe = redis::pipe();
    for key in keys("a", 120) {
        pipe.set(&key, &key).ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();

    // Announced addresses are accepted; the owner comes back as the node's own address.
    cluster.migrate_slot(slot, target).await.unwrap();
    assert_eq!(
        cluster.master_for_slot(slot).await.unwrap(),
        cluster.nodes()[0].addr()
    );
    cluster.wait_ok(Duration::from_secs(10)).await.unwrap();
    let moved = redis::cmd("GET")
        .arg("{a}:7")
        .query_async::<String>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        moved.redirect_node(),
        Some((target.to_string().as_str(), slot)),
        "{moved} (source {source})"
    );
    let mut conn = connect(&cluster.proxies()[0].url(), PATIENT).await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("{a}:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "{a}:7");

    // The new owner's replica restarts on its port: its proxy reaches it again, and it
    // replicates through its master's proxy again.
    let replica = cluster.proxies()[3].addr();
    let accepted = cluster.proxies()[0].stats().connections_accepted;
    cluster
        .node_by_addr_mut(replica)
        .unwrap()
        .restart()
        .await
        .unwrap();
    cluster.wait_ok(Duration::from_secs(30)).await.unwrap();
    let restarted = cluster.node_by_addr(replica).unwrap();
    restarted
        .wait_link_up(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        restarted
            .info_field("replication", "master_port")
            .await
            .unwrap(),
        target.port().to_string()
    );
    assert!(cluster.proxies()[0].stats().connections_accepted > accepted);
    let mut conn = connect(&cluster.proxies()[3].url(), PATIENT).await.unwrap();
    let () = redis::cmd("READONLY").query_async(&mut conn).await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("{a}:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "{a}:7");
}
