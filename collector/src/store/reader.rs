//! Read-only access to the store for reports: the aggregates of a period, from monthly and
//! daily aggregates where they are materialized and current, from the raw intervals elsewhere
//! (the current day, partial days at the period's edges, days changed by late data).
//!
//! A [`Reader`] is a blocking type: open one per request inside
//! `tokio::task::spawn_blocking` (opening is cheap), or keep one per worker thread.

use super::config::StoreConfig;
use super::load::{
    Ctx, HostRow, compute_window, load_hosts, load_mos, load_runs, load_window, outages,
    resource_window, unpack_agg, workcal,
};
use super::{StoreError, schema};
use crate::availability::planned::{PlannedWork, Scope, host_windows};
use crate::availability::timeline::{PlannedAgg, host_agg_planned};
use crate::availability::{
    Calendar, HostAgg, HostInfo, Ms, PeriodData, ReachAgg, ResourceAgg, cat_of,
};
use crate::roster::Roster;
use dozor_proto::Category;
use rusqlite::{Connection, params};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

/// A read-only connection to the store.
pub struct Reader {
    conn: Connection,
    cal: Calendar,
    gap_factor: f64,
    /// The config's planned works (the store's own are read with each period).
    planned: Vec<PlannedWork>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// Days of a period and how each is read.
#[derive(Debug, Default)]
struct Plan {
    /// Windows read from the raw intervals for every host.
    raw: Vec<(Ms, Ms)>,
    /// Whole months read from monthly aggregates.
    months: Vec<i32>,
    /// Whole days read from daily aggregates.
    days: Vec<i32>,
}

impl Reader {
    /// Opens the store at `path` read-only.
    pub fn open(path: &Path, cfg: &StoreConfig) -> Result<Reader, StoreError> {
        let conn = super::history::open(path)?;
        Ok(Reader {
            conn,
            cal: Calendar::new(cfg.region_tz),
            gap_factor: cfg.gap_factor,
            planned: cfg.planned_works.clone(),
        })
    }

    pub fn calendar(&self) -> Calendar {
        self.cal
    }

    /// The aggregates of `[from, min(to, now))` for every host registered before its end,
    /// with the resources' own figures.
    pub fn period_data(
        &self,
        roster: &Roster,
        from: Ms,
        to: Ms,
        now: Ms,
    ) -> Result<PeriodData, StoreError> {
        self.period_data_with(roster, from, to, now, true)
    }

    /// As [`Reader::period_data`]; `resources: false` leaves `PeriodData::resources` empty
    /// (whole aggregated days are read from `res_day`/`res_chan`, the rest from the raw
    /// intervals: reports that do not show them skip that cost).
    pub fn period_data_with(
        &self,
        roster: &Roster,
        from: Ms,
        to: Ms,
        now: Ms,
        resources: bool,
    ) -> Result<PeriodData, StoreError> {
        let to = to.min(now);
        let tx = self.conn.unchecked_transaction()?;
        let r = self.period_data_tx(roster, from, to, now, resources);
        tx.finish()?;
        r
    }

