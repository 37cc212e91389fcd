//! `dozor-alerts-core`: the alert engine without I/O. Detection (`rules`) turns a live
//! snapshot into conditions; the engine (`engine`) gives them a lifecycle (pending → firing →
//! resolved, absorption, relabelling from replayed evidence, flap control, silences,
//! acknowledgements) and decides what people are told; `text` words it in Russian; `model` is
//! the vocabulary the API, the journal and the channels serialize; `config` the `[alerts]`
//! options the engine reads. Every entry point takes the time; the collector's alert thread
//! owns an [`engine::Engine`], persists what it returns and delivers the messages.
//! See `docs/alerts.md`.

pub mod config;
pub mod engine;
pub mod model;
pub mod planned;
mod rules;
pub mod text;
