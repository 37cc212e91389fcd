//! `[store]` configuration: the embedded SQLite store, the indicator settings and the optional
//! InfluxDB v2 sink.
//!
//! Two steps like the rest of the collector: [`RawStore`] is deserialized with
//! `deny_unknown_fields` and one `Default` per struct, then [`RawStore::validate`] turns it into
//! [`StoreConfig`]; every error names the field (`store.influxdb.url`).

use crate::availability::indicators::IndicatorsConfig;
use crate::availability::usage::UsageRule;
use crate::config_error::{ConfigError, invalid, secret};
use chrono_tz::Tz;
use dozor_proto::Category;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Raw `[store]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// State intervals, reachability intervals and daily aggregates are kept this long.
    pub retention_days: u32,
    /// 5-minute resource rollups are kept this long.
    pub rollup_retention_days: u32,
    /// SQLite `synchronous`: `"full"` (a committed batch survives power loss) or `"normal"`
    /// (survives kill -9; power loss may roll back the last batches, which agents then resend
    /// only if they were not yet confirmed — so keep `full` unless the disk is too slow).
    pub synchronous: String,
    /// Consecutive messages of a host at most this many heartbeat intervals apart belong to one
    /// "up" segment; a longer silence is a gap.
    pub gap_factor: f64,
    /// Longest time a probe result's state holds until the next result (unless the heartbeat
    /// tolerance is longer): results join one reachability interval while at most
    /// `gap_factor` probe periods apart (the period is learnt per target from its results).
    pub probe_gap_secs: u64,
    /// A gap without a graceful `offline` that ends with a new boot within this time is a
    /// `reboot`, a longer one is `lost`.
    pub reboot_max_secs: u64,
    /// Time zone of report periods (days, weeks, months, quarters, years).
    pub region_tz: String,
    /// Each batch is committed as one journal row; the journal is applied to the tables (each
    /// host's segment, rollup and delivery mark written once for all the batches) this long
    /// after its oldest unapplied batch — readers of the tables lag at most this much.
    pub journal_apply_ms: u64,
    /// … or as soon as this many batches wait, whichever comes first.
    pub journal_apply_batches: u32,
    pub indicators: RawIndicators,
    /// The optional InfluxDB v2 sink; absent = disabled.
    pub influxdb: Option<RawInflux>,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            retention_days: 400,
            rollup_retention_days: 90,
            synchronous: "full".into(),
            gap_factor: 2.5,
            probe_gap_secs: 600,
            reboot_max_secs: 600,
            region_tz: "Europe/Moscow".into(),
            journal_apply_ms: 1000,
            journal_apply_batches: 50,
            indicators: RawIndicators::default(),
            influxdb: None,
        }
    }
}

/// Raw `[store.indicators]`: plans of the share and availability rows of the indicator table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIndicators {
    /// Centralized subsystems every МО must reach (category names: `iemk`, `lis`, `pacs`, …).
    /// Empty: the subsystems any host probed in the period.
    pub subsystems: Vec<String>,
    /// Plan of «Доля МО, использующих МИС», %.
    pub plan_mo_mis_pct: f64,
    /// Plan of «Доля МО, подключенных к централизованным подсистемам», %.
    pub plan_mo_subsystems_pct: f64,
    /// Plan of availability rows (servers, МИС, subsystems), %.
    pub plan_availability_pct: f64,
    /// Plan of «Доля подразделений МО …», %.
    pub plan_sites_pct: f64,
    /// When an МО "uses the МИС" (`[store.indicators.mis_use]`).
    pub mis_use: RawUsage,
    /// When an МО "is connected to a subsystem" (`[store.indicators.subsystem_use]`).
    pub subsystem_use: RawUsage,
}

/// Raw usage rule: an МО uses a target when its workstations (and servers, if `servers`) reached
/// it on at least `min_working_days_pct` of its working days in the period.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUsage {
    pub min_working_days_pct: f64,
    pub servers: bool,
}

impl Default for RawUsage {
    fn default() -> Self {
        let r = UsageRule::default();
        RawUsage {
            min_working_days_pct: r.min_working_days_pct,
            servers: r.servers,
        }
    }
}

impl RawUsage {
    fn validate(self, section: &'static str) -> Result<UsageRule, ConfigError> {
        let field: &'static str = match section {
            "mis_use" => "store.indicators.mis_use.min_working_days_pct",
            _ => "store.indicators.subsystem_use.min_working_days_pct",
        };
        Ok(UsageRule {
            min_working_days_pct: pct(field, self.min_working_days_pct)?,
            servers: self.servers,
        })
    }
}

impl Default for RawIndicators {
    fn default() -> Self {
        RawIndicators {
            subsystems: Vec::new(),
            plan_mo_mis_pct: 100.0,
            plan_mo_subsystems_pct: 100.0,
            plan_availability_pct: 99.0,
            plan_sites_pct: 100.0,
            mis_use: RawUsage::default(),
            subsystem_use: RawUsage::default(),
        }
    }
}

/// Raw `[store.influxdb]`. `url`, `org` and `bucket` are required.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInflux {
    /// `http://host:8086` or `https://…`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// API token; better `token_file` or `DOZOR_STORE_INFLUXDB_TOKEN` in the environment.
    pub token: String,
    /// The token in a file (wins over `token`).
    pub token_file: Option<PathBuf>,
    /// Most bytes of line protocol in one write request.
    pub max_request_bytes: u64,
    /// How often the sink looks for new points when idle.
    pub poll_interval_ms: u64,
    /// One write request times out after this.
    pub timeout_secs: u64,
    /// Longest pause between retries (exponential backoff from 1 s).
    pub max_backoff_secs: u64,
    /// Points waiting in the outbox longer than this are dropped (and counted).
    pub outbox_max_days: u32,
    /// The outbox is kept below this size; the oldest points are dropped first (and counted).
    pub outbox_max_mb: u64,
    /// Period of the derived per-МО series (`dozor_mo`).
    pub mo_interval_secs: u64,
}

