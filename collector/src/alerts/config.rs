//! `[alerts]` configuration: thresholds, silences and notification channels.

use serde::Deserialize;

/// Raw `[alerts]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {}

/// Validated alert settings.
#[derive(Debug, Clone, Default)]
pub struct AlertsConfig {}

impl RawAlerts {
    pub fn validate(self) -> Result<AlertsConfig, crate::config::ConfigError> {
        Ok(AlertsConfig {})
    }
}