    fn period_data_tx(
        &self,
        roster: &Roster,
        from: Ms,
        to: Ms,
        now: Ms,
        resources: bool,
    ) -> Result<PeriodData, StoreError> {
        let c = &self.conn;
        let mut data = PeriodData {
            from,
            to: to.max(from),
            ..PeriodData::default()
        };
        let hosts = load_hosts(c)?;
        if to <= from || hosts.is_empty() {
            data.hosts = hosts
                .iter()
                .filter(|h| h.first_ms < data.to)
                .map(|h| (info(h), HostAgg::default()))
                .collect();
            return Ok(data);
        }
        let mos = load_mos(c)?;
        let oid_of: HashMap<i64, String> = mos.iter().map(|(id, o, _)| (*id, o.clone())).collect();
        let stale: HashSet<i64> = mos
            .iter()
            .filter(|(_, oid, wfp)| workcal(roster, oid).fingerprint() != *wfp)
            .map(|(id, _, _)| *id)
            .collect();
        let runs = load_runs(c)?;
        let out = outages(&runs, now);
        let ctx = Ctx {
            roster,
            outages: &out,
            gap_factor: self.gap_factor,
            cal: self.cal,
        };
        let wm = schema::meta_get(c, "watermark_day")?.map(|d| d as i32);
        let plan = self.plan(from, to, wm);
        let mut dirty_h: HashMap<i64, BTreeSet<i32>> = HashMap::new();
        let mut dirty_m: HashMap<i64, BTreeSet<i32>> = HashMap::new();
        if !plan.months.is_empty() || !plan.days.is_empty() {
            let (d0, d1) = (self.cal.day_of(from), self.cal.day_of(to - 1));
            let mut st = c.prepare_cached(
                "SELECT host_id, day FROM dirty_host WHERE day BETWEEN ?1 AND ?2",
            )?;
            for r in st.query_map(params![d0, d1], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (h, d): (i64, i32) = r?;
                dirty_h.entry(h).or_default().insert(d);
            }
            let mut st =
                c.prepare_cached("SELECT mo_id, day FROM dirty_mo WHERE day BETWEEN ?1 AND ?2")?;
            for r in st.query_map(params![d0, d1], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (m, d): (i64, i32) = r?;
                dirty_m.entry(m).or_default().insert(d);
            }
        }
        // МО being recomputed after a change of working hours: their range of days is raw.
        let mut stale_days: HashMap<i64, (i32, i32)> = HashMap::new();
        if !plan.months.is_empty() || !plan.days.is_empty() {
            let mut st = c.prepare_cached("SELECT mo_id, from_day, to_day FROM stale_mo")?;
            for r in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
                let (m, f, t): (i64, i32, i32) = r?;
                stale_days.insert(m, (f, t));
            }
        }
        let by_id: HashMap<i64, &HostRow> = hosts.iter().map(|h| (h.id, h)).collect();
        let mut hacc: HashMap<i64, HostAgg> = HashMap::new();
        let mut macc: HashMap<(i64, u8), ReachAgg> = HashMap::new();
        // Host-days and МО-days to compute from raw intervals.
        let mut raw_h: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut raw_m: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let host_exc = |h: &HostRow, d: i32| -> bool {
            stale.contains(&h.mo_id)
                || stale_days
                    .get(&h.mo_id)
                    .is_some_and(|&(f, t)| f <= d && d < t)
                || dirty_h.get(&h.id).is_some_and(|s| s.contains(&d))
        };

