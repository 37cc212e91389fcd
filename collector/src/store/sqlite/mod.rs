//! The embedded SQLite store: host registry, state intervals, reachability intervals, resource
//! rollups, collector runs, delivery marks, daily aggregates and the InfluxDB outbox, all in
//! `dozor.db` (WAL). See `docs/storage.md`.
//!
//! A batch is committed as one row of the `journal` table (one transaction, durable before the
//! pipeline acknowledges anything); the journal is applied to the tables about once a second,
//! the batches since the last apply in one transaction that deletes their rows, so each host's
//! tail, rollup and delivery mark is written once per apply instead of once per batch. A start
//! applies what a crash left before anything reads.
//!
//! Changes are stored, not every heartbeat: the latest segment of each host and the latest
//! interval of each (host, target) live in memory and are written once per batch; messages
//! older than those (replays) go through the database.

mod apply;
mod journal;
mod maintain;
#[cfg(test)]
mod tests;

use super::config::StoreConfig;
use super::intervals::{PIv, Seg};
use super::{Store, StoreError, schema};
use crate::availability::{Calendar, GapCause, Ms};
use crate::delivery::DeliveryMark;
use crate::record::{Batch, Record};
use crate::roster::Roster;
use dozor_proto::Role;
use rusqlite::{Connection, OptionalExtension, params};
/// The writer's maps are keyed by ids from the wire and looked up several times per message:
/// foldhash (randomly seeded, as `state::IdMap`) instead of SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use maintain::MaintainReport;

/// File name of the store in the data directory.
pub const DB_FILE: &str = "dozor.db";

/// Path of the store in a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Counters of the store, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches committed (each one journal row).
    pub batches: u64,
    /// Transactions that applied the journal to the tables.
    pub applies: u64,
    pub records: u64,
    /// Messages placed through the database (older than the in-memory latest interval).
    pub out_of_order: u64,
    /// Probe results that contradicted the interval they fell in (ignored).
    pub probe_conflicts: u64,
    /// Lines written to the InfluxDB outbox.
    pub outbox_lines: u64,
    /// Lines dropped from the outbox by its bounds (also kept in the database).
    pub outbox_dropped_lines: u64,
}

/// The latest segment of a host.
#[derive(Debug, Clone, Copy)]
struct Tail {
    id: i64,
    seg: Seg,
    cause: GapCause,
    /// Latest `offline` and `lost` marker times (at or after the segment's end count).
    offline_at: Option<Ms>,
    lost_at: Option<Ms>,
    /// `seg.start` as stored: while it is unchanged, writing the tail leaves the indexed
    /// column alone, so its two indexes are not rewritten (the common case: `end` moved).
    stored_start: Ms,
}

impl Tail {
    fn tail_cause(&self) -> GapCause {
        let end = self.seg.end;
        if self.offline_at.is_some_and(|t| t >= end) {
            GapCause::Shutdown
        } else if self.lost_at.is_some_and(|t| t >= end) {
            GapCause::Lost
        } else {
            GapCause::Pending
        }
    }
}

/// The latest reachability interval of a (host, target).
#[derive(Debug, Clone, Copy)]
struct PTail {
    id: i64,
    iv: PIv,
    cat: u8,
    dirty: bool,
}

/// A host as the writer keeps it.
#[derive(Debug)]
struct HostMem {
    id: i64,
    mo_id: i64,
    mo: String,
    role: Option<Role>,
    site: String,
    hostname: String,
    interval_s: i64,
    first_ms: Ms,
    inventory: Option<String>,
    reg_dirty: bool,
    tail: Option<Tail>,
    tail_dirty: bool,
    probes: HashMap<i64, Option<PTail>>,
    /// Estimated probe period of each target and a candidate new period, ms.
    probe_period: HashMap<i64, (Ms, Ms)>,
    queued: bool,
    /// The stored row of the host's latest 5-minute rollup (bucket, totals), known since this
    /// writer wrote it: the next batch's figures of that bucket update it in place.
    roll: Option<(i64, Roll)>,
}

/// 5-minute rollup accumulator (hundredths of percent).
#[derive(Debug, Clone, Copy)]
struct Roll {
    n: i64,
    min: [i64; 3],
    sum: [i64; 3],
    max: [i64; 3],
}

impl Roll {
    fn of(v: [i64; 3]) -> Roll {
        Roll {
            n: 1,
            min: v,
            sum: v,
            max: v,
        }
    }

