//! History storage: the embedded SQLite store (default) and the InfluxDB v2 sink.
//!
//! The pipeline hands every accepted, deduplicated message (and every live-state transition) to
//! a [`Store`] in batches; a batch is one durable transaction together with the delivery marks
//! that make deduplication survive restarts. Only after `write` returns Ok does the collector
//! acknowledge the batch's MQTT messages and confirm their sequence numbers to the agents.

pub mod config;
pub mod history;
pub mod influx;
pub mod intervals;
pub mod load;
pub(crate) mod planned;
pub mod reader;
mod schema;
/// Synthetic history for tests, benchmarks and `examples/gen_history` (feature `sim`): not in
/// the release binary.
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod sqlite;

pub use influx::{InfluxSink, SinkStats};
pub use reader::Reader;
pub use sqlite::{SqliteStore, db_path};

use crate::delivery::DeliveryMark;
use crate::record::Batch;

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
    /// Work `write` defers (the SQLite store's journal, applied to its tables about once a
    /// second): done now when `force` or when due. Returns how long until it is due again;
    /// `None`: nothing is deferred. The store thread calls it between batches and at the end.
    fn settle(&mut self, force: bool) -> Result<Option<std::time::Duration>, StoreError> {
        let _ = force;
        Ok(None)
    }
}
