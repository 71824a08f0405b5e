//! [`Shared`]: the state every clone of an exactly-once handle shares (settings, instance id,
//! token sequence, scripts, counters), its token keys, and the script call of one write or
//! group.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use redis::{RedisResult, Value};
use tokio::time::Instant;

use super::{
    config::ExactlyOnceConfig,
    doubt::Doubt,
    errors::{after_noscript_handle, unexpected},
    script::{self, Answer, Commands, Invoke, Script},
    slot::{self, Placement},
    token::{INSTANCE_LEN, Token, TokenKey},
};
use crate::{
    client::Client,
    error::{Error, ErrorKind, Outcome},
    striped::StripedCounter,
};
use redis::aio::ConnectionLike;

/// What the clones of an [`ExactlyOnce`](super::ExactlyOnce) share.
pub(super) struct Shared {
    pub(super) config: ExactlyOnceConfig,
    /// `token_ttl` in milliseconds, as the script's argument: the TTL of a caller-chosen key.
    ttl_ms: String,
    /// The TTL of a hash of generated records: `token_ttl` and one period (see `token.rs`).
    pub(super) hash_ttl_ms: String,
    /// When the instance was made: periods count from here.
    epoch: Instant,
    /// The length of a period: a quarter of `token_ttl`.
    period: Duration,
    /// The instance id (base64): the first part of every generated token.
    instance: [u8; INSTANCE_LEN],
    pub(super) cluster: bool,
    script: Script,
    /// The script that runs a batch of writes (see `batch.rs`).
    pub(super) batch_script: Script,
    sequence: AtomicU64,
    pub(super) writes: StripedCounter,
    pub(super) reads: StripedCounter,
    pub(super) replays: AtomicU64,
    pub(super) script_loads: AtomicU64,
    pub(super) script_calls: StripedCounter,
    replays_metric: metrics::Counter,
}

impl Shared {
    pub(super) fn new(
        config: ExactlyOnceConfig,
        instance: [u8; INSTANCE_LEN],
        cluster: bool,
        replays_metric: metrics::Counter,
    ) -> Shared {
        let period = config.token_ttl / 4;
        Shared {
            ttl_ms: config.token_ttl.as_millis().to_string(),
            hash_ttl_ms: (config.token_ttl + period).as_millis().to_string(),
            epoch: Instant::now(),
            period,
            instance,
            cluster,
            script: Script::new(cluster),
            batch_script: Script::batch(),
            sequence: AtomicU64::new(0),
            writes: StripedCounter::default(),
            reads: StripedCounter::default(),
            replays: AtomicU64::new(0),
            script_loads: AtomicU64::new(0),
            script_calls: StripedCounter::default(),
            replays_metric,
            config,
        }
    }

    /// Counts a write answered from its record.
    pub(super) fn replayed(&self, record: &TokenKey) {
        self.replays.fetch_add(1, Ordering::Relaxed);
        self.replays_metric.increment(1);
        tracing::debug!(
            token = %String::from_utf8_lossy(record.as_bytes()),
            field = %String::from_utf8_lossy(record.field()),
            "exactly-once: the write had already been applied; answered from its recorded reply"
        );
    }

    /// Counts a script sent whole after `NOSCRIPT`.
    pub(super) fn loaded_script(&self) {
        self.script_loads.fetch_add(1, Ordering::Relaxed);
    }

    /// The token key of one call (see `token.rs`), in the slot of its keys in a cluster.
    pub(super) fn token_key(
        &self,
        token: Token<'_>,
        placement: Placement,
        now: Instant,
    ) -> Result<TokenKey, Error> {
        let tag: &[u8] = match (self.cluster, placement) {
            (false, _) => b"",
            (true, Placement::Slot(slot)) => slot::tag_for_slot(slot),
            (true, Placement::CrossSlot) => {
                return Err(Error::new(
                    ErrorKind::Refused,
                    Outcome::Failed,
                    "exactly-once: the keys of this call are in several hash slots, and its token must share their slot; put them in one slot with a hash tag ({user1}:a, {user1}:b)",
                ));
            }
            (true, Placement::Keyless) => {
                return Err(Error::new(
                    ErrorKind::Refused,
                    Outcome::Failed,
                    "exactly-once: in a cluster a write must name a key (its token is stored in that key's slot)",
                ));
            }
        };
        let period = match token {
            Token::Generated => {
                (now.saturating_duration_since(self.epoch).as_nanos()
                    / self.period.as_nanos().max(1)) as u64
            }
            Token::Caller(_) => 0,
        };
        Ok(TokenKey::new(
            self.config.key_prefix.as_bytes(),
            tag,
            token,
            &self.instance,
            &self.sequence,
            period,
        ))
    }

