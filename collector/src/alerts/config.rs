//! `[alerts]` configuration: thresholds, silences and notification channels.
//!
//! Two steps like the rest of the collector: [`RawAlerts`] is deserialized with
//! `deny_unknown_fields` and one `Default` per struct (the only place a default is written),
//! then [`RawAlerts::validate`] turns it into [`AlertsConfig`] with typed values; every error
//! names the field. A channel is a [`RawChannel`]: the delivery settings every kind shares and
//! its kind's own fields, chosen by `type`.

use super::model::{Rule, Severity, Silence, SilenceMatch};
use crate::config_error::{ConfigError, invalid, secret};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Raw `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts {
    /// Master switch: without it no incident is evaluated and nothing is sent.
    pub enabled: bool,
    /// Time zone of the times written in messages.
    pub time_zone: String,
    /// After a start, incidents loaded from the journal are not resolved for this long, so that
    /// the live state can fill up again first (no false "восстановлено" after a restart).
    pub startup_grace_secs: u64,
    /// An incident that resolved and comes back within this window reopens the same incident;
    /// notifications per incident are also counted over this window.
    pub flap_window_secs: u64,
    /// At most this many notifications per incident within `flap_window_secs`; further changes
    /// are recorded, and the latest state is sent once the window allows it.
    pub flap_max_notifications: u32,
    /// A firing held back by `flap_max_notifications` is sent anyway once the incident has been
    /// firing continuously this long (the flap limit must not hide a sustained outage).
    pub flap_hold_secs: u64,
    /// Longest list of hosts (and МО) carried by an incident; the counts are always complete.
    pub max_hosts_listed: usize,
    /// A probe result older than this does not count as the host's current view of the target.
    pub probe_fresh_secs: u64,
    /// Resolved incidents are kept (API, journal, reopening) this long.
    pub resolved_retention_hours: u64,
    /// ... and at most this many of them.
    pub max_resolved: usize,
    pub server_lost: RawServerLost,
    pub mo_unreachable: RawMoUnreachable,
    pub mo_channel: RawMoChannel,
    pub central_outage: RawCentralOutage,
    pub host_target: RawHostTarget,
    pub disk_full: RawDiskFull,
    pub clock_skew: RawClockSkew,
    /// Maintenance windows known in advance.
    pub silence: Vec<RawSilence>,
    /// Where notifications go.
    pub channel: Vec<RawChannel>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            enabled: true,
            time_zone: "Europe/Moscow".into(),
            startup_grace_secs: 180,
            flap_window_secs: 3600,
            flap_max_notifications: 4,
            flap_hold_secs: 300,
            max_hosts_listed: 20,
            probe_fresh_secs: 300,
            resolved_retention_hours: 168,
            max_resolved: 2000,
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServerLost {
    pub enabled: bool,
    pub for_secs: u64,
    pub resolve_after_secs: u64,
    pub severity: String,
    pub notify: bool,
}

impl Default for RawServerLost {
    fn default() -> Self {
        RawServerLost {
            enabled: true,
            for_secs: 60,
            resolve_after_secs: 60,
            severity: "critical".into(),
            notify: true,
        }
    }
}

/// `[alerts.mo_unreachable]`: most recently active hosts of an МО went lost at once.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMoUnreachable {
    pub enabled: bool,
    pub for_secs: u64,
    pub resolve_after_secs: u64,
    pub severity: String,
    pub notify: bool,
    /// Share of the recently active hosts that must go lost.
    pub min_share: f64,
    /// ... and at least this many of them.
    pub min_hosts: usize,
    /// The losses must fall within this window of each other.
    pub window_secs: u64,
    /// A host counts as recently active if heard live within this long.
    pub active_window_secs: u64,
    /// Open incidents only during the МО's working hours (from the roster).
    pub working_hours_only: bool,
    /// After the incident resolves, wait this long for replayed backlogs before settling the
    /// cause as "power/switched off" for lack of evidence of life.
    pub relabel_settle_secs: u64,
    /// Share of the affected hosts with evidence needed to label the cause.
    pub relabel_min_share: f64,
}

impl Default for RawMoUnreachable {
    fn default() -> Self {
        RawMoUnreachable {
            enabled: true,
            for_secs: 120,
            resolve_after_secs: 120,
            severity: "critical".into(),
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMoChannel {
    pub enabled: bool,
    pub for_secs: u64,
    pub resolve_after_secs: u64,
    pub severity: String,
    pub notify: bool,
    /// At least this many hosts of the МО must report the target.
    pub min_hosts: usize,
    /// Share of the reporting hosts that must fail it (1.0: all of them).
    pub min_share: f64,
}

impl Default for RawMoChannel {
    fn default() -> Self {
        RawMoChannel {
            enabled: true,
            for_secs: 180,
            resolve_after_secs: 120,
            severity: "critical".into(),
            notify: true,
            min_hosts: 2,
            min_share: 1.0,
        }
    }
}

/// `[alerts.central_outage]`: a target fails from many МО at once.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCentralOutage {
    pub enabled: bool,
    pub for_secs: u64,
    pub resolve_after_secs: u64,
    pub severity: String,
    pub notify: bool,
    /// At least this many МО must fail the target ...
    pub min_mo: usize,
    /// ... and at least this share of the МО reporting it.
    pub min_share: f64,
}

impl Default for RawCentralOutage {
    fn default() -> Self {
        RawCentralOutage {
            enabled: true,
            for_secs: 60,
            resolve_after_secs: 120,
            severity: "critical".into(),
            notify: true,
            min_mo: 3,
            min_share: 0.5,
        }
    }
}

/// `[alerts.host_target]`: one host fails a target its МО-mates reach. Recorded, not paged.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHostTarget {
    pub enabled: bool,
    pub for_secs: u64,
    pub resolve_after_secs: u64,
    pub severity: String,
    pub notify: bool,
}

impl Default for RawHostTarget {
    fn default() -> Self {
        RawHostTarget {
            enabled: true,
            for_secs: 300,
            resolve_after_secs: 120,
            severity: "info".into(),
            notify: false,
        }
    }
}

/// `[alerts.disk_full]`: a disk of a server is almost full.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDiskFull {
    pub enabled: bool,
    pub for_secs: u64,
    pub resolve_after_secs: u64,
    pub severity: String,
    pub notify: bool,
    /// Used share of a mount, percent, at or above which it is "almost full".
    pub threshold_pct: f64,
    /// Only servers (workstations' disks are their users' business).
    pub servers_only: bool,
}

impl Default for RawDiskFull {
    fn default() -> Self {
        RawDiskFull {
            enabled: true,
            for_secs: 300,
            resolve_after_secs: 300,
            severity: "warning".into(),
            notify: true,
            threshold_pct: 90.0,
            servers_only: true,
        }
    }
}

/// `[alerts.clock_skew]`: hosts whose clocks differ from the collector's. One incident per МО.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClockSkew {
    pub enabled: bool,
    pub for_secs: u64,
    pub resolve_after_secs: u64,
    pub severity: String,
    pub notify: bool,
    /// |clock offset| above which a host is skewed.
    pub max_offset_secs: u64,
    /// Only servers.
    pub servers_only: bool,
}

impl Default for RawClockSkew {
    fn default() -> Self {
        RawClockSkew {
            enabled: true,
            for_secs: 600,
            resolve_after_secs: 300,
            severity: "warning".into(),
            notify: true,
            max_offset_secs: 120,
            servers_only: false,
        }
    }
}

/// `[[alerts.silence]]`: a maintenance window. Every given matcher must match; at least one
/// is required.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSilence {
    /// ФРМО OID of an МО.
    pub mo: Option<String>,
    /// Target name as the agents probe it.
    pub target: Option<String>,
    /// Host id.
    pub host: Option<String>,
    /// Rule name (`server_lost`, `mo_unreachable`, …).
    pub rule: Option<String>,
    /// Start, RFC 3339 (default: always).
    pub from: Option<String>,
    /// Expiry, RFC 3339, e.g. `2025-06-01T08:00:00+03:00`. Required.
    pub until: String,
    pub comment: String,
}

/// `[[alerts.channel]]`: one notification channel: the delivery settings every kind shares,
/// then the fields of its `type` ([`RawChannelKind`]).
///
/// No `deny_unknown_fields` here: every key this struct does not know goes to the kind, whose
/// struct rejects what is not its own (so `chat_id` on a webhook is an error naming `chat_id`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RawChannel {
    /// Name in logs and metrics (default: `{type}-{index}`).
    pub name: Option<String>,
    /// Send only incidents of at least this severity.
    pub min_severity: String,
    /// Notifications waiting beyond this are dropped, oldest first.
    pub queue_len: usize,
    /// Attempts after the first failure.
    pub max_retries: u32,
    /// First retry delay; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Timeout of one delivery attempt.
    pub timeout_secs: u64,
    #[serde(flatten)]
    pub kind: RawChannelKind,
}

impl Default for RawChannel {
    fn default() -> Self {
        RawChannel {
            name: None,
            min_severity: "warning".into(),
            queue_len: 1000,
            max_retries: 8,
            retry_initial_ms: 1000,
            retry_max_ms: 300_000,
            timeout_secs: 15,
            kind: RawChannelKind::default(),
        }
    }
}

/// What a channel talks to: `type = "webhook" | "telegram" | "email" | "alertmanager"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RawChannelKind {
    Webhook(RawWebhook),
    Telegram(RawTelegram),
    Email(RawEmail),
    Alertmanager(RawAlertmanager),
}

