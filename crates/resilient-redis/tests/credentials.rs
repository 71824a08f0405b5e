//! Credentials that change (issue 16, part 2) and named connections (part 3), against real
//! servers with ACL users: a password file rotated under load in both orders, tokens that
//! expire every 2 s with the ACL user replaced at each expiry, wrong secrets, `CLIENT LIST`.

mod common;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{Conn, eventually, spawn_set_get};
use redis::{AsyncCommands, aio::MultiplexedConnection};
use redis_lab::RedisServer;
use resilient_redis::{
    Client, ClientConfig, ErrorKind,
    credentials::{Credentials, PasswordFile, TokenProvider},
};
use tokio::{sync::mpsc, time::Instant};

/// Creates (or replaces) ACL user `user` with `password` and every permission.
async fn set_user(admin: &mut MultiplexedConnection, user: &str, password: &str) {
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(admin)
        .await
        .unwrap();
}

/// Writes `password` to `path` as secret volumes do: a new file renamed over the old one, so a
/// reader never sees half of it.
fn write_secret(path: &Path, password: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, format!("{password}\n")).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// `calls` of `cmdstat_<command>` in `INFO commandstats` (0 if never called).
async fn command_calls(server: &RedisServer, command: &str) -> u64 {
    command_stat(server, command, "calls").await
}

/// A field of `cmdstat_<command>` in `INFO commandstats` (0 if absent).
async fn command_stat(server: &RedisServer, command: &str, field: &str) -> u64 {
    let mut admin = server.admin().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|fields| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(field)?.strip_prefix('='))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug)]
enum Order {
    /// The file is rewritten, then the server changes the password and drops the connections.
    FileFirst,
    /// The server changes the password and drops the connections; the file follows 300 ms
    /// later (every reconnection in between is rejected).
    ServerFirst,
}

