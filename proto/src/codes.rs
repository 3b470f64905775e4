//! The codes devices see, typed: `LoginError.code`, `Error.code`, `Kicked.reason` and
//! `RequestError.code` (docs/protocol.md lists each with what a client should do).
//!
//! The wire carries them as strings so that servers can add codes without breaking old SDKs; an
//! SDK treats a code it does not know as "retry later with backoff" ([`LoginErrorCode::from_name`]
//! returns `None` for it). Nothing else may reach a device: internal error text stays in logs.

/// One enum per field; each lists its contract names once.
macro_rules! device_codes {
    ($(#[$doc:meta])* $ty:ident { $($(#[$vdoc:meta])* $variant:ident => $name:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($(#[$vdoc])* $variant),+
        }

        impl $ty {
            /// Every code, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The code as the wire carries it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// The code of a wire string; `None` for a code this build does not know.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

device_codes!(
    /// `LoginError.code`: why a login was refused. The connection closes after it.
    LoginErrorCode {
        /// The token does not verify, names another user or app, or the app is unknown.
        BadToken => "bad_token",
        /// The token's `exp` has passed: mint a new one.
        TokenExpired => "token_expired",
        /// A field is missing, too long or malformed: a client bug, retrying will not help.
        BadRequest => "bad_request",
        /// The service cannot take logins right now: retry with backoff.
        Unavailable => "unavailable",
        /// Too many logins from this address: retry with backoff.
        RateLimited => "rate_limited",
    }
);

device_codes!(
    /// `Error.code`: the device broke the protocol or a limit; the connection closes after it.
    ErrorFrameCode {
        /// No `Login` within the login timeout after connect.
        LoginTimeout => "login_timeout",
        /// A frame of length 0.
        ZeroLength => "zero_length",
        /// A frame longer than 65,536 bytes.
        TooLong => "too_long",
        /// A frame that is not a `ClientFrame`.
        Malformed => "malformed",
        /// A `ClientFrame` with no message set.
        EmptyFrame => "empty_frame",
        /// A second `Login` on a logged-in connection.
        DuplicateLogin => "duplicate_login",
        /// Another frame before `Login`.
        LoginRequired => "login_required",
        /// The device does not read what the gateway sends.
        SlowConsumer => "slow_consumer",
        /// This address holds as many connections as the gateway allows it.
        TooManyConnections => "too_many_connections",
    }
);

device_codes!(
    /// `Kicked.reason`: why the server ended a logged-in session.
    KickReason {
        /// Another device of the same user logged in and the app's login policy let it win.
        ReplacedByLogin => "replaced_by_login",
        /// The app backend kicked the user or device (REST).
        Admin => "admin",
    }
);

device_codes!(
    /// `RequestError.code`: a request (`SetStatus`, `Subscribe`, `Unsubscribe`) failed; the
    /// connection stays open.
    RequestErrorCode {
        /// The request would take the device over its subscription limit.
        TooManySubscriptions => "too_many_subscriptions",
        /// A field is missing, too long or malformed.
        BadRequest => "bad_request",
        /// Too many requests: retry with backoff.
        RateLimited => "rate_limited",
        /// The service cannot answer right now: retry with backoff.
        Unavailable => "unavailable",
    }
);

impl LoginErrorCode {
    /// Whether retrying the same login later can succeed: unknown codes count as retryable.
    pub fn retry_later(code: &str) -> bool {
        !matches!(Self::from_name(code), Some(Self::BadToken | Self::TokenExpired | Self::BadRequest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique_per_field() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            name: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            let mut seen = std::collections::HashSet::new();
            for &code in all {
                assert_eq!(parse(name(code)), Some(code));
                assert!(seen.insert(name(code)), "{code:?} twice");
                assert!(name(code).bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code:?}");
            }
            assert_eq!(parse("no_such_code"), None);
        }
        check(LoginErrorCode::ALL, LoginErrorCode::as_str, LoginErrorCode::from_name);
        check(ErrorFrameCode::ALL, ErrorFrameCode::as_str, ErrorFrameCode::from_name);
        check(KickReason::ALL, KickReason::as_str, KickReason::from_name);
        check(RequestErrorCode::ALL, RequestErrorCode::as_str, RequestErrorCode::from_name);
    }

    #[test]
    fn only_client_mistakes_are_final() {
        assert!(!LoginErrorCode::retry_later("bad_token"));
        assert!(!LoginErrorCode::retry_later("token_expired"));
        assert!(!LoginErrorCode::retry_later("bad_request"));
        assert!(LoginErrorCode::retry_later("unavailable"));
        assert!(LoginErrorCode::retry_later("rate_limited"));
        assert!(LoginErrorCode::retry_later("a_code_from_a_newer_server"));
    }
}
