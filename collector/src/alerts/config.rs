//! `[alerts]` configuration: the engine's options live in `dozor_alerts_core::config` (its
//! [`RawAlerts`] carries the channels opaquely); this module owns the notification channels —
//! a [`RawChannel`] is the delivery settings every kind shares and its kind's own fields, chosen
//! by `type` — and validates the whole table into [`AlertsConfig`], mapping the engine's
//! [`FieldError`] to the collector's [`ConfigError`].

use crate::config_error::{ConfigError, invalid, secret};
pub(crate) use dozor_alerts_core::config::{
    AlertsConfig as EngineConfig, FieldError, MAX_SILENCE_TEXT, matcher_problem, parse_time,
};
use dozor_alerts_core::model::Severity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Raw `[alerts]` table: the engine's options and the raw channels.
pub(crate) type RawAlerts = dozor_alerts_core::config::RawAlerts<RawChannel>;

impl From<FieldError> for ConfigError {
    fn from(e: FieldError) -> ConfigError {
        invalid(e.field, e.message)
    }
}

/// Validated `[alerts]`: what the engine reads and where notifications go.
#[derive(Debug, Clone, Default)]
pub struct AlertsConfig {
    pub engine: EngineConfig,
    pub channels: Vec<ChannelConfig>,
    /// Base URL of the web UI for links in messages: `http.public_url` (set by
    /// `config::RawConfig::validate`); no link without it.
    pub public_url: Option<String>,
}

/// Checks every field of `[alerts]` and converts to typed values.
pub(crate) fn validate(raw: RawAlerts) -> Result<AlertsConfig, ConfigError> {
    let (engine, raw_channels) = raw.validate()?;
    let mut channels = Vec::with_capacity(raw_channels.len());
    for (i, c) in raw_channels.into_iter().enumerate() {
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
        engine,
        channels,
        public_url: None,
    })
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
        validate(w.alerts).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_have_no_channels() {
        let c = parse("").unwrap();
        assert!(c.engine.enabled);
        assert!(c.channels.is_empty());
    }

    #[test]
    fn shipped_example_states_the_defaults() {
        let raw = crate::config::RawConfig::from_toml(crate::config::DEFAULT_CONFIG).unwrap();
        let shipped = validate(raw.alerts).unwrap();
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
        assert_eq!(c.engine.flap_window_ms, 10_000);
        assert_eq!(c.engine.mo_unreachable.rule.for_ms, 2000);
        assert_eq!(c.engine.silences[0].id, "config-1");
        assert_eq!(c.engine.silences[0].matcher.mo.as_deref(), Some("1.2.3"));
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
        // The engine's own checks (dozor-alerts-core) come through as this crate's errors.
        check("[alerts]\ntime_zone = \"Mars/Base\"", "alerts.time_zone");
        check("[alerts]\nbogus = 1", "bogus");
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
        let end = text[start..]
            .find("\n# Planned works")
            .map_or(text.len(), |e| start + e);
        let examples: String = text[start..end]
            .lines()
            .filter(|l| l.starts_with("# ") && !l.starts_with("# Notification"))
            .filter(|l| !l.starts_with("# max_retries"))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let c = parse(&examples).unwrap();
        assert_eq!(c.engine.silences.len(), 1);
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
