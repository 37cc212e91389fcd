//! Collector configuration: a raw TOML shape, overridden from `DOZOR_*` environment variables
//! ([`env`]), then validated into typed values before any socket is bound. Errors name the field.
//!
//! Every raw struct has the same shape (like `agent/src/config/`): container-level
//! `#[serde(deny_unknown_fields, default)]` and one `impl Default`, which is the only place a
//! default is written. Precedence, lowest first: defaults, the file, the environment, flags.

use crate::config_error::invalid;
pub use crate::config_error::{ConfigError, secret};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod env;

/// The commented example configuration, also printed by `--print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../deploy/collector.toml");

/// The raw configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Where the SQLite store and state live.
    pub data_dir: PathBuf,
    pub mqtt: RawMqtt,
    pub http: RawHttp,
    pub roster: RawRoster,
    pub limits: RawLimits,
    pub store: crate::store::config::RawStore,
    pub alerts: crate::alerts::config::RawAlerts,
    pub security: RawSecurity,
    pub probes: crate::central::config::RawProbes,
    /// `[[planned_works]]`: announced maintenance windows (docs/indicators.md, "Planned
    /// works"). Not settable from the environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned_works: Vec<crate::availability::planned::RawPlannedWork>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            data_dir: PathBuf::from("./dozor-data"),
            mqtt: RawMqtt::default(),
            http: RawHttp::default(),
            roster: RawRoster::default(),
            limits: RawLimits::default(),
            store: crate::store::config::RawStore::default(),
            alerts: crate::alerts::config::RawAlerts::default(),
            security: RawSecurity::default(),
            probes: crate::central::config::RawProbes::default(),
            planned_works: Vec::new(),
        }
    }
}

/// `[security]`: who may speak to the collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSecurity {
    /// `enrolled` (default): only agents enrolled with an МО's token are heard, every message
    /// signed. `open`: anyone may publish anything — for labs only, logged loudly.
    pub mode: String,
}

impl Default for RawSecurity {
    fn default() -> Self {
        RawSecurity {
            mode: "enrolled".into(),
        }
    }
}

/// `[mqtt]`: the embedded broker (default) or an external one.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    /// `embedded` (rumqttd in-process) or `external` (Mosquitto, EMQX, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Embedded broker listen address.
    pub listen: String,
    /// External broker URL, `mqtt://host:port`.
    pub url: Option<String>,
    pub client_id: String,
    pub keepalive_secs: u64,
    /// How often confirmations of stored data are sent to each active agent.
    pub ack_interval_ms: u64,
    /// A host confirmed less than this ago is confirmed again only once it has passed: one
    /// confirmation per this interval for a host sending many messages a second (replays,
    /// switch-on bursts), one per message for a host sending once per interval.
    pub ack_host_gap_ms: u64,
    /// Bulk writes to the broker (see `MqttConfig::batched_writes`).
    pub batched_writes: bool,
    /// Publishes read from the broker and waiting for the pipeline, at most (see
    /// `MqttConfig::ingest_queue`): at or above the broker's window (`max_inflight_messages`).
    pub ingest_queue: usize,
    /// The same queue's bound in MiB (payloads, topics and decoded messages, estimated).
    pub ingest_queue_mib: usize,
    /// Read replayed messages on a second MQTT session with a queue of its own, behind live
    /// ones (see `MqttConfig::replay_session`).
    pub replay_session: bool,
    /// Embedded broker: serve MQTT over TLS with this certificate chain and key (PEM).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Embedded broker: most client connections at once (authenticated or not).
    pub max_connections: usize,
    /// Embedded broker: most KiB of messages it holds for the collector; while more are owed,
    /// the gateway stops reading agents' sockets (backpressure instead of drops, see
    /// `ingest::broker`).
    pub backlog_kib: u64,
    /// External broker: CA to verify an `mqtts://` broker's certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// External broker: the collector's login.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The password in a file (wins over `password`).
    pub password_file: Option<PathBuf>,
    /// External broker: provision enrolled agents into Mosquitto's dynamic-security plugin
    /// (the collector's login must be a dynsec admin). See docs/security.md.
    pub dynsec: bool,
}

