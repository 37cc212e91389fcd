//! The region overview: one row per МО (roster names, plan, АРМ online, servers, reachability
//! of each subsystem as a coloured share, open incidents, a trend sparkline), built from a
//! snapshot in one pass over the hosts. I/O-free.

use super::fmt::{self, Share, share};
use super::svg;
use super::trends::Trends;
use crate::alerts::model::{Incident, IncidentState, Severity};
use crate::roster::Roster;
use crate::state::{Host, Snapshot};
use dozor_proto::{Category, ConnState, Role};
use std::collections::HashMap;

/// An open incident as listed on top of the overview.
#[derive(Debug, Clone)]
pub(crate) struct IncidentLine {
    pub id: u64,
    pub href: String,
    pub title: String,
    /// `sev-critical`, `sev-warning`, `sev-info`.
    pub class: &'static str,
    /// 3 critical, 2 warning, 1 info (for ordering).
    pub rank: u8,
    pub severity: &'static str,
    pub state: &'static str,
    pub scope: &'static str,
    pub cause: &'static str,
    pub since: String,
    pub duration: String,
    pub acked: Option<String>,
}

/// One МО row.
#[derive(Debug, Clone)]
pub(crate) struct MoRow {
    pub oid: String,
    pub name: String,
    pub href: String,
    pub plan: Option<u32>,
    /// Workstations online against the plan (or the seen ones without a plan).
    pub ws_online: Share,
    pub servers: Share,
    /// One cell per column of [`Overview::columns`].
    pub reach: Vec<Share>,
    pub incidents: usize,
    /// Sort key of the worst open incident: 3 critical … 0 none.
    pub worst: u8,
    pub spark: String,
}

/// The whole overview.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub columns: Vec<&'static str>,
    pub rows: Vec<MoRow>,
    /// Open incidents worth the top of the page: firing, or pending with severity ≥ warning.
    pub incidents: Vec<IncidentLine>,
    /// Other open incidents (pending informational ones: one PC not reaching a service).
    pub other_open: usize,
    pub hosts: usize,
    pub online: usize,
    pub updated: String,
}

#[derive(Default)]
struct Acc {
    ws_seen: u32,
    ws_online: u32,
    srv: u32,
    srv_online: u32,
    /// Per category: (reaching, probing) among online hosts.
    reach: [(u32, u32); Category::ALL.len()],
}

fn cat_index(c: Category) -> usize {
    Category::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Warning => 2,
        Severity::Critical => 3,
    }
}

pub(crate) fn incident_line(i: &Incident, tz: chrono_tz::Tz, now: i64) -> IncidentLine {
    IncidentLine {
        id: i.id,
        href: format!("/incidents/{}", i.id),
        title: fmt::unnest_quotes(&i.title),
        class: match i.severity {
            Severity::Critical => "sev-critical",
            Severity::Warning => "sev-warning",
            Severity::Info => "sev-info",
        },
        rank: severity_rank(i.severity),
        severity: i.severity.title_ru(),
        state: fmt::incident_state(i.state),
        scope: fmt::scope(i),
        cause: i.cause.title_ru(),
        since: fmt::datetime(tz, i.episode_started_ms),
        duration: fmt::duration(i.duration_ms(now)),
        acked: super::ack_of(i).map(|a| a.by),
    }
}

/// Whether an incident is open (pending or firing, not merged away).
pub(crate) fn is_open(i: &Incident) -> bool {
    i.state != IncidentState::Resolved && i.merged_into.is_none()
}

/// Builds the overview at `now`.
pub(crate) fn build(
    snap: &Snapshot,
    roster: &Roster,
    incidents: &[Incident],
    trends: &Trends,
    tz: chrono_tz::Tz,
    now: i64,
) -> Overview {
    let mut acc: HashMap<&str, Acc> = HashMap::with_capacity(roster.mos.len() + 8);
    let mut present = [false; Category::ALL.len()];
    let mut online = 0usize;
    for h in &snap.hosts {
        let a = acc.entry(h.mo.as_str()).or_default();
        count(a, h, &mut present);
        online += usize::from(h.state == ConnState::Online);
    }
    let columns: Vec<usize> = (0..Category::ALL.len()).filter(|i| present[*i]).collect();
    let mut open: HashMap<&str, (usize, u8)> = HashMap::new();
    let mut lines = Vec::new();
    let mut other_open = 0;
    for i in incidents.iter().rev().filter(|i| is_open(i)) {
        for m in &i.mos {
            let e = open.entry(m.oid.as_str()).or_default();
            e.0 += 1;
            e.1 = e.1.max(severity_rank(i.severity));
        }
        if i.state == IncidentState::Firing || i.severity >= Severity::Warning {
            lines.push(incident_line(i, tz, now));
        } else {
            other_open += 1;
        }
    }
    // Firing before pending, then the most severe, then the newest.
    lines.sort_by_key(|l| {
        (
            l.state != fmt::incident_state(IncidentState::Firing),
            std::cmp::Reverse(l.rank),
        )
    });
    let mut rows = Vec::with_capacity(roster.mos.len());
    let mut seen_oids: Vec<&str> = Vec::with_capacity(roster.mos.len());
    for m in &roster.mos {
        seen_oids.push(&m.oid);
        rows.push(row(
            &m.oid,
            Some(m),
            acc.get(m.oid.as_str()),
            &columns,
            open.get(m.oid.as_str()).copied(),
            trends,
        ));
    }
    let mut extra: Vec<&str> = acc
        .keys()
        .copied()
        .filter(|o| roster.get(o).is_none())
        .collect();
    extra.sort_unstable();
    for o in extra {
        rows.push(row(
            o,
            None,
            acc.get(o),
            &columns,
            open.get(o).copied(),
            trends,
        ));
    }
    Overview {
        columns: columns
            .iter()
            .map(|i| Category::ALL[*i].title_ru())
            .collect(),
        rows,
        incidents: lines,
        other_open,
        hosts: snap.hosts.len(),
        online,
        updated: fmt::clock(tz, now),
    }
}

