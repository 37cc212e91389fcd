use super::*;
use crate::roster::WorkHours;
use crate::{GapCause, ProbeRow, SegRow, WorkCal};

const S: Ms = 1000;
const MIN: Ms = 60 * S;
const H: Ms = 60 * MIN;

fn seg(start: Ms, end: Ms, cause: GapCause, next: Option<Ms>) -> SegRow {
    SegRow {
        start,
        end,
        cause,
        next,
    }
}

fn pieces(segs: &[SegRow], tol: Ms, out: &Outages, a: Ms, b: Ms) -> Vec<(Ms, Ms, PieceState)> {
    let mut v = Vec::new();
    host_pieces(segs, tol, out, a, b, |p| v.push((p.start, p.end, p.state)));
    v
}

#[test]
fn up_then_graceful_shutdown() {
    let s = [seg(10 * MIN, 50 * MIN, GapCause::Shutdown, None)];
    assert_eq!(
        pieces(&s, 75 * S, &Outages::none(), 0, 60 * MIN),
        vec![
            (10 * MIN, 50 * MIN, PieceState::Up),
            (50 * MIN, 60 * MIN, PieceState::Down(GapCause::Shutdown)),
        ]
    );
}

#[test]
fn pending_tail_is_up_until_overdue() {
    let s = [seg(0, 10 * MIN, GapCause::Pending, None)];
    assert_eq!(
        pieces(&s, 75 * S, &Outages::none(), 0, 20 * MIN),
        vec![
            (0, 10 * MIN, PieceState::Up),
            (10 * MIN, 10 * MIN + 75 * S, PieceState::Up),
            (
                10 * MIN + 75 * S,
                20 * MIN,
                PieceState::Down(GapCause::Lost)
            ),
        ]
    );
}

#[test]
fn collector_outage_is_unknown() {
    // Lost (marked) at 10 min, collector down 20..30 min: unknown exactly there.
    let s = [
        seg(0, 10 * MIN, GapCause::Lost, Some(40 * MIN)),
        seg(40 * MIN, 50 * MIN, GapCause::Pending, None),
    ];
    let out = Outages::from_runs(&[(0, 20 * MIN), (30 * MIN, 60 * MIN)], 60 * MIN);
    assert_eq!(
        pieces(&s, 75 * S, &out, 0, 50 * MIN),
        vec![
            (0, 10 * MIN, PieceState::Up),
            (10 * MIN, 20 * MIN, PieceState::Down(GapCause::Lost)),
            // The outage, then 40 s reconnect allowance + tol (75 s) after the start: unknown.
            (20 * MIN, 31 * MIN + 55 * S, PieceState::Unknown),
            (
                31 * MIN + 55 * S,
                40 * MIN,
                PieceState::Down(GapCause::Lost)
            ),
            (40 * MIN, 50 * MIN, PieceState::Up),
        ]
    );
    // Unmarked silence: unknown within tol of the outage as well.
    let s = [
        seg(0, 10 * MIN, GapCause::Silent, Some(40 * MIN)),
        seg(40 * MIN, 50 * MIN, GapCause::Pending, None),
    ];
    assert_eq!(
        pieces(&s, MIN, &out, 0, 50 * MIN),
        vec![
            (0, 10 * MIN, PieceState::Up),
            (10 * MIN, 19 * MIN, PieceState::Down(GapCause::Lost)),
            // tol (1 min) before the stop; 40 s + tol after the start.
            (19 * MIN, 31 * MIN + 40 * S, PieceState::Unknown),
            (
                31 * MIN + 40 * S,
                40 * MIN,
                PieceState::Down(GapCause::Lost)
            ),
            (40 * MIN, 50 * MIN, PieceState::Up),
        ]
    );
}

