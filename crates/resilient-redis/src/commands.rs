//! The command table: which commands are safe to send again after an attempt that may have run.
//!
//! # The rule
//! A command may be re-sent after an *ambiguous* failure (the request may have reached the server)
//! only if running it twice leaves the database in the same state as running it once:
//!
//! - [`CommandSafety::ReadOnly`]: reads. Repeating them changes nothing.
//! - [`CommandSafety::Idempotent`]: writes whose second run leaves the same state (`SET k v`, `MSET`,
//!   `HSET`, `DEL`, `SADD`, `EXPIREAT`, ...). A repeat can change the *reply* though not the state:
//!   `SET k v NX` answers `OK` then nil, `DEL k` answers 1 then 0, `SET k v GET` returns the old value
//!   then `v`, `RENAME a b` succeeds then fails with "no such key". The client returns the reply of the
//!   attempt that completed, so after a retry such a reply describes the second run. Relative expiries
//!   (`SET .. EX`, `EXPIRE`) are counted as idempotent: a repeat moves the expiry later by the time
//!   between the two runs, which is bounded by the call's deadline.
//! - [`CommandSafety::NonIdempotent`]: a second run changes the state again (`INCR*`, `DECR*`,
//!   `APPEND`, `LPUSH`/`RPUSH`, pops, `XADD *`, `SPOP`, `GETDEL`, `PUBLISH`, `EVAL`/`EVALSHA`/`FCALL`
//!   unless the call declares them idempotent, ...). Every command the table does not know is here.
//! - [`CommandSafety::Blocking`]: blocking commands (`BLPOP`, `XREAD BLOCK`, `WAIT`, ...). They run on
//!   a dedicated connection, are not cut by the response timeout, and are never re-sent after an
//!   ambiguous failure (most of them pop).
//!
//! A pipeline or a transaction is as safe as its least safe command.

use redis::{Arg, Cmd, Pipeline};

/// How safe a command is to send again after an attempt that may have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommandSafety {
    /// Reads only: always safe to repeat.
    ReadOnly,
    /// A write whose repeat leaves the same state (the reply may differ; see the module docs).
    Idempotent,
    /// A write whose repeat changes the state again: never re-sent after an ambiguous failure.
    NonIdempotent,
    /// A blocking command: runs on a dedicated connection, never re-sent after an ambiguous failure.
    Blocking,
}

impl CommandSafety {
    /// Whether a request of this safety may be re-sent after an attempt that may have run.
    pub fn is_retry_safe(self) -> bool {
        matches!(self, CommandSafety::ReadOnly | CommandSafety::Idempotent)
    }

    fn combine(self, other: CommandSafety) -> CommandSafety {
        self.max(other)
    }
}

/// Commands that only read.
const READ_ONLY: &[&str] = &[
    "BITCOUNT",
    "BITFIELD_RO",
    "BITPOS",
    "DBSIZE",
    "DUMP",
    "ECHO",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXISTS",
    "EXPIRETIME",
    "FCALL_RO",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GET",
    "GETBIT",
    "GETRANGE",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HRANDFIELD",
    "HSCAN",
    "HSTRLEN",
    "HVALS",
    "INFO",
    "KEYS",
    "LASTSAVE",
    "LCS",
    "LINDEX",
    "LLEN",
    "LOLWUT",
    "LPOS",
    "LRANGE",
    "MGET",
    "PEXPIRETIME",
    "PFCOUNT",
    "PING",
    "PTTL",
    "RANDOMKEY",
    "ROLE",
    "SCAN",
    "SCARD",
    "SDIFF",
    "SINTER",
    "SINTERCARD",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SRANDMEMBER",
    "SSCAN",
    "STRLEN",
    "SUBSTR",
    "SUNION",
    "TIME",
    "TOUCH",
    "TTL",
    "TYPE",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREVRANGE",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZINTER",
    "ZINTERCARD",
    "ZLEXCOUNT",
    "ZMSCORE",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANK",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
];

