//! Who may call the registry. Every internal gRPC call carries a caller token,
//! `authorization: Bearer pi1.<role>.<id>.<signature>`, where the signature is an HMAC-SHA256 of
//! `pi1.<role>.<id>` under the deployment's internal secret. Only the registry holds the secret;
//! each caller holds only its own token (`presence-cli internal-token` mints them), so a gateway
//! cannot act as another gateway, nor as the facade.
//!
//! The registry checks the token in an interceptor ([`InternalAuth`]) and each RPC checks the
//! caller's role ([`Caller::require`]), so a new RPC cannot forget it: without a role check it
//! has no `Caller` to read the gateway id from either.

use std::path::PathBuf;

pub use presence_proto::internal_token::{AuthError, CallerId, InternalSecret, Role};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

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
        Self::require(request, Role::Gateway)?.acts_for(gateway_id)
    }

    /// A verified caller may act only under its own id.
    pub fn acts_for(&self, gateway_id: &str) -> Result<(), Status> {
        match self {
            Caller::Verified { id, .. } if id != gateway_id => {
                Err(Status::permission_denied("a gateway may act only under its own id"))
            }
            _ => Ok(()),
        }
    }

    /// The id a verified caller proved; `None` when authentication is off.
    pub fn verified_id(&self) -> Option<&str> {
        match self {
            Caller::Verified { id, .. } => Some(id),
            Caller::Unchecked => None,
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

impl InternalAuth {
    /// A token for this process's own calls to its peers (a registry forwarding a query), signed
    /// with the secret it verifies with; none when authentication is off.
    pub fn own_token(&self, role: Role, id: &str) -> Result<CallerToken, AuthError> {
        match self {
            InternalAuth::Required(secret) => CallerToken::new(Some(&secret.mint(role, id)?)),
            InternalAuth::Disabled => CallerToken::new(None),
        }
    }
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
                let CallerId { role, id } = token.map_err(|err| Status::unauthenticated(err.to_string()))?;
                Caller::Verified { role, id }
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

/// A setting of internal authentication that cannot be used; names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "REGISTRY_INTERNAL_SECRET (or REGISTRY_INTERNAL_SECRET_FILE) is required: every internal call \
         is authenticated. Mint callers' tokens with `presence-cli internal-token`; to run without \
         (never in production), set REGISTRY_INTERNAL_AUTH=disabled"
    )]
    MissingSecret,
    #[error("{variable}: {source}")]
    Invalid { variable: &'static str, source: AuthError },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("REGISTRY_INTERNAL_AUTH must be `required` or `disabled`")]
    Mode,
}

/// `REGISTRY_INTERNAL_AUTH`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Required,
    Disabled,
}

/// The registry's settings, `#[serde(flatten)]`ed into its config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerAuthConfig {
    /// `REGISTRY_INTERNAL_SECRET`: the deployment's internal secret, at least 32 bytes.
    #[serde(rename = "registry_internal_secret", default)]
    pub secret: Option<SecretString>,
    /// `REGISTRY_INTERNAL_SECRET_FILE`: read the secret from this file instead (trailing
    /// whitespace ignored), e.g. a mounted Docker or Kubernetes secret.
    #[serde(rename = "registry_internal_secret_file", default)]
    pub secret_file: Option<PathBuf>,
    /// `REGISTRY_INTERNAL_AUTH`: `required` (default) or `disabled`.
    #[serde(rename = "registry_internal_auth", default)]
    pub mode: AuthMode,
}

