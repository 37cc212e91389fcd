//! `[store]` configuration: the embedded SQLite store, the indicator settings and the optional
//! InfluxDB v2 sink.
//!
//! Two steps like the rest of the collector: [`RawStore`] is deserialized with
//! `deny_unknown_fields` and explicit defaults, then [`RawStore::validate`] turns it into
//! [`StoreConfig`]; every error names the field (`store.influxdb.url`).

use crate::config_error::{ConfigError, invalid};
use crate::derive::indicators::IndicatorsConfig;
use chrono_tz::Tz;
use dozor_proto::Category;
use serde::Deserialize;
use std::time::Duration;

/// Raw `[store]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// State intervals, reachability intervals and daily aggregates are kept this long.
    #[serde(default = "d_retention_days")]
    pub retention_days: u32,
    /// 5-minute resource rollups are kept this long.
    #[serde(default = "d_rollup_retention_days")]
    pub rollup_retention_days: u32,
    /// SQLite `synchronous`: `"full"` (a committed batch survives power loss) or `"normal"`
    /// (survives kill -9; power loss may roll back the last batches, which agents then resend
    /// only if they were not yet confirmed — so keep `full` unless the disk is too slow).
    #[serde(default = "d_synchronous")]
    pub synchronous: String,
    /// Consecutive messages of a host at most this many heartbeat intervals apart belong to one
    /// "up" segment; a longer silence is a gap.
    #[serde(default = "d_gap_factor")]
    pub gap_factor: f64,
    /// Longest time a probe result's state holds until the next result (unless the heartbeat
    /// tolerance is longer): results join one reachability interval while at most
    /// `gap_factor` probe periods apart (the period is learnt per target from its results).
    #[serde(default = "d_probe_gap_secs")]
    pub probe_gap_secs: u64,
    /// A gap without a graceful `offline` that ends with a new boot within this time is a
    /// `reboot`, a longer one is `lost`.
    #[serde(default = "d_reboot_max_secs")]
    pub reboot_max_secs: u64,
    /// Time zone of report periods (days, weeks, months, quarters, years).
    #[serde(default = "d_region_tz")]
    pub region_tz: String,
    #[serde(default)]
    pub indicators: RawIndicators,
    /// The optional InfluxDB v2 sink; absent = disabled.
    #[serde(default)]
    pub influxdb: Option<RawInflux>,
}

fn d_retention_days() -> u32 {
    400
}
fn d_rollup_retention_days() -> u32 {
    90
}
fn d_synchronous() -> String {
    "full".into()
}
fn d_gap_factor() -> f64 {
    2.5
}
fn d_probe_gap_secs() -> u64 {
    600
}
fn d_reboot_max_secs() -> u64 {
    600
}
fn d_region_tz() -> String {
    "Europe/Moscow".into()
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            retention_days: d_retention_days(),
            rollup_retention_days: d_rollup_retention_days(),
            synchronous: d_synchronous(),
            gap_factor: d_gap_factor(),
            probe_gap_secs: d_probe_gap_secs(),
            reboot_max_secs: d_reboot_max_secs(),
            region_tz: d_region_tz(),
            indicators: RawIndicators::default(),
            influxdb: None,
        }
    }
}

/// Raw `[store.indicators]`: plans of the share and availability rows of the indicator table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIndicators {
    /// Centralized subsystems every МО must reach (category names: `iemk`, `lis`, `pacs`, …).
    /// Empty: the subsystems any host probed in the period.
    #[serde(default)]
    pub subsystems: Vec<String>,
    /// Plan of «Доля МО, использующих МИС», %.
    #[serde(default = "d_100")]
    pub plan_mo_mis_pct: f64,
    /// Plan of «Доля МО, подключенных к централизованным подсистемам», %.
    #[serde(default = "d_100")]
    pub plan_mo_subsystems_pct: f64,
    /// Plan of availability rows (servers, МИС, subsystems), %.
    #[serde(default = "d_availability")]
    pub plan_availability_pct: f64,
    /// Plan of «Доля подразделений МО …», %.
    #[serde(default = "d_100")]
    pub plan_sites_pct: f64,
}