        for &m in &plan.months {
            let (f, l) = self.cal.month_days(m);
            // Hosts with a dirty day in the month or of an МО whose calendar changed.
            let exc: HashSet<i64> = hosts
                .iter()
                .filter(|h| {
                    stale.contains(&h.mo_id)
                        || stale_days
                            .get(&h.mo_id)
                            .is_some_and(|&(sf, st)| sf < l && f < st)
                        || dirty_h
                            .get(&h.id)
                            .is_some_and(|s| s.range(f..l).next().is_some())
                })
                .map(|h| h.id)
                .collect();
            let mut st = c.prepare_cached(
                "SELECT host_id, up, down, unk, up_w, down_w, unk_w, off_w, off_d, flags FROM host_month WHERE month = ?1",
            )?;
            for r in st.query_map([m], agg_row)? {
                let (id, a) = r?;
                if exc.contains(&id) || !by_id.contains_key(&id) {
                    continue;
                }
                hacc.entry(id).or_default().add(&a);
            }
            // Hosts with exceptions in the month: day by day.
            for id in &exc {
                let Some(h) = by_id.get(id) else { continue };
                for d in f..l {
                    if host_exc(h, d) {
                        raw_h.entry(d).or_default().push(h.id);
                    } else {
                        self.add_host_day(c, h.id, d, &mut hacc)?;
                    }
                }
            }
            let mut st = c.prepare_cached(
                "SELECT mo_id, cat, reach, unreach, ws_d, any_d FROM mo_month WHERE month = ?1",
            )?;
            let mut mseen = HashSet::new();
            for r in st.query_map([m], mo_row)? {
                let (mo, cat, a) = r?;
                mseen.insert(mo);
                if dirty_m
                    .get(&mo)
                    .is_some_and(|s| s.range(f..l).next().is_some())
                {
                    continue;
                }
                macc.entry((mo, cat)).or_default().add(&a);
            }
            for (mo, days) in &dirty_m {
                if days.range(f..l).next().is_none() {
                    continue;
                }
                for d in f..l {
                    if days.contains(&d) {
                        raw_m.entry(d).or_default().push(*mo);
                    } else if mseen.contains(mo) {
                        self.add_mo_day(c, *mo, d, &mut macc)?;
                    }
                }
            }
        }
        for &d in &plan.days {
            let mut st = c.prepare_cached(
                "SELECT host_id, up, down, unk, up_w, down_w, unk_w, off_w, off_d, flags FROM host_day WHERE day = ?1",
            )?;
            for r in st.query_map([d], agg_row)? {
                let (id, a) = r?;
                if by_id.get(&id).is_some_and(|h| !host_exc(h, d)) {
                    hacc.entry(id).or_default().add(&a);
                }
            }
            for h in &hosts {
                if host_exc(h, d) {
                    raw_h.entry(d).or_default().push(h.id);
                }
            }
            let mut st = c.prepare_cached(
                "SELECT mo_id, cat, reach, unreach, ws_d, any_d FROM mo_day WHERE day = ?1",
            )?;
            for r in st.query_map([d], mo_row)? {
                let (mo, cat, a) = r?;
                if !dirty_m.get(&mo).is_some_and(|s| s.contains(&d)) {
                    macc.entry((mo, cat)).or_default().add(&a);
                }
            }
            for (mo, days) in &dirty_m {
                if days.contains(&d) {
                    raw_m.entry(d).or_default().push(*mo);
                }
            }
        }
        // Raw windows for every host.
        let all: Vec<&HostRow> = hosts.iter().collect();
        for &(a, b) in &plan.raw {
            let rows = load_window(c, &self.cal, &hosts, None, a, b)?;
            let w = compute_window(&ctx, &rows, &all, a, b, true, true);
            for (id, x) in w.hosts {
                hacc.entry(id).or_default().add(&x);
            }
            for (k, x) in w.mos {
                macc.entry(k).or_default().add(&x);
            }
        }
        // Raw host-days and МО-days.
        for (d, ids) in raw_h {
            let (a, b) = (self.cal.day_start(d), self.cal.day_start(d + 1));
            let rows = load_window(c, &self.cal, &hosts, Some(&ids), a, b)?;
            let hs: Vec<&HostRow> = ids.iter().filter_map(|i| by_id.get(i).copied()).collect();
            for (id, x) in compute_window(&ctx, &rows, &hs, a, b, true, false).hosts {
                hacc.entry(id).or_default().add(&x);
            }
        }
        for (d, mos_d) in raw_m {
            let (a, b) = (self.cal.day_start(d), self.cal.day_start(d + 1));
            let hs: Vec<&HostRow> = hosts.iter().filter(|h| mos_d.contains(&h.mo_id)).collect();
            let ids: Vec<i64> = hs.iter().map(|h| h.id).collect();
            let rows = load_window(c, &self.cal, &hosts, Some(&ids), a, b)?;
            for (k, x) in compute_window(&ctx, &rows, &hs, a, b, false, true).mos {
                macc.entry(k).or_default().add(&x);
            }
        }
        // Planned works: down time inside their windows leaves `down` (the materialized days
        // know nothing of them, and works made over the API change the past).
        let mut works = self.planned.clone();
        works.extend(super::planned::list(c)?.into_iter().map(|e| e.work));
        // Target-scoped works: an МО's unreachable time of the category inside them.
        for (cat, spans) in target_windows(&works, from, to) {
            let ci = crate::availability::cat_index(cat);
            for (s, e) in spans {
                let rows = load_window(c, &self.cal, &hosts, None, s, e)?;
                let all: Vec<&HostRow> = hosts.iter().collect();
                for ((mo, k), r) in compute_window(&ctx, &rows, &all, s, e, false, true).mos {
                    if k != ci || r.unreach_ms == 0 {
                        continue;
                    }
                    let m = macc.entry((mo, k)).or_default();
                    m.unreach_ms = (m.unreach_ms - r.unreach_ms).max(0);
                    if let Some(oid) = oid_of.get(&mo) {
                        *data.mo_planned.entry((oid.clone(), cat)).or_default() += r.unreach_ms;
                    }
                }
            }
        }
        if !works.is_empty() {
            let live: Vec<&HostRow> = hosts.iter().filter(|h| h.first_ms < to).collect();
            for (id, pl) in planned_aggs(&ctx, c, &self.cal, &hosts, &live, &works, from, to)? {
                let a = hacc.entry(id).or_default();
                a.down_ms = (a.down_ms - pl.planned_ms).max(0);
                a.down_w_ms = (a.down_w_ms - pl.planned_w_ms).max(0);
                a.off_w_ms = (a.off_w_ms - pl.off_w_ms).max(0);
                a.off_w_days = (a.off_w_days - pl.off_w_days).max(0);
                if let Some(h) = by_id.get(&id) {
                    data.planned.insert((h.mo.clone(), h.host.clone()), pl);
                }
            }
        }
        // Resources need every МО's spans at the same instants: whole finished days from
        // `res_day`/`res_chan`, the rest (today, partial days at the edges, days changed by
        // late data) from the raw intervals day by day (docs/indicators.md, "Resource and
        // channel").
        let (d0, d1) = (self.cal.day_of(from), self.cal.day_of(to - 1));
        let mut res_mat: BTreeSet<i32> = BTreeSet::new();
        if resources {
            res_mat = plan
                .months
                .iter()
                .flat_map(|&m| {
                    let (f, l) = self.cal.month_days(m);
                    f..l
                })
                .chain(plan.days.iter().copied())
                .collect();
            if !res_mat.is_empty() {
                let mut st =
                    c.prepare_cached("SELECT day FROM dirty_res WHERE day BETWEEN ?1 AND ?2")?;
                for r in st.query_map(params![d0, d1], |r| r.get::<_, i32>(0))? {
                    res_mat.remove(&r?);
                }
                self.add_res_days(c, &res_mat, &oid_of, &mut data.resources)?;
            }
        }
        for d in (d0..=d1).filter(|d| resources && !res_mat.contains(d)) {
            let (a, b) = (
                from.max(self.cal.day_start(d)),
                to.min(self.cal.day_start(d + 1)),
            );
            if a >= b {
                continue;
            }
            let rows = load_window(c, &self.cal, &hosts, None, a, b)?;
            for (cat, r) in resource_window(&ctx, &rows, &hosts, a, b, now) {
                data.resources.entry(cat).or_default().add(&r);
            }
        }
        // A resource's down time inside planned works of its category (`target = …`) is
        // planned, not down: recomputed over those windows from the raw intervals, as for
        // hosts (works made over the API change the past).
        if resources {
            for (cat, spans) in target_windows(&works, from, to) {
                for (s, e) in spans {
                    let rows = load_window(c, &self.cal, &hosts, None, s, e)?;
                    for (k, r) in resource_window(&ctx, &rows, &hosts, s, e, now) {
                        if k == cat
                            && let Some(agg) = data.resources.get_mut(&k)
                        {
                            agg.move_to_planned(r.resource_down_ms);
                        }
                    }
                }
            }
        }
        data.hosts = hosts
            .iter()
            .filter(|h| h.first_ms < to)
            .map(|h| (info(h), hacc.get(&h.id).copied().unwrap_or_default()))
            .collect();
        for ((mo, cat), r) in macc {
            if let Some(oid) = oid_of.get(&mo)
                && !r.is_zero()
            {
                data.mo_reach.insert((oid.clone(), cat_of(cat)), r);
            }
        }
        Ok(data)
    }