/// Issue 13, item 3: the collector stops 5 s after a host's last message and starts again
/// 15 s later; the host (tol 75 s) has not reconnected yet.
#[test]
fn restart_never_produces_down() {
    let s = [seg(0, 10 * MIN, GapCause::Pending, None)];
    let stop = 10 * MIN + 5 * S;
    let start = 10 * MIN + 20 * S;
    let out = Outages::from_runs(&[(0, stop), (start, 60 * MIN)], 60 * MIN);
    assert_eq!(out.reconnect_ms(), AGENT_RECONNECT_MS);
    // A report taken a minute after the start: no down at all.
    assert_eq!(
        pieces(&s, 75 * S, &out, 0, start + MIN),
        vec![
            (0, 10 * MIN, PieceState::Up),
            (10 * MIN, stop, PieceState::Up),
            (stop, 11 * MIN + 15 * S, PieceState::Unknown),
            (11 * MIN + 15 * S, start + MIN, PieceState::Unknown),
        ]
    );
    // The host never came back: down from start + 40 s + 75 s = 12:15 on, not before.
    assert_eq!(
        pieces(&s, 75 * S, &out, 0, 15 * MIN),
        vec![
            (0, 10 * MIN, PieceState::Up),
            (10 * MIN, stop, PieceState::Up),
            (stop, 11 * MIN + 15 * S, PieceState::Unknown),
            (11 * MIN + 15 * S, 12 * MIN + 15 * S, PieceState::Unknown),
            (
                12 * MIN + 15 * S,
                15 * MIN,
                PieceState::Down(GapCause::Lost)
            ),
        ]
    );
    // It came back 30 s after the start and replayed nothing (a new boot): the silence before
    // is unknown, none of it down.
    let s = [
        seg(0, 10 * MIN, GapCause::Silent, Some(start + 30 * S)),
        seg(start + 30 * S, 15 * MIN, GapCause::Pending, None),
    ];
    assert_eq!(
        pieces(&s, 75 * S, &out, 0, 15 * MIN),
        vec![
            (0, 10 * MIN, PieceState::Up),
            (10 * MIN, start + 30 * S, PieceState::Unknown),
            (start + 30 * S, 15 * MIN, PieceState::Up),
        ]
    );
    // It reconnected and replayed its spool: one segment across the outage, up throughout.
    let s = [seg(0, 15 * MIN, GapCause::Pending, None)];
    assert_eq!(
        pieces(&s, 75 * S, &out, 0, 15 * MIN),
        vec![(0, 15 * MIN, PieceState::Up)]
    );
    // A smaller allowance (a region whose agents reconnect faster) shortens the window.
    let s = [seg(0, 10 * MIN, GapCause::Lost, None)];
    let fast = out.clone().with_reconnect(5 * S);
    assert_eq!(
        pieces(&s, 75 * S, &fast, 0, 15 * MIN),
        vec![
            (0, 10 * MIN, PieceState::Up),
            (10 * MIN, stop, PieceState::Down(GapCause::Lost)),
            (stop, start + 80 * S, PieceState::Unknown),
            (start + 80 * S, 15 * MIN, PieceState::Down(GapCause::Lost)),
        ]
    );
}

/// A silence that began after the restart and is still open (the host had reconnected: its
/// latest message is live) gets no allowance; an `offline` after the start is the agent's own
/// word and gets none either.
#[test]
fn silence_after_the_restart_is_observed() {
    let out = Outages::from_runs(&[(0, 5 * MIN), (7 * MIN + 30 * S, 60 * MIN)], 60 * MIN);
    let s = [seg(7 * MIN + 35 * S, 8 * MIN, GapCause::Lost, None)];
    assert_eq!(
        pieces(&s, 75 * S, &out, 0, 10 * MIN),
        vec![
            (7 * MIN + 35 * S, 8 * MIN, PieceState::Up),
            (8 * MIN, 10 * MIN, PieceState::Down(GapCause::Lost)),
        ]
    );
    let s = [seg(7 * MIN + 35 * S, 8 * MIN, GapCause::Shutdown, None)];
    assert_eq!(
        pieces(&s, 75 * S, &out, 0, 10 * MIN),
        vec![
            (7 * MIN + 35 * S, 8 * MIN, PieceState::Up),
            (8 * MIN, 10 * MIN, PieceState::Down(GapCause::Shutdown)),
        ]
    );
}

