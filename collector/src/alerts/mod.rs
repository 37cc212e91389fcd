//! Outage incidents: an I/O-free engine over live state, and notification channels.
//!
//! Detection (`rules`) turns the live snapshot into conditions; the engine (`engine`) gives
//! them a lifecycle and decides what people are told; the journal persists incidents; the
//! notifier (`notify`) delivers messages over webhooks, Telegram, e-mail and Alertmanager;
//! `service` ties them together, `task` runs it on its own thread fed by the pipeline over a
//! bounded channel, and `api` serves them over HTTP.
//! See `docs/alerts.md`.

pub(crate) mod api;
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod journal;
pub(crate) mod model;
pub(crate) mod notify;
mod rules;
pub(crate) mod service;
pub(crate) mod task;
pub(crate) mod text;

pub(crate) use api::router;
pub(crate) use service::AlertService;
pub(crate) use task::{AlertInput, AlertSender};