    fn add_host_day(
        &self,
        c: &Connection,
        host: i64,
        day: i32,
        acc: &mut HashMap<i64, HostAgg>,
    ) -> Result<(), StoreError> {
        let mut st = c.prepare_cached(
            "SELECT host_id, up, down, unk, up_w, down_w, unk_w, off_w, off_d, flags FROM host_day
             WHERE day = ?1 AND host_id = ?2",
        )?;
        for r in st.query_map(params![day, host], agg_row)? {
            let (id, a) = r?;
            acc.entry(id).or_default().add(&a);
        }
        Ok(())
    }

    /// Adds the materialized resources' figures of `days` (a sorted set) to `acc`.
    fn add_res_days(
        &self,
        c: &Connection,
        days: &BTreeSet<i32>,
        oid_of: &HashMap<i64, String>,
        acc: &mut BTreeMap<Category, ResourceAgg>,
    ) -> Result<(), StoreError> {
        let (Some(&f), Some(&l)) = (days.first(), days.last()) else {
            return Ok(());
        };
        let mut st = c.prepare_cached(
            "SELECT day, cat, up, down, unk FROM res_day WHERE day BETWEEN ?1 AND ?2",
        )?;
        let rows = st.query_map(params![f, l], |r| {
            Ok((
                r.get::<_, i32>(0)?,
                r.get::<_, i64>(1)?,
                [r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?],
            ))
        })?;
        for r in rows {
            let (d, cat, v) = r?;
            if !days.contains(&d) {
                continue;
            }
            let a = acc.entry(res_cat(cat)?).or_default();
            a.resource_up_ms += v[0];
            a.resource_down_ms += v[1];
            a.resource_unknown_ms += v[2];
        }
        let mut st = c.prepare_cached(
            "SELECT day, cat, mo_id, ok, fail FROM res_chan WHERE day BETWEEN ?1 AND ?2",
        )?;
        let rows = st.query_map(params![f, l], |r| {
            Ok((
                r.get::<_, i32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                [r.get::<_, i64>(3)?, r.get(4)?],
            ))
        })?;
        for r in rows {
            let (d, cat, mo, v) = r?;
            if !days.contains(&d) {
                continue;
            }
            let Some(oid) = oid_of.get(&mo) else {
                return Err(StoreError::Corrupt(format!(
                    "res_chan: day {d}, unknown МО id {mo}"
                )));
            };
            let ch = acc
                .entry(res_cat(cat)?)
                .or_default()
                .channels
                .entry(oid.clone())
                .or_default();
            ch.channel_ok_ms += v[0];
            ch.channel_fail_ms += v[1];
        }
        Ok(())
    }

