//! A fast single-socket Redis connection: [`WireConnection`].
//!
//! A prototype, not on [`crate::Client`]'s call path yet. It does what redis-rs's
//! `MultiplexedConnection` does for concurrent callers on one socket, with less work per call:
//! a caller queues its bytes and its waiter in one critical section; a lone caller writes them
//! itself (one `try_write`, no task hop), while under concurrency a writer task gathers every
//! caller's bytes into one write; a reader task decodes replies with a direct RESP decoder
//! ([`parse`]) and completes the waiters in order.
//!
//! # Behavior
//! - Plain TCP (`TCP_NODELAY`), RESP2. No `HELLO`, RESP3 (asking for it is an
//!   [`InvalidClientConfig`](redis::ErrorKind::InvalidClientConfig) error), TLS, `CLIENT
//!   SETINFO` or pub/sub (a subscribed RESP2 connection's messages would be taken for
//!   replies).
//! - The handshake ([`WireConnection::connect_with`]): after the TCP connect and before the
//!   connection is handed out, one pipelined write, through the same send path as every
//!   call, of `AUTH [username] password` (if a password is set), `SELECT db` (if the database
//!   is not 0) and `CLIENT SETNAME name` (if [`WireConfig::client_name`] is set), in
//!   redis-rs 1.8's order; nothing at all when none applies. Every reply is checked: a
//!   refused `AUTH` is [`AuthenticationFailed`](redis::ErrorKind::AuthenticationFailed)
//!   ("Password authentication failed", with the server's words, never the password), a
//!   refused `SELECT` names the database, a refused name names the name. A server that does
//!   not know `AUTH username password` (before Redis 6) gets the handshake again with
//!   `AUTH password`, as redis-rs does. The handshake is bounded by
//!   [`WireConfig::handshake_timeout`] (an I/O `TimedOut` error); on any handshake error the
//!   connection is closed before the error is returned.
//! - Calls are answered in the order their bytes were queued; replies are exactly what
//!   `MultiplexedConnection` returns for the same call, server errors included
//!   (`req_packed_command` gives `Ok(Value::ServerError(..))`; a pipeline keeps its error
//!   replies as values; a transaction with a refused command is the same "transaction
//!   aborted" error).
//! - No response timeout: wrap calls in `tokio::time::timeout` if the server may stall.
//! - A caller whose future is dropped after its command was queued does not desynchronise the
//!   connection: its reply is read and discarded.
//! - On an I/O error, end of stream or a reply that is not valid RESP, the connection is dead:
//!   every pending call and every later call fails at once with an I/O error
//!   ([`redis::RedisError::is_io_error`]; a reply that is not RESP gives its waiter the parse
//!   error). It never reconnects: open a new one.
//! - Dropping every clone closes the socket and stops both tasks.

mod handshake;
pub mod parse;
mod shared;
mod tasks;
mod waiter;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt as _;
use redis::{Cmd, Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

pub use handshake::WireConfig;
use shared::{Shared, closed_error};
use waiter::{Expect, Reply};

/// A Redis connection over one TCP socket, shared by every clone (see the module docs).
///
/// ```no_run
/// # async fn run() -> redis::RedisResult<()> {
/// use redis::AsyncCommands;
/// let mut conn = resilient_redis::wire::WireConnection::connect("127.0.0.1:6379".parse().unwrap()).await?;
/// let () = conn.set("k", "v").await?;
/// let v: String = conn.get("k").await?;
/// # let _ = v; Ok(()) }
/// ```
#[derive(Clone)]
pub struct WireConnection {
    inner: Arc<Inner>,
}

/// Owned by the handles only: the last one dropped stops the tasks, which releases the socket.
struct Inner {
    shared: Arc<Shared>,
    reader: AbortHandle,
    writer: AbortHandle,
    /// The database the handshake selected.
    db: i64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl std::fmt::Debug for WireConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConnection")
            .field("peer", &self.inner.shared.stream.peer_addr().ok())
            .field("failed", &self.inner.shared.is_failed())
            .finish()
    }
}

impl WireConnection {
    /// Connects to `addr` over TCP with `TCP_NODELAY`, and starts the reader and writer
    /// tasks on the current tokio runtime. Sends nothing: no `AUTH`, `SELECT` or `HELLO` (it is
    /// [`WireConnection::connect_with`] with default settings).
    ///
    /// # Errors
    /// The connection's I/O error.
    pub async fn connect(addr: SocketAddr) -> RedisResult<WireConnection> {
        Self::connect_with(
            addr,
            &RedisConnectionInfo::default(),
            &WireConfig::default(),
        )
        .await
    }

