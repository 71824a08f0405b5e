//! Where a command's keys are: one table of key positions, from Redis's `COMMAND INFO` key specs
//! (checked with `COMMAND GETKEYS` against Redis 7.0). A command the table does not name has its
//! key as first argument: `GET`, `HSET`, ..., and most module commands.
//!
//! Positions count as Redis counts them: the command name is position 0. The cluster client
//! routes by these keys ([`command_slot`](super::command_slot)) and exactly-once writes declare
//! them next to their token key.

use redis::Cmd;

use super::args::{self, Name};

/// Where the last key of a [`KeySpec::Range`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Last {
    /// At this position.
    At(usize),
    /// This many words before the command's last word: 0 is the last word, 1 the one before it
    /// (`BLPOP k1 k2 0`: its keys come before its timeout).
    FromEnd(usize),
}

/// Where one command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySpec {
    /// No key: `PING`, `CONFIG ...`, `PUBLISH`, ...
    Keyless,
    /// Keys from position `first` to `last`, every `step` words (`MSET k1 v1 k2 v2`: step 2).
    Range {
        /// The first key's position.
        first: usize,
        /// Where the last key is.
        last: Last,
        /// Words from one key to the next.
        step: usize,
    },
    /// The number of keys at position `at`, the keys right after it, every `step` words
    /// (`EVAL script 2 k1 k2 arg`). A count that is not a number or goes past the end means no
    /// key (Redis refuses the command).
    NumKeys {
        /// The position of the number of keys.
        at: usize,
        /// Words from one key to the next.
        step: usize,
        /// Position 1 is a key too (`ZUNIONSTORE dest 2 k1 k2`).
        dest: bool,
    },
    /// After the first `STREAMS` at or after position `from`, the first half of the remaining
    /// words (the other half are ids): `XREAD`, `XREADGROUP`.
    Streams {
        /// Where the search for `STREAMS` starts.
        from: usize,
    },
    /// The key at position 1, and the word after the first `STORE` and the first `STOREDIST` at
    /// or after position `from`: `GEORADIUS`, `GEORADIUSBYMEMBER`.
    Store {
        /// Where the search for `STORE` / `STOREDIST` starts.
        from: usize,
    },
    /// `SORT`: the key at position 1, and the word after its last `STORE` (the patterns of `BY`
    /// and `GET`, and `LIMIT`'s numbers, are skipped as Redis skips them).
    Sort,
    /// `MIGRATE`: the key at position 3, or every word after `KEYS` (the passwords of `AUTH`
    /// and `AUTH2` are skipped).
    Migrate,
}

use KeySpec::{Keyless, Migrate, NumKeys, Range, Sort, Store, Streams};

/// Keys from `first` to `last`, every `step` words.
const fn range(first: usize, last: Last, step: usize) -> KeySpec {
    Range { first, last, step }
}

/// The number of keys at `at`, the keys after it every `step` words (and a destination first).
const fn counted(at: usize, step: usize, dest: bool) -> KeySpec {
    NumKeys { at, step, dest }
}

/// One key, at position 1.
const FIRST_ARGUMENT: KeySpec = range(1, Last::At(1), 1);
/// Every argument is a key.
const ALL: KeySpec = range(1, Last::FromEnd(0), 1);
/// Source and destination.
const TWO: KeySpec = range(1, Last::At(2), 1);
/// Keys, then a timeout.
const BEFORE_TIMEOUT: KeySpec = range(1, Last::FromEnd(1), 1);
/// A subcommand, then one key (`OBJECT ENCODING key`); none for `OBJECT HELP`.
const AFTER_SUBCOMMAND: KeySpec = range(2, Last::At(2), 1);
/// Key, value, key, value, ...
const PAIRS: KeySpec = range(1, Last::FromEnd(0), 2);
/// `BITOP operation destination key ...`.
const AFTER_OPERATION: KeySpec = range(2, Last::FromEnd(0), 1);
/// `numkeys key ...`.
const COUNTED: KeySpec = counted(1, 1, false);
/// `script-or-timeout numkeys key ...`.
const COUNTED_SECOND: KeySpec = counted(2, 1, false);
/// `destination numkeys key ...`.
const COUNTED_WITH_DEST: KeySpec = counted(2, 1, true);
/// `numkeys key value key value ...`: Redis 8.4's `MSETEX` (not in the Redis 7.0 the table
/// was checked against; from its documented syntax).
const COUNTED_PAIRS: KeySpec = counted(1, 2, false);