    fn add_mo_day(
        &self,
        c: &Connection,
        mo: i64,
        day: i32,
        acc: &mut HashMap<(i64, u8), ReachAgg>,
    ) -> Result<(), StoreError> {
        let mut st = c.prepare_cached(
            "SELECT mo_id, cat, reach, unreach, ws_d, any_d FROM mo_day WHERE day = ?1 AND mo_id = ?2",
        )?;
        for r in st.query_map(params![day, mo], mo_row)? {
            let (m, cat, a) = r?;
            acc.entry((m, cat)).or_default().add(&a);
        }
        Ok(())
    }

    /// Splits `[from, to)` into whole materialized months, whole materialized days and raw
    /// windows.
    fn plan(&self, from: Ms, to: Ms, wm: Option<i32>) -> Plan {
        let mut p = Plan::default();
        let (d0, d1) = (self.cal.day_of(from), self.cal.day_of(to - 1));
        let mut mat: Vec<i32> = Vec::new();
        for d in d0..=d1 {
            let (ds, de) = (self.cal.day_start(d), self.cal.day_start(d + 1));
            let (a, b) = (from.max(ds), to.min(de));
            if a >= b {
                continue;
            }
            if a == ds && b == de && wm.is_some_and(|w| d < w) {
                mat.push(d);
            } else {
                match p.raw.last_mut() {
                    Some(last) if last.1 == a => last.1 = b,
                    _ => p.raw.push((a, b)),
                }
            }
        }
        let set: BTreeSet<i32> = mat.iter().copied().collect();
        let mut covered: HashSet<i32> = HashSet::new();
        let months: BTreeSet<i32> = mat.iter().map(|d| self.cal.month_of_day(*d)).collect();
        for m in months {
            let (f, l) = self.cal.month_days(m);
            if (f..l).all(|d| set.contains(&d)) {
                p.months.push(m);
                covered.extend(f..l);
            }
        }
        p.days = mat.into_iter().filter(|d| !covered.contains(d)).collect();
        p
    }
}