    /// Sends the script for `commands` with its `record` (with the commands' `keys` declared
    /// too, in a cluster), once more with `EVAL` after `NOSCRIPT`, and returns the reply.
    pub(super) async fn invoke(
        &self,
        backend: &mut Client,
        record: &TokenKey,
        keys: &[&[u8]],
        commands: Commands<'_>,
    ) -> RedisResult<Value> {
        let shared = self;
        shared.writes.add(1);
        shared.script_calls.add(1);
        let ttl_ms = if record.field().is_empty() {
            &shared.ttl_ms
        } else {
            &shared.hash_ttl_ms
        };
        let started = Instant::now();
        let mut how = Invoke::Sha;
        // After `NOSCRIPT`, or to send a write in doubt again: the handle with what is left of
        // the deadline.
        let mut whole: Option<Client> = None;
        let mut doubt = Doubt::new(started);
        loop {
            let request = script::invocation(
                &shared.script,
                how,
                record.as_bytes(),
                record.field(),
                keys,
                ttl_ms.as_bytes(),
                commands,
            );
            let conn = match &mut whole {
                Some(whole) => whole,
                None => &mut *backend,
            };
            let answer = match conn.req_packed_command(&request).await {
                Ok(value) => script::read_answer(value),
                Err(e) if e.code() == Some("NOSCRIPT") => Answer::NoScript,
                Err(e) => {
                    whole = Some(doubt.after(backend, e, how).await?);
                    continue;
                }
            };
            match answer {
                Answer::Reply { value, replayed } => {
                    if replayed {
                        shared.replayed(record);
                    }
                    return Ok(value);
                }
                Answer::NoScript if how == Invoke::Sha => {
                    // Nothing ran in this attempt: send the whole script (which also caches
                    // it), within what is left of the deadline.
                    shared.loaded_script();
                    how = Invoke::Body;
                    whole = Some(after_noscript_handle(backend, started)?);
                }
                Answer::NoScript => return Err(unexpected(Value::Nil)),
                Answer::Error(value) => return Ok(value),
                Answer::Unexpected(value) => return Err(unexpected(value)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(cluster: bool) -> Shared {
        Shared::new(
            ExactlyOnceConfig::default(),
            *b"0123456789abcdef012345",
            cluster,
            metrics::Counter::noop(),
        )
    }

    #[test]
    fn token_keys_are_unique_per_call_and_placed_in_the_slot() {
        let s = shared(false);
        let key = |t| {
            let key = s.token_key(t, Placement::Keyless, Instant::now()).unwrap();
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            (text(key.as_bytes()), text(key.field()))
        };
        let hash = "xo:0123456789abcdef012345A.A".to_owned();
        assert_eq!(key(Token::Generated), (hash.clone(), "A".into()));
        assert_eq!(key(Token::Generated), (hash, "B".into()));
        // 0xabc = 42 * 64 + 60: hash 42 (`q`), field 60 (`8`).
        s.sequence.store(0xabc, Ordering::Relaxed);
        assert_eq!(
            key(Token::Generated),
            ("xo:0123456789abcdef012345q.A".into(), "8".into())
        );
        assert_eq!(
            key(Token::Caller(b"order-1")),
            ("xo:k:order-1".into(), String::new())
        );

        let c = shared(true);
        let slot_of_foo = slot::key_slot(b"foo");
        let k = c
            .token_key(
                Token::Generated,
                Placement::Slot(slot_of_foo),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(slot::key_slot(k.as_bytes()), slot_of_foo);
        let k = c
            .token_key(
                Token::Caller(b"{odd}key"),
                Placement::Slot(slot_of_foo),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(slot::key_slot(k.as_bytes()), slot_of_foo);
        for bad in [Placement::CrossSlot, Placement::Keyless] {
            let Err(e) = c.token_key(Token::Generated, bad, Instant::now()) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(e.kind(), ErrorKind::Refused);
        }
    }
}
