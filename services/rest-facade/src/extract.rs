//! Extractors whose rejections are [`ApiError`]s, so malformed input always gets the JSON error
//! shape and a 4xx, never axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest body the router accepts; set with `DefaultBodyLimit`, kept here for the 413 message.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body. Syntax errors are `invalid_json`, shape errors (wrong types, unknown or missing
/// fields) are `invalid_body`: both 400, so clients need handle one status for bad input.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be absent (empty, or JSON `null`, which the document allows and which is
/// what many clients send for "no body"); present, it is checked as [`ApiJson`].
pub struct OptionalJson<T>(pub Option<T>);

/// Query-string parameters; a bad or unknown parameter is `invalid_query` (400).
pub struct ApiQuery<T>(pub T);

/// Path parameters; undecodable ones are `invalid_path` (400).
pub struct ApiPath<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<(HeaderMap, Bytes), ApiError> {
    let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state).await.map_err(|r: BytesRejection| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_request("invalid_body", format!("cannot read the request body: {}", r.body_text()))
        }
    })?;
    Ok((headers, bytes))
}

fn parse<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|err| match err.classify() {
        serde_json::error::Category::Data => ApiError::bad_request("invalid_body", err.to_string()),
        _ => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {err}")),
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = body(req, state).await?;
        parse(&headers, &bytes).map(Self)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        parse(&headers, &bytes).map(Self)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(v)| Self(v))
            .map_err(|r| ApiError::bad_request("invalid_query", r.body_text()))
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|r| ApiError::bad_request("invalid_path", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        n: u32,
    }

    fn json_headers(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&json_headers("application/json")));
        assert!(is_json(&json_headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&json_headers("application/problem+json")));
        assert!(!is_json(&json_headers("text/plain")));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn bad_bodies_are_classified() {
        let h = json_headers("application/json");
        let code = |body: &str| parse::<Body>(&h, body.as_bytes()).unwrap_err().code();
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code(r#"{"n": 1} x"#), "invalid_json");
        assert_eq!(code(r#"{"n": "one"}"#), "invalid_body");
        assert_eq!(code(r#"{"n": 1, "m": 2}"#), "invalid_body");
        assert_eq!(code("{}"), "invalid_body");
        assert!(parse::<Body>(&h, br#"{"n": 1}"#).is_ok());
        let err = parse::<Body>(&json_headers("text/plain"), b"{}").unwrap_err();
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn an_optional_body_may_be_absent_or_null() {
        let optional = |body: &'static str| {
            let request = Request::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body))
                .expect("request");
            OptionalJson::<Body>::from_request(request, &())
        };
        for absent in ["", " \n", "null", " null "] {
            assert!(optional(absent).await.expect("accepted").0.is_none(), "{absent:?}");
        }
        assert!(optional(r#"{"n": 1}"#).await.expect("accepted").0.is_some());
        assert_eq!(optional("nul").await.err().map(|e| e.code()), Some("invalid_json"));
        assert_eq!(optional("[]").await.err().map(|e| e.code()), Some("invalid_body"));
    }
}
