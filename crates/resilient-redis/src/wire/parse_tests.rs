use bytes::BytesMut;
use proptest::prelude::*;
use redis::{ServerErrorKind, Value};

use super::*;

/// redis-rs's parse of one complete reply.
fn reference(bytes: &[u8]) -> Value {
    redis::parse_redis_value(bytes).expect("redis-rs parses it")
}

/// Every reply [`Decoder`] finds in `bytes`, fed in one piece.
fn decode_all(bytes: &[u8]) -> Vec<Value> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::default();
    let mut values = Vec::new();
    while let Some(value) = decoder.decode(&mut buf).expect("valid RESP") {
        values.push(value);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    values
}

fn one(bytes: &[u8]) -> Value {
    let mut buf = BytesMut::from(bytes);
    let value = decode(&mut buf).expect("valid RESP").expect("complete");
    assert!(buf.is_empty(), "left over: {buf:?}");
    value
}

fn fails(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    assert!(decode(&mut buf).is_err(), "{bytes:?} decoded");
}

#[test]
fn simple_strings_ok_is_okay() {
    assert_eq!(one(b"+OK\r\n"), Value::Okay);
    assert_eq!(one(b"+PONG\r\n"), Value::SimpleString("PONG".into()));
    assert_eq!(one(b"+\r\n"), Value::SimpleString(String::new()));
    fails(b"+\xff\xfe\r\n");
}

#[test]
fn error_replies_are_redis_rs_server_errors() {
    let err = one(b"-ERR value is not an integer or out of range\r\n");
    assert_eq!(
        err,
        reference(b"-ERR value is not an integer or out of range\r\n")
    );
    let Value::ServerError(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.kind(), Some(ServerErrorKind::ResponseError));
    assert_eq!(
        err.details(),
        Some("value is not an integer or out of range")
    );

    let Value::ServerError(moved) = one(b"-MOVED 3999 127.0.0.1:6381\r\n") else {
        panic!("not an error")
    };
    assert_eq!(moved.kind(), Some(ServerErrorKind::Moved));
    assert_eq!(moved.details(), Some("3999 127.0.0.1:6381"));

    let Value::ServerError(custom) = one(b"-THROTTLED slow down\r\n") else {
        panic!("not an error")
    };
    assert_eq!(custom.kind(), None);
    assert_eq!(custom.code(), "THROTTLED");
}

#[test]
fn integers_as_redis_rs_reads_them() {
    assert_eq!(one(b":0\r\n"), Value::Int(0));
    assert_eq!(one(b":-42\r\n"), Value::Int(-42));
    assert_eq!(one(b":9223372036854775807\r\n"), Value::Int(i64::MAX));
    assert_eq!(one(b":-9223372036854775808\r\n"), Value::Int(i64::MIN));
    assert_eq!(one(b": 7 \r\n"), reference(b": 7 \r\n"));
    assert_eq!(one(b":+7\r\n"), reference(b":+7\r\n"));
    fails(b":9223372036854775808\r\n");
    fails(b":\r\n");
    fails(b":12a\r\n");
}

#[test]
fn bulk_strings_and_nil() {
    assert_eq!(
        one(b"$5\r\nhello\r\n"),
        Value::BulkString(b"hello".to_vec())
    );
    assert_eq!(one(b"$0\r\n\r\n"), Value::BulkString(Vec::new()));
    assert_eq!(
        one(b"$4\r\na\r\nb\r\n"),
        Value::BulkString(b"a\r\nb".to_vec())
    );
    assert_eq!(one(b"$-1\r\n"), Value::Nil);
    assert_eq!(one(b"$-7\r\n"), reference(b"$-7\r\n"));
    fails(b"$3\r\nabcXY");
}

#[test]
fn arrays_nested_empty_and_nil() {
    assert_eq!(one(b"*0\r\n"), Value::Array(Vec::new()));
    assert_eq!(one(b"*-1\r\n"), Value::Nil);
    let nested = b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+OK\r\n";
    assert_eq!(
        one(nested),
        Value::Array(vec![
            Value::Int(1),
            Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Nil]),
            Value::Okay,
        ])
    );
    assert_eq!(one(nested), reference(nested));
    let with_error = b"*2\r\n-ERR no\r\n:1\r\n";
    assert_eq!(one(with_error), reference(with_error));
}

#[test]
fn resp3_types_go_to_redis_rs() {
    let frames: &[&[u8]] = &[
        b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n",
        b"~2\r\n:1\r\n:2\r\n",
        b"_\r\n",
        b",3.25\r\n",
        b"#t\r\n",
        b"(12345678901234567890\r\n",
        b"!9\r\nERR oops!\r\n",
        b"=7\r\ntxt:abc\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        b"*2\r\n:1\r\n%1\r\n+k\r\n,1.5\r\n",
    ];
    for frame in frames {
        assert_eq!(one(frame), reference(frame), "{frame:?}");
    }
}

