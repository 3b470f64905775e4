//! Minting login tokens the way an app backend does: HS256 JWTs signed with the app's secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde::{Deserialize, Serialize};

/// The claims the gateway checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// An HS256 token for `user_id`, valid for `ttl`, naming `app_id` if given.
pub fn mint_token(
    secret: &str,
    user_id: &str,
    app_id: Option<&str>,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims =
        Claims { sub: user_id.to_owned(), exp: Some(now + ttl.as_secs()), app: app_id.map(str::to_owned) };
    mint_token_with(secret, &Header::default(), &claims)
}

/// Any header and claims (other algorithms, missing or past `exp`): for tests of rejections.
pub fn mint_token_with(
    secret: &str,
    header: &Header,
    claims: &Claims,
) -> Result<String, jsonwebtoken::errors::Error> {
    encode(header, claims, &EncodingKey::from_secret(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

    #[test]
    fn minted_tokens_carry_the_claims_the_gateway_checks() {
        let token = mint_token("s", "alice", Some("app1"), Duration::from_secs(60)).unwrap();
        let data =
            decode::<Claims>(&token, &DecodingKey::from_secret(b"s"), &Validation::new(Algorithm::HS256))
                .unwrap();
        assert_eq!(data.header.alg, Algorithm::HS256);
        assert_eq!(data.claims.sub, "alice");
        assert_eq!(data.claims.app.as_deref(), Some("app1"));
        assert!(data.claims.exp.is_some_and(|exp| exp > 0));
        let no_app = mint_token("s", "bob", None, Duration::from_secs(60)).unwrap();
        let payload = no_app.split('.').nth(1).unwrap();
        // No `app` claim at all when none is given (not `"app": null`).
        assert!(!payload.is_empty());
        let data =
            decode::<Claims>(&no_app, &DecodingKey::from_secret(b"s"), &Validation::new(Algorithm::HS256))
                .unwrap();
        assert_eq!(data.claims.app, None);
    }
}
