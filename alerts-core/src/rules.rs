//! Detection: one pass over the live snapshot turns hosts into *conditions* (what is wrong
//! now, keyed like incidents). The lifecycle in `engine.rs` turns conditions into incidents.
//!
//! O(hosts + probes): hosts are visited once, grouped by МО; per-МО work uses small maps.

use crate::config::AlertsConfig;
use crate::model::{Cause, HostRef, MoRef, Rule};
use dozor_availability::roster::{DEFAULT_TZ, Roster, WorkHours};
use dozor_live::state::{Host, Snapshot};
use dozor_proto::{Category, ConnState, Role};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Something wrong now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cond {
    pub key: String,
    pub rule: Rule,
    /// When the condition began (as far as the snapshot tells), Unix ms.
    pub started_ms: i64,
    pub mos: Vec<MoRef>,
    pub mo_count: usize,
    pub hosts: Vec<String>,
    pub host_count: usize,
    /// Names and sites of `hosts`, same order (filled at the end of the МО's pass).
    pub host_refs: Vec<HostRef>,
    pub target: Option<String>,
    pub category: Option<Category>,
    pub value: Option<f64>,
    pub cause: Cause,
    /// Key of the condition that absorbs this one (a central outage, an unreachable МО).
    pub absorbed_by: Option<String>,
    /// "МО unreachable": the hosts of the burst, all of them (the incident keeps the set).
    pub affected: Vec<String>,
}

impl Cond {
    fn new(key: String, rule: Rule, started_ms: i64, cause: Cause) -> Cond {
        Cond {
            key,
            rule,
            started_ms,
            mos: Vec::new(),
            mo_count: 0,
            hosts: Vec::new(),
            host_count: 0,
            host_refs: Vec::new(),
            target: None,
            category: None,
            value: None,
            cause,
            absorbed_by: None,
            affected: Vec::new(),
        }
    }

    fn one_mo(mut self, mo: &MoRef) -> Cond {
        self.mos = vec![mo.clone()];
        self.mo_count = 1;
        self
    }

    fn one_host(mut self, host: &str) -> Cond {
        self.hosts = vec![host.to_string()];
        self.host_count = 1;
        self
    }
}

pub(crate) fn key(parts: &[&str]) -> String {
    parts.join("/")
}

/// What the detector needs to know about an open "МО unreachable" incident.
pub(crate) struct OpenUnreachable<'a> {
    pub key: &'a str,
    pub affected: &'a BTreeSet<String>,
    pub pending: bool,
    pub started_ms: i64,
}

/// Per-host evidence for the cause of an outage, found in the live snapshot: a host that is
/// back and booted before the outage began was up all along; one that booted during it was down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observation {
    pub mo: String,
    pub host: String,
    pub up: bool,
}

/// The result of one detection pass.
#[derive(Debug, Default)]
pub(crate) struct Detected {
    pub conds: Vec<Cond>,
    pub observations: Vec<Observation>,
}

pub(crate) fn mo_ref(roster: &Roster, oid: &str) -> MoRef {
    MoRef {
        oid: oid.to_string(),
        name: roster
            .get(oid)
            .map_or_else(|| oid.to_string(), |m| m.name.clone()),
    }
}

#[derive(Default)]
struct TargetAgg<'a> {
    category: Option<Category>,
    reporting: usize,
    ok: usize,
    failing: Vec<&'a str>,
}

#[derive(Default)]
struct CentralAgg {
    category: Option<Category>,
    reporting_mo: usize,
    failing_mo: Vec<MoRef>,
    failing_hosts: usize,
    hosts: Vec<String>,
}

