//! Loading stored intervals for a window and computing their aggregates: shared by the reader
//! (for days not materialized yet) and by maintenance (which materializes days).

use super::StoreError;
use crate::availability::timeline::up_spans;
use crate::availability::{
    Calendar, GapCause, HostAgg, MoSpans, Ms, Outages, ProbeRow, ReachAgg, ResourceAgg, SegRow,
    WorkCal, host_agg, mo_reach, reach::HostReach, resources, usage::day_use,
};
use crate::roster::Roster;
use dozor_proto::Category;
use dozor_proto::Role;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::collections::HashMap;

/// A host of the registry as stored.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub id: i64,
    pub mo_id: i64,
    pub mo: String,
    pub host: String,
    pub role: Option<Role>,
    pub site: String,
    pub hostname: String,
    pub interval_s: i64,
    pub first_ms: Ms,
}

pub fn role_of(v: Option<i64>) -> Option<Role> {
    match v {
        Some(0) => Some(Role::Workstation),
        Some(1) => Some(Role::Server),
        _ => None,
    }
}

pub fn role_code(r: Option<Role>) -> Option<i64> {
    r.map(|r| match r {
        Role::Workstation => 0,
        Role::Server => 1,
    })
}

/// Loads the host registry, ordered by (МО, host).
pub fn load_hosts(conn: &Connection) -> Result<Vec<HostRow>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT h.id, h.mo_id, m.oid, h.host, h.role, h.site, h.hostname, h.interval_s, h.first_ms
         FROM hosts h JOIN mos m ON m.id = h.mo_id ORDER BY m.oid, h.host",
    )?;
    let rows = st.query_map([], |r| {
        Ok(HostRow {
            id: r.get(0)?,
            mo_id: r.get(1)?,
            mo: r.get(2)?,
            host: r.get(3)?,
            role: role_of(r.get(4)?),
            site: r.get(5)?,
            hostname: r.get(6)?,
            interval_s: r.get(7)?,
            first_ms: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Loads the МО table: id → oid.
pub fn load_mos(conn: &Connection) -> Result<Vec<(i64, String, i64)>, StoreError> {
    let mut st = conn.prepare_cached("SELECT id, oid, wfp FROM mos")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Collector runs `(start, end, stopped)`.
pub fn load_runs(conn: &Connection) -> Result<Vec<(Ms, Ms, bool)>, StoreError> {
    let mut st =
        conn.prepare_cached("SELECT start_ms, end_ms, stopped FROM runs ORDER BY start_ms")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A run not stopped is taken as still running when it was alive this recently.
pub const ALIVE_GRACE_MS: Ms = 120_000;

/// When this process began collecting, if it is a collector (set by [`crate::run`] before it
/// serves anything): see [`outages`].
static THIS_RUN_START: std::sync::OnceLock<Ms> = std::sync::OnceLock::new();

/// Records that this process runs a collector since `at` (the first call wins).
pub fn set_this_run_start(at: Ms) {
    let _ = THIS_RUN_START.set(at);
}

/// Outages as seen at `now`. A run not stopped that was alive within [`ALIVE_GRACE_MS`] is
/// taken as still running — unless this process is a collector that started after it: then
/// that run crashed (`kill -9`), and this process's own run covers its start to now even before
/// the store has written its row (a report served in the first instants after a restart).
pub fn outages(runs: &[(Ms, Ms, bool)], now: Ms) -> Outages {
    outages_seen_by(runs, now, THIS_RUN_START.get().copied())
}

fn outages_seen_by(runs: &[(Ms, Ms, bool)], now: Ms, this_start: Option<Ms>) -> Outages {
    // Only for reports about the present (tests replaying 2024 have nothing to do with it).
    let this_start = this_start.filter(|&t| t <= now);
    let mut spans: Vec<(Ms, Ms)> = runs
        .iter()
        .map(|&(s, e, stopped)| {
            let before_this = this_start.is_some_and(|t| s < t);
            if !stopped && !before_this && now - e <= ALIVE_GRACE_MS {
                (s, e.max(now))
            } else {
                (s, e)
            }
        })
        .collect();
    if let Some(t) = this_start
        && !spans.iter().any(|&(s, _)| s >= t)
    {
        spans.push((t, now));
    }
    Outages::from_runs(&spans, now)
}

/// Working calendars of the МО, by oid (roster, or the default).
pub fn workcal(roster: &Roster, oid: &str) -> WorkCal {
    roster.get(oid).map_or_else(WorkCal::default, |m| WorkCal {
        tz: m.tz,
        hours: m.work,
    })
}

fn seg_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, SegRow)> {
    Ok((
        r.get(0)?,
        SegRow {
            start: r.get(1)?,
            end: r.get(2)?,
            cause: GapCause::from_i64(r.get(3)?),
            next: r.get(4)?,
        },
    ))
}

fn probe_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, ProbeRow)> {
    Ok((
        r.get(0)?,
        ProbeRow {
            cat: r.get::<_, i64>(1)?.clamp(0, 11) as u8,
            start: r.get(2)?,
            end: r.get(3)?,
            ok: r.get::<_, i64>(4)? != 0,
            closed: r.get::<_, i64>(5)? != 0,
        },
    ))
}

/// The rows of a window `[a, b)`: per host, its segments (including the one whose gap covers
/// `a`) and its reachability rows touching the window.
#[derive(Debug, Default)]
pub struct WindowRows {
    pub segs: HashMap<i64, Vec<SegRow>>,
    pub probes: HashMap<i64, Vec<ProbeRow>>,
}

/// Loads a window for the given hosts (`None`: all `hosts`).
pub fn load_window(
    conn: &Connection,
    cal: &Calendar,
    hosts: &[HostRow],
    only: Option<&[i64]>,
    a: Ms,
    b: Ms,
) -> Result<WindowRows, StoreError> {
    let mut w = WindowRows::default();
    // Reachability rows never cross a region midnight: those touching [a, b) start in [day
    // start of a, b).
    let pa = cal.day_start(cal.day_of(a));
    let mut prev = conn.prepare_cached(
        "SELECT host_id, start_ms, end_ms, cause, next_ms FROM segs
         WHERE host_id = ?1 AND start_ms < ?2 ORDER BY start_ms DESC LIMIT 1",
    )?;
    match only {
        None => {
            let mut st = conn.prepare_cached(
                "SELECT host_id, start_ms, end_ms, cause, next_ms FROM segs
                 WHERE start_ms >= ?1 AND start_ms < ?2",
            )?;
            for r in st.query_map(params![a, b], seg_row)? {
                let (h, s) = r?;
                w.segs.entry(h).or_default().push(s);
            }
            let mut st = conn.prepare_cached(
                "SELECT host_id, cat, start_ms, end_ms, ok, closed FROM probes
                 WHERE start_ms >= ?1 AND start_ms < ?2",
            )?;
            for r in st.query_map(params![pa, b], probe_row)? {
                let (h, p) = r?;
                if p.touches(a, b) {
                    w.probes.entry(h).or_default().push(p);
                }
            }
            for h in hosts {
                if let Some((id, s)) = prev.query_row(params![h.id, a], seg_row).optional()? {
                    w.segs.entry(id).or_default().push(s);
                }
            }
        }
        Some(ids) => {
            let mut st = conn.prepare_cached(
                "SELECT host_id, start_ms, end_ms, cause, next_ms FROM segs
                 WHERE host_id = ?1 AND start_ms >= ?2 AND start_ms < ?3",
            )?;
            let mut pst = conn.prepare_cached(
                "SELECT host_id, cat, start_ms, end_ms, ok, closed FROM probes
                 WHERE host_id = ?1 AND start_ms >= ?2 AND start_ms < ?3",
            )?;
            for &id in ids {
                for r in st.query_map(params![id, a, b], seg_row)? {
                    let (h, s) = r?;
                    w.segs.entry(h).or_default().push(s);
                }
                if let Some((h, s)) = prev.query_row(params![id, a], seg_row).optional()? {
                    w.segs.entry(h).or_default().push(s);
                }
                for r in pst.query_map(params![id, pa, b], probe_row)? {
                    let (h, p) = r?;
                    if p.touches(a, b) {
                        w.probes.entry(h).or_default().push(p);
                    }
                }
            }
        }
    }
    for v in w.segs.values_mut() {
        v.sort_unstable_by_key(|s| s.start);
    }
    Ok(w)
}

/// Shared inputs of window computations.
pub struct Ctx<'a> {
    pub roster: &'a Roster,
    pub outages: &'a Outages,
    pub gap_factor: f64,
    /// The region's calendar (usage days are counted per region day).
    pub cal: Calendar,
}

impl Ctx<'_> {
    pub fn tol(&self, h: &HostRow) -> Ms {
        (self.gap_factor * h.interval_s.max(1) as f64 * 1000.0) as Ms
    }
}

/// Aggregates of a window: per host, and per (МО id, category index).
#[derive(Debug, Default)]
pub struct WindowAggs {
    pub hosts: HashMap<i64, HostAgg>,
    pub mos: HashMap<(i64, u8), ReachAgg>,
}

/// Computes the aggregates of `[a, b)` for `hosts` (every host of an МО must be given when its
/// МО reachability is wanted).
pub fn compute_window(
    ctx: &Ctx<'_>,
    rows: &WindowRows,
    hosts: &[&HostRow],
    a: Ms,
    b: Ms,
    want_hosts: bool,
    want_mos: bool,
) -> WindowAggs {
    let mut out = WindowAggs::default();
    let mut work: HashMap<i64, Vec<(Ms, Ms)>> = HashMap::new();
    type UpAndProbes<'r> = (Vec<(Ms, Ms)>, &'r [ProbeRow], bool);
    // Per МО id: its oid and its hosts' up spans and probes.
    let mut by_mo: HashMap<i64, (&str, Vec<UpAndProbes<'_>>)> = HashMap::new();
    let empty_s: Vec<SegRow> = Vec::new();
    let empty_p: Vec<ProbeRow> = Vec::new();
    for h in hosts {
        let segs = rows.segs.get(&h.id).unwrap_or(&empty_s);
        let probes = rows.probes.get(&h.id).unwrap_or(&empty_p);
        if segs.is_empty() && probes.is_empty() {
            continue;
        }
        let tol = ctx.tol(h);
        if want_hosts {
            let w = work
                .entry(h.mo_id)
                .or_insert_with(|| workcal(ctx.roster, &h.mo).windows(a, b));
            let agg = host_agg(segs, probes, tol, ctx.outages, w, a, b);
            if !agg.is_zero() {
                out.hosts.insert(h.id, agg);
            }
        }
        if want_mos && !probes.is_empty() {
            let up = up_spans(segs, tol, ctx.outages, a, b);
            by_mo
                .entry(h.mo_id)
                .or_insert_with(|| (h.mo.as_str(), Vec::new()))
                .1
                .push((up, probes, h.role == Some(Role::Server)));
        }
    }
    for (mo, (oid, list)) in by_mo {
        let hr: Vec<HostReach<'_>> = list
            .iter()
            .map(|(up, p, _)| HostReach { up, probes: p })
            .collect();
        let mut aggs = mo_reach(&hr, a, b);
        // Usage days (issue 13, item 5): one per region day of the window.
        let cal = workcal(ctx.roster, oid);
        let used: Vec<(bool, &[ProbeRow])> = list.iter().map(|(_, p, s)| (*s, *p)).collect();
        let mut d = ctx.cal.day_of(a);
        loop {
            let (ds, de) = (ctx.cal.day_start(d).max(a), ctx.cal.day_start(d + 1).min(b));
            if ds >= b {
                break;
            }
            if ds < de {
                let (ws, any) = day_use(&cal.windows(ds, de), &used, ds, de);
                for (c, r) in aggs.iter_mut().enumerate() {
                    r.ws_days += i64::from(ws >> c & 1);
                    r.any_days += i64::from(any >> c & 1);
                }
            }
            d += 1;
        }
        for (c, r) in aggs.into_iter().enumerate() {
            if !r.is_zero() {
                out.mos.insert((mo, c as u8), r);
            }
        }
    }
    out
}

/// Each central resource's own availability over `[a, b)` and every МО's channel to it, from
/// the window's rows of all `hosts` (every МО is a vantage point; МО named by oid).
///
/// Each host's latest result of a category holds up to `b` while its next result is not
/// overdue at `now` (2.5 intervals), as a host is up until its heartbeat is overdue: otherwise,
/// in a period in progress, the МО whose agent happened to probe (or be stored) last would be
/// the only observer for up to an interval, and its failure read as the resource's.
pub fn resource_window(
    ctx: &Ctx<'_>,
    rows: &WindowRows,
    hosts: &[HostRow],
    a: Ms,
    b: Ms,
    now: Ms,
) -> BTreeMap<Category, ResourceAgg> {
    type UpAndProbes = (Vec<(Ms, Ms)>, Vec<ProbeRow>);
    let mut by_mo: BTreeMap<&str, Vec<UpAndProbes>> = BTreeMap::new();
    let empty_s: Vec<SegRow> = Vec::new();
    for h in hosts {
        let Some(probes) = rows.probes.get(&h.id).filter(|p| !p.is_empty()) else {
            continue;
        };
        let segs = rows.segs.get(&h.id).unwrap_or(&empty_s);
        let tol = ctx.tol(h);
        let up = up_spans(segs, tol, ctx.outages, a, b);
        let mut probes = probes.clone();
        {
            let mut last: BTreeMap<u8, ProbeRow> = BTreeMap::new();
            for p in &probes {
                let e = last.entry(p.cat).or_insert(*p);
                if p.end > e.end {
                    *e = *p;
                }
            }
            for p in last.into_values() {
                if p.end < b && now - p.end <= tol {
                    probes.push(ProbeRow {
                        start: p.end,
                        end: b,
                        ..p
                    });
                }
            }
        }
        by_mo.entry(&h.mo).or_default().push((up, probes));
    }
    let spans: Vec<(String, MoSpans)> = by_mo
        .into_iter()
        .map(|(mo, list)| {
            let hr: Vec<HostReach<'_>> = list
                .iter()
                .map(|(up, p)| HostReach { up, probes: p })
                .collect();
            (mo.to_string(), MoSpans::of(&hr, a, b))
        })
        .collect();
    resources(&spans, a, b)
}

/// Packs the flags of a host aggregate.
pub fn pack_flags(a: &HostAgg) -> i64 {
    i64::from(a.active) | i64::from(a.reached) << 1 | i64::from(a.probed) << 13
}

pub fn unpack_agg(v: [i64; 9]) -> HostAgg {
    let flags = v[8];
    HostAgg {
        up_ms: v[0],
        down_ms: v[1],
        unknown_ms: v[2],
        up_w_ms: v[3],
        down_w_ms: v[4],
        unknown_w_ms: v[5],
        off_w_ms: v[6],
        off_w_days: v[7],
        active: flags & 1 != 0,
        reached: ((flags >> 1) & 0xfff) as u16,
        probed: ((flags >> 13) & 0xfff) as u16,
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;

    /// A report served by a collector just restarted after a `kill -9`, before its own run is
    /// stored: the crashed run ended at its last write, the new one covers its start to now.
    #[test]
    fn a_crashed_run_before_this_process_is_over() {
        let runs = [(0, 3_000, false)];
        // As a `report` process (no run of its own): a recent unstopped run is taken as live.
        let o = outages_seen_by(&runs, 13_000, None);
        assert_eq!(
            o.spans(),
            outages_seen_by(&[(0, 13_000, true)], 13_000, None).spans()
        );
        // As the collector that started at 12,000: the gap 3,000–12,000 is an outage.
        let o = outages_seen_by(&runs, 13_000, Some(12_000));
        let expect = Outages::from_runs(&[(0, 3_000), (12_000, 13_000)], 13_000);
        assert_eq!(o.spans(), expect.spans());
        // Once its own run is stored, the same.
        let o = outages_seen_by(
            &[(0, 3_000, false), (12_000, 12_500, false)],
            13_000,
            Some(12_000),
        );
        assert_eq!(o.spans(), expect.spans());
        // Reports about another time (replayed history) ignore it.
        let o = outages_seen_by(&runs, 5_000, Some(12_000));
        assert_eq!(o.spans(), outages_seen_by(&runs, 5_000, None).spans());
    }
}