impl Default for RawChannelKind {
    fn default() -> Self {
        RawChannelKind::Webhook(RawWebhook::default())
    }
}

/// `type = "webhook"`: a JSON POST per notification.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhook {
    /// Target URL (required).
    pub url: Option<String>,
    /// The URL in a file (it may carry a secret); wins over `url`.
    pub url_file: Option<PathBuf>,
    /// Extra HTTP headers (e.g. `Authorization`).
    pub headers: BTreeMap<String, String>,
}

/// `type = "telegram"`: a message to a chat through the Bot API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelegram {
    /// Bot token (required, here or in `bot_token_file`).
    pub bot_token: Option<String>,
    /// The bot token in a file; wins over `bot_token`.
    pub bot_token_file: Option<PathBuf>,
    /// Chat id (number or `@channel`).
    pub chat_id: Option<String>,
    /// Bot API base (a local Bot API server in closed networks).
    pub api_base: String,
}

impl Default for RawTelegram {
    fn default() -> Self {
        RawTelegram {
            bot_token: None,
            bot_token_file: None,
            chat_id: None,
            api_base: "https://api.telegram.org".into(),
        }
    }
}

/// `type = "email"`: SMTP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEmail {
    /// SMTP host (required).
    pub host: Option<String>,
    /// SMTP port (default 587 with STARTTLS, 465 with TLS, 25 without).
    pub port: Option<u16>,
    /// `starttls`, `tls` or `none` (local relays).
    pub tls: String,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The password in a file; wins over `password`.
    pub password_file: Option<PathBuf>,
}

