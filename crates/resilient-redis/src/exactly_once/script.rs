//! The server-side half: one Lua script that runs a command (or a group) at most once per token,
//! and the code that invokes it and reads its answer.
//!
//! # The script
//! `KEYS[1]` is the record's key (in Redis Cluster the command's keys follow it in `KEYS`,
//! unused by the script but declared, so Redis routes and checks the call by all of them);
//! `ARGV[1]` the record key's TTL in milliseconds; `ARGV[2]` the record's field in that key (a
//! hash, for a generated token: see `token.rs`), or empty when the record is the key itself (a
//! caller-chosen key); `ARGV[3]` is `s` for one command (its arguments follow) or `g` for a
//! group (each command as its argument count, then its arguments).
//! 1. If the record exists, it is returned, marked as a replay: nothing runs. For a hash, the
//!    same `HMGET` also tells whether the hash exists (its marker field `.`). The record's
//!    expiry is set again (`PEXPIRE`): a write, so that a `WAIT` after the replay
//!    (`Durability::Replicated`) covers the record too. A retry on a new master may find a
//!    record its replicas do not hold yet; `WAIT` counts only what this connection wrote.
//! 2. Otherwise the command runs with `redis.pcall`. A single command that fails (`WRONGTYPE`,
//!    `OOM`, a syntax error, ...) did not apply: its error is returned and nothing is recorded,
//!    so the call can be corrected and the same token used again. (`redis.call` would record
//!    nothing either, and costs the same for a command that succeeds, but Redis appends the
//!    script's name to the error's text: `pcall` returns the command's error unchanged.)
//! 3. A group runs every command, as `MULTI`/`EXEC` does after a runtime error: the replies,
//!    error entries included, are recorded (some commands applied, so a retry must not run any
//!    of them again).
//! 4. The reply is recorded: `HSET` of the field, and when the hash is new, its marker and its
//!    expiry (`PEXPIRE`); for a key of its own, `PSETEX` (the same as `SET .. PX`, without
//!    option parsing: measurably cheaper inside the script). The record is a one-byte type tag
//!    and the reply: `i` and the integer in decimal, `b` and the bulk string, `s` and the status,
//!    `n` for nil; arrays and groups (rarer, and nested) as `m` and the reply in `cmsgpack`
//!    (binary-safe; integers, bulk strings, nil, status and error replies and nested arrays
//!    round-trip). No table is built, and nothing is encoded, for the common replies.
//!
//! # Its answer
//! A reply that ran now comes back bare when it is not an array (an integer, a bulk string,
//! nil, a status, an error): what the command itself returns, with nothing to unwrap. Everything
//! else is a two-element array: `{0, reply}` for an array reply (or a group's replies) that ran
//! now, `{1, reply}` for a replay. A bare answer is never an array, and every array is one of
//! these pairs, so a fresh reply cannot be taken for a replay.
//!
//! Every attempt checks the token, the first one included, although skipping the `GET` on a
//! first attempt would save about 1 µs of server time: a first attempt given up on (its
//! connection declared dead) can still be read and run by the server *after* its retry, and
//! only the check makes that order harmless.

use redis::{Arg, Cmd, Pipeline, Value};

/// The Lua both scripts share: reading a record back (`replay`: the answer to a retry) and
/// recording a reply (`encode`: the answer to send now and the record to keep, none for a
/// single command's error).
macro_rules! prelude {
    () => {
        r#"local function replay(rec)
  local tag, body = string.sub(rec, 1, 1), string.sub(rec, 2)
  if tag == 'i' then
    return {1, tonumber(body)}
  elseif tag == 'b' then
    return {1, body}
  elseif tag == 's' then
    return {1, {ok = body}}
  elseif tag == 'n' then
    return {1, false}
  end
  return {1, cmsgpack.unpack(body)}
end
local function encode(r)
  local t = type(r)
  if t == 'number' then
    return r, string.format('i%d', r)
  elseif t == 'string' then
    return r, 'b' .. r
  elseif t == 'boolean' then
    return r, 'n'
  elseif r.err then
    return r, nil
  elseif r.ok then
    return r, 's' .. r.ok
  end
  return {0, r}, 'm' .. cmsgpack.pack(r)
end
"#
    };
}
pub(super) use prelude;

