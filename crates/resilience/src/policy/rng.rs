//! Randomness for jitter: one seed per policy (from the OS unless set), and from it one RNG
//! per call that needs one.

use std::sync::atomic::Ordering;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::Inner;

impl Inner {
    /// A new RNG for one call: derived from the seed and the number of calls that needed one.
    pub(super) fn call_rng(&self) -> SmallRng {
        let n = self.rng_calls.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(splitmix64(self.seed ^ splitmix64(n)))
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed from the OS; falls back to the clock and an address if the OS has no entropy.
pub(super) fn os_seed() -> u64 {
    use rand::Rng;
    match SmallRng::try_from_rng(&mut rand::rngs::SysRng) {
        Ok(mut rng) => rng.next_u64(),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let local = 0u8;
            splitmix64(t ^ (&raw const local as usize as u64))
        }
    }
}
