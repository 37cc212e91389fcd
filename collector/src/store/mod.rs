//! History storage: the embedded SQLite store (default) and the InfluxDB v2 sink.
//!
//! The pipeline hands every accepted, deduplicated message (and every live-state transition) to
//! a [`Store`] in batches; a batch is one durable transaction together with the delivery marks
//! that make deduplication survive restarts. Only after `write` returns Ok does the collector
//! acknowledge the batch's MQTT messages and confirm their sequence numbers to the agents.

pub mod config;
pub mod influx;
pub mod intervals;
pub mod load;
pub mod reader;
mod schema;
pub mod sim;
pub mod sqlite;

pub use influx::{InfluxSink, SinkStats};
pub use reader::Reader;
pub use sqlite::{SqliteStore, db_path};

use crate::state::Transition;
use dozor_proto::Message;
use std::sync::Arc;

/// One accepted, deduplicated message with its times.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub msg: Message,
    /// Collector time of receipt, Unix ms.
    pub recv_ms: i64,
    /// Agent timestamp corrected by the host's estimated clock offset, Unix ms. For live
    /// messages this is close to `recv_ms`; for replayed ones it is the original time.
    pub ts_ms: i64,
}

/// What the pipeline asks the store to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Msg(Arc<Accepted>),
    /// A live-state transition decided by the collector (lost by lapsed heartbeats, last will,
    /// graceful offline, back online).
    Transition(Transition),
    /// The collector started (after a clean stop or a crash: the gap since the last record is
    /// time nobody observed).
    CollectorStart {
        at_ms: i64,
    },
    /// The collector is stopping cleanly.
    CollectorStop {
        at_ms: i64,
    },
}

/// Contiguous delivery progress of one agent instance (see `crate::delivery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMark {
    pub inst: std::sync::Arc<str>,
    pub mo: std::sync::Arc<str>,
    pub host: std::sync::Arc<str>,
    /// Every seq ≤ this is stored (or settled: dropped by the agent's spool bound).
    pub contiguous: u64,
    /// Stored seqs above `contiguous + 1`, ascending, bounded.
    pub above: Vec<u64>,
    /// Messages of this instance stored so far (each sequence number once): the ledger the
    /// fault drills compare with what agents produced.
    pub stored: u64,
    /// Sequence numbers settled without storing (refused by policy).
    pub refused: u64,
}

/// A batch written in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub records: Vec<Record>,
    /// New delivery marks of the instances this batch touched.
    pub delivery: Vec<DeliveryMark>,
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Filesystem failure (creating the data dir, …).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data is not what this version expects.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

/// A durable history store. Implementations run on a dedicated thread (blocking I/O).
pub trait Store: Send {
    /// Writes a batch in one durable transaction: after Ok its effects survive kill -9 and
    /// power loss.
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError>;
    /// The delivery marks as of the last committed batch.
    fn load_delivery(&mut self) -> Result<Vec<DeliveryMark>, StoreError>;
    /// Periodic housekeeping at collector time `now_ms` (aggregates, retention, bounds). The
    /// SQLite store also runs it from `write` every 10 s; calling it on idle periods (every
    /// ~10–60 s, on the store thread) keeps the collector's "alive" time current.
    fn maintain(&mut self, now_ms: i64) -> Result<(), StoreError> {
        let _ = now_ms;
        Ok(())
    }
}

/// A store that keeps only delivery marks in memory: for benchmarks of the ingest path alone.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub marks: std::collections::HashMap<String, DeliveryMark>,
    pub records: usize,
}

impl Store for MemoryStore {
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.records += batch.records.len();
        for m in &batch.delivery {
            self.marks.insert(m.inst.to_string(), m.clone());
        }
        Ok(())
    }

    fn load_delivery(&mut self) -> Result<Vec<DeliveryMark>, StoreError> {
        Ok(self.marks.values().cloned().collect())
    }
}
