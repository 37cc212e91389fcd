//! Outage incidents: an I/O-free engine over live state, and notification channels.
//!
//! Detection (`rules`) turns the live snapshot into conditions; the engine (`engine`) gives
//! them a lifecycle and decides what people are told; the journal persists incidents; the
//! notifier (`notify`) delivers messages over webhooks, Telegram, e-mail and Alertmanager.
//! See `docs/alerts.md`.

pub mod config;
pub mod engine;
pub mod journal;
pub mod model;
mod rules;
pub mod text;

pub use engine::{Engine, ReplayKind, Track};
pub use model::{
    Cause, Change, ChangeKind, Evidence, Incident, IncidentState, MoRef, Rule, Severity, Silence,
    SilenceMatch,
};
