//! Agent identities: enrollment tokens bound to one МО, the identities issued with them, and
//! the decisions made on them (may this token enroll now, which host id does a new agent get,
//! may this MQTT login speak for that topic). This module is I/O-free; `db` keeps it in
//! `identity.db`, `service` shares it with the ingest task, the broker gateway and HTTP.
//! See docs/security.md.

pub mod db;
pub mod dynsec;
pub mod http;
pub mod service;

use dozor_proto::auth::{MacKey, Secret, sha256_hex};
use dozor_proto::{Kind, client_id, parse_username, topic, valid_id};
use std::collections::HashMap;

/// How the collector treats agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// Only enrolled agents are heard: MQTT logins are checked, every message must carry the
    /// MAC of the identity its topic names, acks are signed. The default.
    Enrolled,
    /// Anyone may publish anything (labs only; logged loudly at start).
    Open,
}

/// One enrolled agent as the collector knows it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub mo: String,
    pub host: String,
    /// Kept to provision external brokers (dynsec needs the MQTT password itself).
    pub secret: Secret,
    pub mac_key: MacKey,
    /// SHA-256 (hex) of the MQTT password derived from the agent's secret.
    pub password_sha256: String,
    pub revoked: bool,
}

impl Agent {
    /// An identity from its secret.
    pub fn new(mo: &str, host: &str, secret: &Secret) -> Agent {
        Agent {
            mo: mo.to_string(),
            host: host.to_string(),
            secret: secret.clone(),
            mac_key: secret.mac_key(),
            password_sha256: sha256_hex(secret.mqtt_password().as_bytes()),
            revoked: false,
        }
    }
}

/// Every identity, by (МО, host). Immutable once shared: changes build a new registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// МО → host → identity (nested so that lookups by `&str` never allocate).
    agents: HashMap<String, HashMap<String, Agent>>,
}

/// Why a message or a login is not accepted as coming from an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No identity was ever issued for this (МО, host).
    Unenrolled,
    /// The identity was revoked.
    Revoked,
}

impl Registry {
    pub fn insert(&mut self, a: Agent) {
        self.agents
            .entry(a.mo.clone())
            .or_default()
            .insert(a.host.clone(), a);
    }

    pub fn len(&self) -> usize {
        self.agents.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, mo: &str, host: &str) -> Option<&Agent> {
        self.agents.get(mo)?.get(host)
    }

    /// Every identity, in no particular order.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values().flat_map(HashMap::values)
    }

    /// The MAC key that messages on `{mo}/{host}` topics must carry.
    pub fn key_for(&self, mo: &str, host: &str) -> Result<&MacKey, Denied> {
        match self.get(mo, host) {
            None => Err(Denied::Unenrolled),
            Some(a) if a.revoked => Err(Denied::Revoked),
            Some(a) => Ok(&a.mac_key),
        }
    }

    /// Identities revoked in `self` but not in `before` (to disconnect them).
    pub fn newly_revoked<'a>(&'a self, before: &'a Registry) -> impl Iterator<Item = &'a Agent> {
        self.agents()
            .filter(move |a| a.revoked && before.get(&a.mo, &a.host).is_some_and(|b| !b.revoked))
    }

    /// Decides an MQTT login: the username names the identity, the password proves it, and
    /// the client id must be the identity's own (so nobody can take over another's session).
    pub fn login(
        &self,
        client: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Grant, LoginError> {
        let (mo, host) = username
            .and_then(parse_username)
            .ok_or(LoginError::BadCredentials)?;
        let agent = self.get(mo, host).ok_or(LoginError::BadCredentials)?;
        let given = sha256_hex(password.unwrap_or_default());
        if !constant_time_eq(given.as_bytes(), agent.password_sha256.as_bytes()) {
            return Err(LoginError::BadCredentials);
        }
        if agent.revoked {
            return Err(LoginError::Revoked);
        }
        if client != client_id(mo, host) {
            return Err(LoginError::WrongClientId);
        }
        Ok(Grant::for_agent(mo, host))
    }

    /// Whether an identity may still be connected.
    pub fn still_valid(&self, mo: &str, host: &str) -> bool {
        self.key_for(mo, host).is_ok()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an MQTT login is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown username or wrong password.
    BadCredentials,
    /// The identity was revoked.
    Revoked,
    /// The client id is not the identity's `dozor-{mo}-{host}`.
    WrongClientId,
}

/// What an agent's MQTT session may do: publish its own upstream kinds, subscribe to its own
/// downstream topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub mo: String,
    pub host: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Grant {
    pub fn for_agent(mo: &str, host: &str) -> Grant {
        Grant {
            mo: mo.to_string(),
            host: host.to_string(),
            publish: dozor_proto::UPSTREAM
                .into_iter()
                .map(|k| topic(mo, host, k))
                .collect(),
            subscribe: [Kind::Ack, Kind::Cfg]
                .into_iter()
                .map(|k| topic(mo, host, k))
                .collect(),
        }
    }
}

/// An enrollment token as stored (its secret part only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Public id, shown in lists and logs.
    pub id: String,
    pub mo: String,
    pub secret_sha256: String,
    pub max_uses: Option<u32>,
    pub used: u32,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// Why an enrollment is refused. The HTTP layer maps each to a code and a Russian message;
/// the agent learns only "token_invalid", never which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Unknown,
    Revoked,
    Expired,
    UsedUp,
}

