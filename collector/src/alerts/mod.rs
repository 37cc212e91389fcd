//! Outage incidents: an I/O-free engine over live state, and notification channels.

pub mod config;
