//! The callback signature of http-api.md: `X-Presence-Signature: sha256=<hex HMAC-SHA256 over
//! "<timestamp>.<body>">` keyed by the app's `callback_secret`. The notifier signs, receivers
//! (`presence-cli receive`, tests) verify; one implementation so they cannot disagree.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header names of a callback request.
pub const EVENT_ID_HEADER: &str = "x-presence-event-id";
pub const TIMESTAMP_HEADER: &str = "x-presence-timestamp";
pub const SIGNATURE_HEADER: &str = "x-presence-signature";

const PREFIX: &str = "sha256=";

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Presence-Signature` value for `body` sent at `timestamp` (the header's text, unix ms).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!("{PREFIX}{}", hex::encode(mac(secret.as_bytes(), timestamp, body).finalize().into_bytes()))
}

/// Whether `signature` (the header's value) is `body`'s at `timestamp`; constant time.
pub fn verify(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix(PREFIX) else { return false };
    let Ok(given) = hex::decode(hex_digest) else { return false };
    let expected = mac(secret.as_bytes(), timestamp, body).finalize().into_bytes();
    expected[..].ct_eq(&given[..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_secret_timestamp_and_body() {
        let sig = sign("cb", "1700000000000", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(verify("cb", "1700000000000", b"{\"a\":1}", &sig));
        assert!(!verify("other", "1700000000000", b"{\"a\":1}", &sig));
        assert!(!verify("cb", "1700000000001", b"{\"a\":1}", &sig));
        assert!(!verify("cb", "1700000000000", b"{\"a\":2}", &sig));
        assert!(!verify("cb", "1700000000000", b"{\"a\":1}", "sha256=zz"));
        assert!(!verify("cb", "1700000000000", b"{\"a\":1}", &sig[7..]));
    }

    #[test]
    fn matches_an_independent_hmac() {
        // Computed with Python: hmac.new(b"cb-default", b'1700000000000.{"seq":1}', sha256).
        let sig = sign("cb-default", "1700000000000", b"{\"seq\":1}");
        assert_eq!(sig, "sha256=babecec13449db6e317e58fecc7db31c92d9a0c9dee969fb56df4f6dfb0ea974");
    }
}
