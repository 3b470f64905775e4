//! Caller tokens of the internal gRPC links: `pi1.<role>.<id>.<signature>`, the signature an
//! HMAC-SHA256 of `pi1.<role>.<id>` under the deployment's internal secret. Only the registry
//! holds the secret; each caller holds its own token, minted by `presence-cli internal-token`.
//! The registry's interceptor and per-RPC role checks are `presence_common::internal_auth`.

use std::{fmt, str::FromStr, sync::Arc};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Token format version: a new format gets a new prefix.
const PREFIX: &str = "pi1";
/// Longest caller id (gateway ids are logged and stored).
pub const MAX_CALLER_ID_LEN: usize = 64;
/// Shortest internal secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// What a caller is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Login, Logout, Disconnect and GatewayLink.Attach, for its own gateway id only.
    Gateway,
    /// Query, Kick and ReadEvents (the REST facade, and load generators acting as it).
    Facade,
    /// EventFeed.Subscribe.
    Notifier,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Gateway, Role::Facade, Role::Notifier];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Facade => "facade",
            Self::Notifier => "notifier",
        }
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(name: &str) -> Result<Self, AuthError> {
        Self::ALL.into_iter().find(|role| role.as_str() == name).ok_or(AuthError::UnknownRole)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token was refused, or cannot be made. The text never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no caller token: send `authorization: Bearer <INTERNAL_TOKEN>`")]
    Missing,
    #[error("malformed caller token")]
    Malformed,
    #[error("unknown role (gateway, facade or notifier)")]
    UnknownRole,
    #[error("caller id must be 1 to {MAX_CALLER_ID_LEN} characters of A-Z, a-z, 0-9, '-' and '_'")]
    BadId,
    #[error("caller token signature does not verify")]
    BadSignature,
    #[error("the internal secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
}

/// Who a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerId {
    pub role: Role,
    pub id: String,
}

/// The deployment's internal secret. Debug never shows it.
#[derive(Clone)]
pub struct InternalSecret(Arc<[u8]>);

impl InternalSecret {
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, AuthError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::ShortSecret);
        }
        Ok(Self(secret.into()))
    }

    /// A token for `id` acting as `role`.
    pub fn mint(&self, role: Role, id: &str) -> Result<String, AuthError> {
        check_id(id)?;
        let claim = format!("{PREFIX}.{role}.{id}");
        let signature = hex::encode(self.sign(&claim));
        Ok(format!("{claim}.{signature}"))
    }

    /// The caller a token names, if its signature verifies.
    pub fn verify(&self, token: &str) -> Result<CallerId, AuthError> {
        let (claim, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let mut parts = claim.splitn(3, '.');
        let (Some(PREFIX), Some(role), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        let signature = hex::decode(signature).map_err(|_| AuthError::Malformed)?;
        if !bool::from(self.sign(claim).as_slice().ct_eq(&signature)) {
            return Err(AuthError::BadSignature);
        }
        let role = role.parse()?;
        check_id(id)?;
        Ok(CallerId { role, id: id.to_owned() })
    }

    fn sign(&self, claim: &str) -> Vec<u8> {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else { return Vec::new() };
        mac.update(claim.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

impl fmt::Debug for InternalSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InternalSecret(..)")
    }
}

fn check_id(id: &str) -> Result<(), AuthError> {
    let valid = (1..=MAX_CALLER_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid { Ok(()) } else { Err(AuthError::BadId) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> InternalSecret {
        InternalSecret::new([7u8; 32]).expect("long enough")
    }

    #[test]
    fn a_minted_token_verifies_as_its_caller() {
        let token = secret().mint(Role::Gateway, "gw-1").expect("mint");
        assert!(token.starts_with("pi1.gateway.gw-1."), "{token}");
        assert_eq!(secret().verify(&token), Ok(CallerId { role: Role::Gateway, id: "gw-1".into() }));
    }

    #[test]
    fn forged_or_altered_tokens_are_refused() {
        let token = secret().mint(Role::Gateway, "gw-1").expect("mint");
        let other = InternalSecret::new([8u8; 32]).expect("long enough");
        assert_eq!(other.verify(&token), Err(AuthError::BadSignature));
        // Same signature, another id or role: the signature covers both.
        let signature = token.rsplit_once('.').expect("dot").1;
        assert_eq!(secret().verify(&format!("pi1.gateway.gw-2.{signature}")), Err(AuthError::BadSignature));
        assert_eq!(secret().verify(&format!("pi1.facade.gw-1.{signature}")), Err(AuthError::BadSignature));
        for bad in ["", "pi1", "pi1.gateway.gw-1", "pi2.gateway.gw-1.00", "pi1.gateway.gw-1.zz"] {
            assert!(secret().verify(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_and_secrets_are_checked() {
        assert_eq!(secret().mint(Role::Gateway, ""), Err(AuthError::BadId));
        assert_eq!(secret().mint(Role::Gateway, "a.b"), Err(AuthError::BadId));
        assert_eq!(secret().mint(Role::Gateway, &"g".repeat(65)), Err(AuthError::BadId));
        assert_eq!(InternalSecret::new("short").map(|_| ()), Err(AuthError::ShortSecret));
        assert_eq!(format!("{:?}", secret()), "InternalSecret(..)");
    }
}
