//! Applying records: the registry, segments (evidence and markers), reachability intervals,
//! rollups and outbox lines.

use super::HashMap;
use super::{HostMem, PTail, Roll, Tail, Writer, write_probe};
use crate::availability::{GapCause, Ms, cat_index};
use crate::record::{Accepted, Transition};
use crate::store::StoreError;
use crate::store::influx;
use crate::store::intervals::{
    Evidence, MARK_LOST, MARK_OFFLINE, Marks, NextEdit, PIv, PResult, Place, Seg, gap_cause, place,
    place_probe, split_days,
};
use dozor_proto::{ConnState, ErrorClass, Message};
use rusqlite::{Connection, OptionalExtension, params};

/// A stored segment row with its id and gap.
#[derive(Debug, Clone, Copy)]
struct SegDb {
    id: i64,
    seg: Seg,
    next: Option<Ms>,
    cause: i64,
}

fn seg_db(r: &rusqlite::Row<'_>) -> rusqlite::Result<SegDb> {
    Ok(SegDb {
        id: r.get(0)?,
        seg: Seg {
            start: r.get(1)?,
            end: r.get(2)?,
            boot_id: r.get(3)?,
            boot_ms: r.get(4)?,
        },
        next: r.get(5)?,
        cause: r.get(6)?,
    })
}

const SEG_COLS: &str = "id, start_ms, end_ms, boot_id, boot_ms, next_ms, cause";

fn err_code(e: Option<ErrorClass>) -> u8 {
    match e {
        None => 0,
        Some(ErrorClass::Dns) => 1,
        Some(ErrorClass::Connect) => 2,
        Some(ErrorClass::Timeout) => 3,
        Some(ErrorClass::Tls) => 4,
        Some(ErrorClass::HttpStatus) => 5,
        Some(ErrorClass::Other) => 6,
    }
}

/// FNV-1a of a boot id, as a positive i64.
fn boot_hash(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// Percent in hundredths, clamped.
fn hundredths(v: f64) -> i64 {
    if v.is_finite() {
        (v * 100.0).round().clamp(0.0, 10_000.0) as i64
    } else {
        0
    }
}

/// The statements that write a host's tail, prepared once per batch (the statement cache's
/// lookup hashes and compares the SQL text, on every use).
pub(super) struct TailStmts<'c> {
    /// Only the end, boot and cause changed: the indexed `start_ms` is left alone.
    end: rusqlite::CachedStatement<'c>,
    full: rusqlite::CachedStatement<'c>,
}

impl<'c> TailStmts<'c> {
    pub(super) fn new(c: &'c Connection) -> Result<TailStmts<'c>, StoreError> {
        Ok(TailStmts {
            end: c.prepare_cached(
                "UPDATE segs SET end_ms = ?2, boot_id = ?3, boot_ms = ?4, cause = ?5,
                 next_ms = NULL WHERE id = ?1",
            )?,
            full: c.prepare_cached(
                "UPDATE segs SET start_ms = ?2, end_ms = ?3, boot_id = ?4, boot_ms = ?5,
                 cause = ?6, next_ms = NULL WHERE id = ?1",
            )?,
        })
    }
}

impl Writer {
    fn mo_id(&mut self, c: &Connection, oid: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.mos.get(oid) {
            return Ok(id);
        }
        let wfp = crate::store::load::workcal(&self.roster, oid).fingerprint();
        c.prepare_cached("INSERT OR IGNORE INTO mos(oid, wfp) VALUES (?1, ?2)")?
            .execute(params![oid, wfp])?;
        let id: i64 = c
            .prepare_cached("SELECT id FROM mos WHERE oid = ?1")?
            .query_row([oid], |r| r.get(0))?;
        self.mos.insert(oid.to_string(), id);
        Ok(id)
    }

    fn target_id(&mut self, c: &Connection, name: &str, cat: u8) -> Result<i64, StoreError> {
        if let Some(&id) = self.targets.get(&cat).and_then(|m| m.get(name)) {
            return Ok(id);
        }
        c.prepare_cached("INSERT OR IGNORE INTO targets(name, cat) VALUES (?1, ?2)")?
            .execute(params![name, i64::from(cat)])?;
        let id: i64 = c
            .prepare_cached("SELECT id FROM targets WHERE name = ?1 AND cat = ?2")?
            .query_row(params![name, i64::from(cat)], |r| r.get(0))?;
        self.targets
            .entry(cat)
            .or_default()
            .insert(name.to_string(), id);
        Ok(id)
    }

