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

fn birth_of(host: &str, inst: &str, seq: u64, will_seq: Option<u64>, replay: bool) -> Message {
    let mut e = env(
        host,
        seq,
        1_700_000_000_000,
        replay,
        Birth {
            agent_version: "t".into(),
            role: Role::Server,
            site: String::new(),
            hostname: host.into(),
            os_name: "Linux".into(),
            os_version: "1".into(),
            cpu_model: "c".into(),
            cpu_count: 1,
            mem_total_bytes: 1,
            disks: vec![],
            boot_time: 1,
            boot_id: "b".into(),
            seq_base: seq,
            interval_secs: 10,
            keepalive_secs: 30,
            targets: vec![],
            prev_end: None,
            will_seq,
        },
    );
    e.inst = inst.into();
    Message::Birth(e)
}

fn state_of(host: &str, inst: &str, seq: u64, s: ConnState) -> Message {
    let mut e = env(
        host,
        seq,
        1_700_000_000_000,
        false,
        StateBody {
            state: s,
            reason: None,
        },
    );
    e.inst = inst.into();
    Message::State(e)
}

fn birth_body(will_seq: Option<u64>) -> Birth {
    match birth_of("x", "i", 1, will_seq, false) {
        Message::Birth(e) => e.body,
        _ => unreachable!(),
    }
}

const T: i64 = 1_700_000_000_000;

/// Connection A: will made at 0, birth 1, heartbeats 2–3. Connection B: will made at 3, a
/// heartbeat sampled before its CONNACK takes 4, birth 5 (`will_seq` 3). `will` says whether
/// the births announce their will's `seq` (agents before it do not).
fn two_connections(will: bool) -> LiveState {
    let mut s = LiveState::new(StateConfig::default());
    let w = |x| will.then_some(x);
    apply(&mut s, &birth_of("a", "i1", 1, w(0), false), T);
    apply(&mut s, &hb("a", 2, T + 1_000), T + 1_000);
    apply(&mut s, &hb("a", 3, T + 2_000), T + 2_000);
    apply(&mut s, &hb("a", 4, T + 3_000), T + 3_000);
    apply(&mut s, &birth_of("a", "i1", 5, w(3), false), T + 4_000);
    s
}

fn slot_of(s: &mut LiveState, m: &Message, now: i64) -> Slot {
    let h = m.header();
    s.admit_slot(h.mo, h.host, now, true).unwrap()
}

#[test]
fn a_will_of_an_older_connection_than_the_birth_is_ignored() {
    let mut s = two_connections(true);
    let late = state_of("a", "i1", 0, ConnState::Lost);
    let slot = slot_of(&mut s, &late, T + 5_000);
    assert_eq!(
        s.late_will(slot, &late),
        Some(LateWill {
            seq: 0,
            will_seq: 3
        })
    );
    assert_eq!(apply(&mut s, &late, T + 5_000), None);
    let h = s.get(MO, "a").unwrap();
    assert_eq!((h.state, h.reason.as_deref()), (ConnState::Online, None));
    assert_eq!(h.last_seen_ms, T + 4_000, "no sign of life either");
    // Only a `lost` is judged: a graceful stop is taken as it comes.
    let offline = state_of("a", "i1", 0, ConnState::Offline);
    let slot = slot_of(&mut s, &offline, T + 5_000);
    assert_eq!(s.late_will(slot, &offline), None);
}

/// B's own will carries 3, its birth's `will_seq`: honoured, although heartbeat 4 took a
/// number between that will and the birth (what the `seq_base − 1` fallback got wrong).
#[test]
fn the_current_connections_will_is_honoured_even_after_a_heartbeat_between_will_and_birth() {
    let mut s = two_connections(true);
    let will = state_of("a", "i1", 3, ConnState::Lost);
    let slot = slot_of(&mut s, &will, T + 5_000);
    assert_eq!(s.late_will(slot, &will), None);
    assert_eq!(
        apply(&mut s, &will, T + 5_000),
        Some((ConnState::Online, ConnState::Lost, Some("last_will".into())))
    );
}

/// Births without `will_seq` (agents before it): every `lost` is taken as it comes, as before.
#[test]
fn without_will_seq_every_will_is_taken() {
    let mut s = two_connections(false);
    let late = state_of("a", "i1", 0, ConnState::Lost);
    let slot = slot_of(&mut s, &late, T + 5_000);
    assert_eq!(s.late_will(slot, &late), None);
    assert_eq!(
        apply(&mut s, &late, T + 5_000).map(|x| x.1),
        Some(ConnState::Lost)
    );
}

/// A will that arrives before the new birth is the host's latest news: `lost` until the birth.
#[test]
fn a_will_before_the_new_birth_is_taken() {
    let mut s = LiveState::new(StateConfig::default());
    apply(&mut s, &birth_of("a", "i1", 1, Some(0), false), T);
    apply(&mut s, &hb("a", 2, T), T);
    assert_eq!(
        apply(&mut s, &state_of("a", "i1", 0, ConnState::Lost), T + 1_000).map(|x| x.1),
        Some(ConnState::Lost)
    );
    assert_eq!(
        apply(&mut s, &birth_of("a", "i1", 3, Some(2), false), T + 2_000).map(|x| x.1),
        Some(ConnState::Online)
    );
}

/// Replayed births describe the past and move nothing; a retained birth (redelivered at a
/// collector restart) sets the floor when none is known and never lowers it; a live birth of
/// another install starts over, a retained one does not; wills of another install are taken.
#[test]
fn which_births_move_the_floor() {
    let mut s = LiveState::new(StateConfig::default());
    s.admit(MO, "a", T, true).unwrap();
    s.restore_birth((MO, "a", "i1"), &birth_body(Some(7)), false, T, true);
    let floor = |s: &LiveState| s.get(MO, "a").unwrap().will_floor.seq;
    assert_eq!(floor(&s), 7);
    s.restore_birth((MO, "a", "i1"), &birth_body(Some(2)), false, T, true);
    assert_eq!(floor(&s), 7, "an older retained birth does not lower it");
    apply(&mut s, &birth_of("a", "i1", 30, Some(20), true), T);
    assert_eq!(floor(&s), 7, "a replayed birth moves nothing");
    s.restore_birth((MO, "a", "i2"), &birth_body(Some(50)), false, T, true);
    assert_eq!(floor(&s), 7, "a retained birth of another install");
    assert_eq!(
        apply(&mut s, &state_of("a", "i2", 1, ConnState::Lost), T).map(|x| x.1),
        Some(ConnState::Lost),
        "a will of another install"
    );
    apply(&mut s, &birth_of("a", "i2", 3, Some(1), false), T);
    assert_eq!(floor(&s), 1, "a live birth of a new install starts over");
    assert_eq!(
        apply(&mut s, &state_of("a", "i1", 6, ConnState::Lost), T).map(|x| x.1),
        Some(ConnState::Lost),
        "the old install's will is not judged against the new install's numbers"
    );
    // A host without any birth: nothing is late.
    let will = state_of("b", "i1", 0, ConnState::Lost);
    let slot = slot_of(&mut s, &will, T);
    assert_eq!(s.late_will(slot, &will), None);
}