/// The e2e failure of 2026-11-30 (`tests/tests/rules.rs`), to the second: a 1 s server
/// (tol 2.5 s), collector stopped at 3.77 s, started at 15.10 s; the agent, in its reconnect
/// backoff, reconnected only at 22.08 s. Its live messages from then on form a new segment; its
/// backlog replays oldest first and had reached the message of 17.26 s when a report was
/// taken at 25 s. The silence 17.26–22.08 s began after the start, but it is backlog not yet
/// replayed: unknown, never down. A host that reconnected and then really fell silent is down
/// from `start + 40 s + tol` on, not before.
#[test]
fn backlog_replay_in_progress_after_a_restart_is_not_down() {
    let (stop, start) = (3_770, 15_104);
    let out = Outages::from_runs(&[(-260, stop), (start, 60 * S)], 60 * S);
    let s = [
        seg(227, 17_256, GapCause::Silent, Some(22_077)),
        seg(22_077, 24_261, GapCause::Pending, None),
    ];
    assert_eq!(
        pieces(&s, 2_500, &out, 0, 25 * S),
        vec![
            (227, 17_256, PieceState::Up),
            (17_256, 22_077, PieceState::Unknown),
            (22_077, 24_261, PieceState::Up),
            (24_261, 25 * S, PieceState::Up),
        ]
    );
    // The same silence as the host's last: open, after live messages (which go first), so the
    // host had reconnected and fell silent at 17.26 s: up for tol, then lost, no allowance.
    let s = [seg(227, 17_256, GapCause::Pending, None)];
    assert_eq!(
        pieces(&s, 2_500, &out, 0, 60 * S),
        vec![
            (227, 17_256, PieceState::Up),
            (17_256, 19_756, PieceState::Up),
            (19_756, 60 * S, PieceState::Down(GapCause::Lost)),
        ]
    );
    // Closed by a new run 6 s later (a crash after reconnecting, same boot): unknown until the
    // window's end, start + 40 s + 2.5 s = 57.604 s, whatever closed it.
    let s = [
        seg(227, 17_256, GapCause::Lost, Some(23_256)),
        seg(23_256, 60 * S, GapCause::Pending, None),
    ];
    assert_eq!(
        pieces(&s, 2_500, &out, 0, 60 * S),
        vec![
            (227, 17_256, PieceState::Up),
            (17_256, 23_256, PieceState::Unknown),
            (23_256, 60 * S, PieceState::Up),
        ]
    );
    // An `offline` after the start is the agent's own word: shutdown from it.
    let s = [
        seg(227, 17_256, GapCause::Shutdown, Some(23_256)),
        seg(23_256, 60 * S, GapCause::Pending, None),
    ];
    assert_eq!(
        pieces(&s, 2_500, &out, 0, 60 * S),
        vec![
            (227, 17_256, PieceState::Up),
            (17_256, 23_256, PieceState::Down(GapCause::Shutdown)),
            (23_256, 60 * S, PieceState::Up),
        ]
    );
}

/// `tests/tests/region.rs`, the host with a clean spool, 30.11.2026: a broker outage (the
/// collector's run stops at 5.0 s and starts again at 17.3 s), the agent still backing off
/// until ~24 s spooled its heartbeats, reconnected, sent live ones first and replays oldest
/// first. Read at +45 s (62.3 s), the replay had reached the message of 21.12 s, made after the
/// outage: the silence from it to the first live message is backlog not replayed yet, so it is
/// unknown (it read 3.8 s down before the backlog rule), and up once the replay passes it.
#[test]
fn a_replayed_message_made_after_a_broker_outage_opens_no_down() {
    let out = Outages::from_runs(&[(-60 * S, 5_019), (17_319, 62_300)], 62_300);
    let s = [
        seg(0, 21_124, GapCause::Silent, Some(24_050)),
        seg(24_050, 61_900, GapCause::Pending, None),
    ];
    assert_eq!(
        pieces(&s, 2_500, &out, 0, 27_319),
        vec![
            (0, 21_124, PieceState::Up),
            (21_124, 24_050, PieceState::Unknown),
            (24_050, 27_319, PieceState::Up),
        ]
    );
    // Replayed: one segment, up from end to end.
    let s = [seg(0, 61_900, GapCause::Pending, None)];
    assert_eq!(
        pieces(&s, 2_500, &out, 0, 27_319),
        vec![(0, 27_319, PieceState::Up)]
    );
}

