//! Outage incidents: the I/O edge around the engine of `dozor-alerts-core`.
//!
//! The crate `dozor-alerts-core` holds detection, the incident lifecycle, the Russian texts and
//! the model (re-exported here as `engine`, `model`, `text`); this module adds the journal
//! (`incidents.db`), the notifier (`notify`: webhooks, Telegram, e-mail, Alertmanager), the
//! channel configuration (`config`), `service` tying them together, `task` running it on its
//! own thread fed by the pipeline over a bounded channel, and `api` serving it over HTTP.
//! See `docs/alerts.md`.

pub(crate) mod api;
pub(crate) mod config;
pub(crate) mod journal;
pub(crate) mod notify;
pub(crate) mod service;
pub(crate) mod task;

pub(crate) use dozor_alerts_core::{engine, model, planned, text};

pub(crate) use api::router;
pub(crate) use service::AlertService;
pub(crate) use task::{AlertInput, AlertSender};
