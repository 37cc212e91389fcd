//! Live state transitions, with times passed in.

use super::*;
use dozor_proto::{Envelope, SCHEMA_VERSION, SpoolStats, State as StateBody};

const MO: &str = "1.2.3";

fn env<B>(host: &str, seq: u64, ts: i64, replay: bool, body: B) -> Envelope<B> {
    Envelope {
        v: SCHEMA_VERSION,
        mo: MO.into(),
        host: host.into(),
        inst: format!("i-{host}"),
        seq,
        ts,
        replay,
        body,
    }
}

fn hb(host: &str, seq: u64, ts: i64) -> Message {
    Message::Hb(env(
        host,
        seq,
        ts,
        false,
        Heartbeat {
            uptime_secs: 100,
            cpu_pct: 5.0,
            mem_used_bytes: 1,
            mem_total_bytes: 2,
            load: None,
            disks: vec![],
            interval_secs: 10,
            spool: Some(SpoolStats::default()),
        },
    ))
}

fn state(host: &str, ts: i64, s: ConnState, reason: Option<&str>) -> Message {
    Message::State(env(
        host,
        0,
        ts,
        false,
        StateBody {
            state: s,
            reason: reason.map(str::to_string),
        },
    ))
}

fn live() -> LiveState {
    LiveState::new(StateConfig {
        max_hosts: 3,
        max_hosts_per_mo: 2,
        lost_after_intervals: 3,
        max_msgs_per_min: 5,
    })
}

fn apply(
    s: &mut LiveState,
    m: &Message,
    now: i64,
) -> Option<(ConnState, ConnState, Option<String>)> {
    let h = m.header();
    s.admit(h.mo, h.host, now, true).unwrap();
    s.apply(m, now, false, true)
        .unwrap()
        .map(|t| (t.from, t.to, t.reason))
}

#[test]
fn heartbeat_then_lapse_then_back() {
    let mut s = live();
    let t0 = 1_700_000_000_000;
    assert_eq!(
        apply(&mut s, &hb("a", 1, t0 - 2_000), t0),
        None,
        "new host starts online"
    );
    let h = s.get(MO, "a").unwrap();
    assert_eq!(
        (h.uptime_secs, h.last_seen_ms, h.clock_offset_ms),
        (100, t0, Some(2_000))
    );
    let mut out = vec![];
    s.tick(t0 + 35_000, &mut out);
    assert!(out.is_empty(), "3 × 10 s + 5 s grace not yet over");
    s.tick(t0 + 35_001, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, out[0].reason.as_deref()),
        (ConnState::Lost, Some("heartbeat_timeout"))
    );
    assert_eq!(
        apply(&mut s, &hb("a", 2, t0 + 40_000), t0 + 40_000).map(|t| t.1),
        Some(ConnState::Online)
    );
}

#[test]
fn last_will_and_graceful_shutdown() {
    let mut s = live();
    let t0 = 1_700_000_000_000;
    apply(&mut s, &hb("a", 1, t0), t0);
    assert_eq!(
        apply(&mut s, &state("a", t0, ConnState::Lost, None), t0 + 1),
        Some((ConnState::Online, ConnState::Lost, Some("last_will".into())))
    );
    apply(&mut s, &hb("a", 2, t0 + 5), t0 + 5);
    assert_eq!(
        apply(
            &mut s,
            &state("a", t0, ConnState::Offline, Some("shutdown")),
            t0 + 6
        ),
        Some((
            ConnState::Online,
            ConnState::Offline,
            Some("shutdown".into())
        ))
    );
    let mut out = vec![];
    s.tick(t0 + 3_600_000, &mut out);
    assert!(out.is_empty(), "an offline host is not lost later");
}

