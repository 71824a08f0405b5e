//! Where the record of one call is kept, and how its name is kept short and unique.
//!
//! # Generated tokens
//! The records of generated tokens are kept as fields of small hashes, [`RECORDS_PER_HASH`] per
//! hash, instead of one key each: a key costs Redis about 150 bytes (its entry, its expiry, the
//! key object) and its creation and later expiry are most of what the script costs the server;
//! a field of a small hash (kept as a compact listpack) costs about 15.
//!
//! The hash's key is the prefix, (in a cluster) the slot's hash tag, the instance id (22
//! characters: 128 random bits, 6 per character), the call's sequence number divided by
//! [`RECORDS_PER_HASH`], `.` and the *period* in which the token was made; the field is the
//! sequence number's remainder, one character. Numbers are written in the URL-safe base64
//! alphabet, which has neither braces (that would change the key's slot), `:` nor `.`.
//!
//! A period is a quarter of the token TTL, counted from the instance's creation. A hash only
//! holds tokens made in one period, and the script gives it an expiry of TTL + one period when
//! it creates it (at its first record, made no earlier than the period's start): every record
//! is kept at least the TTL after its token was made, and at most the TTL plus one period plus
//! the client's deadline.
//!
//! # Caller-chosen keys
//! A caller-chosen key's record is a key of its own (the prefix, the tag, `k:` and the key),
//! kept exactly the TTL: such keys are meant to be shared and may be repeated at any time. As an
//! instance id never contains `:`, the two kinds never meet.

use std::sync::atomic::{AtomicU64, Ordering};

/// URL-safe base64: no `{`, `}`, `:` or `.`.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters of an instance id: 128 bits at 6 bits per character.
pub(super) const INSTANCE_LEN: usize = 22;

/// Records of generated tokens per hash: one base64 character of field names, and well under
/// the 128 entries up to which Redis keeps a hash as a listpack (`hash-max-listpack-entries`).
pub(super) const RECORDS_PER_HASH: u64 = 64;

/// Room for the part of a generated key after the prefix and tag: the instance id, the hash's
/// number (at most 10 characters), `.` and the period (at most 11).
const TAIL: usize = INSTANCE_LEN + 10 + 1 + 11;

/// Room for the longest generated key: a 64-byte prefix and a 5-byte tag, then the tail.
const INLINE: usize = 64 + 5 + TAIL;

/// Whose token a call uses.
#[derive(Clone, Copy)]
pub(super) enum Token<'a> {
    /// The next token of this instance.
    Generated,
    /// A caller-chosen idempotency key.
    Caller(&'a [u8]),
}

/// The instance id's characters, from 16 random bytes.
pub(super) fn instance_id(random: [u8; 16]) -> [u8; INSTANCE_LEN] {
    let mut n = u128::from_be_bytes(random);
    let mut id = [0u8; INSTANCE_LEN];
    for c in id.iter_mut().rev() {
        *c = ALPHABET[(n & 63) as usize];
        n >>= 6;
    }
    id
}

/// Appends `n` in base64 (most significant first, no leading zeros) to `out` at `len`.
fn push_number(out: &mut [u8], len: &mut usize, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(6).max(1);
    for i in (0..digits).rev() {
        out[*len] = ALPHABET[((n >> (6 * i)) & 63) as usize];
        *len += 1;
    }
}

/// Where one call's record lives: a key, and for a generated token the field of that key (a
/// hash). On the stack when generated (the hot path allocates nothing for it), on the heap for
/// a caller's key of any length.
pub(super) struct TokenKey {
    key: KeyBytes,
    /// The field in the hash (a base64 character), or none for a key of its own.
    field: Option<u8>,
}

enum KeyBytes {
    Inline { bytes: [u8; INLINE], len: usize },
    Heap(Vec<u8>),
}

