//! A caller's atomic pipeline (`redis::pipe().atomic()`, or the plain pipeline with `MULTI` ..
//! `EXEC` a durable write of one is sent as): every reply is read, `MULTI`'s included, so a
//! refused `MULTI` whose commands ran on their own is told apart from one that ran nothing.
//!
//! redis-rs's multiplexed connection reads only `EXEC`'s reply of an atomic pipeline. When
//! `MULTI` itself is refused (`BUSY` from a script that ends a moment later, `THROTTLED` from a
//! proxy, an ACL), the commands after it run outside any transaction and `EXEC` answers "EXEC
//! without MULTI": redis-rs 1.8 then panics in its connection task (an index below zero, debug
//! builds), killing the connection under every caller on it, or reports a transaction error
//! (release builds), which reads as a clean failure of writes that were applied. Asked for every
//! reply, it does neither, and this module gives the caller what redis-rs gives in every other
//! case.

use redis::{Pipeline, RedisError, RedisResult, ServerError, Value, aio::MultiplexedConnection};
use resilience::Classification;

use crate::{
    error::{ErrorKind, Outcome},
    retry::AttemptError,
};

/// Whether `request` opens a transaction whose replies redis-rs would skip: an atomic
/// pipeline, or a plain one that starts with `MULTI` and skips that far.
pub(super) fn is_transaction(pipeline: &Pipeline, offset: usize) -> bool {
    offset > 0
        && (pipeline.is_transaction()
            || pipeline
                .cmd_iter()
                .next()
                .and_then(crate::commands::command_name)
                .is_some_and(|n| n.as_bytes() == b"MULTI"))
}

/// Sends the transaction `pipeline` on `conn` and answers as `send_packed_commands(pipeline,
/// offset, count)` would (its `offset` replies skipped), except that a refused `MULTI` whose
/// commands ran is an [`Outcome::Applied`] failure, and one whose commands were all refused too
/// is `MULTI`'s error.
pub(super) async fn send(
    conn: &mut MultiplexedConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> Result<RedisResult<Vec<Value>>, AttemptError> {
    match conn.send_packed_commands(pipeline, 0, offset + count).await {
        Ok(replies) => settle(pipeline, offset, count, replies).await,
        Err(e) => Ok(Err(e)),
    }
}

/// What the replies of a transaction (`MULTI`, one per command, then `count` from `EXEC` on)
/// mean to its caller.
async fn settle(
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
    mut replies: Vec<Value>,
) -> Result<RedisResult<Vec<Value>>, AttemptError> {
    if offset == 0 || replies.len() != offset + count {
        return Ok(Err(RedisError::from((
            redis::ErrorKind::Parse,
            "an atomic pipeline got another number of replies than it sent commands",
        ))));
    }
    let queued = &replies[1..offset];
    if let Value::ServerError(refused) = &replies[0] {
        let ran = queued
            .iter()
            .filter(|v| !matches!(v, Value::ServerError(_)))
            .count();
        if ran == 0 {
            return Ok(Err(RedisError::from(refused.clone())));
        }
        // Some writes ran, outside a transaction: never to be sent again.
        return Err(AttemptError::new(
            ErrorKind::Server,
            Outcome::Applied,
            format!(
                "MULTI was refused ({}) but {ran} of the atomic pipeline's {} commands ran on \
                 their own, outside a transaction",
                refused.code(),
                queued.len()
            ),
            Some(RedisError::from(refused.clone())),
            Classification::fail(),
        ));
    }
    let errors: Vec<(usize, ServerError)> = queued
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            Value::ServerError(e) => Some((i + 1, e.clone())),
            _ => None,
        })
        .collect();
    // A plain pipeline's skipped errors are dropped by redis-rs too (EXEC's reply says it).
    if errors.is_empty() || !pipeline.is_transaction() {
        return Ok(Ok(replies.split_off(offset)));
    }
    // A command refused when queued: EXECABORT, and redis-rs's own error for it.
    Ok(Err(crate::aborted::aborted_transaction(
        pipeline, offset, count, &errors, count,
    )
    .await))
}
