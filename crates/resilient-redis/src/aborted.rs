//! The answer to a transaction the server refused to queue a command of, built by redis-rs.
//!
//! redis-rs's `MultiplexedConnection` answers it with a "transaction aborted" error listing
//! each refused command's error; that error can only be built inside redis-rs. So the call's
//! replies are replayed, in memory, to a `MultiplexedConnection` over a `tokio::io::duplex`
//! pipe, and its answer is returned: identical by construction. This runs only for such
//! transactions (a client bug, or a command the server does not know), never on the fast path.
//! Used by the client's atomic pipelines (`client/atomic.rs`) and by [`crate::wire`].

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Pipeline, RedisConnectionInfo, RedisError, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What `MultiplexedConnection::req_packed_commands(pipeline, offset, count)` returns when
/// the skipped replies held `errors` (each with its position among the call's replies, MULTI's
/// at 0) and `kept` replies followed them.
pub(crate) async fn aborted_transaction(
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
    errors: &[(usize, ServerError)],
    kept: usize,
) -> RedisError {
    let fallback = first_error(errors);
    // An error in MULTI's own reply (nested MULTI) makes redis-rs compute the index -1:
    // answer with that error instead.
    if errors.first().is_some_and(|(at, _)| *at == 0) {
        return fallback;
    }
    let mut replies = Vec::new();
    let mut errors = errors.iter().peekable();
    for at in 0..offset {
        match errors.next_if(|(err_at, _)| *err_at == at) {
            Some((_, err)) => encode_error(err, &mut replies),
            None => replies.extend_from_slice(b"+QUEUED\r\n"),
        }
    }
    for _ in 0..kept {
        replies.extend_from_slice(b"$-1\r\n");
    }
    let request_len = pipeline.get_packed_pipeline().len();
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let info = RedisConnectionInfo::default().set_skip_set_lib_name();
    let Ok((mut conn, driver)) = MultiplexedConnection::new(&info, client).await else {
        return fallback;
    };
    let fake_server = async move {
        let mut request = vec![0; request_len];
        server.read_exact(&mut request).await?;
        server.write_all(&replies).await?;
        Ok::<_, std::io::Error>(server)
    };
    let ask = async {
        let (answer, _server) = futures::join!(
            conn.req_packed_commands(pipeline, offset, count),
            fake_server
        );
        answer
    };
    tokio::select! {
        answer = ask => answer.err().unwrap_or(fallback),
        () = driver => fallback,
    }
}

/// The first refused command's error, as a `RedisError`.
fn first_error(errors: &[(usize, ServerError)]) -> RedisError {
    match errors.first() {
        Some((_, err)) => RedisError::from(err.clone()),
        None => RedisError::from((redis::ErrorKind::Client, "transaction aborted")),
    }
}

/// `err` as the error line redis-rs parses back to it (code, space, details).
pub(crate) fn encode_error(err: &ServerError, out: &mut Vec<u8>) {
    out.push(b'-');
    out.extend_from_slice(err.code().as_bytes());
    if let Some(details) = err.details() {
        out.push(b' ');
        out.extend_from_slice(details.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}
