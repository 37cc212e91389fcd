//! `[alerts]` configuration: thresholds, silences and notification channels.
//!
//! Two steps like the rest of the collector: [`RawAlerts`] is deserialized with
//! `deny_unknown_fields` and explicit defaults, then [`RawAlerts::validate`] turns it into
//! [`AlertsConfig`] with typed values; every error names the field.

use super::model::{Rule, Severity, Silence, SilenceMatch};
use crate::config_error::{ConfigError, invalid};
use chrono_tz::Tz;
use serde::Deserialize;
use std::time::Duration;

/// Raw `[alerts]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Master switch: without it no incident is evaluated and nothing is sent.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Time zone of the times written in messages.
    #[serde(default = "d_time_zone")]
    pub time_zone: String,
    /// After a start, incidents loaded from the journal are not resolved for this long, so that
    /// the live state can fill up again first (no false "восстановлено" after a restart).
    #[serde(default = "d_startup_grace")]
    pub startup_grace_secs: u64,
    /// An incident that resolved and comes back within this window reopens the same incident;
    /// notifications per incident are also counted over this window.
    #[serde(default = "d_flap_window")]
    pub flap_window_secs: u64,
    /// At most this many notifications per incident within `flap_window_secs`; further changes
    /// are recorded, and the latest state is sent once the window allows it.
    #[serde(default = "d_flap_max")]
    pub flap_max_notifications: u32,
    /// A firing held back by `flap_max_notifications` is sent anyway once the incident has been
    /// firing continuously this long (the flap limit must not hide a sustained outage).
    #[serde(default = "d_flap_hold")]
    pub flap_hold_secs: u64,
    /// Longest list of hosts (and МО) carried by an incident; the counts are always complete.
    #[serde(default = "d_max_listed")]
    pub max_hosts_listed: usize,
    /// A probe result older than this does not count as the host's current view of the target.
    #[serde(default = "d_probe_fresh")]
    pub probe_fresh_secs: u64,
    /// Resolved incidents are kept (API, journal, reopening) this long.
    #[serde(default = "d_retention_hours")]
    pub resolved_retention_hours: u64,
    /// ... and at most this many of them.
    #[serde(default = "d_max_resolved")]
    pub max_resolved: usize,
    #[serde(default = "RawServerLost::default")]
    pub server_lost: RawServerLost,
    #[serde(default = "RawMoUnreachable::default")]
    pub mo_unreachable: RawMoUnreachable,
    #[serde(default = "RawMoChannel::default")]
    pub mo_channel: RawMoChannel,
    #[serde(default = "RawCentralOutage::default")]
    pub central_outage: RawCentralOutage,
    #[serde(default = "RawHostTarget::default")]
    pub host_target: RawHostTarget,
    #[serde(default = "RawDiskFull::default")]
    pub disk_full: RawDiskFull,
    #[serde(default = "RawClockSkew::default")]
    pub clock_skew: RawClockSkew,
    /// Maintenance windows known in advance.
    #[serde(default)]
    pub silence: Vec<RawSilence>,
    /// Where notifications go.
    #[serde(default)]
    pub channel: Vec<RawChannel>,
}

fn d_true() -> bool {
    true
}
fn d_false() -> bool {
    false
}
fn d_time_zone() -> String {
    "Europe/Moscow".into()
}
fn d_startup_grace() -> u64 {
    180
}
fn d_flap_window() -> u64 {
    3600
}
fn d_flap_max() -> u32 {
    4
}
fn d_flap_hold() -> u64 {
    300
}
fn d_max_listed() -> usize {
    20
}
fn d_probe_fresh() -> u64 {
    300
}
fn d_retention_hours() -> u64 {
    168
}
fn d_max_resolved() -> usize {
    2000
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            enabled: true,
            time_zone: d_time_zone(),
            startup_grace_secs: d_startup_grace(),
            flap_window_secs: d_flap_window(),
            flap_max_notifications: d_flap_max(),
            flap_hold_secs: d_flap_hold(),
            max_hosts_listed: d_max_listed(),
            probe_fresh_secs: d_probe_fresh(),
            resolved_retention_hours: d_retention_hours(),
            max_resolved: d_max_resolved(),
            server_lost: RawServerLost::default(),
            mo_unreachable: RawMoUnreachable::default(),
            mo_channel: RawMoChannel::default(),
            central_outage: RawCentralOutage::default(),
            host_target: RawHostTarget::default(),
            disk_full: RawDiskFull::default(),
            clock_skew: RawClockSkew::default(),
            silence: Vec::new(),
            channel: Vec::new(),
        }
    }
}

/// Lifecycle fields common to every rule, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleConfig {
    pub enabled: bool,
    /// Minimum duration of the condition before firing, ms.
    pub for_ms: i64,
    /// Duration without the condition before resolving, ms.
    pub resolve_after_ms: i64,
    pub severity: Severity,
    pub notify: bool,
}