/// 20 tasks SET+GET while the password rotates three times (one every ~1.3 s); returns the
/// client for more checks.
async fn rotate_under_load(order: Order) {
    let server = RedisServer::start().await.unwrap();
    let mut admin = server.admin().await.unwrap();
    set_user(&mut admin, "app", "pw-0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    write_secret(&file, "pw-0");
    let config = ClientConfig {
        credentials: Some(Arc::new(PasswordFile::new(&file))),
        ..ClientConfig::from_url(&format!("redis://app@127.0.0.1:{}", server.port())).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_set_get(Conn::Resilient(client.clone()), 20, "rot", stop.clone());
    for round in 1..=3 {
        // Let the load run a while on the current password (at least 100 more calls).
        let calls = client.stats().calls;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(client.stats().calls > calls + 100, "the load is running");
        let password = format!("pw-{round}");
        if let Order::FileFirst = order {
            write_secret(&file, &password);
        }
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("app")
            .arg("resetpass")
            .arg(format!(">{password}"))
            .query_async(&mut admin)
            .await
            .unwrap();
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg("app")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(
            killed >= 1,
            "round {round}: the client's connections were dropped"
        );
        if let Order::ServerFirst = order {
            // The agent that rewrites the file is late: reconnections are rejected meanwhile.
            tokio::time::sleep(Duration::from_millis(300)).await;
            write_secret(&file, &password);
        }
    }
    // The load goes on with the last password.
    let calls = client.stats().calls;
    assert!(
        eventually(Duration::from_secs(5), || client.stats().calls
            > calls + 1000)
        .await,
        "calls go on after the last rotation"
    );
    stop.store(true, Ordering::Relaxed);
    let tally = load.await.unwrap();
    let stats = client.stats();
    println!("{order:?}: {tally:?} {stats:?}");
    assert_eq!(tally.errors(), 0, "{order:?}: {:?}", tally.errors);
    assert_eq!(tally.wrong_values, 0);
    assert!(tally.ok > 1000, "{tally:?}");
    assert!(
        stats.reconnects >= 3,
        "reconnected after each rotation: {stats:?}"
    );
    assert_eq!(client.breaker().unwrap().state().as_str(), "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_rotated_under_load_file_first_costs_no_call() {
    rotate_under_load(Order::FileFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_rotated_under_load_server_first_costs_no_call() {
    rotate_under_load(Order::ServerFirst).await;
}

/// Tokens expire every 2 s; each is an ACL user of its own, deleted when its token expires
/// (`ACL DELUSER` drops the connections authenticated as it: a connection that did not
/// re-authenticate in time is cut). 20 tasks SET+GET for 20 s: no error, no reconnection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_tokens_are_renewed_on_live_connections() {
    const LIFETIME: Duration = Duration::from_secs(2);
    const RUN: Duration = Duration::from_secs(20);
    let server = RedisServer::start().await.unwrap();
    let mut admin = server.admin().await.unwrap();

    // What makes the test able to fail: deleting a user drops its connections.
    set_user(&mut admin, "doomed", "x").await;
    let mut doomed = redis::Client::open(format!("redis://doomed:x@127.0.0.1:{}", server.port()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("PING").query_async(&mut doomed).await.unwrap();
    let () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("doomed")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        redis::cmd("PING")
            .query_async::<()>(&mut doomed)
            .await
            .is_err(),
        "ACL DELUSER drops the user's connections"
    );

    // The token service: each token is a new user; the test deletes it when it expires.
    let (tokens, minted, expired) = token_service(admin.clone(), LIFETIME);
    let expiry = spawn_expiry(admin.clone(), expired);

    let config = ClientConfig {
        credentials: Some(Arc::new(tokens)),
        pool_size: 2,
        ..ClientConfig::from_url(&format!("redis://127.0.0.1:{}", server.port())).unwrap()
    };
    let auths_before = command_calls(&server, "auth").await;
    let client = Client::with_config(config).await.unwrap();
    // The second pooled connection opens in the background: counted as a reconnection.
    assert!(eventually(Duration::from_secs(5), || client.connections() == (2, 2)).await);
    let reconnects_before = client.stats().reconnects;
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_set_get(Conn::Resilient(client.clone()), 20, "tok", stop.clone());
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let tally = load.await.unwrap();
    let stats = client.stats();
    let auths = command_calls(&server, "auth").await - auths_before;
    let minted = minted.load(Ordering::Relaxed);
    let (deleted, stale) = expiry.counts();
    println!(
        "{tally:?} {stats:?} tokens minted {minted}, users deleted {deleted}, connections still \
         on an expired token {stale}, AUTH calls {auths}"
    );
    let stale_lines = expiry.stale_lines.lock().unwrap().clone();
    assert_eq!(
        stale, 0,
        "connections still using a token when it expired: {stale_lines:#?}"
    );
    assert_eq!(tally.errors(), 0, "{:?}", tally.errors);
    assert!(tally.ok > 1000, "{tally:?}");
    // 2 s tokens renewed at 1.6 s: 20 s needs 12 or 13 of them, and all but the last two
    // users are deleted under load.
    let renewals = (RUN.as_secs_f64() / (LIFETIME.as_secs_f64() * 0.8)) as u64;
    assert!(
        (renewals..=renewals + 2).contains(&minted),
        "tokens minted: {minted}"
    );
    assert!(deleted >= renewals - 2, "expired users deleted: {deleted}");
    assert_eq!(
        stats.reconnects - reconnects_before,
        0,
        "no connection dropped for an expiry: {stats:?}"
    );
    // Both pooled connections sent AUTH at each renewal (and one in each handshake).
    assert!(
        auths >= 2 * (minted - 1),
        "AUTH calls on the server: {auths}"
    );
    let (up, total) = client.connections();
    assert_eq!((up, total), (2, 2));
}

/// What the expiry of tokens did: users deleted, and connections that still used them then.
struct Expiry {
    deleted: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
    /// The `CLIENT LIST` lines of the connections still on a token when it expired.
    stale_lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Expiry {
    fn counts(&self) -> (u64, u64) {
        (
            self.deleted.load(Ordering::Relaxed),
            self.stale.load(Ordering::Relaxed),
        )
    }
}

/// At each token's expiry: counts the connections still authenticated with it (`CLIENT LIST`
/// shows each connection's user), then deletes its user (which drops them).
fn spawn_expiry(
    mut admin: MultiplexedConnection,
    mut expired: mpsc::UnboundedReceiver<(String, Instant)>,
) -> Expiry {
    let expiry = Expiry {
        deleted: Arc::new(AtomicU64::new(0)),
        stale: Arc::new(AtomicU64::new(0)),
        stale_lines: Arc::default(),
    };
    let (deleted, stale) = (expiry.deleted.clone(), expiry.stale.clone());
    let stale_lines = expiry.stale_lines.clone();
    tokio::spawn(async move {
        while let Some((user, at)) = expired.recv().await {
            tokio::time::sleep_until(at).await;
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut admin)
                .await
                .unwrap();
            let field = format!("user={user}");
            let on_it: Vec<String> = list
                .lines()
                .filter(|l| l.split(' ').any(|f| f == field))
                .map(str::to_owned)
                .collect();
            stale.fetch_add(on_it.len() as u64, Ordering::Relaxed);
            stale_lines.lock().unwrap().extend(on_it);
            let n: u64 = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&user)
                .query_async(&mut admin)
                .await
                .unwrap();
            deleted.fetch_add(n, Ordering::Relaxed);
        }
    });
    expiry
}

/// The tokens a test mints, and the users and expiries they go with.
type Minted = (
    TokenProvider,
    Arc<AtomicU64>,
    mpsc::UnboundedReceiver<(String, Instant)>,
);

/// A token service for the tests: each token is a new ACL user (`app-N`, password `token-N`),
/// valid for `lifetime`; its user and expiry go to the returned receiver.
fn token_service(admin: MultiplexedConnection, lifetime: Duration) -> Minted {
    let (expiries, expired) = mpsc::unbounded_channel::<(String, Instant)>();
    let minted = Arc::new(AtomicU64::new(0));
    let counter = minted.clone();
    let tokens = TokenProvider::new(move || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let (mut admin, expiries) = (admin.clone(), expiries.clone());
        async move {
            let (user, token) = (format!("app-{n}"), format!("token-{n}"));
            set_user(&mut admin, &user, &token).await;
            let credentials = Credentials::user_password(&user, token).expires_in(lifetime);
            let _ = expiries.send((user, credentials.expires_at.unwrap()));
            Ok::<_, std::io::Error>(credentials)
        }
    });
    (tokens, minted, expired)
}

/// A subscription and a consumer looping on `BLPOP` (dedicated connections, which cannot `AUTH`
/// again) through token renewals: both move to fresh connections before the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_blocking_calls_move_to_fresh_credentials() {
    const LIFETIME: Duration = Duration::from_secs(2);
    let server = RedisServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (tokens, minted, expired) = token_service(admin.clone(), LIFETIME);
    let expiry = spawn_expiry(admin.clone(), expired);
    let config = ClientConfig {
        credentials: Some(Arc::new(tokens)),
        ..ClientConfig::from_url(&format!("redis://127.0.0.1:{}", server.port())).unwrap()
    };
    let client = Client::with_config(config).await.unwrap();
    let mut news = client.subscribe(&["news"], &[]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // A producer: one message and one list item every 20 ms.
    let producer = {
        let (mut c, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let _: u64 = c.publish("news", n).await.unwrap();
                let _: u64 = c.rpush("jobs", n).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // A consumer: BLPOP with a short timeout, in a loop.
    let consumer = {
        let (mut c, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut popped, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match c.blpop::<_, Option<(String, u64)>>("jobs", 0.1).await {
                    Ok(Some(_)) => popped += 1,
                    Ok(None) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (popped, errors)
        })
    };
    let subscriber = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut received = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let next = news.next_message();
                if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), next).await {
                    received += 1;
                }
            }
            (received, news.resubscriptions())
        })
    };
    // Two and a half lifetimes: two renewals, two expiries.
    tokio::time::sleep(LIFETIME * 5 / 2).await;
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let (popped, errors) = consumer.await.unwrap();
    let (received, resubscriptions) = subscriber.await.unwrap();
    let (deleted, stale) = expiry.counts();
    let minted = minted.load(Ordering::Relaxed);
    println!(
        "popped {popped}, received {received}, resubscriptions {resubscriptions}, tokens \
         {minted}, users deleted {deleted}, connections still on an expired token {stale}"
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(deleted >= 2, "expiries: {deleted}");
    let stale_lines = expiry.stale_lines.lock().unwrap().clone();
    assert_eq!(
        stale, 0,
        "a connection still used a token when it expired: {stale_lines:#?}"
    );
    assert!(
        resubscriptions >= 2,
        "the subscription moved at each renewal"
    );
    assert!(
        popped > 100 && received > 100,
        "popped {popped}, received {received}"
    );
}

