//! The configuration error every config module returns (`config`, `alerts::config`,
//! `store::config`): a leaf, so those modules share it without importing each other.

/// A configuration error naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax, unknown field or wrong type.
    #[error("config: {0}")]
    Parse(String),
    /// A field has an invalid value.
    #[error("config: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// A [`ConfigError::Invalid`] naming `field`.
pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}
