//! TLS against real TLS-only servers (`port 0`, `tls-port`) with a throwaway CA made by
//! `openssl`: verification, clear and fast errors, mutual TLS, reconnection after `CLIENT KILL`,
//! Sentinel and Cluster over TLS.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Conn, spawn_set_get};
use redis::AsyncCommands;
use redis_lab::{LabTls, RedisServer, ServerConfig, TlsCerts};
use resilient_redis::{Client, ClientConfig, ErrorKind, TlsConfig};
use tokio::time::Instant;

/// The client trusts the lab's CA (and nothing else).
fn trusting(certs: &TlsCerts) -> TlsConfig {
    TlsConfig {
        ca_cert_pem: Some(certs.ca_pem().to_vec()),
        ..TlsConfig::default()
    }
}

async fn tls_server(certs: &Arc<TlsCerts>, require_client_cert: bool) -> RedisServer {
    RedisServer::start_with(ServerConfig {
        tls: Some(LabTls {
            certs: certs.clone(),
            require_client_cert,
        }),
        ..ServerConfig::default()
    })
    .await
    .expect("start a TLS redis-server")
}

async fn connect(url: &str, tls: Option<TlsConfig>) -> Result<Client, resilient_redis::Error> {
    Client::with_config(ClientConfig {
        tls,
        ..ClientConfig::from_url(url)?
    })
    .await
}

/// A connect that must fail: the error, and how long it took.
async fn failed_connect(url: &str, tls: Option<TlsConfig>) -> (resilient_redis::Error, Duration) {
    let started = Instant::now();
    let err = match connect(url, tls).await {
        Ok(_) => panic!("{url}: connected, expected an error"),
        Err(e) => e,
    };
    let took = started.elapsed();
    eprintln!("{url}: {err} ({took:?})");
    (err, took)
}

#[tokio::test]
async fn set_get_over_tls_with_the_lab_ca() {
    let certs = TlsCerts::generate().unwrap();
    let server = tls_server(&certs, false).await;
    assert!(server.url().starts_with("rediss://"));
    let mut client = connect(&server.url(), Some(trusting(&certs)))
        .await
        .unwrap();
    // What a connection costs (a figure, not a target: opt-level 0 crypto in test builds).
    let started = Instant::now();
    for _ in 0..10 {
        drop(
            connect(&server.url(), Some(trusting(&certs)))
                .await
                .unwrap(),
        );
    }
    eprintln!("TLS client connect: {:?} each", started.elapsed() / 10);
    let () = client.set("k", "over tls").await.unwrap();
    assert_eq!(client.get::<_, String>("k").await.unwrap(), "over tls");
    // The same with the CA from a file named in the environment.
    let ca = certs.ca_cert().display().to_string();
    let url = server.url();
    let config = ClientConfig::from_lookup(|name| match name {
        "RESILIENT_REDIS_URL" => Some(url.clone()),
        "RESILIENT_REDIS_TLS_CA_FILE" => Some(ca.clone()),
        _ => None,
    })
    .unwrap();
    let mut client = Client::with_config(config).await.unwrap();
    assert_eq!(client.get::<_, String>("k").await.unwrap(), "over tls");
}

