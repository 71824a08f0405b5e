//! Redis Cluster key slots: CRC16, hash tags, and the one slot of a command's keys.

use redis::Cmd;

use super::keys::command_keys;

/// The number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// CRC16-XMODEM, as Redis Cluster uses for key slots.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key (honouring `{hash tags}`).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// The slot of a command's keys when they all share one slot; `None` for keyless commands and
/// keys in several slots. Keys are found by the key table ([`command_keys`]). Allocation-free:
/// the cluster client calls it on every request to pick the node, its breaker and to wait for a
/// down node; `None` goes through redis-rs's routing.
pub(crate) fn command_slot(cmd: &Cmd) -> Option<u16> {
    let mut keys = command_keys(cmd);
    let Some(first) = keys.next() else {
        return shard_channel_slot(cmd);
    };
    let first = key_slot(first);
    keys.all(|k| key_slot(k) == first).then_some(first)
}

/// `SPUBLISH channel message`: a shard channel is not a key (Redis marks it `not_key`), but it
/// lives in its slot like one and only that slot's owner accepts it.
fn shard_channel_slot(cmd: &Cmd) -> Option<u16> {
    let (name, mut rest) = super::args::split(cmd)?;
    if name.as_bytes() != b"SPUBLISH" {
        return None;
    }
    rest.next().map(key_slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{
        args::Name,
        cmd_of,
        keys::{KeySpec, positioned_keys, spec_of, table},
    };

    #[test]
    fn key_slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{a}"), 15495);
        assert_eq!(key_slot(b"{a}:7"), 15495);
        assert_eq!(key_slot(b"{a}1"), 15495);
        // An empty tag hashes the whole key.
        assert_eq!(key_slot(b"{}foo"), crc16(b"{}foo") % SLOTS);
        // The first tag counts.
        assert_eq!(key_slot(b"x{foo}y{bar}"), 12182);
    }

    #[test]
    fn command_slot_finds_the_key() {
        let get = redis::cmd("GET").arg("foo").clone();
        assert_eq!(command_slot(&get), Some(12182));
        assert_eq!(command_slot(redis::cmd("PING").arg("x")), None);
        let same = redis::cmd("MGET").arg("{a}1").arg("{a}2").clone();
        assert_eq!(command_slot(&same), Some(15495));
        let split = redis::cmd("MGET").arg("foo").arg("bar").clone();
        assert_eq!(command_slot(&split), None);
        // A shard channel routes by its slot, although it is not a key.
        let spublish = redis::cmd("SPUBLISH").arg("foo").arg("m").clone();
        assert_eq!(command_slot(&spublish), Some(12182));
        assert_eq!(
            command_slot(redis::cmd("PUBLISH").arg("foo").arg("m")),
            None
        );
        let eval = redis::cmd("EVAL").arg("return 1").arg(1).arg("bar").clone();
        assert_eq!(command_slot(&eval), Some(5061));
        let xread = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("foo")
            .arg("0")
            .clone();
        assert_eq!(command_slot(&xread), Some(12182));
    }

    /// A sample invocation of a command with key positions `spec`: every word a key of slot
    /// 15495 (`{a}...`), but for the words the spec reads (counts and keywords).
    fn sample(name: &str, spec: KeySpec) -> Vec<String> {
        let mut words: Vec<String> = (0..12).map(|i| format!("{{a}}{i}")).collect();
        words[0] = name.to_owned();
        let mut set = |at: usize, word: &str| words[at] = word.to_owned();
        match spec {
            KeySpec::NumKeys { at, .. } => set(at, "3"),
            KeySpec::Streams { from } => set(from + 1, "STREAMS"),
            KeySpec::Store { from } => {
                set(from + 1, "STORE");
                set(from + 4, "STOREDIST");
            }
            KeySpec::Sort => set(3, "STORE"),
            KeySpec::Migrate => {
                set(3, "");
                set(7, "KEYS");
            }
            KeySpec::Keyless | KeySpec::Range { .. } => {}
        }
        words
    }

    #[test]
    fn command_slot_follows_the_key_table() {
        for (name, spec) in table() {
            assert_eq!(spec_of(&Name::of(name.as_bytes())), *spec);
            let words = sample(name, *spec);
            let parts: Vec<&str> = words.iter().map(String::as_str).collect();
            let cmd = cmd_of(&parts);
            let positions: Vec<usize> = positioned_keys(&cmd).map(|(i, _)| i).collect();
            if *spec == KeySpec::Keyless {
                assert!(positions.is_empty(), "{name}");
                // No slot, but for a shard channel's (see `shard_channel_slot`).
                let shard = (*name == "SPUBLISH").then_some(15495);
                assert_eq!(command_slot(&cmd), shard, "{name}");
                continue;
            }
            assert!(!positions.is_empty(), "{name}: {words:?}");
            assert_eq!(command_slot(&cmd), Some(15495), "{name}");
            // Any key moved to another slot changes the command's slot; any other word does not.
            for at in 1..words.len() {
                let mut moved = parts.clone();
                moved[at] = "foo";
                let slot = command_slot(&cmd_of(&moved));
                let expected = if !positions.contains(&at) {
                    Some(15495)
                } else if positions.len() == 1 {
                    Some(12182)
                } else {
                    None
                };
                if positions.contains(&at) || words[at].starts_with("{a}") {
                    assert_eq!(slot, expected, "{name}, word {at} moved: {moved:?}");
                }
            }
        }
    }

    #[test]
    fn multi_key_commands_with_keys_in_two_slots_have_no_slot() {
        for parts in [
            &["RENAME", "foo", "bar"][..],
            &["RENAMENX", "foo", "bar"],
            &["SMOVE", "foo", "bar", "m"],
            &["LMOVE", "foo", "bar", "LEFT", "RIGHT"],
            &["RPOPLPUSH", "foo", "bar"],
            &["COPY", "foo", "bar"],
            &["LCS", "foo", "bar"],
            &[
                "GEOSEARCHSTORE",
                "foo",
                "bar",
                "FROMMEMBER",
                "m",
                "BYRADIUS",
                "1",
                "km",
            ],
            &["ZRANGESTORE", "foo", "bar", "0", "-1"],
            &["SINTERSTORE", "foo", "bar"],
            &["SUNIONSTORE", "foo", "bar"],
            &["SDIFFSTORE", "foo", "bar"],
            &["PFMERGE", "foo", "bar"],
            &["ZUNIONSTORE", "foo", "2", "{foo}1", "bar"],
            &["ZINTERSTORE", "foo", "1", "bar"],
            &["ZDIFFSTORE", "foo", "1", "bar"],
            &["BLPOP", "foo", "bar", "0"],
            &["BZPOPMIN", "foo", "bar", "0"],
            &["BLMOVE", "foo", "bar", "LEFT", "RIGHT", "0"],
            &["BRPOPLPUSH", "foo", "bar", "0"],
            &["WATCH", "foo", "bar"],
            &["SORT", "foo", "STORE", "bar"],
            &["GEORADIUS", "foo", "0", "0", "1", "km", "STORE", "bar"],
        ] {
            assert_eq!(command_slot(&cmd_of(parts)), None, "{parts:?}");
        }
    }

    #[test]
    fn counted_keys_are_found_after_their_count() {
        // The count is not a key: these took the slot of "2" (or of the timeout) before.
        for parts in [
            &["ZUNION", "2", "foo", "{foo}x"][..],
            &["ZINTER", "2", "foo", "{foo}x"],
            &["ZDIFF", "2", "foo", "{foo}x"],
            &["SINTERCARD", "2", "foo", "{foo}x"],
            &["ZINTERCARD", "2", "foo", "{foo}x"],
            &["LMPOP", "2", "foo", "{foo}x", "LEFT"],
            &["ZMPOP", "2", "foo", "{foo}x", "MIN"],
            &["BLMPOP", "0", "2", "foo", "{foo}x", "LEFT"],
            &["BZMPOP", "0", "2", "foo", "{foo}x", "MIN"],
            &["MSETEX", "2", "foo", "v", "{foo}x", "v"],
        ] {
            assert_eq!(command_slot(&cmd_of(parts)), Some(12182), "{parts:?}");
        }
        assert_eq!(command_slot(&cmd_of(&["ZUNION", "2", "foo", "bar"])), None);
        assert_eq!(
            command_slot(&cmd_of(&["BLPOP", "foo", "{foo}x", "0"])),
            Some(12182)
        );
        // STREAMS is looked for after XREADGROUP's group and consumer names.
        let group = ["XREADGROUP", "GROUP", "streams", "c", "STREAMS", "foo", ">"];
        assert_eq!(command_slot(&cmd_of(&group)), Some(12182));
    }

    #[test]
    fn keyless_commands_with_arguments_have_no_slot() {
        for parts in [
            &["PUBSUB", "CHANNELS", "foo"][..],
            &["SWAPDB", "0", "1"],
            &["LOLWUT", "VERSION", "5"],
            &["MODULE", "LIST"],
            &["SHUTDOWN", "NOSAVE"],
            &["REPLICAOF", "host", "6379"],
            &["FAILOVER", "TO", "host", "6379"],
            &["WAITAOF", "1", "0", "0"],
            &["SELECT", "1"],
            &["SUBSCRIBE", "foo"],
            &["SSUBSCRIBE", "foo"],
        ] {
            assert_eq!(command_slot(&cmd_of(parts)), None, "{parts:?}");
        }
        assert_eq!(
            command_slot(&cmd_of(&["MIGRATE", "h", "1", "foo", "0", "5000"])),
            Some(12182)
        );
    }
}