impl Default for RawEmail {
    fn default() -> Self {
        RawEmail {
            host: None,
            port: None,
            tls: "starttls".into(),
            from: None,
            to: Vec::new(),
            username: None,
            password: None,
            password_file: None,
        }
    }
}

/// `type = "alertmanager"`: alerts posted to Prometheus Alertmanager.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlertmanager {
    /// Base URL (`http://am:9093`, required).
    pub url: Option<String>,
    /// Re-post firing alerts this often (Alertmanager expects resends).
    pub resend_secs: u64,
}

impl Default for RawAlertmanager {
    fn default() -> Self {
        RawAlertmanager {
            url: None,
            resend_secs: 60,
        }
    }
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

/// Longest text of a silence (a target name, a comment, an author), bytes: as long as any
/// string an agent may send.
pub(crate) const MAX_SILENCE_TEXT: usize = dozor_proto::Limits::DEFAULT.max_string_len;

/// The first field of a silence's matcher that no incident could carry: `mo` and `host` are
/// ids (the wire's charset and length), `target` a readable name no longer than an agent's.
/// The field and what is wrong, in Russian. Shared by the API and the configuration, so a
/// matcher can never hold megabytes or text that reorders what a person reads (issue 10).
pub(crate) fn matcher_problem(m: &SilenceMatch) -> Option<(&'static str, String)> {
    for (field, v) in [("mo", &m.mo), ("host", &m.host)] {
        if let Some(v) = v
            && !dozor_proto::valid_id(v)
        {
            return Some((
                field,
                format!(
                    "ожидается идентификатор: латиница, цифры, «.», «_», «-», до {} символов",
                    dozor_proto::MAX_ID_LEN
                ),
            ));
        }
    }
    if let Some(t) = &m.target
        && (t.is_empty() || !dozor_proto::valid_text(t, MAX_SILENCE_TEXT))
    {
        return Some((
            "target",
            format!("ожидается имя цели до {MAX_SILENCE_TEXT} байт без управляющих символов"),
        ));
    }
    None
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
    if let Some((field, _)) = matcher_problem(&matcher) {
        let what = if field == "target" {
            format!("at most {MAX_SILENCE_TEXT} bytes, no control characters")
        } else {
            "an id: ASCII letters, digits, '.', '_', '-', at most 64 characters".to_string()
        };
        let name = match field {
            "mo" => "alerts.silence.mo",
            "host" => "alerts.silence.host",
            _ => "alerts.silence.target",
        };
        return Err(invalid(name, at(format!("must be {what}"))));
    }
    if !dozor_proto::valid_text(&s.comment, MAX_SILENCE_TEXT) {
        return Err(invalid(
            "alerts.silence.comment",
            at(format!(
                "at most {MAX_SILENCE_TEXT} bytes, no control characters"
            )),
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
    let type_name = match &c.kind {
        RawChannelKind::Webhook(_) => "webhook",
        RawChannelKind::Telegram(_) => "telegram",
        RawChannelKind::Email(_) => "email",
        RawChannelKind::Alertmanager(_) => "alertmanager",
    };
    let at = |m: &str| format!("channel #{n} ({type_name}): {m}");
    let min_severity = Severity::parse(&c.min_severity).ok_or_else(|| {
        invalid(
            "alerts.channel.min_severity",
            at(&format!(
                "{:?} is not info, warning or critical",
                c.min_severity
            )),
        )
    })?;
    if !(1..=1_000_000).contains(&c.queue_len) {
        return Err(invalid(
            "alerts.channel.queue_len",
            at("must be 1..=1000000"),
        ));
    }
    let retry_initial = Duration::from_millis(c.retry_initial_ms);
    let retry_max = Duration::from_millis(c.retry_max_ms);
    if retry_initial.is_zero() || retry_max < retry_initial {
        return Err(invalid(
            "alerts.channel.retry_max_ms",
            at("retry_initial_ms must be > 0 and retry_max_ms >= retry_initial_ms"),
        ));
    }
    let timeout = Duration::from_secs(c.timeout_secs);
    if timeout.is_zero() {
        return Err(invalid("alerts.channel.timeout_secs", at("must be > 0")));
    }
    let http_url = |field: &'static str, v: Option<&str>| -> Result<String, ConfigError> {
        let u = v
            .ok_or_else(|| invalid(field, at("required")))?
            .trim_end_matches('/');
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 9 {
            return Err(invalid(field, at(&format!("{u:?} is not an http(s) URL"))));
        }
        Ok(u.to_string())
    };
    let kind = match c.kind {
        RawChannelKind::Webhook(w) => {
            let url = secret(
                w.url.as_deref(),
                w.url_file.as_deref(),
                "alerts.channel.url_file",
            )?;
            ChannelKind::Webhook {
                url: http_url("alerts.channel.url", url.as_deref())?,
                headers: w.headers.into_iter().collect(),
            }
        }
        RawChannelKind::Telegram(t) => {
            let bot_token = secret(
                t.bot_token.as_deref(),
                t.bot_token_file.as_deref(),
                "alerts.channel.bot_token_file",
            )?
            .filter(|t| !t.is_empty() && !t.contains('/'))
            .ok_or_else(|| invalid("alerts.channel.bot_token", at("required, without '/'")))?;
            let chat_id = t
                .chat_id
                .filter(|t| !t.is_empty())
                .ok_or_else(|| invalid("alerts.channel.chat_id", at("required")))?;
            ChannelKind::Telegram {
                api_base: http_url("alerts.channel.api_base", Some(&t.api_base))?,
                bot_token,
                chat_id,
            }
        }
        RawChannelKind::Email(e) => {
            let host = e
                .host
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("alerts.channel.host", at("required")))?;
            let tls = match e.tls.as_str() {
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
            let port = e.port.unwrap_or(match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            });
            let from = e
                .from
                .ok_or_else(|| invalid("alerts.channel.from", at("required")))?;
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(invalid(
                    "alerts.channel.from",
                    at(&format!("{from:?} is not an e-mail address")),
                ));
            }
            if e.to.is_empty() {
                return Err(invalid("alerts.channel.to", at("at least one address")));
            }
            for t in &e.to {
                if t.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(invalid(
                        "alerts.channel.to",
                        at(&format!("{t:?} is not an e-mail address")),
                    ));
                }
            }
            let password = secret(
                e.password.as_deref(),
                e.password_file.as_deref(),
                "alerts.channel.password_file",
            )?;
            let credentials = match (e.username, password) {
                (Some(u), Some(p)) => Some((u, p)),
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
                to: e.to,
                credentials,
            }
        }
        RawChannelKind::Alertmanager(a) => {
            if a.resend_secs == 0 {
                return Err(invalid("alerts.channel.resend_secs", at("must be > 0")));
            }
            ChannelKind::Alertmanager {
                url: http_url("alerts.channel.url", a.url.as_deref())?,
                resend: Duration::from_secs(a.resend_secs),
            }
        }
    };
    let name = c
        .name
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
            queue_len: c.queue_len,
            max_retries: c.max_retries,
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
        // Unknown types and fields of another type are serde's errors: they name the value or
        // the key, and the TOML error shows the `[[alerts.channel]]` table it is in.
        check(
            "[[alerts.channel]]\ntype = \"pager\"",
            "unknown variant `pager`",
        );
        check("[[alerts.channel]]\ntype = \"pager\"", "[[alerts.channel]]");
        check("[[alerts.channel]]\nurl = \"http://x:1\"", "`type`");
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
            "unknown field `chat_id`",
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

