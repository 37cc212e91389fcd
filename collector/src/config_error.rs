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
        field: std::borrow::Cow<'static, str>,
        message: String,
    },
}

/// A [`ConfigError::Invalid`] naming `field`.
pub(crate) fn invalid(
    field: impl Into<std::borrow::Cow<'static, str>>,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A secret given inline (`value`) or, preferably, as a file (`file`, e.g. a Docker or systemd
/// credential); the file wins. Its trailing newline is dropped. `file_field` names the file
/// option in errors.
pub fn secret(
    value: Option<&str>,
    file: Option<&std::path::Path>,
    file_field: &'static str,
) -> Result<Option<String>, ConfigError> {
    match file {
        Some(f) => std::fs::read_to_string(f)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| invalid(file_field, format!("{}: {e}", f.display()))),
        None => Ok(value.map(str::to_string)),
    }
}
