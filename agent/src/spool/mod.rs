//! Store-and-forward spool: every sequenced message (birth, hb, probe) is kept until the
//! collector confirms it with an `ack`, or until the size/age bounds drop it. While the link is
//! up and confirmations come promptly, messages live in memory only; whatever is not confirmed
//! within `flush_after`, and everything while the link is down, is committed to `spool.db`
//! (write-behind, see [`SpoolIndex::flush_due`]). The rules live in [`index`]; SQLite in
//! [`store`]; [`Spool`] keeps the two and the in-memory payloads in step.

mod index;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dozor_proto::{Kind, SpoolStats};
use tokio::time::Instant;

pub use index::{
    AckError, Appended, Entry, Flush, Limits, MAX_BACKOFF_EXP, MAX_SKIP_TO, Replay, SKIP_MARGIN,
    Skipped, SpoolIndex,
};
pub use store::{Loaded, Row, Store};

use crate::config::SpoolConfig;

/// File name of the spool inside the data directory.
pub const FILE_NAME: &str = "spool.db";

/// A spool failure. Writes that fail are logged and the message is still sent live (without
/// the delivery guarantee); a spool that cannot be opened stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The data directory could not be created.
    #[error("data_dir {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite reported an error (disk full, I/O error, locked by another agent, …).
    #[error("spool {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// An ack that cannot be right; it is ignored.
    #[error(transparent)]
    Ack(#[from] AckError),
}

/// Converts the configuration into index limits.
pub fn limits(cfg: &SpoolConfig) -> Limits {
    Limits {
        max_bytes: cfg.max_bytes,
        max_age_ms: i64::try_from(cfg.max_age.as_millis()).unwrap_or(i64::MAX),
        resend_after: cfg.resend_after,
        replay_interval: Duration::from_secs(1) / cfg.replay_rate_per_sec.max(1),
        flush_after: cfg.flush_after,
        seq_block: SEQ_BLOCK,
    }
}

/// Sequence numbers reserved per counter write. At the 30 s interval with three probes an
/// agent issues ~240 numbers an hour, so the counter costs about one write an hour; a crash
/// skips at most this many numbers (the collector settles them through `oldest_seq`).
pub const SEQ_BLOCK: u64 = 256;

/// The result of [`Spool::append`].
#[derive(Debug)]
pub struct Spooled {
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// Set when a write this message needed failed; it is then held in memory only (and sent
    /// live) until a later write succeeds.
    pub error: Option<SpoolError>,
}

/// The spool: SQLite file plus in-memory index, owned by the publisher task.
pub struct Spool {
    path: PathBuf,
    store: Store,
    index: SpoolIndex,
    /// Payloads of the messages held in memory only (not yet in the file).
    mem: BTreeMap<u64, Vec<u8>>,
    inst: String,
    /// When a drop was last logged at warn level (a full spool drops on every append).
    drop_logged: Option<std::time::Instant>,
}

/// The result of [`Spool::skip_past`].
#[derive(Debug)]
pub struct Skip {
    /// The last number issued before the skip.
    pub last: u64,
    /// The number the next message gets.
    pub next_seq: u64,
    /// Unconfirmed messages sent again under new numbers (see `unconfirmed_from`).
    pub renumbered: usize,
    /// Messages removed and counted as dropped (older than `unconfirmed_from`, or unreadable).
    pub dropped: u64,
    /// Set when the write that records the skip failed: the skip holds in memory and the
    /// write is retried like any other (the new counter is above the file's, so at once).
    pub error: Option<SpoolError>,
}

/// A full spool is reported at warn level at most this often; other drops go to debug.
const DROP_LOG_EVERY: Duration = Duration::from_secs(600);