/// Writes whose repeat leaves the same state.
const IDEMPOTENT: &[&str] = &[
    "COPY",
    "DEL",
    "EXPIRE",
    "EXPIREAT",
    "FLUSHALL",
    "FLUSHDB",
    "GEOADD",
    "GEOSEARCHSTORE",
    "GETEX",
    "GETSET",
    "HDEL",
    "HMSET",
    "HSET",
    "HSETNX",
    "LSET",
    "LTRIM",
    "MSET",
    "MSETNX",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PFADD",
    "PFMERGE",
    "PSETEX",
    "RENAME",
    "RENAMENX",
    "RESTORE",
    "SADD",
    "SDIFFSTORE",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SINTERSTORE",
    "SMOVE",
    "SREM",
    "SUNIONSTORE",
    "UNLINK",
    "XACK",
    "XDEL",
    "XGROUP",
    "XSETID",
    "ZDIFFSTORE",
    "ZINTERSTORE",
    "ZRANGESTORE",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZUNIONSTORE",
];

/// Blocking commands (they may wait on the server for a long time).
const BLOCKING: &[&str] = &[
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZMPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "WAIT",
    "WAITAOF",
];

/// Commands that change the state of the connection itself. They cannot work on a shared,
/// reconnecting connection, so the client refuses them with a clear error.
const CONNECTION_STATE: &[&str] = &[
    "AUTH",
    "DISCARD",
    "EXEC",
    "HELLO",
    "MONITOR",
    "MULTI",
    "PSUBSCRIBE",
    "PSYNC",
    "PUNSUBSCRIBE",
    "QUIT",
    "RESET",
    "SELECT",
    "SSUBSCRIBE",
    "SUBSCRIBE",
    "SUNSUBSCRIBE",
    "SYNC",
    "UNSUBSCRIBE",
    "UNWATCH",
    "WATCH",
];

/// What the table says of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A normal command of this safety.
    Safety(CommandSafety),
    /// A command that changes connection state: refused, with the reason.
    Refused(&'static str),
}

/// Whether `name` (upper case) is in `table` (sorted: checked by a unit test).
fn name_is(name: &[u8], table: &[&str]) -> bool {
    table.binary_search_by(|t| t.as_bytes().cmp(name)).is_ok()
}

/// The bytes of a plain argument; `None` for a cursor argument (`Arg::Cursor`).
pub(crate) fn arg_bytes(arg: Arg<&[u8]>) -> Option<&[u8]> {
    match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    }
}

/// The longest command name the table knows, with room to spare.
const MAX_NAME: usize = 24;

/// `bytes` in upper case, in a stack buffer; `None` when longer than any known command name.
fn upper(bytes: &[u8]) -> Option<([u8; MAX_NAME], usize)> {
    if bytes.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    for (d, s) in buf.iter_mut().zip(bytes) {
        *d = s.to_ascii_uppercase();
    }
    Some((buf, bytes.len()))
}

/// Classifies one command by its name and, where it matters, its options. Allocation-free: it
/// runs on every call.
pub(crate) fn verdict(cmd: &Cmd) -> Verdict {
    let mut args = cmd.args_iter().filter_map(arg_bytes);
    let Some(name) = args.next() else {
        return Verdict::Safety(CommandSafety::NonIdempotent);
    };
    let Some((buf, len)) = upper(name) else {
        return Verdict::Safety(CommandSafety::NonIdempotent);
    };
    verdict_of(&buf[..len], args)
}

fn has_option<'a>(mut rest: impl Iterator<Item = &'a [u8]>, option: &str) -> bool {
    rest.any(|a| a.eq_ignore_ascii_case(option.as_bytes()))
}