/// The key positions of every command whose keys are not just its first argument, sorted by
/// name (checked by a unit test). Shard channels (`SPUBLISH`, `SSUBSCRIBE`) are not keys: Redis
/// marks them `not_key`.
const TABLE: &[(&str, KeySpec)] = &[
    ("ACL", Keyless),
    ("ASKING", Keyless),
    ("AUTH", Keyless),
    ("BGREWRITEAOF", Keyless),
    ("BGSAVE", Keyless),
    ("BITOP", AFTER_OPERATION),
    ("BLMOVE", TWO),
    ("BLMPOP", COUNTED_SECOND),
    ("BLPOP", BEFORE_TIMEOUT),
    ("BRPOP", BEFORE_TIMEOUT),
    ("BRPOPLPUSH", TWO),
    ("BZMPOP", COUNTED_SECOND),
    ("BZPOPMAX", BEFORE_TIMEOUT),
    ("BZPOPMIN", BEFORE_TIMEOUT),
    ("CLIENT", Keyless),
    ("CLUSTER", Keyless),
    ("COMMAND", Keyless),
    ("CONFIG", Keyless),
    ("COPY", TWO),
    ("DBSIZE", Keyless),
    ("DEBUG", Keyless),
    ("DEL", ALL),
    ("DISCARD", Keyless),
    ("ECHO", Keyless),
    ("EVAL", COUNTED_SECOND),
    ("EVALSHA", COUNTED_SECOND),
    ("EVALSHA_RO", COUNTED_SECOND),
    ("EVAL_RO", COUNTED_SECOND),
    ("EXEC", Keyless),
    ("EXISTS", ALL),
    ("FAILOVER", Keyless),
    ("FCALL", COUNTED_SECOND),
    ("FCALL_RO", COUNTED_SECOND),
    ("FLUSHALL", Keyless),
    ("FLUSHDB", Keyless),
    ("FUNCTION", Keyless),
    ("GEORADIUS", Store { from: 6 }),
    ("GEORADIUSBYMEMBER", Store { from: 5 }),
    ("GEOSEARCHSTORE", TWO),
    ("HELLO", Keyless),
    ("INFO", Keyless),
    ("KEYS", Keyless),
    ("LASTSAVE", Keyless),
    ("LATENCY", Keyless),
    ("LCS", TWO),
    ("LMOVE", TWO),
    ("LMPOP", COUNTED),
    ("LOLWUT", Keyless),
    ("MEMORY", AFTER_SUBCOMMAND),
    ("MGET", ALL),
    ("MIGRATE", Migrate),
    ("MODULE", Keyless),
    ("MONITOR", Keyless),
    ("MSET", PAIRS),
    ("MSETEX", COUNTED_PAIRS),
    ("MSETNX", PAIRS),
    ("MULTI", Keyless),
    ("OBJECT", AFTER_SUBCOMMAND),
    ("PFCOUNT", ALL),
    ("PFDEBUG", AFTER_SUBCOMMAND),
    ("PFMERGE", ALL),
    ("PFSELFTEST", Keyless),
    ("PING", Keyless),
    ("PSUBSCRIBE", Keyless),
    ("PSYNC", Keyless),
    ("PUBLISH", Keyless),
    ("PUBSUB", Keyless),
    ("PUNSUBSCRIBE", Keyless),
    ("QUIT", Keyless),
    ("RANDOMKEY", Keyless),
    ("READONLY", Keyless),
    ("READWRITE", Keyless),
    ("RENAME", TWO),
    ("RENAMENX", TWO),
    ("REPLCONF", Keyless),
    ("REPLICAOF", Keyless),
    ("RESET", Keyless),
    ("ROLE", Keyless),
    ("RPOPLPUSH", TWO),
    ("SAVE", Keyless),
    ("SCAN", Keyless),
    ("SCRIPT", Keyless),
    ("SDIFF", ALL),
    ("SDIFFSTORE", ALL),
    ("SELECT", Keyless),
    ("SHUTDOWN", Keyless),
    ("SINTER", ALL),
    ("SINTERCARD", COUNTED),
    ("SINTERSTORE", ALL),
    ("SLAVEOF", Keyless),
    ("SLOWLOG", Keyless),
    ("SMOVE", TWO),
    ("SORT", Sort),
    ("SPUBLISH", Keyless),
    ("SSUBSCRIBE", Keyless),
    ("SUBSCRIBE", Keyless),
    ("SUNION", ALL),
    ("SUNIONSTORE", ALL),
    ("SUNSUBSCRIBE", Keyless),
    ("SWAPDB", Keyless),
    ("SYNC", Keyless),
    ("TIME", Keyless),
    ("TOUCH", ALL),
    ("UNLINK", ALL),
    ("UNSUBSCRIBE", Keyless),
    ("UNWATCH", Keyless),
    ("WAIT", Keyless),
    ("WAITAOF", Keyless),
    ("WATCH", ALL),
    ("XGROUP", AFTER_SUBCOMMAND),
    ("XINFO", AFTER_SUBCOMMAND),
    ("XREAD", Streams { from: 1 }),
    ("XREADGROUP", Streams { from: 4 }),
    ("ZDIFF", COUNTED),
    ("ZDIFFSTORE", COUNTED_WITH_DEST),
    ("ZINTER", COUNTED),
    ("ZINTERCARD", COUNTED),
    ("ZINTERSTORE", COUNTED_WITH_DEST),
    ("ZMPOP", COUNTED),
    ("ZRANGESTORE", TWO),
    ("ZUNION", COUNTED),
    ("ZUNIONSTORE", COUNTED_WITH_DEST),
];