    /// The host's index, loading or registering it (first seen at `t`).
    fn host(&mut self, c: &Connection, mo: &str, host: &str, t: Ms) -> Result<usize, StoreError> {
        if let Some(&i) = self.host_ix.get(mo).and_then(|m| m.get(host)) {
            return Ok(i);
        }
        let mo_id = self.mo_id(c, mo)?;
        let row = c
            .prepare_cached(
                "SELECT id, role, site, hostname, interval_s, first_ms FROM hosts
                 WHERE mo_id = ?1 AND host = ?2",
            )?
            .query_row(params![mo_id, host], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?;
        let (id, role, site, hostname, interval_s, first_ms) = match row {
            Some(r) => r,
            None => {
                c.prepare_cached("INSERT INTO hosts(mo_id, host, first_ms) VALUES (?1, ?2, ?3)")?
                    .execute(params![mo_id, host, t])?;
                (
                    c.last_insert_rowid(),
                    None,
                    String::new(),
                    String::new(),
                    30,
                    t,
                )
            }
        };
        let tail = load_tail(c, id)?;
        let h = HostMem {
            id,
            mo_id,
            mo: mo.to_string(),
            role: crate::store::load::role_of(role),
            site,
            hostname,
            interval_s,
            first_ms,
            inventory: None,
            reg_dirty: false,
            tail,
            tail_dirty: false,
            probes: HashMap::default(),
            probe_period: HashMap::default(),
            queued: false,
            roll: None,
        };
        let i = self.hosts.len();
        self.hosts.push(h);
        self.host_ix
            .entry(mo.to_string())
            .or_default()
            .insert(host.to_string(), i);
        Ok(i)
    }

    fn tol(&self, hi: usize) -> Ms {
        (self.cfg.gap_factor * self.hosts[hi].interval_s.max(1) as f64 * 1000.0) as Ms
    }

    pub(super) fn apply_msg(&mut self, c: &Connection, a: &Accepted) -> Result<(), StoreError> {
        let h = a.msg.header();
        let t = a.ts_ms;
        let hi = self.host(c, h.mo, h.host, t)?;
        match &a.msg {
            Message::Birth(e) => {
                let b = &e.body;
                let m = &mut self.hosts[hi];
                m.role = Some(b.role);
                m.site.clone_from(&b.site);
                m.hostname.clone_from(&b.hostname);
                m.interval_s = i64::from(b.interval_secs.max(1));
                m.inventory = serde_json::to_string(b).ok();
                m.reg_dirty = true;
                // Uptime by the agent's own clock; the boot instant on the corrected scale.
                let uptime = h.ts - b.boot_time.saturating_mul(1000);
                let ev = Evidence {
                    t,
                    boot_id: Some(boot_hash(&b.boot_id)),
                    boot_ms: (uptime >= 0).then(|| t - uptime),
                };
                if let Some(p) = b.prev_end {
                    self.prev_end(c, hi, p, t - h.ts)?;
                }
                self.evidence(c, hi, ev)?;
            }
            Message::Hb(e) => {
                let b = &e.body;
                let iv = i64::from(b.interval_secs.max(1));
                if self.hosts[hi].interval_s != iv {
                    self.hosts[hi].interval_s = iv;
                    self.hosts[hi].reg_dirty = true;
                }
                let ev = Evidence {
                    t,
                    boot_id: None,
                    boot_ms: Some(t - (b.uptime_secs.min(i64::MAX as u64 / 2000) as i64) * 1000),
                };
                self.evidence(c, hi, ev)?;
                let mem = if b.mem_total_bytes > 0 {
                    b.mem_used_bytes as f64 / b.mem_total_bytes as f64 * 100.0
                } else {
                    0.0
                };
                let disk = b
                    .disks
                    .iter()
                    .filter(|d| d.total_bytes > 0)
                    .map(|d| d.used_bytes as f64 / d.total_bytes as f64 * 100.0)
                    .fold(0.0, f64::max);
                let v = [
                    hundredths(f64::from(b.cpu_pct)),
                    hundredths(mem),
                    hundredths(disk),
                ];
                let key = (hi, t.div_euclid(300_000));
                match self.scratch.rollups.get_mut(&key) {
                    Some(r) => r.add(v),
                    None => {
                        self.scratch.rollups.insert(key, Roll::of(v));
                    }
                }
                if self.cfg.influx.is_some() {
                    let m = &self.hosts[hi];
                    let tags = influx::HostTags {
                        role: m.role,
                        site: &m.site,
                        hostname: &m.hostname,
                    };
                    influx::hb_line(&mut self.scratch.lines, h.mo, h.host, tags, b, t);
                    self.scratch.nlines += 1;
                }
            }
            Message::Probe(e) => {
                self.evidence(
                    c,
                    hi,
                    Evidence {
                        t,
                        boot_id: None,
                        boot_ms: None,
                    },
                )?;
                for r in &e.body.results {
                    let cat = cat_index(r.category);
                    let tid = self.target_id(c, &r.target, cat)?;
                    let res = PResult {
                        t,
                        ok: r.ok,
                        err: match (r.ok, r.error) {
                            (true, _) => 0,
                            (false, None) => 6,
                            (false, e) => err_code(e),
                        },
                        latency_ms: r.latency_ms.map(i64::from),
                    };
                    self.probe(c, hi, tid, cat, &res)?;
                    if self.cfg.influx.is_some() {
                        influx::probe_line(&mut self.scratch.lines, h.mo, h.host, r, t);
                        self.scratch.nlines += 1;
                    }
                }
            }
            Message::State(e) => match e.body.state {
                ConnState::Offline => self.marker(c, hi, t, MARK_OFFLINE)?,
                // A last will carries the time of the connection that set it: use receipt.
                ConnState::Lost => self.marker(c, hi, a.recv_ms, MARK_LOST)?,
                ConnState::Online => {}
            },
        }
        if t < self.hosts[hi].first_ms {
            self.hosts[hi].first_ms = t;
            self.hosts[hi].reg_dirty = true;
        }
        if self.hosts[hi].reg_dirty {
            self.queue(hi);
        }
        Ok(())
    }

    pub(super) fn apply_transition(
        &mut self,
        c: &Connection,
        t: &Transition,
    ) -> Result<(), StoreError> {
        let kind = match t.to {
            ConnState::Offline => MARK_OFFLINE,
            ConnState::Lost => MARK_LOST,
            ConnState::Online => return Ok(()),
        };
        let hi = self.host(c, &t.mo, &t.host_id, t.at_ms)?;
        if let Some(r) = t.role
            && self.hosts[hi].role.is_none()
        {
            self.hosts[hi].role = Some(r);
            self.hosts[hi].reg_dirty = true;
            self.queue(hi);
        }
        self.marker(c, hi, t.at_ms, kind)
    }

    /// How the agent's previous run ended (`birth.prev_end`, issue 13 items 8/9), `offset` ms
    /// of clock correction: it was alive until then (evidence, which extends the segment of its
    /// last messages when within the host's tolerance), and a graceful end is an `offline` just
    /// after it. Births of one run repeat it: both are idempotent.
    fn prev_end(
        &mut self,
        c: &Connection,
        hi: usize,
        p: dozor_proto::PrevEnd,
        offset: Ms,
    ) -> Result<(), StoreError> {
        let at = p.at.saturating_add(offset);
        // Time before the host's first message is not part of its life (an agent moved to a
        // new collector brings the end of a run this store never saw).
        if at <= self.hosts[hi].first_ms {
            return Ok(());
        }
        let alive = Evidence {
            t: at,
            boot_id: None,
            boot_ms: None,
        };
        self.evidence(c, hi, alive)?;
        if p.shutdown {
            // After the instant of life (a marker at a segment's end falls inside it).
            self.marker(c, hi, at + 1, MARK_OFFLINE)?;
        }
        Ok(())
    }

    /// Records an `offline`/`lost` marker and relabels the gap it falls in.
    fn marker(&mut self, c: &Connection, hi: usize, at: Ms, kind: i64) -> Result<(), StoreError> {
        let id = self.hosts[hi].id;
        let inserted = c
            .prepare_cached(
                "INSERT OR IGNORE INTO markers(host_id, at_ms, kind) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, at, kind])?;
        if inserted == 0 {
            return Ok(());
        }
        let Some(mut tail) = self.hosts[hi].tail else {
            return Ok(());
        };
        if at >= tail.seg.end {
            let slot = if kind == MARK_OFFLINE {
                &mut tail.offline_at
            } else {
                &mut tail.lost_at
            };
            *slot = Some(slot.map_or(at, |x| x.max(at)));
            let cause = tail.tail_cause();
            if cause != tail.cause {
                self.touch(hi, tail.seg.end, Ms::MAX);
                tail.cause = cause;
                self.hosts[hi].tail_dirty = true;
                self.queue(hi);
            }
            self.hosts[hi].tail = Some(tail);
            return Ok(());
        }
        // In a past gap (or inside a segment, where it means nothing).
        self.stats.out_of_order += 1;
        self.flush_tail(c, hi)?;
        let Some(prev) = seg_at_or_before(c, id, at)? else {
            return Ok(());
        };
        if at <= prev.seg.end {
            return Ok(());
        }
        let next = seg_after(c, id, prev.seg.start)?;
        self.relabel(c, hi, &prev, next.as_ref().map(|n| &n.seg))?;
        Ok(())
    }

    /// Writes the in-memory tail of a host now (before database-side operations).
    pub(super) fn flush_tail(&mut self, c: &Connection, hi: usize) -> Result<(), StoreError> {
        if self.hosts[hi].tail_dirty {
            self.flush_tail_with(hi, &mut TailStmts::new(c)?)?;
        }
        Ok(())
    }

    /// [`Writer::flush_tail`] with statements prepared once for a whole batch.
    pub(super) fn flush_tail_with(
        &mut self,
        hi: usize,
        st: &mut TailStmts<'_>,
    ) -> Result<(), StoreError> {
        let h = &mut self.hosts[hi];
        if h.tail_dirty
            && let Some(t) = &mut h.tail
        {
            if t.seg.start == t.stored_start {
                st.end.execute(params![
                    t.id,
                    t.seg.end,
                    t.seg.boot_id,
                    t.seg.boot_ms,
                    t.cause as i64
                ])?;
            } else {
                st.full.execute(params![
                    t.id,
                    t.seg.start,
                    t.seg.end,
                    t.seg.boot_id,
                    t.seg.boot_ms,
                    t.cause as i64
                ])?;
                t.stored_start = t.seg.start;
            }
            h.tail_dirty = false;
        }
        Ok(())
    }

    /// Recomputes and stores the cause of the gap after `prev` (closed by `next`, or open).
    fn relabel(
        &mut self,
        c: &Connection,
        hi: usize,
        prev: &SegDb,
        next: Option<&Seg>,
    ) -> Result<GapCause, StoreError> {
        let cause = self.relabel_quiet(c, hi, prev, next)?;
        self.touch(hi, prev.seg.end, next.map_or(Ms::MAX, |n| n.start));
        Ok(cause)
    }

    /// [`Writer::relabel`] without recording the change (the caller does).
    fn relabel_quiet(
        &mut self,
        c: &Connection,
        hi: usize,
        prev: &SegDb,
        next: Option<&Seg>,
    ) -> Result<GapCause, StoreError> {
        let id = self.hosts[hi].id;
        let until = next.map_or(Ms::MAX, |n| n.start);
        let mut marks = Marks::default();
        let mut st = c.prepare_cached(
            "SELECT DISTINCT kind FROM markers WHERE host_id = ?1 AND at_ms >= ?2 AND at_ms < ?3",
        )?;
        for k in st.query_map(params![id, prev.seg.end, until], |r| r.get::<_, i64>(0))? {
            marks.add(k?);
        }
        let cause = gap_cause(
            &prev.seg,
            next,
            marks,
            self.cfg.reboot_max.as_millis() as Ms,
        );
        c.prepare_cached(
            "UPDATE segs SET start_ms = ?2, end_ms = ?3, boot_id = ?4, boot_ms = ?5, cause = ?6,
             next_ms = ?7 WHERE id = ?1",
        )?
        .execute(params![
            prev.id,
            prev.seg.start,
            prev.seg.end,
            prev.seg.boot_id,
            prev.seg.boot_ms,
            cause as i64,
            next.map(|n| n.start)
        ])?;
        Ok(cause)
    }

    /// Places evidence that the host was up at `e.t`.
    fn evidence(&mut self, c: &Connection, hi: usize, e: Evidence) -> Result<(), StoreError> {
        let tol = self.tol(hi);
        let id = self.hosts[hi].id;
        match self.hosts[hi].tail {
            None => {
                c.prepare_cached(
                    "INSERT INTO segs(host_id, start_ms, end_ms, boot_id, boot_ms, cause, next_ms)
                     VALUES (?1, ?2, ?2, ?3, ?4, 0, NULL)",
                )?
                .execute(params![id, e.t, e.boot_id, e.boot_ms])?;
                let (off, lost) = tail_marks(c, id, e.t)?;
                let mut t = Tail {
                    id: c.last_insert_rowid(),
                    seg: Seg {
                        start: e.t,
                        end: e.t,
                        boot_id: e.boot_id,
                        boot_ms: e.boot_ms,
                    },
                    cause: GapCause::Pending,
                    offline_at: off,
                    lost_at: lost,
                    stored_start: e.t,
                };
                t.cause = t.tail_cause();
                if t.cause != GapCause::Pending {
                    self.hosts[hi].tail_dirty = true;
                    self.queue(hi);
                }
                self.hosts[hi].tail = Some(t);
                self.touch(hi, e.t, Ms::MAX);
            }
            Some(mut tail) if e.t >= tail.seg.start => {
                match place(Some(&tail.seg), None, &e, tol) {
                    Place::Inside(None) => {}
                    Place::Inside(Some(s)) | Place::ExtendPrev(s) => {
                        let old_end = tail.seg.end;
                        tail.seg = s;
                        let cause = tail.tail_cause();
                        if s.end != old_end || cause != tail.cause {
                            // The open gap (and its pending zone) moved.
                            self.touch(hi, old_end, Ms::MAX);
                        }
                        tail.cause = cause;
                        self.hosts[hi].tail = Some(tail);
                        self.hosts[hi].tail_dirty = true;
                        self.queue(hi);
                    }
                    Place::New(s) => {
                        // Close the tail's gap (markers in it are in the database).
                        self.flush_tail(c, hi)?;
                        let prev = SegDb {
                            id: tail.id,
                            seg: tail.seg,
                            next: None,
                            cause: tail.cause as i64,
                        };
                        c.prepare_cached(
                        "INSERT INTO segs(host_id, start_ms, end_ms, boot_id, boot_ms, cause, next_ms)
                         VALUES (?1, ?2, ?2, ?3, ?4, 0, NULL)",
                    )?
                    .execute(params![id, s.start, s.boot_id, s.boot_ms])?;
                        let new_id = c.last_insert_rowid();
                        let closed = self.relabel_quiet(c, hi, &prev, Some(&s))?;
                        // A shutdown or lost gap reads the same open or closed: only the time
                        // from the new segment on changed (a morning start does not make
                        // yesterday dirty).
                        let changed_from = if closed == tail.cause && closed.is_marked() {
                            s.start
                        } else {
                            tail.seg.end
                        };
                        let mut t = Tail {
                            id: new_id,
                            seg: s,
                            cause: GapCause::Pending,
                            offline_at: tail.offline_at.filter(|&x| x >= s.end),
                            lost_at: tail.lost_at.filter(|&x| x >= s.end),
                            stored_start: s.start,
                        };
                        t.cause = t.tail_cause();
                        self.hosts[hi].tail = Some(t);
                        self.hosts[hi].tail_dirty = t.cause != GapCause::Pending;
                        self.queue(hi);
                        self.touch(hi, changed_from, Ms::MAX);
                    }
                    // `next` is None for the tail.
                    Place::ExtendNext(_) | Place::Bridge(_) => {}
                }
            }
            Some(tail) => {
                self.stats.out_of_order += 1;
                self.flush_tail(c, hi)?;
                self.evidence_db(c, hi, e, tol, tail.id)?;
            }
        }
        Ok(())
    }

    /// Places old evidence through the database.
    fn evidence_db(
        &mut self,
        c: &Connection,
        hi: usize,
        e: Evidence,
        tol: Ms,
        tail_id: i64,
    ) -> Result<(), StoreError> {
        let id = self.hosts[hi].id;
        let prev = seg_at_or_before(c, id, e.t)?;
        let next = match &prev {
            Some(p) => seg_after(c, id, p.seg.start)?,
            None => first_seg(c, id)?,
        };
        let mut tail_changed = false;
        match place(
            prev.as_ref().map(|p| &p.seg),
            next.as_ref().map(|n| &n.seg),
            &e,
            tol,
        ) {
            Place::Inside(None) => {}
            Place::Inside(Some(s)) => {
                let p = prev.as_ref().map_or(0, |p| p.id);
                c.prepare_cached("UPDATE segs SET boot_id = ?2, boot_ms = ?3 WHERE id = ?1")?
                    .execute(params![p, s.boot_id, s.boot_ms])?;
                tail_changed = p == tail_id;
            }
            Place::ExtendPrev(s) => {
                if let Some(p) = prev {
                    self.touch(hi, p.seg.end, s.end);
                    let np = SegDb { seg: s, ..p };
                    self.relabel(c, hi, &np, next.as_ref().map(|n| &n.seg))?;
                }
            }
            Place::ExtendNext(s) => {
                if let Some(n) = next {
                    c.prepare_cached(
                        "UPDATE segs SET start_ms = ?2, boot_id = ?3, boot_ms = ?4 WHERE id = ?1",
                    )?
                    .execute(params![n.id, s.start, s.boot_id, s.boot_ms])?;
                    self.touch(hi, s.start, n.seg.start);
                    if let Some(p) = &prev {
                        self.relabel(c, hi, p, Some(&s))?;
                    }
                    tail_changed = n.id == tail_id;
                }
            }
            Place::Bridge(s) => {
                if let (Some(p), Some(n)) = (prev, next) {
                    // `prev` absorbs `next` and takes over its gap.
                    c.prepare_cached("DELETE FROM segs WHERE id = ?1")?
                        .execute([n.id])?;
                    c.prepare_cached(
                        "UPDATE segs SET end_ms = ?2, boot_id = ?3, boot_ms = ?4, next_ms = ?5,
                         cause = ?6 WHERE id = ?1",
                    )?
                    .execute(params![p.id, s.end, s.boot_id, s.boot_ms, n.next, n.cause])?;
                    if n.id != tail_id {
                        let merged = SegDb {
                            id: p.id,
                            seg: s,
                            next: n.next,
                            cause: n.cause,
                        };
                        let after = seg_after(c, id, s.start)?.map(|x| x.seg);
                        self.relabel(c, hi, &merged, after.as_ref())?;
                    }
                    self.touch(hi, p.seg.end, n.seg.start);
                    tail_changed = n.id == tail_id;
                }
            }
            Place::New(s) => {
                c.prepare_cached(
                    "INSERT INTO segs(host_id, start_ms, end_ms, boot_id, boot_ms, cause, next_ms)
                     VALUES (?1, ?2, ?2, ?3, ?4, 0, NULL)",
                )?
                .execute(params![id, s.start, s.boot_id, s.boot_ms])?;
                let nid = c.last_insert_rowid();
                let me = SegDb {
                    id: nid,
                    seg: s,
                    next: None,
                    cause: 0,
                };
                // `next` exists: the evidence is older than the tail.
                self.relabel(c, hi, &me, next.as_ref().map(|n| &n.seg))?;
                if let Some(p) = &prev {
                    self.relabel(c, hi, p, Some(&s))?;
                }
                self.touch(hi, s.start, s.end);
            }
        }
        if tail_changed {
            let old = self.hosts[hi].tail;
            let mut t = load_tail(c, id)?;
            if let (Some(t), Some(o)) = (&mut t, old) {
                t.offline_at = o.offline_at;
                t.lost_at = o.lost_at;
            }
            self.hosts[hi].tail = t;
        }
        Ok(())
    }

    /// Places a probe result of (host, target).
    fn probe(
        &mut self,
        c: &Connection,
        hi: usize,
        tid: i64,
        cat: u8,
        r: &PResult,
    ) -> Result<(), StoreError> {
        // Results join while at most gap_factor probe periods apart (capped by probe_gap, or
        // the heartbeat tolerance when that is longer). The
        // period starts as the heartbeat interval (the agent's default) and follows what the
        // target's in-order results show.
        let base = self.hosts[hi].interval_s.max(1) * 1000;
        let (period, cand) = *self.hosts[hi].probe_period.entry(tid).or_insert((base, 0));
        let cap = (self.cfg.probe_gap.as_millis() as Ms).max(self.tol(hi));
        let tol = ((self.cfg.gap_factor * period as f64) as Ms).min(cap);
        let id = self.hosts[hi].id;
        if let std::collections::hash_map::Entry::Vacant(v) = self.hosts[hi].probes.entry(tid) {
            let t = load_probe_tail(c, id, tid)?.map(|(pid, iv)| PTail {
                id: pid,
                iv,
                cat,
                dirty: false,
            });
            v.insert(t);
        }
        let tail = self.hosts[hi].probes.get(&tid).copied().flatten();
        match tail {
            Some(t) if r.t >= t.iv.start => {
                if t.iv.closed && r.t > t.iv.end {
                    let d = r.t - t.iv.end;
                    let next = if d * 2 <= period * 3 {
                        // Not longer than usual: the period (shrinks at once).
                        (d, 0)
                    } else if cand > 0 && (d - cand).abs() * 10 <= cand {
                        // The same longer spacing twice in a row: the agent probes less often.
                        (d, 0)
                    } else {
                        // A gap, or a new period to confirm.
                        (period, d)
                    };
                    self.hosts[hi].probe_period.insert(tid, next);
                }
                let Some(edit) = place_probe(Some(&t.iv), None, r, tol) else {
                    self.stats.probe_conflicts += 1;
                    return Ok(());
                };
                let mut last = t;
                let mut from = r.t;
                let mut to = r.t;
                if let Some(p) = edit.prev {
                    from = from.min(t.iv.end);
                    to = to.max(p.end);
                    last = self.put_probe_pieces(c, id, tid, cat, Some(t.id), p, true)?;
                }
                if let Some(n) = edit.new {
                    if edit.prev.is_some() || last.dirty {
                        // The previous piece is final: write it now.
                        write_probe(c, last.id, &last.iv)?;
                    }
                    to = to.max(n.end);
                    last = self.put_probe_pieces(c, id, tid, cat, None, n, false)?;
                }
                self.hosts[hi].probes.insert(tid, Some(last));
                self.queue(hi);
                self.touch(hi, from, to);
            }
            Some(t) => {
                self.stats.out_of_order += 1;
                if t.dirty {
                    write_probe(c, t.id, &t.iv)?;
                    if let Some(Some(x)) = self.hosts[hi].probes.get_mut(&tid) {
                        x.dirty = false;
                    }
                }
                self.probe_db(c, hi, tid, cat, r, tol, t.id)?;
            }
            None => {
                let n = place_probe(None, None, r, tol).and_then(|e| e.new);
                if let Some(n) = n {
                    let last = self.put_probe_pieces(c, id, tid, cat, None, n, false)?;
                    self.hosts[hi].probes.insert(tid, Some(last));
                    self.queue(hi);
                    self.touch(hi, r.t, r.t);
                }
            }
        }
        Ok(())
    }

    /// Stores an interval split at region midnights: the first piece updates `id` (or is
    /// inserted), the others are inserted. Returns the last piece, dirty when `defer` asks to
    /// write it with the batch.
    #[allow(clippy::too_many_arguments)]
    fn put_probe_pieces(
        &mut self,
        c: &Connection,
        host: i64,
        tid: i64,
        cat: u8,
        id: Option<i64>,
        iv: PIv,
        defer: bool,
    ) -> Result<PTail, StoreError> {
        let cal = self.cal;
        let pieces = split_days(iv, |t| cal.day_start(cal.day_of(t) + 1));
        let n = pieces.len();
        let mut last = None;
        for (i, p) in pieces.into_iter().enumerate() {
            let pid = match (i, id) {
                (0, Some(pid)) => {
                    if !(defer && n == 1) {
                        write_probe(c, pid, &p)?;
                    }
                    pid
                }
                _ => {
                    c.prepare_cached(
                        "INSERT INTO probes(host_id, target_id, cat, start_ms, end_ms, ok, err,
                         closed, n, lat_sum, lat_n) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )?
                    .execute(params![
                        host,
                        tid,
                        i64::from(cat),
                        p.start,
                        p.end,
                        i64::from(p.ok),
                        i64::from(p.err),
                        i64::from(p.closed),
                        p.n,
                        p.lat_sum,
                        p.lat_n
                    ])?;
                    c.last_insert_rowid()
                }
            };
            last = Some(PTail {
                id: pid,
                iv: p,
                cat,
                dirty: defer && n == 1 && i == 0 && id.is_some(),
            });
        }
        last.ok_or_else(|| StoreError::Corrupt("empty interval split".into()))
    }

    /// Places an old probe result through the database.
    #[allow(clippy::too_many_arguments)]
    fn probe_db(
        &mut self,
        c: &Connection,
        hi: usize,
        tid: i64,
        cat: u8,
        r: &PResult,
        tol: Ms,
        tail_id: i64,
    ) -> Result<(), StoreError> {
        let id = self.hosts[hi].id;
        let prev = c
            .prepare_cached(
                "SELECT id, start_ms, end_ms, ok, err, closed, n, lat_sum, lat_n FROM probes
                 WHERE host_id = ?1 AND target_id = ?2 AND start_ms <= ?3
                 ORDER BY start_ms DESC, id DESC LIMIT 1",
            )?
            .query_row(params![id, tid, r.t], piv_row)
            .optional()?;
        let next = c
            .prepare_cached(
                "SELECT id, start_ms, end_ms, ok, err, closed, n, lat_sum, lat_n FROM probes
                 WHERE host_id = ?1 AND target_id = ?2 AND start_ms > ?3
                 ORDER BY start_ms, id LIMIT 1",
            )?
            .query_row(params![id, tid, r.t], piv_row)
            .optional()?;
        let Some(edit) = place_probe(
            prev.as_ref().map(|p| &p.1),
            next.as_ref().map(|n| &n.1),
            r,
            tol,
        ) else {
            self.stats.probe_conflicts += 1;
            return Ok(());
        };
        let mut from = r.t;
        let mut to = r.t;
        let mut tail_changed = false;
        if let (Some(p), Some((pid, old))) = (edit.prev, prev) {
            from = from.min(old.end);
            to = to.max(p.end);
            self.put_probe_pieces(c, id, tid, cat, Some(pid), p, false)?;
            tail_changed |= pid == tail_id;
        }
        if let Some(n) = edit.new {
            to = to.max(n.end);
            self.put_probe_pieces(c, id, tid, cat, None, n, false)?;
        }
        if let Some((nid, old)) = next {
            match edit.next {
                NextEdit::Keep => {}
                NextEdit::Update(v) => {
                    write_probe(c, nid, &v)?;
                    to = to.max(old.end);
                }
                NextEdit::Delete => {
                    c.prepare_cached("DELETE FROM probes WHERE id = ?1")?
                        .execute([nid])?;
                    to = to.max(old.end);
                }
            }
            tail_changed |= nid == tail_id;
        }
        self.touch(hi, from, to);
        if tail_changed {
            let t = load_probe_tail(c, id, tid)?.map(|(pid, iv)| PTail {
                id: pid,
                iv,
                cat,
                dirty: false,
            });
            self.hosts[hi].probes.insert(tid, t);
        }
        Ok(())
    }

    /// Appends the per-МО series for `now` to the outbox lines.
    pub(super) fn emit_mo_lines(&mut self, now: Ms) {
        let probe_fresh = self.cfg.probe_gap.as_millis() as Ms;
        let mut per_mo: HashMap<&str, [i64; 4]> = HashMap::default();
        for m in &self.roster.mos {
            per_mo.insert(&m.oid, [0; 4]);
        }
        for h in &self.hosts {
            let e = per_mo.entry(&h.mo).or_insert([0; 4]);
            let Some(t) = &h.tail else { continue };
            let tol = (self.cfg.gap_factor * h.interval_s.max(1) as f64 * 1000.0) as Ms;
            let online = t.cause == GapCause::Pending && now - t.seg.end <= tol;
            if !online {
                continue;
            }
            e[0] += 1;
            match h.role {
                Some(dozor_proto::Role::Server) => e[2] += 1,
                Some(dozor_proto::Role::Workstation) => e[1] += 1,
                None => {}
            }
            let mis = h
                .probes
                .values()
                .flatten()
                .any(|p| p.cat == 0 && p.iv.ok && now - p.iv.end <= probe_fresh);
            e[3] += i64::from(mis);
        }
        let mut mos: Vec<_> = per_mo.into_iter().collect();
        mos.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (mo, v) in mos {
            let listed = self
                .roster
                .get(mo)
                .map(|m| (m.name.as_str(), m.planned_arm));
            influx::mo_line(&mut self.scratch.lines, mo, listed, v, now);
            self.scratch.nlines += 1;
        }
    }
}

fn piv_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, PIv)> {
    Ok((
        r.get(0)?,
        PIv {
            start: r.get(1)?,
            end: r.get(2)?,
            ok: r.get::<_, i64>(3)? != 0,
            err: r.get::<_, i64>(4)?.clamp(0, 255) as u8,
            closed: r.get::<_, i64>(5)? != 0,
            n: r.get(6)?,
            lat_sum: r.get(7)?,
            lat_n: r.get(8)?,
        },
    ))
}

fn load_probe_tail(c: &Connection, host: i64, tid: i64) -> Result<Option<(i64, PIv)>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, start_ms, end_ms, ok, err, closed, n, lat_sum, lat_n FROM probes
         WHERE host_id = ?1 AND target_id = ?2 ORDER BY start_ms DESC, id DESC LIMIT 1",
    )?
    .query_row(params![host, tid], piv_row)
    .optional()?)
}

