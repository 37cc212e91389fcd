use super::*;
use crate::roster::WorkHours;
use crate::timeline::{Outages, host_agg, host_agg_planned};
use crate::{GapCause, SegRow, WorkCal};
use chrono::TimeZone;

const S: Ms = 1000;
const MIN: Ms = 60 * S;
const H: Ms = 60 * MIN;
const TOL: Ms = 75 * S;

/// Unix ms of 2024-03-`d` `h:m:s` UTC (2024-03-04 is a Monday).
fn utc(d: u32, h: u32, m: u32, s: u32) -> Ms {
    chrono::Utc
        .with_ymd_and_hms(2024, 3, d, h, m, s)
        .single()
        .unwrap()
        .timestamp_millis()
}

fn seg(start: Ms, end: Ms, cause: GapCause, next: Option<Ms>) -> SegRow {
    SegRow {
        start,
        end,
        cause,
        next,
    }
}

fn cal() -> WorkCal {
    WorkCal {
        tz: chrono_tz::UTC,
        hours: WorkHours::default(),
    }
}

/// Monday: on at 08:00, switched off at 10:00:30, on again at 14:15:45, off at 18:30:10.
/// Tuesday: on at 09:05, switched off at 12:00 and left off.
fn day_of_a_pc() -> [SegRow; 3] {
    [
        seg(
            utc(4, 8, 0, 0),
            utc(4, 10, 0, 30),
            GapCause::Shutdown,
            Some(utc(4, 14, 15, 45)),
        ),
        seg(
            utc(4, 14, 15, 45),
            utc(4, 18, 30, 10),
            GapCause::Shutdown,
            Some(utc(5, 9, 5, 0)),
        ),
        seg(utc(5, 9, 5, 0), utc(5, 12, 0, 0), GapCause::Shutdown, None),
    ]
}

#[test]
fn off_in_working_hours_to_the_second() {
    let (a, b) = (utc(4, 0, 0, 0), utc(6, 0, 0, 0));
    let work = cal().windows(a, b);
    let agg = host_agg(&day_of_a_pc(), &[], TOL, &Outages::none(), &work, a, b);
    // Monday 10:00:30–14:15:45 (4 h 15 min 15 s) and 18:30:10–20:00 (1 h 29 min 50 s);
    // Tuesday 12:00–20:00 (8 h). Tuesday 08:00–09:05 is not counted: the PC was switched off on
    // Monday evening, nobody switched it off in Tuesday's working hours.
    assert_eq!(
        agg.off_w_ms,
        (4 * H + 15 * MIN + 15 * S) + (H + 29 * MIN + 50 * S) + 8 * H
    );
    assert_eq!(agg.off_w_days, 2);
    // Neither down nor hidden in up: the other working-hours figures are untouched.
    assert_eq!(agg.down_w_ms, 0);
    assert_eq!(agg.unknown_w_ms, 0);
    assert_eq!(
        agg.up_w_ms,
        (2 * H + 30 * S) + (4 * H + 14 * MIN + 25 * S) + (2 * H + 55 * MIN)
    );
    // Split at midnight: the same sums (days are counted per working window).
    let mid = utc(5, 0, 0, 0);
    let mut parts = host_agg(
        &day_of_a_pc(),
        &[],
        TOL,
        &Outages::none(),
        &cal().windows(a, mid),
        a,
        mid,
    );
    parts.add(&host_agg(
        &day_of_a_pc(),
        &[],
        TOL,
        &Outages::none(),
        &cal().windows(mid, b),
        mid,
        b,
    ));
    assert_eq!(parts, agg);
}

#[test]
fn outage_of_the_collector_is_unknown_not_off() {
    let (a, b) = (utc(4, 0, 0, 0), utc(5, 0, 0, 0));
    let work = cal().windows(a, b);
    // The collector did not run 11:00–12:00 on Monday.
    let out = Outages::from_runs(&[(a, utc(4, 11, 0, 0)), (utc(4, 12, 0, 0), b)], b);
    let agg = host_agg(&day_of_a_pc(), &[], TOL, &out, &work, a, b);
    // Off 10:00:30–11:00 (59 min 30 s); unknown 11:00 until 12:00 + 40 s + 75 s (the reconnect
    // allowance after a restart); off again 12:01:55–14:15:45 (2 h 13 min 50 s); evening
    // 18:30:10–20:00.
    assert_eq!(
        agg.off_w_ms,
        (59 * MIN + 30 * S) + (2 * H + 13 * MIN + 50 * S) + (H + 29 * MIN + 50 * S)
    );
    assert_eq!(agg.unknown_w_ms, H + MIN + 55 * S);
    assert_eq!(agg.off_w_days, 1, "one working day, however many pieces");
}

#[test]
fn planned_works_take_precedence() {
    let (a, b) = (utc(4, 0, 0, 0), utc(5, 0, 0, 0));
    let work = cal().windows(a, b);
    // Announced works 10:00–12:00: the shutdown inside them is planned, not off.
    let planned = [(utc(4, 10, 0, 0), utc(4, 12, 0, 0))];
    let (agg, _) = host_agg_planned(
        &day_of_a_pc(),
        &[],
        TOL,
        &Outages::none(),
        &work,
        &planned,
        a,
        b,
    );
    assert_eq!(
        agg.off_w_ms,
        (2 * H + 15 * MIN + 45 * S) + (H + 29 * MIN + 50 * S)
    );
    assert_eq!(agg.off_w_days, 1);
}

