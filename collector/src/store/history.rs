//! One host's history for the host page and `GET /api/v1/hosts/{mo}/{host}/history`: the
//! stored 5-minute resource rollups, the "up" segments (availability timeline, boots) and the
//! probe reachability intervals, resampled to at most [`MAX_POINTS`] points.
//!
//! `load` is the I/O (three indexed range queries on a read-only connection); the resampling
//! functions below it are plain and unit-tested.

use super::load::{load_runs, outages, role_of};
use super::{StoreError, schema};
use crate::availability::{GapCause, Ms, Outages, PieceState, SegRow, host_pieces};
use dozor_proto::{Category, Role};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The rollup bucket (and the finest step).
pub const BUCKET_MS: Ms = 300_000;
/// Points per series at most: a 90-day window is drawn at a 4-hour step.
pub const MAX_POINTS: i64 = 600;
/// Longest window one request may ask for (the rollups are kept 90 days by default).
pub const MAX_WINDOW_MS: Ms = 400 * 86_400_000;

/// The step for `[from, to)`: a multiple of the bucket giving at most [`MAX_POINTS`] points.
pub fn step_for(from: Ms, to: Ms) -> Ms {
    let buckets = ((to - from).max(1) + BUCKET_MS - 1) / BUCKET_MS;
    let per_point = (buckets + MAX_POINTS - 1) / MAX_POINTS;
    per_point.max(1) * BUCKET_MS
}

/// Resource use in one step: averages and maxima in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResPoint {
    /// Start of the step, Unix ms.
    pub t: Ms,
    pub cpu_avg: f64,
    pub cpu_max: f64,
    pub mem_avg: f64,
    pub mem_max: f64,
    /// The fullest disk's use.
    pub disk_max: f64,
    /// Heartbeats summed.
    pub n: i64,
}

/// What a stretch of the availability timeline was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanState {
    /// The agent reported.
    Up,
    /// Switched off in an orderly way (`offline` seen): not an outage for a workstation.
    Off,
    /// Lost (last will, lapsed heartbeats) or crashed and rebooted.
    Down,
    /// Nobody saw (the collector was not running, or nothing was heard).
    Unknown,
    /// Down or switched off inside a planned work covering the host: not an outage.
    Planned,
}

/// A stretch of the availability timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub from_ms: Ms,
    pub to_ms: Ms,
    pub state: SpanState,
}

/// Reachability of one target in one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProbePoint {
    pub t: Ms,
    /// Share of the observed time the target answered, 0..=1.
    pub ok_share: f64,
    /// Mean latency of the answers, ms.
    pub latency_ms: Option<f64>,
}

/// One target's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeSeries {
    pub target: String,
    pub category: Category,
    pub points: Vec<ProbePoint>,
}

/// A host's history over `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostHistory {
    pub mo: String,
    pub host: String,
    pub hostname: String,
    pub site: String,
    pub role: Option<Role>,
    /// The last birth message, as stored (inventory).
    #[serde(skip)]
    pub inventory: Option<String>,
    pub from_ms: Ms,
    pub to_ms: Ms,
    pub step_ms: Ms,
    pub resources: Vec<ResPoint>,
    pub availability: Vec<Span>,
    /// Boot times seen in the window (new boot of the OS), Unix ms.
    pub boots: Vec<Ms>,
    pub probes: Vec<ProbeSeries>,
}

/// A stored rollup row: bucket index and sums in hundredths of percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupRow {
    pub bucket: i64,
    pub n: i64,
    pub cpu_sum: i64,
    pub cpu_max: i64,
    pub mem_sum: i64,
    pub mem_max: i64,
    pub disk_max: i64,
}

/// A stored "up" segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegRowH {
    pub start: Ms,
    pub end: Ms,
    pub boot_ms: Option<Ms>,
    pub cause: GapCause,
    pub next: Option<Ms>,
}

/// A stored probe interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRowH {
    pub target: String,
    pub cat: u8,
    pub start: Ms,
    pub end: Ms,
    pub ok: bool,
    pub lat_sum: i64,
    pub lat_n: i64,
}

/// Opens the store read-only (one connection per request, on a blocking thread).
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("store {} does not exist", path.display()),
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if v != schema::VERSION {
        return Err(StoreError::Corrupt(format!(
            "store schema version {v}, expected {}",
            schema::VERSION
        )));
    }
    Ok(conn)
}

