use super::*;

const S: Ms = 1000;
const TOL: Ms = 75 * S;

fn seg(start: Ms, end: Ms) -> Seg {
    Seg {
        start,
        end,
        boot_id: None,
        boot_ms: None,
    }
}

fn ev(t: Ms) -> Evidence {
    Evidence {
        t,
        boot_id: None,
        boot_ms: None,
    }
}

#[test]
fn evidence_extends_joins_and_starts_segments() {
    let p = seg(0, 100 * S);
    let n = seg(200 * S, 300 * S);
    assert_eq!(
        place(Some(&p), Some(&n), &ev(50 * S), TOL),
        Place::Inside(None)
    );
    assert_eq!(
        place(Some(&p), Some(&n), &ev(130 * S), TOL),
        Place::Bridge(seg(0, 300 * S))
    );
    assert_eq!(
        place(Some(&p), None, &ev(170 * S), TOL),
        Place::ExtendPrev(seg(0, 170 * S))
    );
    assert_eq!(
        place(Some(&p), None, &ev(176 * S), TOL),
        Place::New(seg(176 * S, 176 * S))
    );
    assert_eq!(
        place(None, Some(&n), &ev(126 * S), TOL),
        Place::ExtendNext(seg(126 * S, 300 * S))
    );
    assert_eq!(place(None, None, &ev(5), TOL), Place::New(seg(5, 5)));
}

#[test]
fn a_new_boot_never_joins() {
    let mut p = seg(0, 100 * S);
    p.boot_ms = Some(-3600 * S);
    // Heartbeat 30 s later with uptime 15 s: the host booted after the last message.
    let e = Evidence {
        t: 130 * S,
        boot_id: None,
        boot_ms: Some(115 * S),
    };
    assert_eq!(
        place(Some(&p), None, &e, TOL),
        Place::New(Seg {
            start: 130 * S,
            end: 130 * S,
            boot_id: None,
            boot_ms: Some(115 * S)
        })
    );
    // Same boot (uptime consistent): joins, keeps the earliest boot estimate.
    let e = Evidence {
        t: 130 * S,
        boot_id: None,
        boot_ms: Some(-3599 * S),
    };
    assert!(
        matches!(place(Some(&p), None, &e, TOL), Place::ExtendPrev(s) if s.boot_ms == Some(-3600 * S))
    );
    // Different boot ids.
    p.boot_id = Some(1);
    let e = Evidence {
        t: 101 * S,
        boot_id: Some(2),
        boot_ms: None,
    };
    assert!(matches!(place(Some(&p), None, &e, TOL), Place::New(_)));
}

#[test]
fn gap_causes() {
    let p = seg(0, 100 * S);
    let mut n = seg(200 * S, 300 * S);
    let none = Marks::default();
    let off = Marks {
        offline: true,
        lost: false,
    };
    let lost = Marks {
        offline: false,
        lost: true,
    };
    let rm = 600 * S;
    assert_eq!(gap_cause(&p, None, none, rm), GapCause::Pending);
    assert_eq!(gap_cause(&p, None, lost, rm), GapCause::Lost);
    assert_eq!(gap_cause(&p, None, off, rm), GapCause::Shutdown);
    assert_eq!(gap_cause(&p, Some(&n), none, rm), GapCause::Silent);
    assert_eq!(gap_cause(&p, Some(&n), lost, rm), GapCause::Lost);
    n.boot_ms = Some(150 * S);
    assert_eq!(gap_cause(&p, Some(&n), none, rm), GapCause::Reboot);
    assert_eq!(gap_cause(&p, Some(&n), lost, rm), GapCause::Reboot);
    assert_eq!(gap_cause(&p, Some(&n), off, rm), GapCause::Shutdown);
    // A long silence ending with a new boot is lost, not a reboot.
    assert_eq!(gap_cause(&p, Some(&n), lost, 50 * S), GapCause::Lost);
}

fn res(t: Ms, ok: bool) -> PResult {
    PResult {
        t,
        ok,
        err: if ok { 0 } else { 3 },
        latency_ms: Some(10),
    }
}

fn piv(start: Ms, end: Ms, ok: bool, closed: bool) -> PIv {
    PIv {
        start,
        end,
        ok,
        err: if ok { 0 } else { 3 },
        closed,
        n: 1,
        lat_sum: 10,
        lat_n: 1,
    }
}

#[test]
fn probe_results_build_intervals() {
    let tol = 600 * S;
    // Same state within tol: extend.
    let p = piv(0, 60 * S, true, true);
    let e = place_probe(Some(&p), None, &res(120 * S, true), tol).unwrap();
    assert_eq!(
        e.prev.map(|x| (x.start, x.end, x.closed, x.n)),
        Some((0, 120 * S, true, 2))
    );
    assert!(e.new.is_none());
    // A change: the old state holds until the new result.
    let e = place_probe(Some(&p), None, &res(120 * S, false), tol).unwrap();
    assert_eq!(e.prev.map(|x| (x.end, x.closed)), Some((120 * S, false)));
    assert_eq!(
        e.new.map(|x| (x.start, x.end, x.ok)),
        Some((120 * S, 120 * S, false))
    );
    // Too late: a new interval, prev untouched.
    let e = place_probe(Some(&p), None, &res(700 * S, true), tol).unwrap();
    assert!(e.prev.is_none());
    assert_eq!(e.new.map(|x| (x.start, x.end)), Some((700 * S, 700 * S)));
    // Out of order between two intervals, joining the next one.
    let n = piv(300 * S, 400 * S, false, true);
    let e = place_probe(Some(&p), Some(&n), &res(200 * S, false), tol).unwrap();
    assert_eq!(e.prev.map(|x| (x.end, x.closed)), Some((200 * S, false)));
    assert_eq!(
        e.new.map(|x| (x.start, x.end, x.closed, x.n)),
        Some((200 * S, 400 * S, true, 2))
    );
    assert_eq!(e.next, NextEdit::Delete);
    // Joining both neighbours of the same state.
    let n = piv(300 * S, 400 * S, true, true);
    let e = place_probe(Some(&p), Some(&n), &res(200 * S, true), tol).unwrap();
    assert_eq!(e.prev.map(|x| (x.start, x.end, x.n)), Some((0, 400 * S, 3)));
    assert_eq!(e.next, NextEdit::Delete);
    // A contradiction inside an interval is ignored.
    assert!(place_probe(Some(&p), None, &res(30 * S, false), tol).is_none());
}

#[test]
fn intervals_split_at_midnight() {
    let day = 86_400 * S;
    let next = |t: Ms| (t.div_euclid(day) + 1) * day;
    let iv = piv(day - 60 * S, 2 * day + 60 * S, true, true);
    let v = split_days(iv, next);
    assert_eq!(
        v.iter()
            .map(|p| (p.start, p.end, p.closed, p.n))
            .collect::<Vec<_>>(),
        vec![
            (day - 60 * S, day, false, 1),
            (day, 2 * day, false, 0),
            (2 * day, 2 * day + 60 * S, true, 0)
        ]
    );
    // Ending with a result exactly at midnight.
    let v = split_days(piv(day - 60 * S, day, true, true), next);
    assert_eq!(
        v.iter()
            .map(|p| (p.start, p.end, p.closed))
            .collect::<Vec<_>>(),
        vec![(day - 60 * S, day, false), (day, day, true)]
    );
    // Handing over at midnight: one piece.
    assert_eq!(
        split_days(piv(day - 60 * S, day, true, false), next).len(),
        1
    );
}