    #[test]
    fn the_example_channels_parse() {
        // The commented channel and silence examples of deploy/collector.toml, uncommented.
        let text = crate::config::DEFAULT_CONFIG;
        let start = text.find("# [[alerts.silence]]").unwrap();
        let examples: String = text[start..]
            .lines()
            .filter(|l| l.starts_with("# ") && !l.starts_with("# Notification"))
            .filter(|l| !l.starts_with("# max_retries"))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let c = parse(&examples).unwrap();
        assert_eq!(c.silences.len(), 1);
        let kinds: Vec<_> = c.channels.iter().map(|c| c.kind.type_name()).collect();
        assert_eq!(kinds, ["webhook", "telegram", "email", "alertmanager"]);
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let (tg, pw, hook) = (
            file("tg", "123:FILE\n"),
            file("pw", "s3cret\n"),
            file("hook", "https://hooks.example/abc\n"),
        );
        let c = parse(&format!(
            r#"
[[alerts.channel]]
type = "telegram"
bot_token = "123:INLINE"
bot_token_file = "{tg}"
chat_id = "1"
[[alerts.channel]]
type = "email"
host = "h"
from = "a@b.c"
to = ["a@b.c"]
username = "u"
password_file = "{pw}"
[[alerts.channel]]
type = "webhook"
url_file = "{hook}"
"#
        ))
        .unwrap();
        assert!(
            matches!(&c.channels[0].kind, ChannelKind::Telegram { bot_token, .. } if bot_token == "123:FILE")
        );
        assert!(
            matches!(&c.channels[1].kind, ChannelKind::Email { credentials: Some((u, p)), .. } if u == "u" && p == "s3cret")
        );
        assert!(
            matches!(&c.channels[2].kind, ChannelKind::Webhook { url, .. } if url == "https://hooks.example/abc")
        );
        let e = parse("[[alerts.channel]]\ntype = \"webhook\"\nurl_file = \"/nonexistent/x\"")
            .unwrap_err();
        assert!(e.contains("alerts.channel.url_file"), "{e}");
    }
}
