//! Agent configuration: a TOML file, `DOZOR_*` environment variables and command-line flags,
//! deserialized into a raw struct and then validated into typed values.
//!
//! Precedence, lowest first: built-in defaults, the file (`--config`), environment, flags.
//! Probes given with `--probe`/`DOZOR_PROBE` are added to the file's `[[probe]]` list.

use std::path::PathBuf;
use std::time::Duration;

use dozor_proto::{Category, MAX_ID_LEN, Role, valid_id};
use reqwest::Url;
use serde::Deserialize;

use crate::os;
use crate::tls::{self, TlsClient, TlsError};

mod cli;

use crate::probe::{Target, TargetKind};
pub use cli::{Cli, parse_probe_spec};

/// The commented example configuration shipped in `deploy/agent.toml`.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../deploy/agent.toml");

/// Most probe targets one agent accepts (the protocol's `max_targets`).
pub const MAX_PROBES: usize = 64;

/// Why the configuration is unusable. The agent exits with code 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{path}: cannot read configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML, or has an unknown or mistyped key (the message names it).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is missing or out of range; `field` names it as in the file (`mqtt.url`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The configuration as written, before validation. Every field has an explicit default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub mo: Option<String>,
    pub host_id: Option<String>,
    pub role: String,
    pub site: String,
    pub data_dir: Option<PathBuf>,
    pub interval_secs: u32,
    pub probe_interval_secs: Option<u32>,
    pub probe_timeout_ms: u32,
    pub probe_ca_file: Option<PathBuf>,
    pub mqtt: RawMqtt,
    pub enroll: RawEnroll,
    pub tls: RawTls,
    pub spool: RawSpool,
    pub probe: Vec<RawProbe>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            mo: None,
            host_id: None,
            role: "workstation".into(),
            site: String::new(),
            data_dir: None,
            interval_secs: 30,
            probe_interval_secs: None,
            probe_timeout_ms: 5000,
            probe_ca_file: None,
            mqtt: RawMqtt::default(),
            enroll: RawEnroll::default(),
            tls: RawTls::default(),
            spool: RawSpool::default(),
            probe: Vec::new(),
        }
    }
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keepalive_secs: u32,
}

impl Default for RawMqtt {
    fn default() -> Self {
        RawMqtt {
            url: None,
            username: None,
            password: None,
            keepalive_secs: 30,
        }
    }
}

/// `[enroll]`. The token is a secret: it is never logged, echoed or shown by `Debug`.
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEnroll {
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub url: Option<String>,
    pub allow_plain_http: bool,
}

impl std::fmt::Debug for RawEnroll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEnroll")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("token_file", &self.token_file)
            .field("url", &self.url)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

/// `[tls]`: trust for `mqtts://` and the enrollment endpoint.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub ca_file: Option<PathBuf>,
    pub pin_sha256: Option<String>,
}

/// `[spool]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpool {
    pub max_bytes: u64,
    pub max_age_days: u32,
    pub resend_after_secs: u32,
    pub replay_rate_per_sec: u32,
    pub flush_after_secs: u32,
    pub synchronous: String,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool {
            max_bytes: 64 * 1024 * 1024,
            max_age_days: 14,
            resend_after_secs: 60,
            replay_rate_per_sec: 5,
            flush_after_secs: 10,
            synchronous: "full".into(),
        }
    }
}

