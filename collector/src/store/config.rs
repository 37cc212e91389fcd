//! `[store]` configuration: the embedded SQLite store and the optional InfluxDB v2 sink.

use serde::Deserialize;

/// Raw `[store]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {}

/// Validated store settings.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {}

impl RawStore {
    pub fn validate(self) -> Result<StoreConfig, crate::config::ConfigError> {
        Ok(StoreConfig {})
    }
}
