//! The vocabulary of alerting: rules, severities, incidents, their changes and silences.
//! Everything here is plain data, serialized as-is by the API, the journal and the webhook.

use dozor_proto::Category;
use serde::{Deserialize, Serialize};

/// What detected an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A server lost its connection (last will or lapsed heartbeats).
    ServerLost,
    /// Most recently active hosts of an МО went lost at once in working hours.
    MoUnreachable,
    /// Every reporting host of an МО fails a target that other МО reach.
    MoChannel,
    /// A target fails from many МО at once.
    CentralOutage,
    /// One host fails a target its МО-mates reach.
    HostTarget,
    /// A server's disk is almost full.
    DiskFull,
    /// Host clocks differ from the collector's beyond the limit (one incident per МО).
    ClockSkew,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::ServerLost,
        Rule::MoUnreachable,
        Rule::MoChannel,
        Rule::CentralOutage,
        Rule::HostTarget,
        Rule::DiskFull,
        Rule::ClockSkew,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::ServerLost => "server_lost",
            Rule::MoUnreachable => "mo_unreachable",
            Rule::MoChannel => "mo_channel",
            Rule::CentralOutage => "central_outage",
            Rule::HostTarget => "host_target",
            Rule::DiskFull => "disk_full",
            Rule::ClockSkew => "clock_skew",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Russian name of the rule.
    pub const fn title_ru(self) -> &'static str {
        match self {
            Rule::ServerLost => "Сервер не на связи",
            Rule::MoUnreachable => "МО недоступна",
            Rule::MoChannel => "МО потеряла связь с сервисом",
            Rule::CentralOutage => "Сервис недоступен для всего региона",
            Rule::HostTarget => "Хост не достигает сервиса",
            Rule::DiskFull => "Заканчивается место на диске сервера",
            Rule::ClockSkew => "Расхождение часов",
        }
    }
}

/// How urgent an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    pub const fn title_ru(self) -> &'static str {
        match self {
            Severity::Info => "информация",
            Severity::Warning => "предупреждение",
            Severity::Critical => "авария",
        }
    }
}

/// Lifecycle state of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// The condition holds but not yet for `for_secs`.
    Pending,
    /// Confirmed: notified (unless silenced or the rule does not notify).
    Firing,
    /// Over, or merged into another incident, or cancelled before firing.
    Resolved,
}

impl IncidentState {
    pub const fn as_str(self) -> &'static str {
        match self {
            IncidentState::Pending => "pending",
            IncidentState::Firing => "firing",
            IncidentState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<IncidentState> {
        match s {
            "pending" => Some(IncidentState::Pending),
            "firing" => Some(IncidentState::Firing),
            "resolved" => Some(IncidentState::Resolved),
            _ => None,
        }
    }
}

/// What is (believed to be) behind an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Not known (yet): for an unreachable МО, channel or power.
    Unknown,
    /// The hosts were up but cut off: the communication channel failed.
    Channel,
    /// The hosts were down: power cut or switched off.
    Power,
    /// The target itself is down (seen from many МО).
    TargetDown,
    /// Only this host fails the target: its own network, proxy, certificates.
    HostProblem,
    /// The host stopped reporting (last will or heartbeats lapsed).
    HostSilent,
    /// The agent process died while its machine and channel were fine: a new agent started on
    /// the same boot of the machine, and nothing the old one spooled covers the silence.
    AgentDown,
    /// A disk is almost full.
    Disk,
    /// A clock is off.
    Clock,
}

