//! Fuzz target for `dozor_proto::decode` (and `decode_ack`).
//!
//! Input layout: one selector byte, then the payload. The selector picks the topic:
//!
//! * bits 0..3 — kind: 0 birth, 1 state, 2 hb, 3 probe, 4 ack, 5 cfg, 6 an unknown kind,
//!   7 raw topic: the next byte is a length `n`, the following `n` bytes are the topic
//!   (lossily made UTF-8) and the rest is the payload;
//! * bits 3..6, XOR 6 — ids in the topic: 0 the seeds' ids (`1.2.643.5.1.13.13.12.2.27.1234`,
//!   `pc-01`), 1 the payload's own `mo`/`host` (so mutated ids still pass the identity check),
//!   2 ids of the maximum length, 3 one-letter ids, 4 a mo starting with a dot, 5 a host with a
//!   space, 6 a host one byte too long, 7 a non-ASCII mo;
//! * bits 6..8 — topic shape: 0 well-formed, 1 trailing slash, 2 `dozor/v2`, 3 no kind segment.
//!
//! So the ASCII digits `0`..`7` select kinds 0..7 with the seeds' ids in a well-formed topic and
//! `8` `9` `:` `;` birth/state/hb/probe with the payload's ids: the seeds in
//! `corpus/decode/seed-*` are such a byte followed by a valid JSON message.
//!
//! The invariants checked are those of `dozor_fuzz::check` (`fuzz/src/lib.rs`).

#![no_main]

use dozor_fuzz::{HOST, MO, check};
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (topic, payload) = topic_and_payload(sel, rest);
    check(&topic, payload);
});

fn topic_and_payload(sel: u8, rest: &[u8]) -> (String, &[u8]) {
    let kind = match sel & 7 {
        0 => "birth",
        1 => "state",
        2 => "hb",
        3 => "probe",
        4 => "ack",
        5 => "cfg",
        6 => "heartbeat",
        _ => {
            let Some((&n, rest)) = rest.split_first() else {
                return (String::new(), rest);
            };
            let (t, payload) = rest.split_at(usize::from(n).min(rest.len()));
            return (String::from_utf8_lossy(t).into_owned(), payload);
        }
    };
    let long = "x".repeat(64);
    let (mo, host): (Cow<str>, Cow<str>) = match ((sel >> 3) & 7) ^ 6 {
        0 => (MO.into(), HOST.into()),
        1 => ids_of(rest),
        2 => (long.as_str().into(), long.as_str().into()),
        3 => ("m".into(), "h".into()),
        4 => (".mo".into(), HOST.into()),
        5 => (MO.into(), "pc 01".into()),
        6 => (MO.into(), format!("{long}x").into()),
        _ => ("мо".into(), HOST.into()),
    };
    let topic = match sel >> 6 {
        0 => format!("dozor/v1/{mo}/{host}/{kind}"),
        1 => format!("dozor/v1/{mo}/{host}/{kind}/"),
        2 => format!("dozor/v2/{mo}/{host}/{kind}"),
        _ => format!("dozor/v1/{mo}/{host}"),
    };
    (topic, rest)
}

/// The payload's own `mo` and `host`, or the seeds' ids where it has none.
fn ids_of(payload: &[u8]) -> (Cow<'static, str>, Cow<'static, str>) {
    let doc = serde_json::from_slice::<serde_json::Value>(payload).ok();
    let field = |name: &str, default: &'static str| -> Cow<'static, str> {
        match doc
            .as_ref()
            .and_then(|d| d.get(name))
            .and_then(|v| v.as_str())
        {
            Some(s) => s.to_owned().into(),
            None => default.into(),
        }
    };
    (field("mo", MO), field("host", HOST))
}