fn count(a: &mut Acc, h: &Host, present: &mut [bool; Category::ALL.len()]) {
    let on = h.state == ConnState::Online;
    match h.role {
        Some(Role::Workstation) => {
            a.ws_seen += 1;
            a.ws_online += u32::from(on);
        }
        Some(Role::Server) => {
            a.srv += 1;
            a.srv_online += u32::from(on);
        }
        None => {}
    }
    if !on {
        return;
    }
    // A host counts once per category: reaching it if any target of it answered.
    let mut seen = [None::<bool>; Category::ALL.len()];
    for p in &h.probes {
        let i = cat_index(p.category);
        seen[i] = Some(seen[i].unwrap_or(false) || p.ok);
    }
    for (i, s) in seen.iter().enumerate() {
        if let Some(ok) = s {
            present[i] = true;
            a.reach[i].1 += 1;
            a.reach[i].0 += u32::from(*ok);
        }
    }
}

fn row(
    oid: &str,
    m: Option<&crate::roster::Mo>,
    a: Option<&Acc>,
    columns: &[usize],
    open: Option<(usize, u8)>,
    trends: &Trends,
) -> MoRow {
    let empty = Acc::default();
    let a = a.unwrap_or(&empty);
    let plan = m.map(|m| m.planned_arm);
    let denom = plan.filter(|p| *p > 0).unwrap_or(a.ws_seen);
    let (values, max) = trends.series(oid);
    MoRow {
        oid: oid.to_string(),
        name: m.map_or_else(|| format!("Нет в реестре: {oid}"), |m| m.name.clone()),
        href: format!("/mo/{oid}"),
        plan,
        ws_online: share(
            a.ws_online.min(denom.max(a.ws_online)),
            denom.max(a.ws_online),
        ),
        servers: share(a.srv_online, a.srv),
        reach: columns
            .iter()
            .map(|i| share(a.reach[*i].0, a.reach[*i].1))
            .collect(),
        incidents: open.map_or(0, |o| o.0),
        worst: open.map_or(0, |o| o.1),
        spark: svg::sparkline(&values, max.max(f64::from(denom))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Roster;
    use crate::state::ProbeView;
    use std::sync::Arc;

    fn roster() -> Roster {
        Roster::from_toml(
            r#"
[[mo]]
oid = "1.2.643.5.1.13.13.12.2.27.1"
name = "КГБУЗ «Больница № 1»"
planned_arm = 4
[[mo]]
oid = "1.2.643.5.1.13.13.12.2.27.2"
name = "Поликлиника"
planned_arm = 2
"#,
            "roster.toml",
        )
        .unwrap()
    }

    fn host(mo: &str, id: &str, role: Role, state: ConnState, mis_ok: Option<bool>) -> Arc<Host> {
        let mut h = crate::ui::test_host(mo, id, role, 0);
        h.state = state;
        h.probes.clear();
        if let Some(ok) = mis_ok {
            h.probes.push(ProbeView {
                target: "mis".into(),
                category: Category::Mis,
                ok,
                latency_ms: Some(10),
                error: None,
                status: None,
                at_ms: 0,
            });
        }
        Arc::new(h)
    }

    #[test]
    fn rows_by_roster_with_partial_loss_not_green() {
        let m1 = "1.2.643.5.1.13.13.12.2.27.1";
        let snap = Snapshot {
            built_ms: 0,
            hosts: vec![
                host(m1, "a", Role::Workstation, ConnState::Online, Some(true)),
                host(m1, "b", Role::Workstation, ConnState::Online, Some(false)),
                host(m1, "c", Role::Workstation, ConnState::Offline, None),
                host(m1, "s", Role::Server, ConnState::Online, Some(true)),
                host("9.9", "x", Role::Workstation, ConnState::Online, None),
            ],
            delivery: Vec::new(),
        };
        let o = build(&snap, &roster(), &[], &Trends::default(), chrono_tz::UTC, 0);
        assert_eq!(o.columns, ["МИС"]);
        assert_eq!(o.rows.len(), 3);
        let r = &o.rows[0];
        assert_eq!(r.name, "КГБУЗ «Больница № 1»");
        assert_eq!(r.ws_online.text, "2 из 4");
        assert_eq!(r.servers.text, "1 из 1");
        assert_eq!(r.reach[0].text, "2 из 3");
        assert_ne!(r.reach[0].class, "s-all");
        assert_eq!(o.rows[1].ws_online.text, "0 из 2");
        assert_eq!(o.rows[1].reach[0].class, "s-na");
        assert!(o.rows[2].name.starts_with("Нет в реестре"));
        assert_eq!(o.online, 4);
    }
}