fn d_100() -> f64 {
    100.0
}
fn d_availability() -> f64 {
    99.0
}

impl Default for RawIndicators {
    fn default() -> Self {
        RawIndicators {
            subsystems: Vec::new(),
            plan_mo_mis_pct: d_100(),
            plan_mo_subsystems_pct: d_100(),
            plan_availability_pct: d_availability(),
            plan_sites_pct: d_100(),
        }
    }
}

/// Raw `[store.influxdb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInflux {
    /// `http://host:8086` or `https://…`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// API token (prefer `DOZOR_STORE_INFLUXDB_TOKEN` in the environment).
    #[serde(default)]
    pub token: String,
    /// Most bytes of line protocol in one write request.
    #[serde(default = "d_max_request_bytes")]
    pub max_request_bytes: u64,
    /// How often the sink looks for new points when idle.
    #[serde(default = "d_poll_ms")]
    pub poll_interval_ms: u64,
    /// One write request times out after this.
    #[serde(default = "d_timeout")]
    pub timeout_secs: u64,
    /// Longest pause between retries (exponential backoff from 1 s).
    #[serde(default = "d_max_backoff")]
    pub max_backoff_secs: u64,
    /// Points waiting in the outbox longer than this are dropped (and counted).
    #[serde(default = "d_outbox_days")]
    pub outbox_max_days: u32,
    /// The outbox is kept below this size; the oldest points are dropped first (and counted).
    #[serde(default = "d_outbox_mb")]
    pub outbox_max_mb: u64,
    /// Period of the derived per-МО series (`dozor_mo`).
    #[serde(default = "d_mo_interval")]
    pub mo_interval_secs: u64,
}

fn d_max_request_bytes() -> u64 {
    1 << 20
}
fn d_poll_ms() -> u64 {
    1000
}
fn d_timeout() -> u64 {
    10
}
fn d_max_backoff() -> u64 {
    60
}
fn d_outbox_days() -> u32 {
    7
}
fn d_outbox_mb() -> u64 {
    1024
}
fn d_mo_interval() -> u64 {
    60
}

/// Validated store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub retention: Duration,
    pub rollup_retention: Duration,
    /// `PRAGMA synchronous = FULL` (true) or `NORMAL`.
    pub sync_full: bool,
    pub gap_factor: f64,
    pub probe_gap: Duration,
    pub reboot_max: Duration,
    pub region_tz: Tz,
    pub indicators: IndicatorsConfig,
    pub influx: Option<InfluxConfig>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        // The defaults are valid by construction (tested in `defaults_validate`).
        RawStore::default()
            .validate()
            .unwrap_or_else(|_| unreachable!("default store config is valid"))
    }
}

/// Validated `[store.influxdb]`.
#[derive(Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub org: String,
    pub bucket: String,
    pub token: String,
    pub max_request_bytes: usize,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub max_backoff: Duration,
    pub outbox_max_age: Duration,
    pub outbox_max_bytes: u64,
    pub mo_interval: Duration,
}

impl std::fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxConfig")
            .field("url", &self.url)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("token", &if self.token.is_empty() { "" } else { "***" })
            .finish_non_exhaustive()
    }
}

impl InfluxConfig {
    /// A sink configuration with the default tuning, for tests and tools.
    pub fn new(url: &str, org: &str, bucket: &str, token: &str) -> InfluxConfig {
        InfluxConfig {
            url: url.into(),
            org: org.into(),
            bucket: bucket.into(),
            token: token.into(),
            max_request_bytes: d_max_request_bytes() as usize,
            poll_interval: Duration::from_millis(d_poll_ms()),
            timeout: Duration::from_secs(d_timeout()),
            max_backoff: Duration::from_secs(d_max_backoff()),
            outbox_max_age: Duration::from_secs(u64::from(d_outbox_days()) * 86_400),
            outbox_max_bytes: d_outbox_mb() << 20,
            mo_interval: Duration::from_secs(d_mo_interval()),
        }
    }
}