/// The script body. Its first line is its version: a new text has a new SHA1, so a client never
/// runs a script whose record format it does not know, and records of an older version (under
/// other token keys) expire on their own.
const BODY: &str = concat!(
    "-- resilient-redis exactly-once v3\n",
    prelude!(),
    r#"local k, f = KEYS[1], ARGV[2]
local rec, new
if f == '' then
  rec = redis.call('GET', k)
else
  local got = redis.call('HMGET', k, f, '.')
  rec, new = got[1], not got[2]
end
if rec then
  redis.call('PEXPIRE', k, ARGV[1])
  return replay(rec)
end
local r
if ARGV[3] == 's' then
  r = redis.pcall(unpack(ARGV, 4))
else
  r = {}
  local i, n, j = 4, #ARGV, 0
  while i <= n do
    local c = tonumber(ARGV[i])
    j = j + 1
    r[j] = redis.pcall(unpack(ARGV, i + 1, i + c))
    i = i + c + 1
  end
end
local answer, s = encode(r)
if not s then
  return answer
end
if f == '' then
  redis.call('PSETEX', k, ARGV[1], s)
elseif new then
  redis.call('HSET', k, f, s, '.', '')
  redis.call('PEXPIRE', k, ARGV[1])
else
  redis.call('HSET', k, f, s)
end
return answer
"#
);

/// At most this many arguments per command: Lua's `unpack` is bounded by its C stack (8000
/// slots in Redis's Lua 5.1). Checked before sending, so a group never fails half-way.
pub(super) const MAX_ARGS: usize = 7_000;

/// The script text and its SHA1 (computed once).
pub(super) struct Script {
    body: String,
    sha: String,
}

impl Script {
    /// The script for standalone servers (any Redis with Lua and `cmsgpack`), or for Redis
    /// Cluster: there it starts with `#!lua` (Redis >= 7.0), which makes Redis refuse a command
    /// that touches a slot other than the token key's instead of running it.
    pub(super) fn new(cluster: bool) -> Script {
        let body = if cluster {
            format!("#!lua\n{BODY}")
        } else {
            BODY.to_owned()
        };
        Script::of(body)
    }

    /// A script of `body` (the batch script is made this way in `batch.rs`).
    pub(super) fn of(body: String) -> Script {
        let sha = redis::Script::new(&body).get_hash().to_owned();
        Script { body, sha }
    }

    /// The command and its first argument that run the script.
    pub(super) fn invoke_as(&self, how: Invoke) -> (&'static str, &str) {
        match how {
            Invoke::Sha => ("EVALSHA", &self.sha),
            Invoke::Body => ("EVAL", &self.body),
        }
    }
}

/// What the script runs.
#[derive(Clone, Copy)]
pub(super) enum Commands<'a> {
    One(&'a Cmd),
    Group(&'a Pipeline),
}

/// How the script is named in the request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Invoke {
    /// `EVALSHA` (the hot path).
    Sha,
    /// `EVAL` with the whole text, after `NOSCRIPT` (it also loads the script).
    Body,
}

/// The bytes of an argument (cursors are refused before: see `check_command`).
pub(super) fn simple(arg: Arg<&[u8]>) -> &[u8] {
    crate::commands::arg_bytes(arg).unwrap_or_default()
}

/// The request that runs `commands` with its record at `field` of `token_key` (or the key
/// itself when `field` is empty): one allocation for the arguments and one
/// for their bytes, sized up front.
pub(super) fn invocation(
    script: &Script,
    how: Invoke,
    token_key: &[u8],
    field: &[u8],
    keys: &[&[u8]],
    ttl_ms: &[u8],
    commands: Commands<'_>,
) -> Cmd {
    let (name, head) = script.invoke_as(how);
    let (mut argc, mut bytes) = (
        7,
        name.len() + head.len() + token_key.len() + field.len() + ttl_ms.len() + 2,
    );
    match commands {
        Commands::One(cmd) => {
            argc += cmd.args_iter().len();
            bytes += cmd.args_iter().map(|a| simple(a).len()).sum::<usize>();
        }
        Commands::Group(p) => {
            for cmd in p.cmd_iter() {
                argc += cmd.args_iter().len() + 1;
                bytes += cmd.args_iter().map(|a| simple(a).len()).sum::<usize>() + 4;
            }
        }
    }
    let mut c = Cmd::with_capacity(argc, bytes);
    c.arg(name).arg(head).arg(1 + keys.len()).arg(token_key);
    for key in keys {
        c.arg(*key);
    }
    c.arg(ttl_ms).arg(field);
    match commands {
        Commands::One(cmd) => {
            c.arg("s");
            for a in cmd.args_iter() {
                c.arg(simple(a));
            }
        }
        Commands::Group(p) => {
            c.arg("g");
            for cmd in p.cmd_iter() {
                c.arg(cmd.args_iter().len());
                for a in cmd.args_iter() {
                    c.arg(simple(a));
                }
            }
        }
    }
    c
}

