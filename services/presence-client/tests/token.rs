//! `presence-cli token`: the library function and the binary both mint what the gateway checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use presence_client::{
    Claims,
    cli::token::{TokenArgs, token},
};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(token: &str, secret: &str) -> Claims {
    decode::<Claims>(
        token.trim(),
        &DecodingKey::from_secret(secret.as_bytes()),
        &Validation::new(Algorithm::HS256),
    )
    .expect("a valid HS256 token")
    .claims
}

#[test]
fn the_token_function_sets_sub_app_and_exp() {
    let args = TokenArgs { user: "alice".into(), app: "chat".into(), secret: "s3cret".into(), ttl_s: 600 };
    let c = claims(&token(&args).unwrap(), "s3cret");
    assert_eq!(c.sub, "alice");
    assert_eq!(c.app.as_deref(), Some("chat"));
    let exp = c.exp.expect("exp is set");
    assert!((now() + 590..=now() + 610).contains(&exp), "exp {exp}");
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_presence-cli"));
    command.args(args).env_remove("PRESENCE_TOKEN_SECRET");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("presence-cli runs")
}

#[test]
fn the_binary_prints_a_token_with_the_dev_defaults() {
    // As scripts/dev.sh calls it.
    let out = cli(&["token", "--user", "alice", "--secret", "dev-token-secret"], &[]);
    assert!(out.status.success(), "{out:?}");
    let c = claims(&String::from_utf8_lossy(&out.stdout), "dev-token-secret");
    assert_eq!((c.sub.as_str(), c.app.as_deref()), ("alice", Some("default")));
    let exp = c.exp.expect("exp is set");
    assert!((now() + 86_390..=now() + 86_410).contains(&exp), "a day by default: {exp}");

    // The secret defaults to the dev seed's, and PRESENCE_TOKEN_SECRET overrides that.
    let out = cli(&["token", "--user", "bob", "--ttl-s", "60"], &[]);
    assert_eq!(claims(&String::from_utf8_lossy(&out.stdout), "dev-token-secret").sub, "bob");
    let out = cli(&["token", "--user", "bob", "--app", "chat"], &[("PRESENCE_TOKEN_SECRET", "env-secret")]);
    let c = claims(&String::from_utf8_lossy(&out.stdout), "env-secret");
    assert_eq!(c.app.as_deref(), Some("chat"));

    assert!(!cli(&["token"], &[]).status.success(), "--user is required");
}
