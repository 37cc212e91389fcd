//! The pipeline: every branch of `Pipeline::handle` (no I/O, times passed in) and the run
//! loop's idle maintenance.

use super::*;
use crate::state::StateConfig;
use crate::store::StoreError;
use dozor_proto::{Birth, Envelope, Heartbeat, Role, SpoolStats};
use rumqttc::MqttOptions;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts what the pipeline asks of the store.
struct Counting {
    writes: Arc<AtomicUsize>,
    maintains: Arc<AtomicUsize>,
}

impl Store for Counting {
    fn write(&mut self, _: &Batch) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn load_delivery(&mut self) -> Result<Vec<DeliveryMark>, StoreError> {
        Ok(Vec::new())
    }
    fn maintain(&mut self, _: i64) -> Result<(), StoreError> {
        self.maintains.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn an_idle_pipeline_asks_the_store_for_maintenance() {
    let (writes, maintains) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let store = Counting {
        writes: writes.clone(),
        maintains: maintains.clone(),
    };
    let cfg = PipelineConfig {
        idle_maintain: Duration::from_secs(1),
        ..PipelineConfig::default()
    };
    let p = Pipeline::new(
        cfg,
        LiveState::new(StateConfig::default()),
        Vec::new(),
        Arc::new(Roster::default()),
        Arc::new(Metrics::default()),
    );
    // Never connected: nothing is published in this test.
    let (client, _eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 10);
    let (tx, rx) = mpsc::channel(8);
    let (snap_tx, _snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        p,
        Box::new(store),
        client,
        rx,
        snap_tx,
        None,
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    cancel.cancel();
    drop(tx);
    task.await.unwrap();
    // The start record and the final stop record were written; in between, idle seconds
    // turned into maintenance about once per `idle_maintain` (ticks are 1 s apart).
    assert_eq!(writes.load(Ordering::SeqCst), 2);
    let m = maintains.load(Ordering::SeqCst);
    assert!((1..=4).contains(&m), "{m} maintenance calls in 4.5 s");
}

/// A journal apply that fails is retried with backoff by the store thread on its own, not only
/// when the next batch arrives (an idle collector would otherwise keep it pending for minutes).
#[test]
fn a_failed_journal_apply_is_retried_without_waiting_for_a_batch() {
    struct Flaky(Arc<AtomicUsize>);
    impl Store for Flaky {
        fn write(&mut self, _: &Batch) -> Result<(), StoreError> {
            Ok(())
        }
        fn load_delivery(&mut self) -> Result<Vec<DeliveryMark>, StoreError> {
            Ok(Vec::new())
        }
        fn settle(&mut self, _: bool) -> Result<Option<Duration>, StoreError> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(StoreError::Corrupt("database is locked".into())),
                _ => Ok(None),
            }
        }
    }
    let settles = Arc::new(AtomicUsize::new(0));
    let (jobs, rx) = flume::bounded(2);
    let (done, _done_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let thread = spawn_store(Box::new(Flaky(settles.clone())), rx, done, metrics).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while settles.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Twice failed (retried after 100 ms, then 200 ms), then applied; no job was sent.
    assert_eq!(settles.load(Ordering::SeqCst), 3);
    drop(jobs);
    thread.join().unwrap();
}

const MO: &str = "mo1";
const NOW: i64 = 1_700_000_000_000;

fn env<B>(mo: &str, host: &str, seq: u64, ts: i64, replay: bool, body: B) -> Envelope<B> {
    Envelope {
        v: SCHEMA_VERSION,
        mo: mo.into(),
        host: host.into(),
        inst: format!("i-{host}"),
        seq,
        ts,
        replay,
        body,
    }
}

fn hb_at(mo: &str, host: &str, seq: u64, ts: i64, replay: bool) -> Message {
    Message::Hb(env(
        mo,
        host,
        seq,
        ts,
        replay,
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

fn hb(host: &str, seq: u64) -> Message {
    hb_at(MO, host, seq, NOW, false)
}

fn birth(host: &str, seq: u64, role: Role) -> Message {
    Message::Birth(env(
        MO,
        host,
        seq,
        NOW,
        false,
        Birth {
            agent_version: "t".into(),
            role,
            site: String::new(),
            hostname: host.into(),
            os_name: "РЕД ОС".into(),
            os_version: "7.3".into(),
            cpu_model: String::new(),
            cpu_count: 2,
            mem_total_bytes: 1,
            disks: Vec::new(),
            boot_time: NOW / 1000 - 3600,
            boot_id: "b".into(),
            seq_base: 1,
            interval_secs: 10,
            keepalive_secs: 10,
            prev_end: None,
            will_seq: None,
            targets: Vec::new(),
        },
    ))
}

/// A pipeline over a roster of one МО, two hosts at most, five messages a minute per host.
fn pipeline(strict: bool, marks: Vec<DeliveryMark>) -> Pipeline {
    let roster = Roster::from_toml("[[mo]]\noid = \"mo1\"\nname = \"ЦРБ\"\n", "t").unwrap();
    Pipeline::new(
        PipelineConfig {
            roster_strict: strict,
            ..PipelineConfig::default()
        },
        LiveState::new(StateConfig {
            max_hosts: 2,
            max_hosts_per_mo: 2,
            lost_after_intervals: 3,
            max_msgs_per_min: 5,
        }),
        marks,
        Arc::new(roster),
        Arc::new(Metrics::default()),
    )
}

fn mark(host: &str, contiguous: u64, above: Vec<u64>) -> DeliveryMark {
    DeliveryMark {
        inst: format!("i-{host}").into(),
        mo: MO.into(),
        host: host.into(),
        contiguous,
        above,
        stored: contiguous,
        refused: 0,
    }
}

/// The delivery view of `host`'s instance: (contiguous, stored, refused).
fn delivery(p: &Pipeline, host: &str) -> Option<(u64, u64, u64)> {
    p.tracker
        .views()
        .into_iter()
        .find(|v| &*v.host == host)
        .map(|v| (v.contiguous, v.stored, v.refused))
}

fn confirmations(p: &mut Pipeline) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    p.tracker
        .take_due(0, 0, |_, host, _, seq| out.push((host.to_string(), seq)));
    out
}

#[test]
fn a_decode_or_authentication_failure_is_rejected_and_touches_nothing() {
    for r in [
        Refusal::Decode(dozor_proto::Reject::Oversized),
        Refusal::BadMac,
        Refusal::Unsigned,
        Refusal::Revoked,
    ] {
        let mut p = pipeline(false, Vec::new());
        assert_eq!(p.handle(Err(r), false, NOW), Outcome::Rejected(r));
        assert!(p.batch.records.is_empty());
        assert!(p.tracker.views().is_empty());
    }
}

#[test]
fn an_unknown_mo_under_a_strict_roster_is_settled_once() {
    let mut p = pipeline(true, Vec::new());
    let m = hb_at("mo-x", "a", 1, NOW, false);
    assert_eq!(
        p.handle(Ok(m.clone()), false, NOW),
        Outcome::Settled(Refusal::UnknownMo)
    );
    // Settled: counted as delivered without being stored, and refused only once.
    assert_eq!(delivery(&p, "a"), Some((1, 0, 1)));
    assert_eq!(
        p.handle(Ok(m), false, NOW),
        Outcome::Settled(Refusal::UnknownMo)
    );
    assert_eq!(delivery(&p, "a"), Some((1, 0, 1)));
    assert!(p.batch.records.is_empty());
    assert!(p.state().get("mo-x", "a").is_none());
    // Not strict: the same МО is accepted.
    let mut p = pipeline(false, Vec::new());
    let out = p.handle(Ok(hb_at("mo-x", "a", 1, NOW, false)), false, NOW);
    assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
}

#[test]
fn a_flooding_host_is_rejected_not_settled_and_accepted_again_next_minute() {
    let mut p = pipeline(false, Vec::new());
    for seq in 1..=5 {
        let out = p.handle(Ok(hb("a", seq)), false, NOW);
        assert!(matches!(out, Outcome::Accepted { .. }), "{seq}: {out:?}");
    }
    assert_eq!(
        p.handle(Ok(hb("a", 6)), false, NOW),
        Outcome::Rejected(Refusal::Flood)
    );
    // Not settled: seq 6 is neither stored nor confirmed, so the agent sends it again.
    assert_eq!(delivery(&p, "a"), Some((5, 5, 0)));
    let later = NOW + 61_000;
    let out = p.handle(Ok(hb_at(MO, "a", 6, later, false)), false, later);
    assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
    assert_eq!(delivery(&p, "a"), Some((6, 6, 0)));
}

#[test]
fn a_host_past_the_caps_is_rejected_not_settled() {
    let mut p = pipeline(false, Vec::new());
    for h in ["a", "b"] {
        assert!(matches!(
            p.handle(Ok(hb(h, 1)), false, NOW),
            Outcome::Accepted { .. }
        ));
    }
    assert_eq!(
        p.handle(Ok(hb("c", 1)), false, NOW),
        Outcome::Rejected(Refusal::TooManyHosts)
    );
    assert_eq!(delivery(&p, "c"), None);
    assert!(p.state().get(MO, "c").is_none());
}

#[test]
fn a_replay_outside_the_timestamp_range_is_settled_once() {
    let mut p = pipeline(false, Vec::new());
    let old = NOW - PipelineConfig::default().max_age_ms - 1;
    let m = hb_at(MO, "a", 1, old, true);
    assert_eq!(
        p.handle(Ok(m.clone()), false, NOW),
        Outcome::Settled(Refusal::TimestampRange)
    );
    assert_eq!(delivery(&p, "a"), Some((1, 0, 1)));
    assert!(p.batch.records.is_empty());
    // A resend is refused the same way, and settled only once.
    assert_eq!(
        p.handle(Ok(m), false, NOW),
        Outcome::Settled(Refusal::TimestampRange)
    );
    assert_eq!(delivery(&p, "a"), Some((1, 0, 1)));
    // A live message defines the clock offset: never out of range however wrong the clock.
    let out = p.handle(Ok(hb_at(MO, "a", 2, old, false)), false, NOW);
    let Outcome::Accepted { accepted, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(accepted.ts_ms, NOW);
}

#[test]
fn a_duplicate_is_confirmed_again_and_a_retained_birth_restores_the_role() {
    // After a restart: seq 1 of `srv` is stored, the live state knows nothing of it.
    let mut p = pipeline(false, vec![mark("srv", 1, Vec::new())]);
    assert!(p.state().get(MO, "srv").is_none());
    // A restarted collector confirms what it holds once…
    assert_eq!(confirmations(&mut p), [("srv".to_string(), 1)]);
    assert_eq!(confirmations(&mut p), []);
    assert_eq!(
        p.handle(Ok(birth("srv", 1, Role::Server)), true, NOW),
        Outcome::Duplicate { restored: true }
    );
    assert_eq!(
        p.state().get(MO, "srv").and_then(|h| h.role),
        Some(Role::Server)
    );
    assert!(
        p.batch.records.is_empty(),
        "a duplicate is never stored again"
    );
    // …and again for every duplicate: the agent may have missed the first.
    assert_eq!(confirmations(&mut p), [("srv".to_string(), 1)]);
    // A duplicate heartbeat restores nothing but is confirmed again too.
    let mut p = pipeline(false, vec![mark("a", 3, Vec::new())]);
    confirmations(&mut p);
    assert_eq!(
        p.handle(Ok(hb("a", 2)), false, NOW),
        Outcome::Duplicate { restored: false }
    );
    assert_eq!(confirmations(&mut p), [("a".to_string(), 3)]);
    assert_eq!(delivery(&p, "a"), Some((3, 3, 0)));
}

#[test]
fn a_full_out_of_order_window_is_rejected_not_settled() {
    let above: Vec<u64> = (3..3 + delivery::MAX_ABOVE as u64).collect();
    let mut p = pipeline(false, vec![mark("a", 1, above)]);
    let far = 10 + delivery::MAX_ABOVE as u64;
    assert_eq!(
        p.handle(Ok(hb("a", far)), false, NOW),
        Outcome::Rejected(Refusal::SeqWindow)
    );
    // The gap itself still fits: it closes the window.
    let out = p.handle(Ok(hb("a", 2)), false, NOW);
    assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
}

#[test]
fn a_new_message_is_applied_corrected_and_batched() {
    let mut p = pipeline(false, Vec::new());
    // The agent's clock is 5 s behind: a live message defines the offset…
    let out = p.handle(Ok(hb_at(MO, "a", 1, NOW - 5_000, false)), false, NOW);
    let Outcome::Accepted {
        accepted,
        transition,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!((accepted.recv_ms, accepted.ts_ms), (NOW, NOW));
    assert_eq!(transition, None);
    assert_eq!(p.batch.records, [Record::Msg(accepted)]);
    // …and a replay is corrected by it.
    let out = p.handle(
        Ok(hb_at(MO, "a", 2, NOW - 65_000, true)),
        false,
        NOW + 1_000,
    );
    let Outcome::Accepted {
        accepted,
        transition: None,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(accepted.ts_ms, NOW - 60_000);
    assert_eq!(delivery(&p, "a"), Some((2, 2, 0)));
    // Counted for /metrics by the caller.
    p.count(
        &Outcome::Accepted {
            accepted,
            transition: None,
        },
        "t",
    );
}

/// A heartbeat of `host` from agent install `inst`, sent and received at `at`.
fn hb_from(host: &str, inst: &str, seq: u64, at: i64) -> Message {
    let Message::Hb(mut e) = hb_at(MO, host, seq, at, false) else {
        unreachable!("hb_at makes a heartbeat")
    };
    e.inst = inst.into();
    Message::Hb(e)
}

/// A cloned machine id through the pipeline: counted once and shown as a warning on the host
/// while both installs are heard; gone once one of them has been heard alone for more than
/// ten minutes.
#[test]
fn a_cloned_host_id_is_warned_about_and_cleared_when_resolved() {
    let mut p = pipeline(false, Vec::new());
    let warnings = |p: &Pipeline| p.state().get(MO, "a").map(|h| h.warnings.clone());
    let counted = |p: &Pipeline| {
        let mut text = String::new();
        p.metrics.render(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix("dozor_cloned_machine_ids_total "))
            .map(str::to_owned)
    };
    let mut t = NOW;
    for seq in 1..=3 {
        for inst in ["img-1", "img-2"] {
            let out = p.handle(Ok(hb_from("a", inst, seq, t)), false, t);
            assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
        }
        t += 30_000;
    }
    let w = warnings(&p).unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("Клонированный идентификатор машины: узел «a»"));
    assert!(w[0].contains("2 разных установки"), "{w:?}");
    assert_eq!(counted(&p).as_deref(), Some("1"));
    // `img-2` is re-imaged; `img-1` goes on every 30 s: the warning stays for ten minutes…
    let since = t;
    let mut seq = 4;
    while t - since <= clones::CLONE_WINDOW_MS {
        p.handle(Ok(hb_from("a", "img-1", seq, t)), false, t);
        assert_eq!(warnings(&p).unwrap().len(), 1, "at +{} ms", t - since);
        seq += 1;
        t += 30_000;
    }
    // …then it is gone, and nothing more was counted.
    p.handle(Ok(hb_from("a", "img-1", seq, t)), false, t);
    assert_eq!(warnings(&p), Some(Vec::new()));
    assert_eq!(counted(&p).as_deref(), Some("1"));
}

fn birth_will(host: &str, seq: u64, will_seq: Option<u64>) -> Message {
    let Message::Birth(mut e) = birth(host, seq, Role::Server) else {
        unreachable!("birth makes a birth")
    };
    e.body.seq_base = seq;
    e.body.will_seq = will_seq;
    Message::Birth(e)
}

fn lost(host: &str, seq: u64) -> Message {
    Message::State(env(
        MO,
        host,
        seq,
        NOW,
        false,
        dozor_proto::State {
            state: dozor_proto::ConnState::Lost,
            reason: None,
        },
    ))
}

fn stale_counted(p: &Pipeline) -> Option<String> {
    let mut text = String::new();
    p.metrics.render(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("dozor_states_stale_total "))
        .map(str::to_owned)
}

/// Connection A: will 0, birth 1, heartbeat 2 (not shown: five messages a minute). Connection
/// B: will 2, heartbeat 3 between its connect and its birth, birth 4 (`will_seq` 2). A's will arriving after B's birth changes nothing and
/// is counted; B's own will makes the server lost.
#[test]
fn a_late_will_is_ignored_and_counted_and_the_current_one_honoured() {
    use dozor_proto::ConnState;
    let mut p = pipeline(false, Vec::new());
    for m in [
        birth_will("srv", 1, Some(0)),
        hb("srv", 3),
        birth_will("srv", 4, Some(2)),
    ] {
        let out = p.handle(Ok(m), false, NOW);
        assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
    }
    let stored = p.batch.records.len();
    let out = p.handle(Ok(lost("srv", 0)), false, NOW);
    assert_eq!(out, Outcome::LateWill);
    p.count(&out, "t");
    assert_eq!(stale_counted(&p).as_deref(), Some("1"));
    assert_eq!(
        p.batch.records.len(),
        stored,
        "no lost marker in the history"
    );
    assert_eq!(p.state().get(MO, "srv").unwrap().state, ConnState::Online);
    let Outcome::Accepted { transition, .. } = p.handle(Ok(lost("srv", 2)), false, NOW) else {
        panic!("B's own will refused")
    };
    assert_eq!(transition.map(|t| t.to), Some(ConnState::Lost));
}

/// A restarted collector learns the floor from the retained birth (a duplicate of what it
/// stored): a retained late will is ignored, the current connection's is taken.
#[test]
fn a_retained_birth_after_a_restart_tells_a_late_will() {
    use dozor_proto::ConnState;
    for (will, late) in [(5, true), (7, false)] {
        let mut p = pipeline(false, vec![mark("srv", 8, Vec::new())]);
        confirmations(&mut p);
        assert_eq!(
            p.handle(Ok(birth_will("srv", 8, Some(7))), true, NOW),
            Outcome::Duplicate { restored: true }
        );
        let out = p.handle(Ok(lost("srv", will)), true, NOW);
        if late {
            assert_eq!(out, Outcome::LateWill, "will {will}");
        } else {
            let Outcome::Accepted { transition, .. } = out else {
                panic!("{out:?}")
            };
            assert_eq!(transition.map(|t| t.to), Some(ConnState::Lost));
        }
    }
}

/// A replayed birth (a duplicate from the agent's spool) restores the inventory but is old
/// news for the wills: it does not move the floor, so the will it would make "late" is taken.
#[test]
fn a_replayed_duplicate_birth_does_not_move_the_floor() {
    use dozor_proto::ConnState;
    let mut p = pipeline(false, vec![mark("srv", 8, Vec::new())]);
    confirmations(&mut p);
    let Message::Birth(mut replayed) = birth_will("srv", 8, Some(7)) else {
        unreachable!()
    };
    replayed.replay = true;
    assert_eq!(
        p.handle(Ok(Message::Birth(replayed)), false, NOW),
        Outcome::Duplicate { restored: true }
    );
    let Outcome::Accepted { transition, .. } = p.handle(Ok(lost("srv", 5)), false, NOW) else {
        panic!("a will judged by a replayed birth")
    };
    assert_eq!(transition.map(|t| t.to), Some(ConnState::Lost));
}

/// `security.mode = "open"`: anybody may publish a birth for any host, so a forged `will_seq`
/// must not silence a host's wills; every will is taken as it comes.
#[test]
fn in_open_mode_no_will_is_judged_late() {
    use dozor_proto::ConnState;
    let mut p = pipeline(false, Vec::new());
    p.cfg.judge_late_wills = false;
    for m in [
        birth_will("srv", 1, Some(0)),
        // A forgery from another PC: a far-ahead birth announcing a huge will_seq.
        birth_will("srv", u64::MAX - 1, Some(u64::MAX - 2)),
    ] {
        p.handle(Ok(m), false, NOW);
    }
    let Outcome::Accepted { transition, .. } = p.handle(Ok(lost("srv", 0)), false, NOW) else {
        panic!("the genuine will was not taken")
    };
    assert_eq!(transition.map(|t| t.to), Some(ConnState::Lost));
}

/// An agent before `will_seq`: every will is taken as it comes, as before.
#[test]
fn without_will_seq_a_late_will_is_taken_as_before() {
    use dozor_proto::ConnState;
    let mut p = pipeline(false, Vec::new());
    for m in [birth_will("srv", 1, None), birth_will("srv", 4, None)] {
        p.handle(Ok(m), false, NOW);
    }
    let out = p.handle(Ok(lost("srv", 0)), false, NOW);
    p.count(&out, "t");
    let Outcome::Accepted { transition, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(transition.map(|t| t.to), Some(ConnState::Lost));
    assert_eq!(stale_counted(&p).as_deref(), Some("0"));
}
