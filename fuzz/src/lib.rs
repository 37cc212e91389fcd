//! Checks shared by the fuzz targets: decode an input and assert the decoder's invariants.
//!
//! * a payload over `MAX_PAYLOAD_BYTES` is `Oversized`, whatever the topic;
//! * a topic that does not parse is `BadTopic`; a downstream kind (ack, cfg) is `BadTopic`
//!   (or `BadUtf8`, which `decode` checks first);
//! * on a valid upstream topic, `BadUtf8` is returned exactly when the payload is not UTF-8;
//! * an accepted message has the topic's kind and ids, a valid `inst` and a plausible `ts`;
//!   re-encoding its envelope with `to_json()` and decoding that again gives an equal message
//!   (or `Oversized`, if the compact re-encoding is over the size limit), and encoding the result
//!   again gives the same bytes;
//! * an accepted `decode_ack` result round-trips through JSON the same way.
//!
//! Panics (a failed assertion, or one inside the decoder) are what libFuzzer reports as crashes.

use dozor_proto::{
    Kind, Limits, MAX_PAYLOAD_BYTES, Message, Reject, Topic, decode, decode_ack, valid_id,
};

/// Ids of the seeds and templates (from `proto/src/validate/tests.rs`).
pub const MO: &str = "1.2.643.5.1.13.13.12.2.27.1234";
pub const HOST: &str = "pc-01";
pub const LIMITS: Limits = Limits::DEFAULT;

/// Decodes `payload` on `topic` and checks every invariant; on the ack topic also `decode_ack`.
/// Returns the decoded message, if it was accepted.
pub fn check(topic: &str, payload: &[u8]) -> Option<Message> {
    trace(topic, payload);
    let msg = check_decode(topic, payload);
    if Topic::parse(topic).is_ok_and(|t| t.kind == Kind::Ack) {
        check_decode_ack(payload);
    }
    msg
}

pub fn check_decode(topic: &str, payload: &[u8]) -> Option<Message> {
    let got = decode(topic, payload, &LIMITS);
    if payload.len() > MAX_PAYLOAD_BYTES {
        assert_eq!(
            got,
            Err(Reject::Oversized),
            "oversized payload on {topic:?}"
        );
        return None;
    }
    let t = match Topic::parse(topic) {
        Ok(t) => t,
        Err(e) => {
            assert_eq!(e, Reject::BadTopic);
            assert_eq!(got, Err(Reject::BadTopic), "topic {topic:?} does not parse");
            return None;
        }
    };
    let utf8 = std::str::from_utf8(payload).is_ok();
    if !t.kind.is_upstream() {
        // `decode` checks UTF-8 before it looks at the kind.
        let want = if utf8 {
            Reject::BadTopic
        } else {
            Reject::BadUtf8
        };
        assert_eq!(got, Err(want), "downstream topic {topic:?}");
        return None;
    }
    assert_eq!(
        got == Err(Reject::BadUtf8),
        !utf8,
        "BadUtf8 iff the payload is not UTF-8: {got:?}"
    );
    let Ok(msg) = got else {
        return None;
    };

    assert_eq!(msg.kind(), t.kind);
    let h = msg.header();
    assert_eq!(
        (h.mo, h.host),
        (t.mo, t.host),
        "identity differs from the topic"
    );
    assert!(valid_id(h.inst), "inst {:?}", h.inst);
    assert!(
        (LIMITS.min_ts_ms..=LIMITS.max_ts_ms).contains(&h.ts),
        "ts {}",
        h.ts
    );

    let json = to_json(&msg);
    let again = decode(topic, &json, &LIMITS);
    if json.len() > MAX_PAYLOAD_BYTES {
        // Compact re-encoding can be a few bytes longer than the input (`1` becomes `1.0`).
        assert_eq!(again, Err(Reject::Oversized));
        return Some(msg);
    }
    assert_eq!(
        again.as_ref(),
        Ok(&msg),
        "re-encoded message decodes differently: {}",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(to_json(&again.unwrap()), json, "encoding is not stable");
    Some(msg)
}

/// The envelope's `to_json()`, whatever the kind; never empty.
pub fn to_json(m: &Message) -> Vec<u8> {
    let json = match m {
        Message::Birth(e) => e.to_json(),
        Message::State(e) => e.to_json(),
        Message::Hb(e) => e.to_json(),
        Message::Probe(e) => e.to_json(),
    };
    assert!(!json.is_empty(), "to_json failed for {m:?}");
    json
}

pub fn check_decode_ack(payload: &[u8]) {
    let got = decode_ack(payload);
    if payload.len() > MAX_PAYLOAD_BYTES {
        assert_eq!(got, Err(Reject::Oversized));
        return;
    }
    let Ok(ack) = got else {
        return;
    };
    assert_eq!(ack.v, dozor_proto::SCHEMA_VERSION);
    let json = serde_json::to_vec(&ack).expect("ack serializes");
    assert_eq!(decode_ack(&json).as_ref(), Ok(&ack), "ack round trip");
}

/// With `DOZOR_FUZZ_TRACE` set, prints each topic and payload to stderr: run a target on a
/// crash file with it to see the message (`decode_fields` builds its payload from the input).
fn trace(topic: &str, payload: &[u8]) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("DOZOR_FUZZ_TRACE").is_some()) {
        eprintln!(
            "topic: {topic}\npayload: {}",
            String::from_utf8_lossy(payload)
        );
    }
}

/// Valid messages of each upstream kind, as in `proto/src/validate/tests.rs`.
pub fn template(kind: Kind) -> serde_json::Value {
    use serde_json::json;
    const TS: i64 = 1_763_900_000_000;
    let body = match kind {
        Kind::Birth => json!({
            "agent_version": "0.1.0", "role": "workstation", "site": "Поликлиника №1",
            "hostname": "PC-01", "os_name": "Astra Linux", "os_version": "1.7",
            "cpu_model": "Intel", "cpu_count": 4, "mem_total_bytes": 4000,
            "disks": [{"mount": "/", "fs": "ext4", "total_bytes": 100}],
            "boot_time": 1_763_890_000, "boot_id": "b-1", "seq_base": 1,
            "interval_secs": 30, "keepalive_secs": 30,
            "targets": [{"name": "mis", "category": "mis"}]
        }),
        Kind::State => json!({"state": "offline", "reason": "shutdown"}),
        Kind::Hb => json!({
            "uptime_secs": 3600, "cpu_pct": 12.5, "mem_used_bytes": 1000, "mem_total_bytes": 4000,
            "load": [0.1, 0.2, 0.3],
            "disks": [{"mount": "/", "total_bytes": 100, "used_bytes": 50}],
            "interval_secs": 30,
            "spool": {"pending": 3, "bytes": 2048, "dropped": 0, "oldest_seq": 5}
        }),
        _ => json!({"results": [
            {"target": "mis", "category": "mis", "ok": true, "latency_ms": 12, "status": 200},
            {"target": "lis", "category": "lis", "ok": false, "latency_ms": 3000, "error": "timeout"},
            {"target": "x", "category": "something_new", "ok": false, "error": "brand_new_class"}
        ]}),
    };
    json!({
        "v": 1, "mo": MO, "host": HOST, "inst": "a1b2c3", "seq": 7, "ts": TS, "replay": false,
        "body": body
    })
}
