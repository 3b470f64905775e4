//! Which registry partition a user belongs to.
//!
//! Users are spread over `P` partitions (fixed per deployment, 64 by default) by a stable hash
//! of (app_id, user_id): the first four bytes, big-endian, of SHA-256 over
//! `app_id || 0x00 || user_id`, modulo `P`. It is written down so that Postgres
//! (`presence_partition()` in the migrations), SDKs and tools compute the same number.

use sha2::{Digest, Sha256, Sha256VarCore, digest::core_api::Block};

/// The partition count a deployment gets unless it chooses another at its first migration.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// The 32-bit hash of a user, before `mod P`.
pub fn user_hash(app_id: &str, user_id: &str) -> u32 {
    one_block_hash(app_id.as_bytes(), user_id.as_bytes()).unwrap_or_else(|| {
        let mut hasher = Sha256::new();
        hasher.update(app_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(user_id.as_bytes());
        leading_word(&hasher.finalize())
    })
}

/// A digest's first four bytes, big-endian: the documented hash.
fn leading_word(digest: &[u8]) -> u32 {
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// [`user_hash`] of a message that fits one padded block (55 bytes at most, as nearly every id
/// does), padded by hand and compressed once: a batch query hashes every id it is given, and the
/// streaming hasher's buffering cost a third as much again as the compression itself.
fn one_block_hash(app_id: &[u8], user_id: &[u8]) -> Option<u32> {
    let len = app_id.len() + 1 + user_id.len();
    if len > 55 {
        return None;
    }
    let mut block = [0u8; 64];
    block[..app_id.len()].copy_from_slice(app_id);
    block[app_id.len() + 1..len].copy_from_slice(user_id);
    block[len] = 0x80;
    block[56..].copy_from_slice(&(len as u64 * 8).to_be_bytes());
    let mut state = SHA256_IV;
    sha2::compress256(&mut state, &[Block::<Sha256VarCore>::from(block)]);
    // The digest's first four bytes, big-endian, are the first state word.
    Some(state[0])
}

/// The partition of (app_id, user_id) among `partitions` (at least 1).
pub fn partition_of(app_id: &str, user_id: &str, partitions: u32) -> u32 {
    user_hash(app_id, user_id) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented hash, computed the plain way.
    fn digest_hash(app: &str, user: &str) -> u32 {
        leading_word(&Sha256::digest([app.as_bytes(), b"\0", user.as_bytes()].concat()))
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // sha256("chat\0alice") starts with these four bytes; Postgres' presence_partition()
        // is checked against this function in the registry's tests.
        let expected = digest_hash("chat", "alice");
        assert_eq!(user_hash("chat", "alice"), expected);
        assert_eq!(partition_of("chat", "alice", 64), expected % 64);
    }

    #[test]
    fn the_one_block_hash_is_sha256_at_every_length() {
        let long = "é".repeat(40) + &"x".repeat(60);
        for app in ["", "a", "chat", "an-app-with-a-much-longer-name"] {
            for end in (0..=long.len()).filter(|end| long.is_char_boundary(*end)) {
                let user = &long[..end];
                assert_eq!(user_hash(app, user), digest_hash(app, user), "app {app:?}, {end} bytes of user");
            }
        }
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
