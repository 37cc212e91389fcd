//! Maintenance: materializing daily and monthly aggregates (finished days, and days changed by
//! late data), retention, and the outbox bound.

use super::Writer;
use crate::availability::{HostAgg, Ms, ReachAgg, ResourceAgg, cat_index};
use crate::store::load::{
    Ctx, HostRow, compute_window, load_hosts, load_mos, load_runs, load_window, outages,
    pack_flags, resource_window, unpack_agg, workcal,
};
use crate::store::{StoreError, influx, schema};
use dozor_proto::Category;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};

/// What a maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintainReport {
    /// Finished days materialized for every host.
    pub days: u32,
    /// Host-days and МО-days recomputed after late data.
    pub dirty_host_days: usize,
    pub dirty_mo_days: usize,
    /// Days of the resources' own figures recomputed after late data.
    pub dirty_res_days: usize,
    /// Host-days recomputed because their МО's working hours changed.
    pub stale_host_days: usize,
    /// Rows deleted by retention.
    pub expired_rows: u64,
    /// Outbox lines dropped by its bounds.
    pub outbox_dropped_lines: u64,
}

const DAY_MS: Ms = 86_400_000;

/// The `now` of a finished day's resources: long past it, so a probe interval that ended before
/// midnight is not taken as still going (as a reader sees the day once its hosts' gap
/// tolerance has passed, whatever the time of maintenance).
const FINISHED: Ms = Ms::MAX / 4;

/// A day is aggregated this long after it ends, when the messages that extend its last
/// intervals past midnight have arrived (otherwise they would make it dirty again at once).
const SETTLE_MS: Ms = 30 * 60_000;