/// One `[[probe]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub name: String,
    #[serde(default)]
    pub category: Option<String>,
    pub url: String,
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The МО as configured. `None` only when an enrollment token is set: the collector then
    /// assigns it. An identity file always overrides it.
    pub mo: Option<String>,
    /// The host id as configured or derived; the enrollment `host_hint`. An identity file
    /// overrides it.
    pub host_id: String,
    /// Whether `host_id` was set explicitly (rather than derived from the machine).
    pub host_id_configured: bool,
    pub role: Role,
    pub site: String,
    pub data_dir: PathBuf,
    /// Heartbeat interval in whole seconds (announced in `birth` and `hb`).
    pub interval_secs: u32,
    pub probe_interval: Duration,
    pub probe_ca_file: Option<PathBuf>,
    /// Default per-target timeout (`probe_timeout_ms`), also for central targets without one.
    pub probe_timeout_ms: u32,
    /// The local `[[probe]]` targets: probed with the central ones, and win over a central
    /// target of the same name (see `central`).
    pub probes: Vec<Target>,
    pub mqtt: MqttConfig,
    pub enroll: EnrollConfig,
    /// The TLS client, built when `mqtts://` or HTTPS enrollment needs it (or `tls.ca_file` is
    /// set).
    pub tls: Option<TlsClient>,
    pub spool: SpoolConfig,
}

impl Config {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval_secs))
    }
}

/// Validated `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keepalive_secs: u32,
    /// `mqtts://`: TLS to the broker, verified with [`Config::tls`].
    pub tls: bool,
}

/// An enrollment token; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token itself, for the enrollment request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Validated `[enroll]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollConfig {
    pub token: Option<Token>,
    /// Base URL of the collector's enrollment API (`{url}/api/v1/enroll`).
    pub url: Url,
    pub allow_plain_http: bool,
}

/// How hard the spool pushes each write to the disk (SQLite `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL on every commit: a committed message survives power loss.
    Full,
    /// fsync only at checkpoints: survives a killed process, may lose the last commits on
    /// power loss.
    Normal,
}

/// Validated `[spool]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    pub max_bytes: u64,
    pub max_age: Duration,
    pub resend_after: Duration,
    pub replay_rate_per_sec: u32,
    /// While the link is up, a message not confirmed within this is written to the file;
    /// zero writes every message at once.
    pub flush_after: Duration,
    pub synchronous: Synchronous,
}

/// Turns an arbitrary string into a protocol id (`[A-Za-z0-9._-]{1,64}`, no leading dot):
/// Cyrillic transliterated (host names like `ПК-РЕГ-01` are common), lower-cased, any other
/// character replaced by `-`. `None` if nothing alphanumeric is left.
pub fn sanitize_id(raw: &str) -> Option<String> {
    let mut mapped = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        let lower = c.to_lowercase().next().unwrap_or(c);
        if lower.is_ascii_alphanumeric() || matches!(lower, '.' | '_' | '-') {
            mapped.push(lower);
        } else if let Some(latin) = translit(lower) {
            mapped.push_str(latin);
        } else {
            mapped.push('-');
        }
    }
    let trimmed = mapped.trim_start_matches('.');
    let id: String = trimmed.chars().take(MAX_ID_LEN).collect();
    (valid_id(&id) && id.chars().any(|c| c.is_ascii_alphanumeric())).then_some(id)
}

/// Russian letters in the passport (ICAO) transliteration, lower case.
fn translit(c: char) -> Option<&'static str> {
    const TABLE: [&str; 32] = [
        "a", "b", "v", "g", "d", "e", "zh", "z", "i", "i", "k", "l", "m", "n", "o", "p", "r", "s",
        "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "ie", "y", "", "e", "iu", "ia",
    ];
    match c {
        'а'..='я' => TABLE.get((c as usize) - ('а' as usize)).copied(),
        'ё' => Some("e"),
        _ => None,
    }
}