#[test]
fn lost_and_night_shutdowns_are_not_off() {
    let (a, b) = (utc(4, 0, 0, 0), utc(5, 0, 0, 0));
    let work = cal().windows(a, b);
    // Lost at 11:00 (down, not off), back at 12:00; switched off at 21:00 (after hours).
    let s = [
        seg(
            utc(4, 8, 0, 0),
            utc(4, 11, 0, 0),
            GapCause::Lost,
            Some(utc(4, 12, 0, 0)),
        ),
        seg(utc(4, 12, 0, 0), utc(4, 21, 0, 0), GapCause::Shutdown, None),
    ];
    let agg = host_agg(&s, &[], TOL, &Outages::none(), &work, a, b);
    assert_eq!((agg.off_w_ms, agg.off_w_days), (0, 0));
    assert_eq!(agg.down_w_ms, H);
}

fn info(mo: &str, host: &str, role: Option<Role>, site: &str) -> HostInfo {
    HostInfo {
        mo: mo.into(),
        host: host.into(),
        role,
        site: site.into(),
        hostname: format!("pc-{host}"),
        first_ms: 0,
    }
}

fn off(ms: Ms, days: i64) -> HostAgg {
    HostAgg {
        up_w_ms: 10 * H,
        off_w_ms: ms,
        off_w_days: days,
        active: true,
        ..HostAgg::default()
    }
}

#[test]
fn report_ranks_workstations_per_region_mo_and_site() {
    let roster = Roster::from_toml(
        "[[mo]]\noid = \"mo1\"\nname = \"Поликлиника 1\"\n\
         [[mo]]\noid = \"mo2\"\nname = \"Больница 2\"\n",
        "t",
    )
    .unwrap();
    let ws = Some(Role::Workstation);
    let data = PeriodData {
        from: 0,
        to: 100 * H,
        hosts: vec![
            (info("mo1", "a", ws, "Главный корпус"), off(3 * H, 2)),
            (info("mo1", "b", ws, "Главный корпус"), off(3 * H, 3)),
            (info("mo1", "c", None, "ФАП"), off(H, 1)),
            (info("mo1", "d", ws, "ФАП"), off(0, 0)),
            // A server switched off is down, not part of this report.
            (info("mo1", "s", Some(Role::Server), ""), off(9 * H, 1)),
            (info("mo2", "e", ws, ""), off(5 * H, 1)),
            // Outside the roster: its МО is listed, the region's top ignores it.
            (info("mo9", "x", ws, ""), off(50 * H, 9)),
        ],
        ..PeriodData::default()
    };
    let r = offhours(&data, &roster, 3, None);
    let top: Vec<(&str, i64, i64)> = r
        .top
        .iter()
        .map(|h| (h.host.as_str(), h.off_w_ms, h.off_days))
        .collect();
    // Ties on hours are broken by days.
    assert_eq!(top, vec![("e", 5 * H, 1), ("b", 3 * H, 3), ("a", 3 * H, 2)]);
    assert_eq!(r.top[0].mo_name, "Больница 2");
    assert_eq!(
        r.region,
        OffSum {
            hosts_off: 4,
            hosts: 5,
            off_w_ms: 12 * H,
            off_days: 7,
        }
    );
    let mo1 = &r.mos[0];
    assert_eq!(
        (mo1.mo.as_str(), mo1.sum.hosts, mo1.sum.off_w_ms),
        ("mo1", 4, 7 * H)
    );
    assert_eq!(mo1.top.len(), 3);
    let fap = mo1.sites.iter().find(|s| s.site == "ФАП").unwrap();
    assert_eq!(
        (fap.sum.hosts, fap.sum.hosts_off, fap.sum.off_w_ms),
        (2, 1, H)
    );
    assert!(r.mos.iter().any(|m| m.mo == "mo9" && !m.in_roster));
    // One МО only.
    let r = offhours(&data, &roster, 10, Some("mo2"));
    assert_eq!(r.mos.len(), 1);
    assert_eq!(r.top.len(), 1);
    assert_eq!(r.region.off_w_ms, 5 * H);
}

proptest::proptest! {
    /// Off time is additive over any split of a window; the days may count the one working
    /// window the cut falls in twice, never more, never fewer.
    #[test]
    fn off_is_additive_over_windows(
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
            if segs[i].cause == GapCause::Pending {
                segs[i].cause = GapCause::Silent;
            }
        }
        let out = Outages::from_runs(
            &[(0, out_s * MIN), ((out_s + out_len) * MIN, 10_000 * MIN)],
            2000 * MIN,
        );
        // Working windows 01:00–10:00 every day (several per 1000 min).
        let w = WorkCal {
            tz: chrono_tz::UTC,
            hours: WorkHours { days: [true; 7], start_min: 60, end_min: 600 },
        };
        let (a, b) = (0, 1000 * MIN);
        let m = cut * MIN;
        let whole = host_agg(&segs, &[], 2 * MIN, &out, &w.windows(a, b), a, b);
        let mut parts = host_agg(&segs, &[], 2 * MIN, &out, &w.windows(a, m), a, m);
        parts.add(&host_agg(&segs, &[], 2 * MIN, &out, &w.windows(m, b), m, b));
        proptest::prop_assert_eq!(whole.off_w_ms, parts.off_w_ms);
        proptest::prop_assert!(parts.off_w_days >= whole.off_w_days);
        proptest::prop_assert!(parts.off_w_days <= whole.off_w_days + 1);
        proptest::prop_assert_eq!(whole.off_w_days > 0, whole.off_w_ms > 0);
        // Off time is working time that is neither up, down nor unknown.
        let working: i64 = w
            .windows(a, b)
            .iter()
            .map(|&(s, e)| (e.min(b) - s.max(a).max(segs[0].start)).max(0))
            .sum();
        proptest::prop_assert!(
            whole.up_w_ms + whole.down_w_ms + whole.unknown_w_ms + whole.off_w_ms <= working
        );
    }
}
