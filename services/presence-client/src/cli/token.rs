//! `presence-cli token`: what an app backend does to let a device log in.

use std::time::Duration;

use clap::Args;

use super::DEV_TOKEN_SECRET;

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user the token is for (`sub`).
    #[arg(long)]
    pub user: String,
    /// The app (`app` claim).
    #[arg(long, default_value = presence_proto::DEFAULT_APP_ID)]
    pub app: String,
    /// The app's token secret.
    #[arg(long, env = "PRESENCE_TOKEN_SECRET", default_value = DEV_TOKEN_SECRET, hide_env_values = true)]
    pub secret: String,
    /// Validity in seconds (`exp` = now + this).
    #[arg(long = "ttl-s", default_value_t = 86_400)]
    pub ttl_s: u64,
}

/// The token `presence-cli token` prints.
pub fn token(args: &TokenArgs) -> Result<String, jsonwebtoken::errors::Error> {
    crate::mint_token(&args.secret, &args.user, Some(&args.app), Duration::from_secs(args.ttl_s))
}