fn rule_config(
    enabled: bool,
    for_secs: u64,
    resolve_after_secs: u64,
    severity: &str,
    notify: bool,
    fields: [&'static str; 3],
) -> Result<RuleConfig, ConfigError> {
    let [f_for, f_res, f_sev] = fields;
    if for_secs > 7 * 86_400 {
        return Err(invalid(f_for, "must be at most 604800 (a week)"));
    }
    if resolve_after_secs > 7 * 86_400 {
        return Err(invalid(f_res, "must be at most 604800 (a week)"));
    }
    let severity = Severity::parse(severity).ok_or_else(|| {
        invalid(
            f_sev,
            format!("{severity:?} is not \"info\", \"warning\" or \"critical\""),
        )
    })?;
    Ok(RuleConfig {
        enabled,
        for_ms: secs_ms(for_secs),
        resolve_after_ms: secs_ms(resolve_after_secs),
        severity,
        notify,
    })
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn share(v: f64, field: &'static str) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v} is not a share in (0, 1]")))
    }
}

/// `[alerts.server_lost]`: a server (`role = "server"`) lost its connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerLost {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_60")]
    pub for_secs: u64,
    #[serde(default = "d_60")]
    pub resolve_after_secs: u64,
    #[serde(default = "d_critical")]
    pub severity: String,
    #[serde(default = "d_true")]
    pub notify: bool,
}

impl Default for RawServerLost {
    fn default() -> Self {
        RawServerLost {
            enabled: true,
            for_secs: 60,
            resolve_after_secs: 60,
            severity: d_critical(),
            notify: true,
        }
    }
}

/// `[alerts.mo_unreachable]`: most recently active hosts of an МО went lost at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMoUnreachable {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_120")]
    pub for_secs: u64,
    #[serde(default = "d_120")]
    pub resolve_after_secs: u64,
    #[serde(default = "d_critical")]
    pub severity: String,
    #[serde(default = "d_true")]
    pub notify: bool,
    /// Share of the recently active hosts that must go lost.
    #[serde(default = "d_06")]
    pub min_share: f64,
    /// ... and at least this many of them.
    #[serde(default = "d_3")]
    pub min_hosts: usize,
    /// The losses must fall within this window of each other.
    #[serde(default = "d_300")]
    pub window_secs: u64,
    /// A host counts as recently active if heard live within this long.
    #[serde(default = "d_3600")]
    pub active_window_secs: u64,
    /// Open incidents only during the МО's working hours (from the roster).
    #[serde(default = "d_true")]
    pub working_hours_only: bool,
    /// After the incident resolves, wait this long for replayed backlogs before settling the
    /// cause as "power/switched off" for lack of evidence of life.
    #[serde(default = "d_300")]
    pub relabel_settle_secs: u64,
    /// Share of the affected hosts with evidence needed to label the cause.
    #[serde(default = "d_05")]
    pub relabel_min_share: f64,
}

impl Default for RawMoUnreachable {
    fn default() -> Self {
        RawMoUnreachable {
            enabled: true,
            for_secs: 120,
            resolve_after_secs: 120,
            severity: d_critical(),
            notify: true,
            min_share: 0.6,
            min_hosts: 3,
            window_secs: 300,
            active_window_secs: 3600,
            working_hours_only: true,
            relabel_settle_secs: 300,
            relabel_min_share: 0.5,
        }
    }
}

/// `[alerts.mo_channel]`: every reporting host of an МО fails a target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMoChannel {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_180")]
    pub for_secs: u64,
    #[serde(default = "d_120")]
    pub resolve_after_secs: u64,
    #[serde(default = "d_critical")]
    pub severity: String,
    #[serde(default = "d_true")]
    pub notify: bool,
    /// At least this many hosts of the МО must report the target.
    #[serde(default = "d_2")]
    pub min_hosts: usize,
    /// Share of the reporting hosts that must fail it (1.0: all of them).
    #[serde(default = "d_1")]
    pub min_share: f64,
}

impl Default for RawMoChannel {
    fn default() -> Self {
        RawMoChannel {
            enabled: true,
            for_secs: 180,
            resolve_after_secs: 120,
            severity: d_critical(),
            notify: true,
            min_hosts: 2,
            min_share: 1.0,
        }
    }
}

/// `[alerts.central_outage]`: a target fails from many МО at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCentralOutage {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_60")]
    pub for_secs: u64,
    #[serde(default = "d_120")]
    pub resolve_after_secs: u64,
    #[serde(default = "d_critical")]
    pub severity: String,
    #[serde(default = "d_true")]
    pub notify: bool,
    /// At least this many МО must fail the target ...
    #[serde(default = "d_3")]
    pub min_mo: usize,
    /// ... and at least this share of the МО reporting it.
    #[serde(default = "d_05")]
    pub min_share: f64,
}

impl Default for RawCentralOutage {
    fn default() -> Self {
        RawCentralOutage {
            enabled: true,
            for_secs: 60,
            resolve_after_secs: 120,
            severity: d_critical(),
            notify: true,
            min_mo: 3,
            min_share: 0.5,
        }
    }
}