impl Default for RawMqtt {
    fn default() -> Self {
        RawMqtt {
            kind: "embedded".into(),
            listen: "0.0.0.0:1883".into(),
            url: None,
            client_id: "dozor-collector".into(),
            keepalive_secs: 30,
            ack_interval_ms: 1000,
            ack_host_gap_ms: 5000,
            batched_writes: true,
            ingest_queue: 32_768,
            ingest_queue_mib: 64,
            replay_session: true,
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: 20_000,
            backlog_kib: 16 * 1024,
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            dynsec: false,
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
    /// Serve HTTPS with this certificate chain and key (PEM); agents enroll over it.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Time a client has to send a request head; also how long an idle keep-alive connection
    /// stays open.
    pub header_read_timeout_secs: u64,
    /// HTTP connections open at once; more are closed at accept (counted on `/metrics`).
    pub max_connections: usize,
    /// Longest time from a request's head to its response (a slow body, a slow report): 408.
    pub request_timeout_secs: u64,
    /// Reading (GET/HEAD of the page, the API, `/metrics`) without login.
    pub public_read: bool,
    /// Host names the API answers to (`Host` header, port ignored); empty: the listen address,
    /// `localhost` and `127.0.0.1`.
    pub allowed_hosts: Vec<String>,
    /// The web UI's address as people open it (`https://dozor.miac.local`): alert messages
    /// link to `{public_url}/incidents/{id}`. Unset: no links.
    pub public_url: Option<String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        let limits = crate::http_server::HttpLimits::default();
        RawHttp {
            listen: "127.0.0.1:8080".into(),
            tls_cert_file: None,
            tls_key_file: None,
            header_read_timeout_secs: limits.header_read_timeout.as_secs(),
            max_connections: limits.max_connections,
            request_timeout_secs: limits.request_timeout.as_secs(),
            public_read: false,
            allowed_hosts: Vec::new(),
            public_url: None,
        }
    }
}

/// `[roster]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoster {
    /// TOML, CSV (UTF-8 or CP1251) or a workbook (docs/roster.md); without it the roster kept
    /// in the data dir is used, and without that every МО is "not in the roster".
    pub path: Option<PathBuf>,
    /// Reject messages of МО missing from the roster instead of flagging them.
    pub strict: bool,
}

/// `[limits]`: protection against hostile or broken agents.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_hosts: usize,
    pub max_hosts_per_mo: usize,
    /// Messages per host per minute above which the excess is dropped (`flood`).
    pub max_msgs_per_host_per_min: u32,
    /// Live messages whose agent clock differs from ours by more than this are still accepted
    /// (clocks drift) but flagged; timestamps more than `max_future_secs` ahead after correction
    /// or older than `max_age_days` are rejected.
    pub max_future_secs: u64,
    pub max_age_days: u64,
    /// Heartbeat intervals missed before a host is `lost`.
    pub lost_after_intervals: u32,
}

impl Default for RawLimits {
    /// The live state's own defaults (`StateConfig::default`, in `dozor-live`); the time limits
    /// are written here once and the pipeline's defaults read them.
    fn default() -> Self {
        let state = crate::state::StateConfig::default();
        RawLimits {
            max_hosts: state.max_hosts,
            max_hosts_per_mo: state.max_hosts_per_mo,
            max_msgs_per_host_per_min: state.max_msgs_per_min,
            max_future_secs: 300,
            max_age_days: 30,
            lost_after_intervals: state.lost_after_intervals,
        }
    }
}

/// Where the collector gets its MQTT messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttMode {
    /// Run rumqttd in-process behind the gateway listening on this address (TLS when `tls`).
    Embedded {
        listen: SocketAddr,
        tls: Option<crate::tls::ServerFiles>,
        max_connections: usize,
        /// Bytes of messages the broker holds for the collector before publishers wait.
        backlog_bytes: u64,
    },
    /// Connect to an external broker.
    External { host: String, port: u16 },
}