/// A workstation whose collector restarted at 11:00 on a Monday: its working hours hold no
/// down for the restart, only unknown.
#[test]
fn restart_in_working_hours_is_unknown_for_workstations() {
    let w = WorkCal {
        tz: chrono_tz::UTC,
        hours: WorkHours::default(),
    };
    let (a, b) = (utc(4, 0, 0), utc(5, 0, 0));
    // Up 08:00–11:00, collector stopped 11:00:10–11:00:40; the PC reconnects at 11:01:20
    // without its backlog (new segment).
    let back = utc(4, 11, 1) + 20 * S;
    let s = [
        seg(utc(4, 8, 0), utc(4, 11, 0), GapCause::Silent, Some(back)),
        seg(back, utc(4, 18, 0), GapCause::Shutdown, None),
    ];
    let out = Outages::from_runs(
        &[(a, utc(4, 11, 0) + 10 * S), (utc(4, 11, 0) + 40 * S, b)],
        b,
    );
    let agg = host_agg(&s, &[], 75 * S, &out, &w.windows(a, b), a, b);
    assert_eq!(agg.down_w_ms, 0);
    assert_eq!(agg.unknown_w_ms, MIN + 20 * S);
    assert_eq!(agg.up_w_ms, 10 * H - MIN - 20 * S);
}

#[test]
fn outages_from_runs() {
    let o = Outages::from_runs(&[(10, 20), (15, 30), (40, 50)], 100);
    assert_eq!(o.spans(), &[(Ms::MIN, 10), (30, 40), (50, Ms::MAX)]);
    assert!(Outages::from_runs(&[], 100).spans().is_empty());
    // The last run reaching the horizon: no trailing outage.
    assert_eq!(
        Outages::from_runs(&[(0, 100)], 100).spans(),
        &[(Ms::MIN, 0)]
    );
}

fn utc(d: u32, h: u32, m: u32) -> Ms {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(2024, 3, d, h, m, 0)
        .single()
        .unwrap()
        .timestamp_millis()
}

#[test]
fn workstation_rules() {
    // UTC calendar, Mon–Fri 08:00–20:00. 2024-03-04 is a Monday.
    let w = WorkCal {
        tz: chrono_tz::UTC,
        hours: WorkHours::default(),
    };
    let (a, b) = (utc(4, 0, 0), utc(6, 0, 0));
    let work = w.windows(a, b);
    // Mon: up 08:10–12:00, lost at 12:00 (in working hours) until Tue 09:00; up 09:00–18:00,
    // graceful shutdown at 18:00.
    let s = [
        seg(
            utc(4, 8, 10),
            utc(4, 12, 0),
            GapCause::Lost,
            Some(utc(5, 9, 0)),
        ),
        seg(utc(5, 9, 0), utc(5, 18, 0), GapCause::Shutdown, None),
    ];
    let agg = host_agg(&s, &[], 75 * S, &Outages::none(), &work, a, b);
    // Working hours: up 3h50 + 9h; down only 12:00–20:00 Monday (the window the silence began
    // in); Tuesday 08:00–09:00 and 18:00–20:00 are excluded.
    assert_eq!(agg.up_w_ms, 3 * H + 50 * MIN + 9 * H);
    assert_eq!(agg.down_w_ms, 8 * H);
    assert_eq!(agg.unknown_w_ms, 0);
    // Around the clock (if it were a server): everything after the first message.
    assert_eq!(agg.up_ms, 3 * H + 50 * MIN + 9 * H);
    assert_eq!(agg.down_ms, b - utc(4, 8, 10) - agg.up_ms);
    assert!(agg.active);
}