#[test]
fn replay_does_not_change_live_state() {
    let mut s = live();
    let t0 = 1_700_000_000_000;
    apply(&mut s, &hb("a", 1, t0), t0);
    apply(
        &mut s,
        &state("a", t0, ConnState::Offline, Some("shutdown")),
        t0,
    );
    let Message::Hb(mut old) = hb("a", 0, t0 - 3_600_000) else {
        unreachable!()
    };
    old.replay = true;
    assert_eq!(apply(&mut s, &Message::Hb(old), t0 + 1), None);
    assert_eq!(s.get(MO, "a").unwrap().state, ConnState::Offline);
    assert_eq!(s.get(MO, "a").unwrap().last_seen_ms, t0);
}

#[test]
fn retained_message_is_not_a_sign_of_life() {
    let mut s = live();
    let t0 = 1_700_000_000_000;
    s.admit(MO, "a", t0, true).unwrap();
    s.apply(
        &state("a", t0 - 999_000, ConnState::Online, None),
        t0,
        true,
        true,
    )
    .unwrap();
    assert_eq!(s.get(MO, "a").unwrap().last_seen_ms, 0);
    let mut out = vec![];
    s.tick(t0 + 95_000, &mut out);
    assert!(out.is_empty(), "default interval 30 s: 3 × 30 s + 5 s");
    s.tick(t0 + 95_001, &mut out);
    assert_eq!(out.len(), 1, "a retained `online` of a dead agent lapses");
}

#[test]
fn caps_and_flood() {
    let mut s = live();
    let t0 = 1_700_000_000_000;
    s.admit(MO, "a", t0, true).unwrap();
    s.admit(MO, "b", t0, true).unwrap();
    assert_eq!(
        s.admit(MO, "c", t0, true),
        Err(StateError::TooManyHostsInMo)
    );
    s.admit("other", "c", t0, true).unwrap();
    assert_eq!(
        s.admit("third", "d", t0, true),
        Err(StateError::TooManyHosts)
    );
    assert_eq!(s.len(), 3);
    for _ in 0..4 {
        s.admit(MO, "a", t0 + 1, true).unwrap();
    }
    assert_eq!(s.admit(MO, "a", t0 + 2, true), Err(StateError::Flood));
    s.admit(MO, "a", t0 + 60_000, true).unwrap();
}

#[test]
fn probes_are_kept_per_target() {
    use dozor_proto::{Probe, ProbeResult};
    let mut s = live();
    let t0 = 1_700_000_000_000;
    let p = |ok: bool| {
        Message::Probe(env(
            "a",
            3,
            t0,
            false,
            Probe {
                results: vec![ProbeResult {
                    target: "mis".into(),
                    category: Category::Mis,
                    ok,
                    latency_ms: Some(5),
                    error: (!ok).then_some(ErrorClass::Timeout),
                    status: None,
                }],
            },
        ))
    };
    apply(&mut s, &p(true), t0);
    apply(&mut s, &p(false), t0 + 1);
    let h = s.get(MO, "a").unwrap();
    assert_eq!(h.probes.len(), 1);
    assert_eq!(h.reaches(Category::Mis), Some(false));
    assert_eq!(h.reaches(Category::Lis), None);
}

#[test]
fn snapshots_are_sorted_and_hosts_stay_addressable_after_merges() {
    let mut s = LiveState::new(StateConfig {
        max_hosts: 100,
        max_hosts_per_mo: 100,
        lost_after_intervals: 3,
        max_msgs_per_min: 1000,
    });
    let ids =
        |snap: &Snapshot| -> Vec<String> { snap.hosts.iter().map(|h| h.host_id.clone()).collect() };
    for (i, h) in ["pc-5", "pc-1", "pc-3"].iter().enumerate() {
        apply(&mut s, &hb(h, 1, 1_000), 1_000 + i as i64);
    }
    let first = s.snapshot(2_000);
    assert_eq!(ids(&first), ["pc-1", "pc-3", "pc-5"]);
    // Newcomers wait unsorted until the next snapshot; lookups work meanwhile.
    for h in ["pc-4", "pc-0"] {
        apply(&mut s, &hb(h, 1, 3_000), 3_000);
    }
    assert_eq!(s.get(MO, "pc-0").map(|h| h.last_seen_ms), Some(3_000));
    apply(&mut s, &hb("pc-3", 2, 4_000), 4_000);
    let second = s.snapshot(5_000);
    assert_eq!(ids(&second), ["pc-0", "pc-1", "pc-3", "pc-4", "pc-5"]);
    // After the re-index every host is found at its new place, and changing one does not
    // change what an older snapshot shows.
    apply(&mut s, &hb("pc-5", 2, 6_000), 6_000);
    for h in ["pc-0", "pc-1", "pc-3", "pc-4", "pc-5"] {
        assert_eq!(s.get(MO, h).map(|x| x.host_id.as_str()), Some(h));
    }
    assert_eq!(s.get(MO, "pc-5").map(|h| h.last_seen_ms), Some(6_000));
    assert_eq!(second.hosts[4].last_seen_ms, 1_000);
    assert_eq!(first.hosts[1].last_seen_ms, 1_002);
    assert_eq!(s.len(), 5);
}