/// Loads the history of host `host` of МО `mo` over `[from, to)` as seen at `now`; `None` when
/// the store never heard of the host. `tol_factor` × the host's interval is how long after its
/// last message a host still counts as up.
/// `planned` are the config's planned works (the store's own are read here).
#[allow(clippy::too_many_arguments)]
pub fn load(
    c: &Connection,
    mo: &str,
    host: &str,
    from: Ms,
    to: Ms,
    now: Ms,
    tol_factor: f64,
    planned: &[crate::availability::planned::PlannedWork],
) -> Result<Option<HostHistory>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT h.id, h.role, h.site, h.hostname, h.interval_s, h.inventory
             FROM hosts h JOIN mos m ON m.id = h.mo_id WHERE m.oid = ?1 AND h.host = ?2",
        )?
        .query_row(params![mo, host], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .optional()?;
    let Some((id, role, site, hostname, interval_s, inventory)) = row else {
        return Ok(None);
    };
    let step = step_for(from, to);
    let tx = c.unchecked_transaction()?;
    let mut rollups = Vec::new();
    let mut st = c.prepare_cached(
        "SELECT bucket, n, cpu_sum, cpu_max, mem_sum, mem_max, disk_max FROM rollups
         WHERE host_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
    )?;
    for r in st.query_map(
        params![
            id,
            from.div_euclid(BUCKET_MS),
            (to + BUCKET_MS - 1) / BUCKET_MS
        ],
        |r| {
            Ok(RollupRow {
                bucket: r.get(0)?,
                n: r.get(1)?,
                cpu_sum: r.get(2)?,
                cpu_max: r.get(3)?,
                mem_sum: r.get(4)?,
                mem_max: r.get(5)?,
                disk_max: r.get(6)?,
            })
        },
    )? {
        rollups.push(r?);
    }
    let mut segs = Vec::new();
    // Segments overlapping the window (a host has a few a day: the index scan is short).
    let mut st = c.prepare_cached(
        "SELECT start_ms, end_ms, boot_ms, cause, next_ms FROM segs
         WHERE host_id = ?1 AND start_ms < ?3 AND (next_ms IS NULL OR next_ms > ?2)
         ORDER BY start_ms",
    )?;
    for r in st.query_map(params![id, from, to], |r| {
        Ok(SegRowH {
            start: r.get(0)?,
            end: r.get(1)?,
            boot_ms: r.get(2)?,
            cause: GapCause::from_i64(r.get(3)?),
            next: r.get(4)?,
        })
    })? {
        segs.push(r?);
    }
    let mut probes = Vec::new();
    // Probe intervals never cross a region midnight: starting a day early finds them all.
    let mut st = c.prepare_cached(
        "SELECT t.name, p.cat, p.start_ms, p.end_ms, p.ok, p.lat_sum, p.lat_n
         FROM probes p JOIN targets t ON t.id = p.target_id
         WHERE p.host_id = ?1 AND p.start_ms >= ?2 AND p.start_ms < ?3 AND p.end_ms > ?4
         ORDER BY p.start_ms",
    )?;
    for r in st.query_map(params![id, from - 86_400_000, to, from], |r| {
        Ok(ProbeRowH {
            target: r.get(0)?,
            cat: r.get::<_, i64>(1)?.clamp(0, 11) as u8,
            start: r.get(2)?,
            end: r.get(3)?,
            ok: r.get::<_, i64>(4)? != 0,
            lat_sum: r.get(5)?,
            lat_n: r.get(6)?,
        })
    })? {
        probes.push(r?);
    }
    // The collector's runs: time it did not run (or was cut off from the broker) is unknown,
    // and so is a host's silence until it had a fair chance to reconnect afterwards.
    let out = outages(&load_runs(c)?, now);
    let mut works = planned.to_vec();
    works.extend(super::planned::list(c)?.into_iter().map(|e| e.work));
    tx.finish()?;
    let windows =
        crate::availability::planned::host_windows(&works, mo, &site, host, from, to.min(now));
    let tol = (interval_s.max(1) as f64 * 1000.0 * tol_factor) as Ms;
    // Steps on multiples of the step (whole 5-minute buckets), the first may start before `from`.
    let base = from.div_euclid(step) * step;
    Ok(Some(HostHistory {
        mo: mo.to_string(),
        host: host.to_string(),
        hostname,
        site,
        role: role_of(role),
        inventory,
        from_ms: from,
        to_ms: to,
        step_ms: step,
        resources: resample_rollups(&rollups, base, step),
        availability: mark_planned(spans(&segs, from, to.min(now), tol, &out), &windows),
        boots: boots(&segs, from, to),
        probes: probe_series(&probes, base, to.min(now), step),
    }))
}

