//! Where a token key goes in Redis Cluster: the slot of a command's keys, and a short hash tag
//! for every slot so the token key can be put in it.
//!
//! The key positions are those of the command table ([`crate::commands`]), as the cluster client
//! routes by them; here a keyless command and a command whose keys span slots must be told
//! apart, and the keys themselves are needed (they are declared to Redis next to the token key).
//! A command whose keys the table misses (a module command, say) is still safe: in cluster mode
//! the script is declared strict (`#!lua`), so Redis refuses, without running it, a command that
//! touches a key of another slot than the token's.

use std::sync::OnceLock;

#[cfg(test)]
use redis::Cmd;

use crate::commands::{SLOTS, crc16};
pub(super) use crate::commands::{command_keys, key_slot};

/// Where a command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// The command names no key.
    Keyless,
    /// Every key is in this slot.
    Slot(u16),
    /// The keys are in several slots.
    CrossSlot,
}

impl Placement {
    /// The placement of a group: the common slot of its keyed commands.
    pub(super) fn combine(self, other: Placement) -> Placement {
        match (self, other) {
            (Placement::CrossSlot, _) | (_, Placement::CrossSlot) => Placement::CrossSlot,
            (Placement::Keyless, p) | (p, Placement::Keyless) => p,
            (Placement::Slot(a), Placement::Slot(b)) if a == b => Placement::Slot(a),
            _ => Placement::CrossSlot,
        }
    }
}

/// The placement of some keys.
pub(super) fn placement_of(keys: &[&[u8]]) -> Placement {
    keys.iter()
        .map(|k| Placement::Slot(key_slot(k)))
        .fold(Placement::Keyless, Placement::combine)
}

/// The placement of one command's keys.
#[cfg(test)]
fn placement(cmd: &Cmd) -> Placement {
    placement_of(&command_keys(cmd).collect::<Vec<_>>())
}

/// A hash tag (`{..}`) whose keys land in `slot`: the shortest tag found for it, from a table of
/// 16384 tags built on first use (a few milliseconds, once per process).
pub(super) fn tag_for_slot(slot: u16) -> &'static [u8] {
    static TAGS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let tags = TAGS.get_or_init(build_tags);
    &tags[usize::from(slot % SLOTS)]
}

/// For every slot, a tag `{x}`, `{xy}`, `{xyz}`, ... over `[0-9A-Za-z]` whose content hashes to it.
fn build_tags() -> Vec<Vec<u8>> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut tags: Vec<Vec<u8>> = vec![Vec::new(); usize::from(SLOTS)];
    let mut missing = usize::from(SLOTS);
    let mut len = 1;
    // 62^3 candidates cover every slot; the loop goes on to longer tags should one be missing.
    while missing > 0 {
        let mut digits = vec![0usize; len];
        'candidates: loop {
            let content: Vec<u8> = digits.iter().map(|&d| ALPHABET[d]).collect();
            let slot = usize::from(crc16(&content) % SLOTS);
            if tags[slot].is_empty() {
                let mut tag = Vec::with_capacity(len + 2);
                tag.push(b'{');
                tag.extend_from_slice(&content);
                tag.push(b'}');
                tags[slot] = tag;
                missing -= 1;
                if missing == 0 {
                    break 'candidates;
                }
            }
            // Next candidate of this length (odometer).
            let mut i = 0;
            loop {
                if i == len {
                    break 'candidates;
                }
                digits[i] += 1;
                if digits[i] < ALPHABET.len() {
                    break;
                }
                digits[i] = 0;
                i += 1;
            }
        }
        len += 1;
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::commands::cmd_of as cmd;

    #[test]
    fn placement_of_commands() {
        assert_eq!(placement(&cmd(&["INCR", "foo"])), Placement::Slot(12182));
        assert_eq!(
            placement(&cmd(&["MSET", "{a}1", "x", "{a}2", "y"])),
            Placement::Slot(15495)
        );
        assert_eq!(
            placement(&cmd(&["MSET", "foo", "x", "bar", "y"])),
            Placement::CrossSlot
        );
        // Values are not keys.
        assert_eq!(
            placement(&cmd(&["MSET", "{a}1", "foo", "{a}2", "bar"])),
            Placement::Slot(15495)
        );
        assert_eq!(placement(&cmd(&["PING"])), Placement::Keyless);
        assert_eq!(placement(&cmd(&["FLUSHALL"])), Placement::Keyless);
        assert_eq!(
            placement(&cmd(&[
                "ZUNIONSTORE",
                "{a}d",
                "2",
                "{a}1",
                "{a}2",
                "WEIGHTS",
                "1",
                "2"
            ])),
            Placement::Slot(15495)
        );
        assert_eq!(
            placement(&cmd(&["RENAME", "foo", "bar"])),
            Placement::CrossSlot
        );
        assert_eq!(
            Placement::Slot(1).combine(Placement::Keyless),
            Placement::Slot(1)
        );
        assert_eq!(
            Placement::Slot(1).combine(Placement::Slot(2)),
            Placement::CrossSlot
        );
    }

    #[test]
    fn every_slot_has_a_short_tag_that_maps_to_it() {
        for slot in 0..SLOTS {
            let tag = tag_for_slot(slot);
            assert!(tag.len() <= 5, "tag {tag:?} of slot {slot}");
            assert_eq!(tag[0], b'{');
            assert_eq!(key_slot(tag), slot);
            // A token key: prefix, tag, then anything (braces included) keeps the tag's slot.
            let mut key = b"xo:".to_vec();
            key.extend_from_slice(tag);
            key.extend_from_slice(b"k:{user}key");
            assert_eq!(key_slot(&key), slot);
        }
    }
}
