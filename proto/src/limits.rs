//! The size limits of the contracts, in one place: every service checks against these, so a
//! request one service accepts is never refused by the next for being too long.

/// Longest id accepted anywhere, in bytes: app, user, device, session and gateway ids, and
/// `Login.client_version`. Ids are at least 1 byte; `client_version` may be empty.
pub const MAX_ID_LEN: usize = 256;

/// Longest login token, in bytes (an HS256 JWT with a few claims is far shorter).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Most user ids one presence query may name (registry `Query`, `POST /v1/presence/query`).
pub const MAX_IDS_PER_QUERY: usize = 500;

/// Page of `ReadEvents` and `GET /v1/events` when the caller names none.
pub const DEFAULT_EVENTS_PAGE: u32 = 100;

/// Largest page of `ReadEvents` and `GET /v1/events`.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// Largest frame body the client protocol allows, in bytes.
pub const MAX_FRAME_LEN: usize = 65_536;

/// Whether `id` is a valid id: 1 to [`MAX_ID_LEN`] bytes.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_to_max_bytes() {
        assert!(!is_valid_id(""));
        assert!(is_valid_id("u"));
        assert!(is_valid_id(&"x".repeat(MAX_ID_LEN)));
        assert!(!is_valid_id(&"x".repeat(MAX_ID_LEN + 1)));
    }
}
