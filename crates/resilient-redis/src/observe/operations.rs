//! `db.client.operation.duration` by operation and outcome, with the histogram handles of each
//! operation registered at its first call and found again without a lock.

use std::sync::OnceLock;

use metrics::Histogram;
use redis::Value;

use super::{OPERATION_DURATION, call};
use crate::{
    commands::args::Name,
    error::Error,
    request::{Reply, Request},
};

/// Operations tracked by name; more distinct names than this (module commands, say) share
/// the `OTHER` series.
const SLOTS: usize = 256;
/// Slots looked at from an operation's hash before it counts as `OTHER`.
const PROBES: usize = 8;
/// Outcome labels, by index.
const OUTCOMES: [&str; 3] = ["ok", "failed", "ambiguous"];

/// One operation's histograms, by outcome.
struct Op {
    key: u64,
    by_outcome: [Histogram; 3],
}

/// The duration histograms of one client's operations.
pub(crate) struct Operations {
    slots: Box<[OnceLock<Op>]>,
    other: OnceLock<[Histogram; 3]>,
}

impl Operations {
    pub(crate) fn new() -> Operations {
        Operations {
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            other: OnceLock::new(),
        }
    }

    /// Records one call of `request` that took `seconds` and ended with `result`.
    #[inline]
    pub(crate) fn record(&self, request: Request<'_>, result: &Result<Reply, Error>, seconds: f64) {
        let outcome = match result {
            Ok(Reply::One(Value::ServerError(_))) => 1,
            Ok(_) => 0,
            Err(e) if e.is_ambiguous() => 2,
            Err(_) => 1,
        };
        let word = match request {
            Request::Cmd(cmd) => match cmd.args_iter().next() {
                Some(redis::Arg::Simple(word)) => word,
                _ => b"OTHER",
            },
            Request::Pipeline { pipeline, .. } if pipeline.is_transaction() => b"MULTI",
            Request::Pipeline { .. } => b"PIPELINE",
        };
        self.histograms(key(word), || call::operation(request))[outcome].record(seconds);
    }

    /// The histograms of the operation of `key`, registered under the name `name` gives the
    /// first time.
    fn histograms(&self, key: u64, name: impl Fn() -> Name) -> &[Histogram; 3] {
        let start = (key >> 32) as usize % SLOTS;
        for i in 0..PROBES {
            let op = self.slots[(start + i) % SLOTS].get_or_init(|| Op {
                key,
                by_outcome: register(std::str::from_utf8(name().as_bytes()).unwrap_or("OTHER")),
            });
            if op.key == key {
                return &op.by_outcome;
            }
        }
        self.other.get_or_init(|| register("OTHER"))
    }
}

/// A 64-bit key of a command name, in any case (ASCII letters folded to upper case), read
/// straight from its bytes: the request path hashes a short word instead of copying it.
#[inline]
fn key(word: &[u8]) -> u64 {
    const FOLD: u64 = 0xDFDF_DFDF_DFDF_DFDF;
    let mut h = word.len() as u64;
    for chunk in word.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ (u64::from_le_bytes(w) & FOLD)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h
}

fn register(operation: &str) -> [Histogram; 3] {
    OUTCOMES.map(|outcome| {
        metrics::histogram!(
            OPERATION_DURATION,
            "db.system.name" => "redis",
            "db.operation.name" => operation.to_owned(),
            "outcome" => outcome
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of<'a>(ops: &'a Operations, word: &[u8]) -> &'a [Histogram; 3] {
        ops.histograms(key(word), || Name::of(word))
    }

    #[test]
    fn each_name_keeps_its_slot_and_overflow_goes_to_other() {
        let ops = Operations::new();
        let first: *const _ = of(&ops, b"get");
        assert_eq!(first, of(&ops, b"GET") as *const _);
        assert_eq!(first, of(&ops, b"gEt") as *const _);
        assert_ne!(first, of(&ops, b"SET") as *const _);
        assert_ne!(
            of(&ops, b"ZRANGEBYSCORE") as *const _,
            of(&ops, b"ZRANGEBYLEX") as *const _
        );
        // Far more names than slots: none panics, all land somewhere.
        for i in 0..(SLOTS * 2) {
            let _ = of(&ops, format!("CMD{i}").as_bytes());
        }
        assert_eq!(first, of(&ops, b"get") as *const _);
    }

    #[test]
    fn names_of_the_command_table_have_distinct_keys() {
        let mut keys: Vec<u64> = crate::commands::known_names()
            .map(|n| key(n.as_bytes()))
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }
}
