//! The dozor wire contract shared by agent and collector: topics, payloads, schema version and
//! the validation every received message goes through. See `docs/protocol.md`.

pub mod auth;
mod payload;
mod topic;
mod validate;

pub use payload::*;
pub use topic::{
    Kind, LIVE, MAX_ID_LEN, REPLAY, TOPIC_ROOT, Topic, UPSTREAM, client_id, parse_username, topic,
    upstream_filter, username, valid_id,
};
pub use validate::{Limits, decode, decode_ack, decode_cfg, valid_text};

/// Largest payload a receiver accepts, in bytes. Agents keep their messages well below it.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// Why a received message was rejected. The `as_str` names are the `reason` label in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload larger than {MAX_PAYLOAD_BYTES} bytes")]
    Oversized,
    /// The topic is not `dozor/v1/{mo}/{host}/{kind}` with valid ids and an upstream kind.
    #[error("topic is not a dozor v1 upstream topic")]
    BadTopic,
    /// The payload is not UTF-8.
    #[error("payload is not UTF-8")]
    BadUtf8,
    /// The payload is not JSON of the expected shape.
    #[error("payload is not valid JSON for its kind")]
    BadJson,
    /// The payload's `v` is not a version this receiver speaks.
    #[error("unknown schema version")]
    UnknownVersion,
    /// `mo`/`host` in the payload differ from the topic.
    #[error("payload identity does not match the topic")]
    IdentityMismatch,
    /// A value is out of range: NaN, negative, absurd, too long or too many entries; or a
    /// message on a replay topic not flagged `replay`.
    #[error("value out of range")]
    BadValue,
    /// The timestamp is implausible.
    #[error("implausible timestamp")]
    BadTimestamp,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::Oversized,
        Reject::BadTopic,
        Reject::BadUtf8,
        Reject::BadJson,
        Reject::UnknownVersion,
        Reject::IdentityMismatch,
        Reject::BadValue,
        Reject::BadTimestamp,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::BadTopic => "bad_topic",
            Reject::BadUtf8 => "bad_utf8",
            Reject::BadJson => "bad_json",
            Reject::UnknownVersion => "unknown_version",
            Reject::IdentityMismatch => "identity_mismatch",
            Reject::BadValue => "bad_value",
            Reject::BadTimestamp => "bad_timestamp",
        }
    }
}

/// A decoded, validated upstream message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Birth(Envelope<Birth>),
    State(Envelope<State>),
    Hb(Envelope<Heartbeat>),
    Probe(Envelope<Probe>),
}

/// The header fields of any message, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub mo: &'a str,
    pub host: &'a str,
    pub inst: &'a str,
    pub seq: u64,
    pub ts: i64,
    pub replay: bool,
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Birth(_) => Kind::Birth,
            Message::State(_) => Kind::State,
            Message::Hb(_) => Kind::Hb,
            Message::Probe(_) => Kind::Probe,
        }
    }

    pub fn header(&self) -> Header<'_> {
        fn h<B>(e: &Envelope<B>) -> Header<'_> {
            Header {
                mo: &e.mo,
                host: &e.host,
                inst: &e.inst,
                seq: e.seq,
                ts: e.ts,
                replay: e.replay,
            }
        }
        match self {
            Message::Birth(e) => h(e),
            Message::State(e) => h(e),
            Message::Hb(e) => h(e),
            Message::Probe(e) => h(e),
        }
    }

    /// True for the kinds that take a sequence number of their own and are delivered
    /// at-least-once (birth, hb, probe); `state` is a live signal only.
    pub fn is_sequenced(&self) -> bool {
        !matches!(self, Message::State(_))
    }
}

impl<B: serde::Serialize> Envelope<B> {
    /// Serializes to JSON. Infallible for the types of this crate (no maps with non-string keys).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
