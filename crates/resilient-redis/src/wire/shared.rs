//! The state callers, the reader and the writer share: the socket, the bytes not written yet
//! and the callers waiting for replies, in the order their bytes were queued.

use std::collections::VecDeque;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use redis::{RedisError, RedisResult, Value};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use super::waiter::{Expect, Reply, Waiter};

/// What the connection's handles and its two tasks share.
pub(super) struct Shared {
    /// The socket: callers and the writer write through `&TcpStream` (`try_write`), the
    /// reader reads through it (`try_read_buf`).
    pub(super) stream: TcpStream,
    state: Mutex<State>,
    /// Wakes the writer task when bytes are left for it.
    pub(super) flush: Notify,
}

struct State {
    /// Bytes queued and not written yet, in the order of `waiters`.
    out: Vec<u8>,
    /// An empty buffer to swap with `out` while a caller writes (no allocation per write).
    spare: Vec<u8>,
    /// One per reply group expected, oldest first.
    waiters: VecDeque<Waiter>,
    /// Someone (a caller, or the writer task) owns the socket's write side now, and will
    /// look at `out` again before giving it up.
    writing: bool,
    /// Set once the connection is dead: every later call fails with it.
    failed: Option<RedisError>,
}

/// What the writer task does next.
pub(super) enum Next {
    /// Write the buffer it was given.
    Write,
    /// Nothing queued: wait to be woken.
    Idle,
    /// The connection is dead: stop.
    Dead,
}

/// The error calls get once the server closed the connection.
pub(super) fn closed_error() -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the connection to the server is closed",
    ))
}

impl Shared {
    /// Shares `stream`.
    pub(super) fn new(stream: TcpStream) -> Shared {
        Shared {
            stream,
            state: Mutex::new(State {
                out: Vec::with_capacity(16 * 1024),
                spare: Vec::with_capacity(16 * 1024),
                waiters: VecDeque::new(),
                writing: false,
                failed: None,
            }),
            flush: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the bytes `pack` appends and, unless `expect` is `None` (no reply), a waiter
    /// for their replies, in one critical section; then writes at once if no one else is
    /// writing and no other call awaits its reply (a lone caller: one syscall, no task hop);
    /// otherwise the writer task writes, after one yield, everything queued meanwhile.
    ///
    /// # Errors
    /// The connection's failure if it is dead; a client error if `pack` appended nothing.
    pub(super) fn send(
        &self,
        pack: impl FnOnce(&mut Vec<u8>),
        expect: Option<Expect>,
    ) -> RedisResult<Option<oneshot::Receiver<RedisResult<Reply>>>> {
        let mut state = self.lock();
        if let Some(err) = &state.failed {
            return Err(err.clone());
        }
        let before = state.out.len();
        pack(&mut state.out);
        if state.out.len() == before {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "empty command",
            )));
        }
        // Others are waiting for replies: more callers are likely running, so the writer
        // task (which yields once first) gathers their bytes into one write.
        let others_in_flight = !state.waiters.is_empty();
        let rx = expect.map(|expect| {
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(Waiter { tx, expect });
            rx
        });
        if state.writing {
            return Ok(rx);
        }
        state.writing = true;
        if others_in_flight {
            drop(state);
            self.flush.notify_one();
            return Ok(rx);
        }
        let spare = std::mem::take(&mut state.spare);
        let mut buf = std::mem::replace(&mut state.out, spare);
        drop(state);

        let written = write_now(&self.stream, &buf);

        let mut state = self.lock();
        match written {
            Ok(n) if n == buf.len() => {
                buf.clear();
                state.spare = buf;
            }
            Ok(n) => {
                // Partial write: what is left goes before what others queued meanwhile.
                buf.drain(..n);
                buf.extend_from_slice(&state.out);
                let mut queued = std::mem::replace(&mut state.out, buf);
                queued.clear();
                state.spare = queued;
            }
            Err(err) => {
                drop(state);
                self.fail(None, RedisError::from(err));
                return Ok(rx);
            }
        }
        if state.out.is_empty() {
            state.writing = false;
        } else {
            drop(state);
            self.flush.notify_one();
        }
        Ok(rx)
    }

    /// For the writer task, which owns the write side: swaps the bytes queued since into
    /// `buf` (whose written bytes are cleared). [`Next::Idle`] gives the write side up.
    pub(super) fn next_to_write(&self, buf: &mut Vec<u8>) -> Next {
        let mut state = self.lock();
        if state.failed.is_some() {
            return Next::Dead;
        }
        if state.out.is_empty() {
            state.writing = false;
            return Next::Idle;
        }
        buf.clear();
        std::mem::swap(&mut state.out, buf);
        Next::Write
    }

    /// For the reader: gives `replies` (in order) to the oldest waiters, then sends the
    /// answers of those complete outside the lock. `done` is a reused scratch buffer.
    pub(super) fn deliver(
        &self,
        replies: &mut Vec<Value>,
        done: &mut Vec<(super::waiter::ReplyTx, Reply)>,
    ) {
        let mut state = self.lock();
        for value in replies.drain(..) {
            // A reply nobody waits for (a caller's `CLIENT REPLY` games): dropped.
            let Some(waiter) = state.waiters.front_mut() else {
                continue;
            };
            if let Some(reply) = waiter.take(value)
                && let Some(waiter) = state.waiters.pop_front()
            {
                done.push((waiter.tx, reply));
            }
        }
        drop(state);
        for (tx, reply) in done.drain(..) {
            // A caller that stopped waiting (its future was dropped) is skipped.
            let _ = tx.send(Ok(reply));
        }
    }

    /// Marks the connection dead with `cause`: the oldest waiter gets `first` (if given) or
    /// `cause`, every other waiter and every later call `cause`. Closes the socket.
    pub(super) fn fail(&self, first: Option<RedisError>, cause: RedisError) {
        let waiters = {
            let mut state = self.lock();
            if state.failed.is_none() {
                state.failed = Some(cause.clone());
            }
            std::mem::take(&mut state.waiters)
        };
        // Both directions: the server sees the connection end, the reader wakes up.
        let _ = socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Both);
        self.flush.notify_one();
        let mut first = first;
        for waiter in waiters {
            let err = first.take().unwrap_or_else(|| cause.clone());
            let _ = waiter.tx.send(Err(err));
        }
    }

    /// Whether the connection is dead.
    pub(super) fn is_failed(&self) -> bool {
        self.lock().failed.is_some()
    }
}

/// Writes as much of `buf` as the socket takes without waiting.
fn write_now(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < buf.len() {
        match stream.try_write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(written)
}
