//! Login tokens: HS256 JWTs signed with the app's `token_secret`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, errors::ErrorKind};
use presence_proto::codes::LoginErrorCode;
use serde::Deserialize;

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_S: u64 = 5;

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    app: Option<String>,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

/// Why a token was refused; maps to `LoginError.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// "bad_token": signature, algorithm, missing claims, wrong user or app, `nbf` or `iat` in
    /// the future, or a lifetime over the app's maximum.
    Bad,
    /// "token_expired".
    Expired,
}

impl TokenError {
    pub fn code(self) -> LoginErrorCode {
        match self {
            Self::Bad => LoginErrorCode::BadToken,
            Self::Expired => LoginErrorCode::TokenExpired,
        }
    }
}

/// Checks `token` for `user_id` of `app_id` against `secret`: HS256 only, `exp` required, `sub`
/// equal to the user, `app` (if present) equal to the app, `nbf` (if present) passed, and a
/// lifetime (`exp` - `iat`, or `exp` - now without `iat`) of at most `max_lifetime`.
pub fn verify(
    token: &str,
    secret: &str,
    app_id: &str,
    user_id: &str,
    max_lifetime: Duration,
) -> Result<(), TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.leeway = LEEWAY_S;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation).map_err(
        |err| match err.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Bad,
        },
    )?;
    if data.claims.sub != user_id {
        return Err(TokenError::Bad);
    }
    if data.claims.app.as_deref().is_some_and(|app| app != app_id) {
        return Err(TokenError::Bad);
    }
    let now = presence_common::time::now_ms() / 1000;
    let issued = match data.claims.iat {
        Some(iat) if iat > now + LEEWAY_S => return Err(TokenError::Bad),
        Some(iat) => iat,
        None => now,
    };
    if data.claims.exp.saturating_sub(issued) > max_lifetime.as_secs() + LEEWAY_S {
        return Err(TokenError::Bad);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn now() -> u64 {
        presence_common::time::now_ms() / 1000
    }

    fn token(alg: Algorithm, claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn a_valid_token_passes() {
        let t = token(Algorithm::HS256, json!({"sub": "u", "exp": now() + 60}), "s");
        assert_eq!(verify(&t, "s", "default", "u", WEEK), Ok(()));
        let t = token(Algorithm::HS256, json!({"sub": "u", "exp": now() + 60, "app": "a"}), "s");
        assert_eq!(verify(&t, "s", "a", "u", WEEK), Ok(()));
    }

    #[test]
    fn rejections_have_the_right_code() {
        let exp = now() + 60;
        let cases = [
            (token(Algorithm::HS256, json!({"sub": "u", "exp": exp}), "other"), TokenError::Bad),
            (token(Algorithm::HS384, json!({"sub": "u", "exp": exp}), "s"), TokenError::Bad),
            (token(Algorithm::HS256, json!({"sub": "u"}), "s"), TokenError::Bad),
            (token(Algorithm::HS256, json!({"sub": "v", "exp": exp}), "s"), TokenError::Bad),
            (token(Algorithm::HS256, json!({"sub": "u", "exp": exp, "app": "b"}), "s"), TokenError::Bad),
            (token(Algorithm::HS256, json!({"sub": "u", "exp": now() - 600}), "s"), TokenError::Expired),
            ("not a jwt".to_owned(), TokenError::Bad),
        ];
        for (t, want) in cases {
            assert_eq!(verify(&t, "s", "a", "u", WEEK), Err(want), "{t}");
        }
    }

    #[test]
    fn alg_none_is_rejected() {
        // {"alg":"none","typ":"JWT"} . {"sub":"u","exp":9999999999} . (no signature)
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(verify(t, "s", "a", "u", WEEK), Err(TokenError::Bad));
    }

    #[test]
    fn lifetimes_are_bounded_and_nbf_iat_honoured() {
        let now = now();
        let verify_claims =
            |claims: serde_json::Value| verify(&token(Algorithm::HS256, claims, "s"), "s", "a", "u", WEEK);
        // exp in the year 9999: far past a week.
        assert_eq!(verify_claims(json!({"sub": "u", "exp": 253_402_300_799u64})), Err(TokenError::Bad));
        assert_eq!(verify_claims(json!({"sub": "u", "exp": now + 6 * 86_400})), Ok(()));
        // Issued long ago for eight days: too long, even though it has days left.
        let iat = now - 86_400;
        assert_eq!(
            verify_claims(json!({"sub": "u", "iat": iat, "exp": iat + 8 * 86_400})),
            Err(TokenError::Bad)
        );
        assert_eq!(verify_claims(json!({"sub": "u", "iat": now, "exp": now + 3600})), Ok(()));
        // Issued in the future, or not valid yet.
        assert_eq!(
            verify_claims(json!({"sub": "u", "iat": now + 600, "exp": now + 3600})),
            Err(TokenError::Bad)
        );
        assert_eq!(
            verify_claims(json!({"sub": "u", "nbf": now + 600, "exp": now + 3600})),
            Err(TokenError::Bad)
        );
        assert_eq!(verify_claims(json!({"sub": "u", "nbf": now - 60, "exp": now + 3600})), Ok(()));
    }
}
