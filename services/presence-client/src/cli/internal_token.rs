//! `presence-cli internal-token`: what an operator does to let a gateway, notifier or facade call
//! the registry (docs/configuration.md, "Internal authentication").

use clap::Args;
use presence_proto::internal_token::{AuthError, InternalSecret, Role};

#[derive(Debug, Clone, Args)]
pub struct InternalTokenArgs {
    /// What the caller may do: gateway, facade or notifier.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// The caller's id; for a gateway, its GATEWAY_ID (it may act under no other).
    #[arg(long)]
    pub id: String,
    /// The deployment's internal secret, as the registry has it.
    #[arg(long, env = "REGISTRY_INTERNAL_SECRET", hide_env_values = true)]
    pub secret: String,
}

fn parse_role(name: &str) -> Result<Role, String> {
    name.parse().map_err(|err: AuthError| err.to_string())
}

/// The token `presence-cli internal-token` prints (the caller's `INTERNAL_TOKEN`).
pub fn internal_token(args: &InternalTokenArgs) -> Result<String, AuthError> {
    InternalSecret::new(args.secret.trim_end())?.mint(args.role, &args.id)
}