impl Writer {
    /// Marks every materialized day of МО whose working calendar changed as stale.
    pub(super) fn check_calendars(&mut self, c: &Connection) -> Result<(), StoreError> {
        let Some(wm) = self.wm else { return Ok(()) };
        for (id, oid, wfp) in load_mos(c)? {
            let cur = workcal(&self.roster, &oid).fingerprint();
            if cur == wfp {
                continue;
            }
            tracing::info!(mo = %oid, "working hours changed: recomputing daily aggregates");
            let first: Option<Ms> = c.query_row(
                "SELECT min(first_ms) FROM hosts WHERE mo_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            let oldest = self.wm_start - self.cfg.retention.as_millis() as Ms;
            let from = self.cal.day_of(first.unwrap_or(self.wm_start).max(oldest));
            c.execute_batch("BEGIN IMMEDIATE")?;
            let r = (|| -> Result<(), StoreError> {
                c.execute(
                    "INSERT OR REPLACE INTO stale_mo(mo_id, from_day, to_day) VALUES (?1, ?2, ?3)",
                    params![id, from, wm],
                )?;
                c.execute("UPDATE mos SET wfp = ?2 WHERE id = ?1", params![id, cur])?;
                Ok(())
            })();
            match r {
                Ok(()) => {
                    if let Err(e) = c.execute_batch("COMMIT") {
                        let _ = c.execute_batch("ROLLBACK");
                        return Err(e.into());
                    }
                }
                Err(e) => {
                    let _ = c.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Recomputes the days of МО whose calendar changed, oldest first, until `deadline`.
    /// Returns the host-days recomputed.
    fn recompute_stale(
        &mut self,
        c: &Connection,
        ctx: &Ctx<'_>,
        hosts: &[HostRow],
        deadline: Option<std::time::Instant>,
    ) -> Result<usize, StoreError> {
        let mut done = 0;
        loop {
            let mut st = c.prepare_cached("SELECT mo_id, from_day, to_day FROM stale_mo")?;
            let stale: Vec<(i64, i32, i32)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            drop(st);
            let Some(day) = stale.iter().map(|s| s.1).min() else {
                return Ok(done);
            };
            let mos: Vec<i64> = stale.iter().filter(|s| s.1 == day).map(|s| s.0).collect();
            let hs: Vec<&HostRow> = hosts.iter().filter(|h| mos.contains(&h.mo_id)).collect();
            let ids: Vec<i64> = hs.iter().map(|h| h.id).collect();
            let (a, b) = (self.cal.day_start(day), self.cal.day_start(day + 1));
            let rows = load_window(c, &self.cal, hosts, Some(&ids), a, b)?;
            // МО-days too: their usage day counts depend on the working calendar.
            let aggs = compute_window(ctx, &rows, &hs, a, b, true, true);
            for id in &ids {
                let agg = aggs.hosts.get(id).copied().unwrap_or_default();
                self.put_host_day(c, *id, day, &agg)?;
            }
            for mo in &mos {
                for cat in 0..12u8 {
                    let r = aggs.mos.get(&(*mo, cat)).copied().unwrap_or_default();
                    self.put_mo_day(c, *mo, cat, day, &r)?;
                }
            }
            done += ids.len();
            for mo in &mos {
                c.prepare_cached("UPDATE stale_mo SET from_day = from_day + 1 WHERE mo_id = ?1")?
                    .execute([mo])?;
            }
            c.execute("DELETE FROM stale_mo WHERE from_day >= to_day", [])?;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(done);
            }
        }
    }

    /// One maintenance pass at collector time `now`, recomputing at most `budget` dirty
    /// host-days (and as many МО-days).
    pub(super) fn maintain(
        &mut self,
        c: &Connection,
        now: Ms,
        budget: usize,
    ) -> Result<MaintainReport, StoreError> {
        let mut rep = MaintainReport::default();
        c.execute_batch("BEGIN IMMEDIATE")?;
        let r = self.maintain_tx(c, now, budget, &mut rep);
        match r {
            Ok(()) => {
                if let Err(e) = c.execute_batch("COMMIT") {
                    let _ = c.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                Ok(rep)
            }
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                self.load_meta(c)?;
                Err(e)
            }
        }
    }

    fn maintain_tx(
        &mut self,
        c: &Connection,
        now: Ms,
        budget: usize,
        rep: &mut MaintainReport,
    ) -> Result<(), StoreError> {
        // The collector is alive now.
        if let Some((id, end)) = &mut self.run
            && now > *end
        {
            *end = now;
            c.prepare_cached("UPDATE runs SET end_ms = ?2 WHERE id = ?1")?
                .execute(params![*id, now])?;
        }
        if self.wm.is_none() {
            let d = self.cal.day_of(now);
            self.set_watermark(c, d)?;
        }
        let day_due = self
            .wm
            .is_some_and(|wm| self.cal.day_start(wm + 1) + SETTLE_MS <= now);
        let dirty: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM dirty_host) OR EXISTS(SELECT 1 FROM dirty_mo)
             OR EXISTS(SELECT 1 FROM stale_mo) OR EXISTS(SELECT 1 FROM dirty_res)",
            [],
            |r| r.get(0),
        )?;
        if day_due || dirty {
            let hosts = load_hosts(c)?;
            let runs = load_runs(c)?;
            let out = outages(&runs, now);
            let roster = self.roster.clone();
            let ctx = Ctx {
                roster: &roster,
                outages: &out,
                gap_factor: self.cfg.gap_factor,
                cal: self.cal,
            };
            // Finished days.
            while let Some(wm) = self.wm {
                if self.cal.day_start(wm + 1) + SETTLE_MS > now {
                    break;
                }
                self.materialize_day(c, &ctx, &hosts, wm)?;
                rep.days += 1;
                self.set_watermark(c, wm + 1)?;
            }
            // Days changed by late data.
            rep.dirty_host_days = self.recompute_dirty_hosts(c, &ctx, &hosts, budget)?;
            rep.dirty_mo_days = self.recompute_dirty_mos(c, &ctx, &hosts, budget)?;
            // Whole days of every host (resources, МО whose working hours changed): about a
            // second per pass from `write`.
            let deadline = (budget != usize::MAX)
                .then(|| std::time::Instant::now() + std::time::Duration::from_secs(1));
            rep.dirty_res_days = self.recompute_dirty_res(c, &ctx, &hosts, deadline)?;
            rep.stale_host_days = self.recompute_stale(c, &ctx, &hosts, deadline)?;
        }
        // Retention, once a day.
        if now - schema::meta_get(c, "retention_ms")?.unwrap_or(0) >= DAY_MS {
            rep.expired_rows = self.retention(c, now)?;
            schema::meta_set(c, "retention_ms", now)?;
        }
        let (age, bytes) = match &self.cfg.influx {
            Some(i) => (i.outbox_max_age.as_millis() as Ms, i.outbox_max_bytes),
            None => (7 * DAY_MS, 1 << 30),
        };
        let dropped = influx::prune_outbox(c, now, age, bytes)?;
        if dropped > 0 {
            tracing::warn!(
                lines = dropped,
                "influx outbox over its bounds: oldest points dropped"
            );
            self.stats.outbox_dropped_lines += dropped;
            schema::meta_set(
                c,
                "outbox_dropped_lines",
                self.stats.outbox_dropped_lines as i64,
            )?;
        }
        rep.outbox_dropped_lines = dropped;
        Ok(())
    }

    fn materialize_day(
        &mut self,
        c: &Connection,
        ctx: &Ctx<'_>,
        hosts: &[HostRow],
        day: i32,
    ) -> Result<(), StoreError> {
        let (a, b) = (self.cal.day_start(day), self.cal.day_start(day + 1));
        let rows = load_window(c, &self.cal, hosts, None, a, b)?;
        let all: Vec<&HostRow> = hosts.iter().collect();
        let aggs = compute_window(ctx, &rows, &all, a, b, true, true);
        for (id, agg) in &aggs.hosts {
            self.put_host_day(c, *id, day, agg)?;
        }
        for ((mo, cat), r) in &aggs.mos {
            self.put_mo_day(c, *mo, *cat, day, r)?;
        }
        let res = resource_window(ctx, &rows, hosts, a, b, FINISHED);
        put_res_day(c, day, &res)?;
        c.prepare_cached("DELETE FROM dirty_res WHERE day = ?1")?
            .execute([day])?;
        Ok(())
    }

    /// Recomputes the resources' days changed by late data, oldest first: at least one, then
    /// until `deadline`. Returns the days recomputed.
    fn recompute_dirty_res(
        &mut self,
        c: &Connection,
        ctx: &Ctx<'_>,
        hosts: &[HostRow],
        deadline: Option<std::time::Instant>,
    ) -> Result<usize, StoreError> {
        let mut done = 0;
        loop {
            let day: Option<i32> = c
                .prepare_cached("SELECT day FROM dirty_res ORDER BY day LIMIT 1")?
                .query_row([], |r| r.get(0))
                .optional()?;
            let Some(day) = day else { return Ok(done) };
            let (a, b) = (self.cal.day_start(day), self.cal.day_start(day + 1));
            let rows = load_window(c, &self.cal, hosts, None, a, b)?;
            put_res_day(c, day, &resource_window(ctx, &rows, hosts, a, b, FINISHED))?;
            c.prepare_cached("DELETE FROM dirty_res WHERE day = ?1")?
                .execute([day])?;
            done += 1;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(done);
            }
        }
    }

    fn recompute_dirty_hosts(
        &mut self,
        c: &Connection,
        ctx: &Ctx<'_>,
        hosts: &[HostRow],
        budget: usize,
    ) -> Result<usize, StoreError> {
        let mut st =
            c.prepare_cached("SELECT host_id, day FROM dirty_host ORDER BY day LIMIT ?1")?;
        let list: Vec<(i64, i32)> = st
            .query_map([budget.min(i64::MAX as usize) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        drop(st);
        let by_id: HashMap<i64, &HostRow> = hosts.iter().map(|h| (h.id, h)).collect();
        let mut by_day: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (h, d) in &list {
            by_day.entry(*d).or_default().push(*h);
        }
        for (day, ids) in by_day {
            let (a, b) = (self.cal.day_start(day), self.cal.day_start(day + 1));
            let known: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|i| by_id.contains_key(i))
                .collect();
            let rows = load_window(c, &self.cal, hosts, Some(&known), a, b)?;
            let hs: Vec<&HostRow> = known.iter().filter_map(|i| by_id.get(i).copied()).collect();
            let aggs = compute_window(ctx, &rows, &hs, a, b, true, false);
            for id in &ids {
                let agg = aggs.hosts.get(id).copied().unwrap_or_default();
                self.put_host_day(c, *id, day, &agg)?;
                c.prepare_cached("DELETE FROM dirty_host WHERE host_id = ?1 AND day = ?2")?
                    .execute(params![id, day])?;
            }
        }
        Ok(list.len())
    }

    fn recompute_dirty_mos(
        &mut self,
        c: &Connection,
        ctx: &Ctx<'_>,
        hosts: &[HostRow],
        budget: usize,
    ) -> Result<usize, StoreError> {
        let mut st = c.prepare_cached("SELECT mo_id, day FROM dirty_mo ORDER BY day LIMIT ?1")?;
        let list: Vec<(i64, i32)> = st
            .query_map([budget.min(i64::MAX as usize) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        drop(st);
        let mut by_day: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (m, d) in &list {
            by_day.entry(*d).or_default().push(*m);
        }
        for (day, mos) in by_day {
            let (a, b) = (self.cal.day_start(day), self.cal.day_start(day + 1));
            let hs: Vec<&HostRow> = hosts.iter().filter(|h| mos.contains(&h.mo_id)).collect();
            let ids: Vec<i64> = hs.iter().map(|h| h.id).collect();
            let rows = load_window(c, &self.cal, hosts, Some(&ids), a, b)?;
            let aggs = compute_window(ctx, &rows, &hs, a, b, false, true);
            for mo in &mos {
                for cat in 0..12u8 {
                    let r = aggs.mos.get(&(*mo, cat)).copied().unwrap_or_default();
                    self.put_mo_day(c, *mo, cat, day, &r)?;
                }
                c.prepare_cached("DELETE FROM dirty_mo WHERE mo_id = ?1 AND day = ?2")?
                    .execute(params![mo, day])?;
            }
        }
        Ok(list.len())
    }

    /// Stores a host-day (deleting it when zero) and applies the difference to its month.
    fn put_host_day(
        &mut self,
        c: &Connection,
        host: i64,
        day: i32,
        agg: &HostAgg,
    ) -> Result<(), StoreError> {
        let old = get_agg(c, "host_day", "day", day, host)?;
        if old.is_none() && agg.is_zero() {
            return Ok(());
        }
        let old = old.unwrap_or_default();
        if old == *agg {
            return Ok(());
        }
        if agg.is_zero() {
            c.prepare_cached("DELETE FROM host_day WHERE day = ?1 AND host_id = ?2")?
                .execute(params![day, host])?;
        } else {
            put_agg(c, "host_day", "day", day, host, agg)?;
        }
        let month = self.cal.month_of_day(day);
        let mut m = get_agg(c, "host_month", "month", month, host)?.unwrap_or_default();
        m.up_ms += agg.up_ms - old.up_ms;
        m.down_ms += agg.down_ms - old.down_ms;
        m.unknown_ms += agg.unknown_ms - old.unknown_ms;
        m.up_w_ms += agg.up_w_ms - old.up_w_ms;
        m.down_w_ms += agg.down_w_ms - old.down_w_ms;
        m.unknown_w_ms += agg.unknown_w_ms - old.unknown_w_ms;
        m.off_w_ms += agg.off_w_ms - old.off_w_ms;
        m.off_w_days += agg.off_w_days - old.off_w_days;
        m.active |= agg.active;
        m.reached |= agg.reached;
        m.probed |= agg.probed;
        put_agg(c, "host_month", "month", month, host, &m)
    }

    fn put_mo_day(
        &mut self,
        c: &Connection,
        mo: i64,
        cat: u8,
        day: i32,
        r: &ReachAgg,
    ) -> Result<(), StoreError> {
        let old = c
            .prepare_cached(
                "SELECT reach, unreach, ws_d, any_d FROM mo_day
                 WHERE day = ?1 AND mo_id = ?2 AND cat = ?3",
            )?
            .query_row(params![day, mo, i64::from(cat)], |x| {
                Ok(ReachAgg {
                    reach_ms: x.get(0)?,
                    unreach_ms: x.get(1)?,
                    ws_days: x.get(2)?,
                    any_days: x.get(3)?,
                })
            })
            .optional()?
            .unwrap_or_default();
        if old == *r {
            return Ok(());
        }
        if r.is_zero() {
            c.prepare_cached("DELETE FROM mo_day WHERE day = ?1 AND mo_id = ?2 AND cat = ?3")?
                .execute(params![day, mo, i64::from(cat)])?;
        } else {
            c.prepare_cached(
                "INSERT OR REPLACE INTO mo_day(day, mo_id, cat, reach, unreach, ws_d, any_d)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                day,
                mo,
                i64::from(cat),
                r.reach_ms,
                r.unreach_ms,
                r.ws_days,
                r.any_days
            ])?;
        }
        let month = self.cal.month_of_day(day);
        c.prepare_cached(
            "INSERT INTO mo_month(month, mo_id, cat, reach, unreach, ws_d, any_d)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(month, mo_id, cat) DO UPDATE SET reach = reach + excluded.reach,
             unreach = unreach + excluded.unreach, ws_d = ws_d + excluded.ws_d,
             any_d = any_d + excluded.any_d",
        )?
        .execute(params![
            month,
            mo,
            i64::from(cat),
            r.reach_ms - old.reach_ms,
            r.unreach_ms - old.unreach_ms,
            r.ws_days - old.ws_days,
            r.any_days - old.any_days
        ])?;
        Ok(())
    }

    /// Deletes history older than the retention periods. Returns the rows deleted.
    fn retention(&mut self, c: &Connection, now: Ms) -> Result<u64, StoreError> {
        let cutoff = now - self.cfg.retention.as_millis() as Ms;
        let rcut = now - self.cfg.rollup_retention.as_millis() as Ms;
        let cday = self.cal.day_of(cutoff);
        // Keep whole months that are still partly retained.
        let cmonth = self.cal.month_of_day(cday);
        let mut n = 0usize;
        // (Range conditions on indexed columns: a segment whose gap ended before the cutoff
        // started before it; a reachability row never crosses a midnight.)
        n += c.execute(
            "DELETE FROM segs WHERE start_ms < ?1 AND next_ms IS NOT NULL AND next_ms < ?1",
            [cutoff],
        )?;
        n += c.execute(
            "DELETE FROM probes WHERE start_ms < ?1",
            [self.cal.day_start(cday)],
        )?;
        n += c.execute("DELETE FROM markers WHERE at_ms < ?1", [cutoff])?;
        n += c.execute("DELETE FROM host_day WHERE day < ?1", [cday])?;
        n += c.execute("DELETE FROM mo_day WHERE day < ?1", [cday])?;
        n += c.execute("DELETE FROM host_month WHERE month < ?1", [cmonth])?;
        n += c.execute("DELETE FROM mo_month WHERE month < ?1", [cmonth])?;
        n += c.execute("DELETE FROM dirty_host WHERE day < ?1", [cday])?;
        n += c.execute("DELETE FROM dirty_mo WHERE day < ?1", [cday])?;
        n += c.execute("DELETE FROM res_day WHERE day < ?1", [cday])?;
        n += c.execute("DELETE FROM res_chan WHERE day < ?1", [cday])?;
        n += c.execute("DELETE FROM dirty_res WHERE day < ?1", [cday])?;
        c.execute("UPDATE stale_mo SET from_day = max(from_day, ?1)", [cday])?;
        n += c.execute(
            "DELETE FROM runs WHERE stopped = 1 AND end_ms < ?1",
            [cutoff],
        )?;
        n += c.execute(
            "DELETE FROM rollups WHERE bucket < ?1",
            [rcut.div_euclid(300_000)],
        )?;
        Ok(n as u64)
    }
}

/// Replaces the resources' figures of `day` with `res` (every category and channel as computed,
/// zeros included, so that a read of the day equals the raw computation).
fn put_res_day(
    c: &Connection,
    day: i32,
    res: &std::collections::BTreeMap<Category, ResourceAgg>,
) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM res_day WHERE day = ?1")?
        .execute([day])?;
    c.prepare_cached("DELETE FROM res_chan WHERE day = ?1")?
        .execute([day])?;
    if res.is_empty() {
        return Ok(());
    }
    let ids: HashMap<String, i64> = load_mos(c)?
        .into_iter()
        .map(|(id, oid, _)| (oid, id))
        .collect();
    for (cat, r) in res {
        let ci = i64::from(cat_index(*cat));
        c.prepare_cached(
            "INSERT INTO res_day(day, cat, up, down, unk) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            day,
            ci,
            r.resource_up_ms,
            r.resource_down_ms,
            r.resource_unknown_ms
        ])?;
        for (mo, ch) in &r.channels {
            let Some(id) = ids.get(mo) else {
                return Err(StoreError::Corrupt(format!(
                    "resource channel of unknown МО {mo}"
                )));
            };
            c.prepare_cached(
                "INSERT INTO res_chan(day, cat, mo_id, ok, fail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![day, ci, id, ch.channel_ok_ms, ch.channel_fail_ms])?;
        }
    }
    Ok(())
}

fn get_agg(
    c: &Connection,
    table: &str,
    key: &str,
    k: i32,
    host: i64,
) -> Result<Option<HostAgg>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT up, down, unk, up_w, down_w, unk_w, off_w, off_d, flags FROM {table} WHERE {key} = ?1 AND host_id = ?2"
    ))?
    .query_row(params![k, host], |r| {
        Ok(unpack_agg([
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ]))
    })
    .optional()?)
}

fn put_agg(
    c: &Connection,
    table: &str,
    key: &str,
    k: i32,
    host: i64,
    a: &HostAgg,
) -> Result<(), StoreError> {
    c.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table}({key}, host_id, up, down, unk, up_w, down_w, unk_w,
         off_w, off_d, flags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?
    .execute(params![
        k,
        host,
        a.up_ms,
        a.down_ms,
        a.unknown_ms,
        a.up_w_ms,
        a.down_w_ms,
        a.unknown_w_ms,
        a.off_w_ms,
        a.off_w_days,
        pack_flags(a)
    ])?;
    Ok(())
}
