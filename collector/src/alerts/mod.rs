//! Outage incidents: an I/O-free engine over live state, and notification channels.
//!
//! Detection (`rules`) turns the live snapshot into conditions; the engine (`engine`) gives
//! them a lifecycle and decides what people are told; the journal persists incidents; the
//! notifier (`notify`) delivers messages over webhooks, Telegram, e-mail and Alertmanager;
//! `service` ties them together for the pipeline task and `api` serves them over HTTP.
//! See `docs/alerts.md`.

pub mod api;
pub mod config;
pub mod engine;
pub mod journal;
pub mod model;
pub mod notify;
mod rules;
pub mod service;
pub mod text;

pub use api::router;
pub use engine::{Engine, ReplayKind, Track};
pub use model::{
    Cause, Change, ChangeKind, Evidence, Incident, IncidentState, MoRef, Rule, Severity, Silence,
    SilenceMatch,
};
pub use service::{AlertHandle, AlertService, AlertsError, Clock, system_clock};
