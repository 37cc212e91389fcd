//! The spool's SQLite file (WAL): payloads by sequence number, plus the instance id, the
//! sequence counter, the mark of the last write and the drop and skip counts. Every change is
//! one transaction.

use std::path::Path;
use std::time::Duration;

use dozor_proto::Kind;
use rusqlite::{Connection, OptionalExtension, params};

use super::index::{Entry, Flush};
use crate::config::Synchronous;

/// Layout version written to `meta`; bump with a migration when the schema changes.
const SCHEMA: i64 = 1;

/// What the file holds, as loaded at start.
#[derive(Debug)]
pub struct Loaded {
    pub inst: String,
    pub next_seq: u64,
    /// `next_seq` as it was at the last write (absent in files of older agents).
    pub flushed_seq: Option<u64>,
    pub dropped: u64,
    pub skipped: u64,
    /// See [`super::SpoolIndex::set_unconfirmed_from`] (absent: none, or an older agent).
    pub unconfirmed_from: Option<u64>,
    pub entries: Vec<Entry>,
}

/// One message to insert.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub seq: u64,
    pub kind: Kind,
    pub ts_ms: i64,
    pub body: &'a [u8],
}

/// The open SQLite file. Holds an exclusive lock: a second agent on the same data directory
/// fails at start instead of sharing the sequence space.
pub struct Store {
    conn: Connection,
}

