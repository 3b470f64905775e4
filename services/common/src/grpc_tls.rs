//! Optional TLS and mTLS on the internal gRPC links: the registry serves, the gateway, notifier
//! and facade call it. All settings unset means plaintext, as before; a half-set configuration
//! is an error at start, never a silent fallback to plaintext.
//!
//! Both sides are `serde` structs that each service `#[serde(flatten)]`s into its config, so the
//! variable names are the same everywhere. An empty variable counts as unset.

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// A TLS setting that cannot be used; every message names the file or variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum GrpcTlsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Pem { path: String, source: rustls::pki_types::pem::Error },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key in it")]
    NoKey { path: String },
    #[error("incomplete internal TLS settings: {0}")]
    Incomplete(&'static str),
    #[error("REGISTRY_URL {url}: {reason}")]
    Scheme { url: String, reason: &'static str },
    #[error("bad REGISTRY_URL {url}: {message}")]
    Url { url: String, message: String },
    #[error("TLS configuration (do the certificate and key match?): {0}")]
    Config(String),
}

/// Server side (the registry): `REGISTRY_TLS_CERT` + `REGISTRY_TLS_KEY` turn TLS on;
/// `REGISTRY_TLS_CLIENT_CA` additionally requires client certificates signed by that CA (mTLS).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerTls {
    /// PEM certificate chain of the registry.
    #[serde(rename = "registry_tls_cert", default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `REGISTRY_TLS_CERT`.
    #[serde(rename = "registry_tls_key", default)]
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s); when set, a client without a certificate signed by it is refused.
    #[serde(rename = "registry_tls_client_ca", default)]
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// `None` for plaintext; the files are read and checked now, so a bad one stops the start.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, GrpcTlsError> {
        let (cert, key) = match (set(&self.cert), set(&self.key)) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) if set(&self.client_ca).is_none() => return Ok(None),
            (None, None) => {
                return Err(GrpcTlsError::Incomplete(
                    "REGISTRY_TLS_CLIENT_CA needs REGISTRY_TLS_CERT and REGISTRY_TLS_KEY",
                ));
            }
            _ => return Err(GrpcTlsError::Incomplete("REGISTRY_TLS_CERT and REGISTRY_TLS_KEY go together")),
        };
        crate::tls::install_crypto_provider();
        let mut config = ServerTlsConfig::new().identity(identity(cert, key)?);
        if let Some(ca) = set(&self.client_ca) {
            config = config.client_ca_root(certificate(ca)?);
        }
        Ok(Some(config))
    }

    /// `Server::builder()` with TLS as configured; a key that does not match its certificate is
    /// found here, at start.
    pub fn server_builder(&self) -> Result<Server, GrpcTlsError> {
        match self.server_config()? {
            None => Ok(Server::builder()),
            Some(tls) => Server::builder()
                .tls_config(tls)
                .map_err(|err| GrpcTlsError::Config(crate::error::chain(&err))),
        }
    }

    /// Plaintext, TLS or mTLS, for the start-up log line.
    pub fn mode(&self) -> &'static str {
        match (set(&self.cert), set(&self.client_ca)) {
            (None, _) => "plaintext",
            (Some(_), None) => "tls",
            (Some(_), Some(_)) => "mtls",
        }
    }
}

/// Client side (gateway, notifier, facade), the same variables in each: `REGISTRY_TLS_CA` turns
/// TLS on (then `REGISTRY_URL` must be `https://`); `INTERNAL_TLS_CERT` + `INTERNAL_TLS_KEY` are
/// this service's client certificate for mTLS.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientTls {
    /// PEM certificate of the CA that signed the registry's certificate.
    #[serde(rename = "registry_tls_ca", default)]
    pub ca: Option<PathBuf>,
    /// Name the registry's certificate must carry. Default: the host of `REGISTRY_URL`.
    #[serde(rename = "registry_tls_domain", default)]
    pub domain: Option<String>,
    /// PEM client certificate chain presented to the registry.
    #[serde(rename = "internal_tls_cert", default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `INTERNAL_TLS_CERT`.
    #[serde(rename = "internal_tls_key", default)]
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// `None` for plaintext; the files are read and checked now.
    pub fn client_config(&self) -> Result<Option<ClientTlsConfig>, GrpcTlsError> {
        let identity_files = match (set(&self.cert), set(&self.key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(GrpcTlsError::Incomplete("INTERNAL_TLS_CERT and INTERNAL_TLS_KEY go together")),
        };
        let domain = self.domain.as_deref().filter(|d| !d.is_empty());
        let Some(ca) = set(&self.ca) else {
            if identity_files.is_some() || domain.is_some() {
                return Err(GrpcTlsError::Incomplete(
                    "INTERNAL_TLS_CERT/KEY and REGISTRY_TLS_DOMAIN need REGISTRY_TLS_CA",
                ));
            }
            return Ok(None);
        };
        crate::tls::install_crypto_provider();
        let mut config = ClientTlsConfig::new().ca_certificate(certificate(ca)?);
        if let Some(domain) = domain {
            config = config.domain_name(domain);
        }
        if let Some((cert, key)) = identity_files {
            config = config.identity(identity(cert, key)?);
        }
        Ok(Some(config))
    }

    /// The registry endpoint for `url` with TLS as configured. The scheme must agree with the
    /// settings: tonic silently skips TLS on an `http://` URL, and cannot verify an `https://`
    /// one without a CA.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, GrpcTlsError> {
        let tls = self.client_config()?;
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|err| GrpcTlsError::Url { url: url.to_owned(), message: crate::error::chain(&err) })?;
        let https = endpoint.uri().scheme_str() == Some("https");
        match (tls, https) {
            (None, false) => Ok(endpoint),
            (None, true) => Err(GrpcTlsError::Scheme {
                url: url.to_owned(),
                reason: "https:// needs REGISTRY_TLS_CA (the CA that signed the registry's certificate)",
            }),
            (Some(_), false) => Err(GrpcTlsError::Scheme {
                url: url.to_owned(),
                reason: "REGISTRY_TLS_CA is set, so the URL must be https://",
            }),
            (Some(tls), true) => {
                endpoint.tls_config(tls).map_err(|err| GrpcTlsError::Config(crate::error::chain(&err)))
            }
        }
    }
}

