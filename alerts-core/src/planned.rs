//! Planned works as silences: a work in force silences the incidents of what it covers, so
//! an announced reboot or МИС update raises no alert (docs/alerts.md, "Planned works").
//! Recomputed from the works and the live snapshot at every evaluation; the engine keeps
//! them apart from the silences made by hand.

use crate::model::{Rule, Silence, SilenceMatch};
use dozor_availability::planned::{PlannedWork, Scope};
use dozor_live::state::Snapshot;
use std::collections::BTreeSet;

/// A planned work with the id the API lists it by (`config-N`, `p-N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub id: String,
    pub work: PlannedWork,
}

/// Prefix of the id of a silence made from a planned work (`planned-p-3`); the UI and the
/// texts recognise it.
pub const SILENCE_PREFIX: &str = "planned-";

/// How far ahead windows become silences (each starts only at its own start).
const AHEAD_MS: i64 = 3_600_000;

/// Rules about one host: what a host-scoped work silences. An МО-wide incident (every host of
/// the МО silent, a channel) is not hidden by one host's works.
const HOST_RULES: [Rule; 3] = [Rule::ServerLost, Rule::HostTarget, Rule::DiskFull];

/// The silences of `works` for windows in force at `now` or starting within the hour, each
/// from its window's start to its end. Scopes map to matchers: the region to every rule; an
/// МО to the МО; a site to the hosts the snapshot places there; a host to that host's own
/// rules; a target category to the targets of that category the snapshot knows.
pub fn silences(works: &[Planned], now: i64, snap: &Snapshot) -> Vec<Silence> {
    let mut out = Vec::new();
    for p in works {
        let windows = p.work.windows(now, now.saturating_add(AHEAD_MS));
        if windows.is_empty() {
            continue;
        }
        let matchers = matchers(&p.work.scope, snap);
        for (s, e) in windows {
            for m in &matchers {
                out.push(Silence {
                    id: format!("{SILENCE_PREFIX}{}", p.id),
                    matcher: m.clone(),
                    starts_ms: s,
                    ends_ms: e,
                    comment: format!("Плановые работы: {}", p.work.title),
                    created_by: String::new(),
                    created_ms: 0,
                });
            }
        }
    }
    out
}

fn matchers(scope: &Scope, snap: &Snapshot) -> Vec<SilenceMatch> {
    let host = |mo: &str, host: &str, rule: Rule| SilenceMatch {
        mo: Some(mo.to_string()),
        host: Some(host.to_string()),
        rule: Some(rule),
        target: None,
    };
    match scope {
        Scope::Region => Rule::ALL
            .iter()
            .map(|&r| SilenceMatch {
                rule: Some(r),
                ..SilenceMatch::default()
            })
            .collect(),
        Scope::Mo(mo) => vec![SilenceMatch {
            mo: Some(mo.clone()),
            ..SilenceMatch::default()
        }],
        Scope::Host { mo, host: h } => HOST_RULES.iter().map(|&r| host(mo, h, r)).collect(),
        Scope::Site { mo, site } => {
            let site = site.trim().to_lowercase();
            snap.hosts
                .iter()
                .filter(|h| &h.mo == mo && h.site.trim().to_lowercase() == site)
                .flat_map(|h| HOST_RULES.iter().map(|&r| host(mo, &h.host_id, r)))
                .collect()
        }
        Scope::Target(cat) => {
            let names: BTreeSet<&str> = snap
                .hosts
                .iter()
                .flat_map(|h| h.probes.iter())
                .filter(|p| p.category == *cat)
                .map(|p| p.target.as_str())
                .collect();
            names
                .into_iter()
                .map(|t| SilenceMatch {
                    target: Some(t.to_string()),
                    ..SilenceMatch::default()
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests;
