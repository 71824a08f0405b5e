//! The connection's two tasks: the reader, which decodes replies and completes waiters in
//! order, and the writer, which flushes what callers could not write themselves.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use redis::RedisError;

use super::parse::Decoder;
use super::shared::{Next, Shared, closed_error};

/// How much the read buffer grows by when it is nearly full.
const READ_CHUNK: usize = 64 * 1024;
/// The least free space a read is made with.
const MIN_READ_SPACE: usize = 4 * 1024;

/// Reads replies until the connection fails, completing waiters in order.
pub(super) async fn read_replies(shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = Decoder::default();
    let mut replies = Vec::new();
    let mut done = Vec::new();
    loop {
        if buf.capacity() - buf.len() < MIN_READ_SPACE {
            buf.reserve(READ_CHUNK);
        }
        if let Err(err) = shared.stream.readable().await {
            shared.fail(None, RedisError::from(err));
            return;
        }
        match shared.stream.try_read_buf(&mut buf) {
            Ok(0) => {
                shared.fail(None, closed_error());
                return;
            }
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => {
                shared.fail(None, RedisError::from(err));
                return;
            }
        }
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(value)) => replies.push(value),
                Ok(None) => break,
                Err(err) => {
                    // The replies before the garbage are still theirs; the waiter of the
                    // garbage gets the parse error, everyone else a closed connection.
                    shared.deliver(&mut replies, &mut done);
                    shared.fail(Some(err), closed_error());
                    return;
                }
            }
        }
        if !replies.is_empty() {
            shared.deliver(&mut replies, &mut done);
        }
    }
}

/// Flushes queued bytes each time it is handed the write side, after one yield so that
/// callers running concurrently queue theirs into the same write.
pub(super) async fn write_queued(shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        shared.flush.notified().await;
        tokio::task::yield_now().await;
        loop {
            match shared.next_to_write(&mut buf) {
                Next::Write => {}
                Next::Idle => break,
                Next::Dead => return,
            }
            if let Err(err) = write_all(&shared, &buf).await {
                shared.fail(None, RedisError::from(err));
                return;
            }
        }
    }
}

async fn write_all(shared: &Shared, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        shared.stream.writable().await?;
        match shared.stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
