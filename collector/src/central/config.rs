//! `[probes]`: the region's probe targets, and per МО the targets that override (same name),
//! add to or remove (`without`) the region's. Raw shape, then `validate()` into a [`ProbeSet`];
//! errors name the field (`probes.mo[2].target[0].url`).

use super::ProbeSet;
use crate::config_error::{ConfigError, invalid};
use dozor_proto::auth::SIGNED_PREFIX_LEN;
use dozor_proto::{Category, CfgTarget, MAX_PAYLOAD_BYTES, valid_id, valid_text};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most targets one agent is given (the protocol's `max_targets`).
pub(crate) const MAX_TARGETS: usize = 64;

/// `[probes]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProbes {
    /// How often the configuration file is checked for changes (SIGHUP checks at once).
    pub watch_secs: u64,
    /// Most `cfg` messages handed to the broker per second: pacing, so that a change to
    /// 20,000 agents is spread over ~10 s rather than hitting the broker at once.
    pub send_rate_per_sec: u32,
    /// `[[probes.target]]`: the region's targets, given to every agent.
    pub target: Vec<RawTarget>,
    /// `[[probes.mo]]`: one МО's changes to the region's list.
    pub mo: Vec<RawMoProbes>,
}

impl Default for RawProbes {
    fn default() -> Self {
        RawProbes {
            watch_secs: 5,
            send_rate_per_sec: 2000,
            target: Vec::new(),
            mo: Vec::new(),
        }
    }
}

/// One target, as an agent's local `[[probe]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

/// `[[probes.mo]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMoProbes {
    /// ФРМО OID of the МО.
    pub mo: String,
    /// Region targets this МО does not probe (by name).
    #[serde(default)]
    pub without: Vec<String>,
    /// Targets replacing the region's of the same name, or added to them.
    #[serde(default)]
    pub target: Vec<RawTarget>,
}

/// Validated `[probes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbesConfig {
    pub watch: Duration,
    pub send_rate_per_sec: u32,
    pub set: ProbeSet,
}

impl RawProbes {
    pub fn validate(self) -> Result<ProbesConfig, ConfigError> {
        if !(1..=3600).contains(&self.watch_secs) {
            return Err(invalid("probes.watch_secs", "must be 1..=3600"));
        }
        if !(1..=100_000).contains(&self.send_rate_per_sec) {
            return Err(invalid("probes.send_rate_per_sec", "must be 1..=100000"));
        }
        let region = targets(self.target, "probes.target")?;
        let mut mo = BTreeMap::new();
        for (i, m) in self.mo.into_iter().enumerate() {
            let at = format!("probes.mo[{i}]");
            if !valid_id(&m.mo) {
                return Err(invalid(
                    format!("{at}.mo"),
                    format!("{:?} is not a valid МО id (1..=64 of [A-Za-z0-9._-])", m.mo),
                ));
            }
            for (j, w) in m.without.iter().enumerate() {
                if !region.iter().any(|t| t.name == *w) {
                    return Err(invalid(
                        format!("{at}.without[{j}]"),
                        format!("{w:?} is not a target of probes.target"),
                    ));
                }
            }
            let own = targets(m.target, &format!("{at}.target"))?;
            let id = m.mo.clone();
            let entry = super::MoProbes {
                without: m.without,
                targets: own,
            };
            if mo.insert(id, entry).is_some() {
                return Err(invalid(
                    format!("{at}.mo"),
                    format!("{:?} is listed twice", m.mo),
                ));
            }
        }
        let set = ProbeSet { region, mo };
        // Every agent's list must fit the protocol: at most 64 targets in one signed message.
        for m in std::iter::once(None).chain(set.mo.keys().map(Some)) {
            let list = set.for_mo(m.map_or("", String::as_str));
            let field = m.map_or("probes.target".to_string(), |m| format!("probes.mo {m:?}"));
            if list.len() > MAX_TARGETS {
                return Err(invalid(
                    field,
                    format!(
                        "{} targets; an agent takes at most {MAX_TARGETS}",
                        list.len()
                    ),
                ));
            }
            let bytes = serde_json::to_vec(&list).map_or(0, |v| v.len());
            // Room for the envelope (ids, version, time) and the MAC.
            let room = MAX_PAYLOAD_BYTES - SIGNED_PREFIX_LEN - 512;
            if bytes > room {
                return Err(invalid(
                    field,
                    format!("the targets take {bytes} bytes; at most {room} fit one message"),
                ));
            }
        }
        Ok(ProbesConfig {
            watch: Duration::from_secs(self.watch_secs),
            send_rate_per_sec: self.send_rate_per_sec,
            set,
        })
    }
}

fn targets(raw: Vec<RawTarget>, at: &str) -> Result<Vec<CfgTarget>, ConfigError> {
    let mut out: Vec<CfgTarget> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let t = target(r).map_err(|(f, m)| invalid(format!("{at}[{i}].{f}"), m))?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(invalid(
                format!("{at}[{i}].name"),
                format!("duplicate target name {:?}", t.name),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

/// The agent's rules for a local `[[probe]]` (`agent/src/config`), so that nothing the
/// collector sends is refused there.
fn target(r: RawTarget) -> Result<CfgTarget, (&'static str, String)> {
    if !valid_id(&r.name) {
        return Err((
            "name",
            format!(
                "{:?} is not a valid name (1..=64 of [A-Za-z0-9._-])",
                r.name
            ),
        ));
    }
    let category = match r.category.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Category::parse(c).ok_or_else(|| {
            (
                "category",
                format!(
                    "unknown category {c:?}; one of {}",
                    Category::ALL.map(Category::as_str).join(", ")
                ),
            )
        })?,
        None => Category::parse(&r.name).unwrap_or(Category::Other),
    };
    if let Some(ms) = r.timeout_ms
        && !(1..=60_000).contains(&ms)
    {
        return Err(("timeout_ms", format!("{ms} is out of range 1..=60000")));
    }
    if r.url.is_empty() || !valid_text(&r.url, 256) {
        return Err((
            "url",
            "1..=256 bytes without control characters".to_string(),
        ));
    }
    let url = Url::parse(&r.url).map_err(|e| ("url", format!("{:?}: {e}", r.url)))?;
    let has_host = url.host_str().is_some_and(|h| !h.is_empty());
    match url.scheme() {
        "http" | "https" | "dns" if has_host => {}
        "tcp" if has_host && url.port().is_some() => {}
        "http" | "https" | "tcp" | "dns" => {
            return Err((
                "url",
                format!(
                    "{:?}: expected http(s)://HOST/…, tcp://HOST:PORT or dns://NAME",
                    r.url
                ),
            ));
        }
        other => {
            return Err((
                "url",
                format!("unsupported scheme {other:?}; use http, https, tcp or dns"),
            ));
        }
    }
    Ok(CfgTarget {
        name: r.name,
        category,
        url: r.url,
        timeout_ms: r.timeout_ms,
    })
}
