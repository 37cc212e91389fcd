//! Payload types of protocol v1. Every message is an [`Envelope`] around a kind-specific body.

use serde::{Deserialize, Serialize};

/// The JSON schema version this crate speaks.
pub const SCHEMA_VERSION: u32 = 1;

/// The common header of every message, with the kind-specific `body`.
///
/// `seq` is a per-`inst` counter that an agent persists, so it is monotonic across restarts and
/// reboots. Sequenced kinds (birth, hb, probe) each take a new number; `state` messages carry the
/// latest number issued when they were made and are not part of the delivery guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<B> {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// ФРМО OID of the medical organization; equals the topic's `{mo}`.
    pub mo: String,
    /// Stable host id; equals the topic's `{host}`.
    pub host: String,
    /// Agent instance id: random, created with the agent's spool; the sequence space of `seq`.
    pub inst: String,
    /// Sequence number within `inst`.
    pub seq: u64,
    /// Agent wall-clock time when the message was made, Unix milliseconds.
    pub ts: i64,
    /// True when the message is replayed from the agent's spool rather than sent live.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay: bool,
    pub body: B,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Role of a host, from the agent's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An АРМ: switched off at night and at weekends by design.
    Workstation,
    /// Expected up 24/7.
    Server,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Workstation => "workstation",
            Role::Server => "server",
        }
    }
}

/// Category of a probe target: the МИС itself or a centralized subsystem of the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Медицинская информационная система.
    Mis,
    /// ИЭМК / РЭМД: integrated electronic medical record.
    Iemk,
    /// ЛИС: laboratory information system.
    Lis,
    /// ЦАМИ / PACS: central medical image archive.
    Pacs,
    /// Электронный рецепт.
    Erecipe,
    /// ТМК: telemedicine consultations.
    Tmk,
    /// Управление потоками пациентов.
    PatientFlow,
    /// Бюро МСЭ.
    Mse,
    /// ФСС.
    Fss,
    /// СМП.
    Smp,
    /// Санавиация.
    Sanavia,
    /// Anything else; unknown categories from newer agents also decode as this.
    #[serde(other)]
    Other,
}

impl Category {
    pub const ALL: [Category; 12] = [
        Category::Mis,
        Category::Iemk,
        Category::Lis,
        Category::Pacs,
        Category::Erecipe,
        Category::Tmk,
        Category::PatientFlow,
        Category::Mse,
        Category::Fss,
        Category::Smp,
        Category::Sanavia,
        Category::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Mis => "mis",
            Category::Iemk => "iemk",
            Category::Lis => "lis",
            Category::Pacs => "pacs",
            Category::Erecipe => "erecipe",
            Category::Tmk => "tmk",
            Category::PatientFlow => "patient_flow",
            Category::Mse => "mse",
            Category::Fss => "fss",
            Category::Smp => "smp",
            Category::Sanavia => "sanavia",
            Category::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Russian name as used in the regional reports.
    pub const fn title_ru(self) -> &'static str {
        match self {
            Category::Mis => "МИС",
            Category::Iemk => "ИЭМК/РЭМД",
            Category::Lis => "ЛИС",
            Category::Pacs => "ЦАМИ",
            Category::Erecipe => "Электронный рецепт",
            Category::Tmk => "ТМК",
            Category::PatientFlow => "Управление потоками пациентов",
            Category::Mse => "Бюро МСЭ",
            Category::Fss => "ФСС",
            Category::Smp => "СМП",
            Category::Sanavia => "Санавиация",
            Category::Other => "Прочее",
        }
    }
}

/// A disk (mount) in the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    pub mount: String,
    #[serde(default)]
    pub fs: String,
    pub total_bytes: u64,
}

/// A target the agent probes, as announced in the birth message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    pub name: String,
    pub category: Category,
}

/// `birth`: inventory, published retained once per connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Birth {
    pub agent_version: String,
    pub role: Role,
    /// Site (подразделение) of the МО the host belongs to.
    pub site: String,
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub mem_total_bytes: u64,
    pub disks: Vec<DiskInfo>,
    /// Boot time, Unix seconds, by the agent's clock.
    pub boot_time: i64,
    /// Changes on every boot of the OS.
    pub boot_id: String,
    /// First sequence number used on this connection.
    pub seq_base: u64,
    /// Heartbeat interval; the collector declares a host lost after several missed ones.
    pub interval_secs: u32,
    /// MQTT keep-alive the agent uses.
    pub keepalive_secs: u32,
    pub targets: Vec<TargetInfo>,
    /// How the agent's previous run ended, as its state directory recorded it (agents before
    /// issue 13 items 8/9 leave it out; a collector then keeps dating by the last message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_end: Option<PrevEnd>,
    /// The `seq` of the last will (`state` `lost`) the agent gave the broker for the connection
    /// this birth begins: the latest number it had issued at CONNECT. A `lost` of the same
    /// `inst` with a lower `seq` was made on an older connection (a late will, e.g. through a
    /// bridge) and the collector ignores it. Agents before it leave it out (every `lost` is
    /// then taken as it comes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will_seq: Option<u64>,
}