    fn add(&mut self, v: [i64; 3]) {
        self.n += 1;
        for (i, x) in v.into_iter().enumerate() {
            self.min[i] = self.min[i].min(x);
            self.sum[i] += x;
            self.max[i] = self.max[i].max(x);
        }
    }

    fn merge(&mut self, o: &Roll) {
        self.n += o.n;
        for i in 0..3 {
            self.min[i] = self.min[i].min(o.min[i]);
            self.sum[i] += o.sum[i];
            self.max[i] = self.max[i].max(o.max[i]);
        }
    }

    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Roll> {
        let mut x = Roll::of([0; 3]);
        x.n = r.get(0)?;
        for i in 0..3 {
            x.min[i] = r.get(1 + 3 * i)?;
            x.sum[i] = r.get(2 + 3 * i)?;
            x.max[i] = r.get(3 + 3 * i)?;
        }
        Ok(x)
    }
}

/// Per-batch scratch state.
#[derive(Debug, Default)]
struct Scratch {
    /// Hosts with something to flush (indices into `hosts`).
    queued: Vec<usize>,
    /// Changed history before the watermark: host index → (from, to).
    touched: HashMap<usize, (Ms, Ms)>,
    /// (host index, bucket) → the batch's figures.
    rollups: HashMap<(usize, i64), Roll>,
    lines: String,
    nlines: i64,
    /// Latest collector time seen in the batch.
    now: Ms,
}

/// The writer's state besides the connection.
struct Writer {
    cfg: StoreConfig,
    roster: Arc<Roster>,
    cal: Calendar,
    mos: HashMap<String, i64>,
    host_ix: HashMap<String, HashMap<String, usize>>,
    hosts: Vec<HostMem>,
    /// Target ids by category, then name.
    targets: HashMap<u8, HashMap<String, i64>>,
    /// The open run: (id, end).
    run: Option<(i64, Ms)>,
    /// Days before this are materialized (None until the first batch).
    wm: Option<i32>,
    wm_start: Ms,
    scratch: Scratch,
    last_mo_emit: Ms,
    last_maintain: Ms,
    auto_maintain: bool,
    stats: StoreStats,
}

/// The embedded store. Construct with [`SqliteStore::open`]; use from one thread.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    w: Writer,
    /// Batches committed to the journal and not yet applied to the tables.
    pending: Pending,
    due: journal::Due,
}

/// The journal rows not yet applied, as the batches they hold (kept in memory: applying them
/// decodes nothing; only a start-up after a crash reads rows back).
#[derive(Debug, Default)]
struct Pending {
    batches: usize,
    records: Vec<Record>,
    /// The latest mark of each instance (a mark is the instance's whole progress: the last one
    /// of several batches stands for all of them).
    delivery: Vec<DeliveryMark>,
    by_inst: HashMap<Arc<str>, usize>,
    /// Highest journal row id held.
    last_id: i64,
    /// When the oldest pending batch was committed (`None` for rows found at open).
    first: Option<std::time::Instant>,
    /// Scratch buffer of the row being encoded.
    row: Vec<u8>,
}

impl Pending {
    fn push(&mut self, batch: &Batch, id: i64, at: Option<std::time::Instant>) {
        if self.batches == 0 {
            self.first = at;
        }
        self.batches += 1;
        self.last_id = self.last_id.max(id);
        self.records.extend(batch.records.iter().cloned());
        for m in &batch.delivery {
            match self.by_inst.get(&m.inst) {
                Some(&i) => self.delivery[i] = m.clone(),
                None => {
                    self.by_inst.insert(m.inst.clone(), self.delivery.len());
                    self.delivery.push(m.clone());
                }
            }
        }
    }

    /// The pending batches as one, leaving the count and ids (restored by `put_back` when the
    /// apply fails).
    fn take(&mut self) -> Batch {
        Batch {
            records: std::mem::take(&mut self.records),
            delivery: std::mem::take(&mut self.delivery),
        }
    }

    fn put_back(&mut self, b: Batch) {
        self.records = b.records;
        self.delivery = b.delivery;
    }

    fn clear(&mut self) {
        self.batches = 0;
        self.records.clear();
        self.delivery.clear();
        self.by_inst.clear();
        self.first = None;
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("hosts_cached", &self.w.hosts.len())
            .finish_non_exhaustive()
    }
}