/// Rollups summed into steps of `step` ms starting at `from` (empty steps are left out).
pub fn resample_rollups(rows: &[RollupRow], from: Ms, step: Ms) -> Vec<ResPoint> {
    let mut out: Vec<ResPoint> = Vec::new();
    let mut acc: Option<(i64, RollupRow)> = None;
    let flush = |out: &mut Vec<ResPoint>, k: i64, a: &RollupRow| {
        let n = a.n.max(1) as f64;
        out.push(ResPoint {
            t: from + k * step,
            cpu_avg: a.cpu_sum as f64 / n / 100.0,
            cpu_max: a.cpu_max as f64 / 100.0,
            mem_avg: a.mem_sum as f64 / n / 100.0,
            mem_max: a.mem_max as f64 / 100.0,
            disk_max: a.disk_max as f64 / 100.0,
            n: a.n,
        });
    };
    for r in rows {
        let k = (r.bucket * BUCKET_MS - from).div_euclid(step);
        match &mut acc {
            Some((ak, a)) if *ak == k => {
                a.n += r.n;
                a.cpu_sum += r.cpu_sum;
                a.mem_sum += r.mem_sum;
                a.cpu_max = a.cpu_max.max(r.cpu_max);
                a.mem_max = a.mem_max.max(r.mem_max);
                a.disk_max = a.disk_max.max(r.disk_max);
            }
            _ => {
                if let Some((ak, a)) = &acc {
                    flush(&mut out, *ak, a);
                }
                acc = Some((k, *r));
            }
        }
    }
    if let Some((ak, a)) = &acc {
        flush(&mut out, *ak, a);
    }
    out
}

/// The availability timeline over `[from, to)` from the segments, by the rules of the reports
/// (`availability::timeline::host_pieces`, docs/indicators.md): up while reporting (and `tol`
/// after the last message), then the gap's state by its cause; time the collector did not run
/// or could not hear the host (`outages`, with the reconnect allowance after each) unknown, and
/// so is time before the host's first message in the window. `to` must not be after now.
pub fn spans(segs: &[SegRowH], from: Ms, to: Ms, tol: Ms, outages: &Outages) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let mut push = |a: Ms, b: Ms, state: SpanState| {
        let (a, b) = (a.max(from), b.min(to));
        if a >= b {
            return;
        }
        match out.last_mut() {
            Some(l) if l.state == state && l.to_ms >= a => l.to_ms = l.to_ms.max(b),
            _ => out.push(Span {
                from_ms: a,
                to_ms: b,
                state,
            }),
        }
    };
    let rows: Vec<SegRow> = segs
        .iter()
        .map(|s| SegRow {
            start: s.start,
            end: s.end,
            cause: s.cause,
            next: s.next,
        })
        .collect();
    let mut cursor = from;
    host_pieces(&rows, tol, outages, from, to, |p| {
        if p.start > cursor {
            push(cursor, p.start, SpanState::Unknown);
        }
        let state = match p.state {
            PieceState::Up => SpanState::Up,
            PieceState::Down(GapCause::Shutdown) | PieceState::Planned(GapCause::Shutdown) => {
                SpanState::Off
            }
            PieceState::Down(_) | PieceState::Planned(_) => SpanState::Down,
            PieceState::Unknown => SpanState::Unknown,
        };
        push(p.start, p.end, state);
        cursor = cursor.max(p.end);
    });
    out
}

/// Relabels the down and switched-off stretches inside the planned windows (sorted, disjoint)
/// as [`SpanState::Planned`]; a pass over the finished timeline, like
/// `availability::planned::split_piece` over a host's pieces.
pub fn mark_planned(spans: Vec<Span>, planned: &[(Ms, Ms)]) -> Vec<Span> {
    if planned.is_empty() {
        return spans;
    }
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    let mut push = |from_ms: Ms, to_ms: Ms, state: SpanState| {
        if from_ms >= to_ms {
            return;
        }
        match out.last_mut() {
            Some(l) if l.state == state && l.to_ms == from_ms => l.to_ms = to_ms,
            _ => out.push(Span {
                from_ms,
                to_ms,
                state,
            }),
        }
    };
    for s in spans {
        if !matches!(s.state, SpanState::Down | SpanState::Off) {
            push(s.from_ms, s.to_ms, s.state);
            continue;
        }
        let mut at = s.from_ms;
        for &(a, b) in planned {
            if b <= at || a >= s.to_ms {
                continue;
            }
            push(at, a.max(at), s.state);
            let end = b.min(s.to_ms);
            push(a.max(at), end, SpanState::Planned);
            at = end;
        }
        push(at, s.to_ms, s.state);
    }
    out
}

