//! Every failure a client can see, as one enum rendered as `{"error":{"code","message"}}`
//! (http-api.md). Handlers and extractors return [`ApiError`]; nothing else reaches the wire.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use presence_common::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; `code` is a stable snake_case name (e.g. `too_many_user_ids`).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or invalid API key: send `Authorization: Bearer <api key>`")]
    Unauthenticated,
    #[error("no such route: {0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body too large (at most {limit} bytes)")]
    PayloadTooLarge { limit: usize },
    #[error("the body must be JSON: send `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// The registry answered with an error of its own; its meaning travels with `code`.
    #[error("{message}")]
    Registry { code: ErrorCode, message: String },
    /// The registry cannot be reached or did not answer in time: the client may retry.
    #[error("the presence registry is unavailable; retry later")]
    Unavailable,
    /// A bug on our side (a panic caught at the edge); details are in the logs only.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Registry { code, .. } => {
                StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthenticated => ErrorCode::Unauthenticated.as_str(),
            Self::NotFound(_) => ErrorCode::NotFound.as_str(),
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge.as_str(),
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Registry { code, .. } => code.as_str(),
            Self::Unavailable => ErrorCode::Unavailable.as_str(),
            Self::Internal => ErrorCode::Internal.as_str(),
        }
    }

    /// A registry call failed: unreachable or overloaded becomes 503, the rest keeps its meaning.
    pub fn from_status(status: &tonic::Status) -> Self {
        match ErrorCode::from_grpc(status.code()) {
            ErrorCode::Unavailable => {
                tracing::warn!(code = ?status.code(), message = status.message(), "registry unavailable");
                Self::Unavailable
            }
            ErrorCode::Internal => {
                tracing::error!(code = ?status.code(), message = status.message(), "registry failed");
                Self::Registry { code: ErrorCode::Internal, message: "the registry failed".to_owned() }
            }
            ErrorCode::RateLimited => Self::Registry {
                code: ErrorCode::RateLimited,
                message: "too many requests; retry later".to_owned(),
            },
            // The registry never says these to the facade; were it to, the fault would be ours
            // (our link to it), not the caller's, and the document lists no 403 anyway.
            ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::PayloadTooLarge => {
                tracing::error!(code = ?status.code(), message = status.message(), "registry refused the facade");
                Self::Registry { code: ErrorCode::Internal, message: "the registry failed".to_owned() }
            }
            code => Self::Registry { code, message: status.message().to_owned() },
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: `bad_request`, `invalid_json`, `too_many_user_ids`, `unauthenticated`, ...
    pub code: String,
    /// For humans; may change.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorResponse { error: ErrorDetail { code: self.code().to_owned(), message: self.to_string() } };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Self::Unauthenticated) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_codes_keep_their_meaning() {
        let unavailable = ApiError::from_status(&tonic::Status::unavailable("tcp connect error"));
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Transport details stay in the logs.
        assert!(!unavailable.to_string().contains("tcp"));
        let deadline = ApiError::from_status(&tonic::Status::deadline_exceeded("slow"));
        assert_eq!(deadline.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bad = ApiError::from_status(&tonic::Status::invalid_argument("user_id must be 1 to 256 bytes"));
        assert_eq!((bad.status(), bad.code()), (StatusCode::BAD_REQUEST, "bad_request"));
        assert_eq!(bad.to_string(), "user_id must be 1 to 256 bytes");
        let refused = ApiError::from_status(&tonic::Status::permission_denied("mTLS peer"));
        assert_eq!((refused.status(), refused.code()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        let refused = ApiError::from_status(&tonic::Status::unauthenticated("no cert"));
        assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let internal = ApiError::from_status(&tonic::Status::internal("boom at line 3"));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.to_string().contains("line 3"));
    }

    #[test]
    fn unauthenticated_says_how_to_authenticate() {
        let response = ApiError::Unauthenticated.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