/// What the script answered.
#[derive(Debug)]
pub(super) enum Answer {
    /// The command's reply: run now, or replayed from the record.
    Reply { value: Value, replayed: bool },
    /// The server does not have the script cached: it did not run.
    NoScript,
    /// An error reply: a single command's own error (nothing recorded), or an error raised by
    /// the script itself (nothing ran).
    Error(Value),
    /// Anything else: not an answer of this script.
    Unexpected(Value),
}

pub(super) fn read_answer(value: Value) -> Answer {
    match value {
        // A reply that ran now, bare (see the module docs).
        Value::Int(_)
        | Value::BulkString(_)
        | Value::Nil
        | Value::Okay
        | Value::SimpleString(_) => Answer::Reply {
            value,
            replayed: false,
        },
        Value::Array(mut pair) if pair.len() == 2 => {
            let replayed = match pair[0] {
                Value::Int(0) => false,
                Value::Int(1) => true,
                _ => return Answer::Unexpected(Value::Array(pair)),
            };
            let value = pair.pop().unwrap_or(Value::Nil);
            Answer::Reply { value, replayed }
        }
        Value::ServerError(e) if e.code() == "NOSCRIPT" => Answer::NoScript,
        Value::ServerError(e) => Answer::Error(Value::ServerError(e)),
        other => Answer::Unexpected(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Cmd) -> Vec<String> {
        c.args_iter()
            .map(|a| String::from_utf8_lossy(simple(a)).into_owned())
            .collect()
    }

    #[test]
    fn single_command_invocation() {
        let script = Script::new(false);
        let incr = redis::cmd("INCR").arg("counter").clone();
        let c = invocation(
            &script,
            Invoke::Sha,
            b"xo:t1",
            b"A",
            &[],
            b"60000",
            Commands::One(&incr),
        );
        assert_eq!(
            args(&c),
            [
                "EVALSHA",
                &script.sha,
                "1",
                "xo:t1",
                "60000",
                "A",
                "s",
                "INCR",
                "counter"
            ]
        );
        assert_eq!(script.sha.len(), 40);
        let c = invocation(
            &script,
            Invoke::Body,
            b"xo:t1",
            b"",
            &[],
            b"60000",
            Commands::One(&incr),
        );
        assert_eq!(args(&c)[..2], ["EVAL".to_owned(), script.body.clone()]);
    }

    #[test]
    fn group_invocation_counts_each_command() {
        let script = Script::new(true);
        assert!(script.body.starts_with("#!lua\n"));
        let mut p = redis::pipe();
        p.atomic().incr("a", 2).get("b");
        let c = invocation(
            &script,
            Invoke::Sha,
            b"k",
            b"",
            &[b"a", b"b"],
            b"1000",
            Commands::Group(&p),
        );
        assert_eq!(args(&c)[2..5], ["3", "k", "a"].map(str::to_owned));
        assert_eq!(args(&c)[6..8], ["1000", ""].map(str::to_owned));
        assert_eq!(
            args(&c)[8..],
            ["g", "3", "INCRBY", "a", "2", "2", "GET", "b"].map(str::to_owned)
        );
    }

    #[test]
    fn answers_are_read() {
        let a = read_answer(Value::Array(vec![Value::Int(1), Value::Int(7)]));
        assert!(matches!(
            a,
            Answer::Reply {
                value: Value::Int(7),
                replayed: true
            }
        ));
        let noscript = redis::parse_redis_value(b"-NOSCRIPT No matching script.\r\n").unwrap();
        assert!(matches!(read_answer(noscript), Answer::NoScript));
        let wrongtype = redis::parse_redis_value(b"-WRONGTYPE bad\r\n").unwrap();
        assert!(matches!(read_answer(wrongtype), Answer::Error(_)));
        // Fresh scalars come back bare; fresh arrays wrapped.
        for bare in [
            Value::Int(3),
            Value::BulkString(b"v".to_vec()),
            Value::Nil,
            Value::Okay,
            Value::SimpleString("PONG".into()),
        ] {
            assert!(
                matches!(read_answer(bare.clone()), Answer::Reply { value, replayed: false } if value == bare)
            );
        }
        let fresh_array = Value::Array(vec![Value::Int(1), Value::Int(2)]);
        assert!(matches!(
            read_answer(Value::Array(vec![Value::Int(0), fresh_array.clone()])),
            Answer::Reply { value, replayed: false } if value == fresh_array
        ));
        for odd in [
            Value::Array(vec![Value::Int(2), Value::Nil]),
            Value::Array(vec![Value::Int(0)]),
            Value::Boolean(true),
        ] {
            assert!(matches!(read_answer(odd), Answer::Unexpected(_)));
        }
    }
}
