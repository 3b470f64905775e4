//! Login tokens: only valid HS256 JWTs of the right app and user get in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use presence_client::{Claims, ClientError, LoginParams, mint_token, mint_token_with};
use presence_proto::v1::Platform;
use testkit::{WAIT, eventually, inprocess::*};

fn now() -> u64 {
    presence_common::time::now_ms() / 1000
}

async fn login_code(gateway: &TestGateway, params: LoginParams) -> Option<String> {
    let mut client = gateway.client().await;
    match tokio::time::timeout(WAIT, client.login(params)).await.expect("answered in time") {
        Ok(_) => None,
        Err(ClientError::Login { code, .. }) => Some(code),
        Err(other) => panic!("unexpected: {other}"),
    }
}

fn with_token(token: String) -> LoginParams {
    LoginParams::new("alice", "phone", Platform::Ios, token)
}

#[tokio::test]
async fn tokens_are_checked() {
    let registry = TestRegistry::start().await;
    registry.db.add_app("other", "other-secret").await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    // The other app's own token works for the other app (once the registry has loaded it too).
    let other = || LoginParams {
        app_id: "other".into(),
        ..with_token(mint_token("other-secret", "alice", Some("other"), Duration::from_secs(60)).unwrap())
    };
    eventually("the app other to be known", async || login_code(&gateway, other()).await.is_none()).await;

    let claims = |sub: &str, exp: Option<u64>, app: Option<&str>| Claims {
        sub: sub.into(),
        exp,
        app: app.map(str::to_owned),
    };
    let hour = Some(now() + 3600);
    let alg_none = {
        use std::io::Write;
        let mut header = Vec::new();
        write!(header, r#"{{"alg":"none","typ":"JWT"}}"#).unwrap();
        let enc = |b: &[u8]| {
            const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in b.chunks(3) {
                let n =
                    chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        };
        let body = format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 3600);
        format!("{}.{}.", enc(&header), enc(body.as_bytes()))
    };
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims("alice", hour, None),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, LoginParams, Option<&str>)> = vec![
        ("valid", with_token(mint_token(SECRET, "alice", None, Duration::from_secs(60)).unwrap()), None),
        (
            "valid with app",
            with_token(mint_token(SECRET, "alice", Some("default"), Duration::from_secs(60)).unwrap()),
            None,
        ),
        ("alg none", with_token(alg_none), Some("bad_token")),
        ("HS384", with_token(hs384), Some("bad_token")),
        (
            "wrong secret",
            with_token(mint_token("nope", "alice", None, Duration::from_secs(60)).unwrap()),
            Some("bad_token"),
        ),
        (
            "expired",
            with_token(
                mint_token_with(SECRET, &Header::default(), &claims("alice", Some(now() - 600), None))
                    .unwrap(),
            ),
            Some("token_expired"),
        ),
        (
            "missing exp",
            with_token(mint_token_with(SECRET, &Header::default(), &claims("alice", None, None)).unwrap()),
            Some("bad_token"),
        ),
        (
            "sub mismatch",
            with_token(mint_token(SECRET, "mallory", None, Duration::from_secs(60)).unwrap()),
            Some("bad_token"),
        ),
        (
            "other app's token",
            with_token(mint_token("other-secret", "alice", Some("other"), Duration::from_secs(60)).unwrap()),
            Some("bad_token"),
        ),
        (
            "app claim of another app",
            with_token(mint_token(SECRET, "alice", Some("other"), Duration::from_secs(60)).unwrap()),
            Some("bad_token"),
        ),
        (
            "unknown app",
            LoginParams { app_id: "ghost".into(), ..with_token(token("alice")) },
            Some("bad_token"),
        ),
        ("garbage", with_token("garbage".into()), Some("bad_token")),
        (
            "valid until the year 9999",
            with_token(
                mint_token_with(SECRET, &Header::default(), &claims("alice", Some(253_402_300_799), None))
                    .unwrap(),
            ),
            Some("bad_token"),
        ),
        (
            "a week and a day (apps.max_token_lifetime_s is a week)",
            with_token(mint_token(SECRET, "alice", None, Duration::from_secs(8 * 86_400)).unwrap()),
            Some("bad_token"),
        ),
    ];
    for (name, params, expected) in cases {
        assert_eq!(login_code(&gateway, params).await.as_deref(), expected, "{name}");
    }
}