fn pct(field: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v} is not 0..=100")))
    }
}

impl RawStore {
    pub fn validate(self) -> Result<StoreConfig, ConfigError> {
        if !(1..=3650).contains(&self.retention_days) {
            return Err(invalid("store.retention_days", "must be 1..=3650"));
        }
        if !(1..=3650).contains(&self.rollup_retention_days) {
            return Err(invalid("store.rollup_retention_days", "must be 1..=3650"));
        }
        let sync_full = match self.synchronous.to_ascii_lowercase().as_str() {
            "full" => true,
            "normal" => false,
            other => {
                return Err(invalid(
                    "store.synchronous",
                    format!("{other:?} is not \"full\" or \"normal\""),
                ));
            }
        };
        if !(self.gap_factor.is_finite() && (1.0..=10.0).contains(&self.gap_factor)) {
            return Err(invalid("store.gap_factor", "must be 1.0..=10.0"));
        }
        if !(10..=86_400).contains(&self.probe_gap_secs) {
            return Err(invalid("store.probe_gap_secs", "must be 10..=86400"));
        }
        if !(10..=86_400).contains(&self.reboot_max_secs) {
            return Err(invalid("store.reboot_max_secs", "must be 10..=86400"));
        }
        let region_tz: Tz = self.region_tz.parse().map_err(|_| {
            invalid(
                "store.region_tz",
                format!("unknown time zone {:?}", self.region_tz),
            )
        })?;
        let i = self.indicators;
        let mut subsystems = Vec::with_capacity(i.subsystems.len());
        for s in &i.subsystems {
            match Category::parse(s) {
                Some(Category::Mis) | None => {
                    return Err(invalid(
                        "store.indicators.subsystems",
                        format!(
                            "{s:?} is not a subsystem category (iemk, lis, pacs, erecipe, tmk, patient_flow, mse, fss, smp, sanavia, other)"
                        ),
                    ));
                }
                Some(c) => {
                    if !subsystems.contains(&c) {
                        subsystems.push(c);
                    }
                }
            }
        }
        let indicators = IndicatorsConfig {
            subsystems,
            plan_mo_mis_pct: pct("store.indicators.plan_mo_mis_pct", i.plan_mo_mis_pct)?,
            plan_mo_subsystems_pct: pct(
                "store.indicators.plan_mo_subsystems_pct",
                i.plan_mo_subsystems_pct,
            )?,
            plan_availability_pct: pct(
                "store.indicators.plan_availability_pct",
                i.plan_availability_pct,
            )?,
            plan_sites_pct: pct("store.indicators.plan_sites_pct", i.plan_sites_pct)?,
        };
        let influx = match self.influxdb {
            None => None,
            Some(r) => Some(validate_influx(r)?),
        };
        Ok(StoreConfig {
            retention: Duration::from_secs(u64::from(self.retention_days) * 86_400),
            rollup_retention: Duration::from_secs(u64::from(self.rollup_retention_days) * 86_400),
            sync_full,
            gap_factor: self.gap_factor,
            probe_gap: Duration::from_secs(self.probe_gap_secs),
            reboot_max: Duration::from_secs(self.reboot_max_secs),
            region_tz,
            indicators,
            influx,
        })
    }
}