impl RawConfig {
    /// Parses a TOML document; the error message names the offending key.
    pub fn from_toml(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks every value and converts it to its typed form.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mqtt = validate_mqtt(self.mqtt)?;
        let enroll = validate_enroll(self.enroll, &mqtt)?;
        let mo = match self.mo.filter(|m| !m.is_empty()) {
            None if enroll.token.is_none() => {
                return Err(invalid(
                    "mo",
                    "required (ФРМО OID of the МО, --mo) unless an enrollment token is set",
                ));
            }
            None => None,
            Some(mo) if !valid_id(&mo) => {
                return Err(invalid(
                    "mo",
                    format!("{mo:?} is not a valid id (1..=64 of [A-Za-z0-9._-])"),
                ));
            }
            Some(mo) => Some(mo),
        };
        let host_id_configured = self.host_id.as_ref().is_some_and(|h| !h.is_empty());
        let host_id = match self.host_id.filter(|h| !h.is_empty()) {
            Some(h) if valid_id(&h) => h,
            Some(h) => {
                return Err(invalid(
                    "host_id",
                    format!("{h:?} is not a valid id (1..=64 of [A-Za-z0-9._-])"),
                ));
            }
            None => os::machine_id()
                .as_deref()
                .and_then(sanitize_id)
                .or_else(|| os::hostname().as_deref().and_then(sanitize_id))
                .ok_or_else(|| {
                    invalid(
                        "host_id",
                        "not set and neither a machine id nor a host name is available",
                    )
                })?,
        };
        let role = match self.role.as_str() {
            "workstation" => Role::Workstation,
            "server" => Role::Server,
            other => {
                return Err(invalid(
                    "role",
                    format!("expected \"workstation\" or \"server\", got {other:?}"),
                ));
            }
        };
        if self.site.len() > 256 || self.site.chars().any(char::is_control) {
            return Err(invalid(
                "site",
                "at most 256 bytes without control characters",
            ));
        }
        let interval_secs = check_range("interval_secs", self.interval_secs, 1, 86_400)?;
        let probe_interval_secs = check_range(
            "probe_interval_secs",
            self.probe_interval_secs.unwrap_or(interval_secs),
            1,
            86_400,
        )?;
        let default_timeout = check_range("probe_timeout_ms", self.probe_timeout_ms, 1, 60_000)?;
        if let Some(p) = &self.probe_ca_file
            && !p.is_file()
        {
            return Err(invalid(
                "probe_ca_file",
                format!("{} is not a readable file", p.display()),
            ));
        }

        let tls_needed = mqtt.tls || (enroll.token.is_some() && enroll.url.scheme() == "https");
        let tls = validate_tls(self.tls, tls_needed)?;
        let spool = validate_spool(self.spool)?;

        if self.probe.len() > MAX_PROBES {
            return Err(invalid(
                "probe",
                format!("at most {MAX_PROBES} targets, got {}", self.probe.len()),
            ));
        }
        let mut probes: Vec<Target> = Vec::with_capacity(self.probe.len());
        for (i, p) in self.probe.into_iter().enumerate() {
            let t = validate_probe(p, default_timeout).map_err(|(f, r)| {
                invalid(
                    format!(
                        "probe[{i}]{}",
                        f.map(|f| format!(".{f}")).unwrap_or_default()
                    ),
                    r,
                )
            })?;
            if probes.iter().any(|q| q.name == t.name) {
                return Err(invalid(
                    format!("probe[{i}].name"),
                    format!("duplicate target name {:?}", t.name),
                ));
            }
            probes.push(t);
        }

        Ok(Config {
            mo,
            host_id,
            host_id_configured,
            role,
            site: self.site,
            data_dir: self.data_dir.unwrap_or_else(os::default_data_dir),
            interval_secs,
            probe_interval: Duration::from_secs(u64::from(probe_interval_secs)),
            probe_ca_file: self.probe_ca_file,
            probe_timeout_ms: default_timeout,
            probes,
            mqtt,
            enroll,
            tls,
            spool,
        })
    }
}

fn check_range(field: &str, v: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    if v < min || v > max {
        return Err(invalid(field, format!("{v} is out of range {min}..={max}")));
    }
    Ok(v)
}

