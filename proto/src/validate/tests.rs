//! Table-driven tests of `decode`: valid and invalid messages.

use super::*;
use crate::{ErrorClass, Header};
use proptest::prelude::*;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.1234";
const TS: i64 = 1_763_900_000_000;

fn hb_json() -> serde_json::Value {
    serde_json::json!({
        "v": 1, "mo": MO, "host": "pc-01", "inst": "a1b2c3", "seq": 7, "ts": TS,
        "body": {
            "uptime_secs": 3600, "cpu_pct": 12.5, "mem_used_bytes": 1000, "mem_total_bytes": 4000,
            "load": [0.1, 0.2, 0.3],
            "disks": [{"mount": "/", "total_bytes": 100, "used_bytes": 50}],
            "interval_secs": 30
        }
    })
}

fn probe_json() -> serde_json::Value {
    serde_json::json!({
        "v": 1, "mo": MO, "host": "pc-01", "inst": "a1b2c3", "seq": 8, "ts": TS, "replay": true,
        "body": {"results": [
            {"target": "mis", "category": "mis", "ok": true, "latency_ms": 12, "status": 200},
            {"target": "lis", "category": "lis", "ok": false, "latency_ms": 3000, "error": "timeout"},
            {"target": "x", "category": "something_new", "ok": false, "error": "brand_new_class"}
        ]}
    })
}

fn birth_json() -> serde_json::Value {
    serde_json::json!({
        "v": 1, "mo": MO, "host": "pc-01", "inst": "a1b2c3", "seq": 1, "ts": TS,
        "body": {
            "agent_version": "0.1.0", "role": "workstation", "site": "Поликлиника №1",
            "hostname": "PC-01", "os_name": "Astra Linux", "os_version": "1.7",
            "cpu_model": "Intel", "cpu_count": 4, "mem_total_bytes": 4000,
            "disks": [{"mount": "/", "fs": "ext4", "total_bytes": 100}],
            "boot_time": 1_763_890_000, "boot_id": "b-1", "seq_base": 1,
            "interval_secs": 30, "keepalive_secs": 30,
            "targets": [{"name": "mis", "category": "mis"}]
        }
    })
}

fn state_json() -> serde_json::Value {
    serde_json::json!({
        "v": 1, "mo": MO, "host": "pc-01", "inst": "a1b2c3", "seq": 1, "ts": TS,
        "body": {"state": "offline", "reason": "shutdown"}
    })
}

fn topic_of(kind: &str) -> String {
    format!("dozor/v1/{MO}/pc-01/{kind}")
}

/// Applies `edit` to a JSON document and decodes it on `kind`'s topic.
fn check(
    kind: &str,
    base: serde_json::Value,
    edit: impl FnOnce(&mut serde_json::Value),
    expected: Result<(), Reject>,
) {
    let mut doc = base;
    edit(&mut doc);
    let bytes = serde_json::to_vec(&doc).expect("test json");
    let got = decode(&topic_of(kind), &bytes, &Limits::DEFAULT).map(|_| ());
    assert_eq!(got, expected, "{kind}: {doc}");
}

#[test]
fn valid_messages_decode() {
    check("hb", hb_json(), |_| {}, Ok(()));
    check("probe", probe_json(), |_| {}, Ok(()));
    check("birth", birth_json(), |_| {}, Ok(()));
    check("state", state_json(), |_| {}, Ok(()));
    check(
        "hb",
        hb_json(),
        |d| d["body"]["load"] = serde_json::Value::Null,
        Ok(()),
    );
}

/// Replay topics decode as their live kind, only with `replay: true`; `state` has no replay
/// topic. A live topic still takes replays (agents before the replay topics send them there).
#[test]
fn replay_topics_decode_as_their_live_kind() {
    let replay = |d: &mut serde_json::Value| d["replay"] = serde_json::json!(true);
    check("hb-replay", hb_json(), replay, Ok(()));
    check("birth-replay", birth_json(), replay, Ok(()));
    check("probe-replay", probe_json(), |_| {}, Ok(()));
    check("hb", hb_json(), replay, Ok(()));
    check("hb-replay", hb_json(), |_| {}, Err(Reject::BadValue));
    check(
        "probe-replay",
        probe_json(),
        |d| d["replay"] = serde_json::json!(false),
        Err(Reject::BadValue),
    );
    check("state-replay", state_json(), replay, Err(Reject::BadTopic));
    check("hb-replay", probe_json(), |_| {}, Err(Reject::BadJson));
    let bytes = serde_json::to_vec(&probe_json()).unwrap();
    let m = decode(&topic_of("probe-replay"), &bytes, &Limits::DEFAULT).unwrap();
    assert_eq!(m.kind(), Kind::Probe);
}

