//! The gateway's login path on arbitrary input: a `ClientFrame` protobuf whose `Login` goes
//! through the gateway's own token check, a raw token string, or arbitrary claims signed with the
//! right secret (so that claim parsing is reached, which an unsigned token never gets past).
//!
//! `auth.rs` is private to the gateway crate, so it is compiled in here from its source file:
//! this fuzzes the very code the gateway runs, without a public API for it.

#![no_main]

#[path = "../../services/connection-gateway/src/auth.rs"]
#[allow(dead_code)]
mod auth;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use presence_proto::v1::{ClientFrame, client_frame::Kind};
use prost::Message;

const SECRET: &str = "secret";
/// `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

fn signed(claims: &[u8]) -> String {
    let signing_input = format!("{HEADER}.{}", URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let Ok(frame) = ClientFrame::decode(rest) else { return };
            if let Some(Kind::Login(login)) = frame.kind {
                let app = if login.app_id.is_empty() { "default" } else { login.app_id.as_str() };
                // Unsigned by us: acceptance would mean a forged token.
                assert!(auth::verify(&login.token, SECRET, app, &login.user_id).is_err(), "{login:?}");
            }
        }
        1 => {
            let token = String::from_utf8_lossy(rest);
            assert!(auth::verify(&token, SECRET, "default", "u").is_err(), "forged: {token}");
        }
        _ => {
            let token = signed(rest);
            if auth::verify(&token, SECRET, "app", "u").is_ok() {
                // Accepted: the claims must say this user, this app (or none), and an expiry.
                let claims: serde_json::Value = serde_json::from_slice(rest).expect("accepted claims are JSON");
                assert_eq!(claims["sub"], "u", "{claims}");
                assert!(claims["app"].is_null() || claims["app"] == "app", "{claims}");
                assert!(claims["exp"].is_number(), "{claims}");
            }
        }
    }
});