/// Runs every enabled rule over the snapshot.
///
/// `open_unreachable`: open "МО unreachable" incidents by МО; `watch`: МО → outage start of
/// incidents whose cause is still being established (hosts are checked for evidence).
pub(crate) fn detect(
    cfg: &AlertsConfig,
    now: i64,
    snap: &Snapshot,
    roster: &Roster,
    open_unreachable: &HashMap<&str, OpenUnreachable<'_>>,
    watch: &HashMap<&str, Vec<(i64, &BTreeSet<String>)>>,
) -> Detected {
    let mut out = Detected::default();
    let mut hosts: Vec<&Host> = snap.hosts.iter().map(|h| &**h).collect();
    if !hosts.is_sorted_by(|a, b| a.mo <= b.mo) {
        hosts.sort_by(|a, b| a.mo.cmp(&b.mo));
    }
    let fresh_after = now - cfg.probe_fresh_ms;
    let mut central: BTreeMap<&str, CentralAgg> = BTreeMap::new();
    let mut per_target: Vec<Cond> = Vec::new();
    let listed = cfg.max_hosts_listed;

    for chunk in hosts.chunk_by(|a, b| a.mo == b.mo) {
        let (conds_before, per_target_before) = (out.conds.len(), per_target.len());
        let oid = chunk[0].mo.as_str();
        let mo = mo_ref(roster, oid);
        let mut unreachable_key: Option<String> = None;

        // МО unreachable.
        let u = &cfg.mo_unreachable;
        if u.rule.enabled {
            let (tz, work) = roster
                .get(oid)
                .map_or((DEFAULT_TZ, WorkHours::default()), |m| (m.tz, m.work));
            let in_hours = !u.working_hours_only || work.contains(tz, now);
            let trigger = if in_hours {
                unreachable_trigger(chunk, now, u)
            } else {
                None
            };
            if let Some(open) = open_unreachable.get(oid) {
                let mut still: Vec<&str> = Vec::new();
                let mut back = 0usize;
                for h in chunk.iter().filter(|h| open.affected.contains(&h.host_id)) {
                    match h.state {
                        ConnState::Lost => still.push(&h.host_id),
                        ConnState::Online => back += 1,
                        ConnState::Offline => {}
                    }
                }
                let total = open.affected.len().max(1);
                let share = still.len() as f64 / total as f64;
                let holds =
                    (still.len() >= u.min_hosts && share >= u.min_share && (in_hours || back == 0))
                        || (open.pending && trigger.is_some());
                if holds {
                    let mut c = Cond::new(
                        open.key.to_string(),
                        Rule::MoUnreachable,
                        open.started_ms,
                        Cause::Unknown,
                    )
                    .one_mo(&mo);
                    if open.pending
                        && let Some((burst, _)) = &trigger
                    {
                        c.affected = burst.iter().map(|h| h.host_id.clone()).collect();
                        for h in &c.affected {
                            if !open.affected.contains(h) && !still.contains(&h.as_str()) {
                                still.push(h);
                            }
                        }
                    }
                    c.host_count = still.len();
                    c.hosts = still.iter().take(listed).map(|h| h.to_string()).collect();
                    c.value = Some(share);
                    unreachable_key = Some(c.key.clone());
                    out.conds.push(c);
                }
            } else if let Some((burst, share)) = trigger {
                let started = burst.iter().map(|h| h.state_since_ms).min().unwrap_or(now);
                let mut c = Cond::new(
                    key(&[Rule::MoUnreachable.as_str(), oid]),
                    Rule::MoUnreachable,
                    started,
                    Cause::Unknown,
                )
                .one_mo(&mo);
                c.affected = burst.iter().map(|h| h.host_id.clone()).collect();
                c.host_count = burst.len();
                c.hosts = c.affected.iter().take(listed).cloned().collect();
                c.value = Some(share);
                unreachable_key = Some(c.key.clone());
                out.conds.push(c);
            }
        }

        // Evidence for outages whose cause is being established.
        if let Some(list) = watch.get(oid) {
            for &(outage_start, affected) in list {
                for h in chunk.iter().filter(|h| affected.contains(&h.host_id)) {
                    if h.state == ConnState::Online
                        && h.last_seen_ms > outage_start
                        && h.boot_time > 0
                    {
                        out.observations.push(Observation {
                            mo: oid.to_string(),
                            host: h.host_id.clone(),
                            up: h.boot_time.saturating_mul(1000) < outage_start,
                        });
                    }
                }
            }
        }

        // Per-host rules.
        let mut skewed: Vec<(&str, i64)> = Vec::new();
        for h in chunk.iter() {
            let server = h.role == Some(Role::Server);
            if cfg.server_lost.enabled && server && h.state == ConnState::Lost {
                let mut c = Cond::new(
                    key(&[Rule::ServerLost.as_str(), oid, &h.host_id]),
                    Rule::ServerLost,
                    h.state_since_ms,
                    Cause::HostSilent,
                )
                .one_mo(&mo)
                .one_host(&h.host_id);
                c.absorbed_by.clone_from(&unreachable_key);
                out.conds.push(c);
            }
            let d = &cfg.disk_full;
            if d.rule.enabled
                && (server || !d.servers_only)
                && let Some(r) = &h.resources
            {
                for disk in r.disks.iter().filter(|d| d.total_bytes > 0) {
                    let pct = disk.used_bytes as f64 * 100.0 / disk.total_bytes as f64;
                    if pct >= d.threshold_pct {
                        let mut c = Cond::new(
                            key(&[Rule::DiskFull.as_str(), oid, &h.host_id, &disk.mount]),
                            Rule::DiskFull,
                            now,
                            Cause::Disk,
                        )
                        .one_mo(&mo)
                        .one_host(&h.host_id);
                        c.target = Some(disk.mount.clone());
                        c.value = Some((pct * 10.0).round() / 10.0);
                        out.conds.push(c);
                    }
                }
            }
            let k = &cfg.clock_skew;
            if k.rule.enabled
                && (server || !k.servers_only)
                && h.state == ConnState::Online
                && let Some(off) = h.clock_offset_ms
                && off.abs() > k.max_offset_ms
            {
                skewed.push((&h.host_id, off));
            }
        }
        if !skewed.is_empty() {
            let mut c = Cond::new(
                key(&[Rule::ClockSkew.as_str(), oid]),
                Rule::ClockSkew,
                now,
                Cause::Clock,
            )
            .one_mo(&mo);
            c.host_count = skewed.len();
            c.hosts = skewed
                .iter()
                .take(listed)
                .map(|(h, _)| h.to_string())
                .collect();
            let max = skewed.iter().map(|(_, o)| o.abs()).max().unwrap_or(0);
            c.value = Some((max / 1000) as f64);
            out.conds.push(c);
        }

        // Targets as seen from this МО.
        let mut targets: BTreeMap<&str, TargetAgg> = BTreeMap::new();
        for h in chunk.iter().filter(|h| h.state == ConnState::Online) {
            for p in h.probes.iter().filter(|p| p.at_ms >= fresh_after) {
                let t = targets.entry(p.target.as_str()).or_default();
                t.category = Some(p.category);
                t.reporting += 1;
                if p.ok {
                    t.ok += 1;
                } else {
                    t.failing.push(&h.host_id);
                }
            }
        }
        let ch = &cfg.mo_channel;
        for (target, t) in targets {
            let agg = central.entry(target).or_default();
            agg.category = t.category;
            agg.reporting_mo += 1;
            if t.failing.is_empty() {
                continue;
            }
            let all_fail = t.failing.len() as f64 / t.reporting as f64 >= ch.min_share;
            if all_fail {
                agg.failing_mo.push(mo.clone());
                agg.failing_hosts += t.failing.len();
                for h in &t.failing {
                    if agg.hosts.len() < listed {
                        agg.hosts.push(h.to_string());
                    }
                }
            }
            if all_fail && ch.rule.enabled && t.reporting >= ch.min_hosts {
                let mut c = Cond::new(
                    key(&[Rule::MoChannel.as_str(), oid, target]),
                    Rule::MoChannel,
                    now,
                    Cause::Channel,
                )
                .one_mo(&mo);
                c.target = Some(target.to_string());
                c.category = t.category;
                c.host_count = t.failing.len();
                c.hosts = t
                    .failing
                    .iter()
                    .take(listed)
                    .map(|h| h.to_string())
                    .collect();
                c.value = Some(t.failing.len() as f64 / t.reporting as f64);
                per_target.push(c);
            } else if t.ok > 0 && cfg.host_target.enabled {
                for h in &t.failing {
                    let mut c = Cond::new(
                        key(&[Rule::HostTarget.as_str(), oid, h, target]),
                        Rule::HostTarget,
                        now,
                        Cause::HostProblem,
                    )
                    .one_mo(&mo)
                    .one_host(h);
                    c.target = Some(target.to_string());
                    c.category = t.category;
                    per_target.push(c);
                }
            }
        }
        name_hosts(
            chunk,
            out.conds[conds_before..]
                .iter_mut()
                .chain(&mut per_target[per_target_before..]),
        );
    }

    // Central outages absorb the per-МО conditions of their target.
    let co = &cfg.central_outage;
    let mut central_keys: HashMap<&str, String> = HashMap::new();
    if co.rule.enabled {
        for (target, agg) in &central {
            let failing = agg.failing_mo.len();
            if failing >= co.min_mo
                && failing as f64 / agg.reporting_mo.max(1) as f64 >= co.min_share
            {
                let mut c = Cond::new(
                    key(&[Rule::CentralOutage.as_str(), target]),
                    Rule::CentralOutage,
                    now,
                    Cause::TargetDown,
                );
                c.target = Some(target.to_string());
                c.category = agg.category;
                c.mo_count = failing;
                c.mos = agg.failing_mo.iter().take(listed).cloned().collect();
                c.host_count = agg.failing_hosts;
                c.hosts.clone_from(&agg.hosts);
                c.value = Some(failing as f64 / agg.reporting_mo.max(1) as f64);
                central_keys.insert(target, c.key.clone());
                out.conds.push(c);
            }
        }
    }
    for mut c in per_target {
        if let Some(k) = c.target.as_deref().and_then(|t| central_keys.get(t)) {
            c.absorbed_by = Some(k.clone());
        }
        out.conds.push(c);
    }
    out
}

