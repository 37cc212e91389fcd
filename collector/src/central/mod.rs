//! Central probe configuration: the region's targets (МИС, ИЭМК, ЛИС, ЦАМИ, …) defined once in
//! the collector's `[probes]`, overridden and extended per МО, delivered to every agent as a
//! retained `cfg` message on its own downstream topic, signed with the agent's key like `ack`
//! (unsigned only in open mode). Versions are monotonic so that an agent applies only newer.
//!
//! This module is the I/O-free part (the per-МО lists, versions, who still needs the current
//! version); `config` validates `[probes]`; `task` publishes, watches the file and counts.

pub(crate) mod config;
mod task;

pub(crate) use task::{CentralStats, Hosts, run};

use dozor_proto::auth::{self, MacKey};
use dozor_proto::{Cfg, CfgTarget, Kind, SCHEMA_VERSION, topic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// One МО's changes to the region's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoProbes {
    /// Region targets (by name) this МО does not probe.
    pub without: Vec<String>,
    /// Targets replacing the region's of the same name, or added after them.
    pub targets: Vec<CfgTarget>,
}

/// The validated targets: the region's and each МО's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProbeSet {
    pub region: Vec<CfgTarget>,
    pub mo: BTreeMap<String, MoProbes>,
}

impl ProbeSet {
    /// The targets of an agent of `mo`: the region's in order, minus the МО's `without`, each
    /// replaced by the МО's target of the same name; then the МО's other targets.
    pub fn for_mo(&self, mo: &str) -> Vec<CfgTarget> {
        let Some(m) = self.mo.get(mo) else {
            return self.region.clone();
        };
        let mut out: Vec<CfgTarget> = self
            .region
            .iter()
            .filter(|t| !m.without.contains(&t.name))
            .map(|t| m.targets.iter().find(|o| o.name == t.name).unwrap_or(t))
            .cloned()
            .collect();
        for t in &m.targets {
            if !out.iter().any(|o| o.name == t.name) {
                out.push(t.clone());
            }
        }
        out
    }

    /// SHA-256 (hex) of the whole set: a new version only when something changed.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }
}

/// The version of the configuration in force, kept in the data dir so that a restart does not
/// make every agent apply the same targets again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Versioned {
    pub(crate) version: u64,
    pub(crate) digest: String,
}

impl Versioned {
    /// The version for a set with `digest` at `now_ms`: the previous one when nothing changed,
    /// else the time of the change, or one more than the previous version if the clock is
    /// behind it (versions never go back, so agents never refuse a newer configuration).
    pub(crate) fn next(prev: Option<&Versioned>, digest: &str, now_ms: i64) -> Versioned {
        match prev {
            Some(p) if p.digest == digest => p.clone(),
            _ => {
                let floor = prev.map_or(1, |p| p.version.saturating_add(1));
                Versioned {
                    version: u64::try_from(now_ms).unwrap_or(0).max(floor),
                    digest: digest.to_string(),
                }
            }
        }
    }
}

/// The `cfg` message for one agent: its topic and payload, signed with its key when there is
/// one (enrolled mode).
pub(crate) fn message(
    mo: &str,
    host: &str,
    version: u64,
    now_ms: i64,
    targets: Vec<CfgTarget>,
    key: Option<&MacKey>,
) -> (String, Vec<u8>) {
    let t = topic(mo, host, Kind::Cfg);
    let cfg = Cfg {
        v: SCHEMA_VERSION,
        mo: mo.to_string(),
        host: host.to_string(),
        version,
        ts: now_ms,
        targets,
    };
    let json = serde_json::to_vec(&cfg).unwrap_or_default();
    let body = match key {
        Some(k) => auth::sign(k, &t, &json),
        None => json,
    };
    (t, body)
}

/// Maps keyed by ids from the wire (МО, host): foldhash, as `dozor_live`'s maps. [`Outbox::due`]
/// looks up every host of the snapshot until it finds a tick's budget of due ones, so while a
/// fleet's first versions go out it walks the hosts already handed one each tick; with SipHash
/// that was ~2 % of the tokio workers' samples in the ingest benchmark (docs/benchmarks.md).
type IdMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Which agents were handed which version: the rest are due.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    sent: IdMap<IdMap<u64>>,
    /// (version, hosts of `sent` handed that version): lets a caller whose hosts only ever
    /// grow skip the walk over all of them when no new one appeared ([`Outbox::sent_count`]).
    count: (u64, usize),
}

impl Outbox {
    /// Up to `max` of `hosts` not yet handed `version`.
    pub(crate) fn due<'a>(
        &self,
        hosts: impl Iterator<Item = (&'a str, &'a str)>,
        version: u64,
        max: usize,
    ) -> Vec<(String, String)> {
        hosts
            .filter(|(mo, host)| self.sent.get(*mo).and_then(|m| m.get(*host)) != Some(&version))
            .take(max)
            .map(|(mo, host)| (mo.to_string(), host.to_string()))
            .collect()
    }

    pub(crate) fn mark_sent(&mut self, mo: &str, host: &str, version: u64) {
        if self.count.0 != version {
            self.count = (version, self.recount(version));
        }
        let before = self
            .sent
            .entry(mo.to_string())
            .or_default()
            .insert(host.to_string(), version);
        if before != Some(version) {
            self.count.1 += 1;
        }
    }

    /// How many hosts were handed `version`. When every host a caller knows was among them and
    /// its hosts only ever grow (the live state's), nothing is due: the snapshot changes twice
    /// a second, and walking 10,000 hosts with two lookups each for nothing was ~5 % of the
    /// collector's CPU in the ingest benchmark (docs/benchmarks.md).
    pub(crate) fn sent_count(&self, version: u64) -> usize {
        if self.count.0 == version {
            self.count.1
        } else {
            self.recount(version)
        }
    }

    fn recount(&self, version: u64) -> usize {
        self.sent
            .values()
            .flat_map(|m| m.values())
            .filter(|v| **v == version)
            .count()
    }

    /// The broker may have lost its retained messages (restarted, or ours never reached it):
    /// everybody is due again.
    pub(crate) fn forget_all(&mut self) {
        self.sent.clear();
        self.count.1 = 0;
    }
}

#[cfg(test)]
mod tests;
