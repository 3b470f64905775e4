//! The gateway's login path on arbitrary input, with the gateway crate's own code: a frame body
//! decoded by the server codec whose `Login` is validated (`login_request::validate_login`) and
//! whose token is then verified (`auth::verify`); a raw token string; or arbitrary claims signed
//! with the right secret (so that claim parsing is reached, which an unsigned token never gets
//! past).

#![no_main]

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::{BufMut, BytesMut};
use connection_gateway::{auth, login_request::validate_login};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use presence_proto::{
    DEFAULT_APP_ID,
    framing::ServerCodec,
    limits::{MAX_ID_LEN, MAX_TOKEN_LEN},
    v1::{Platform, client_frame::Kind},
};
use tokio_util::codec::Decoder;

const SECRET: &str = "secret";
/// The default `apps.max_token_lifetime_s`.
const LIFETIME: std::time::Duration = std::time::Duration::from_secs(604_800);
/// `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

fn signed(claims: &[u8]) -> String {
    let signing_input = format!("{HEADER}.{}", URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// `body` as one frame on the wire, decoded as the gateway decodes it.
fn decode_frame(body: &[u8]) -> Option<Kind> {
    let mut wire = BytesMut::with_capacity(body.len() + 4);
    wire.put_u32(u32::try_from(body.len()).ok()?);
    wire.extend_from_slice(body);
    ServerCodec::new().decode(&mut wire).ok().flatten()?.kind
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let Some(Kind::Login(login)) = decode_frame(rest) else { return };
            let Ok(valid) = validate_login(login.clone()) else { return };
            // What validation lets through is within the contract's limits.
            assert!(!valid.user_id.is_empty() && valid.user_id.len() <= MAX_ID_LEN, "{login:?}");
            assert!(!valid.device_id.is_empty() && valid.device_id.len() <= MAX_ID_LEN, "{login:?}");
            assert!(!valid.app_id.is_empty() && valid.app_id.len() <= MAX_ID_LEN, "{login:?}");
            assert!(valid.client_version.len() <= MAX_ID_LEN && valid.token.len() <= MAX_TOKEN_LEN, "{login:?}");
            assert!(valid.platform != Platform::Unspecified, "{login:?}");
            assert!(login.app_id == valid.app_id || (login.app_id.is_empty() && valid.app_id == DEFAULT_APP_ID));
            // Unsigned by us: acceptance would mean a forged token.
            assert!(auth::verify(&valid.token, SECRET, &valid.app_id, &valid.user_id, LIFETIME).is_err(), "{login:?}");
        }
        1 => {
            let token = String::from_utf8_lossy(rest);
            assert!(auth::verify(&token, SECRET, DEFAULT_APP_ID, "u", LIFETIME).is_err(), "forged: {token}");
        }
        _ => {
            let token = signed(rest);
            if auth::verify(&token, SECRET, "app", "u", LIFETIME).is_ok() {
                // Accepted: the claims must say this user, this app (or none), and an expiry.
                let claims: serde_json::Value = serde_json::from_slice(rest).expect("accepted claims are JSON");
                assert_eq!(claims["sub"], "u", "{claims}");
                assert!(claims["app"].is_null() || claims["app"] == "app", "{claims}");
                assert!(claims["exp"].is_number(), "{claims}");
            }
        }
    }
});
