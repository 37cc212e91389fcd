//! dozor collector: receives agent messages over MQTT, keeps live state, stores history,
//! derives availability and indicators, raises alerts and serves the HTTP API.

pub mod alerts;
pub mod config;
pub mod derive;
pub mod roster;
pub mod state;
pub mod store;
