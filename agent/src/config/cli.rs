//! Command-line flags (each also a `DOZOR_*` environment variable) and how they override the
//! configuration file.

use std::path::PathBuf;

use clap::Parser;

use super::{Config, ConfigError, RawConfig, RawProbe, invalid};

/// Command-line flags; each also reads a `DOZOR_*` environment variable.
#[derive(Debug, Default, Parser)]
#[command(
    name = "dozor-agent",
    version,
    about = "dozor agent: reports uptime, resources and МИС reachability of a clinic host over MQTT"
)]
pub struct Cli {
    /// TOML configuration file (see --print-default-config).
    #[arg(long, env = "DOZOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Broker address, mqtt://HOST:PORT (port defaults to 1883).
    #[arg(long, env = "DOZOR_MQTT_URL", value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Broker user name.
    #[arg(long, env = "DOZOR_MQTT_USERNAME", value_name = "NAME")]
    pub mqtt_username: Option<String>,
    /// Broker password.
    #[arg(
        long,
        env = "DOZOR_MQTT_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub mqtt_password: Option<String>,
    /// One-time enrollment token issued by the region's administrators (never logged).
    #[arg(
        long,
        env = "DOZOR_ENROLL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub enroll_token: Option<String>,
    /// File holding the enrollment token (instead of --enroll-token).
    #[arg(long, env = "DOZOR_ENROLL_TOKEN_FILE", value_name = "FILE")]
    pub enroll_token_file: Option<PathBuf>,
    /// Enrollment endpoint base URL; default https://{MQTT host}:8443.
    #[arg(long, env = "DOZOR_ENROLL_URL", value_name = "URL")]
    pub enroll_url: Option<String>,
    /// Allow enrollment over plain http:// (labs only).
    #[arg(
        long,
        env = "DOZOR_ENROLL_ALLOW_PLAIN_HTTP",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub enroll_allow_plain_http: Option<bool>,
    /// PEM file with the CA certificates trusted for mqtts:// and enrollment (replaces the
    /// system store).
    #[arg(long, env = "DOZOR_TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// SHA-256 (hex) of the server's certificate; checked in addition to the CA chain.
    #[arg(long, env = "DOZOR_TLS_PIN_SHA256", value_name = "HEX")]
    pub tls_pin_sha256: Option<String>,
    /// MQTT keep-alive, seconds.
    #[arg(long, env = "DOZOR_KEEPALIVE_SECS", value_name = "N")]
    pub keepalive_secs: Option<u32>,
    /// ФРМО OID of the medical organization.
    #[arg(long, env = "DOZOR_MO", value_name = "OID")]
    pub mo: Option<String>,
    /// Host id; derived from the machine id when not set.
    #[arg(long, env = "DOZOR_HOST_ID", value_name = "ID")]
    pub host_id: Option<String>,
    /// workstation or server.
    #[arg(long, env = "DOZOR_ROLE", value_name = "ROLE")]
    pub role: Option<String>,
    /// Site (подразделение) of the МО this host belongs to.
    #[arg(long, env = "DOZOR_SITE", value_name = "NAME")]
    pub site: Option<String>,
    /// Directory for the spool database.
    #[arg(long, env = "DOZOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Heartbeat interval, seconds.
    #[arg(long, env = "DOZOR_INTERVAL_SECS", value_name = "N")]
    pub interval_secs: Option<u32>,
    /// Probe round interval, seconds (defaults to the heartbeat interval).
    #[arg(long, env = "DOZOR_PROBE_INTERVAL_SECS", value_name = "N")]
    pub probe_interval_secs: Option<u32>,
    /// Default per-target probe timeout, milliseconds.
    #[arg(long, env = "DOZOR_PROBE_TIMEOUT_MS", value_name = "MS")]
    pub probe_timeout_ms: Option<u32>,
    /// PEM file with extra CA certificates for HTTPS probes (regional CAs).
    #[arg(long, env = "DOZOR_PROBE_CA_FILE", value_name = "FILE")]
    pub probe_ca_file: Option<PathBuf>,
    /// Probe target NAME=URL or NAME:CATEGORY=URL; URL is http(s)://…, tcp://HOST:PORT or
    /// dns://NAME. Repeatable; comma-separated in DOZOR_PROBE.
    #[arg(
        long = "probe",
        env = "DOZOR_PROBE",
        value_name = "NAME=URL",
        value_delimiter = ','
    )]
    pub probes: Vec<String>,
    /// Spool size bound, bytes.
    #[arg(long, env = "DOZOR_SPOOL_MAX_BYTES", value_name = "BYTES")]
    pub spool_max_bytes: Option<u64>,
    /// Spool age bound, days.
    #[arg(long, env = "DOZOR_SPOOL_MAX_AGE_DAYS", value_name = "DAYS")]
    pub spool_max_age_days: Option<u32>,
    /// Re-send an unconfirmed message after this many seconds.
    #[arg(long, env = "DOZOR_SPOOL_RESEND_AFTER_SECS", value_name = "N")]
    pub spool_resend_after_secs: Option<u32>,
    /// Backlog replay rate, messages per second.
    #[arg(long, env = "DOZOR_SPOOL_REPLAY_RATE_PER_SEC", value_name = "N")]
    pub spool_replay_rate_per_sec: Option<u32>,
    /// Seconds an unconfirmed message may stay in memory only while the link is up (0: write
    /// every message at once).
    #[arg(long, env = "DOZOR_SPOOL_FLUSH_AFTER_SECS", value_name = "N")]
    pub spool_flush_after_secs: Option<u32>,
    /// SQLite synchronous mode of the spool: full or normal.
    #[arg(long, env = "DOZOR_SPOOL_SYNCHRONOUS", value_name = "MODE")]
    pub spool_synchronous: Option<String>,
}