/// `[alerts.host_target]`: one host fails a target its МО-mates reach. Recorded, not paged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHostTarget {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_300")]
    pub for_secs: u64,
    #[serde(default = "d_120")]
    pub resolve_after_secs: u64,
    #[serde(default = "d_info")]
    pub severity: String,
    #[serde(default = "d_false")]
    pub notify: bool,
}

impl Default for RawHostTarget {
    fn default() -> Self {
        RawHostTarget {
            enabled: true,
            for_secs: 300,
            resolve_after_secs: 120,
            severity: d_info(),
            notify: false,
        }
    }
}

/// `[alerts.disk_full]`: a disk of a server is almost full.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiskFull {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_300")]
    pub for_secs: u64,
    #[serde(default = "d_300")]
    pub resolve_after_secs: u64,
    #[serde(default = "d_warning")]
    pub severity: String,
    #[serde(default = "d_true")]
    pub notify: bool,
    /// Used share of a mount, percent, at or above which it is "almost full".
    #[serde(default = "d_90f")]
    pub threshold_pct: f64,
    /// Only servers (workstations' disks are their users' business).
    #[serde(default = "d_true")]
    pub servers_only: bool,
}

impl Default for RawDiskFull {
    fn default() -> Self {
        RawDiskFull {
            enabled: true,
            for_secs: 300,
            resolve_after_secs: 300,
            severity: d_warning(),
            notify: true,
            threshold_pct: 90.0,
            servers_only: true,
        }
    }
}

/// `[alerts.clock_skew]`: hosts whose clocks differ from the collector's. One incident per МО.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClockSkew {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_600")]
    pub for_secs: u64,
    #[serde(default = "d_300")]
    pub resolve_after_secs: u64,
    #[serde(default = "d_warning")]
    pub severity: String,
    #[serde(default = "d_true")]
    pub notify: bool,
    /// |clock offset| above which a host is skewed.
    #[serde(default = "d_120")]
    pub max_offset_secs: u64,
    /// Only servers.
    #[serde(default = "d_false")]
    pub servers_only: bool,
}

impl Default for RawClockSkew {
    fn default() -> Self {
        RawClockSkew {
            enabled: true,
            for_secs: 600,
            resolve_after_secs: 300,
            severity: d_warning(),
            notify: true,
            max_offset_secs: 120,
            servers_only: false,
        }
    }
}

fn d_2() -> usize {
    2
}
fn d_3() -> usize {
    3
}
fn d_60() -> u64 {
    60
}
fn d_120() -> u64 {
    120
}
fn d_180() -> u64 {
    180
}
fn d_300() -> u64 {
    300
}
fn d_600() -> u64 {
    600
}
fn d_3600() -> u64 {
    3600
}
fn d_05() -> f64 {
    0.5
}
fn d_06() -> f64 {
    0.6
}
fn d_1() -> f64 {
    1.0
}
fn d_90f() -> f64 {
    90.0
}
fn d_critical() -> String {
    "critical".into()
}
fn d_warning() -> String {
    "warning".into()
}
fn d_info() -> String {
    "info".into()
}

/// `[[alerts.silence]]`: a maintenance window. Every given matcher must match; at least one
/// is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSilence {
    /// ФРМО OID of an МО.
    #[serde(default)]
    pub mo: Option<String>,
    /// Target name as the agents probe it.
    #[serde(default)]
    pub target: Option<String>,
    /// Host id.
    #[serde(default)]
    pub host: Option<String>,
    /// Rule name (`server_lost`, `mo_unreachable`, …).
    #[serde(default)]
    pub rule: Option<String>,
    /// Start, RFC 3339 (default: always).
    #[serde(default)]
    pub from: Option<String>,
    /// Expiry, RFC 3339, e.g. `2025-06-01T08:00:00+03:00`. Required.
    pub until: String,
    #[serde(default)]
    pub comment: String,
}

/// `[[alerts.channel]]`: one notification channel. Fields that do not apply to `type` are
/// rejected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    /// `webhook`, `telegram`, `email` or `alertmanager`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name in logs and metrics (default: `{type}-{index}`).
    #[serde(default)]
    pub name: Option<String>,
    /// Send only incidents of at least this severity (default `warning`).
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Notifications waiting beyond this are dropped, oldest first.
    #[serde(default)]
    pub queue_len: Option<usize>,
    /// Attempts after the first failure.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// First retry delay; doubles up to `retry_max_ms`.
    #[serde(default)]
    pub retry_initial_ms: Option<u64>,
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
    /// Timeout of one delivery attempt.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// webhook: target URL; alertmanager: base URL (`http://am:9093`).
    #[serde(default)]
    pub url: Option<String>,
    /// webhook: extra HTTP headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// telegram: bot token.
    #[serde(default)]
    pub bot_token: Option<String>,
    /// telegram: chat id (number or `@channel`).
    #[serde(default)]
    pub chat_id: Option<String>,
    /// telegram: Bot API base (a local Bot API server in closed networks).
    #[serde(default)]
    pub api_base: Option<String>,
    /// email: SMTP host.
    #[serde(default)]
    pub host: Option<String>,
    /// email: SMTP port (default 587 with STARTTLS, 465 with TLS, 25 without).
    #[serde(default)]
    pub port: Option<u16>,
    /// email: `starttls` (default), `tls` or `none` (local relays).
    #[serde(default)]
    pub tls: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<Vec<String>>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// alertmanager: re-post firing alerts this often (Alertmanager expects resends).
    #[serde(default)]
    pub resend_secs: Option<u64>,
}

