//! One shared connection, replaced after it breaks: how the raw and wire baselines (and a
//! hand-written app) live with a connection that stays broken once broken.
//!
//! # Behavior
//! - Every worker's handle uses the shared connection; nothing is retried.
//! - A worker that sees an unrecoverable error (dropped connection, I/O failure) opens a new
//!   connection before its next call; concurrent workers share it (one reconnect per
//!   breakage). While the server is down, the attempt fails and the next call fails fast.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::ConnectionLike;
use redis::{RedisError, RedisResult};

use super::{AppClient, ClientCounters};

/// How a baseline opens its connection.
pub(crate) trait Connector: Send + Sync + 'static {
    /// The connection it opens: cheap to clone, shared by every worker.
    type Conn: ConnectionLike + Clone + Send + Sync + 'static;

    /// Opens a new connection.
    fn connect(&self) -> impl Future<Output = RedisResult<Self::Conn>> + Send;
}

/// A shared connection replaced after it breaks (see the module docs).
pub(crate) struct Replacing<K: Connector> {
    shared: Arc<Shared<K>>,
    conn: K::Conn,
    generation: u64,
}

impl<K: Connector> Clone for Replacing<K> {
    fn clone(&self) -> Self {
        Replacing {
            shared: Arc::clone(&self.shared),
            conn: self.conn.clone(),
            generation: self.generation,
        }
    }
}

struct Shared<K: Connector> {
    connector: K,
    /// Bumped each time `current` is replaced.
    generation: AtomicU64,
    current: Mutex<K::Conn>,
    /// Serialises reconnects so a breakage seen by many workers opens one connection.
    reconnecting: tokio::sync::Mutex<()>,
    reconnects: AtomicU64,
}

impl<K: Connector> Replacing<K> {
    /// Opens the first connection with `connector`.
    ///
    /// # Errors
    /// The connector's error.
    pub(crate) async fn open(connector: K) -> RedisResult<Replacing<K>> {
        let conn = connector.connect().await?;
        let shared = Arc::new(Shared {
            connector,
            generation: AtomicU64::new(0),
            current: Mutex::new(conn.clone()),
            reconnecting: tokio::sync::Mutex::new(()),
            reconnects: AtomicU64::new(0),
        });
        Ok(Replacing {
            shared,
            conn,
            generation: 0,
        })
    }

    /// The connection this handle uses now (without picking up a replacement).
    pub(super) fn current(&self) -> &K::Conn {
        &self.conn
    }

    /// Picks up a replacement connection another worker opened.
    fn refresh(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            let current = self
                .shared
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.conn = current.clone();
            self.generation = self.shared.generation.load(Ordering::Acquire);
        }
    }

    /// Replaces the shared connection unless another worker already did since we last looked.
    pub(super) async fn reconnect(&mut self) {
        let shared = Arc::clone(&self.shared);
        {
            let _guard = shared.reconnecting.lock().await;
            if shared.generation.load(Ordering::Acquire) == self.generation {
                let Ok(conn) = shared.connector.connect().await else {
                    // Server still down: the next call fails fast and tries again.
                    return;
                };
                *shared
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = conn;
                shared.generation.fetch_add(1, Ordering::AcqRel);
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.refresh();
    }
}

impl<K: Connector> AppClient for Replacing<K> {
    type Conn = K::Conn;

    fn conn(&mut self) -> &mut Self::Conn {
        self.refresh();
        &mut self.conn
    }

    async fn after_error(&mut self, err: &RedisError) {
        if err.is_unrecoverable_error() {
            self.reconnect().await;
        }
    }

    fn counters(&self) -> ClientCounters {
        ClientCounters {
            retries: 0,
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            attempts: None,
            ..ClientCounters::default()
        }
    }
}

/// The test both replaced connections (raw, wire) pass: after `CLIENT KILL`, the call in
/// flight on the killed connection fails (nothing retries it), and the worker that saw it
/// replaces the connection once for every worker sharing it.
#[cfg(test)]
pub(super) async fn assert_replaced_once_for_every_worker<K: Connector>(
    server: &redis_lab::RedisServer,
    mut first: Replacing<K>,
) {
    use crate::workload::{CallOutcome, timed_call};

    let mut second = first.clone();
    let ping = redis::cmd("PING");
    assert_eq!(timed_call(&mut first, &ping).await.0, CallOutcome::Ok);

    assert!(server.client_kill_normal().await.expect("CLIENT KILL") >= 1);
    // The kill may land before or after this call is written: either way it fails...
    let (outcome, _) = timed_call(&mut first, &ping).await;
    assert!(outcome.is_error(), "{outcome:?}");
    // ...and the worker replaced the connection for everyone.
    assert_eq!(
        first.counters(),
        ClientCounters {
            retries: 0,
            reconnects: 1,
            attempts: None,
            ..ClientCounters::default()
        }
    );
    assert_eq!(timed_call(&mut first, &ping).await.0, CallOutcome::Ok);
    assert_eq!(timed_call(&mut second, &ping).await.0, CallOutcome::Ok);
    assert_eq!(
        second.counters().reconnects,
        1,
        "one reconnect for both workers"
    );
}
