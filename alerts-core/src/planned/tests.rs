//! Planned works silence what they cover while in force, and nothing else.

use super::*;
use dozor_availability::planned::{RawPlannedWork, When};

/// Tuesday 2024-01-09 21:00 MSK.
const TUE_21: i64 = 1_704_823_200_000;

fn work(id: &str, f: impl FnOnce(&mut RawPlannedWork)) -> Planned {
    let mut raw = RawPlannedWork {
        title: "Замена ИБП".into(),
        from: Some("2024-01-09T20:30:00+03:00".into()),
        to: Some("2024-01-09T22:00:00+03:00".into()),
        ..RawPlannedWork::default()
    };
    f(&mut raw);
    Planned {
        id: id.into(),
        work: raw.validate(0).unwrap(),
    }
}

#[test]
fn a_work_in_force_silences_its_scope_with_its_window() {
    let w = work("p-1", |r| {
        r.mo = Some("mo1".into());
        r.host = Some("srv-1".into());
    });
    let s = silences(std::slice::from_ref(&w), TUE_21, &Snapshot::default());
    assert_eq!(s.len(), HOST_RULES.len());
    let When::Once { from, to } = w.work.when else {
        unreachable!()
    };
    for x in &s {
        assert_eq!(x.id, "planned-p-1");
        assert_eq!((x.starts_ms, x.ends_ms), (from, to));
        assert_eq!(x.comment, "Плановые работы: Замена ИБП");
        assert_eq!(x.matcher.host.as_deref(), Some("srv-1"));
        assert_eq!(x.matcher.mo.as_deref(), Some("mo1"));
        assert!(x.active(TUE_21));
    }
}

#[test]
fn windows_far_ahead_or_over_make_no_silence() {
    let w = work("p-1", |r| r.mo = Some("mo1".into()));
    // Two hours before it starts, and after it ended.
    assert!(
        silences(
            std::slice::from_ref(&w),
            TUE_21 - 7_200_000 - 1,
            &Snapshot::default()
        )
        .is_empty()
    );
    assert!(
        silences(
            std::slice::from_ref(&w),
            TUE_21 + 3_600_000,
            &Snapshot::default()
        )
        .is_empty()
    );
    // Within the hour before its start: made, but not active yet.
    let s = silences(
        std::slice::from_ref(&w),
        TUE_21 - 3_600_000,
        &Snapshot::default(),
    );
    assert_eq!(s.len(), 1);
    assert!(!s[0].active(TUE_21 - 3_600_000));
}

#[test]
fn region_scope_covers_every_rule() {
    let w = work("config-1", |_| {});
    let s = silences(&[w], TUE_21, &Snapshot::default());
    let rules: Vec<_> = s.iter().filter_map(|x| x.matcher.rule).collect();
    assert_eq!(rules, Rule::ALL.to_vec());
}