#[test]
fn flags_and_probes() {
    let s = [seg(10 * MIN, 20 * MIN, GapCause::Shutdown, None)];
    let p = [
        ProbeRow {
            cat: 0,
            start: 10 * MIN,
            end: 15 * MIN,
            ok: true,
            closed: false,
        },
        ProbeRow {
            cat: 0,
            start: 15 * MIN,
            end: 20 * MIN,
            ok: false,
            closed: true,
        },
        ProbeRow {
            cat: 2,
            start: 20 * MIN,
            end: 20 * MIN,
            ok: true,
            closed: true,
        },
    ];
    let a = host_agg(&s, &p, MIN, &Outages::none(), &[], 0, 15 * MIN);
    assert_eq!((a.reached, a.probed), (1, 1));
    let a = host_agg(&s, &p, MIN, &Outages::none(), &[], 15 * MIN, 20 * MIN);
    assert_eq!((a.reached, a.probed), (0, 1));
    let a = host_agg(&s, &p, MIN, &Outages::none(), &[], 20 * MIN, 30 * MIN);
    assert_eq!((a.reached, a.probed), (4, 5));
    assert!(a.active, "the last message at 20 min is in [20, 30)");
    let a = host_agg(&s, &p, MIN, &Outages::none(), &[], 21 * MIN, 30 * MIN);
    assert!(!a.active);
}

proptest::proptest! {
    /// Integration is additive: any split of a window gives the same sums.
    #[test]
    fn additive_over_windows(
        raw in proptest::collection::vec((0i64..200, 0i64..30, 0u8..5), 1..8),
        cut in 1i64..999,
        out_s in 0i64..1000, out_len in 0i64..100,
    ) {
        let mut segs = Vec::new();
        let mut t = 0;
        for (gap, len, cause) in &raw {
            let start = t + gap * MIN;
            segs.push(seg(start, start + len * MIN, GapCause::from_i64(i64::from(*cause)), None));
            t = start + len * MIN;
        }
        for i in 0..segs.len() - 1 {
            segs[i].next = Some(segs[i + 1].start);
            if segs[i].cause == GapCause::Pending { segs[i].cause = GapCause::Silent; }
        }
        let out = Outages::from_runs(&[(0, out_s * MIN), ((out_s + out_len) * MIN, 10_000 * MIN)], 2000 * MIN);
        let w = WorkCal { tz: chrono_tz::UTC, hours: WorkHours { days: [true; 7], start_min: 60, end_min: 600 } };
        let (a, b) = (0, 1000 * MIN);
        let m = cut * MIN;
        let whole = host_agg(&segs, &[], 2 * MIN, &out, &w.windows(a, b), a, b);
        let mut parts = host_agg(&segs, &[], 2 * MIN, &out, &w.windows(a, m), a, m);
        parts.add(&host_agg(&segs, &[], 2 * MIN, &out, &w.windows(m, b), m, b));
        proptest::prop_assert_eq!(whole.up_ms, parts.up_ms);
        proptest::prop_assert_eq!(whole.down_ms, parts.down_ms);
        proptest::prop_assert_eq!(whole.unknown_ms, parts.unknown_ms);
        proptest::prop_assert_eq!(whole.up_w_ms, parts.up_w_ms);
        proptest::prop_assert_eq!(whole.down_w_ms, parts.down_w_ms);
        proptest::prop_assert_eq!(whole.unknown_w_ms, parts.unknown_w_ms);
        // Pieces tile the host's life inside the window.
        let first = segs[0].start.max(a);
        proptest::prop_assert_eq!(whole.up_ms + whole.down_ms + whole.unknown_ms, b - first);
    }
}
