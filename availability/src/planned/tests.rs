use super::*;
use crate::roster::WorkHours;
use crate::timeline::{Outages, PlannedAgg, host_agg, host_agg_planned};
use crate::{GapCause, SegRow, WorkCal};

const S: Ms = 1000;
const MIN: Ms = 60 * S;
const H: Ms = 60 * MIN;

fn raw(toml_text: &str) -> RawPlannedWork {
    toml::from_str(toml_text).expect("raw planned work")
}

fn check_err(toml_text: &str, field: &str) {
    let e = raw(toml_text).validate(3).unwrap_err();
    assert_eq!(e.field, format!("planned_works[3].{field}"), "{e}");
}

fn utc(d: u32, h: u32, m: u32) -> Ms {
    chrono::Utc
        .with_ymd_and_hms(2024, 3, d, h, m, 0)
        .single()
        .unwrap()
        .timestamp_millis()
}

#[test]
fn weekly_in_its_time_zone() {
    // Every Sunday 02:00–04:00 in Vladivostok (UTC+10): Saturday 16:00–18:00 UTC.
    let w = raw(
        "title = \"Обновление МИС\"\nmo = \"1.2.3\"\ndays = [\"sun\"]\nstart = \"02:00\"\n\
         end = \"04:00\"\ntz = \"Asia/Vladivostok\"",
    )
    .validate(0)
    .unwrap();
    assert_eq!(w.scope, Scope::Mo("1.2.3".into()));
    // 2024-03-02 and 03-09 are Saturdays.
    assert_eq!(
        w.windows(utc(1, 0, 0), utc(11, 0, 0)),
        vec![
            (utc(2, 16, 0), utc(2, 18, 0)),
            (utc(9, 16, 0), utc(9, 18, 0))
        ]
    );
    // Only overlapping windows, not clipped.
    assert_eq!(
        w.windows(utc(2, 17, 0), utc(2, 17, 30)),
        vec![(utc(2, 16, 0), utc(2, 18, 0))]
    );
    assert!(w.covers_host("1.2.3", "", "arm-1"));
    assert!(!w.covers_host("1.2.4", "", "arm-1"));
}

/// A work announced over the API covers nothing before its announcement: earlier windows are
/// gone, the one in progress starts at the announcement.
#[test]
fn an_announced_work_does_not_reach_into_the_past() {
    let mut w = raw(
        "title = \"Обновление МИС\"\ndays = [\"sat\"]\nstart = \"16:00\"\nend = \"18:00\"\n\
         tz = \"UTC\"",
    )
    .validate(0)
    .unwrap();
    w.not_before = Some(utc(9, 17, 0));
    assert_eq!(
        w.windows(utc(1, 0, 0), utc(20, 0, 0)),
        vec![
            (utc(9, 17, 0), utc(9, 18, 0)),
            (utc(16, 16, 0), utc(16, 18, 0))
        ]
    );
}

