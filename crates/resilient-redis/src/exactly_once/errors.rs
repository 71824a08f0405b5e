//! The errors of exactly-once calls: an answer the script should not give, and the client's
//! own error read back from a [`RedisError`].

use redis::{RedisError, Value};

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