fn validate_mqtt(m: RawMqtt) -> Result<MqttConfig, ConfigError> {
    let Some(url) = m.url else {
        return Err(invalid(
            "mqtt.url",
            "required (mqtt://HOST:PORT, --mqtt-url)",
        ));
    };
    let parsed = Url::parse(&url).map_err(|e| invalid("mqtt.url", format!("{url:?}: {e}")))?;
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" => true,
        other => {
            return Err(invalid(
                "mqtt.url",
                format!("scheme must be mqtt:// or mqtts:// (got {other:?})"),
            ));
        }
    };
    let host = url_host(&parsed).ok_or_else(|| invalid("mqtt.url", "no host"))?;
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(invalid(
            "mqtt.url",
            "must be mqtt[s]://HOST[:PORT] with no path",
        ));
    }
    let username = m
        .username
        .or_else(|| (!parsed.username().is_empty()).then(|| parsed.username().to_owned()));
    let password = m.password.or_else(|| parsed.password().map(str::to_owned));
    let keepalive_secs = check_range("mqtt.keepalive_secs", m.keepalive_secs, 1, 3600)?;
    Ok(MqttConfig {
        host,
        port: parsed.port().unwrap_or(if tls { 8883 } else { 1883 }),
        username,
        password,
        keepalive_secs,
        tls,
    })
}

/// Longest enrollment token accepted (tokens are 256-bit values in hex or base64).
const MAX_TOKEN_LEN: usize = 512;

fn check_token(field: &str, t: &str) -> Result<Token, ConfigError> {
    // The reasons never quote the token.
    if t.len() > MAX_TOKEN_LEN {
        return Err(invalid(field, format!("longer than {MAX_TOKEN_LEN} bytes")));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(field, "contains whitespace or control characters"));
    }
    Ok(Token(t.to_owned()))
}

fn validate_enroll(e: RawEnroll, mqtt: &MqttConfig) -> Result<EnrollConfig, ConfigError> {
    let token = match (e.token.filter(|t| !t.is_empty()), e.token_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "enroll.token_file",
                "set either enroll.token or enroll.token_file, not both",
            ));
        }
        (Some(t), None) => Some(check_token("enroll.token", &t)?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(
                    "enroll.token_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let t = text.trim();
            if t.is_empty() {
                return Err(invalid(
                    "enroll.token_file",
                    format!("{} is empty", path.display()),
                ));
            }
            Some(check_token("enroll.token_file", t)?)
        }
        (None, None) => None,
    };
    let url = match e.url {
        Some(u) => Url::parse(&u).map_err(|err| invalid("enroll.url", format!("{u:?}: {err}")))?,
        None => {
            let host = if mqtt.host.contains(':') {
                format!("[{}]", mqtt.host)
            } else {
                mqtt.host.clone()
            };
            Url::parse(&format!("https://{host}:8443"))
                .map_err(|err| invalid("enroll.url", format!("default from mqtt.url: {err}")))?
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if e.allow_plain_http || token.is_none() => {}
        "http" => {
            return Err(invalid(
                "enroll.url",
                "must be https:// (the token and the issued secret travel in it); set \
                 enroll.allow_plain_http = true only in a lab",
            ));
        }
        other => {
            return Err(invalid(
                "enroll.url",
                format!("scheme must be https:// (got {other:?})"),
            ));
        }
    }
    if url_host(&url).is_none() || url.query().is_some() {
        return Err(invalid(
            "enroll.url",
            "must be https://HOST[:PORT][/PREFIX]",
        ));
    }
    Ok(EnrollConfig {
        token,
        url,
        allow_plain_http: e.allow_plain_http,
    })
}

/// Builds the TLS client when something needs it or a CA file is given; errors name the
/// field to fix.
fn validate_tls(t: RawTls, needed: bool) -> Result<Option<TlsClient>, ConfigError> {
    let pin = match t.pin_sha256.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Some(tls::parse_pin(p).ok_or_else(|| {
            invalid(
                "tls.pin_sha256",
                "expected the SHA-256 of the server certificate: 64 hex digits (colons allowed)",
            )
        })?),
        None => None,
    };
    let ca_err = |e: TlsError| invalid("tls.ca_file", e.to_string());
    let roots = match &t.ca_file {
        Some(path) => tls::read_ca_file(path).map_err(ca_err)?,
        None if needed => tls::system_roots().map_err(ca_err)?,
        None => return Ok(None),
    };
    let client = tls::client_config(&roots, pin).map_err(ca_err)?;
    Ok(Some(TlsClient(client)))
}