#[test]
fn decoded_fields() {
    let bytes = serde_json::to_vec(&probe_json()).unwrap();
    let m = decode(&topic_of("probe"), &bytes, &Limits::DEFAULT).unwrap();
    assert_eq!(
        m.header(),
        Header {
            mo: MO,
            host: "pc-01",
            inst: "a1b2c3",
            seq: 8,
            ts: TS,
            replay: true
        }
    );
    let Message::Probe(p) = m else {
        panic!("not a probe")
    };
    assert_eq!(p.body.results[1].error, Some(ErrorClass::Timeout));
    assert_eq!(p.body.results[2].category, crate::Category::Other);
    assert_eq!(p.body.results[2].error, Some(ErrorClass::Other));
}

#[test]
fn invalid_messages_are_rejected_with_reason() {
    use serde_json::json;
    let r = Err;
    check(
        "hb",
        hb_json(),
        |d| d["v"] = json!(2),
        r(Reject::UnknownVersion),
    );
    check(
        "hb",
        hb_json(),
        |d| {
            d["v"] = json!(9);
            d["body"] = json!("new shape")
        },
        r(Reject::UnknownVersion),
    );
    check(
        "hb",
        hb_json(),
        |d| d["host"] = json!("pc-02"),
        r(Reject::IdentityMismatch),
    );
    check(
        "hb",
        hb_json(),
        |d| d["mo"] = json!("1.2.3"),
        r(Reject::IdentityMismatch),
    );
    check(
        "hb",
        hb_json(),
        |d| d["inst"] = json!("a b"),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["cpu_pct"] = json!(-1.0),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["cpu_pct"] = json!(250.0),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["cpu_pct"] = json!(null),
        r(Reject::BadJson),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["mem_used_bytes"] = json!(5000),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["mem_used_bytes"] = json!(-5),
        r(Reject::BadJson),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["load"] = json!([1.0, -2.0, 0.0]),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["interval_secs"] = json!(0),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["disks"][0]["used_bytes"] = json!(101),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["uptime_secs"] = json!(u64::MAX),
        r(Reject::BadValue),
    );
    check(
        "hb",
        hb_json(),
        |d| d["body"]["extra"] = json!(1),
        r(Reject::BadJson),
    );
    check(
        "hb",
        hb_json(),
        |d| d["ts"] = json!(0),
        r(Reject::BadTimestamp),
    );
    check(
        "hb",
        hb_json(),
        |d| d["ts"] = json!(i64::MAX),
        r(Reject::BadTimestamp),
    );
    check(
        "hb",
        hb_json(),
        |d| {
            d["body"]["disks"] = json!(vec![
                json!({"mount": "/", "total_bytes": 1, "used_bytes": 0});
                65
            ])
        },
        r(Reject::BadValue),
    );
    check(
        "probe",
        probe_json(),
        |d| d["body"]["results"][0]["error"] = json!("dns"),
        r(Reject::BadValue),
    );
    check(
        "probe",
        probe_json(),
        |d| d["body"]["results"][0]["target"] = json!(""),
        r(Reject::BadValue),
    );
    check(
        "probe",
        probe_json(),
        |d| d["body"]["results"][0]["latency_ms"] = json!(4_000_000),
        r(Reject::BadValue),
    );
    check(
        "birth",
        birth_json(),
        |d| d["body"]["role"] = json!("router"),
        r(Reject::BadJson),
    );
    check(
        "birth",
        birth_json(),
        |d| d["body"]["cpu_count"] = json!(0),
        r(Reject::BadValue),
    );
    check(
        "birth",
        birth_json(),
        |d| d["body"]["site"] = json!("x".repeat(300)),
        r(Reject::BadValue),
    );
    check(
        "birth",
        birth_json(),
        |d| d["body"]["hostname"] = json!("a\u{0007}b"),
        r(Reject::BadValue),
    );
    check(
        "state",
        state_json(),
        |d| d["body"]["state"] = json!("zombie"),
        r(Reject::BadJson),
    );
    // A heartbeat body on the probe topic is the wrong shape.
    check("probe", hb_json(), |_| {}, r(Reject::BadJson));
}