    /// Connects to `addr` as [`WireConnection::connect`] does, then sends the handshake
    /// `info` and `config` ask for (`AUTH`, `SELECT`, `CLIENT SETNAME`; see the module docs)
    /// and checks its replies before returning the connection. `info`'s
    /// [`lib_name`](RedisConnectionInfo::lib_name) is not sent (no `CLIENT SETINFO`).
    ///
    /// ```no_run
    /// # async fn run() -> redis::RedisResult<()> {
    /// use resilient_redis::wire::{WireConfig, WireConnection};
    /// let info = redis::RedisConnectionInfo::default().set_password("secret").set_db(2);
    /// let config = WireConfig { client_name: Some("worker-1".into()), ..WireConfig::default() };
    /// let conn = WireConnection::connect_with("127.0.0.1:6379".parse().unwrap(), &info, &config).await?;
    /// # let _ = conn; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// - [`InvalidClientConfig`](redis::ErrorKind::InvalidClientConfig) if `info` asks for
    ///   RESP3 or the handshake timeout is zero (before connecting);
    /// - the TCP connect's I/O error;
    /// - [`AuthenticationFailed`](redis::ErrorKind::AuthenticationFailed) for a refused
    ///   `AUTH`; the server's error kind for a refused `SELECT` or `CLIENT SETNAME`;
    /// - an I/O error of kind `TimedOut` if the replies did not all come within
    ///   [`WireConfig::handshake_timeout`], or the connection's I/O error if it broke.
    pub async fn connect_with(
        addr: SocketAddr,
        info: &RedisConnectionInfo,
        config: &WireConfig,
    ) -> RedisResult<WireConnection> {
        handshake::check_config(info, config)?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let shared = Arc::new(Shared::new(stream));
        let reader = tokio::spawn(tasks::read_replies(Arc::clone(&shared))).abort_handle();
        let writer = tokio::spawn(tasks::write_queued(Arc::clone(&shared))).abort_handle();
        let conn = WireConnection {
            inner: Arc::new(Inner {
                shared,
                reader,
                writer,
                db: info.db(),
            }),
        };
        let handshake =
            tokio::time::timeout(config.handshake_timeout, conn.handshake(info, config))
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the server did not answer the connection handshake within {:?}",
                            config.handshake_timeout
                        ),
                    )))
                });
        match handshake {
            Ok(()) => Ok(conn),
            Err(err) => {
                conn.inner.shared.fail(None, err.clone());
                Err(err)
            }
        }
    }

    /// Sends the handshake and checks its replies; once more without the username if the
    /// server does not know `AUTH username password`.
    async fn handshake(&self, info: &RedisConnectionInfo, config: &WireConfig) -> RedisResult<()> {
        for with_username in [true, false] {
            let (pipeline, steps) = handshake::pipeline(info, config, with_username);
            if pipeline.is_empty() {
                return Ok(());
            }
            let replies = self.send_pipeline(&pipeline, 0, pipeline.len()).await?;
            match handshake::check(&replies, steps, info, config)? {
                handshake::Checked::Done => return Ok(()),
                handshake::Checked::RetryWithoutUsername => {}
            }
        }
        Err(RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        )))
    }

    /// Whether the connection is dead (every call fails at once): time to open a new one.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_failed()
    }

    /// Sends one command; its reply as `MultiplexedConnection::send_packed_command` gives it.
    ///
    /// # Errors
    /// The connection's failure (an I/O error) or, for a reply that is not RESP, a parse
    /// error. A server error reply is `Ok(Value::ServerError(..))`.
    pub async fn send_command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let shared = &self.inner.shared;
        if cmd.is_no_response() {
            shared.send(|out| cmd.write_packed_command(out), None)?;
            return Ok(Value::Nil);
        }
        let rx = shared.send(|out| cmd.write_packed_command(out), Some(Expect::One))?;
        match receive(rx).await? {
            Reply::One(value) => Ok(value),
            Reply::Many(values) => Ok(Value::Array(values)),
            Reply::Aborted(_) => Err(closed_error()),
        }
    }

    /// Sends a pipeline; skips `offset` replies and returns the `count` after them, as
    /// `MultiplexedConnection::send_packed_commands` does.
    ///
    /// # Errors
    /// As [`WireConnection::send_command`]; a transaction the server refused to queue a
    /// command of fails with redis-rs's "transaction aborted" error.
    pub async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let expect = Expect::group(offset, count, pipeline.is_transaction());
        let packed = pipeline.get_packed_pipeline();
        let rx = self
            .inner
            .shared
            .send(|out| out.extend_from_slice(&packed), Some(expect))?;
        match receive(rx).await? {
            Reply::Many(values) => Ok(values),
            Reply::One(value) => Ok(vec![value]),
            Reply::Aborted(aborted) => Err(crate::aborted::aborted_transaction(
                pipeline,
                offset,
                count,
                &aborted.errors,
                aborted.kept,
            )
            .await),
        }
    }
}

/// The reply a waiter was sent; a closed connection if its sender is gone.
async fn receive(rx: Option<oneshot::Receiver<RedisResult<Reply>>>) -> RedisResult<Reply> {
    let Some(rx) = rx else {
        return Err(RedisError::from((
            redis::ErrorKind::Client,
            "no reply expected",
        )));
    };
    rx.await.unwrap_or_else(|_| Err(closed_error()))
}

impl redis::aio::ConnectionLike for WireConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.send_command(cmd).boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.send_pipeline(pipeline, offset, count).boxed()
    }

    /// The database the handshake selected (0 unless it sent `SELECT`).
    fn get_db(&self) -> i64 {
        self.inner.db
    }
}
