//! One set of error codes for every service, mapped to both gRPC and HTTP, so an error raised in
//! the registry reaches an app backend through the REST facade with the same meaning.

use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    PayloadTooLarge,
    /// Too many requests for now: the caller should slow down and retry (HTTP 429).
    RateLimited,
    /// The user is offline, and the request needs an online or push_online user (HTTP 409).
    UserOffline,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Snake-case code for JSON bodies and client frames.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::UserOffline => "user_offline",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn grpc_code(self) -> Code {
        match self {
            Self::BadRequest | Self::PayloadTooLarge => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::RateLimited => Code::ResourceExhausted,
            Self::UserOffline => Code::FailedPrecondition,
            Self::Unavailable => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::UserOffline => 409,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The code a gRPC status carries back (used by callers of the registry).
    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::BadRequest,
            Code::FailedPrecondition => Self::UserOffline,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::ResourceExhausted => Self::RateLimited,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unavailable,
            _ => Self::Internal,
        }
    }

    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), message)
    }
}

/// An error with its causes, `outer: cause: root`. tonic's and reqwest's own messages say little
/// at the top ("transport error", "error sending request"); the useful part is further down.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_round_trip_keeps_the_meaning() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::RateLimited,
            ErrorCode::UserOffline,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code);
        }
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
    }
}