/// A wrong secret is an `Auth` error at connect, within a second, after exactly one refresh.
#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_after_one_refresh() {
    let server = RedisServer::start().await.unwrap();
    let mut admin = server.admin().await.unwrap();
    set_user(&mut admin, "app", "right").await;
    let url = format!("redis://app@127.0.0.1:{}", server.port());

    let tokens = Arc::new(TokenProvider::new(|| async {
        Ok::<_, std::io::Error>(
            Credentials::user_password("app", "wr0ng-t0ken").expires_in(Duration::from_secs(60)),
        )
    }));
    let config = ClientConfig {
        credentials: Some(tokens.clone()),
        ..ClientConfig::from_url(&url).unwrap()
    };
    let started = Instant::now();
    let err = Client::with_config(config).await.unwrap_err();
    let took = started.elapsed();
    println!(
        "wrong token: {err} in {took:?}, {} fetches",
        tokens.fetched()
    );
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        tokens.fetched(),
        2,
        "one token, and one refresh after the rejection"
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wr0ng-t0ken"), "secret shown: {shown}");
    assert!(shown.contains("token provider"), "{shown}");

    // A password file: wrong content, then missing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    write_secret(&file, "wr0ng-passw0rd");
    let config = || ClientConfig {
        credentials: Some(Arc::new(PasswordFile::new(&file))),
        ..ClientConfig::from_url(&url).unwrap()
    };
    let err = Client::with_config(config()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wr0ng-passw0rd"), "secret shown: {shown}");
    assert!(shown.contains(&*file.to_string_lossy()), "{shown}");
    std::fs::remove_file(&file).unwrap();
    let err = Client::with_config(config()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(
        err.to_string().contains("cannot read the password file"),
        "{err}"
    );
}

/// After a rotation the file is never updated: calls wait for a connection and fail as `Auth`
/// (not applied) at their deadline; the breaker stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_stays_wrong_fails_calls_as_auth_within_their_deadline() {
    let server = RedisServer::start().await.unwrap();
    let mut admin = server.admin().await.unwrap();
    set_user(&mut admin, "app", "old").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    write_secret(&file, "old");
    let config = ClientConfig {
        credentials: Some(Arc::new(PasswordFile::new(&file))),
        deadline: Duration::from_millis(800),
        ..ClientConfig::from_url(&format!("redis://app@127.0.0.1:{}", server.port())).unwrap()
    };
    let mut client = Client::with_config(config).await.unwrap();
    let () = client.set("k", "v").await.unwrap();
    set_user(&mut admin, "app", "new").await;
    let () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("app")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut failures = 0;
    for call in 0..5 {
        let started = Instant::now();
        let err = client.get::<_, Option<String>>("k").await.unwrap_err();
        let took = started.elapsed();
        let failure = resilient_redis::Failure::of(&err);
        assert_eq!(failure.kind, ErrorKind::Auth, "{err}");
        if call > 0 {
            // (The first GET was written on a connection the server had just closed.)
            assert_eq!(failure.outcome, resilient_redis::Outcome::Failed, "{err}");
        }
        assert!(took < Duration::from_millis(1000), "{took:?}");
        failures += 1;
    }
    assert_eq!(failures, 5);
    assert_eq!(client.breaker().unwrap().state().as_str(), "closed");
    // The file catches up: the client recovers on its own.
    write_secret(&file, "new");
    let client = client.with_deadline(Duration::from_secs(3)).unwrap();
    let got: Option<String> = client.clone().get("k").await.unwrap();
    assert_eq!(got.as_deref(), Some("v"));
}

