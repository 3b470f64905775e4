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

/// Longest custom status, in bytes of UTF-8.
pub const MAX_CUSTOM_STATUS_LEN: usize = 256;

/// Subscriptions per `Subscribe` request, like ids per query.
pub const MAX_IDS_PER_SUBSCRIBE: usize = 500;

/// Largest frame body the client protocol allows, in bytes.
pub const MAX_FRAME_LEN: usize = 65_536;

/// Whether `id` is a valid id: 1 to [`MAX_ID_LEN`] bytes, no control characters. Ids reach
/// Postgres (which refuses NUL in text), logs and other users' views.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && is_valid_text(id, MAX_ID_LEN)
}

/// Whether free text (e.g. `client_version`) is at most `max` bytes with no control characters.
pub fn is_valid_text(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(char::is_control)
}

/// JSON Schema `pattern` of an id: no control characters (C0, DEL, C1).
pub const ID_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$";

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

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\0b", "line\nbreak", "tab\t", "del\u{7f}", "c1\u{85}"] {
            assert!(!is_valid_id(bad), "{bad:?}");
            assert!(!is_valid_text(bad, 100), "{bad:?}");
        }
        assert!(is_valid_id("ünïcödé-ok_1.2"));
        assert!(is_valid_text("", 10));
    }
}