/// Regression (issue 10): U+2028 and U+202E in a site or target name made an alert's text read
/// «ВОССТАНОВЛЕНО: ложная тревога…». Every bidi control and line/paragraph separator is
/// rejected in every string an agent sends, so nothing downstream (alerts, status page,
/// exports) ever sees one.
#[test]
fn bidi_controls_and_separators_are_rejected() {
    use serde_json::json;
    let bad = [
        '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
        '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}',
    ];
    for c in bad {
        let s = format!("ВОССТАНОВЛЕНО{c}x");
        for field in ["site", "hostname", "os_name", "cpu_model"] {
            check(
                "birth",
                birth_json(),
                |d| d["body"][field] = json!(s),
                Err(Reject::BadValue),
            );
        }
        check(
            "birth",
            birth_json(),
            |d| d["body"]["targets"][0]["name"] = json!(s),
            Err(Reject::BadValue),
        );
        check(
            "probe",
            probe_json(),
            |d| d["body"]["results"][0]["target"] = json!(s),
            Err(Reject::BadValue),
        );
        check(
            "state",
            state_json(),
            |d| d["body"]["reason"] = json!(s),
            Err(Reject::BadValue),
        );
        check(
            "hb",
            hb_json(),
            |d| d["body"]["disks"][0]["mount"] = json!(s),
            Err(Reject::BadValue),
        );
    }
    // Ordinary Cyrillic, punctuation and other non-ASCII text stays accepted.
    check(
        "birth",
        birth_json(),
        |d| d["body"]["site"] = json!("ФАП «Сосновка» — №2 (кор. Б)"),
        Ok(()),
    );
}

/// Found by `fuzz/` (target `decode_fields`): `boot_time * 1000` overflowed and panicked (debug
/// builds) or wrapped (release builds), where 18_446_745_773_709_552 became 1_700_000_000_384
/// ms (2023) and was accepted.
#[test]
fn absurd_boot_time_is_rejected_without_overflow() {
    use serde_json::json;
    for t in [
        i64::MAX,
        i64::MIN,
        i64::MAX / 1000 + 1,
        i64::MIN / 1000 - 1,
        18_234_469_427_758_375,
        18_446_745_773_709_552,
    ] {
        check(
            "birth",
            birth_json(),
            |d| d["body"]["boot_time"] = json!(t),
            Err(Reject::BadTimestamp),
        );
    }
    // Limits at the edge of the range do not overflow either.
    let bytes = serde_json::to_vec(&birth_json()).unwrap();
    let wide = Limits {
        min_ts_ms: i64::MIN,
        max_ts_ms: i64::MAX,
        ..Limits::DEFAULT
    };
    assert!(decode(&topic_of("birth"), &bytes, &wide).is_ok());
}