fn validate_influx(r: RawInflux) -> Result<InfluxConfig, ConfigError> {
    let url = r.url.trim_end_matches('/').to_string();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            invalid(
                "store.influxdb.url",
                format!("{:?} must start with http:// or https://", r.url),
            )
        })?;
    if rest.is_empty() || rest.contains(char::is_whitespace) || reqwest::Url::parse(&url).is_err() {
        return Err(invalid(
            "store.influxdb.url",
            format!("{:?} is not a valid URL", r.url),
        ));
    }
    if r.org.trim().is_empty() {
        return Err(invalid("store.influxdb.org", "must not be empty"));
    }
    if r.bucket.trim().is_empty() {
        return Err(invalid("store.influxdb.bucket", "must not be empty"));
    }
    if !(1024..=64 << 20).contains(&r.max_request_bytes) {
        return Err(invalid(
            "store.influxdb.max_request_bytes",
            "must be 1024..=67108864",
        ));
    }
    if !(10..=60_000).contains(&r.poll_interval_ms) {
        return Err(invalid(
            "store.influxdb.poll_interval_ms",
            "must be 10..=60000",
        ));
    }
    if !(1..=600).contains(&r.timeout_secs) {
        return Err(invalid("store.influxdb.timeout_secs", "must be 1..=600"));
    }
    if !(1..=3600).contains(&r.max_backoff_secs) {
        return Err(invalid(
            "store.influxdb.max_backoff_secs",
            "must be 1..=3600",
        ));
    }
    if !(1..=365).contains(&r.outbox_max_days) {
        return Err(invalid("store.influxdb.outbox_max_days", "must be 1..=365"));
    }
    if !(1..=1 << 20).contains(&r.outbox_max_mb) {
        return Err(invalid(
            "store.influxdb.outbox_max_mb",
            "must be 1..=1048576",
        ));
    }
    if !(10..=3600).contains(&r.mo_interval_secs) {
        return Err(invalid(
            "store.influxdb.mo_interval_secs",
            "must be 10..=3600",
        ));
    }
    Ok(InfluxConfig {
        url,
        org: r.org,
        bucket: r.bucket,
        token: r.token,
        max_request_bytes: r.max_request_bytes as usize,
        poll_interval: Duration::from_millis(r.poll_interval_ms),
        timeout: Duration::from_secs(r.timeout_secs),
        max_backoff: Duration::from_secs(r.max_backoff_secs),
        outbox_max_age: Duration::from_secs(u64::from(r.outbox_max_days) * 86_400),
        outbox_max_bytes: r.outbox_max_mb << 20,
        mo_interval: Duration::from_secs(r.mo_interval_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreConfig, String> {
        let raw: RawStore = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_validate() {
        let c = parse("").unwrap();
        assert_eq!(c.retention, Duration::from_secs(400 * 86_400));
        assert_eq!(c.rollup_retention, Duration::from_secs(90 * 86_400));
        assert!(c.sync_full);
        assert_eq!(c.region_tz, chrono_tz::Europe::Moscow);
        assert!(c.influx.is_none());
        assert_eq!(c.indicators, IndicatorsConfig::default());
        let _ = StoreConfig::default();
    }

    #[test]
    fn influx_section() {
        let c = parse(
            "[influxdb]\nurl = \"http://127.0.0.1:8086/\"\norg = \"miac\"\nbucket = \"dozor\"\ntoken = \"t\"",
        )
        .unwrap();
        let i = c.influx.unwrap();
        assert_eq!(i.url, "http://127.0.0.1:8086");
        assert!(!format!("{i:?}").contains("\"t\""));
    }

    #[test]
    fn errors_name_the_field() {
        let check = |text: &str, field: &str| {
            let e = parse(text).unwrap_err();
            assert!(e.contains(field), "{e:?} should name {field}");
        };
        check("retention_days = 0", "store.retention_days");
        check("synchronous = \"off\"", "store.synchronous");
        check("region_tz = \"Mars/Base\"", "store.region_tz");
        check("gap_factor = 0.5", "store.gap_factor");
        check(
            "[indicators]\nsubsystems = [\"mis\"]",
            "store.indicators.subsystems",
        );
        check(
            "[indicators]\nplan_mo_mis_pct = 120",
            "store.indicators.plan_mo_mis_pct",
        );
        check(
            "[influxdb]\nurl = \"ftp://x\"\norg = \"o\"\nbucket = \"b\"",
            "store.influxdb.url",
        );
        check(
            "[influxdb]\nurl = \"http://x\"\norg = \"\"\nbucket = \"b\"",
            "store.influxdb.org",
        );
        check("[influxdb]\nurl = \"http://x\"\norg = \"o\"", "bucket");
        check("bogus = 1", "bogus");
    }
}