#[test]
fn incomplete_replies_consume_nothing() {
    let full = b"*2\r\n$5\r\nhello\r\n:12\r\n";
    for end in 0..full.len() {
        let mut buf = BytesMut::from(&full[..end]);
        assert_eq!(decode(&mut buf).expect("valid prefix"), None, "{end}");
        assert_eq!(&buf[..], &full[..end]);
    }
}

#[test]
fn every_split_point_gives_the_same_replies() {
    let stream: &[u8] = b"+OK\r\n:1\r\n$3\r\nabc\r\n*2\r\n$1\r\nx\r\n*1\r\n:-5\r\n$-1\r\n\
        -ERR bad\r\n%1\r\n+a\r\n,2.5\r\n*0\r\n$0\r\n\r\n";
    let expected = decode_all(stream);
    assert_eq!(expected.len(), 9);
    for split in 0..=stream.len() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&stream[..split]);
        let mut values = Vec::new();
        while let Some(value) = decoder.decode(&mut buf).expect("valid") {
            values.push(value);
        }
        buf.extend_from_slice(&stream[split..]);
        while let Some(value) = decoder.decode(&mut buf).expect("valid") {
            values.push(value);
        }
        assert_eq!(values, expected, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn a_large_reply_arriving_byte_by_byte() {
    let mut stream = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        stream.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut got = None;
    for &byte in &stream {
        assert!(got.is_none());
        buf.extend_from_slice(&[byte]);
        got = decoder.decode(&mut buf).expect("valid");
    }
    assert_eq!(got, Some(reference(&stream)));
}

#[test]
fn hostile_lengths_are_errors_not_allocations() {
    fails(b"$9999999999999\r\n");
    fails(b"$536870913\r\n");
    fails(b"*99999999999999\r\n");
    fails(b"%-1\r\n");
    fails(b"|-3\r\n");
    fails(b"!-1\r\n");
    fails(b"*1\r\n$-2x\r\n");
    fails(b"@1\r\n");
    // A large announced array waits for its elements without allocating them.
    let mut buf = BytesMut::from(&b"*4000000000\r\n"[..]);
    assert_eq!(decode(&mut buf).expect("a legal length"), None);
    // A line with no end in sight.
    let mut long = vec![b'+'; MAX_LINE_LEN + 2];
    long[1] = b'a';
    fails(&long);
}

#[test]
fn nesting_is_limited_as_redis_rs_limits_it() {
    let nested = |depth: usize| {
        let mut bytes = b"*1\r\n".repeat(depth - 1);
        bytes.extend_from_slice(b":1\r\n");
        bytes
    };
    let ok = nested(MAX_DEPTH);
    assert_eq!(one(&ok), reference(&ok));
    let too_deep = nested(MAX_DEPTH + 1);
    assert!(redis::parse_redis_value(&too_deep).is_err());
    fails(&too_deep);
    // Also when the reply arrives in pieces (the scanning path).
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::from(&too_deep[..too_deep.len() - 2]);
    let first = decoder.decode(&mut buf);
    buf.extend_from_slice(b"\r\n");
    assert!(first.is_err() || decoder.decode(&mut buf).is_err());
}

/// RESP2 encoding of a value made of RESP2 types.
fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::BulkString(bytes) => {
            out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Value::ServerError(err) => crate::aborted::encode_error(err, out),
        other => unreachable!("not generated: {other:?}"),
    }
}

fn resp2_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        Just(Value::Okay),
        any::<i64>().prop_map(Value::Int),
        "[a-zA-Z0-9 :.-]{0,20}".prop_map(Value::SimpleString),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::BulkString),
        (
            prop_oneof![
                Just("ERR"),
                Just("MOVED"),
                Just("WRONGTYPE"),
                Just("NOSCRIPT"),
                Just("THROTTLED")
            ],
            "[a-z0-9 :.]{0,20}",
        )
            .prop_map(|(code, detail)| reference(format!("-{code} {detail}\r\n").as_bytes())),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner, 0..8).prop_map(Value::Array),
            Just(Value::Array(Vec::new())),
        ]
    })
}

proptest! {
    #[test]
    fn decode_matches_redis_rs(values in proptest::collection::vec(resp2_value(), 1..4), split in any::<prop::sample::Index>()) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for value in &values {
            let mut frame = Vec::new();
            encode(value, &mut frame);
            expected.push(reference(&frame));
            stream.extend_from_slice(&frame);
        }
        // Whole, as redis-rs parses each frame.
        prop_assert_eq!(&decode_all(&stream), &expected);
        // In two pieces, split anywhere.
        let split = split.index(stream.len() + 1);
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&stream[..split]);
        let mut got = Vec::new();
        while let Some(value) = decoder.decode(&mut buf).expect("valid") {
            got.push(value);
        }
        buf.extend_from_slice(&stream[split..]);
        while let Some(value) = decoder.decode(&mut buf).expect("valid") {
            got.push(value);
        }
        prop_assert_eq!(got, expected);
    }
}
