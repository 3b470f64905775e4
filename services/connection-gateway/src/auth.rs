//! Login tokens: HS256 JWTs signed with the app's `token_secret`.

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
}

/// Why a token was refused; maps to `LoginError.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// "bad_token": signature, algorithm, missing claims, wrong user or app.
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
/// equal to the user, and `app` (if present) equal to the app.
pub fn verify(token: &str, secret: &str, app_id: &str, user_id: &str) -> Result<(), TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.leeway = LEEWAY_S;
    validation.validate_exp = true;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(verify(&t, "s", "default", "u"), Ok(()));
        let t = token(Algorithm::HS256, json!({"sub": "u", "exp": now() + 60, "app": "a"}), "s");
        assert_eq!(verify(&t, "s", "a", "u"), Ok(()));
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
            assert_eq!(verify(&t, "s", "a", "u"), Err(want), "{t}");
        }
    }

    #[test]
    fn alg_none_is_rejected() {
        // {"alg":"none","typ":"JWT"} . {"sub":"u","exp":9999999999} . (no signature)
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(verify(t, "s", "a", "u"), Err(TokenError::Bad));
    }
}