/// Largest packet read from the broker. Payloads between the protocol's 16 KiB and this are
/// read and rejected as `oversized`; a bigger one makes rumqttc fail the connection, and the
/// broker would redeliver it to our persistent session forever: `ingest::run` then reconnects
/// once with a clean session to discard it (counted as `unreadable_packet`). Bounded memory
/// either way.
pub const MAX_PACKET: usize = 1024 * 1024;

impl MqttConfig {
    /// What every collector connection to the broker has: its credentials, TLS, keep-alive and
    /// packet size bound ([`MAX_PACKET`]).
    pub fn connection_options(
        &self,
        client_id: String,
        host: &str,
        port: u16,
    ) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, host, port);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        o.set_keep_alive(self.keepalive)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o
    }
}

/// Validated MQTT settings.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub mode: MqttMode,
    pub client_id: String,
    pub keepalive: Duration,
    pub ack_interval: Duration,
    /// See `RawMqtt::ack_host_gap_ms`.
    pub ack_host_gap: Duration,
    /// The collector's own login (external broker; the embedded one gets a random one).
    pub credentials: Option<(String, String)>,
    /// TLS towards the broker (`mqtts://`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Provision identities into Mosquitto's dynamic-security plugin.
    pub dynsec: bool,
    /// PUBACKs and confirmations written in bulk by the ingest task (`ingest::Outbox`), and the
    /// embedded broker subscribed at QoS 0; false: each through rumqttc's request queue and
    /// QoS 1 everywhere (the behaviour before issue 15, kept to compare).
    pub batched_writes: bool,
    /// Publishes waiting between the ingest task and the pipeline, at most. The ingest task
    /// keeps reading the broker (and so its PINGRESP) while they wait; with an external broker
    /// the broker's window of unacknowledged deliveries bounds them, so at or above that window
    /// the task never stops reading (`ingest::queue`, docs/reliability.md).
    pub ingest_queue: usize,
    /// The same queue's bound in bytes (estimated per message, `ingest::queue_cost`).
    pub ingest_queue_bytes: usize,
    /// Replayed messages (the `…-replay` topics: backlog re-sent from agents' spools) are read
    /// on a second MQTT session (client id `{client_id}-replay`) into a queue of their own,
    /// bounded like the live one, and the pipeline takes them only when no live message waits;
    /// the embedded broker's gateway gives them a backlog window of their own. False (or
    /// `batched_writes = false`, whose PUBACKs follow one connection): one session reads both,
    /// and a replay delivered faster than the store keeps up delays live heartbeats behind it
    /// (docs/reliability.md).
    pub replay_session: bool,
}

/// Validated limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_hosts: usize,
    pub max_hosts_per_mo: usize,
    pub max_msgs_per_host_per_min: u32,
    pub max_future: Duration,
    pub max_age: Duration,
    pub lost_after_intervals: u32,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub mqtt: MqttConfig,
    pub http_listen: SocketAddr,
    pub roster_path: Option<PathBuf>,
    pub roster_strict: bool,
    pub limits: Limits,
    pub store: crate::store::config::StoreConfig,
    pub alerts: crate::alerts::config::AlertsConfig,
    pub security: crate::identity::SecurityMode,
    /// HTTPS on the HTTP listener.
    pub http_tls: Option<crate::tls::ServerFiles>,
    /// Timeouts and the connection cap of the HTTP listener.
    pub http_limits: crate::http_server::HttpLimits,
    /// Reading without login (`http.public_read`).
    pub http_public_read: bool,
    /// The web UI's public base URL (`http.public_url`), without trailing `/`.
    pub http_public_url: Option<String>,
    /// Host names the API answers to, lower case (`http.allowed_hosts` or its default).
    pub http_allowed_hosts: Vec<String>,
    /// Run the in-process simulated region (`--demo`).
    pub demo: bool,
    /// The central probe configuration (`[probes]`).
    pub probes: crate::central::config::ProbesConfig,
    /// The file the configuration came from (`--config`), watched for `[probes]` changes.
    pub config_path: Option<PathBuf>,
    /// `[[planned_works]]` with their ids (`config-N`); also in `store.planned_works`.
    pub(crate) planned_works: Vec<crate::store::planned::Entry>,
}