impl Cause {
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Unknown => "unknown",
            Cause::Channel => "channel",
            Cause::Power => "power",
            Cause::TargetDown => "target_down",
            Cause::HostProblem => "host_problem",
            Cause::HostSilent => "host_silent",
            Cause::AgentDown => "agent_down",
            Cause::Disk => "disk",
            Cause::Clock => "clock",
        }
    }

    /// Russian wording of the cause, as written in messages.
    pub const fn title_ru(self) -> &'static str {
        match self {
            Cause::Unknown => "не установлена (канал связи или электропитание)",
            Cause::Channel => "обрыв канала связи: хосты работали, но были отрезаны",
            Cause::Power => "отключение электропитания или выключение: хосты не работали",
            Cause::TargetDown => "недоступен сам сервис",
            Cause::HostProblem => "проблема на стороне хоста (сеть, прокси, сертификаты)",
            Cause::HostSilent => "хост перестал выходить на связь",
            Cause::AgentDown => {
                "агент не работал (служба агента остановлена или зависла), компьютер не перезагружался"
            }
            Cause::Disk => "заполнение диска",
            Cause::Clock => "неверное время на хостах",
        }
    }
}

/// An МО named in an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoRef {
    /// ФРМО OID.
    pub oid: String,
    /// Name from the roster (the OID when the МО is not in the roster).
    pub name: String,
}

/// A host named in an incident, as people know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRef {
    /// Host id (the `{host}` of topics).
    pub id: String,
    /// Host name the agent reported (empty until its first birth).
    #[serde(default)]
    pub hostname: String,
    /// Site (подразделение) the agent reported.
    #[serde(default)]
    pub site: String,
}

impl HostRef {
    /// `srv-01 (подразделение «Поликлиника № 2»)`, or the id when no name is known.
    pub fn label(&self) -> String {
        let name = if self.hostname.is_empty() {
            &self.id
        } else {
            &self.hostname
        };
        if self.site.is_empty() {
            name.clone()
        } else {
            format!("{name} (подразделение «{}»)", self.site)
        }
    }
}

/// An operator's acknowledgement: someone is on it. An acknowledged incident is not notified
/// again (its resolution still is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The authenticated user who acknowledged.
    pub by: String,
    /// When, Unix ms.
    pub at_ms: i64,
    #[serde(default)]
    pub comment: String,
}

/// Evidence gathered for the cause of an "МО unreachable" incident, per affected host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Hosts shown to have been up during the outage (replayed data, uptime).
    pub up: usize,
    /// Hosts shown to have been down (rebooted during the outage).
    pub down: usize,
}

/// One incident: what the API lists, the journal keeps and notifications describe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Unique and increasing; survives restarts.
    pub id: u64,
    /// Identity of the condition: `rule/mo/host/target` parts as applicable. A condition with
    /// the same key coming back within the flap window reopens the same incident.
    pub key: String,
    pub rule: Rule,
    pub severity: Severity,
    pub state: IncidentState,
    pub cause: Cause,
    /// One-line Russian summary.
    pub title: String,
    /// Affected МО (bounded list) and their full count.
    pub mos: Vec<MoRef>,
    pub mo_count: usize,
    /// Affected hosts (bounded list of host ids) and their full count.
    pub hosts: Vec<String>,
    pub host_count: usize,
    /// The listed hosts with their names and sites, in the order of `hosts` (filled from the
    /// live state; empty for incidents without hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_refs: Vec<HostRef>,
    /// Target name as probed, for target rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Rule-specific figure: disk use %, clock offset s, share of МО failing, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When the condition (first) began, Unix ms.
    pub started_ms: i64,
    /// When the current episode began (differs from `started_ms` after a reopen).
    pub episode_started_ms: i64,
    /// When the incident first fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<i64>,
    pub updated_ms: i64,
    /// Times the incident came back within the flap window after resolving.
    pub reopened: u32,
    /// Earlier episodes of this incident whose firing people were told about: the
    /// «(повторно: N)» of a firing message (episodes that stayed pending, were merged or were
    /// not sent do not count).
    #[serde(default)]
    pub repeat: u32,
    /// The silence that keeps it from being notified, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<String>,
    /// The title of a planned work that silenced it and ended while it was still open: its
    /// firing then says the works are over and the trouble is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_over: Option<String>,
    /// The incident it was merged into (a central outage absorbs per-МО incidents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<u64>,
    /// Incidents merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<u64>,
    /// For "МО unreachable": what replayed backlogs and uptimes showed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// False when the rule only records (e.g. `host_target` by default).
    pub notify: bool,
    /// Who acknowledged it, when and why; `null` until someone does.
    #[serde(default)]
    pub ack: Option<Ack>,
}