impl TokenKey {
    /// The record's place for `token`: `prefix` (at most 64 bytes, checked by the config) and
    /// `tag` (at most 5 bytes), then for a generated token the instance id, the hash of the next
    /// number of `sequence` and the `period` (see the module docs), or `k:` and the caller's key.
    pub(super) fn new(
        prefix: &[u8],
        tag: &[u8],
        token: Token<'_>,
        instance: &[u8; INSTANCE_LEN],
        sequence: &AtomicU64,
        period: u64,
    ) -> TokenKey {
        match token {
            Token::Generated => {
                let seq = sequence.fetch_add(1, Ordering::Relaxed);
                let field = Some(ALPHABET[(seq % RECORDS_PER_HASH) as usize]);
                // The instance id, the hash's number, `.` and the period.
                let mut tail = [0u8; TAIL];
                tail[..INSTANCE_LEN].copy_from_slice(instance);
                let mut tail_len = INSTANCE_LEN;
                push_number(&mut tail, &mut tail_len, seq / RECORDS_PER_HASH);
                tail[tail_len] = b'.';
                tail_len += 1;
                push_number(&mut tail, &mut tail_len, period);
                let tail = &tail[..tail_len];
                if prefix.len() + tag.len() > INLINE - TAIL {
                    // Not reached: the config keeps the prefix short. Correct anyway.
                    let key = KeyBytes::Heap([prefix, tag, tail].concat());
                    return TokenKey { key, field };
                }
                let mut bytes = [0u8; INLINE];
                let mut len = 0;
                for part in [prefix, tag, tail] {
                    bytes[len..len + part.len()].copy_from_slice(part);
                    len += part.len();
                }
                TokenKey {
                    key: KeyBytes::Inline { bytes, len },
                    field,
                }
            }
            Token::Caller(k) => {
                let mut key = Vec::with_capacity(prefix.len() + tag.len() + 2 + k.len());
                key.extend_from_slice(prefix);
                key.extend_from_slice(tag);
                key.extend_from_slice(b"k:");
                key.extend_from_slice(k);
                TokenKey {
                    key: KeyBytes::Heap(key),
                    field: None,
                }
            }
        }
    }

    /// The key: a hash of records for a generated token, the record itself for a caller's key.
    pub(super) fn as_bytes(&self) -> &[u8] {
        match &self.key {
            KeyBytes::Inline { bytes, len } => &bytes[..*len],
            KeyBytes::Heap(key) => key,
        }
    }

    /// The record's field in the hash, or empty for a key of its own.
    pub(super) fn field(&self) -> &[u8] {
        match &self.field {
            Some(f) => std::slice::from_ref(f),
            None => b"",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prefix: &str, tag: &str, token: Token<'_>, seq: &AtomicU64) -> (String, String) {
        let instance = instance_id([0xab; 16]);
        let key = TokenKey::new(prefix.as_bytes(), tag.as_bytes(), token, &instance, seq, 5);
        (
            String::from_utf8(key.as_bytes().to_vec()).unwrap(),
            String::from_utf8(key.field().to_vec()).unwrap(),
        )
    }

    #[test]
    fn instance_ids_are_base64_of_the_random_bits() {
        assert_eq!(instance_id([0; 16]), [b'A'; INSTANCE_LEN]);
        assert_eq!(&instance_id([0xff; 16]), b"D_____________________");
        let id = instance_id([0xab; 16]);
        assert!(id.iter().all(|c| !b"{}:.".contains(c)), "{id:?}");
    }

    #[test]
    fn generated_tokens_fill_hashes_and_caller_keys_have_their_own_namespace() {
        let seq = AtomicU64::new(0);
        let id = String::from_utf8(instance_id([0xab; 16]).to_vec()).unwrap();
        let k = |s: &str, f: &str| (s.to_owned(), f.to_owned());
        // 64 records per hash, the period after the dot.
        assert_eq!(
            key("xo:", "", Token::Generated, &seq),
            k(&format!("xo:{id}A.F"), "A")
        );
        assert_eq!(
            key("xo:", "", Token::Generated, &seq),
            k(&format!("xo:{id}A.F"), "B")
        );
        seq.store(63, Ordering::Relaxed);
        assert_eq!(key("xo:", "", Token::Generated, &seq).1, "_");
        assert_eq!(
            key("xo:", "{a}", Token::Generated, &seq),
            k(&format!("xo:{{a}}{id}B.F"), "A")
        );
        seq.store(u64::MAX, Ordering::Relaxed);
        let (longest, field) = key(&"p".repeat(64), "{abc}", Token::Generated, &seq);
        assert!(longest.ends_with("P_________.F"), "{longest}");
        assert_eq!(field, "_");
        assert_eq!(
            key("xo:", "{a}", Token::Caller(b"order-1"), &seq),
            k("xo:{a}k:order-1", "")
        );
        // A prefix longer than the config allows still gives a correct key.
        seq.store(64, Ordering::Relaxed);
        let long = "p".repeat(100);
        assert_eq!(
            key(&long, "", Token::Generated, &seq),
            k(&format!("{long}{id}B.F"), "A")
        );
    }

    #[test]
    fn the_longest_key_fits_inline() {
        let instance = instance_id([0xff; 16]);
        let seq = AtomicU64::new(u64::MAX);
        let key = TokenKey::new(
            &[b'p'; 64],
            b"{abc}",
            Token::Generated,
            &instance,
            &seq,
            u64::MAX,
        );
        assert_eq!(key.as_bytes().len(), INLINE);
    }
}