fn verdict_of<'a>(upper_name: &[u8], rest: impl Iterator<Item = &'a [u8]> + Clone) -> Verdict {
    use CommandSafety::*;
    match upper_name {
        b"SELECT" => {
            return Verdict::Refused(
                "SELECT would change the database of a shared connection: put the database in the URL (redis://host/2)",
            );
        }
        b"MULTI" | b"EXEC" | b"DISCARD" | b"WATCH" | b"UNWATCH" => {
            return Verdict::Refused(
                "transactions on a shared connection must be sent whole: use redis::pipe().atomic()",
            );
        }
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE"
        | b"SUNSUBSCRIBE" | b"MONITOR" => {
            return Verdict::Refused(
                "subscriptions need a dedicated connection: use Client::subscribe (re-subscribes after reconnects and failovers)",
            );
        }
        // SET is idempotent in every form (NX/XX/GET change only the reply).
        b"SET" => return Verdict::Safety(Idempotent),
        b"GET" => return Verdict::Safety(ReadOnly),
        // ZADD .. INCR increments.
        b"ZADD" => {
            return Verdict::Safety(if has_option(rest, "INCR") {
                NonIdempotent
            } else {
                Idempotent
            });
        }
        // XADD with an explicit id fails on a repeat (state unchanged); with `*` it adds again.
        b"XADD" => {
            let auto_id = rest.clone().any(|a| a == b"*");
            return Verdict::Safety(if auto_id { NonIdempotent } else { Idempotent });
        }
        // XREAD is a read unless it blocks; XREADGROUP moves the group's cursor.
        b"XREAD" => {
            return Verdict::Safety(if has_option(rest, "BLOCK") {
                Blocking
            } else {
                ReadOnly
            });
        }
        b"XREADGROUP" => {
            return Verdict::Safety(if has_option(rest, "BLOCK") {
                Blocking
            } else {
                NonIdempotent
            });
        }
        // Two-word commands whose safety depends on the subcommand.
        b"SCRIPT" | b"FUNCTION" | b"CONFIG" | b"CLIENT" | b"OBJECT" | b"MEMORY" | b"XINFO"
        | b"CLUSTER" | b"COMMAND" | b"SLOWLOG" | b"LATENCY" | b"ACL" => {
            let sub = rest.clone().next().and_then(upper);
            let sub = sub.as_ref().map(|(b, l)| &b[..*l]).unwrap_or(b"");
            return Verdict::Safety(subcommand_safety(upper_name, sub));
        }
        _ => {}
    }
    if name_is(upper_name, CONNECTION_STATE) {
        return Verdict::Refused("this command changes the state of a shared connection");
    }
    if name_is(upper_name, READ_ONLY) {
        Verdict::Safety(ReadOnly)
    } else if name_is(upper_name, IDEMPOTENT) {
        Verdict::Safety(Idempotent)
    } else if name_is(upper_name, BLOCKING) {
        Verdict::Safety(Blocking)
    } else {
        Verdict::Safety(NonIdempotent)
    }
}

fn subcommand_safety(name: &[u8], sub: &[u8]) -> CommandSafety {
    use CommandSafety::*;
    match (name, sub) {
        (b"SCRIPT", b"EXISTS") | (b"FUNCTION", b"LIST" | b"DUMP" | b"STATS") => ReadOnly,
        (b"SCRIPT", b"LOAD" | b"FLUSH") | (b"FUNCTION", b"LOAD" | b"DELETE" | b"FLUSH") => {
            Idempotent
        }
        (b"CONFIG", b"GET") => ReadOnly,
        (b"CONFIG", b"SET") => Idempotent,
        (b"CLIENT", b"INFO" | b"LIST" | b"GETNAME" | b"ID") => ReadOnly,
        (b"OBJECT" | b"MEMORY" | b"XINFO" | b"COMMAND" | b"SLOWLOG" | b"LATENCY", _) => ReadOnly,
        (b"CLUSTER", b"INFO" | b"NODES" | b"SLOTS" | b"SHARDS" | b"KEYSLOT" | b"MYID") => ReadOnly,
        (b"ACL", b"WHOAMI" | b"LIST" | b"USERS" | b"GETUSER" | b"CAT") => ReadOnly,
        _ => NonIdempotent,
    }
}

/// The safety of one command, `Err` with the reason when the client refuses it.
pub(crate) fn command_safety(cmd: &Cmd) -> Result<CommandSafety, &'static str> {
    match verdict(cmd) {
        Verdict::Safety(s) => Ok(s),
        Verdict::Refused(why) => Err(why),
    }
}

