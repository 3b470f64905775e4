//! The library half of `presence-cli`: argument types and the logic of each command, kept out
//! of the binary so tests can drive it. The binary only parses, dispatches and sets exit codes.

pub mod connect;
pub mod internal_token;
pub mod receive;
pub mod rest;
pub mod token;
pub mod watch;

use clap::{Parser, Subcommand};
use presence_proto::v1::Platform;

/// Token secret of the development app `default` (scripts/dev-seed.sql).
pub const DEV_TOKEN_SECRET: &str = "dev-token-secret";
/// REST API key of the development app.
pub const DEV_API_KEY: &str = "dev-api-key";
/// Callback secret of the development app.
pub const DEV_CALLBACK_SECRET: &str = "dev-callback-secret";

/// Try presence from a terminal: mint tokens, be a device, query and kick over REST, and
/// receive the signed callbacks.
#[derive(Debug, Parser)]
#[command(name = "presence-cli", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a device login token (HS256 JWT) for a user.
    Token(token::TokenArgs),
    /// Log a device in and keep it online; prints every frame; Ctrl-C logs out.
    Connect(connect::ConnectArgs),
    /// Subscribe to users and print their status as it changes (reconnects by itself); Ctrl-C
    /// logs out.
    Watch(watch::WatchArgs),
    /// Query users' presence through the REST facade.
    Query(rest::QueryArgs),
    /// Force a user's devices offline through the REST facade.
    Kick(rest::KickArgs),
    /// Receive status-change callbacks and check their signatures.
    Receive(receive::ReceiveArgs),
    /// Print a caller token for a gateway, notifier or facade (its INTERNAL_TOKEN).
    InternalToken(internal_token::InternalTokenArgs),
}

/// reqwest is built without a TLS provider of its own: install rustls' *ring* provider (as
/// `presence_common::tls` does in the services) before building a client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses a platform by its contract name (`ios`, `android`, ...), for clap.
pub fn parse_platform(name: &str) -> Result<Platform, String> {
    Platform::from_name(&name.to_ascii_lowercase()).map_err(|_| {
        let names: Vec<&str> = Platform::NAMED.iter().filter_map(|p| p.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// The contract name of a platform, `unknown` for numbers this build does not know.
pub fn platform_name(raw: i32) -> &'static str {
    Platform::try_from(raw).ok().and_then(Platform::name).unwrap_or("unknown")
}

/// `HH:MM:SS` (UTC) of now, to prefix printed lines.
pub fn clock() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}