/// Validated `[alerts]`.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub enabled: bool,
    pub tz: Tz,
    pub startup_grace_ms: i64,
    pub flap_window_ms: i64,
    pub flap_max_notifications: u32,
    pub flap_hold_ms: i64,
    pub max_hosts_listed: usize,
    pub probe_fresh_ms: i64,
    pub resolved_retention_ms: i64,
    pub max_resolved: usize,
    pub server_lost: RuleConfig,
    pub mo_unreachable: MoUnreachableConfig,
    pub mo_channel: MoChannelConfig,
    pub central_outage: CentralConfig,
    pub host_target: RuleConfig,
    pub disk_full: DiskFullConfig,
    pub clock_skew: ClockSkewConfig,
    pub silences: Vec<Silence>,
    pub channels: Vec<ChannelConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        // The defaults are valid by construction (checked by a test).
        RawAlerts::default()
            .validate()
            .unwrap_or_else(|e| unreachable!("default [alerts] is invalid: {e}"))
    }
}

impl AlertsConfig {
    /// The lifecycle settings of a rule.
    pub fn rule(&self, rule: Rule) -> RuleConfig {
        match rule {
            Rule::ServerLost => self.server_lost,
            Rule::MoUnreachable => self.mo_unreachable.rule,
            Rule::MoChannel => self.mo_channel.rule,
            Rule::CentralOutage => self.central_outage.rule,
            Rule::HostTarget => self.host_target,
            Rule::DiskFull => self.disk_full.rule,
            Rule::ClockSkew => self.clock_skew.rule,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MoUnreachableConfig {
    pub rule: RuleConfig,
    pub min_share: f64,
    pub min_hosts: usize,
    pub window_ms: i64,
    pub active_window_ms: i64,
    pub working_hours_only: bool,
    pub relabel_settle_ms: i64,
    pub relabel_min_share: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct MoChannelConfig {
    pub rule: RuleConfig,
    pub min_hosts: usize,
    pub min_share: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct CentralConfig {
    pub rule: RuleConfig,
    pub min_mo: usize,
    pub min_share: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct DiskFullConfig {
    pub rule: RuleConfig,
    pub threshold_pct: f64,
    pub servers_only: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ClockSkewConfig {
    pub rule: RuleConfig,
    pub max_offset_ms: i64,
    pub servers_only: bool,
}

/// Delivery settings common to every channel.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub name: String,
    pub min_severity: Severity,
    pub queue_len: usize,
    pub max_retries: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS: local relays only.
    None,
}

/// What a channel talks to.
#[derive(Debug, Clone)]
pub enum ChannelKind {
    Webhook {
        url: String,
        headers: Vec<(String, String)>,
    },
    Telegram {
        api_base: String,
        bot_token: String,
        chat_id: String,
    },
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
        from: String,
        to: Vec<String>,
        credentials: Option<(String, String)>,
    },
    Alertmanager {
        url: String,
        resend: Duration,
    },
}

impl ChannelKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Email { .. } => "email",
            ChannelKind::Alertmanager { .. } => "alertmanager",
        }
    }
}

/// A validated channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub delivery: Delivery,
    pub kind: ChannelKind,
}

impl RawAlerts {
    /// Checks every field and converts to typed values.
    pub fn validate(self) -> Result<AlertsConfig, ConfigError> {
        let tz: Tz = self.time_zone.parse().map_err(|_| {
            invalid(
                "alerts.time_zone",
                format!("unknown time zone {:?}", self.time_zone),
            )
        })?;
        if self.flap_window_secs == 0 {
            return Err(invalid("alerts.flap_window_secs", "must be > 0"));
        }
        if self.flap_max_notifications < 2 {
            return Err(invalid(
                "alerts.flap_max_notifications",
                "must be at least 2 (a firing and its recovery)",
            ));
        }
        if !(1..=1000).contains(&self.max_hosts_listed) {
            return Err(invalid("alerts.max_hosts_listed", "must be 1..=1000"));
        }
        if self.probe_fresh_secs == 0 {
            return Err(invalid("alerts.probe_fresh_secs", "must be > 0"));
        }
        if self.max_resolved == 0 {
            return Err(invalid("alerts.max_resolved", "must be > 0"));
        }
        let s = &self.server_lost;
        let server_lost = rule_config(
            s.enabled,
            s.for_secs,
            s.resolve_after_secs,
            &s.severity,
            s.notify,
            [
                "alerts.server_lost.for_secs",
                "alerts.server_lost.resolve_after_secs",
                "alerts.server_lost.severity",
            ],
        )?;
        let u = &self.mo_unreachable;
        if u.min_hosts == 0 {
            return Err(invalid("alerts.mo_unreachable.min_hosts", "must be > 0"));
        }
        if u.window_secs == 0 {
            return Err(invalid("alerts.mo_unreachable.window_secs", "must be > 0"));
        }
        if u.active_window_secs < u.window_secs {
            return Err(invalid(
                "alerts.mo_unreachable.active_window_secs",
                "must be at least window_secs",
            ));
        }
        let mo_unreachable = MoUnreachableConfig {
            rule: rule_config(
                u.enabled,
                u.for_secs,
                u.resolve_after_secs,
                &u.severity,
                u.notify,
                [
                    "alerts.mo_unreachable.for_secs",
                    "alerts.mo_unreachable.resolve_after_secs",
                    "alerts.mo_unreachable.severity",
                ],
            )?,
            min_share: share(u.min_share, "alerts.mo_unreachable.min_share")?,
            min_hosts: u.min_hosts,
            window_ms: secs_ms(u.window_secs),
            active_window_ms: secs_ms(u.active_window_secs),
            working_hours_only: u.working_hours_only,
            relabel_settle_ms: secs_ms(u.relabel_settle_secs),
            relabel_min_share: share(
                u.relabel_min_share,
                "alerts.mo_unreachable.relabel_min_share",
            )?,
        };
        let c = &self.mo_channel;
        if c.min_hosts == 0 {
            return Err(invalid("alerts.mo_channel.min_hosts", "must be > 0"));
        }
        let mo_channel = MoChannelConfig {
            rule: rule_config(
                c.enabled,
                c.for_secs,
                c.resolve_after_secs,
                &c.severity,
                c.notify,
                [
                    "alerts.mo_channel.for_secs",
                    "alerts.mo_channel.resolve_after_secs",
                    "alerts.mo_channel.severity",
                ],
            )?,
            min_hosts: c.min_hosts,
            min_share: share(c.min_share, "alerts.mo_channel.min_share")?,
        };
        let c = &self.central_outage;
        if c.min_mo < 2 {
            return Err(invalid(
                "alerts.central_outage.min_mo",
                "must be at least 2 (one МО is the mo_channel rule)",
            ));
        }
        let central_outage = CentralConfig {
            rule: rule_config(
                c.enabled,
                c.for_secs,
                c.resolve_after_secs,
                &c.severity,
                c.notify,
                [
                    "alerts.central_outage.for_secs",
                    "alerts.central_outage.resolve_after_secs",
                    "alerts.central_outage.severity",
                ],
            )?,
            min_mo: c.min_mo,
            min_share: share(c.min_share, "alerts.central_outage.min_share")?,
        };
        let h = &self.host_target;
        let host_target = rule_config(
            h.enabled,
            h.for_secs,
            h.resolve_after_secs,
            &h.severity,
            h.notify,
            [
                "alerts.host_target.for_secs",
                "alerts.host_target.resolve_after_secs",
                "alerts.host_target.severity",
            ],
        )?;
        let d = &self.disk_full;
        if !(d.threshold_pct > 0.0 && d.threshold_pct <= 100.0) {
            return Err(invalid(
                "alerts.disk_full.threshold_pct",
                format!("{} is not a percentage in (0, 100]", d.threshold_pct),
            ));
        }
        let disk_full = DiskFullConfig {
            rule: rule_config(
                d.enabled,
                d.for_secs,
                d.resolve_after_secs,
                &d.severity,
                d.notify,
                [
                    "alerts.disk_full.for_secs",
                    "alerts.disk_full.resolve_after_secs",
                    "alerts.disk_full.severity",
                ],
            )?,
            threshold_pct: d.threshold_pct,
            servers_only: d.servers_only,
        };
        let k = &self.clock_skew;
        if k.max_offset_secs == 0 {
            return Err(invalid("alerts.clock_skew.max_offset_secs", "must be > 0"));
        }
        let clock_skew = ClockSkewConfig {
            rule: rule_config(
                k.enabled,
                k.for_secs,
                k.resolve_after_secs,
                &k.severity,
                k.notify,
                [
                    "alerts.clock_skew.for_secs",
                    "alerts.clock_skew.resolve_after_secs",
                    "alerts.clock_skew.severity",
                ],
            )?,
            max_offset_ms: secs_ms(k.max_offset_secs),
            servers_only: k.servers_only,
        };
        let mut silences = Vec::with_capacity(self.silence.len());
        for (i, s) in self.silence.into_iter().enumerate() {
            silences.push(validate_silence(s, i)?);
        }
        let mut channels = Vec::with_capacity(self.channel.len());
        for (i, c) in self.channel.into_iter().enumerate() {
            let ch = validate_channel(c, i)?;
            if channels
                .iter()
                .any(|o: &ChannelConfig| o.delivery.name == ch.delivery.name)
            {
                return Err(invalid(
                    "alerts.channel.name",
                    format!("channel #{}: duplicate name {:?}", i + 1, ch.delivery.name),
                ));
            }
            channels.push(ch);
        }
        Ok(AlertsConfig {
            enabled: self.enabled,
            tz,
            startup_grace_ms: secs_ms(self.startup_grace_secs),
            flap_window_ms: secs_ms(self.flap_window_secs),
            flap_max_notifications: self.flap_max_notifications,
            flap_hold_ms: secs_ms(self.flap_hold_secs),
            max_hosts_listed: self.max_hosts_listed,
            probe_fresh_ms: secs_ms(self.probe_fresh_secs),
            resolved_retention_ms: secs_ms(self.resolved_retention_hours.saturating_mul(3600)),
            max_resolved: self.max_resolved,
            server_lost,
            mo_unreachable,
            mo_channel,
            central_outage,
            host_target,
            disk_full,
            clock_skew,
            silences,
            channels,
        })
    }
}

/// Parses an RFC 3339 time to Unix ms.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn validate_silence(s: RawSilence, i: usize) -> Result<Silence, ConfigError> {
    let at = |m: String| format!("silence #{}: {m}", i + 1);
    let rule = match &s.rule {
        Some(r) => Some(
            Rule::parse(r)
                .ok_or_else(|| invalid("alerts.silence.rule", at(format!("unknown rule {r:?}"))))?,
        ),
        None => None,
    };
    let matcher = SilenceMatch {
        mo: s.mo,
        target: s.target,
        host: s.host,
        rule,
    };
    if matcher.is_empty() {
        return Err(invalid(
            "alerts.silence",
            at("give at least one of mo, target, host, rule".into()),
        ));
    }
    let ends_ms = parse_time(&s.until).ok_or_else(|| {
        invalid(
            "alerts.silence.until",
            at(format!("{:?} is not an RFC 3339 time", s.until)),
        )
    })?;
    let starts_ms = match &s.from {
        Some(f) => parse_time(f).ok_or_else(|| {
            invalid(
                "alerts.silence.from",
                at(format!("{f:?} is not an RFC 3339 time")),
            )
        })?,
        None => 0,
    };
    if ends_ms <= starts_ms {
        return Err(invalid(
            "alerts.silence.until",
            at("must be after from".into()),
        ));
    }
    Ok(Silence {
        id: format!("config-{}", i + 1),
        matcher,
        starts_ms,
        ends_ms,
        comment: s.comment,
        created_by: "config".into(),
        created_ms: 0,
    })
}