/// Days are named in English (`mon` … `sun`, any case) or by their Russian abbreviations.
#[test]
fn days_in_english_or_russian() {
    let w = |days: &str| {
        raw(&format!(
            "title = \"x\"\ndays = {days}\nstart = \"02:00\"\nend = \"04:00\"\ntz = \"UTC\""
        ))
        .validate(0)
        .map(|w| match w.when {
            When::Weekly { days, .. } => days,
            When::Once { .. } => unreachable!("a weekly work"),
        })
    };
    let mon_wed_sun = [true, false, true, false, false, false, true];
    assert_eq!(w(r#"["mon", "Wed", "sun"]"#).unwrap(), mon_wed_sun);
    assert_eq!(w(r#"["пн", "Ср", "вс"]"#).unwrap(), mon_wed_sun);
    assert_eq!(canonical_day(" Вс "), Some("sun"));
    assert_eq!(canonical_day("SUN"), Some("sun"));
    assert_eq!(canonical_day("воскр"), None);
    let e = w(r#"["воскр"]"#).unwrap_err();
    assert_eq!(e.field, "planned_works[0].days");
    assert!(e.message.contains("пн … вс"), "{}", e.message);
}

#[test]
fn across_midnight_and_once() {
    let w =
        raw("title = \"x\"\ndays = [\"mon\"]\nstart = \"22:00\"\nend = \"02:00\"\ntz = \"UTC\"")
            .validate(0)
            .unwrap();
    assert_eq!(w.scope, Scope::Region);
    // 2024-03-04 is a Monday: 22:00 Monday to 02:00 Tuesday.
    assert_eq!(
        w.windows(utc(4, 0, 0), utc(6, 0, 0)),
        vec![(utc(4, 22, 0), utc(5, 2, 0))]
    );
    let o = raw(
        "title = \"Замена сервера\"\nmo = \"1.2.3\"\nhost = \"srv-1\"\n\
         from = \"2024-03-05T22:00:00+10:00\"\nto = \"2024-03-06T02:00:00+10:00\"",
    )
    .validate(0)
    .unwrap();
    assert_eq!(
        o.windows(0, utc(31, 0, 0)),
        vec![(utc(5, 12, 0), utc(5, 16, 0))]
    );
    assert!(o.covers_host("1.2.3", "", "srv-1"));
    assert!(!o.covers_host("1.2.3", "", "srv-2"));
    let s = raw("title = \"x\"\nmo = \"1.2.3\"\nsite = \" Корпус 1 \"\nfrom = \"2024-03-05T00:00:00Z\"\nto = \"2024-03-05T01:00:00Z\"")
        .validate(0)
        .unwrap();
    assert!(s.covers_host("1.2.3", "корпус 1", "a"));
    assert!(!s.covers_host("1.2.3", "Корпус 2", "a"));
    let t = raw("title = \"x\"\ntarget = \"lis\"\nfrom = \"2024-03-05T00:00:00Z\"\nto = \"2024-03-05T01:00:00Z\"")
        .validate(0)
        .unwrap();
    assert_eq!(t.scope, Scope::Target(Category::Lis));
    assert!(
        !t.covers_host("1.2.3", "", "a"),
        "a target's works cover no host"
    );
}

#[test]
fn errors_name_the_field() {
    check_err(
        "days = [\"sun\"]\nstart = \"02:00\"\nend = \"04:00\"\ntz = \"UTC\"",
        "title",
    );
    check_err(
        "title = \"x\"\ndays = [\"sunday\"]\nstart = \"02:00\"\nend = \"04:00\"\ntz = \"UTC\"",
        "days",
    );
    check_err(
        "title = \"x\"\ndays = [\"sun\"]\nstart = \"25:00\"\nend = \"04:00\"\ntz = \"UTC\"",
        "start",
    );
    check_err(
        "title = \"x\"\ndays = [\"sun\"]\nstart = \"02:00\"\ntz = \"UTC\"",
        "end",
    );
    check_err(
        "title = \"x\"\ndays = [\"sun\"]\nstart = \"02:00\"\nend = \"04:00\"\ntz = \"Mars/Base\"",
        "tz",
    );
    check_err(
        "title = \"x\"\ndays = [\"sun\"]\nstart = \"02:00\"\nend = \"04:00\"",
        "tz",
    );
    check_err("title = \"x\"", "from");
    check_err(
        "title = \"x\"\nfrom = \"2024-03-05T01:00:00Z\"\nto = \"2024-03-05T00:00:00Z\"",
        "to",
    );
    check_err(
        "title = \"x\"\nfrom = \"yesterday\"\nto = \"2024-03-05T00:00:00Z\"",
        "from",
    );
    check_err(
        "title = \"x\"\nfrom = \"2024-03-05T00:00:00Z\"\nto = \"2024-03-05T01:00:00Z\"\ndays = [\"sun\"]",
        "from",
    );
    check_err(
        "title = \"x\"\nhost = \"a\"\nfrom = \"2024-03-05T00:00:00Z\"\nto = \"2024-03-05T01:00:00Z\"",
        "mo",
    );
    check_err(
        "title = \"x\"\nmo = \"a b\"\nfrom = \"2024-03-05T00:00:00Z\"\nto = \"2024-03-05T01:00:00Z\"",
        "mo",
    );
    check_err(
        "title = \"x\"\ntarget = \"bank\"\nfrom = \"2024-03-05T00:00:00Z\"\nto = \"2024-03-05T01:00:00Z\"",
        "target",
    );
    check_err(
        "title = \"x\"\nmo = \"m\"\ntarget = \"lis\"\nfrom = \"2024-03-05T00:00:00Z\"\nto = \"2024-03-05T01:00:00Z\"",
        "target",
    );
    assert!(toml::from_str::<RawPlannedWork>("title = \"x\"\nevery = \"day\"").is_err());
}

fn seg(start: Ms, end: Ms, cause: GapCause, next: Option<Ms>) -> SegRow {
    SegRow {
        start,
        end,
        cause,
        next,
    }
}

/// A server rebooted for planned works 02:00–02:40 inside a window 02:00–04:00, then lost at
/// 05:00 (unplanned) until 05:30: only the unplanned half hour is down.
#[test]
fn planned_down_is_its_own_state() {
    let s = [
        seg(0, 2 * H, GapCause::Shutdown, Some(2 * H + 40 * MIN)),
        seg(
            2 * H + 40 * MIN,
            5 * H,
            GapCause::Silent,
            Some(5 * H + 30 * MIN),
        ),
        seg(5 * H + 30 * MIN, 6 * H, GapCause::Shutdown, None),
    ];
    let planned = [(2 * H, 4 * H)];
    let tol = 75 * S;
    let (a, b) = (0, 6 * H);
    let plain = host_agg(&s, &[], tol, &Outages::none(), &[], a, b);
    let (agg, pl) = host_agg_planned(&s, &[], tol, &Outages::none(), &[], &planned, a, b);
    assert_eq!(plain.down_ms, 40 * MIN + 30 * MIN);
    assert_eq!(agg.down_ms, 30 * MIN);
    assert_eq!(agg.up_ms, plain.up_ms);
    assert_eq!(pl.planned_ms, 40 * MIN);
    assert!(agg.active);
    // Without planned works: the same as host_agg.
    let (same, none) = host_agg_planned(&s, &[], tol, &Outages::none(), &[], &[], a, b);
    assert_eq!(same, plain);
    assert_eq!(none, PlannedAgg::default());
}

/// Workstations: a lost silence that began in working hours inside planned works is planned,
/// not down; a planned shutdown is neither (not expected up anyway).
#[test]
fn workstation_in_planned_works() {
    let w = WorkCal {
        tz: chrono_tz::UTC,
        hours: WorkHours::default(),
    };
    let (a, b) = (utc(4, 0, 0), utc(5, 0, 0));
    // Monday: up 08:00–12:00, lost 12:00–12:30 (works 12:00–13:00), up 12:30–15:00,
    // shut down 15:00–15:20 (works 15:00–16:00), up 15:20–18:00, shut down.
    let s = [
        seg(
            utc(4, 8, 0),
            utc(4, 12, 0),
            GapCause::Lost,
            Some(utc(4, 12, 30)),
        ),
        seg(
            utc(4, 12, 30),
            utc(4, 15, 0),
            GapCause::Shutdown,
            Some(utc(4, 15, 20)),
        ),
        seg(utc(4, 15, 20), utc(4, 18, 0), GapCause::Shutdown, None),
    ];
    let planned = [
        (utc(4, 12, 0), utc(4, 13, 0)),
        (utc(4, 15, 0), utc(4, 16, 0)),
    ];
    let (agg, pl) = host_agg_planned(
        &s,
        &[],
        75 * S,
        &Outages::none(),
        &w.windows(a, b),
        &planned,
        a,
        b,
    );
    assert_eq!(agg.down_w_ms, 0);
    assert_eq!(pl.planned_w_ms, 30 * MIN);
    assert_eq!(agg.up_w_ms, 4 * H + 2 * H + 30 * MIN + 2 * H + 40 * MIN);
    // Around the clock: 12:00–12:30 and 15:00–15:20 planned; 18:00–24:00 down (shutdown).
    assert_eq!(pl.planned_ms, 50 * MIN);
    assert_eq!(agg.down_ms, 6 * H);
}

#[test]
fn host_windows_union() {
    let works = [
        raw("title = \"a\"\nfrom = \"1970-01-01T01:00:00Z\"\nto = \"1970-01-01T03:00:00Z\"")
            .validate(0)
            .unwrap(),
        raw("title = \"b\"\nmo = \"m\"\nfrom = \"1970-01-01T02:00:00Z\"\nto = \"1970-01-01T04:00:00Z\"")
            .validate(1)
            .unwrap(),
        raw("title = \"c\"\nmo = \"other\"\nfrom = \"1970-01-01T05:00:00Z\"\nto = \"1970-01-01T06:00:00Z\"")
            .validate(2)
            .unwrap(),
    ];
    assert_eq!(
        host_windows(&works, "m", "", "h", 0, 10 * H),
        vec![(H, 4 * H)]
    );
    assert_eq!(
        host_windows(&works, "other", "", "h", 0, 10 * H),
        vec![(H, 3 * H), (5 * H, 6 * H)]
    );
}

proptest::proptest! {
    /// Planned time only moves down time: up and unknown are those of `host_agg`, down +
    /// planned is its down, and the sums are additive over any split of the window.
    #[test]
    fn planned_only_moves_down_time(
        raw in proptest::collection::vec((0i64..200, 0i64..30, 0u8..5), 1..8),
        works in proptest::collection::vec((0i64..1000, 1i64..120), 0..4),
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
        let mut planned: Vec<(Ms, Ms)> = works.iter().map(|(s, l)| (s * MIN, (s + l) * MIN)).collect();
        let planned = crate::reach::union_spans(&mut planned);
        let out = Outages::from_runs(&[(0, out_s * MIN), ((out_s + out_len) * MIN, 10_000 * MIN)], 2000 * MIN);
        let w = WorkCal { tz: chrono_tz::UTC, hours: WorkHours { days: [true; 7], start_min: 60, end_min: 600 } };
        let (a, b) = (0, 1000 * MIN);
        let m = cut * MIN;
        let plain = host_agg(&segs, &[], 2 * MIN, &out, &w.windows(a, b), a, b);
        let (agg, pl) = host_agg_planned(&segs, &[], 2 * MIN, &out, &w.windows(a, b), &planned, a, b);
        proptest::prop_assert_eq!(agg.up_ms, plain.up_ms);
        proptest::prop_assert_eq!(agg.unknown_ms, plain.unknown_ms);
        proptest::prop_assert_eq!(agg.up_w_ms, plain.up_w_ms);
        proptest::prop_assert_eq!(agg.unknown_w_ms, plain.unknown_w_ms);
        proptest::prop_assert_eq!(agg.down_ms + pl.planned_ms, plain.down_ms);
        proptest::prop_assert_eq!(agg.down_w_ms + pl.planned_w_ms, plain.down_w_ms);
        let (mut p1, mut q1) = host_agg_planned(&segs, &[], 2 * MIN, &out, &w.windows(a, m), &planned, a, m);
        let (p2, q2) = host_agg_planned(&segs, &[], 2 * MIN, &out, &w.windows(m, b), &planned, m, b);
        p1.add(&p2);
        q1.planned_ms += q2.planned_ms;
        q1.planned_w_ms += q2.planned_w_ms;
        q1.off_w_ms += q2.off_w_ms;
        proptest::prop_assert_eq!(p1.down_ms, agg.down_ms);
        proptest::prop_assert_eq!(p1.down_w_ms, agg.down_w_ms);
        proptest::prop_assert_eq!(
            (q1.planned_ms, q1.planned_w_ms, q1.off_w_ms),
            (pl.planned_ms, pl.planned_w_ms, pl.off_w_ms)
        );
        // Off in working hours the works explain leaves that figure, nothing else does.
        proptest::prop_assert_eq!(agg.off_w_ms + pl.off_w_ms, plain.off_w_ms);
    }
}