/// The end of an agent's previous run: the last instant it is known to have been alive and
/// whether it stopped gracefully. Sent in every `birth` of the next run, so it is spooled and
/// replayed like any sequenced message: a shutdown while the channel was down reaches the
/// collector when the agent next runs with a working channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrevEnd {
    /// Unix ms by the agent's clock: the graceful stop, or, after an unclean end (crash,
    /// `kill -9`, power cut), the last heartbeat that rewrote the stamp (the run's first, then
    /// one every 5 minutes).
    pub at: i64,
    /// True: the run ended by a graceful shutdown (`offline`).
    pub shutdown: bool,
}

/// Connection state of an agent, the body of the retained `state` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    Online,
    /// Graceful stop; `reason` says why (`shutdown`).
    Offline,
    /// Set by the broker from the last will, or by the collector when heartbeats lapse.
    Lost,
}

impl ConnState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnState::Online => "online",
            ConnState::Offline => "offline",
            ConnState::Lost => "lost",
        }
    }
}

/// `state` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub state: ConnState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Usage of one mount in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUsage {
    pub mount: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

/// Spool figures an agent reports so that losses at the edge are visible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolStats {
    /// Messages waiting for the collector's confirmation.
    pub pending: u64,
    /// Bytes the spool holds.
    pub bytes: u64,
    /// Messages dropped by the size/age bound since the agent was installed.
    pub dropped: u64,
    /// Lowest sequence number the spool still holds (`None` when it is empty): every lower
    /// number was confirmed or dropped and will never be sent again, so the collector may count
    /// it as settled when tracking contiguous delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_seq: Option<u64>,
}

/// `hb`: heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub uptime_secs: u64,
    /// Whole-machine CPU use since the previous heartbeat, 0..=100.
    pub cpu_pct: f32,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    /// 1/5/15-minute load averages; absent on Windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f32; 3]>,
    pub disks: Vec<DiskUsage>,
    pub interval_secs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolStats>,
}

/// Why a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Name did not resolve.
    Dns,
    /// TCP connection refused or unreachable.
    Connect,
    /// No answer within the probe's timeout.
    Timeout,
    /// TLS handshake or certificate failure.
    Tls,
    /// HTTP answered with a status outside 2xx/3xx.
    HttpStatus,
    /// Any other failure (protocol error, reset mid-response, …).
    #[serde(other)]
    Other,
}

impl ErrorClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Dns => "dns",
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Tls => "tls",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::Other => "other",
        }
    }
}

/// One target's result in a probe round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeResult {
    pub target: String,
    pub category: Category,
    pub ok: bool,
    /// Time to the answer (or to the failure), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorClass>,
    /// HTTP status, for HTTP targets that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// `probe`: one round, one result per configured target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub results: Vec<ProbeResult>,
}

/// Downstream `ack` body: the collector has durably stored every message of `inst` with a
/// sequence number up to and including `acked_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub v: u32,
    pub inst: String,
    pub acked_seq: u64,
    /// Collector wall-clock time, Unix milliseconds (lets agents see their own clock offset).
    pub ts: i64,
}

/// One target of a central probe configuration: what the agent probes and how, in the same
/// form as a local `[[probe]]` of the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfgTarget {
    /// Unique within the configuration: 1..=64 of `[A-Za-z0-9._-]`.
    pub name: String,
    pub category: Category,
    /// `http(s)://…` (ok = 2xx/3xx), `tcp://HOST:PORT` or `dns://NAME`.
    pub url: String,
    /// Per-target timeout, 1..=60000 ms; the agent's `probe_timeout_ms` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

/// Downstream `cfg` body: the probe targets the collector's central configuration gives this
/// host (the region's, overridden and extended by its МО's). Retained and signed like `ack`.
/// An agent applies it only if `version` is higher than the one it last applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cfg {
    pub v: u32,
    /// Equal to the topic's `{mo}` and `{host}`: a configuration is addressed to one host.
    pub mo: String,
    pub host: String,
    /// Monotonic across changes of the collector's configuration (Unix milliseconds of the
    /// change, or one more than the previous version if the clock went back).
    pub version: u64,
    /// Collector wall-clock time when this message was made, Unix milliseconds.
    pub ts: i64,
    /// At most 64 ([`crate::Limits::max_targets`]), names unique.
    pub targets: Vec<CfgTarget>,
}