/// The "МО unreachable" trigger: enough of the recently active hosts lost in one burst.
/// Returns the burst and its share of the active hosts.
fn unreachable_trigger<'a>(
    chunk: &[&'a Host],
    now: i64,
    u: &crate::config::MoUnreachableConfig,
) -> Option<(Vec<&'a Host>, f64)> {
    let recent = now - u.active_window_ms;
    let active = chunk
        .iter()
        .filter(|h| {
            h.last_seen_ms > 0 && (h.state == ConnState::Online || h.state_since_ms >= recent)
        })
        .count();
    let burst = lost_burst(chunk, recent, u.window_ms);
    let share = burst.len() as f64 / active.max(1) as f64;
    (burst.len() >= u.min_hosts && share >= u.min_share).then_some((burst, share))
}

/// Hosts of the МО that went `lost` recently, clustered: those lost within `window` of the
/// latest loss. Hosts never heard live (known only from retained messages) are ignored.
fn lost_burst<'a>(chunk: &[&'a Host], recent: i64, window: i64) -> Vec<&'a Host> {
    let lost: Vec<&Host> = chunk
        .iter()
        .copied()
        .filter(|h| h.last_seen_ms > 0 && h.state == ConnState::Lost && h.state_since_ms >= recent)
        .collect();
    let Some(latest) = lost.iter().map(|h| h.state_since_ms).max() else {
        return lost;
    };
    lost.into_iter()
        .filter(|h| h.state_since_ms >= latest - window)
        .collect()
}

/// Fills the names and sites of the hosts listed by the МО's new conditions.
fn name_hosts<'c>(chunk: &[&Host], conds: impl Iterator<Item = &'c mut Cond>) {
    let mut index: Option<HashMap<&str, &Host>> = None;
    for c in conds.filter(|c| !c.hosts.is_empty()) {
        let index =
            index.get_or_insert_with(|| chunk.iter().map(|h| (h.host_id.as_str(), *h)).collect());
        c.host_refs = c
            .hosts
            .iter()
            .map(|id| HostRef {
                id: id.clone(),
                hostname: index
                    .get(id.as_str())
                    .map_or_else(String::new, |h| h.hostname.clone()),
                site: index
                    .get(id.as_str())
                    .map_or_else(String::new, |h| h.site.clone()),
            })
            .collect();
    }
}
