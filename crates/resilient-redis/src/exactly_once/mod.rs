//! Exactly-once writes: idempotency tokens checked by the server, so a write whose connection
//! broke mid-flight can be retried without running twice.
//!
//! Without this, an `INCR` whose reply was lost can only be reported as *ambiguous* (it may
//! have been applied). [`ExactlyOnce`] gives every logical write a unique token, kept across its
//! retries, and runs the write inside a Lua script that checks the token first: the first run
//! applies the command and records its reply under the token (with a TTL); any later run with
//! the same token returns the recorded reply without applying anything. A retry after an
//! ambiguous failure is then safe, and the caller sees a success.
//!
//! # Behavior
//! - Each call (a command, a pipeline or a transaction) gets one token before its first attempt;
//!   every retry the client makes (see [`Client`]) sends the same token.
//! - Reads (see [`crate::commands`]) are sent as they are: they need no token.
//! - The reply is the one the plain command gives (`INCR` an integer, `SET` `OK`, `GET` of a
//!   missing key nil, `LRANGE` an array, error replies unchanged), replayed or not.
//! - A single command that fails (`WRONGTYPE`, ...) did not apply: nothing is recorded, the same
//!   token can be used again. In a pipeline or transaction every command runs (as after a runtime
//!   error in `MULTI`/`EXEC`) and the replies, error entries included, are recorded.
//! - Commands that cannot run inside a script are refused with [`ErrorKind::Refused`] before
//!   anything is sent: blocking commands (`BLPOP`, ...: a script never blocks), scripts and
//!   functions (`EVAL`, `FCALL`, `SCRIPT`, `FUNCTION`), server administration (`CLIENT`,
//!   `CONFIG`, `SHUTDOWN`, ...), and commands with more than 7,000 arguments (Lua's limit);
//!   connection-state commands are refused by the client as always.
//! - Redis Cluster: the token key is put in the slot of the command's keys (with a short hash
//!   tag such as `{a3}` chosen for that slot); a command or pipeline whose keys are in several
//!   slots, or that names no key, is refused with [`ErrorKind::Refused`]. The command's keys are
//!   declared to Redis next to the token key, so a slot being migrated answers `TRYAGAIN` (the
//!   token is new, the keys are still on the source: retried with backoff) instead of sending the
//!   write to the importing node, where it would create a key the migration then cannot move.
//!   The cluster script is declared strict (`#!lua`, Redis >= 7.0): Redis itself refuses a
//!   command that would touch a key of another slot than the token's.
//!
//! # Group commit
//! Concurrent writes through one [`ExactlyOnce`] (and its clones) to a standalone or
//! Sentinel-managed server share script calls: a write goes out at once while fewer than
//! [`ExactlyOnceConfig::batches_in_flight`] calls are outstanding; writes that arrive while they
//! all are go out together in the next call (up to [`ExactlyOnceConfig::max_batch`]), one
//! `EVALSHA` that checks and records each write under its own token and answers each with its
//! own reply. No timer: a lone writer is never delayed, and batches form only under load. The
//! calls run in their own tasks, so a caller that stops waiting (a timeout) does not cancel the
//! writes it shares a call with (its own write may still run, as a request already sent may). A
//! call is retried as a whole by the client's rules, every token unchanged: a write that already
//! ran answers from its record. A write's deadline counts from when it was queued: one whose
//! deadline passes in the queue fails without being sent ([`ErrorKind::DeadlineExceeded`], a
//! definite failure), and a call is sent with what is left of its oldest write's deadline, so no
//! caller waits past its deadline. In a cluster every write is its own call (writes go to
//! different nodes).
//!
//! # Cost
//! - One round trip per call, as without it: `EVALSHA` with the script's SHA1 (computed once);
//!   after `NOSCRIPT` (a restarted or failed-over server, `SCRIPT FLUSH`) the call is sent once
//!   with `EVAL`, which also caches the script, within what is left of the deadline. `NOSCRIPT`
//!   means that attempt ran nothing; an earlier attempt of the same call (given up on before a
//!   failover to a server without the script) may have, so a definite failure of the `EVAL` is
//!   reported as ambiguous. The script text is versioned (its first line): a new version has a
//!   new SHA1, loaded the same way.
//! - On the server, per call: the script; per write in it: the command, and its share of one
//!   `HMGET` (the records) and one `HSET` (the new ones) per hash of records. Measured with
//!   `INFO commandstats` (Redis 7.0, 2-core box, 50 tasks doing `INCR`): 8 to 16 writes per
//!   call, `EVALSHA` 2.5 to 4.1 µs per write, where `INCR` alone takes 0.17 µs. Before group
//!   commit and hashes (one call and one key per write) it was 5 to 9 µs per write, most of it
//!   creating and later expiring one key per write.
//! - On the client: about the CPU of a plain call per write (3.3 to 4.3 µs per `INCR` with the
//!   benchmark's own work, against 3.7 to 4.2 µs plain): a write is queued and gets its reply
//!   through a channel, and a call's request carries many writes.
//! - Throughput (`scripts/bench-exactly-once.sh`, release build, client and server sharing two
//!   cores, 50 tasks): exactly-once `INCR` 0.52 to 0.62 of plain `INCR`, `LPUSH` 0.55 to 0.66
//!   (seven runs); p50 latency 250 to 400 µs against 170 to 215 µs, p99 0.5 to 1.8 ms against
//!   0.3 to 1.0 ms. At 256 tasks, about 60 writes per call and 240 to 265 k writes/s.
//!
//! # Storage
//! - A generated token's record is a field of a small hash (see `token.rs`): 64 records per
//!   hash, one hash per 64 writes of an instance within a period of a quarter of
//!   [`ExactlyOnceConfig::token_ttl`]. The hash expires the TTL and one period after its first
//!   record: every record is kept at least the TTL after its write was first sent, and at most
//!   the TTL, one period and the client's deadline. Redis keeps such a hash as a listpack:
//!   **14 bytes of server memory per write**, measured on Redis 7.0.15 as the growth of
//!   `INFO memory`'s `used_memory` over 10,000 `INCR`s from 20 tasks (default settings, after a
//!   warm-up); the sum of `MEMORY USAGE` over the record hashes gives 13 bytes per write
//!   (`cargo test -p resilient-redis --test exactly_once_replies server_memory -- --nocapture`).
//!   Plan on `writes per second x 1.25 x TTL x ~15 B` (10,000 writes/s with the default 60 s
//!   TTL: about 11 MB). Replies longer than 64 bytes (Redis's
//!   `hash-max-listpack-value`) turn their hash into a hash table: more memory per record.
//! - A caller-chosen key's record is a key of its own (`prefix`, the slot's tag in a cluster,
//!   `k:` and the key), kept exactly the TTL: about 210 bytes of `used_memory` each (1,000
//!   `send_with_key` writes, same test).
//! - A record is a one-byte type tag and the reply (2 to 21 bytes for an integer).
//!
//! # Tokens never collide
//! A token is a random 128-bit instance id, drawn from the operating system once per
//! [`ExactlyOnce`] (shared by its clones), and a 64-bit sequence number counted by that instance,
//! both in URL-safe base64.
//! Two tokens of one instance differ by their sequence; two instances collide only if they draw
//! the same id: with a million instances alive within one TTL the probability is about
//! 10^12 / 2^129, below 10^-26. Caller-chosen keys ([`ExactlyOnce::send_with_key`]) live in their
//! own namespace (`k:` after the prefix) and are meant to be shared: the same key from any
//! client means the same logical write.
//!
//! # Limits
//! - Integer replies beyond 2^53 lose precision: Redis's Lua represents numbers as doubles.
//! - RESP2 only (the client's default): through RESP3 a script's nil comes back as a boolean, so
//!   a client configured with `protocol=resp3` is refused at construction.
//! - In a transaction, a command Redis would reject when queued (unknown command, wrong number
//!   of arguments) does not abort the transaction (`EXECABORT`): it gets an error entry and the
//!   other commands run.
//! - The token must outlive every retry: [`ExactlyOnceConfig::token_ttl`] must be at least the
//!   client's deadline (checked at construction).
//!
//! # Metrics and events
//! `resilient_redis.exactly_once.replays` (counter) and a `debug` event count the retries
//! answered from a recorded reply; [`ExactlyOnce::stats`] has the same figures.
//!
//! [`Client`]: crate::Client
//! [`ErrorKind::Refused`]: crate::ErrorKind::Refused
//! [`ErrorKind::DeadlineExceeded`]: crate::ErrorKind::DeadlineExceeded

// How a call flows: `handle.rs` ([`ExactlyOnce`]) hands it to `dispatch.rs`, which refuses what
// cannot run in a script (`check.rs`), sends reads as they are, and sends a write with its token
// (`token.rs`, placed by `slot.rs` in a cluster) either to the batcher (`batch.rs`) or as one
// script call (`shared.rs`, the script itself in `script.rs`); `config.rs` holds the
// settings, `pipeline.rs` the shape of pipeline replies.
mod batch;
mod check;
mod config;
mod dispatch;
mod doubt;
mod errors;
mod handle;
mod pipeline;
mod script;
mod shared;
mod slot;
mod token;

pub use config::ExactlyOnceConfig;
pub use handle::{ExactlyOnce, ExactlyOnceStats};