impl Default for RawInflux {
    fn default() -> Self {
        RawInflux {
            url: String::new(),
            org: String::new(),
            bucket: String::new(),
            token: String::new(),
            token_file: None,
            max_request_bytes: 1 << 20,
            poll_interval_ms: 1000,
            timeout_secs: 10,
            max_backoff_secs: 60,
            outbox_max_days: 7,
            outbox_max_mb: 1024,
            mo_interval_secs: 60,
        }
    }
}

impl RawInflux {
    /// Typed values, unchecked (`validate_influx` checks them first).
    fn typed(self, token: String) -> InfluxConfig {
        InfluxConfig {
            url: self.url.trim_end_matches('/').to_string(),
            org: self.org,
            bucket: self.bucket,
            token,
            max_request_bytes: usize::try_from(self.max_request_bytes).unwrap_or(usize::MAX),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            timeout: Duration::from_secs(self.timeout_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs),
            outbox_max_age: Duration::from_secs(u64::from(self.outbox_max_days) * 86_400),
            outbox_max_bytes: self.outbox_max_mb << 20,
            mo_interval: Duration::from_secs(self.mo_interval_secs),
        }
    }
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
    /// When the journal is applied to the tables (`journal_apply_ms`, `journal_apply_batches`).
    pub journal_apply: Duration,
    pub journal_batches: usize,
    pub indicators: IndicatorsConfig,
    pub influx: Option<InfluxConfig>,
    /// The config's `[[planned_works]]` (set by the collector's `Config::validate`; the
    /// store's `planned_works` table adds those made over the API).
    pub planned_works: Vec<crate::availability::planned::PlannedWork>,
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
        RawInflux {
            url: url.into(),
            org: org.into(),
            bucket: bucket.into(),
            ..RawInflux::default()
        }
        .typed(token.into())
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
        if !(10..=60_000).contains(&self.journal_apply_ms) {
            return Err(invalid("store.journal_apply_ms", "must be 10..=60000"));
        }
        if !(1..=10_000).contains(&self.journal_apply_batches) {
            return Err(invalid("store.journal_apply_batches", "must be 1..=10000"));
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
            mis_use: i.mis_use.validate("mis_use")?,
            subsystem_use: i.subsystem_use.validate("subsystem_use")?,
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
            journal_apply: Duration::from_millis(self.journal_apply_ms),
            journal_batches: self.journal_apply_batches as usize,
            indicators,
            influx,
            planned_works: Vec::new(),
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
    let token = secret(
        Some(r.token.as_str()),
        r.token_file.as_deref(),
        "store.influxdb.token_file",
    )?
    .unwrap_or_default();
    Ok(r.typed(token))
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
        assert_eq!(c.journal_apply, Duration::from_secs(1));
        assert_eq!(c.journal_batches, 50);
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
        check("journal_apply_ms = 5", "store.journal_apply_ms");
        check("journal_apply_ms = 60001", "store.journal_apply_ms");
        check("journal_apply_batches = 0", "store.journal_apply_batches");
        check(
            "journal_apply_batches = 10001",
            "store.journal_apply_batches",
        );
        check(
            "[indicators]\nsubsystems = [\"mis\"]",
            "store.indicators.subsystems",
        );
        check(
            "[indicators]\nplan_mo_mis_pct = 120",
            "store.indicators.plan_mo_mis_pct",
        );
        check(
            "[indicators.mis_use]\nmin_working_days_pct = 101",
            "store.indicators.mis_use.min_working_days_pct",
        );
        check(
            "[indicators.subsystem_use]\nmin_working_days_pct = -1",
            "store.indicators.subsystem_use.min_working_days_pct",
        );
        check("[indicators.subsystem_use]\nservers = \"yes\"", "servers");
        check("[indicators.mis_use]\nshare = 80", "share");
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

    #[test]
    fn the_token_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        let c = parse(&format!(
            "[influxdb]\nurl = \"http://i:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"inline\"\ntoken_file = {:?}",
            f.display().to_string()
        ))
        .unwrap();
        assert_eq!(c.influx.unwrap().token, "from-file");
        let e = parse(
            "[influxdb]\nurl = \"http://i:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"/nonexistent\"",
        )
        .unwrap_err();
        assert!(e.contains("store.influxdb.token_file"), "{e}");
    }
}