impl ServerAuthConfig {
    /// The interceptor for the registry's services; an error when authentication is required
    /// and no usable secret is configured.
    pub fn interceptor(&self) -> Result<InternalAuth, AuthConfigError> {
        if self.mode == AuthMode::Disabled {
            tracing::warn!(
                "REGISTRY_INTERNAL_AUTH=disabled: ANY client that reaches the gRPC port can log devices \
                 in, kick users and read every app's events. Never run this way beyond loopback."
            );
            return Ok(InternalAuth::Disabled);
        }
        let secret = read_setting(self.secret.as_ref(), self.secret_file.as_ref())?
            .ok_or(AuthConfigError::MissingSecret)?;
        InternalSecret::new(secret.expose_secret().as_bytes())
            .map(InternalAuth::Required)
            .map_err(|source| AuthConfigError::Invalid { variable: "REGISTRY_INTERNAL_SECRET", source })
    }
}

/// A client's settings (gateway, notifier, facade), `#[serde(flatten)]`ed into its config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientAuthConfig {
    /// `INTERNAL_TOKEN`: this caller's token (`presence-cli internal-token`).
    #[serde(rename = "internal_token", default)]
    pub token: Option<SecretString>,
    /// `INTERNAL_TOKEN_FILE`: read the token from this file instead.
    #[serde(rename = "internal_token_file", default)]
    pub token_file: Option<PathBuf>,
}

impl ClientAuthConfig {
    /// The interceptor that adds the token to every call. Without a token, calls go out without
    /// one (for a registry with authentication disabled); that is logged, since a registry that
    /// requires it will refuse every call.
    pub fn caller_token(&self) -> Result<CallerToken, AuthConfigError> {
        let token = read_setting(self.token.as_ref(), self.token_file.as_ref())?;
        if token.is_none() {
            tracing::warn!(
                "INTERNAL_TOKEN is not set: the registry will refuse every call unless it runs with REGISTRY_INTERNAL_AUTH=disabled"
            );
        }
        CallerToken::new(token.as_ref().map(|token| token.expose_secret()))
            .map_err(|source| AuthConfigError::Invalid { variable: "INTERNAL_TOKEN", source })
    }
}

/// A secret given directly or as a file; an empty value counts as unset.
fn read_setting(
    value: Option<&SecretString>,
    file: Option<&PathBuf>,
) -> Result<Option<SecretString>, AuthConfigError> {
    if let Some(value) = value.filter(|value| !value.expose_secret().is_empty()) {
        return Ok(Some(value.clone()));
    }
    let Some(path) = file.filter(|path| !path.as_os_str().is_empty()) else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|source| AuthConfigError::Read { path: path.display().to_string(), source })?;
    Ok(Some(SecretString::from(text.trim_end().to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> InternalSecret {
        InternalSecret::new([7u8; 32]).expect("long enough")
    }

    fn request_with(token: Option<&str>) -> Request<()> {
        CallerToken::new(token).expect("valid").call(Request::new(())).expect("adds")
    }

    #[test]
    fn settings_need_a_secret_unless_explicitly_disabled() {
        let config: ServerAuthConfig = crate::config::from_vars::<_, _, &str, &str>([]).expect("parses");
        assert!(matches!(config.interceptor(), Err(AuthConfigError::MissingSecret)));
        let config: ServerAuthConfig =
            crate::config::from_vars([("REGISTRY_INTERNAL_AUTH", "disabled")]).expect("parses");
        assert!(matches!(config.interceptor(), Ok(InternalAuth::Disabled)));
        let config: ServerAuthConfig =
            crate::config::from_vars([("REGISTRY_INTERNAL_SECRET", "short")]).expect("parses");
        assert!(matches!(config.interceptor(), Err(AuthConfigError::Invalid { .. })));
        let path = std::env::temp_dir().join(format!("internal-secret-{}", std::process::id()));
        std::fs::write(&path, format!("{}\n", "s".repeat(32))).expect("temp file");
        let config: ServerAuthConfig =
            crate::config::from_vars([("REGISTRY_INTERNAL_SECRET_FILE", path.to_str().expect("utf-8"))])
                .expect("parses");
        let from_file = config.interceptor();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(from_file, Ok(InternalAuth::Required(_))), "{from_file:?}");
        assert!(!format!("{config:?}").contains("ssss"), "the secret must not print");
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