#[tokio::test]
async fn an_untrusted_certificate_fails_fast_with_a_clear_error() {
    let certs = TlsCerts::generate().unwrap();
    let other = TlsCerts::generate().unwrap();
    let server = tls_server(&certs, false).await;
    // Another CA, then the system roots (which do not know the lab's CA).
    for tls in [Some(trusting(&other)), None] {
        let (err, took) = failed_connect(&server.url(), tls).await;
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        let text = err.to_string();
        assert!(text.contains("TLS handshake failed"), "{text}");
        assert!(text.contains("certificate"), "{text}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    // `#insecure` and `insecure_skip_verify` skip verification (encrypted, not authenticated).
    let mut client = connect(&format!("{}/#insecure", server.url()), None)
        .await
        .unwrap();
    let () = client.set("k", 1).await.unwrap();
    let insecure = TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    };
    let mut client = connect(&server.url(), Some(insecure)).await.unwrap();
    assert_eq!(client.get::<_, i64>("k").await.unwrap(), 1);
}

#[tokio::test]
async fn the_wrong_scheme_fails_fast_with_a_clear_error() {
    let certs = TlsCerts::generate().unwrap();
    let server = tls_server(&certs, false).await;
    // redis:// against a TLS port.
    let plain_url = format!("redis://127.0.0.1:{}", server.port());
    let (err, took) = failed_connect(&plain_url, None).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("rediss://"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // rediss:// against a plain port.
    let plain = RedisServer::start().await.unwrap();
    let tls_url = format!("rediss://127.0.0.1:{}", plain.port());
    let (err, took) = failed_connect(&tls_url, Some(trusting(&certs))).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let certs = TlsCerts::generate().unwrap();
    let server = tls_server(&certs, true).await;
    let with_cert = TlsConfig {
        client_cert_pem: Some(certs.client_cert_pem().to_vec()),
        client_key_pem: Some(certs.client_key_pem().to_vec()),
        ..trusting(&certs)
    };
    let mut client = connect(&server.url(), Some(with_cert)).await.unwrap();
    let () = client.set("k", "mtls").await.unwrap();
    assert_eq!(client.get::<_, String>("k").await.unwrap(), "mtls");

    let (err, took) = failed_connect(&server.url(), Some(trusting(&certs))).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // The same certificate through the environment.
    let url = server.url();
    let env = |name: &str| match name {
        "RESILIENT_REDIS_URL" => Some(url.clone()),
        "RESILIENT_REDIS_TLS_CA_FILE" => Some(certs.ca_cert().display().to_string()),
        "RESILIENT_REDIS_TLS_CERT_FILE" => Some(certs.client_cert().display().to_string()),
        "RESILIENT_REDIS_TLS_KEY_FILE" => Some(certs.client_key().display().to_string()),
        _ => None,
    };
    let mut client = Client::with_config(ClientConfig::from_lookup(env).unwrap())
        .await
        .unwrap();
    assert_eq!(client.get::<_, String>("k").await.unwrap(), "mtls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_over_tls_causes_no_error() {
    let certs = TlsCerts::generate().unwrap();
    let server = tls_server(&certs, false).await;
    let client = connect(&server.url(), Some(trusting(&certs)))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let work = spawn_set_get(Conn::Resilient(client.clone()), 20, "t", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = server.client_kill_normal().await.unwrap();
    assert!(killed >= 1, "killed {killed} connections");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .expect("workload hung")
        .unwrap();
    eprintln!("CLIENT KILL over TLS: {tally:?}");
    assert_eq!(tally.errors(), 0, "{:?}", tally.errors);
    assert_eq!(tally.wrong_values, 0);
    assert!(tally.ok > 100, "too little progress: {tally:?}");
    assert!(client.stats().reconnects >= 1, "{:?}", client.stats());
}

#[tokio::test]
async fn sentinel_over_tls_follows_a_failover() {
    let certs = TlsCerts::generate().unwrap();
    let mut topology = redis_lab::SentinelTopology::start(redis_lab::SentinelConfig {
        replicas: 1,
        tls: Some(LabTls::new(certs.clone())),
        ..redis_lab::SentinelConfig::default()
    })
    .await
    .unwrap();
    let hosts: Vec<String> = topology
        .sentinel_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let url = format!(
        "rediss+sentinel://{}/{}",
        hosts.join(","),
        topology.master_name()
    );
    let mut client = connect(&url, Some(trusting(&certs))).await.unwrap();
    let () = client.set("k", "before").await.unwrap();
    let health = client.health().await;
    assert_eq!(health.sentinels.as_ref().map(Vec::len), Some(3), "{health}");

    let old = topology.master_addr().await.unwrap();
    topology.server_by_addr_mut(old).unwrap().kill().unwrap();
    let started = Instant::now();
    // One call rides out the failover (about 2.3 s) within its 5 s deadline.
    let () = client.set("k", "after").await.unwrap();
    eprintln!(
        "write after the master's SIGKILL took {:?}",
        started.elapsed()
    );
    assert_eq!(client.get::<_, String>("k").await.unwrap(), "after");
    let new = topology
        .wait_for_new_master(old, Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(new, old);

    // Plain sentinels are refused: the sentinels here speak TLS only.
    let mut config = ClientConfig::from_url(&url).unwrap();
    config.tls = Some(trusting(&certs));
    if let Some(s) = config.sentinel.as_mut() {
        s.sentinel_tls = false;
    }
    config.connect_timeout = Duration::from_millis(500);
    let Err(err) = Client::with_config(config).await else {
        panic!("connected through plain-TCP sentinels to TLS-only ones");
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn cluster_over_tls() {
    let certs = TlsCerts::generate().unwrap();
    let cluster = redis_lab::RedisCluster::start(redis_lab::ClusterConfig {
        tls: Some(LabTls::new(certs.clone())),
        ..redis_lab::ClusterConfig::default()
    })
    .await
    .unwrap();
    let urls = cluster.urls();
    assert!(urls[0].starts_with("rediss://"));
    let mut client = Client::with_config(ClientConfig {
        tls: Some(trusting(&certs)),
        ..ClientConfig::cluster(&urls).unwrap()
    })
    .await
    .unwrap();
    for i in 0..30 {
        let () = client.set(format!("k{i}"), i).await.unwrap();
    }
    for i in 0..30 {
        assert_eq!(client.get::<_, i64>(format!("k{i}")).await.unwrap(), i);
    }
    // Without the lab CA the seeds are not trusted.
    let Err(err) = Client::with_config(ClientConfig::cluster(&urls).unwrap()).await else {
        panic!("connected to TLS nodes without trusting their CA");
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}