/// A path that is set and not empty.
fn set(path: &Option<PathBuf>) -> Option<&Path> {
    path.as_deref().filter(|p| !p.as_os_str().is_empty())
}

fn read(path: &Path) -> Result<Vec<u8>, GrpcTlsError> {
    std::fs::read(path).map_err(|source| GrpcTlsError::Read { path: path.display().to_string(), source })
}

/// The PEM certificate(s) at `path`, checked to hold at least one.
fn certificate(path: &Path) -> Result<Certificate, GrpcTlsError> {
    let pem = read(path)?;
    match CertificateDer::pem_slice_iter(&pem).next() {
        Some(Ok(_)) => Ok(Certificate::from_pem(pem)),
        Some(Err(source)) => Err(GrpcTlsError::Pem { path: path.display().to_string(), source }),
        None => Err(GrpcTlsError::NoCertificate { path: path.display().to_string() }),
    }
}

/// Certificate chain and key, both checked to be PEM of the right kind.
fn identity(cert: &Path, key: &Path) -> Result<Identity, GrpcTlsError> {
    let cert_pem = certificate(cert)?.into_inner();
    let key_pem = read(key)?;
    match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(_) => Ok(Identity::from_pem(cert_pem, key_pem)),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            Err(GrpcTlsError::NoKey { path: key.display().to_string() })
        }
        Err(source) => Err(GrpcTlsError::Pem { path: key.display().to_string(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(vars: &[(&str, &str)]) -> ClientTls {
        crate::config::from_vars(vars.iter().copied()).expect("parses")
    }

    #[test]
    fn nothing_set_is_plaintext() {
        assert!(ServerTls::default().server_config().expect("ok").is_none());
        let plain = client(&[("REGISTRY_TLS_CA", "")]);
        assert!(plain.endpoint("http://127.0.0.1:7200").is_ok());
    }

    #[test]
    fn half_configured_settings_are_errors() {
        let server = ServerTls { cert: Some("c.pem".into()), ..ServerTls::default() };
        assert!(matches!(server.server_config(), Err(GrpcTlsError::Incomplete(_))));
        let server = ServerTls { client_ca: Some("ca.pem".into()), ..ServerTls::default() };
        assert!(matches!(server.server_config(), Err(GrpcTlsError::Incomplete(_))));
        for vars in [
            &[("INTERNAL_TLS_KEY", "k.pem")][..],
            &[("INTERNAL_TLS_CERT", "c.pem"), ("INTERNAL_TLS_KEY", "k.pem")],
            &[("REGISTRY_TLS_DOMAIN", "registry")],
        ] {
            let err = client(vars).endpoint("https://registry:7200").unwrap_err();
            assert!(matches!(err, GrpcTlsError::Incomplete(_)), "{vars:?}: {err}");
        }
        // https:// without a CA would fail only at the first call; say so at start instead.
        let err = client(&[]).endpoint("https://registry:7200").unwrap_err();
        assert!(err.to_string().contains("REGISTRY_TLS_CA"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = client(&[("REGISTRY_TLS_CA", "/nonexistent/ca.pem")])
            .endpoint("https://registry:7200")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_pem_is_named() {
        let path = std::env::temp_dir().join(format!("grpc-tls-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate").expect("temp file");
        let err = client(&[("REGISTRY_TLS_CA", path.to_str().expect("utf-8"))])
            .endpoint("https://registry:7200")
            .unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(&err, GrpcTlsError::NoCertificate { path: p } if p.contains("grpc-tls-")), "{err}");
    }
}
