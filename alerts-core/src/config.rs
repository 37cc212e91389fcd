//! `[alerts]` configuration of the engine: thresholds, lifecycle and silences.
//!
//! Two steps like the rest of the workspace: [`RawAlerts`] is deserialized with
//! `deny_unknown_fields` and one `Default` per struct (the only place a default is written),
//! then [`RawAlerts::validate`] turns it into [`AlertsConfig`] with typed values; every error
//! is a [`FieldError`] naming the field. Notification channels are the collector's business
//! (they do I/O): `RawAlerts` carries them as an opaque `Vec<C>` that `validate` hands back
//! untouched, so the whole `[alerts]` table is still one struct with `deny_unknown_fields`.

use crate::model::{Rule, Severity, Silence, SilenceMatch};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// An invalid configuration value: the dotted field (`alerts.mo_unreachable.min_share`) and
/// what is wrong with it. The collector maps it to its own `FieldError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the option at fault.
    pub field: &'static str,
    /// What is wrong, in English.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config: {}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A [`FieldError`] naming `field`.
pub fn invalid(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// Raw `[alerts]` table; `C` is the raw notification channel, validated by the collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts<C> {
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
    /// Where notifications go (validated by the collector).
    pub channel: Vec<C>,
}

impl<C> Default for RawAlerts<C> {
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
) -> Result<RuleConfig, FieldError> {
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

fn share(v: f64, field: &'static str) -> Result<f64, FieldError> {
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
}

impl Default for AlertsConfig {
    fn default() -> Self {
        // The defaults are valid by construction (checked by a test).
        RawAlerts::<()>::default()
            .validate()
            .map(|(c, _)| c)
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

impl<C> RawAlerts<C> {
    /// Checks every field and converts to typed values; the raw channels come back as given.
    pub fn validate(self) -> Result<(AlertsConfig, Vec<C>), FieldError> {
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
        let config = AlertsConfig {
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
        };
        Ok((config, self.channel))
    }
}

/// Parses an RFC 3339 time to Unix ms.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Longest text of a silence (a target name, a comment, an author), bytes: as long as any
/// string an agent may send.
pub const MAX_SILENCE_TEXT: usize = dozor_proto::Limits::DEFAULT.max_string_len;

/// The first field of a silence's matcher that no incident could carry: `mo` and `host` are
/// ids (the wire's charset and length), `target` a readable name no longer than an agent's.
/// The field and what is wrong, in Russian. Shared by the API and the configuration, so a
/// matcher can never hold megabytes or text that reorders what a person reads (issue 10).
pub fn matcher_problem(m: &SilenceMatch) -> Option<(&'static str, String)> {
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

fn validate_silence(s: RawSilence, i: usize) -> Result<Silence, FieldError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertsConfig, String> {
        #[derive(Deserialize)]
        struct Wrap {
            #[serde(default)]
            alerts: RawAlerts<toml::Table>,
        }
        let w: Wrap = toml::from_str(text).map_err(|e| e.to_string())?;
        w.alerts
            .validate()
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
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
        assert!(c.silences.is_empty());
        let _ = AlertsConfig::default();
    }

    #[test]
    fn rules_and_silences_parse_and_channels_pass_through() {
        #[derive(Deserialize)]
        struct Wrap {
            alerts: RawAlerts<toml::Table>,
        }
        let w: Wrap = toml::from_str(
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
type = "pager"
"#,
        )
        .unwrap();
        let (c, channels) = w.alerts.validate().unwrap();
        assert_eq!(c.flap_window_ms, 10_000);
        assert_eq!(c.mo_unreachable.rule.for_ms, 2000);
        assert_eq!(c.silences[0].id, "config-1");
        assert_eq!(c.silences[0].matcher.mo.as_deref(), Some("1.2.3"));
        assert_eq!(channels.len(), 1);
        assert_eq!(channels[0]["type"].as_str(), Some("pager"));
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
            "[[alerts.silence]]\nmo = \"a b\"\nuntil = \"2030-01-01T00:00:00Z\"",
            "alerts.silence.mo",
        );
    }
}
