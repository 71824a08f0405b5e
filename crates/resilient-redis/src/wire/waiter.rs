//! Callers waiting for their replies, and how a reply group is gathered, as redis-rs's
//! `MultiplexedConnection` gathers it.

use redis::{RedisResult, ServerError, Value};
use tokio::sync::oneshot;

/// What a caller receives when all of its replies arrived.
#[derive(Debug)]
pub(super) enum Reply {
    /// The reply of a single command.
    One(Value),
    /// The kept replies of a pipeline.
    Many(Vec<Value>),
    /// A transaction the server refused to queue a command of: see [`super::replay`].
    Aborted(Aborted),
}

/// The replies of a transaction in which a skipped reply (`MULTI`'s or a `QUEUED`) was an
/// error: redis-rs answers such a call with an error only it can build.
#[derive(Debug)]
pub(super) struct Aborted {
    /// The skipped error replies, by their position among the call's replies.
    pub(super) errors: Vec<(usize, ServerError)>,
    /// How many replies were kept after the skipped ones.
    pub(super) kept: usize,
}

/// The sending side of a caller's reply.
pub(super) type ReplyTx = oneshot::Sender<RedisResult<Reply>>;

/// One caller waiting for the replies to what it sent.
pub(super) struct Waiter {
    pub(super) tx: ReplyTx,
    pub(super) expect: Expect,
}

/// How many replies a waiter takes and which it keeps.
pub(super) enum Expect {
    /// One reply, returned as it is.
    One,
    /// A pipeline: `skip` replies are dropped, then replies are kept until there are `keep`
    /// of them (at least one: redis-rs checks the count after keeping a reply).
    Group(Box<Group>),
}

/// The state of a pipeline's replies (`req_packed_commands(pipeline, offset, count)`).
pub(super) struct Group {
    skip: usize,
    keep: usize,
    transaction: bool,
    seen: usize,
    kept: Vec<Value>,
    errors: Vec<(usize, ServerError)>,
}

impl Expect {
    /// A pipeline's expectation: skip `offset` replies, keep `count`; a transaction's skipped
    /// error replies abort it.
    pub(super) fn group(offset: usize, count: usize, transaction: bool) -> Expect {
        Expect::Group(Box::new(Group {
            skip: offset,
            keep: count,
            transaction,
            seen: 0,
            kept: Vec::with_capacity(count.min(1024)),
            errors: Vec::new(),
        }))
    }
}

impl Waiter {
    /// Takes the next reply; the caller's answer once this was its last.
    pub(super) fn take(&mut self, value: Value) -> Option<Reply> {
        let group = match &mut self.expect {
            Expect::One => return Some(Reply::One(value)),
            Expect::Group(group) => group,
        };
        group.seen += 1;
        if group.skip > 0 {
            group.skip -= 1;
            if group.transaction
                && let Value::ServerError(err) = value
            {
                group.errors.push((group.seen - 1, err));
            }
            return None;
        }
        group.kept.push(value);
        if group.kept.len() < group.keep {
            return None;
        }
        let kept = std::mem::take(&mut group.kept);
        Some(if group.errors.is_empty() {
            Reply::Many(kept)
        } else {
            Reply::Aborted(Aborted {
                errors: std::mem::take(&mut group.errors),
                kept: kept.len(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(expect: Expect) -> Waiter {
        let (tx, _rx) = oneshot::channel();
        Waiter { tx, expect }
    }

    fn error(line: &str) -> Value {
        redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).expect("an error reply")
    }

    #[test]
    fn a_pipeline_skips_then_keeps() {
        let mut w = waiter(Expect::group(1, 2, false));
        assert!(w.take(Value::Okay).is_none());
        assert!(w.take(Value::Int(1)).is_none());
        let Some(Reply::Many(kept)) = w.take(error("ERR x")) else {
            panic!("not done")
        };
        assert_eq!(kept, vec![Value::Int(1), error("ERR x")]);
    }

    #[test]
    fn a_transaction_with_a_queueing_error_is_aborted() {
        let mut w = waiter(Expect::group(3, 1, true));
        assert!(w.take(Value::Okay).is_none());
        assert!(w.take(error("ERR unknown command")).is_none());
        assert!(w.take(Value::SimpleString("QUEUED".into())).is_none());
        let Some(Reply::Aborted(aborted)) = w.take(error("EXECABORT discarded")) else {
            panic!("not aborted")
        };
        assert_eq!(aborted.kept, 1);
        assert_eq!(aborted.errors.len(), 1);
        assert_eq!(aborted.errors[0].0, 1);
    }

    #[test]
    fn no_count_still_takes_one_reply_as_redis_rs_does() {
        let mut w = waiter(Expect::group(0, 0, false));
        let Some(Reply::Many(kept)) = w.take(Value::Nil) else {
            panic!("not done")
        };
        assert_eq!(kept, vec![Value::Nil]);
    }
}