/// The key positions of the command `name`.
pub(crate) fn spec_of(name: &Name) -> KeySpec {
    TABLE
        .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
        .map_or(FIRST_ARGUMENT, |i| TABLE[i].1)
}

/// Positions `start..end`, every `step`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    step: usize,
}

impl Span {
    const NONE: Span = Span {
        start: 0,
        end: 0,
        step: 1,
    };

    fn new(start: usize, end: usize, step: usize) -> Span {
        Span {
            start,
            end: end.max(start),
            step: step.max(1),
        }
    }

    fn one(at: usize) -> Span {
        Span::new(at, at + 1, 1)
    }

    fn holds(&self, i: usize) -> bool {
        (self.start..self.end).contains(&i) && (i - self.start).is_multiple_of(self.step)
    }
}

/// The key positions of one command's `words` (its name first): at most three spans (a key and
/// two destinations for `GEORADIUS .. STORE .. STOREDIST ..`).
fn spans<'a>(spec: KeySpec, words: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> [Span; 3] {
    let argc = words.len();
    let is = |w: &[u8], keyword: &str| w.eq_ignore_ascii_case(keyword.as_bytes());
    let find = |from: usize, keyword: &str| {
        let mut indexed = words.clone().enumerate().skip(from);
        indexed.find(|(_, w)| is(w, keyword)).map(|(i, _)| i)
    };
    let mut out = [Span::NONE; 3];
    match spec {
        Keyless => {}
        Range { first, last, step } => {
            let end = match last {
                Last::At(i) => i + 1,
                Last::FromEnd(n) => argc.saturating_sub(n),
            };
            out[0] = Span::new(first, end, step);
        }
        NumKeys { at, step, dest } => {
            if dest {
                out[0] = Span::one(1);
            }
            let count = words.clone().nth(at).and_then(|w| {
                let n: usize = std::str::from_utf8(w).ok()?.parse().ok()?;
                n.checked_mul(step)?.checked_add(at + 1)
            });
            if let Some(end) = count.filter(|&end| end <= argc) {
                out[1] = Span::new(at + 1, end, step);
            }
        }
        Streams { from } => {
            if let Some(at) = find(from, "STREAMS") {
                let ids_and_keys = argc - at - 1;
                out[0] = Span::new(at + 1, at + 1 + ids_and_keys / 2, 1);
            }
        }
        Store { from } => {
            out[0] = Span::one(1);
            for (slot, keyword) in [(1, "STORE"), (2, "STOREDIST")] {
                if let Some(at) = find(from, keyword).filter(|at| at + 1 < argc) {
                    out[slot] = Span::one(at + 1);
                }
            }
        }
        Sort => {
            out[0] = Span::one(1);
            let mut skip = 0;
            for (i, w) in words.enumerate().skip(2) {
                if skip > 0 {
                    skip -= 1;
                } else if is(w, "LIMIT") {
                    skip = 2;
                } else if is(w, "GET") || is(w, "BY") {
                    skip = 1;
                } else if is(w, "STORE") && i + 1 < argc {
                    out[1] = Span::one(i + 1);
                }
            }
        }
        Migrate => {
            out[0] = Span::one(3);
            let mut skip = 0;
            for (i, w) in words.enumerate().skip(6) {
                if skip > 0 {
                    skip -= 1;
                } else if is(w, "AUTH") {
                    skip = 1;
                } else if is(w, "AUTH2") {
                    skip = 2;
                } else if is(w, "KEYS") {
                    out[0] = Span::new(i + 1, argc, 1);
                    break;
                }
            }
        }
    }
    out
}