impl Cli {
    /// Loads the file named by `--config` (or the defaults) and applies environment and flags.
    pub fn to_raw(&self) -> Result<RawConfig, ConfigError> {
        let mut raw = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                RawConfig::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.clone(),
                    message,
                })?
            }
            None => RawConfig::default(),
        };
        self.apply(&mut raw)?;
        Ok(raw)
    }

    /// Overrides `raw` with whatever was given on the command line or in the environment.
    fn apply(&self, raw: &mut RawConfig) -> Result<(), ConfigError> {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        fn set_opt<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        set_opt(&mut raw.mo, &self.mo);
        set_opt(&mut raw.host_id, &self.host_id);
        set(&mut raw.role, &self.role);
        set(&mut raw.site, &self.site);
        set_opt(&mut raw.data_dir, &self.data_dir);
        set(&mut raw.interval_secs, &self.interval_secs);
        set_opt(&mut raw.probe_interval_secs, &self.probe_interval_secs);
        set(&mut raw.probe_timeout_ms, &self.probe_timeout_ms);
        set_opt(&mut raw.probe_ca_file, &self.probe_ca_file);
        set_opt(&mut raw.mqtt.url, &self.mqtt_url);
        set_opt(&mut raw.mqtt.username, &self.mqtt_username);
        set_opt(&mut raw.mqtt.password, &self.mqtt_password);
        set(&mut raw.mqtt.keepalive_secs, &self.keepalive_secs);
        // A token or token file given here replaces both of the file's (giving both here is
        // the same error as in the file).
        if self.enroll_token.is_some() || self.enroll_token_file.is_some() {
            raw.enroll.token.clone_from(&self.enroll_token);
            raw.enroll.token_file.clone_from(&self.enroll_token_file);
        }
        set_opt(&mut raw.enroll.url, &self.enroll_url);
        set(
            &mut raw.enroll.allow_plain_http,
            &self.enroll_allow_plain_http,
        );
        set_opt(&mut raw.tls.ca_file, &self.tls_ca_file);
        set_opt(&mut raw.tls.pin_sha256, &self.tls_pin_sha256);
        set(&mut raw.spool.max_bytes, &self.spool_max_bytes);
        set(&mut raw.spool.max_age_days, &self.spool_max_age_days);
        set(
            &mut raw.spool.resend_after_secs,
            &self.spool_resend_after_secs,
        );
        set(
            &mut raw.spool.replay_rate_per_sec,
            &self.spool_replay_rate_per_sec,
        );
        set(
            &mut raw.spool.flush_after_secs,
            &self.spool_flush_after_secs,
        );
        set(&mut raw.spool.synchronous, &self.spool_synchronous);
        for (i, spec) in self.probes.iter().enumerate() {
            let spec = spec.trim();
            if spec.is_empty() {
                continue;
            }
            raw.probe
                .push(parse_probe_spec(spec).map_err(|r| invalid(format!("--probe[{i}]"), r))?);
        }
        Ok(())
    }

    /// The whole pipeline: file, environment, flags, validation.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.to_raw()?.validate()
    }
}

/// Parses `NAME=URL` or `NAME:CATEGORY=URL`.
pub fn parse_probe_spec(spec: &str) -> Result<RawProbe, String> {
    let Some((left, url)) = spec.split_once('=') else {
        return Err(format!(
            "expected NAME=URL or NAME:CATEGORY=URL, got {spec:?}"
        ));
    };
    let (name, category) = match left.split_once(':') {
        Some((n, c)) => (n, Some(c.trim().to_owned())),
        None => (left, None),
    };
    Ok(RawProbe {
        name: name.trim().to_owned(),
        category,
        url: url.trim().to_owned(),
        timeout_ms: None,
    })
}