fn sql(n: u64) -> i64 {
    // Sequence numbers and counters stay far below 2^63 (one message a millisecond for
    // 290 million years); saturate rather than wrap if that is ever wrong.
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Opens or creates the file, sets WAL with the chosen `synchronous` and takes the lock.
    pub fn open(path: &Path, sync: Synchronous) -> rusqlite::Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(2))?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        // Fail fast on a file that is not a database, then take the write lock for good.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL);
             CREATE TABLE IF NOT EXISTS msg (
                 seq  INTEGER PRIMARY KEY NOT NULL,
                 kind TEXT    NOT NULL,
                 ts   INTEGER NOT NULL,
                 body BLOB    NOT NULL
             );
             COMMIT;",
        )?;
        let store = Store { conn };
        store.init_meta()?;
        Ok(store)
    }

    fn init_meta(&self) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let schema: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if schema.is_none() {
            tx.execute("INSERT INTO meta VALUES ('schema', ?1)", [SCHEMA])?;
        }
        let inst: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'inst'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if inst.as_deref().is_none_or(|i| !dozor_proto::valid_id(i)) {
            let inst = format!("{:016x}", rand::random::<u64>());
            tx.execute(
                "INSERT OR REPLACE INTO meta VALUES ('inst', ?1)",
                [inst.as_str()],
            )?;
        }
        tx.commit()
    }

    fn meta_u64(&self, key: &str) -> rusqlite::Result<u64> {
        Ok(self.meta_opt(key)?.unwrap_or(0))
    }

    fn meta_opt(&self, key: &str) -> rusqlite::Result<Option<u64>> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        Ok(v.map(unsql))
    }

    /// Reads the instance id, counters and the index of every stored message (not payloads).
    pub fn load(&self) -> rusqlite::Result<Loaded> {
        let inst: String =
            self.conn
                .query_row("SELECT value FROM meta WHERE key = 'inst'", [], |r| {
                    r.get(0)
                })?;
        let next_seq = self.meta_u64("next_seq")?;
        let dropped = self.meta_u64("dropped")?;
        let skipped = self.meta_u64("skipped")?;
        let flushed_seq = self.meta_opt("flushed_seq")?;
        let unconfirmed_from = self.meta_opt("unconfirmed_from")?;
        let mut stmt = self
            .conn
            .prepare("SELECT seq, kind, ts, length(body) FROM msg ORDER BY seq")?;
        let mut entries = Vec::new();
        let mut unknown = Vec::new();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let seq = unsql(r.get(0)?);
            let kind: String = r.get(1)?;
            let len = u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX);
            match Kind::parse(&kind).filter(|k| k.is_upstream() && *k != Kind::State) {
                Some(kind) => entries.push(Entry::new(seq, kind, r.get(2)?, len)),
                None => unknown.push(seq),
            }
        }
        drop(rows);
        drop(stmt);
        for seq in unknown {
            self.conn
                .execute("DELETE FROM msg WHERE seq = ?1", [sql(seq)])?;
        }
        Ok(Loaded {
            inst,
            next_seq,
            flushed_seq,
            dropped,
            skipped,
            unconfirmed_from,
            entries,
        })
    }

    /// Applies one planned write in one transaction: inserts `rows` (the payloads of
    /// `plan.insert`), deletes through `plan.delete_through`, stores the counters.
    pub fn flush(&mut self, rows: &[Row<'_>], plan: &Flush) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO msg (seq, kind, ts, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for row in rows {
                ins.execute(params![
                    sql(row.seq),
                    row.kind.as_str(),
                    row.ts_ms,
                    row.body
                ])?;
            }
        }
        if let Some(through) = plan.delete_through {
            tx.prepare_cached("DELETE FROM msg WHERE seq <= ?1")?
                .execute([sql(through)])?;
        }
        Self::set_counters(&tx, plan.next_seq, plan.dropped)?;
        for (key, v) in [("flushed_seq", plan.flushed_seq), ("skipped", plan.skipped)] {
            tx.prepare_cached("INSERT OR REPLACE INTO meta VALUES (?1, ?2)")?
                .execute(params![key, sql(v)])?;
        }
        match plan.unconfirmed_from {
            Some(v) => tx
                .prepare_cached("INSERT OR REPLACE INTO meta VALUES ('unconfirmed_from', ?1)")?
                .execute([sql(v)])?,
            None => tx
                .prepare_cached("DELETE FROM meta WHERE key = 'unconfirmed_from'")?
                .execute([])?,
        };
        tx.commit()
    }

    /// Inserts many messages in one transaction (tools and benchmarks).
    pub fn append_batch(&mut self, rows: &[Row<'_>], next_seq: u64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO msg (seq, kind, ts, body) VALUES (?1, ?2, ?3, ?4)")?;
            for row in rows {
                ins.execute(params![
                    sql(row.seq),
                    row.kind.as_str(),
                    row.ts_ms,
                    row.body
                ])?;
            }
        }
        tx.prepare_cached("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?1)")?
            .execute([sql(next_seq)])?;
        tx.commit()
    }

    fn set_counters(conn: &Connection, next_seq: u64, dropped: u64) -> rusqlite::Result<()> {
        conn.prepare_cached("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?1)")?
            .execute([sql(next_seq)])?;
        conn.prepare_cached("INSERT OR REPLACE INTO meta VALUES ('dropped', ?1)")?
            .execute([sql(dropped)])?;
        Ok(())
    }

    /// Deletes one message (its payload turned out unusable) and stores the drop count.
    pub fn delete_one(&mut self, seq: u64, dropped: u64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached("DELETE FROM msg WHERE seq = ?1")?
            .execute([sql(seq)])?;
        tx.prepare_cached("INSERT OR REPLACE INTO meta VALUES ('dropped', ?1)")?
            .execute([sql(dropped)])?;
        tx.commit()
    }

    /// The stored payload of one message.
    pub fn body(&self, seq: u64) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT body FROM msg WHERE seq = ?1")?
            .query_row([sql(seq)], |r| r.get(0))
            .optional()
    }

    /// Every stored sequence number, oldest first (tests and tools).
    pub fn seqs(&self) -> rusqlite::Result<Vec<u64>> {
        let mut stmt = self.conn.prepare("SELECT seq FROM msg ORDER BY seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
        rows.map(|r| r.map(unsql)).collect()
    }
}
