//! Who may call the registry. Every internal gRPC call carries a caller token,
//! `authorization: Bearer pi1.<role>.<id>.<signature>`, where the signature is an HMAC-SHA256 of
//! `pi1.<role>.<id>` under the deployment's internal secret. Only the registry holds the secret;
//! each caller holds only its own token (`presence-cli internal-token` mints them), so a gateway
//! cannot act as another gateway, nor as the facade.
//!
//! The registry checks the token in an interceptor ([`InternalAuth`]) and each RPC checks the
//! caller's role ([`Caller::require`]), so a new RPC cannot forget it: without a role check it
//! has no `Caller` to read the gateway id from either.

use std::{fmt, str::FromStr, sync::Arc};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

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
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
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
        Ok(Caller::Verified { role, id: id.to_owned() })
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

/// Who is calling, as the interceptor established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Verified {
        role: Role,
        id: String,
    },
    /// Authentication is switched off (`REGISTRY_INTERNAL_AUTH=disabled`): every check passes.
    Unchecked,
}

impl Caller {
    /// The caller of `request`, which must have `role`.
    pub fn require<T>(request: &Request<T>, role: Role) -> Result<&Caller, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::internal("the internal-auth interceptor did not run"))?;
        match caller {
            Caller::Verified { role: actual, .. } if *actual != role => {
                Err(Status::permission_denied(format!("the {actual} role may not call this")))
            }
            _ => Ok(caller),
        }
    }

    /// Checks that a gateway caller acts for `gateway_id` only.
    pub fn require_gateway<T>(request: &Request<T>, gateway_id: &str) -> Result<(), Status> {
        match Self::require(request, Role::Gateway)? {
            Caller::Verified { id, .. } if id != gateway_id => {
                Err(Status::permission_denied("a gateway may act only under its own id"))
            }
            _ => Ok(()),
        }
    }
}

/// Server side: verifies the caller token of every request.
#[derive(Debug, Clone)]
pub enum InternalAuth {
    Required(InternalSecret),
    /// An explicit opt-out, logged loudly at start.
    Disabled,
}

impl Interceptor for InternalAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match self {
            Self::Disabled => Caller::Unchecked,
            Self::Required(secret) => {
                let token = request
                    .metadata()
                    .get("authorization")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .ok_or(AuthError::Missing)
                    .and_then(|token| secret.verify(token));
                token.map_err(|err| Status::unauthenticated(err.to_string()))?
            }
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Client side: adds this caller's token to every request.
#[derive(Debug, Clone, Default)]
pub struct CallerToken(Option<AsciiMetadataValue>);

impl CallerToken {
    /// `None` sends no token (for a registry with authentication disabled).
    pub fn new(token: Option<&str>) -> Result<Self, AuthError> {
        token
            .filter(|token| !token.is_empty())
            .map(|token| MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| AuthError::Malformed))
            .transpose()
            .map(Self)
    }
}

impl Interceptor for CallerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The channel every internal client uses: a connection to the registry plus its caller token.
pub type RegistryChannel = InterceptedService<Channel, CallerToken>;

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
        assert_eq!(secret().verify(&token), Ok(Caller::Verified { role: Role::Gateway, id: "gw-1".into() }));
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

    fn request_with(token: Option<&str>) -> Request<()> {
        CallerToken::new(token).expect("valid").call(Request::new(())).expect("adds")
    }

    #[test]
    fn the_interceptors_carry_the_caller_to_the_role_checks() {
        let mut server = InternalAuth::Required(secret());
        assert_eq!(
            server.call(request_with(None)).map(|_| ()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );

        let token = secret().mint(Role::Gateway, "gw-1").expect("mint");
        let request = server.call(request_with(Some(&token))).expect("verifies");
        assert!(Caller::require(&request, Role::Gateway).is_ok());
        assert_eq!(
            Caller::require(&request, Role::Facade).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(Caller::require_gateway(&request, "gw-1").is_ok());
        assert_eq!(
            Caller::require_gateway(&request, "gw-2").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );

        let request = InternalAuth::Disabled.call(request_with(None)).expect("passes");
        assert!(Caller::require_gateway(&request, "anyone").is_ok());
    }
}