/// The safety of a pipeline or transaction: that of its least safe command.
pub(crate) fn pipeline_safety(pipeline: &Pipeline) -> Result<CommandSafety, &'static str> {
    let mut safety = CommandSafety::ReadOnly;
    for cmd in pipeline.cmd_iter() {
        safety = safety.combine(command_safety(cmd)?);
    }
    Ok(safety)
}

/// The safety the table gives a command, for callers that want to know before sending it.
///
/// ```
/// use resilient_redis::{CommandSafety, safety_of};
/// assert_eq!(safety_of(&redis::cmd("GET").arg("k")), CommandSafety::ReadOnly);
/// assert_eq!(safety_of(&redis::cmd("SET").arg("k").arg("v")), CommandSafety::Idempotent);
/// assert_eq!(safety_of(&redis::cmd("INCR").arg("k")), CommandSafety::NonIdempotent);
/// assert_eq!(safety_of(&redis::cmd("BLPOP").arg("q").arg(0)), CommandSafety::Blocking);
/// ```
pub fn safety_of(cmd: &Cmd) -> CommandSafety {
    match verdict(cmd) {
        Verdict::Safety(s) => s,
        Verdict::Refused(_) => CommandSafety::NonIdempotent,
    }
}

/// How long a blocking command may block on the server, from its arguments, when it says.
/// `None` means it may block forever (timeout 0) or we cannot tell.
pub(crate) fn blocking_timeout(cmd: &Cmd) -> Option<std::time::Duration> {
    let args: Vec<&[u8]> = cmd.args_iter().filter_map(arg_bytes).collect();
    let name = args.first()?.to_ascii_uppercase();
    let parse_secs = |a: &[u8]| -> Option<std::time::Duration> {
        let s = std::str::from_utf8(a).ok()?;
        let secs: f64 = s.parse().ok()?;
        (secs > 0.0 && secs.is_finite()).then(|| std::time::Duration::from_secs_f64(secs))
    };
    let parse_ms = |a: &[u8]| -> Option<std::time::Duration> {
        let s = std::str::from_utf8(a).ok()?;
        let ms: u64 = s.parse().ok()?;
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    };
    match name.as_slice() {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BRPOPLPUSH" | b"BLMOVE" => {
            parse_secs(args.last()?)
        }
        b"BLMPOP" | b"BZMPOP" => parse_secs(args.get(1)?),
        b"WAIT" => parse_ms(args.get(2)?),
        b"WAITAOF" => parse_ms(args.get(3)?),
        b"XREAD" | b"XREADGROUP" => {
            let pos = args.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
            parse_ms(args.get(pos + 1)?)
        }
        _ => None,
    }
}