/// `http.public_url`: an http(s) URL without trailing `/`, query or fragment (it is printed into
/// messages, so no spaces or control characters either).
fn public_url(given: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(u) = given.map(|u| u.trim_end_matches('/')) else {
        return Ok(None);
    };
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && r.chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '?' | '#' | '"' | '<' | '>'))
    }) && u.len() <= 512;
    if ok {
        Ok(Some(u.to_string()))
    } else {
        Err(invalid(
            "http.public_url",
            format!("{u:?} is not an http(s) URL without query or fragment"),
        ))
    }
}

/// `http.allowed_hosts`, lower case; empty: the listen address, `localhost`, `127.0.0.1`.
fn allowed_hosts(given: &[String], listen: &SocketAddr) -> Result<Vec<String>, ConfigError> {
    if given.is_empty() {
        let mut v = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !listen.ip().is_unspecified() {
            v.push(listen.ip().to_string());
        }
        return Ok(v);
    }
    given
        .iter()
        .map(|h| {
            let ok = h.parse::<std::net::IpAddr>().is_ok()
                || (!h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')));
            if ok {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(invalid(
                    "http.allowed_hosts",
                    format!("{h:?} is not a host name or address (no port)"),
                ))
            }
        })
        .collect()
}

/// Both files or neither.
fn server_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    cert_field: &'static str,
    key_field: &'static str,
) -> Result<Option<crate::tls::ServerFiles>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let files = crate::tls::ServerFiles { cert, key };
            // Load now so that a bad file is a config error naming the field.
            crate::tls::server_config(&files).map_err(|e| invalid(cert_field, e.to_string()))?;
            Ok(Some(files))
        }
        (Some(_), None) => Err(invalid(key_field, format!("required with {cert_field}"))),
        (None, Some(_)) => Err(invalid(cert_field, format!("required with {key_field}"))),
    }
}

