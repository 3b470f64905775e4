//! Typed configuration from environment variables.
//!
//! Every service has one `serde` struct whose field names are its variables (lowercased, e.g.
//! `registry_listen_addr` <- `REGISTRY_LISTEN_ADDR`) with `#[serde(default)]` values. Tests build
//! the same struct from a map with [`from_vars`], so no test touches the process environment.

use serde::de::DeserializeOwned;

/// A variable is present but does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad configuration: {0}")]
pub struct ConfigError(#[from] envy::Error);

/// Reads `T` from the process environment.
pub fn from_env<T: DeserializeOwned>() -> Result<T, ConfigError> {
    Ok(envy::from_env()?)
}

/// Reads `T` from explicit pairs; variables not named keep their defaults.
pub fn from_vars<T, I, K, V>(vars: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    Ok(envy::from_iter(vars.into_iter().map(|(k, v)| (k.into(), v.into())))?)
}

/// `T` with every default: what a service runs with when no variable is set.
///
/// # Panics
/// When a default does not parse: a bug in `T`, caught by each service's config tests.
pub fn defaults<T: DeserializeOwned>() -> T {
    from_vars(std::iter::empty::<(String, String)>())
        .unwrap_or_else(|err| panic!("defaults must parse: {err}"))
}

/// Default `REGISTRY_URL` of the registry's clients (gateway, notifier, facade).
pub fn default_registry_url() -> String {
    "http://127.0.0.1:7200".to_owned()
}

/// Default `DATABASE_URL` of every service: the development database.
pub fn default_database_url() -> String {
    "postgres://postgres@127.0.0.1:5432/presence".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(default = "default_database_url")]
        database_url: String,
        #[serde(rename = "sample_port", default)]
        port: u16,
    }

    #[test]
    fn defaults_apply_and_named_vars_override() {
        let s: Sample = from_vars([("SAMPLE_PORT", "7")]).expect("parses");
        assert_eq!(s.port, 7);
        assert_eq!(s.database_url, default_database_url());
    }

    #[test]
    fn a_bad_value_is_a_clear_error() {
        let err = from_vars::<Sample, _, _, _>([("SAMPLE_PORT", "seven")]).unwrap_err();
        // The message names the variable, so an operator knows what to fix.
        assert!(err.to_string().to_ascii_lowercase().contains("sample_port"), "{err}");
    }
}