/// `CLIENT LIST` shows the configured name on the pool's connections, and the library on
/// servers that know `CLIENT SETINFO` (Redis 7.2+; older ones ignore it).
#[tokio::test]
async fn connections_carry_the_configured_name_and_the_library() {
    let server = RedisServer::start().await.unwrap();
    let config = ClientConfig {
        client_name: Some("orders-api".into()),
        pool_size: 3,
        ..ClientConfig::from_url(&server.url()).unwrap()
    };
    let mut client = Client::with_config(config).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || client.connections() == (3, 3)).await);
    let () = client.set("k", "v").await.unwrap();
    let mut admin = server.admin().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let named: Vec<&str> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == "name=orders-api"))
        .collect();
    assert_eq!(named.len(), 3, "{list}");
    if list.contains("lib-name=") {
        for line in &named {
            assert!(line.contains("lib-name=resilient-redis"), "{line}");
            let version = format!("lib-ver={}", env!("CARGO_PKG_VERSION"));
            assert!(line.contains(&version), "{line}");
        }
    }
    let health = client.health().await;
    assert_eq!(health.connection_name.as_deref(), Some("orders-api"));
    assert_eq!(health.credentials, "static (the URL's)");
    assert!(health.to_string().contains("connection name:   orders-api"));
}

/// A user not allowed `CLIENT SETNAME`: connections work unnamed.
#[tokio::test]
async fn a_refused_name_leaves_connections_working() {
    let server = RedisServer::start().await.unwrap();
    let mut admin = server.admin().await.unwrap();
    let () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "plain", "on", ">pw", "~*", "&*", "+@all", "-client",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();
    let config = ClientConfig {
        client_name: Some("orders-api".into()),
        pool_size: 2,
        ..ClientConfig::from_url(&format!("redis://plain:pw@127.0.0.1:{}", server.port())).unwrap()
    };
    let mut client = Client::with_config(config).await.unwrap();
    let () = client.set("k", "v").await.unwrap();
    let got: String = client.get("k").await.unwrap();
    assert_eq!(got, "v");
    assert!(eventually(Duration::from_secs(5), || client.connections() == (2, 2)).await);
    // Refused once, not asked again for the second connection.
    assert_eq!(
        command_stat(&server, "client|setname", "rejected_calls").await,
        1
    );
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(!list.contains("name=orders-api"), "{list}");
}
