//! Which registry partition a user belongs to.
//!
//! Users are spread over `P` partitions (fixed per deployment, 64 by default) by a stable hash
//! of (app_id, user_id): the first four bytes, big-endian, of SHA-256 over
//! `app_id || 0x00 || user_id`, modulo `P`. It is written down so that Postgres
//! (`presence_partition()` in the migrations), SDKs and tools compute the same number.

use sha2::{Digest, Sha256};

/// The partition count a deployment gets unless it chooses another at its first migration.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// The 32-bit hash of a user, before `mod P`.
pub fn user_hash(app_id: &str, user_id: &str) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(app_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(user_id.as_bytes());
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The partition of (app_id, user_id) among `partitions` (at least 1).
pub fn partition_of(app_id: &str, user_id: &str, partitions: u32) -> u32 {
    user_hash(app_id, user_id) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_documented_one() {
        // sha256("chat\0alice") starts with these four bytes; Postgres' presence_partition()
        // is checked against this function in the registry's tests.
        let digest = Sha256::digest(b"chat\0alice");
        let expected = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        assert_eq!(user_hash("chat", "alice"), expected);
        assert_eq!(partition_of("chat", "alice", 64), expected % 64);
    }

    #[test]
    fn users_spread_over_every_partition() {
        let mut counts = [0u32; 64];
        for i in 0..64_000 {
            counts[partition_of("app", &format!("user-{i}"), 64) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
        assert!(min > Some(800) && max < Some(1200), "uneven spread: {min:?}..{max:?}");
    }

    #[test]
    fn zero_partitions_is_treated_as_one() {
        assert_eq!(partition_of("a", "b", 0), 0);
    }
}