impl RawConfig {
    /// Parses TOML text (no environment).
    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Parses TOML text with `DOZOR_*` overrides from `vars` (see [`env`]).
    pub fn from_toml_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        // The file alone first, so that its errors point at a line.
        let from_file = RawConfig::from_toml(text)?;
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if !env::apply(&mut doc, vars)? {
            return Ok(from_file);
        }
        RawConfig::deserialize(doc)
            .map_err(|e| ConfigError::Parse(format!("with the DOZOR_* variables: {e}")))
    }

    /// Reads and parses a file (no environment).
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        RawConfig::from_toml(&read(path)?)
    }

    /// Reads the file if any (defaults otherwise), then applies the `DOZOR_*` variables of
    /// `vars`: what the binary runs with.
    pub fn load_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let text = match path {
            Some(p) => read(p)?,
            None => String::new(),
        };
        RawConfig::from_toml_env(&text, vars)
    }

    /// Checks every field and converts to typed values.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let planned = self
            .planned_works
            .iter()
            .enumerate()
            .map(|(i, w)| w.validate(i).map_err(|e| invalid(e.field, e.message)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tls = None;
        let mut credentials = None;
        let mode = match self.mqtt.kind.as_str() {
            "embedded" => {
                if self.mqtt.max_connections == 0 {
                    return Err(invalid("mqtt.max_connections", "must be > 0"));
                }
                if !(64..=1024 * 1024).contains(&self.mqtt.backlog_kib) {
                    return Err(invalid("mqtt.backlog_kib", "must be 64..=1048576"));
                }
                MqttMode::Embedded {
                    listen: self.mqtt.listen.parse().map_err(|e| {
                        invalid(
                            "mqtt.listen",
                            format!("{:?} is not host:port ({e})", self.mqtt.listen),
                        )
                    })?,
                    tls: server_files(
                        self.mqtt.tls_cert_file.clone(),
                        self.mqtt.tls_key_file.clone(),
                        "mqtt.tls_cert_file",
                        "mqtt.tls_key_file",
                    )?,
                    max_connections: self.mqtt.max_connections,
                    backlog_bytes: self.mqtt.backlog_kib * 1024,
                }
            }
            "external" => {
                let url =
                    self.mqtt.url.as_deref().ok_or_else(|| {
                        invalid("mqtt.url", "required when mqtt.type = \"external\"")
                    })?;
                let u = parse_broker_url(url).map_err(|m| invalid("mqtt.url", m))?;
                if u.tls {
                    let ca = self.mqtt.ca_file.as_deref().ok_or_else(|| {
                        invalid("mqtt.ca_file", "required for an mqtts:// broker")
                    })?;
                    tls = Some(
                        crate::tls::client_config(ca)
                            .map_err(|e| invalid("mqtt.ca_file", e.to_string()))?,
                    );
                }
                let user = self.mqtt.username.clone().or(u.username);
                let password = secret(
                    self.mqtt.password.as_deref(),
                    self.mqtt.password_file.as_deref(),
                    "mqtt.password_file",
                )?
                .or(u.password);
                credentials = match (user, password) {
                    (Some(u), p) => Some((u, p.unwrap_or_default())),
                    (None, Some(_)) => {
                        return Err(invalid("mqtt.username", "required with a password"));
                    }
                    (None, None) => None,
                };
                if self.mqtt.dynsec && credentials.is_none() {
                    return Err(invalid("mqtt.username", "required with mqtt.dynsec = true"));
                }
                MqttMode::External {
                    host: u.host,
                    port: u.port,
                }
            }
            other => {
                return Err(invalid(
                    "mqtt.type",
                    format!("{other:?} is not \"embedded\" or \"external\""),
                ));
            }
        };
        if self.mqtt.client_id.is_empty() || self.mqtt.client_id.len() > 64 {
            return Err(invalid("mqtt.client_id", "must be 1..=64 characters"));
        }
        if !(5..=3600).contains(&self.mqtt.keepalive_secs) {
            return Err(invalid("mqtt.keepalive_secs", "must be 5..=3600"));
        }
        if !(50..=60_000).contains(&self.mqtt.ack_interval_ms) {
            return Err(invalid("mqtt.ack_interval_ms", "must be 50..=60000"));
        }
        if self.mqtt.ack_host_gap_ms > 60_000 {
            return Err(invalid(
                "mqtt.ack_host_gap_ms",
                "must be 0..=60000 (and below the agents' spool.flush_after_secs)",
            ));
        }
        if !(1_000..=1_000_000).contains(&self.mqtt.ingest_queue) {
            return Err(invalid(
                "mqtt.ingest_queue",
                "must be 1000..=1000000 (at least the broker's max_inflight_messages)",
            ));
        }
        if !(4..=4096).contains(&self.mqtt.ingest_queue_mib) {
            return Err(invalid("mqtt.ingest_queue_mib", "must be 4..=4096"));
        }
        let security = match self.security.mode.as_str() {
            "enrolled" => crate::identity::SecurityMode::Enrolled,
            "open" => crate::identity::SecurityMode::Open,
            other => {
                return Err(invalid(
                    "security.mode",
                    format!("{other:?} is not \"enrolled\" or \"open\""),
                ));
            }
        };
        let http_tls = server_files(
            self.http.tls_cert_file.clone(),
            self.http.tls_key_file.clone(),
            "http.tls_cert_file",
            "http.tls_key_file",
        )?;
        let http_listen = self.http.listen.parse().map_err(|e| {
            invalid(
                "http.listen",
                format!("{:?} is not host:port ({e})", self.http.listen),
            )
        })?;
        if !(1..=300).contains(&self.http.header_read_timeout_secs) {
            return Err(invalid("http.header_read_timeout_secs", "must be 1..=300"));
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(invalid("http.max_connections", "must be 1..=1000000"));
        }
        if !(1..=3600).contains(&self.http.request_timeout_secs) {
            return Err(invalid("http.request_timeout_secs", "must be 1..=3600"));
        }
        let http_limits = crate::http_server::HttpLimits {
            header_read_timeout: Duration::from_secs(self.http.header_read_timeout_secs),
            max_connections: self.http.max_connections,
            request_timeout: Duration::from_secs(self.http.request_timeout_secs),
        };
        let http_allowed_hosts = allowed_hosts(&self.http.allowed_hosts, &http_listen)?;
        let http_public_url = public_url(self.http.public_url.as_deref())?;
        let mut alerts = crate::alerts::config::validate(self.alerts)?;
        alerts.public_url.clone_from(&http_public_url);
        let l = &self.limits;
        if l.max_hosts == 0 {
            return Err(invalid("limits.max_hosts", "must be > 0"));
        }
        if l.max_hosts_per_mo == 0 {
            return Err(invalid("limits.max_hosts_per_mo", "must be > 0"));
        }
        if l.max_msgs_per_host_per_min == 0 {
            return Err(invalid("limits.max_msgs_per_host_per_min", "must be > 0"));
        }
        if l.max_age_days == 0 || l.max_age_days > 3650 {
            return Err(invalid("limits.max_age_days", "must be 1..=3650"));
        }
        if l.lost_after_intervals == 0 {
            return Err(invalid("limits.lost_after_intervals", "must be > 0"));
        }
        let limits = Limits {
            max_hosts: l.max_hosts,
            max_hosts_per_mo: l.max_hosts_per_mo,
            max_msgs_per_host_per_min: l.max_msgs_per_host_per_min,
            max_future: Duration::from_secs(l.max_future_secs),
            max_age: Duration::from_secs(l.max_age_days * 86_400),
            lost_after_intervals: l.lost_after_intervals,
        };
        Ok(Config {
            data_dir: self.data_dir,
            mqtt: MqttConfig {
                mode,
                client_id: self.mqtt.client_id,
                keepalive: Duration::from_secs(self.mqtt.keepalive_secs),
                ack_interval: Duration::from_millis(self.mqtt.ack_interval_ms),
                ack_host_gap: Duration::from_millis(self.mqtt.ack_host_gap_ms),
                credentials,
                tls,
                dynsec: self.mqtt.dynsec,
                batched_writes: self.mqtt.batched_writes,
                ingest_queue: self.mqtt.ingest_queue,
                ingest_queue_bytes: self.mqtt.ingest_queue_mib << 20,
                replay_session: self.mqtt.replay_session && self.mqtt.batched_writes,
            },
            http_listen,
            roster_path: self.roster.path,
            roster_strict: self.roster.strict,
            limits,
            store: {
                let mut st = self.store.validate()?;
                st.planned_works = planned.clone();
                st
            },
            planned_works: crate::store::planned::config_entries(&self.planned_works, &planned),
            alerts,
            security,
            http_tls,
            http_limits,
            http_public_read: self.http.public_read,
            http_allowed_hosts,
            http_public_url,
            demo: false,
            probes: self.probes.validate()?,
            config_path: None,
        })
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Parses `mqtt://[user[:password]@]host[:port]` or `mqtts://…` (ports default to 1883 and
/// 8883). Credentials are split off, never kept in the host (nor logged).
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (rest, tls) = if let Some(r) = url
        .strip_prefix("mqtts://")
        .or_else(|| url.strip_prefix("ssl://"))
    {
        (r, true)
    } else if let Some(r) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (r, false)
    } else {
        return Err("must start with mqtt:// or mqtts://".into());
    };
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a.to_string()), Some(b.to_string())),
            None => (Some(u.to_string()), None),
        },
    };
    let (host, port) = split_host_port(hostport, if tls { 8883 } else { 1883 })?;
    Ok(BrokerUrl {
        host,
        port,
        tls,
        username,
        password,
    })
}

