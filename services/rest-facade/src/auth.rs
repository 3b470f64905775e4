//! `Authorization: Bearer <api key>` → the calling app. Every handler takes [`CallerApp`] first,
//! so a request is authenticated before its body is read, and every registry call is scoped to
//! the caller's own `app_id`: an app can never name another app's users or events.

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use presence_common::AppConfig;

use crate::{error::ApiError, state::AppState};

/// The app whose API key the request carries.
pub struct CallerApp(pub Arc<AppConfig>);

impl CallerApp {
    pub fn id(&self) -> &str {
        &self.0.app_id
    }
}

/// The key of an `Authorization` header value: scheme `Bearer` (any case), then the key.
pub(crate) fn bearer_key(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

impl FromRequestParts<AppState> for CallerApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_key)
            .ok_or(ApiError::Unauthenticated)?;
        // Hashed once, then one lookup by hash (AppDirectory::find_by_api_key).
        state.apps.find_by_api_key(key).map(Self).ok_or(ApiError::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        assert_eq!(bearer_key("Bearer abc"), Some("abc"));
        assert_eq!(bearer_key("bearer  abc "), Some("abc"));
        assert_eq!(bearer_key("Basic abc"), None);
        assert_eq!(bearer_key("Bearer "), None);
        assert_eq!(bearer_key("abc"), None);
    }
}