/// A command from its words, for tests.
#[cfg(test)]
pub(crate) fn cmd_of(parts: &[&str]) -> Cmd {
    let mut c = redis::cmd(parts[0]);
    for p in &parts[1..] {
        c.arg(*p);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandSafety::*;

    fn safety(parts: &[&str]) -> Result<CommandSafety, &'static str> {
        command_safety(&cmd_of(parts))
    }

    #[test]
    fn table_examples() {
        assert_eq!(safety(&["get", "k"]), Ok(ReadOnly));
        assert_eq!(safety(&["SET", "k", "v", "NX", "GET"]), Ok(Idempotent));
        assert_eq!(safety(&["MSET", "a", "1", "b", "2"]), Ok(Idempotent));
        assert_eq!(safety(&["HSET", "h", "f", "v"]), Ok(Idempotent));
        assert_eq!(safety(&["EXPIREAT", "k", "100"]), Ok(Idempotent));
        assert_eq!(safety(&["DEL", "k"]), Ok(Idempotent));
        for c in [
            "INCR",
            "INCRBY",
            "DECR",
            "DECRBY",
            "INCRBYFLOAT",
            "HINCRBY",
            "ZINCRBY",
        ] {
            assert_eq!(safety(&[c, "k", "1"]), Ok(NonIdempotent), "{c}");
        }
        for c in [
            "APPEND", "LPUSH", "RPUSH", "LPOP", "RPOP", "SPOP", "GETDEL", "PUBLISH",
        ] {
            assert_eq!(safety(&[c, "k", "v"]), Ok(NonIdempotent), "{c}");
        }
        assert_eq!(safety(&["EVAL", "return 1", "0"]), Ok(NonIdempotent));
        assert_eq!(safety(&["EVALSHA", "abc", "0"]), Ok(NonIdempotent));
        assert_eq!(safety(&["FCALL", "f", "0"]), Ok(NonIdempotent));
        assert_eq!(safety(&["EVAL_RO", "return 1", "0"]), Ok(ReadOnly));
        assert_eq!(safety(&["XADD", "s", "*", "f", "v"]), Ok(NonIdempotent));
        assert_eq!(safety(&["XADD", "s", "5-1", "f", "v"]), Ok(Idempotent));
        assert_eq!(safety(&["ZADD", "z", "INCR", "1", "m"]), Ok(NonIdempotent));
        assert_eq!(safety(&["ZADD", "z", "1", "m"]), Ok(Idempotent));
        assert_eq!(safety(&["BLPOP", "q", "0"]), Ok(Blocking));
        assert_eq!(
            safety(&["XREAD", "BLOCK", "100", "STREAMS", "s", "$"]),
            Ok(Blocking)
        );
        assert_eq!(safety(&["XREAD", "STREAMS", "s", "0"]), Ok(ReadOnly));
        assert_eq!(safety(&["SCRIPT", "LOAD", "return 1"]), Ok(Idempotent));
        assert_eq!(safety(&["CONFIG", "GET", "maxmemory"]), Ok(ReadOnly));
        assert_eq!(
            safety(&["CLIENT", "KILL", "TYPE", "normal"]),
            Ok(NonIdempotent)
        );
        assert_eq!(safety(&["SOMENEWCOMMAND", "x"]), Ok(NonIdempotent));
        assert!(safety(&["SELECT", "2"]).is_err());
        assert!(safety(&["MULTI"]).is_err());
        assert!(safety(&["SUBSCRIBE", "ch"]).is_err());
    }

    #[test]
    fn tables_are_sorted_upper_case_and_disjoint() {
        for table in [READ_ONLY, IDEMPOTENT, BLOCKING, CONNECTION_STATE] {
            for w in table.windows(2) {
                assert!(w[0] < w[1], "{} must come after {}", w[1], w[0]);
            }
            for name in table {
                assert_eq!(*name, name.to_ascii_uppercase());
                assert!(name.len() <= MAX_NAME);
            }
        }
        for name in READ_ONLY {
            assert!(
                !name_is(name.as_bytes(), IDEMPOTENT),
                "{name} is in two tables"
            );
        }
    }

    #[test]
    fn pipeline_takes_the_least_safe_command() {
        let mut p = redis::pipe();
        p.get("a").set("b", 1);
        assert_eq!(pipeline_safety(&p), Ok(Idempotent));
        p.incr("c", 1);
        assert_eq!(pipeline_safety(&p), Ok(NonIdempotent));
        let mut t = redis::pipe();
        t.atomic().get("a").get("b");
        assert_eq!(pipeline_safety(&t), Ok(ReadOnly));
    }

    #[test]
    fn blocking_timeouts_are_read_from_arguments() {
        use std::time::Duration;
        let mut c = redis::cmd("BLPOP");
        c.arg("q").arg("1.5");
        assert_eq!(blocking_timeout(&c), Some(Duration::from_millis(1500)));
        let mut c = redis::cmd("BLPOP");
        c.arg("q").arg(0);
        assert_eq!(blocking_timeout(&c), None);
        let mut c = redis::cmd("XREAD");
        c.arg("BLOCK").arg(250).arg("STREAMS").arg("s").arg("$");
        assert_eq!(blocking_timeout(&c), Some(Duration::from_millis(250)));
    }
}