/// Parses `mqtt://host[:port]` (port defaults to 1883).
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let u = parse_broker_url(url)?;
    Ok((u.host, u.port))
}

fn split_host_port(rest: &str, default_port: u16) -> Result<(String, u16), String> {
    let url = rest;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        ),
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?}: missing host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses_and_validates() {
        let c = RawConfig::from_toml(DEFAULT_CONFIG)
            .unwrap()
            .validate()
            .unwrap();
        assert!(matches!(c.mqtt.mode, MqttMode::Embedded { .. }));
    }

    #[test]
    fn the_example_states_the_defaults() {
        // Every value deploy/collector.toml writes out is the default: the example cannot drift.
        assert_eq!(
            RawConfig::from_toml(DEFAULT_CONFIG).unwrap(),
            RawConfig::default()
        );
    }

    /// The example's commented `[[planned_works]]`, uncommented, validate; a bad entry is
    /// refused naming its index and field.
    #[test]
    fn planned_works_validate_naming_the_entry() {
        let start = DEFAULT_CONFIG.find("# [[planned_works]]").unwrap();
        let example: String = DEFAULT_CONFIG[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let raw = RawConfig::from_toml(&example).unwrap();
        assert_eq!(raw.planned_works.len(), 2);
        let c = raw.validate().unwrap();
        assert_eq!(c.store.planned_works.len(), 2);
        let ids: Vec<&str> = c.planned_works.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["config-1", "config-2"]);
        let bad = format!(
            "{example}\n[[planned_works]]\ntitle = \"x\"\ndays = [\"sun\"]\nstart = \"02:00\"\nend = \"03:00\"\ntz = \"Mars/Olympus\"\n"
        );
        let e = RawConfig::from_toml(&bad).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("planned_works[2].tz"), "{e}");
        let e = RawConfig::from_toml("[[planned_works]]\ntitle = \"x\"\nsite = \"a\"\nfrom = \"2026-01-01T00:00:00Z\"\nto = \"2026-01-02T00:00:00Z\"\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("planned_works[0].mo"), "{e}");
        // Unknown keys are refused at parse time.
        assert!(RawConfig::from_toml("[[planned_works]]\ntitle = \"x\"\nwhen = 1\n").is_err());
    }

    #[test]
    fn the_mqtt_password_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let external = "[mqtt]\ntype = \"external\"\nurl = \"mqtt://u@127.0.0.1\"\n";
        let vars = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let creds = |raw: RawConfig| raw.validate().unwrap().mqtt.credentials.unwrap();
        let raw = RawConfig::from_toml_env(
            external,
            vars("DOZOR_MQTT_PASSWORD_FILE", &f.display().to_string()),
        )
        .unwrap();
        assert_eq!(creds(raw), ("u".into(), "from-file".into()));
        let raw =
            RawConfig::from_toml_env(external, vars("DOZOR_MQTT_PASSWORD", "from-env")).unwrap();
        assert_eq!(creds(raw), ("u".into(), "from-env".into()));
    }

    #[test]
    fn empty_config_uses_defaults() {
        let c = RawConfig::from_toml("").unwrap().validate().unwrap();
        assert_eq!(c.http_listen.port(), 8080);
        assert_eq!(c.limits.max_hosts, 200_000);
    }

    #[test]
    fn public_url_links_alerts_to_the_web_ui() {
        let c = RawConfig::default().validate().unwrap();
        assert_eq!(c.http_public_url, None);
        assert_eq!(c.alerts.public_url, None);
        let c = RawConfig::from_toml("[http]\npublic_url = \"https://dozor.miac.local/\"")
            .and_then(RawConfig::validate)
            .unwrap();
        assert_eq!(
            c.http_public_url.as_deref(),
            Some("https://dozor.miac.local")
        );
        assert_eq!(c.alerts.public_url, c.http_public_url);
        let env = vec![(
            "DOZOR_HTTP_PUBLIC_URL".to_string(),
            "http://10.0.0.5:8080/dozor".to_string(),
        )];
        let c = RawConfig::from_toml_env("", env)
            .and_then(RawConfig::validate)
            .unwrap();
        assert_eq!(
            c.http_public_url.as_deref(),
            Some("http://10.0.0.5:8080/dozor")
        );
        for bad in [
            "dozor.miac.local",
            "ftp://x",
            "https://",
            "https://a b",
            "https://x/?q=1",
        ] {
            let e = RawConfig::from_toml(&format!("[http]\npublic_url = {bad:?}"))
                .and_then(RawConfig::validate)
                .unwrap_err();
            assert!(e.to_string().contains("http.public_url"), "{bad}: {e}");
        }
    }

    #[test]
    fn allowed_hosts_default_to_the_listen_address_and_localhost() {
        let c = RawConfig::from_toml("[http]\nlisten = \"10.1.2.3:8080\"")
            .and_then(RawConfig::validate)
            .unwrap();
        assert_eq!(c.http_allowed_hosts, ["localhost", "127.0.0.1", "10.1.2.3"]);
        assert!(!c.http_public_read);
        let c = RawConfig::from_toml("[http]\nallowed_hosts = [\"Dozor.Region.Local\"]")
            .and_then(RawConfig::validate)
            .unwrap();
        assert_eq!(c.http_allowed_hosts, ["dozor.region.local"]);
    }

    #[test]
    fn errors_name_the_field() {
        let check = |text: &str, field: &str| {
            let e = RawConfig::from_toml(text)
                .and_then(RawConfig::validate)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{e:?} should name {field}");
        };
        check("[mqtt]\ntype = \"carrier-pigeon\"", "mqtt.type");
        check("[mqtt]\ntype = \"external\"", "mqtt.url");
        check(
            "[mqtt]\ntype = \"external\"\nurl = \"http://x\"",
            "mqtt.url",
        );
        check("[mqtt]\nlisten = \"nope\"", "mqtt.listen");
        check("[mqtt]\ningest_queue = 100", "mqtt.ingest_queue");
        check("[mqtt]\nack_host_gap_ms = 600000", "mqtt.ack_host_gap_ms");
        check("[mqtt]\ningest_queue_mib = 0", "mqtt.ingest_queue_mib");
        check("[http]\nlisten = \"1.2.3.4\"", "http.listen");
        check(
            "[http]\nheader_read_timeout_secs = 0",
            "http.header_read_timeout_secs",
        );
        check("[http]\nmax_connections = 0", "http.max_connections");
        check("[mqtt]\nbacklog_kib = 10", "mqtt.backlog_kib");
        check(
            "[http]\nrequest_timeout_secs = 0",
            "http.request_timeout_secs",
        );
        check(
            "[http]\nallowed_hosts = [\"evil.example:80\"]",
            "http.allowed_hosts",
        );
        check("[limits]\nmax_hosts = 0", "limits.max_hosts");
        check("[limits]\nmax_hostz = 1", "max_hostz");
        check("data_dir = 5", "data_dir");
        // With the environment layer too, a file's error points at its line.
        let e = RawConfig::from_toml_env("[limits]\nmax_hostz = 1", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("max_hostz"), "{e}");
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://localhost:1884"),
            Ok(("localhost".into(), 1884))
        );
        assert_eq!(
            parse_mqtt_url("mqtt://10.0.0.1"),
            Ok(("10.0.0.1".into(), 1883))
        );
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1883"),
            Ok(("::1".into(), 1883))
        );
        assert!(parse_mqtt_url("mqtt://:1").is_err());
        assert!(parse_mqtt_url("mqtt://h:x").is_err());
    }
}