fn seg_at_or_before(c: &Connection, host: i64, t: Ms) -> Result<Option<SegDb>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SEG_COLS} FROM segs WHERE host_id = ?1 AND start_ms <= ?2 ORDER BY start_ms DESC LIMIT 1"
    ))?
    .query_row(params![host, t], seg_db)
    .optional()?)
}

fn seg_after(c: &Connection, host: i64, start: Ms) -> Result<Option<SegDb>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SEG_COLS} FROM segs WHERE host_id = ?1 AND start_ms > ?2 ORDER BY start_ms LIMIT 1"
    ))?
    .query_row(params![host, start], seg_db)
    .optional()?)
}

fn first_seg(c: &Connection, host: i64) -> Result<Option<SegDb>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SEG_COLS} FROM segs WHERE host_id = ?1 ORDER BY start_ms LIMIT 1"
    ))?
    .query_row([host], seg_db)
    .optional()?)
}

/// Latest `offline` and `lost` marker times at or after `since`.
fn tail_marks(
    c: &Connection,
    host: i64,
    since: Ms,
) -> Result<(Option<Ms>, Option<Ms>), StoreError> {
    let mut st = c.prepare_cached(
        "SELECT kind, max(at_ms) FROM markers WHERE host_id = ?1 AND at_ms >= ?2 GROUP BY kind",
    )?;
    let mut out = (None, None);
    for r in st.query_map(params![host, since], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (k, at) = r?;
        match k {
            MARK_OFFLINE => out.0 = Some(at),
            MARK_LOST => out.1 = Some(at),
            _ => {}
        }
    }
    Ok(out)
}

fn load_tail(c: &Connection, host: i64) -> Result<Option<Tail>, StoreError> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {SEG_COLS} FROM segs WHERE host_id = ?1 ORDER BY start_ms DESC LIMIT 1"
        ))?
        .query_row([host], seg_db)
        .optional()?;
    let Some(s) = row else {
        return Ok(None);
    };
    let (off, lost) = tail_marks(c, host, s.seg.end)?;
    Ok(Some(Tail {
        id: s.id,
        seg: s.seg,
        cause: GapCause::from_i64(s.cause),
        offline_at: off,
        lost_at: lost,
        stored_start: s.seg.start,
    }))
}