/// The windows of target-scoped works within `[from, to)`, clipped, per category (sorted,
/// disjoint).
fn target_windows(works: &[PlannedWork], from: Ms, to: Ms) -> BTreeMap<Category, Vec<(Ms, Ms)>> {
    let mut out: BTreeMap<Category, Vec<(Ms, Ms)>> = BTreeMap::new();
    for w in works {
        if let Scope::Target(cat) = w.scope {
            out.entry(cat).or_default().extend(
                w.windows(from, to)
                    .into_iter()
                    .map(|(s, e)| (s.max(from), e.min(to)))
                    .filter(|(s, e)| s < e),
            );
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
        let mut merged: Vec<(Ms, Ms)> = Vec::with_capacity(v.len());
        for &(s, e) in v.iter() {
            match merged.last_mut() {
                Some(l) if s <= l.1 => l.1 = l.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *v = merged;
    }
    out
}

/// The down time of `hosts` inside the planned windows covering them within `[from, to)`, per
/// host id (hosts without any are absent). Each window is computed from the raw intervals on
/// its own: a host's aggregate is additive over disjoint windows, so what is taken out of the
/// period's `down` is exactly the down time inside them.
#[allow(clippy::too_many_arguments)]
fn planned_aggs(
    ctx: &Ctx<'_>,
    c: &Connection,
    cal: &Calendar,
    all: &[HostRow],
    hosts: &[&HostRow],
    works: &[PlannedWork],
    from: Ms,
    to: Ms,
) -> Result<HashMap<i64, PlannedAgg>, StoreError> {
    // Hosts by window: a region-wide weekly work is one load per week, not per host.
    let mut by_span: BTreeMap<(Ms, Ms), Vec<&HostRow>> = BTreeMap::new();
    for h in hosts {
        for (s, e) in host_windows(works, &h.mo, &h.site, &h.host, from, to) {
            let (s, e) = (s.max(from), e.min(to));
            if s < e {
                by_span.entry((s, e)).or_default().push(h);
            }
        }
    }
    let mut out: HashMap<i64, PlannedAgg> = HashMap::new();
    let mut work: HashMap<(i64, Ms), Vec<(Ms, Ms)>> = HashMap::new();
    for ((s, e), hs) in by_span {
        let ids: Vec<i64> = hs.iter().map(|h| h.id).collect();
        let rows = load_window(c, cal, all, Some(&ids), s, e)?;
        for h in hs {
            let Some(segs) = rows.segs.get(&h.id) else {
                continue;
            };
            let w = work
                .entry((h.mo_id, s))
                .or_insert_with(|| workcal(ctx.roster, &h.mo).windows(s, e));
            let (_, pl) = host_agg_planned(segs, &[], ctx.tol(h), ctx.outages, w, &[(s, e)], s, e);
            if pl != PlannedAgg::default() {
                let t = out.entry(h.id).or_default();
                t.planned_ms += pl.planned_ms;
                t.planned_w_ms += pl.planned_w_ms;
                t.off_w_ms += pl.off_w_ms;
                t.off_w_days += pl.off_w_days;
            }
        }
    }
    Ok(out)
}

/// The category of a stored index, refusing one out of range.
fn res_cat(i: i64) -> Result<Category, StoreError> {
    u8::try_from(i)
        .ok()
        .filter(|i| *i < 12)
        .map(cat_of)
        .ok_or_else(|| StoreError::Corrupt(format!("res_day/res_chan: category {i}")))
}

fn info(h: &HostRow) -> HostInfo {
    HostInfo {
        mo: h.mo.clone(),
        host: h.host.clone(),
        role: h.role,
        site: h.site.clone(),
        hostname: h.hostname.clone(),
        first_ms: h.first_ms,
    }
}

fn agg_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, HostAgg)> {
    Ok((
        r.get(0)?,
        unpack_agg([
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
        ]),
    ))
}

fn mo_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, u8, ReachAgg)> {
    Ok((
        r.get(0)?,
        r.get::<_, i64>(1)?.clamp(0, 11) as u8,
        ReachAgg {
            reach_ms: r.get(2)?,
            unreach_ms: r.get(3)?,
            ws_days: r.get(4)?,
            any_days: r.get(5)?,
        },
    ))
}