/// Largest outbox row (the sink sends whole rows).
const OUTBOX_ROW_BYTES: usize = 256 * 1024;

/// Maintenance runs from `write` at most this often (collector time).
const AUTO_MAINTAIN_MS: Ms = 10_000;

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` (see [`db_path`]). The roster gives the
    /// МО working hours used by the daily aggregates; when an МО's calendar differs from the
    /// one its aggregates were computed with, they are recomputed in the background.
    pub fn open(
        path: &Path,
        cfg: &StoreConfig,
        roster: Arc<Roster>,
    ) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        crate::fsperm::private_db(path)?;
        let conn = Connection::open(path)?;
        // The writer uses more distinct statements than rusqlite's default 16 (registration,
        // tails, rollups, marks, maintenance): evicted ones would be parsed again.
        conn.set_prepared_statement_cache_capacity(64);
        schema::configure(&conn, cfg.sync_full)?;
        schema::migrate(&conn)?;
        let mut w = Writer {
            cfg: cfg.clone(),
            cal: Calendar::new(cfg.region_tz),
            roster,
            mos: HashMap::default(),
            host_ix: HashMap::default(),
            hosts: Vec::new(),
            targets: HashMap::default(),
            run: None,
            wm: None,
            wm_start: Ms::MIN,
            scratch: Scratch::default(),
            last_mo_emit: 0,
            last_maintain: 0,
            auto_maintain: true,
            stats: StoreStats::default(),
        };
        w.load_meta(&conn)?;
        w.check_calendars(&conn)?;
        let mut s = SqliteStore {
            conn,
            path: path.to_path_buf(),
            w,
            pending: Pending::default(),
            due: journal::Due {
                interval: cfg.journal_apply,
                batches: cfg.journal_batches,
            },
        };
        s.recover()?;
        Ok(s)
    }

    /// Applies the journal rows a crash left (committed batches whose tables were not brought
    /// up to date), before anything reads the tables or the delivery marks.
    fn recover(&mut self) -> Result<(), StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = {
            let mut st = self
                .conn
                .prepare("SELECT id, body FROM journal ORDER BY id")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        for (id, body) in rows {
            let b = journal::decode(&body)
                .map_err(|e| StoreError::Corrupt(format!("journal row {id}: {e}")))?;
            self.pending.push(&b, id, None);
        }
        self.apply_pending()?;
        tracing::info!(
            batches = n,
            "store: applied the journal left by the previous run"
        );
        Ok(())
    }

    /// Brings the tables up to date with the journal now: the pending batches in one
    /// transaction that also deletes their rows. On failure they stay pending (and in the
    /// journal) and the writer's caches are dropped.
    fn apply_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.batches == 0 {
            return Ok(());
        }
        let c = &self.conn;
        // BEGIN before taking the batches: a BEGIN that fails (busy, or a transaction left
        // open) must leave them pending, or the next apply's DELETE would drop their rows.
        c.execute_batch("BEGIN IMMEDIATE")?;
        let batch = self.pending.take();
        let r = self.w.apply_batch(c, &batch).and_then(|()| {
            c.prepare_cached("DELETE FROM journal WHERE id <= ?1")?
                .execute([self.pending.last_id])?;
            c.execute_batch("COMMIT")?;
            Ok(())
        });
        if let Err(e) = r {
            let _ = c.execute_batch("ROLLBACK");
            self.pending.put_back(batch);
            // Caches may hold state of the rolled-back transaction.
            self.w.reset(c)?;
            return Err(e);
        }
        self.pending.clear();
        self.w.stats.applies += 1;
        let now = self.w.scratch.now;
        if self.w.auto_maintain && now - self.w.last_maintain >= AUTO_MAINTAIN_MS {
            self.w.last_maintain = now;
            // The batches are applied; a failed maintenance is retried later.
            if let Err(e) = self.w.maintain(c, now, 5_000) {
                tracing::warn!(error = %e, "store maintenance failed");
                let _ = c.execute_batch("ROLLBACK");
                self.w.reset(c)?;
            }
        }
        Ok(())
    }

    /// Applies the journal when due (or now, `force`); how long until it is due next.
    fn settle_at(
        &mut self,
        force: bool,
        now: std::time::Instant,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let wait = self.due.wait(self.pending.batches, self.pending.first, now);
        if wait.is_some_and(|w| force || w.is_zero()) {
            self.apply_pending()?;
            return Ok(None);
        }
        Ok(wait)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Turns the maintenance run from `write` on or off (tools that load history in bulk run
    /// [`SqliteStore::maintain_now`] once at the end).
    pub fn set_auto_maintain(&mut self, on: bool) {
        self.w.auto_maintain = on;
    }

    pub fn stats(&self) -> StoreStats {
        self.w.stats.clone()
    }

    /// Runs maintenance now: materializes finished days and days changed by late data,
    /// applies retention, bounds the outbox. Also runs from `write` every 10 s.
    pub fn maintain_now(&mut self, now_ms: Ms) -> Result<MaintainReport, StoreError> {
        self.apply_pending()?;
        self.w.maintain(&self.conn, now_ms, usize::MAX)
    }

    /// Commits a batch durably as one journal row (its own transaction: with `synchronous =
    /// full` it survives a power cut once this returns), then applies the journal to the
    /// tables when due. A failed apply leaves the batches in the journal and is retried; the
    /// batch itself is committed, so the error is only logged — unless failed applies have
    /// piled up: then the batch is refused (not committed, not acknowledged) until one works.
    fn write_batch(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.records.is_empty() && batch.delivery.is_empty() {
            return Ok(());
        }
        if self.pending.batches >= self.due.batches.saturating_mul(4) {
            self.apply_pending()?;
        }
        if !self.conn.is_autocommit() {
            // A transaction left open by a failed COMMIT elsewhere: the journal row must not
            // join it (the batch would be acknowledged while not durable). Its work is redone
            // by the next apply or maintenance.
            tracing::warn!(
                "store: a transaction was left open; rolled back before the journal row"
            );
            self.conn.execute_batch("ROLLBACK")?;
            self.w.reset(&self.conn)?;
        }
        self.pending.row.clear();
        journal::encode(batch, &mut self.pending.row);
        self.conn
            .prepare_cached("INSERT INTO journal(body) VALUES (?1)")?
            .execute([&self.pending.row])?;
        let id = self.conn.last_insert_rowid();
        let now = std::time::Instant::now();
        self.pending.push(batch, id, Some(now));
        self.w.stats.batches += 1;
        self.w.stats.records += batch.records.len() as u64;
        if let Err(e) = self.settle_at(false, now) {
            tracing::warn!(error = %e, "applying the store journal failed; retried later");
        }
        Ok(())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // A graceful end leaves no journal (a crash does: the next open applies it).
        if let Err(e) = self.apply_pending() {
            tracing::warn!(error = %e, "applying the store journal at close failed; applied at the next start");
        }
    }
}