/// A warning of one kind is kept once (the newest), shown in the snapshot, and unknown hosts
/// are ignored.
#[test]
fn warnings_replace_their_own_kind() {
    let mut s = live();
    s.admit(MO, "a", 1_000, true).unwrap();
    s.warn(MO, "a", "Клонированный идентификатор машины: 2".into());
    s.warn(MO, "a", "Клонированный идентификатор машины: 3".into());
    s.warn(MO, "nobody", "Клонированный идентификатор машины: 2".into());
    assert_eq!(
        s.get(MO, "a").unwrap().warnings,
        ["Клонированный идентификатор машины: 3"]
    );
    let snap = s.snapshot(2_000);
    assert_eq!(snap.hosts[0].warnings.len(), 1);
    assert!(s.get(MO, "nobody").is_none());
    // Cleared by kind: another kind, and the snapshot taken before, are kept.
    s.warn(MO, "a", "Другое: x".into());
    s.unwarn(MO, "a", "Клонированный идентификатор машины");
    s.unwarn(MO, "nobody", "Клонированный идентификатор машины");
    assert_eq!(s.get(MO, "a").unwrap().warnings, ["Другое: x"]);
    assert_eq!(snap.hosts[0].warnings.len(), 1);
}

/// `admit_slot` + `apply_slot` (the pipeline's one lookup per message) leave the same state as
/// `admit` + `apply`, also across a snapshot that reorders hosts between messages.
#[test]
fn slots_apply_like_lookups() {
    let mut by_slot = live();
    let mut by_name = live();
    let msgs = [
        hb("b", 1, 1_000),
        hb("a", 1, 1_100),
        state("b", 1_200, ConnState::Offline, Some("shutdown")),
        hb("a", 2, 2_000),
        hb("b", 2, 2_100),
    ];
    for (n, m) in msgs.iter().enumerate() {
        let h = m.header();
        let now = h.ts + 50;
        let slot = by_slot.admit_slot(h.mo, h.host, now, true).unwrap();
        by_name.admit(h.mo, h.host, now, true).unwrap();
        assert_eq!(
            by_slot.clock_offset_at(slot),
            by_name.clock_offset(h.mo, h.host)
        );
        let a = by_slot.apply_slot(slot, m, now, false);
        let b = by_name.apply(m, now, false, true).unwrap();
        assert_eq!(a, b, "message {n}");
        if n == 1 {
            // "a" was added after "b": the snapshot sorts it first, moving "b".
            by_slot.snapshot(now);
            by_name.snapshot(now);
        }
    }
    let (a, b) = (by_slot.snapshot(3_000), by_name.snapshot(3_000));
    assert_eq!(a.hosts, b.hosts);
    assert_eq!(by_slot.get(MO, "b").unwrap().state, ConnState::Online);
    assert_eq!(by_slot.get(MO, "a").unwrap().clock_offset_ms, Some(50));
    // The flood budget is counted through the slot too (5 a minute here).
    for _ in 0..3 {
        by_slot.admit_slot(MO, "a", 3_000, true).unwrap();
    }
    assert_eq!(
        by_slot.admit_slot(MO, "a", 3_000, true),
        Err(StateError::Flood)
    );
}
