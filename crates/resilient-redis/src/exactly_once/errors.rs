//! The errors of exactly-once calls: an answer the script should not give, the client's own
//! error read back from a [`RedisError`], and the call sent whole after `NOSCRIPT`.

use redis::{RedisError, Value};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, ErrorKind, Failure, Outcome};

/// An answer the script should not give (nothing known about the write: ambiguous).
pub(super) fn unexpected(value: Value) -> RedisError {
    Error::new(
        ErrorKind::Server,
        Outcome::Ambiguous,
        format!("exactly-once: unexpected answer from the script: {value:?}"),
    )
    .into_redis()
}

/// The client's error inside a [`RedisError`] from the [`ConnectionLike`](redis::aio::ConnectionLike) path.
pub(super) fn error_of(e: RedisError) -> Error {
    match Error::from_redis(&e) {
        Some(inner) => inner.clone(),
        None => {
            let failure = Failure::of(&e);
            Error::new(failure.kind, failure.outcome, "request failed").with_source(e)
        }
    }
}

/// The handle for the `EVAL` sent after an `EVALSHA` call answered `NOSCRIPT`, started at
/// `started`: what is left of `backend`'s deadline, so that the two calls together keep the
/// write's deadline. Nothing left is an ambiguous `DeadlineExceeded` (see [`after_noscript`]).
pub(super) fn after_noscript_handle(
    backend: &Client,
    started: Instant,
) -> Result<Client, RedisError> {
    let deadline = backend.call_deadline();
    let left = deadline.saturating_sub(started.elapsed());
    if left.is_zero() {
        return Err(after_noscript(
            Error::new(
                ErrorKind::DeadlineExceeded,
                Outcome::Failed,
                "exactly-once: the deadline passed before the script could be sent whole after \
                 NOSCRIPT",
            )
            .into_redis(),
        ));
    }
    backend.with_deadline(left).map_err(Error::into_redis)
}

/// An error of the `EVAL` sent after `NOSCRIPT`. A definite failure is reported as ambiguous:
/// `NOSCRIPT` answers only the `EVALSHA` call's last attempt, and an earlier one, given up on
/// (a connection lost, a master that failed over to a server without the script), may have run
/// the write, whose effects may have reached the server that answered `NOSCRIPT`.
pub(super) fn after_noscript(e: RedisError) -> RedisError {
    let error = error_of(e);
    if error.outcome() == Outcome::Ambiguous {
        return error.into_redis();
    }
    Error::new(
        error.kind(),
        Outcome::Ambiguous,
        format!(
            "{}; an attempt before the server answered NOSCRIPT may have run the write",
            error.message()
        ),
    )
    .with_source(error.into_redis())
    .into_redis()
}
