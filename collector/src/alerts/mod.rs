//! Outage incidents: an I/O-free engine over live state, and notification channels.
//!
//! Detection (`rules`) turns the live snapshot into conditions; the engine (`engine`) gives
//! them a lifecycle and decides what people are told; the journal persists incidents; the
//! notifier (`notify`) delivers messages over webhooks, Telegram, e-mail and Alertmanager;
//! `service` ties them together, `task` runs it on its own thread fed by the pipeline over a
//! bounded channel, and `api` serves them over HTTP.
//! See `docs/alerts.md`.

pub mod api;
pub mod config;
pub mod engine;
pub mod journal;
pub mod model;
pub mod notify;
mod rules;
pub mod service;
pub mod task;
pub mod text;

pub use api::router;
pub use engine::{Engine, ReplayKind, Track};
pub use model::{
    Cause, Change, ChangeKind, Evidence, Incident, IncidentState, MoRef, Rule, Severity, Silence,
    SilenceMatch,
};
pub use service::{AlertHandle, AlertService, AlertsError};
pub use task::{AlertInput, AlertSender};