fn validate_channel(c: RawChannel, i: usize) -> Result<ChannelConfig, ConfigError> {
    let n = i + 1;
    let at = |m: &str| format!("channel #{n} ({}): {m}", c.kind);
    let min_severity = match &c.min_severity {
        Some(s) => Severity::parse(s).ok_or_else(|| {
            invalid(
                "alerts.channel.min_severity",
                at(&format!("{s:?} is not info, warning or critical")),
            )
        })?,
        None => Severity::Warning,
    };
    let queue_len = c.queue_len.unwrap_or(1000);
    if !(1..=1_000_000).contains(&queue_len) {
        return Err(invalid(
            "alerts.channel.queue_len",
            at("must be 1..=1000000"),
        ));
    }
    let retry_initial = Duration::from_millis(c.retry_initial_ms.unwrap_or(1000));
    let retry_max = Duration::from_millis(c.retry_max_ms.unwrap_or(300_000));
    if retry_initial.is_zero() || retry_max < retry_initial {
        return Err(invalid(
            "alerts.channel.retry_max_ms",
            at("retry_initial_ms must be > 0 and retry_max_ms >= retry_initial_ms"),
        ));
    }
    let timeout = Duration::from_secs(c.timeout_secs.unwrap_or(15));
    if timeout.is_zero() {
        return Err(invalid("alerts.channel.timeout_secs", at("must be > 0")));
    }
    // Rejects fields that belong to other channel types.
    let only = |allowed: &[&str]| -> Result<(), ConfigError> {
        let given: [(&'static str, bool); 13] = [
            ("alerts.channel.url", c.url.is_some()),
            ("alerts.channel.headers", c.headers.is_some()),
            ("alerts.channel.bot_token", c.bot_token.is_some()),
            ("alerts.channel.chat_id", c.chat_id.is_some()),
            ("alerts.channel.api_base", c.api_base.is_some()),
            ("alerts.channel.host", c.host.is_some()),
            ("alerts.channel.port", c.port.is_some()),
            ("alerts.channel.tls", c.tls.is_some()),
            ("alerts.channel.from", c.from.is_some()),
            ("alerts.channel.to", c.to.is_some()),
            ("alerts.channel.username", c.username.is_some()),
            ("alerts.channel.password", c.password.is_some()),
            ("alerts.channel.resend_secs", c.resend_secs.is_some()),
        ];
        for (field, set) in given {
            let short = field.trim_start_matches("alerts.channel.");
            if set && !allowed.contains(&short) {
                return Err(invalid(
                    field,
                    at(&format!("not a field of type = {:?}", c.kind)),
                ));
            }
        }
        Ok(())
    };
    let http_url = |field: &'static str, v: &Option<String>| -> Result<String, ConfigError> {
        let u = v
            .as_deref()
            .ok_or_else(|| invalid(field, at("required")))?
            .trim_end_matches('/');
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 9 {
            return Err(invalid(field, at(&format!("{u:?} is not an http(s) URL"))));
        }
        Ok(u.to_string())
    };
    let kind = match c.kind.as_str() {
        "webhook" => {
            only(&["url", "headers"])?;
            ChannelKind::Webhook {
                url: http_url("alerts.channel.url", &c.url)?,
                headers: c.headers.clone().unwrap_or_default().into_iter().collect(),
            }
        }
        "telegram" => {
            only(&["bot_token", "chat_id", "api_base"])?;
            let bot_token = c
                .bot_token
                .clone()
                .filter(|t| !t.is_empty() && !t.contains('/'))
                .ok_or_else(|| invalid("alerts.channel.bot_token", at("required, without '/'")))?;
            let chat_id = c
                .chat_id
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| invalid("alerts.channel.chat_id", at("required")))?;
            let api_base = match &c.api_base {
                Some(_) => http_url("alerts.channel.api_base", &c.api_base)?,
                None => "https://api.telegram.org".into(),
            };
            ChannelKind::Telegram {
                api_base,
                bot_token,
                chat_id,
            }
        }
        "email" => {
            only(&["host", "port", "tls", "from", "to", "username", "password"])?;
            let host = c
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("alerts.channel.host", at("required")))?;
            let tls = match c.tls.as_deref().unwrap_or("starttls") {
                "starttls" => SmtpTls::Starttls,
                "tls" => SmtpTls::Tls,
                "none" => SmtpTls::None,
                other => {
                    return Err(invalid(
                        "alerts.channel.tls",
                        at(&format!("{other:?} is not starttls, tls or none")),
                    ));
                }
            };
            let port = c.port.unwrap_or(match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            });
            let from = c
                .from
                .clone()
                .ok_or_else(|| invalid("alerts.channel.from", at("required")))?;
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(invalid(
                    "alerts.channel.from",
                    at(&format!("{from:?} is not an e-mail address")),
                ));
            }
            let to = c.to.clone().unwrap_or_default();
            if to.is_empty() {
                return Err(invalid("alerts.channel.to", at("at least one address")));
            }
            for t in &to {
                if t.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(invalid(
                        "alerts.channel.to",
                        at(&format!("{t:?} is not an e-mail address")),
                    ));
                }
            }
            let credentials = match (&c.username, &c.password) {
                (Some(u), Some(p)) => Some((u.clone(), p.clone())),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "alerts.channel.password",
                        at("username and password go together"),
                    ));
                }
            };
            ChannelKind::Email {
                host,
                port,
                tls,
                from,
                to,
                credentials,
            }
        }
        "alertmanager" => {
            only(&["url", "resend_secs"])?;
            let resend = c.resend_secs.unwrap_or(60);
            if resend == 0 {
                return Err(invalid("alerts.channel.resend_secs", at("must be > 0")));
            }
            ChannelKind::Alertmanager {
                url: http_url("alerts.channel.url", &c.url)?,
                resend: Duration::from_secs(resend),
            }
        }
        other => {
            return Err(invalid(
                "alerts.channel.type",
                format!(
                    "channel #{n}: {other:?} is not \"webhook\", \"telegram\", \"email\" or \"alertmanager\""
                ),
            ));
        }
    };
    let name = c
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{n}", kind.type_name()));
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "alerts.channel.name",
            at("must be non-empty [A-Za-z0-9._-] (it is a metrics label)"),
        ));
    }
    Ok(ChannelConfig {
        delivery: Delivery {
            name,
            min_severity,
            queue_len,
            max_retries: c.max_retries.unwrap_or(8),
            retry_initial,
            retry_max,
            timeout,
        },
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertsConfig, String> {
        #[derive(Deserialize)]
        struct Wrap {
            #[serde(default)]
            alerts: RawAlerts,
        }
        let w: Wrap = toml::from_str(text).map_err(|e| e.to_string())?;
        w.alerts.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_fit_clinics() {
        let c = parse("").unwrap();
        assert!(c.enabled);
        assert_eq!(c.tz, chrono_tz::Europe::Moscow);
        assert_eq!(c.mo_unreachable.min_hosts, 3);
        assert!((c.mo_unreachable.min_share - 0.6).abs() < 1e-9);
        assert!(c.mo_unreachable.working_hours_only);
        assert!(!c.host_target.notify);
        assert_eq!(c.host_target.severity, Severity::Info);
        assert_eq!(c.server_lost.for_ms, 60_000);
        assert!(c.channels.is_empty());
        let _ = AlertsConfig::default();
    }

    #[test]
    fn shipped_example_states_the_defaults() {
        let raw = crate::config::RawConfig::from_toml(crate::config::DEFAULT_CONFIG).unwrap();
        let shipped = raw.alerts.validate().unwrap();
        assert_eq!(
            format!("{shipped:?}"),
            format!("{:?}", AlertsConfig::default())
        );
    }

    #[test]
    fn channels_and_silences_parse() {
        let c = parse(
            r#"
[alerts]
flap_window_secs = 10
[alerts.mo_unreachable]
for_secs = 2
min_hosts = 2
[[alerts.silence]]
mo = "1.2.3"
until = "2030-01-01T00:00:00+03:00"
comment = "работы на канале"
[[alerts.channel]]
type = "webhook"
url = "http://127.0.0.1:9/hook/"
headers = { Authorization = "Bearer x" }
[[alerts.channel]]
type = "telegram"
name = "tg-miac"
bot_token = "123:ABC"
chat_id = "-100200"
[[alerts.channel]]
type = "email"
host = "127.0.0.1"
tls = "none"
from = "dozor@miac.local"
to = ["it@miac.local"]
[[alerts.channel]]
type = "alertmanager"
url = "http://127.0.0.1:9093"
"#,
        )
        .unwrap();
        assert_eq!(c.flap_window_ms, 10_000);
        assert_eq!(c.mo_unreachable.rule.for_ms, 2000);
        assert_eq!(c.silences[0].id, "config-1");
        assert_eq!(c.silences[0].matcher.mo.as_deref(), Some("1.2.3"));
        assert_eq!(c.channels.len(), 4);
        assert_eq!(c.channels[0].delivery.name, "webhook-1");
        assert!(
            matches!(&c.channels[0].kind, ChannelKind::Webhook { url, .. } if url == "http://127.0.0.1:9/hook")
        );
        assert_eq!(c.channels[1].delivery.name, "tg-miac");
        assert!(
            matches!(&c.channels[1].kind, ChannelKind::Telegram { api_base, .. } if api_base == "https://api.telegram.org")
        );
        assert!(matches!(
            &c.channels[2].kind,
            ChannelKind::Email {
                port: 25,
                tls: SmtpTls::None,
                ..
            }
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let check = |text: &str, field: &str| {
            let e = parse(text).unwrap_err();
            assert!(e.contains(field), "{e:?} should name {field}");
        };
        check("[alerts]\ntime_zone = \"Mars/Base\"", "alerts.time_zone");
        check("[alerts]\nbogus = 1", "bogus");
        check(
            "[alerts.mo_unreachable]\nmin_share = 1.5",
            "alerts.mo_unreachable.min_share",
        );
        check(
            "[alerts.mo_unreachable]\nmin_hosts = 0",
            "alerts.mo_unreachable.min_hosts",
        );
        check(
            "[alerts.server_lost]\nseverity = \"high\"",
            "alerts.server_lost.severity",
        );
        check(
            "[alerts.central_outage]\nmin_mo = 1",
            "alerts.central_outage.min_mo",
        );
        check(
            "[alerts.disk_full]\nthreshold_pct = 120.0",
            "alerts.disk_full.threshold_pct",
        );
        check("[alerts.clock_skew]\nmax_offset = 1", "max_offset");
        check(
            "[[alerts.silence]]\nmo = \"x\"\nuntil = \"tomorrow\"",
            "alerts.silence.until",
        );
        check(
            "[[alerts.silence]]\nuntil = \"2030-01-01T00:00:00Z\"",
            "alerts.silence",
        );
        check(
            "[[alerts.silence]]\nrule = \"x\"\nuntil = \"2030-01-01T00:00:00Z\"",
            "alerts.silence.rule",
        );
        check(
            "[[alerts.channel]]\ntype = \"pager\"",
            "alerts.channel.type",
        );
        check(
            "[[alerts.channel]]\ntype = \"webhook\"",
            "alerts.channel.url",
        );
        check(
            "[[alerts.channel]]\ntype = \"webhook\"\nurl = \"ftp://x\"",
            "alerts.channel.url",
        );
        check(
            "[[alerts.channel]]\ntype = \"webhook\"\nurl = \"http://x:1\"\nchat_id = \"1\"",
            "alerts.channel.chat_id",
        );
        check(
            "[[alerts.channel]]\ntype = \"telegram\"\nchat_id = \"1\"",
            "alerts.channel.bot_token",
        );
        check(
            "[[alerts.channel]]\ntype = \"email\"\nhost = \"h\"\nfrom = \"not an address\"\nto = [\"a@b.c\"]",
            "alerts.channel.from",
        );
        check(
            "[[alerts.channel]]\ntype = \"email\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = []",
            "alerts.channel.to",
        );
        check(
            "[[alerts.channel]]\ntype = \"email\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\ntls = \"ssl\"",
            "alerts.channel.tls",
        );
        check(
            "[[alerts.channel]]\ntype = \"webhook\"\nurl = \"http://x:1\"\nname = \"a\"\n[[alerts.channel]]\ntype = \"webhook\"\nurl = \"http://x:1\"\nname = \"a\"",
            "alerts.channel.name",
        );
    }
}
