//! `dozor-live`: the collector's live picture without I/O — each host's state and its
//! transitions (`state`), exactly-once delivery tracking per agent instance (`delivery`), and
//! the records the pipeline decides and the store writes (`record`). Plain types with the clock
//! passed in; the collector's pipeline task owns them, the alert engine reads their snapshots.

pub mod delivery;
pub mod record;
pub mod state;