fn validate_spool(s: RawSpool) -> Result<SpoolConfig, ConfigError> {
    // At least one message of the largest size the protocol allows.
    let min = dozor_proto::MAX_PAYLOAD_BYTES as u64;
    if s.max_bytes < min {
        return Err(invalid(
            "spool.max_bytes",
            format!("{} is below the minimum of {min}", s.max_bytes),
        ));
    }
    let max_age_days = check_range("spool.max_age_days", s.max_age_days, 1, 366)?;
    let resend = check_range("spool.resend_after_secs", s.resend_after_secs, 1, 86_400)?;
    let rate = check_range("spool.replay_rate_per_sec", s.replay_rate_per_sec, 1, 1000)?;
    let flush_after = check_range("spool.flush_after_secs", s.flush_after_secs, 0, 300)?;
    let synchronous = match s.synchronous.as_str() {
        "full" => Synchronous::Full,
        "normal" => Synchronous::Normal,
        other => {
            return Err(invalid(
                "spool.synchronous",
                format!("expected \"full\" or \"normal\", got {other:?}"),
            ));
        }
    };
    Ok(SpoolConfig {
        max_bytes: s.max_bytes,
        max_age: Duration::from_secs(u64::from(max_age_days) * 86_400),
        resend_after: Duration::from_secs(u64::from(resend)),
        replay_rate_per_sec: rate,
        flush_after: Duration::from_secs(u64::from(flush_after)),
        synchronous,
    })
}

/// Host of a URL without IPv6 brackets.
fn url_host(u: &Url) -> Option<String> {
    match u.host()? {
        url::Host::Domain(d) if !d.is_empty() => Some(d.to_owned()),
        url::Host::Domain(_) => None,
        url::Host::Ipv4(a) => Some(a.to_string()),
        url::Host::Ipv6(a) => Some(a.to_string()),
    }
}

/// Validates one probe; the error carries the sub-field (`url`, `name`, …) and the reason.
/// Central targets (`central`) go through it too.
pub fn validate_probe(
    p: RawProbe,
    default_timeout_ms: u32,
) -> Result<Target, (Option<&'static str>, String)> {
    if !valid_id(&p.name) {
        return Err((
            Some("name"),
            format!(
                "{:?} is not a valid name (1..=64 of [A-Za-z0-9._-])",
                p.name
            ),
        ));
    }
    let category = match p.category.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Category::parse(c).ok_or_else(|| {
            (
                Some("category"),
                format!(
                    "unknown category {c:?}; one of {}",
                    Category::ALL.map(Category::as_str).join(", ")
                ),
            )
        })?,
        None => Category::parse(&p.name).unwrap_or(Category::Other),
    };
    let timeout_ms = p.timeout_ms.unwrap_or(default_timeout_ms);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err((
            Some("timeout_ms"),
            format!("{timeout_ms} is out of range 1..=60000"),
        ));
    }
    let url = Url::parse(&p.url).map_err(|e| (Some("url"), format!("{:?}: {e}", p.url)))?;
    let host = url_host(&url);
    let kind = match url.scheme() {
        "http" | "https" => {
            if host.is_none() {
                return Err((Some("url"), format!("{:?}: no host", p.url)));
            }
            TargetKind::Http(url)
        }
        "tcp" => {
            let (Some(host), Some(port)) = (host, url.port()) else {
                return Err((
                    Some("url"),
                    format!("{:?}: expected tcp://HOST:PORT", p.url),
                ));
            };
            TargetKind::Tcp { host, port }
        }
        "dns" => {
            let Some(name) = host else {
                return Err((Some("url"), format!("{:?}: expected dns://NAME", p.url)));
            };
            TargetKind::Dns { name }
        }
        other => {
            return Err((
                Some("url"),
                format!("unsupported scheme {other:?}; use http, https, tcp or dns"),
            ));
        }
    };
    Ok(Target {
        name: p.name,
        category,
        kind,
        timeout: Duration::from_millis(u64::from(timeout_ms)),
    })
}

#[cfg(test)]
mod tests;