impl Incident {
    /// Outage duration of the current episode at `now_ms` (or until it resolved).
    pub fn duration_ms(&self, now_ms: i64) -> i64 {
        (self.resolved_ms.unwrap_or(now_ms) - self.episode_started_ms).max(0)
    }

    /// The host of a single-host incident.
    pub fn host(&self) -> Option<&str> {
        (self.host_count == 1)
            .then(|| self.hosts.first().map(String::as_str))
            .flatten()
    }

    /// Names of the listed hosts (`srv-01 (подразделение «…»)`), ids where none is known.
    pub fn host_labels(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|id| {
                self.host_refs
                    .iter()
                    .find(|r| &r.id == id)
                    .map_or_else(|| id.clone(), HostRef::label)
            })
            .collect()
    }

    /// The МО of a single-МО incident.
    pub fn mo(&self) -> Option<&MoRef> {
        (self.mo_count == 1).then(|| self.mos.first()).flatten()
    }
}

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A condition appeared: pending.
    Opened,
    /// Held for `for_secs`: firing (also after a reopen).
    Firing,
    /// The condition is gone (or the incident was merged or cancelled).
    Resolved,
    /// The cause was established or changed.
    Relabelled,
    /// A silence began or ended covering it.
    Silenced,
    /// An operator acknowledged it.
    Acknowledged,
}

impl ChangeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Opened => "opened",
            ChangeKind::Firing => "firing",
            ChangeKind::Resolved => "resolved",
            ChangeKind::Relabelled => "relabelled",
            ChangeKind::Silenced => "silenced",
            ChangeKind::Acknowledged => "acknowledged",
        }
    }
}

/// One change, with the incident as it is after it. `notify` says whether people are told.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub at_ms: i64,
    pub notify: bool,
    pub incident: Incident,
}

/// Which incidents a silence covers: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceMatch {
    /// ФРМО OID: matches incidents affecting this МО.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Host id: matches incidents affecting this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
}

impl SilenceMatch {
    pub fn is_empty(&self) -> bool {
        self.mo.is_none() && self.target.is_none() && self.host.is_none() && self.rule.is_none()
    }

    /// True if the incident is covered. An МО or host matcher matches when the incident's
    /// (bounded) lists name it; a central outage is silenced only by target or rule (one МО's
    /// maintenance must not hide a region-wide outage).
    pub fn matches(&self, inc: &Incident) -> bool {
        if self.is_empty() {
            return false;
        }
        if let Some(r) = self.rule
            && r != inc.rule
        {
            return false;
        }
        if let Some(t) = &self.target
            && inc.target.as_ref() != Some(t)
        {
            return false;
        }
        if let Some(m) = &self.mo
            && (inc.rule == Rule::CentralOutage || !inc.mos.iter().any(|x| &x.oid == m))
        {
            return false;
        }
        if let Some(h) = &self.host
            && (inc.rule == Rule::CentralOutage || !inc.hosts.iter().any(|x| x == h))
        {
            return false;
        }
        true
    }
}

/// A maintenance window: incidents it covers are recorded but not notified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// `config-N` for silences from the configuration, `s-N` for those made over the API.
    pub id: String,
    #[serde(flatten)]
    pub matcher: SilenceMatch,
    /// Unix ms; 0 = from the beginning.
    pub starts_ms: i64,
    /// Expiry, Unix ms.
    pub ends_ms: i64,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub created_ms: i64,
}

impl Silence {
    pub fn active(&self, now_ms: i64) -> bool {
        self.starts_ms <= now_ms && now_ms < self.ends_ms
    }
}