impl Spool {
    /// Opens (or creates) `dir/spool.db` and loads its index. A file SQLite declares corrupt
    /// or not a database is moved aside (`spool.db.corrupt-<unix secs>`) and a new spool, with
    /// a new instance id, is started.
    pub fn open(
        dir: &Path,
        cfg: &SpoolConfig,
        now: Instant,
        now_ms: i64,
    ) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|source| SpoolError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = |source| SpoolError::Db {
            path: path.clone(),
            source,
        };
        let (store, loaded) = match Self::open_store(&path, cfg) {
            Ok(ok) => ok,
            Err(e) if is_corrupt(&e) => {
                let aside = path.with_extension(format!("db.corrupt-{}", now_ms / 1000));
                tracing::error!(
                    path = %path.display(),
                    aside = %aside.display(),
                    error = %e,
                    "spool is corrupt: moving it aside and starting a new one"
                );
                std::fs::rename(&path, &aside).map_err(|source| SpoolError::Dir {
                    path: aside.clone(),
                    source,
                })?;
                for ext in ["db-wal", "db-shm"] {
                    let _ = std::fs::remove_file(path.with_extension(ext));
                }
                Self::open_store(&path, cfg).map_err(db)?
            }
            Err(e) => return Err(db(e)),
        };
        let mut index = SpoolIndex::new(
            limits(cfg),
            loaded.entries,
            loaded.next_seq,
            loaded.dropped,
            now,
        );
        index.set_unconfirmed_from(loaded.unconfirmed_from);
        let skipped_before = loaded.skipped;
        let skipped = index.skip_unwritten(loaded.flushed_seq, loaded.skipped);
        let mut spool = Spool {
            path,
            store,
            index,
            mem: BTreeMap::new(),
            inst: loaded.inst,
            drop_logged: None,
        };
        if skipped > skipped_before {
            tracing::info!(
                skipped = skipped - skipped_before,
                "the last run ended without a final write: its unwritten sequence numbers are \
                 skipped"
            );
        }
        // Record the skip (and the mark) at once, so a second crash does not count it again.
        spool.write(now, true)?;
        spool.expire(now_ms, now);
        Ok(spool)
    }

    fn open_store(path: &Path, cfg: &SpoolConfig) -> rusqlite::Result<(Store, Loaded)> {
        let store = Store::open(path, cfg.synchronous)?;
        let loaded = store.load()?;
        Ok((store, loaded))
    }

    fn db(&self, source: rusqlite::Error) -> SpoolError {
        SpoolError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// The agent instance id: created with the spool, the space of its sequence numbers.
    pub fn inst(&self) -> &str {
        &self.inst
    }

    pub fn index(&self) -> &SpoolIndex {
        &self.index
    }

    /// The send-state bookkeeping (connect, sent, replay polling) needs no I/O.
    pub fn index_mut(&mut self) -> &mut SpoolIndex {
        &mut self.index
    }

    pub fn stats(&self) -> SpoolStats {
        self.index.stats()
    }

    /// Takes the next sequence number, lets `make` serialize the message with it, and keeps
    /// it: in memory, or committed before returning when the index says the file must be
    /// written now (link down, a new counter block, write-through). `make` also gets the
    /// spool's figures for the heartbeat: `oldest_seq` counts the new message, so it is never
    /// `None` there.
    pub fn append(
        &mut self,
        kind: Kind,
        ts_ms: i64,
        now_ms: i64,
        now: Instant,
        make: impl FnOnce(u64, SpoolStats) -> Vec<u8>,
    ) -> Spooled {
        let seq = self.index.next_seq();
        let mut stats = self.index.stats();
        stats.oldest_seq = Some(stats.oldest_seq.unwrap_or(seq));
        let bytes = make(seq, stats);
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let appended = self.index.append(kind, ts_ms, len, now_ms, now);
        debug_assert_eq!(appended.seq, seq);
        tracing::trace!(seq, kind = kind.as_str(), "issued");
        self.mem.insert(seq, bytes.clone());
        if let Some(through) = appended.drop_through {
            self.forget_mem_through(through);
            self.log_drop(through);
        }
        let error = self.flush_if_due(now).err();
        Spooled { seq, bytes, error }
    }

    /// Writes the file if the index says it is due (see [`SpoolIndex::flush_due`]).
    pub fn flush_if_due(&mut self, now: Instant) -> Result<(), SpoolError> {
        if self.index.flush_due(now) {
            self.write(now, false)
        } else {
            Ok(())
        }
    }

    /// When [`Spool::flush_if_due`] should run next.
    pub fn next_flush(&self) -> Option<Instant> {
        self.index.next_flush()
    }

    /// The final write at shutdown: everything unconfirmed to the file, the exact counter.
    pub fn close(&mut self, now: Instant) -> Result<(), SpoolError> {
        self.write(now, true)
    }

    fn write(&mut self, now: Instant, exact: bool) -> Result<(), SpoolError> {
        let plan = self.index.take_flush(exact);
        let rows: Vec<Row<'_>> = plan
            .insert
            .iter()
            .filter_map(|&seq| {
                let e = self.index.get(seq)?;
                Some(Row {
                    seq,
                    kind: e.kind,
                    ts_ms: e.ts_ms,
                    body: self.mem.get(&seq)?,
                })
            })
            .collect();
        match self.store.flush(&rows, &plan) {
            Ok(()) => {
                self.index.flushed(&plan);
                for seq in &plan.insert {
                    self.mem.remove(seq);
                }
                Ok(())
            }
            Err(e) => {
                self.index.flush_failed(now);
                Err(self.db(e))
            }
        }
    }

    fn forget_mem_through(&mut self, through: u64) {
        self.mem = self.mem.split_off(&(through + 1));
    }

    /// Applies a collector acknowledgement; returns how many messages were confirmed. Writes
    /// nothing: deleting confirmed rows waits for the next write.
    pub fn ack(&mut self, acked_seq: u64, now: Instant) -> Result<usize, SpoolError> {
        let before = self.index.stats().pending;
        let Some(through) = self.index.ack(acked_seq, now)? else {
            return Ok(0);
        };
        let removed = usize::try_from(before - self.index.stats().pending).unwrap_or(0);
        self.forget_mem_through(through);
        Ok(removed)
    }

    /// The collector confirmed `acked`, beyond the last number issued (the counter went back:
    /// a restored backup): skips the counter past it, re-numbers the unconfirmed messages with
    /// `rewrite(payload, new_seq)` (a payload it cannot rewrite is dropped) and writes the
    /// file at once, so a crash right after resumes above the skip. See
    /// [`SpoolIndex::skip_past`]. `Ok(None)`: `acked` is not ahead (nothing done); an error
    /// for an absurd `acked` (nothing done either).
    pub fn skip_past(
        &mut self,
        acked: u64,
        now: Instant,
        rewrite: impl Fn(&[u8], u64) -> Option<Vec<u8>>,
    ) -> Result<Option<Skip>, SpoolError> {
        let Some(skipped) = self.index.skip_past(acked, now)? else {
            return Ok(None);
        };
        let mut held = std::mem::take(&mut self.mem);
        let mut lost = 0;
        for &(old, new) in &skipped.renumbered {
            let body = match held.remove(&old) {
                Some(b) => Some(b),
                None => self.store.body(old).unwrap_or_else(|e| {
                    tracing::error!(seq = old, error = %self.db(e), "could not read a spooled message");
                    None
                }),
            };
            match body.and_then(|b| rewrite(&b, new)) {
                Some(b) => {
                    self.index
                        .resize(new, u32::try_from(b.len()).unwrap_or(u32::MAX));
                    self.mem.insert(new, b);
                }
                None => {
                    self.index.forget(new);
                    lost += 1;
                }
            }
        }
        let error = self.write(now, false).err();
        Ok(Some(Skip {
            last: skipped.last,
            next_seq: self.index.next_seq(),
            renumbered: skipped.renumbered.len() - lost,
            dropped: skipped.dropped + lost as u64,
            error,
        }))
    }

    fn log_drop(&mut self, through: u64) {
        let dropped_total = self.index.dropped();
        let now = std::time::Instant::now();
        if self
            .drop_logged
            .is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY)
        {
            self.drop_logged = Some(now);
            tracing::warn!(
                through,
                dropped_total,
                "spool bound reached: oldest messages dropped (the collector has not confirmed \
                 them for a long time)"
            );
        } else {
            tracing::debug!(
                through,
                dropped_total,
                "spool bound: oldest messages dropped"
            );
        }
    }

    /// Drops messages past the age bound. Writes nothing: their rows and the drop count go
    /// with the next write, within `flush_after`.
    pub fn expire(&mut self, now_ms: i64, now: Instant) {
        if let Some(through) = self.index.expire(now_ms) {
            self.log_drop(through);
            self.forget_mem_through(through);
            self.index.changed(now);
        }
    }

    /// The payload of a message in the index. A message whose payload is missing is removed
    /// from the index (and counted as dropped) so the replayer moves on.
    pub fn body(&mut self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        if let Some(b) = self.mem.get(&seq) {
            return Ok(Some(b.clone()));
        }
        let body = self.store.body(seq).map_err(|e| self.db(e))?;
        if body.is_none() {
            self.index.forget(seq);
        }
        Ok(body)
    }

    /// Removes a message whose payload cannot be replayed, counting it as dropped.
    pub fn discard(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.index.forget(seq);
        self.mem.remove(&seq);
        self.store
            .delete_one(seq, self.index.dropped())
            .map_err(|e| self.db(e))
    }

    /// Direct access to the file, for tools (`examples/fill_spool.rs`) and tests.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

#[cfg(test)]
mod tests;
