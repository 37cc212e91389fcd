//! The records the pipeline decides and the store writes: accepted messages, live-state
//! transitions, collector runs, and the batch that carries them with their delivery marks. A leaf
//! shared by `state`, `pipeline`, `store` and `alerts`, so none of them imports another for these.

use crate::delivery::DeliveryMark;
use dozor_proto::{ConnState, Message, Role};
use serde::Serialize;
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

/// A change of a host's connection state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub mo: String,
    pub host_id: String,
    pub role: Option<Role>,
    pub from: ConnState,
    pub to: ConnState,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// A batch written in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub records: Vec<Record>,
    /// New delivery marks of the instances this batch touched.
    pub delivery: Vec<DeliveryMark>,
}