impl TokenError {
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenError::Unknown => "unknown",
            TokenError::Revoked => "revoked",
            TokenError::Expired => "expired",
            TokenError::UsedUp => "used_up",
        }
    }
}

/// The text form of a token: `dz1.{id}.{secret}`.
pub fn format_token(id: &str, secret_hex: &str) -> String {
    format!("dz1.{id}.{secret_hex}")
}

/// Splits a token into (id, secret). `None` for anything not of the form.
pub fn parse_token(s: &str) -> Option<(&str, &str)> {
    let rest = s.trim().strip_prefix("dz1.")?;
    let (id, secret) = rest.split_once('.')?;
    (valid_id(id) && secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((id, secret))
}

impl Token {
    /// May this token enroll one more agent at `now_ms`, given the secret presented?
    pub fn check(&self, secret: &str, now_ms: i64) -> Result<(), TokenError> {
        if !constant_time_eq(
            sha256_hex(secret.as_bytes()).as_bytes(),
            self.secret_sha256.as_bytes(),
        ) {
            return Err(TokenError::Unknown);
        }
        if self.revoked {
            return Err(TokenError::Revoked);
        }
        if self.expires_ms.is_some_and(|e| now_ms >= e) {
            return Err(TokenError::Expired);
        }
        if self.max_uses.is_some_and(|m| self.used >= m) {
            return Err(TokenError::UsedUp);
        }
        Ok(())
    }
}

/// Chooses the host id of a new identity: the agent's hint (its machine-id-derived or
/// configured id) when free and valid, else the hint with a random suffix. Cloned disk images
/// share machine ids: each clone enrolls on its own and gets a distinct id.
pub fn allocate_host(hint: &str, mut taken: impl FnMut(&str) -> bool, random: &str) -> String {
    let base: String = hint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect::<String>()
        .trim_start_matches('.')
        .to_string();
    let base = if base.is_empty() {
        "host".to_string()
    } else {
        base
    };
    if !taken(&base) {
        return base;
    }
    let suffix: String = random.chars().take(8).collect();
    format!("{base}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            id: "t1".into(),
            mo: "1.2.3".into(),
            secret_sha256: sha256_hex(b"s3cret"),
            max_uses: Some(2),
            used: 0,
            expires_ms: Some(1_000),
            revoked: false,
        }
    }

    #[test]
    fn token_checks() {
        let t = token();
        assert_eq!(t.check("s3cret", 0), Ok(()));
        assert_eq!(t.check("other", 0), Err(TokenError::Unknown));
        assert_eq!(t.check("s3cret", 1_000), Err(TokenError::Expired));
        let used = Token {
            used: 2,
            ..t.clone()
        };
        assert_eq!(used.check("s3cret", 0), Err(TokenError::UsedUp));
        let revoked = Token { revoked: true, ..t };
        assert_eq!(revoked.check("s3cret", 0), Err(TokenError::Revoked));
    }

    #[test]
    fn token_text_form() {
        let s = "a".repeat(64);
        let t = format_token("k7", &s);
        assert_eq!(parse_token(&t), Some(("k7", s.as_str())));
        assert_eq!(parse_token("dz1.k7.short"), None);
        assert_eq!(parse_token("k7.aaaa"), None);
        assert_eq!(parse_token(&format!("dz1.k/7.{s}")), None);
    }

    #[test]
    fn clones_get_distinct_hosts() {
        let taken = |h: &str| h == "pc-1";
        assert_eq!(allocate_host("pc-2", taken, "abcdef123"), "pc-2");
        assert_eq!(allocate_host("pc-1", taken, "abcdef123"), "pc-1-abcdef12");
        assert_eq!(allocate_host("../../x y", |_| false, "r"), "xy");
        assert_eq!(allocate_host("", |_| false, "r"), "host");
        assert!(valid_id(&allocate_host(&"я".repeat(100), |_| false, "r")));
    }

    #[test]
    fn login_and_message_keys() {
        let s = Secret([3; 32]);
        let mut r = Registry::default();
        r.insert(Agent::new("mo1", "pc-1", &s));
        let pw = s.mqtt_password();
        let grant = r
            .login("dozor-mo1-pc-1", Some("mo1/pc-1"), Some(pw.as_bytes()))
            .unwrap();
        assert_eq!(grant.publish[2], "dozor/v1/mo1/pc-1/hb");
        assert_eq!(grant.subscribe[0], "dozor/v1/mo1/pc-1/ack");
        assert_eq!(
            r.login("dozor-mo1-pc-1", Some("mo1/pc-1"), Some(b"guess")),
            Err(LoginError::BadCredentials)
        );
        assert_eq!(
            r.login("dozor-mo1-pc-2", Some("mo1/pc-1"), Some(pw.as_bytes())),
            Err(LoginError::WrongClientId)
        );
        assert_eq!(r.login("x", None, None), Err(LoginError::BadCredentials));
        assert!(r.key_for("mo1", "pc-1").is_ok());
        assert_eq!(r.key_for("mo1", "pc-2").err(), Some(Denied::Unenrolled));
        let before = r.clone();
        let mut a = Agent::new("mo1", "pc-1", &s);
        a.revoked = true;
        r.insert(a);
        assert_eq!(r.key_for("mo1", "pc-1").err(), Some(Denied::Revoked));
        assert_eq!(r.newly_revoked(&before).count(), 1);
        assert_eq!(
            r.login("dozor-mo1-pc-1", Some("mo1/pc-1"), Some(pw.as_bytes())),
            Err(LoginError::Revoked)
        );
    }
}