/// The keys of one command with their positions, in argument order; nothing for a keyless
/// command. Allocation-free.
pub(crate) fn positioned_keys(cmd: &Cmd) -> impl Iterator<Item = (usize, &[u8])> + '_ {
    let words = args::words(cmd);
    let spec = args::command_name(cmd).map_or(Keyless, |name| spec_of(&name));
    let spans = spans(spec, words.clone());
    let end = spans.iter().map(|s| s.end).max().unwrap_or(0);
    words
        .enumerate()
        .take(end)
        .filter(move |(i, _)| spans.iter().any(|s| s.holds(*i)))
}

/// The keys of one command, in argument order; nothing for a keyless command. Allocation-free.
pub(crate) fn command_keys(cmd: &Cmd) -> impl Iterator<Item = &[u8]> + '_ {
    positioned_keys(cmd).map(|(_, key)| key)
}

/// The names the table knows, with their key positions (for tests elsewhere in the module).
#[cfg(test)]
pub(crate) fn table() -> &'static [(&'static str, KeySpec)] {
    TABLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::args::assert_sorted_names;

    /// Invocations and their keys as Redis 7.0.15 gives them (`COMMAND GETKEYS`; no key where
    /// it answers "The command has no key arguments"). `""` is an empty argument.
    const REDIS_SAYS: &[(&str, &[&str])] = &[
        ("GET k1", &["k1"]),
        ("SET k1 v EX 10", &["k1"]),
        ("GETEX k1 PERSIST", &["k1"]),
        ("HSET h1 f v", &["h1"]),
        ("MOVE k1 2", &["k1"]),
        ("RESTORE-ASKING k1 0 x", &["k1"]),
        ("SORT_RO k1 BY w_* GET #", &["k1"]),
        ("DEL k1 k2 k3", &["k1", "k2", "k3"]),
        ("UNLINK k1 k2", &["k1", "k2"]),
        ("EXISTS k1 k2", &["k1", "k2"]),
        ("TOUCH k1 k2", &["k1", "k2"]),
        ("WATCH k1 k2", &["k1", "k2"]),
        ("MGET k1 k2 k3", &["k1", "k2", "k3"]),
        ("SINTER s1 s2", &["s1", "s2"]),
        ("SUNION s1 s2", &["s1", "s2"]),
        ("SDIFF s1 s2", &["s1", "s2"]),
        ("SINTERSTORE d s1 s2", &["d", "s1", "s2"]),
        ("SUNIONSTORE d s1 s2", &["d", "s1", "s2"]),
        ("SDIFFSTORE d s1 s2", &["d", "s1", "s2"]),
        ("PFCOUNT p1 p2", &["p1", "p2"]),
        ("PFMERGE d p1 p2", &["d", "p1", "p2"]),
        ("MSET k1 v1 k2 v2", &["k1", "k2"]),
        ("MSETNX k1 v1 k2 v2", &["k1", "k2"]),
        ("RENAME k1 k2", &["k1", "k2"]),
        ("RENAMENX k1 k2", &["k1", "k2"]),
        ("SMOVE s1 s2 m", &["s1", "s2"]),
        ("LMOVE l1 l2 LEFT RIGHT", &["l1", "l2"]),
        ("RPOPLPUSH l1 l2", &["l1", "l2"]),
        ("COPY k1 k2 REPLACE", &["k1", "k2"]),
        ("LCS k1 k2 LEN", &["k1", "k2"]),
        (
            "GEOSEARCHSTORE d src FROMLONLAT 0 0 BYRADIUS 1 km",
            &["d", "src"],
        ),
        ("ZRANGESTORE d src 0 -1", &["d", "src"]),
        ("BLMOVE l1 l2 LEFT RIGHT 0", &["l1", "l2"]),
        ("BRPOPLPUSH l1 l2 0", &["l1", "l2"]),
        ("BLPOP l1 l2 0", &["l1", "l2"]),
        ("BRPOP l1 l2 1.5", &["l1", "l2"]),
        ("BZPOPMIN z1 z2 0", &["z1", "z2"]),
        ("BZPOPMAX z1 z2 0", &["z1", "z2"]),
        ("BITOP AND d k1 k2", &["d", "k1", "k2"]),
        ("ZUNIONSTORE d 2 z1 z2 WEIGHTS 1 2", &["d", "z1", "z2"]),
        ("ZINTERSTORE d 2 z1 z2", &["d", "z1", "z2"]),
        ("ZDIFFSTORE d 2 z1 z2", &["d", "z1", "z2"]),
        ("ZUNION 2 z1 z2 WITHSCORES", &["z1", "z2"]),
        ("ZINTER 2 z1 z2", &["z1", "z2"]),
        ("ZDIFF 2 z1 z2", &["z1", "z2"]),
        ("SINTERCARD 2 s1 s2 LIMIT 1", &["s1", "s2"]),
        ("ZINTERCARD 2 z1 z2", &["z1", "z2"]),
        ("LMPOP 2 l1 l2 LEFT COUNT 1", &["l1", "l2"]),
        ("ZMPOP 2 z1 z2 MIN", &["z1", "z2"]),
        ("BLMPOP 0 2 l1 l2 LEFT", &["l1", "l2"]),
        ("BZMPOP 1.5 2 z1 z2 MAX COUNT 2", &["z1", "z2"]),
        ("EVAL s 2 k1 k2 a1", &["k1", "k2"]),
        ("EVALSHA abc 1 k1 a1", &["k1"]),
        ("EVAL_RO s 1 k1", &["k1"]),
        ("EVALSHA_RO abc 0 a1", &[]),
        ("FCALL f 2 k1 k2 a1", &["k1", "k2"]),
        ("FCALL_RO f 1 k1", &["k1"]),
        ("XREAD COUNT 2 STREAMS x1 x2 0 0", &["x1", "x2"]),
        ("XREAD BLOCK 0 STREAMS x1 $", &["x1"]),
        (
            "XREADGROUP GROUP g c COUNT 1 STREAMS x1 x2 > >",
            &["x1", "x2"],
        ),
        ("XREADGROUP GROUP streams c STREAMS x1 >", &["x1"]),
        ("OBJECT ENCODING k1", &["k1"]),
        ("MEMORY USAGE k1 SAMPLES 5", &["k1"]),
        ("XINFO STREAM x1 FULL", &["x1"]),
        ("XINFO CONSUMERS x1 g", &["x1"]),
        ("XGROUP CREATE x1 g $ MKSTREAM", &["x1"]),
        ("XGROUP DESTROY x1 g", &["x1"]),
        ("PFDEBUG GETREG p1", &["p1"]),
        ("SORT k1 BY w_* LIMIT 0 10 GET o_* STORE d", &["k1", "d"]),
        ("SORT k1 STORE d", &["k1", "d"]),
        ("GEORADIUS g1 0 0 1 km STORE d", &["g1", "d"]),
        ("GEORADIUS g1 0 0 1 km STOREDIST d2", &["g1", "d2"]),
        ("GEORADIUSBYMEMBER g1 m 1 km STORE d", &["g1", "d"]),
        ("MIGRATE h 6379 k1 0 5000", &["k1"]),
        (
            "MIGRATE h 6379 \"\" 0 5000 COPY REPLACE KEYS k1 k2",
            &["k1", "k2"],
        ),
        (
            "MIGRATE h 6379 \"\" 0 5000 AUTH p KEYS k1 k2",
            &["k1", "k2"],
        ),
        ("SSUBSCRIBE c1", &[]),
        ("SPUBLISH c1 m", &[]),
        ("XREAD STREAMS x1 x2 0", &["x1"]),
        (
            "GEORADIUS g1 0 0 1 km STORE d STOREDIST d2",
            &["g1", "d", "d2"],
        ),
        ("SORT k1 GET STORE", &["k1"]),
        ("SORT k1 STORE d1 STORE d2", &["k1", "d2"]),
        ("SORT k1 store", &["k1"]),
        ("EVAL s 3 k1 k2", &[]),
        ("EVAL s -1 k1", &[]),
        ("EVAL s x k1", &[]),
        ("BITOP NOT d k1", &["d", "k1"]),
        ("MSET k1 v1 k2", &["k1", "k2"]),
        ("XREAD COUNT 1 BLOCK 0 NOACK STREAMS x 0", &["x"]),
        (
            "MIGRATE h 6379 \"\" 0 5000 AUTH2 u KEYS KEYS k1 k2",
            &["k1", "k2"],
        ),
        ("GEORADIUS_RO g1 0 0 1 km", &["g1"]),
        ("BLPOP l1 0", &["l1"]),
        ("OBJECT HELP", &[]),
        ("MEMORY STATS", &[]),
        ("PUBSUB CHANNELS x", &[]),
        ("LOLWUT VERSION 5", &[]),
        ("DEBUG OBJECT k1", &[]),
        ("FAILOVER TO h 1", &[]),
        ("REPLICAOF h 1", &[]),
        ("SLAVEOF h 1", &[]),
        ("SHUTDOWN NOSAVE", &[]),
        ("MODULE LIST", &[]),
        ("SELECT 1", &[]),
        ("SWAPDB 0 1", &[]),
        ("WAIT 1 0", &[]),
        ("CONFIG GET x", &[]),
        ("CLIENT KILL ID 1", &[]),
        ("CLUSTER KEYSLOT k1", &[]),
        ("FUNCTION DELETE lib", &[]),
        ("SCRIPT EXISTS a", &[]),
        ("PUBLISH c1 m", &[]),
        ("ECHO m", &[]),
        ("PING m", &[]),
        ("AUTH p", &[]),
        ("HELLO 3", &[]),
        ("KEYS *", &[]),
        ("SCAN 0 MATCH k*", &[]),
        ("INFO all", &[]),
        ("BGSAVE SCHEDULE", &[]),
        ("LATENCY HISTORY x", &[]),
        ("SLOWLOG GET 1", &[]),
        ("ACL WHOAMI", &[]),
        ("COMMAND INFO GET", &[]),
        ("SUBSCRIBE c1", &[]),
        ("PSUBSCRIBE p*", &[]),
        ("UNSUBSCRIBE c1", &[]),
        ("PUNSUBSCRIBE p*", &[]),
        ("SUNSUBSCRIBE c1", &[]),
        ("PSYNC id 0", &[]),
        ("REPLCONF x y", &[]),
    ];

    fn command(invocation: &str) -> Cmd {
        let words: Vec<&str> = invocation
            .split(' ')
            .map(|w| if w == "\"\"" { "" } else { w })
            .collect();
        crate::commands::cmd_of(&words)
    }

    fn keys(invocation: &str) -> Vec<String> {
        let cmd = command(invocation);
        command_keys(&cmd)
            .map(|k| String::from_utf8(k.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn table_is_sorted_and_upper_case() {
        assert_sorted_names(TABLE.iter().map(|(name, _)| *name));
    }

    #[test]
    fn keys_are_where_redis_finds_them() {
        for (invocation, expected) in REDIS_SAYS {
            assert_eq!(keys(invocation), *expected, "{invocation}");
            // Names in any case.
            assert_eq!(keys(&invocation.to_ascii_lowercase()).len(), expected.len());
        }
    }

    #[test]
    fn commands_outside_the_table_have_their_key_first() {
        assert_eq!(keys("HINCRBY h f 1"), ["h"]);
        assert_eq!(keys("JSON.GET doc $.a"), ["doc"]);
        let long = format!("{} k v", "X".repeat(40));
        assert_eq!(keys(&long), ["k"]);
        assert!(keys("DBSIZE").is_empty());
        assert!(command_keys(&redis::Cmd::new()).next().is_none());
    }

    #[test]
    fn bad_key_counts_give_no_counted_keys() {
        assert!(keys("EVAL s 99999999999999999999 k").is_empty());
        assert!(keys("ZUNION 3 z1 z2").is_empty());
        assert_eq!(keys("ZUNIONSTORE d 3 z1 z2"), ["d"]);
        assert_eq!(keys("MSETEX 2 k1 v1 k2 v2 EX 10"), ["k1", "k2"]);
        assert!(keys("MSETEX 2 k1 v1 k2").is_empty());
    }

    #[test]
    fn positions_count_the_name() {
        let cmd = command("ZUNIONSTORE d 2 z1 z2 WEIGHTS 1 2");
        let positions: Vec<usize> = positioned_keys(&cmd).map(|(i, _)| i).collect();
        assert_eq!(positions, [1, 3, 4]);
    }
}