/// Boot times of segments inside `[from, to)`, each boot once.
pub fn boots(segs: &[SegRowH], from: Ms, to: Ms) -> Vec<Ms> {
    let mut out: Vec<Ms> = Vec::new();
    for s in segs {
        if let Some(b) = s.boot_ms
            && (from..to).contains(&b)
            && out.last().is_none_or(|l| (b - l).abs() > 60_000)
        {
            out.push(b);
        }
    }
    out
}

/// Reachability per target in steps of `step` over `[from, to)`.
pub fn probe_series(rows: &[ProbeRowH], from: Ms, to: Ms, step: Ms) -> Vec<ProbeSeries> {
    // (ok ms, observed ms, latency sum, latency count) per step.
    type Acc = BTreeMap<i64, (f64, f64, f64, f64)>;
    let mut by: BTreeMap<(String, u8), Acc> = BTreeMap::new();
    for r in rows {
        let (a, b) = (r.start.max(from), r.end.min(to));
        // A single probe result is an interval of zero length: count it as one step's instant.
        let (a, b) = if r.end <= r.start && (from..to).contains(&r.start) {
            (r.start, r.start + 1)
        } else {
            (a, b)
        };
        if a >= b {
            continue;
        }
        let acc = by.entry((r.target.clone(), r.cat)).or_default();
        let whole = (r.end - r.start).max(1) as f64;
        let mut t = a;
        while t < b {
            let k = (t - from).div_euclid(step);
            let end = (from + (k + 1) * step).min(b);
            let part = (end - t) as f64;
            let e = acc.entry(k).or_default();
            e.1 += part;
            if r.ok {
                e.0 += part;
            }
            let frac = part / whole;
            e.2 += r.lat_sum as f64 * frac.min(1.0);
            e.3 += r.lat_n as f64 * frac.min(1.0);
            t = end;
        }
    }
    by.into_iter()
        .map(|((target, cat), acc)| ProbeSeries {
            target,
            category: crate::availability::cat_of(cat),
            points: acc
                .into_iter()
                .map(|(k, (ok, seen, ls, ln))| ProbePoint {
                    t: from + k * step,
                    ok_share: if seen > 0.0 { ok / seen } else { 0.0 },
                    latency_ms: (ln > 0.0).then(|| ls / ln),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Ms = 3_600_000;

    fn seg(start: Ms, end: Ms, cause: GapCause, next: Option<Ms>) -> SegRowH {
        SegRowH {
            start,
            end,
            boot_ms: Some(start - 60_000),
            cause,
            next,
        }
    }

    #[test]
    fn step_keeps_points_bounded() {
        assert_eq!(step_for(0, H), BUCKET_MS);
        assert_eq!(step_for(0, 86_400_000), BUCKET_MS);
        let s = step_for(0, 90 * 86_400_000);
        assert_eq!(s % BUCKET_MS, 0);
        assert!(90 * 86_400_000 / s <= MAX_POINTS, "{s}");
    }

    #[test]
    fn rollups_are_summed_per_step() {
        let r = |bucket, cpu| RollupRow {
            bucket,
            n: 10,
            cpu_sum: cpu * 10,
            cpu_max: cpu,
            mem_sum: 5000 * 10,
            mem_max: 5000,
            disk_max: 4000,
        };
        let pts = resample_rollups(&[r(0, 1000), r(1, 3000), r(3, 500)], 0, 2 * BUCKET_MS);
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].t, 0);
        assert!((pts[0].cpu_avg - 20.0).abs() < 1e-9);
        assert!((pts[0].cpu_max - 30.0).abs() < 1e-9);
        assert_eq!(pts[0].n, 20);
        assert_eq!(pts[1].t, 2 * BUCKET_MS);
        assert!((pts[1].mem_avg - 50.0).abs() < 1e-9);
    }

    #[test]
    fn timeline_tells_off_down_and_unknown() {
        let segs = [
            seg(2 * H, 4 * H, GapCause::Shutdown, Some(5 * H)),
            seg(5 * H, 6 * H, GapCause::Lost, Some(7 * H)),
            seg(7 * H, 8 * H, GapCause::Pending, None),
        ];
        let got = spans(&segs, 0, 10 * H, 60_000, &Outages::none());
        let want = [
            (0, 2 * H, SpanState::Unknown),
            (2 * H, 4 * H, SpanState::Up),
            (4 * H, 5 * H, SpanState::Off),
            (5 * H, 6 * H, SpanState::Up),
            (6 * H, 7 * H, SpanState::Down),
            (7 * H, 8 * H + 60_000, SpanState::Up),
            (8 * H + 60_000, 10 * H, SpanState::Down),
        ];
        let got: Vec<_> = got.iter().map(|s| (s.from_ms, s.to_ms, s.state)).collect();
        assert_eq!(got, want);
    }

    /// The broker-outage run of issue 15: the collector was cut off from the broker for 12 s;
    /// the host's replay had filled the silence up to 6 s into the outage; the collector
    /// declared it lost after it came back and the agent was still backing off. That silence is
    /// unknown through the reconnect allowance, as in the reports (it used to read down).
    #[test]
    fn a_silence_inside_a_collector_outage_is_unknown_through_the_allowance() {
        let s = 1_000;
        let segs = [
            seg(0, 11 * s, GapCause::Lost, Some(28 * s)),
            seg(28 * s, 40 * s, GapCause::Pending, None),
        ];
        // Runs: until 5 s, and from 17 s on (still running at 40 s).
        let out = Outages::from_runs(&[(-100 * s, 5 * s), (17 * s, 40 * s)], 40 * s);
        let got = spans(&segs, 0, 40 * s, 2_500, &out);
        let got: Vec<_> = got.iter().map(|x| (x.from_ms, x.to_ms, x.state)).collect();
        assert_eq!(
            got,
            [
                (0, 11 * s, SpanState::Up),
                (11 * s, 28 * s, SpanState::Unknown),
                (28 * s, 40 * s, SpanState::Up),
            ]
        );
        // Without the outage the same silence is down.
        let got = spans(&segs, 0, 40 * s, 2_500, &Outages::none());
        assert_eq!(got[1].state, SpanState::Down);
    }

    #[test]
    fn planned_windows_relabel_down_and_off_only() {
        let sp = |a: Ms, b: Ms, state: SpanState| Span {
            from_ms: a,
            to_ms: b,
            state,
        };
        let spans = vec![
            sp(0, 10, SpanState::Up),
            sp(10, 20, SpanState::Down),
            sp(20, 30, SpanState::Up),
            sp(30, 40, SpanState::Off),
            sp(40, 50, SpanState::Unknown),
        ];
        assert_eq!(mark_planned(spans.clone(), &[]), spans);
        assert_eq!(
            mark_planned(spans, &[(5, 12), (15, 17), (35, 45)]),
            vec![
                sp(0, 10, SpanState::Up),
                sp(10, 12, SpanState::Planned),
                sp(12, 15, SpanState::Down),
                sp(15, 17, SpanState::Planned),
                sp(17, 20, SpanState::Down),
                sp(20, 30, SpanState::Up),
                sp(30, 35, SpanState::Off),
                sp(35, 40, SpanState::Planned),
                sp(40, 50, SpanState::Unknown),
            ]
        );
    }

    #[test]
    fn a_live_host_is_up_until_now() {
        let segs = [seg(0, 10 * H - 5_000, GapCause::Pending, None)];
        let got = spans(&segs, H, 10 * H, 60_000, &Outages::none());
        assert_eq!(
            got,
            [Span {
                from_ms: H,
                to_ms: 10 * H,
                state: SpanState::Up
            }]
        );
    }

    #[test]
    fn boots_inside_the_window_once() {
        let segs = [
            seg(2 * H, 3 * H, GapCause::Shutdown, Some(4 * H)),
            SegRowH {
                boot_ms: Some(2 * H - 60_000 + 1_000),
                ..seg(4 * H, 5 * H, GapCause::Shutdown, Some(6 * H))
            },
            seg(6 * H, 7 * H, GapCause::Pending, None),
        ];
        assert_eq!(boots(&segs, 0, 10 * H), [2 * H - 60_000, 6 * H - 60_000]);
        assert_eq!(boots(&segs, 3 * H, 10 * H), [6 * H - 60_000]);
    }

    #[test]
    fn probe_shares_and_latency_per_step() {
        let p = |start, end, ok, lat_sum, lat_n| ProbeRowH {
            target: "mis".into(),
            cat: 0,
            start,
            end,
            ok,
            lat_sum,
            lat_n,
        };
        let rows = [p(0, H / 2, true, 100, 2), p(H / 2, H, false, 0, 0)];
        let s = probe_series(&rows, 0, 2 * H, H);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].category, Category::Mis);
        assert_eq!(s[0].points.len(), 1);
        assert!((s[0].points[0].ok_share - 0.5).abs() < 1e-9);
        assert_eq!(s[0].points[0].latency_ms, Some(50.0));
    }
}