impl Store for SqliteStore {
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.write_batch(batch)
    }

    fn load_delivery(&mut self) -> Result<Vec<DeliveryMark>, StoreError> {
        self.apply_pending()?;
        let mut st = self.conn.prepare_cached(
            "SELECT inst, mo, host, contiguous, above, stored, refused FROM delivery",
        )?;
        let rows = st.query_map([], |r| {
            let above: String = r.get(4)?;
            Ok(DeliveryMark {
                inst: r.get::<_, String>(0)?.into(),
                mo: r.get::<_, String>(1)?.into(),
                host: r.get::<_, String>(2)?.into(),
                contiguous: r.get::<_, i64>(3)? as u64,
                above: above
                    .split(',')
                    .filter_map(|s| s.parse::<u64>().ok())
                    .collect(),
                stored: r.get::<_, i64>(5)? as u64,
                refused: r.get::<_, i64>(6)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn maintain(&mut self, now_ms: i64) -> Result<(), StoreError> {
        // Maintenance reads the tables: the journal first.
        self.apply_pending()?;
        self.w.maintain(&self.conn, now_ms, 5_000).map(|_| ())
    }

    fn settle(&mut self, force: bool) -> Result<Option<std::time::Duration>, StoreError> {
        self.settle_at(force, std::time::Instant::now())
    }
}

impl Writer {
    fn load_meta(&mut self, c: &Connection) -> Result<(), StoreError> {
        self.wm = schema::meta_get(c, "watermark_day")?.map(|d| d as i32);
        self.wm_start = self.wm.map_or(Ms::MIN, |d| self.cal.day_start(d));
        self.run = c
            .query_row(
                "SELECT id, end_ms FROM runs WHERE stopped = 0 ORDER BY start_ms DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        self.stats.outbox_dropped_lines =
            schema::meta_get(c, "outbox_dropped_lines")?.unwrap_or(0) as u64;
        Ok(())
    }

    /// Drops every cache (after a rolled-back transaction).
    fn reset(&mut self, c: &Connection) -> Result<(), StoreError> {
        self.mos.clear();
        self.host_ix.clear();
        self.hosts.clear();
        self.targets.clear();
        self.scratch = Scratch::default();
        self.load_meta(c)
    }

    fn apply_batch(&mut self, c: &Connection, batch: &Batch) -> Result<(), StoreError> {
        self.scratch = Scratch {
            now: self.scratch.now,
            ..Scratch::default()
        };
        let first_time = batch.records.iter().map(record_time).min();
        for r in &batch.records {
            self.scratch.now = self.scratch.now.max(record_time(r));
        }
        if let Some(t) = first_time {
            if self.wm.is_none() {
                let d = self.cal.day_of(t);
                self.set_watermark(c, d)?;
            }
            if self.run.is_none()
                && !matches!(batch.records.first(), Some(Record::CollectorStart { .. }))
            {
                self.start_run(c, t)?;
            }
        }
        for r in &batch.records {
            self.apply(c, r)?;
        }
        self.flush(c)?;
        let mut above = String::new();
        let mut update = c.prepare_cached(
            "UPDATE delivery SET contiguous = ?2, above = ?3, stored = ?4, refused = ?5
             WHERE inst = ?1",
        )?;
        for m in &batch.delivery {
            above.clear();
            for (i, n) in m.above.iter().enumerate() {
                use std::fmt::Write as _;
                let _ = write!(above, "{}{n}", if i == 0 { "" } else { "," });
            }
            // An instance's row exists after its first batch: an update in place (a REPLACE
            // would delete and insert the row, two b-tree operations, every batch).
            let updated = update.execute(params![
                m.inst,
                m.contiguous as i64,
                above,
                m.stored as i64,
                m.refused as i64
            ])?;
            if updated == 0 {
                c.prepare_cached(
                    "INSERT INTO delivery(inst, mo, host, contiguous, above, stored, refused)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    m.inst,
                    m.mo,
                    m.host,
                    m.contiguous as i64,
                    above,
                    m.stored as i64,
                    m.refused as i64
                ])?;
            }
        }
        Ok(())
    }

    fn set_watermark(&mut self, c: &Connection, day: i32) -> Result<(), StoreError> {
        schema::meta_set(c, "watermark_day", i64::from(day))?;
        self.wm = Some(day);
        self.wm_start = self.cal.day_start(day);
        Ok(())
    }

    fn start_run(&mut self, c: &Connection, at: Ms) -> Result<(), StoreError> {
        c.prepare_cached("INSERT INTO runs(start_ms, end_ms, stopped) VALUES (?1, ?1, 0)")?
            .execute([at])?;
        self.run = Some((c.last_insert_rowid(), at));
        Ok(())
    }

    fn apply(&mut self, c: &Connection, r: &Record) -> Result<(), StoreError> {
        match r {
            Record::Msg(a) => self.apply_msg(c, a),
            Record::Transition(t) => self.apply_transition(c, t),
            Record::CollectorStart { at_ms } => {
                if let Some((id, end)) = self.run.take() {
                    // Not stopped cleanly: a crash. The collector was last alive at `end`.
                    c.prepare_cached("UPDATE runs SET stopped = 1 WHERE id = ?1")?
                        .execute([id])?;
                    self.outage_changed(c, end, *at_ms)?;
                }
                self.start_run(c, *at_ms)
            }
            Record::CollectorStop { at_ms } => {
                if let Some((id, end)) = self.run.take() {
                    c.prepare_cached("UPDATE runs SET end_ms = ?2, stopped = 1 WHERE id = ?1")?
                        .execute(params![id, end.max(*at_ms)])?;
                }
                Ok(())
            }
        }
    }

    /// A collector outage `[from, to)` was discovered: materialized days it covers are stale
    /// for every host.
    fn outage_changed(&mut self, c: &Connection, from: Ms, to: Ms) -> Result<(), StoreError> {
        let Some(wm) = self.wm else { return Ok(()) };
        if from >= self.wm_start || to <= from {
            return Ok(());
        }
        let (d0, d1) = (self.cal.day_of(from), self.cal.day_of(to - 1).min(wm - 1));
        c.execute(
            "INSERT OR IGNORE INTO dirty_host(host_id, day)
             SELECT h.id, d.day FROM hosts h, (WITH RECURSIVE r(day) AS (SELECT ?1 UNION ALL SELECT day + 1 FROM r WHERE day < ?2) SELECT day FROM r) d",
            params![d0, d1],
        )?;
        c.execute(
            "INSERT OR IGNORE INTO dirty_mo(mo_id, day)
             SELECT m.id, d.day FROM mos m, (WITH RECURSIVE r(day) AS (SELECT ?1 UNION ALL SELECT day + 1 FROM r WHERE day < ?2) SELECT day FROM r) d",
            params![d0, d1],
        )?;
        c.execute(
            "INSERT OR IGNORE INTO dirty_res(day)
             WITH RECURSIVE r(day) AS (SELECT ?1 UNION ALL SELECT day + 1 FROM r WHERE day < ?2) SELECT day FROM r",
            params![d0, d1],
        )?;
        Ok(())
    }

    /// Records that a host's history changed over `[from, to]`.
    fn touch(&mut self, hi: usize, from: Ms, to: Ms) {
        if from >= self.wm_start || self.wm.is_none() {
            return;
        }
        let e = self.scratch.touched.entry(hi).or_insert((from, to));
        e.0 = e.0.min(from);
        e.1 = e.1.max(to);
    }

    fn queue(&mut self, hi: usize) {
        if !self.hosts[hi].queued {
            self.hosts[hi].queued = true;
            self.scratch.queued.push(hi);
        }
    }

    /// Writes the batch's buffered changes.
    fn flush(&mut self, c: &Connection) -> Result<(), StoreError> {
        let queued = std::mem::take(&mut self.scratch.queued);
        let mut tail_st = apply::TailStmts::new(c)?;
        for hi in queued {
            self.hosts[hi].queued = false;
            self.flush_tail_with(hi, &mut tail_st)?;
            let h = &mut self.hosts[hi];
            h.tail_dirty = false;
            for p in h.probes.values_mut().flatten().filter(|p| p.dirty) {
                write_probe(c, p.id, &p.iv)?;
                p.dirty = false;
            }
            if h.reg_dirty {
                c.prepare_cached(
                    "UPDATE hosts SET role = ?2, site = ?3, hostname = ?4, interval_s = ?5,
                     first_ms = ?6, inventory = coalesce(?7, inventory) WHERE id = ?1",
                )?
                .execute(params![
                    h.id,
                    super::load::role_code(h.role),
                    h.site,
                    h.hostname,
                    h.interval_s,
                    h.first_ms,
                    h.inventory.take()
                ])?;
                h.reg_dirty = false;
            }
        }
        drop(tail_st);
        let rollups = std::mem::take(&mut self.scratch.rollups);
        if !rollups.is_empty() {
            // Prepared once for the batch (the statement cache hashes the SQL on every use).
            let mut update = c.prepare_cached(
                "UPDATE rollups SET n = ?3, cpu_min = ?4, cpu_sum = ?5, cpu_max = ?6,
                 mem_min = ?7, mem_sum = ?8, mem_max = ?9, disk_min = ?10, disk_sum = ?11,
                 disk_max = ?12 WHERE bucket = ?2 AND host_id = ?1",
            )?;
            let mut select = c.prepare_cached(
                "SELECT n, cpu_min, cpu_sum, cpu_max, mem_min, mem_sum, mem_max, disk_min,
                 disk_sum, disk_max FROM rollups WHERE bucket = ?2 AND host_id = ?1",
            )?;
            let mut insert = c.prepare_cached(
                "INSERT INTO rollups(host_id, bucket, n, cpu_min, cpu_sum, cpu_max, mem_min,
                 mem_sum, mem_max, disk_min, disk_sum, disk_max)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for ((hi, bucket), r) in rollups {
                let h = &mut self.hosts[hi];
                // The stored totals: as this writer left them (its host's latest bucket), or
                // read (a bucket it has not written yet, or an older one a replay reaches).
                let known = match h.roll {
                    Some((b, total)) if b == bucket => Some(total),
                    _ => select
                        .query_row(params![h.id, bucket], Roll::from_row)
                        .optional()?,
                };
                let total = match known {
                    Some(mut total) => {
                        total.merge(&r);
                        let n = update.execute(params![
                            h.id,
                            bucket,
                            total.n,
                            total.min[0],
                            total.sum[0],
                            total.max[0],
                            total.min[1],
                            total.sum[1],
                            total.max[1],
                            total.min[2],
                            total.sum[2],
                            total.max[2]
                        ])?;
                        if n == 1 {
                            total
                        } else {
                            // Gone since (retention): inserted anew.
                            insert_roll(&mut insert, h.id, bucket, &r)?;
                            r
                        }
                    }
                    None => {
                        insert_roll(&mut insert, h.id, bucket, &r)?;
                        r
                    }
                };
                // Only each host's latest bucket is kept.
                if h.roll.is_none_or(|(b, _)| b <= bucket) {
                    h.roll = Some((bucket, total));
                }
            }
        }
        let touched: Vec<(usize, (Ms, Ms))> = self.scratch.touched.drain().collect();
        if let Some(wm) = self.wm {
            for (hi, (from, to)) in touched {
                let (id, mo) = (self.hosts[hi].id, self.hosts[hi].mo_id);
                let d0 = self.cal.day_of(from);
                let d1 = if to >= self.wm_start {
                    wm - 1
                } else {
                    self.cal.day_of(to).min(wm - 1)
                };
                for d in d0..=d1 {
                    c.prepare_cached(
                        "INSERT OR IGNORE INTO dirty_host(host_id, day) VALUES (?1, ?2)",
                    )?
                    .execute(params![id, d])?;
                    c.prepare_cached("INSERT OR IGNORE INTO dirty_mo(mo_id, day) VALUES (?1, ?2)")?
                        .execute(params![mo, d])?;
                    c.prepare_cached("INSERT OR IGNORE INTO dirty_res(day) VALUES (?1)")?
                        .execute([d])?;
                }
            }
        }
        if let Some(influx) = &self.cfg.influx {
            let now = self.scratch.now;
            if now - self.last_mo_emit >= influx.mo_interval.as_millis() as Ms {
                self.last_mo_emit = now;
                self.emit_mo_lines(now);
            }
        }
        if !self.scratch.lines.is_empty() {
            let body = std::mem::take(&mut self.scratch.lines);
            // Rows of at most OUTBOX_ROW_BYTES (whole lines), so the sink's requests stay small.
            let mut rest = body.as_str();
            while !rest.is_empty() {
                let cut = if rest.len() <= OUTBOX_ROW_BYTES {
                    rest.len()
                } else {
                    rest[..OUTBOX_ROW_BYTES]
                        .rfind('\n')
                        .map_or(rest.len(), |i| i + 1)
                };
                let (row, tail) = rest.split_at(cut);
                c.prepare_cached(
                    "INSERT INTO outbox(created_ms, lines, bytes, body) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    self.scratch.now,
                    row.matches('\n').count() as i64,
                    row.len() as i64,
                    row
                ])?;
                rest = tail;
            }
            self.stats.outbox_lines += self.scratch.nlines as u64;
            self.scratch.nlines = 0;
        }
        if let Some((id, end)) = &mut self.run
            && self.scratch.now > *end
        {
            *end = self.scratch.now;
            c.prepare_cached("UPDATE runs SET end_ms = ?2 WHERE id = ?1")?
                .execute(params![*id, *end])?;
        }
        Ok(())
    }
}

fn insert_roll(
    st: &mut rusqlite::Statement<'_>,
    host: i64,
    bucket: i64,
    r: &Roll,
) -> Result<(), StoreError> {
    st.execute(params![
        host, bucket, r.n, r.min[0], r.sum[0], r.max[0], r.min[1], r.sum[1], r.max[1], r.min[2],
        r.sum[2], r.max[2]
    ])?;
    Ok(())
}

fn write_probe(c: &Connection, id: i64, iv: &PIv) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE probes SET start_ms = ?2, end_ms = ?3, ok = ?4, err = ?5, closed = ?6, n = ?7,
         lat_sum = ?8, lat_n = ?9 WHERE id = ?1",
    )?
    .execute(params![
        id,
        iv.start,
        iv.end,
        i64::from(iv.ok),
        i64::from(iv.err),
        i64::from(iv.closed),
        iv.n,
        iv.lat_sum,
        iv.lat_n
    ])?;
    Ok(())
}

/// Collector time of a record: receipt for messages, the decision time for the others.
fn record_time(r: &Record) -> Ms {
    match r {
        Record::Msg(a) => a.recv_ms,
        Record::Transition(t) => t.at_ms,
        Record::CollectorStart { at_ms } | Record::CollectorStop { at_ms } => *at_ms,
    }
}
