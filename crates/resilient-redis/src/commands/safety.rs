//! The safety table: which commands may be sent again after an attempt that may have run (see
//! the module docs of [`crate::commands`]), and which the client refuses.

use redis::{Cmd, Pipeline};

use super::args::{self, Name};

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
enum Verdict {
    /// A normal command of this safety.
    Safety(CommandSafety),
    /// A command that changes connection state: refused, with the reason.
    Refused(&'static str),
}

/// Classifies one command by its name and, where it matters, its options. Allocation-free: it
/// runs on every call.
fn verdict(cmd: &Cmd) -> Verdict {
    match args::split(cmd) {
        Some((name, rest)) => verdict_of(&name, rest),
        None => Verdict::Safety(CommandSafety::NonIdempotent),
    }
}

fn verdict_of<'a>(name: &Name, rest: impl Iterator<Item = &'a [u8]> + Clone) -> Verdict {
    use CommandSafety::*;
    use args::has_option;
    let upper_name = name.as_bytes();
    match upper_name {
        b"SELECT" => {
            return Verdict::Refused(
                "SELECT would change the database of a shared connection: put the database in the URL (redis://host/2)",
            );
        }
        b"MULTI" | b"EXEC" | b"DISCARD" | b"WATCH" | b"UNWATCH" => {
            return Verdict::Refused(
                "transactions on a shared connection must be sent whole: use redis::pipe().atomic(), or Client::transaction for WATCH",
            );
        }
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" => {
            return Verdict::Refused(
                "subscriptions need a dedicated connection: use Client::subscribe (follows reconnects, failovers and cluster nodes; drop the stream to unsubscribe)",
            );
        }
        b"SSUBSCRIBE" | b"SUNSUBSCRIBE" => {
            return Verdict::Refused(
                "shard subscriptions need a dedicated connection: use Client::ssubscribe (follows each channel's slot; drop the stream to unsubscribe)",
            );
        }
        b"MONITOR" => {
            return Verdict::Refused(
                "MONITOR turns a connection into a feed of every command: use a dedicated redis-rs connection (or redis-cli monitor)",
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
            let sub = rest.clone().next().map(Name::of);
            let sub = sub.as_ref().map_or(&b""[..], Name::as_bytes);
            return Verdict::Safety(subcommand_safety(upper_name, sub));
        }
        _ => {}
    }
    if name.is_in(CONNECTION_STATE) {
        return Verdict::Refused("this command changes the state of a shared connection");
    }
    if name.is_in(READ_ONLY) {
        Verdict::Safety(ReadOnly)
    } else if name.is_in(IDEMPOTENT) {
        Verdict::Safety(Idempotent)
    } else if name.is_in(BLOCKING) {
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

/// Every command name the safety tables know (for tests elsewhere).
#[cfg(test)]
pub(crate) fn known_names() -> impl Iterator<Item = &'static str> {
    [READ_ONLY, IDEMPOTENT, BLOCKING, CONNECTION_STATE]
        .into_iter()
        .flatten()
        .copied()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{args::assert_sorted_names, cmd_of};
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
            assert_sorted_names(table.iter().copied());
        }
        for name in READ_ONLY {
            assert!(
                !Name::of(name.as_bytes()).is_in(IDEMPOTENT),
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
}
