//! The shape of a pipeline's replies, as redis-rs asks for them and as the server would have
//! sent them.

use redis::{Pipeline, Value};

/// The offsets of a whole pipeline's replies, as redis-rs asks for them.
pub(super) fn whole(pipeline: &Pipeline) -> (usize, usize) {
    if pipeline.is_transaction() {
        (pipeline.len() + 1, 1)
    } else {
        (0, pipeline.len())
    }
}

/// The replies the server would have sent for the pipeline on the wire (for a transaction:
/// `OK`, one `QUEUED` per command, then the `EXEC` array), from `offset`, `count` of them.
pub(super) fn wire_replies(
    pipeline: &Pipeline,
    results: Vec<Value>,
    offset: usize,
    count: usize,
) -> Vec<Value> {
    if !pipeline.is_transaction() {
        return results.into_iter().skip(offset).take(count).collect();
    }
    let n = pipeline.len();
    if offset == n + 1 && count == 1 {
        return vec![Value::Array(results)];
    }
    std::iter::once(Value::Okay)
        .chain((0..n).map(|_| Value::SimpleString("QUEUED".to_owned())))
        .chain(std::iter::once(Value::Array(results)))
        .skip(offset)
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_replies_have_the_wire_shape() {
        let mut p = redis::pipe();
        p.atomic().incr("a", 1).incr("b", 1);
        let results = vec![Value::Int(1), Value::Int(2)];
        let (offset, count) = whole(&p);
        assert_eq!(
            wire_replies(&p, results.clone(), offset, count),
            vec![Value::Array(results.clone())]
        );
        assert_eq!(
            wire_replies(&p, results.clone(), 0, 4),
            vec![
                Value::Okay,
                Value::SimpleString("QUEUED".into()),
                Value::SimpleString("QUEUED".into()),
                Value::Array(results.clone())
            ]
        );
        let mut plain = redis::pipe();
        plain.incr("a", 1).incr("b", 1);
        assert_eq!(wire_replies(&plain, results.clone(), 0, 2), results);
    }
}
