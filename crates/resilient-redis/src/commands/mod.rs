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

// What the client knows of Redis commands, one idea a file: reading a command's name and words
// (`args`), the safety table (`safety`), blocking timeouts (`blocking`), key positions (`keys`),
// cluster slots (`slot`) and what may run inside a script (`scripts`).

pub(crate) mod args;
mod blocking;
mod info;
mod keys;
mod safety;
mod scripts;
mod slot;

pub(crate) use args::{arg_bytes, command_name};
pub(crate) use blocking::blocking_timeout;
pub(crate) use info::{info_field, master_replid, replica_names, replication};
pub(crate) use keys::{command_keys, positioned_keys};
#[cfg(test)]
pub(crate) use safety::known_names;
pub use safety::{CommandSafety, safety_of};
pub(crate) use safety::{command_safety, pipeline_safety};
pub(crate) use scripts::runs_in_scripts;
pub use slot::key_slot;
pub(crate) use slot::{SLOTS, command_slot, crc16};

/// A command from its words, for tests.
#[cfg(test)]
pub(crate) fn cmd_of(parts: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(parts[0]);
    for p in &parts[1..] {
        c.arg(*p);
    }
    c
}