#[test]
fn raw_bytes_are_rejected_with_reason() {
    let l = Limits::DEFAULT;
    let t = topic_of("hb");
    assert_eq!(
        decode(&t, &vec![b' '; MAX_PAYLOAD_BYTES + 1], &l),
        Err(Reject::Oversized)
    );
    assert_eq!(decode(&t, b"\xff\xfe{}", &l), Err(Reject::BadUtf8));
    assert_eq!(decode(&t, b"{not json", &l), Err(Reject::BadJson));
    assert_eq!(decode(&t, b"", &l), Err(Reject::BadJson));
    assert_eq!(decode(&t, b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", &l), Err(Reject::BadJson));
    let body = serde_json::to_vec(&hb_json()).unwrap();
    assert_eq!(decode("dozor/v1/mo/h", &body, &l), Err(Reject::BadTopic));
    assert_eq!(
        decode(&format!("dozor/v1/{MO}/pc-01/ack"), &body, &l),
        Err(Reject::BadTopic)
    );
    // NaN cannot be written in JSON; a NaN the agent produced is serialized as null and rejected.
    let nan = serde_json::to_string(&f32::NAN).unwrap();
    assert_eq!(nan, "null");
}

#[test]
fn round_trip_through_to_json() {
    let bytes = serde_json::to_vec(&hb_json()).unwrap();
    let Message::Hb(e) = decode(&topic_of("hb"), &bytes, &Limits::DEFAULT).unwrap() else {
        panic!("not hb")
    };
    let again = decode(&topic_of("hb"), &e.to_json(), &Limits::DEFAULT).unwrap();
    assert_eq!(again, Message::Hb(e));
}

#[test]
fn ack_decodes() {
    let a = br#"{"v":1,"inst":"abc","acked_seq":42,"ts":1763900000000}"#;
    assert_eq!(decode_ack(a).map(|a| a.acked_seq), Ok(42));
    assert_eq!(decode_ack(b"{}").map(|a| a.acked_seq), Err(Reject::BadJson));
}

fn cfg_json() -> serde_json::Value {
    serde_json::json!({"v": 1, "mo": "1.2.3", "host": "pc-1", "version": 1_763_900_000_000u64,
        "ts": 1_763_900_000_000i64, "targets": [
            {"name": "mis", "category": "mis", "url": "https://mis.local/health"},
            {"name": "lis", "category": "lis", "url": "tcp://lis.local:443", "timeout_ms": 3000}]})
}

fn check_cfg(
    mutate: impl FnOnce(&mut serde_json::Value),
    topic: &str,
    expected: Result<(), Reject>,
) {
    let mut v = cfg_json();
    mutate(&mut v);
    let got = decode_cfg(topic, &serde_json::to_vec(&v).unwrap(), &Limits::DEFAULT).map(|_| ());
    assert_eq!(got, expected, "{v}");
}

#[test]
fn cfg_decodes_and_checks_identity_and_targets() {
    let t = "dozor/v1/1.2.3/pc-1/cfg";
    let ok = decode_cfg(
        t,
        &serde_json::to_vec(&cfg_json()).unwrap(),
        &Limits::DEFAULT,
    )
    .unwrap();
    assert_eq!(ok.targets.len(), 2);
    assert_eq!(ok.targets[1].timeout_ms, Some(3000));
    check_cfg(|_| {}, t, Ok(()));
    // Addressed to another host, or received on an upstream topic.
    check_cfg(
        |_| {},
        "dozor/v1/1.2.3/pc-2/cfg",
        Err(Reject::IdentityMismatch),
    );
    check_cfg(|_| {}, "dozor/v1/1.2.3/pc-1/ack", Err(Reject::BadTopic));
    check_cfg(|v| v["v"] = 2.into(), t, Err(Reject::UnknownVersion));
    check_cfg(|v| v["extra"] = 1.into(), t, Err(Reject::BadJson));
    check_cfg(
        |v| v["targets"][1]["name"] = "mis".into(),
        t,
        Err(Reject::BadValue),
    );
    check_cfg(
        |v| v["targets"][0]["name"] = "m i s".into(),
        t,
        Err(Reject::BadValue),
    );
    check_cfg(
        |v| v["targets"][0]["url"] = "".into(),
        t,
        Err(Reject::BadValue),
    );
    check_cfg(
        |v| v["targets"][0]["url"] = "http://a\u{202e}".into(),
        t,
        Err(Reject::BadValue),
    );
    check_cfg(
        |v| v["targets"][0]["timeout_ms"] = 0.into(),
        t,
        Err(Reject::BadValue),
    );
    check_cfg(|v| v["ts"] = 0.into(), t, Err(Reject::BadTimestamp));
    check_cfg(
        |v| {
            let one = v["targets"][0].clone();
            v["targets"] = (0..65)
                .map(|i| {
                    let mut o = one.clone();
                    o["name"] = format!("t{i}").into();
                    o
                })
                .collect();
        },
        t,
        Err(Reject::BadValue),
    );
    assert_eq!(
        decode_cfg(t, &vec![b' '; MAX_PAYLOAD_BYTES + 1], &Limits::DEFAULT),
        Err(Reject::Oversized)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn cfg_never_panics_on_mutated_json(pos in 0usize..400, byte in any::<u8>()) {
        let mut bytes = serde_json::to_vec(&cfg_json()).unwrap();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let _ = decode_cfg("dozor/v1/1.2.3/pc-1/cfg", &bytes, &Limits::DEFAULT);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), kind in 0usize..4) {
        let kinds = ["birth", "state", "hb", "probe"];
        let _ = decode(&topic_of(kinds[kind]), &bytes, &Limits::DEFAULT);
    }

    #[test]
    fn never_panics_on_mutated_valid_json(pos in 0usize..400, byte in any::<u8>()) {
        let mut bytes = serde_json::to_vec(&birth_json()).unwrap();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let _ = decode(&topic_of("birth"), &bytes, &Limits::DEFAULT);
    }

    #[test]
    fn never_panics_on_arbitrary_topics(topic in "\\PC{0,80}") {
        let body = serde_json::to_vec(&hb_json()).unwrap();
        let _ = decode(&topic, &body, &Limits::DEFAULT);
    }
}

/// `birth.prev_end` (issue 13 items 8/9): optional (a birth without it, as older agents send,
/// decodes), taken as given when it lies between 2020 and the birth's own `ts`, refused as
/// `bad_timestamp` otherwise, and refused as `bad_json` with an unknown field.
#[test]
fn birth_prev_end_is_optional_and_checked() {
    use serde_json::json;
    let ok = |at: i64, shutdown: bool| {
        move |d: &mut serde_json::Value| {
            d["body"]["prev_end"] = json!({"at": at, "shutdown": shutdown})
        }
    };
    check("birth", birth_json(), ok(TS - 60_000, true), Ok(()));
    check("birth", birth_json(), ok(TS, false), Ok(()));
    let bytes = serde_json::to_vec(&{
        let mut d = birth_json();
        ok(TS - 5_000, true)(&mut d);
        d
    })
    .unwrap();
    match decode(&topic_of("birth"), &bytes, &Limits::DEFAULT) {
        Ok(Message::Birth(e)) => assert_eq!(
            e.body.prev_end,
            Some(crate::PrevEnd {
                at: TS - 5_000,
                shutdown: true
            })
        ),
        other => panic!("{other:?}"),
    }
    check(
        "birth",
        birth_json(),
        ok(TS + 1, false),
        Err(Reject::BadTimestamp),
    );
    check(
        "birth",
        birth_json(),
        ok(1_000, true),
        Err(Reject::BadTimestamp),
    );
    check(
        "birth",
        birth_json(),
        |d| d["body"]["prev_end"] = json!({"at": TS, "shutdown": true, "why": "x"}),
        Err(Reject::BadJson),
    );
    check(
        "birth",
        birth_json(),
        |d| d["body"]["prev_end"] = json!({"at": TS}),
        Err(Reject::BadJson),
    );
}

/// `birth.will_seq` round-trips with and without it (an agent before it leaves it out, and a
/// birth without it is written without it); a will said to be made after its own birth (at or
/// above the birth's `seq`) is refused `bad_value`.
#[test]
fn birth_will_seq_is_optional_and_round_trips() {
    let decode_birth = |doc: &serde_json::Value| {
        let bytes = serde_json::to_vec(doc).unwrap();
        match decode(&topic_of("birth"), &bytes, &Limits::DEFAULT) {
            Ok(Message::Birth(e)) => e,
            other => panic!("{other:?}"),
        }
    };
    let old = decode_birth(&birth_json());
    assert_eq!(old.body.will_seq, None);
    let json = String::from_utf8(old.to_json()).unwrap();
    assert!(!json.contains("will_seq"), "{json}");
    assert_eq!(decode_birth(&serde_json::from_str(&json).unwrap()), old);

    for w in [0, 6] {
        let mut doc = birth_json();
        doc["seq"] = 7.into();
        doc["body"]["seq_base"] = 7.into();
        doc["body"]["will_seq"] = w.into();
        let e = decode_birth(&doc);
        assert_eq!(e.body.will_seq, Some(w));
        let json = String::from_utf8(e.to_json()).unwrap();
        assert!(json.contains(&format!("\"will_seq\":{w}")), "{json}");
        assert_eq!(decode_birth(&serde_json::from_str(&json).unwrap()), e);
    }
    for w in [7, 8, u64::MAX] {
        check(
            "birth",
            birth_json(),
            |d| {
                d["seq"] = 7.into();
                d["body"]["will_seq"] = w.into();
            },
            Err(Reject::BadValue),
        );
    }
    check(
        "birth",
        birth_json(),
        |d| d["body"]["will_seq"] = (-1).into(),
        Err(Reject::BadJson),
    );
}
