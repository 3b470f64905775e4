//! One TLS crypto provider for the whole process: rustls with *ring*, as sqlx and tonic use.
//! (reqwest is built without a provider of its own, to avoid a second, C-built one.)

/// Installs the ring provider as the process default; harmless when one is already installed.
/// Call before building a `reqwest::Client` ([`crate::telemetry::init`] does).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
