//! Token keys: where the record of one call is kept, and how they are kept short and unique.
//!
//! A generated token key is the prefix, (in a cluster) the slot's hash tag, the instance id (22
//! characters: 128 random bits, 6 per character) and the call's sequence number (1 to 11
//! characters), both in the URL-safe base64 alphabet, which has neither braces (that would
//! change the key's slot) nor `:`. A caller-chosen key is the prefix, the tag, `k:` and the key:
//! as an instance id never contains `:`, the two kinds never meet. The instance id has a fixed
//! length, so no separator is needed before the sequence.

use std::sync::atomic::{AtomicU64, Ordering};

/// URL-safe base64: no `{`, `}` or `:`.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters of an instance id: 128 bits at 6 bits per character.
pub(super) const INSTANCE_LEN: usize = 22;

/// Room for the longest generated token key: a 64-byte prefix, a 5-byte tag, the instance id
/// and an 11-character sequence number.
const INLINE: usize = 64 + 5 + INSTANCE_LEN + 11;

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

/// One call's token key: on the stack when generated (the hot path allocates nothing for it),
/// on the heap for a caller's key of any length.
pub(super) enum TokenKey {
    Inline { bytes: [u8; INLINE], len: usize },
    Heap(Vec<u8>),
}

impl TokenKey {
    /// The key of `token`: `prefix` (at most 64 bytes, checked by the config), `tag` (at most 5
    /// bytes), then the instance id and the next number of `sequence`, or `k:` and the caller's
    /// key.
    pub(super) fn new(
        prefix: &[u8],
        tag: &[u8],
        token: Token<'_>,
        instance: &[u8; INSTANCE_LEN],
        sequence: &AtomicU64,
    ) -> TokenKey {
        match token {
            Token::Generated if prefix.len() + tag.len() <= 64 + 5 => {
                let seq = sequence.fetch_add(1, Ordering::Relaxed);
                let mut bytes = [0u8; INLINE];
                let mut len = 0;
                for part in [prefix, tag, instance] {
                    bytes[len..len + part.len()].copy_from_slice(part);
                    len += part.len();
                }
                let digits = (64 - seq.leading_zeros()).div_ceil(6).max(1);
                for i in (0..digits).rev() {
                    bytes[len] = ALPHABET[((seq >> (6 * i)) & 63) as usize];
                    len += 1;
                }
                TokenKey::Inline { bytes, len }
            }
            Token::Generated => {
                // Not reached: the config keeps the prefix short. Correct anyway.
                let mut key = prefix.to_vec();
                key.extend_from_slice(tag);
                let inline = TokenKey::new(b"", b"", token, instance, sequence);
                key.extend_from_slice(inline.as_bytes());
                TokenKey::Heap(key)
            }
            Token::Caller(k) => {
                let mut key = Vec::with_capacity(prefix.len() + tag.len() + 2 + k.len());
                key.extend_from_slice(prefix);
                key.extend_from_slice(tag);
                key.extend_from_slice(b"k:");
                key.extend_from_slice(k);
                TokenKey::Heap(key)
            }
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            TokenKey::Inline { bytes, len } => &bytes[..*len],
            TokenKey::Heap(key) => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prefix: &str, tag: &str, token: Token<'_>, seq: &AtomicU64) -> String {
        let instance = instance_id([0xab; 16]);
        let key = TokenKey::new(prefix.as_bytes(), tag.as_bytes(), token, &instance, seq);
        String::from_utf8(key.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn instance_ids_are_base64_of_the_random_bits() {
        assert_eq!(instance_id([0; 16]), [b'A'; INSTANCE_LEN]);
        assert_eq!(&instance_id([0xff; 16]), b"D_____________________");
        let id = instance_id([0xab; 16]);
        assert!(id.iter().all(|c| !b"{}:".contains(c)), "{id:?}");
    }

    #[test]
    fn generated_keys_count_in_base64_and_caller_keys_have_their_own_namespace() {
        let seq = AtomicU64::new(0);
        let id = String::from_utf8(instance_id([0xab; 16]).to_vec()).unwrap();
        assert_eq!(key("xo:", "", Token::Generated, &seq), format!("xo:{id}A"));
        assert_eq!(key("xo:", "", Token::Generated, &seq), format!("xo:{id}B"));
        seq.store(64, Ordering::Relaxed);
        assert_eq!(
            key("xo:", "{a}", Token::Generated, &seq),
            format!("xo:{{a}}{id}BA")
        );
        seq.store(u64::MAX, Ordering::Relaxed);
        let longest = key(&"p".repeat(64), "{abc}", Token::Generated, &seq);
        assert_eq!(longest.len(), INLINE);
        assert!(longest.ends_with("P__________"), "{longest}");
        assert_eq!(
            key("xo:", "{a}", Token::Caller(b"order-1"), &seq),
            "xo:{a}k:order-1"
        );
        // A prefix longer than the config allows still gives a correct key.
        seq.store(1, Ordering::Relaxed);
        let long = "p".repeat(100);
        assert_eq!(
            key(&long, "", Token::Generated, &seq),
            format!("{long}{id}B")
        );
    }
}
