//! Scenario tests of the SQLite store and the reader: history written through `write` with
//! synthetic records, read back as exact sums.

use super::*;
use crate::availability::{HostAgg, PeriodData, ReachAgg};
use crate::record::Batch;
use crate::store::config::{RawStore, StoreConfig};
use crate::store::sim::Sim;
use crate::store::{Reader, Store};
use chrono::TimeZone;
use dozor_proto::{Category, Role};

const S: Ms = 1000;
const MIN: Ms = 60 * S;
const H: Ms = 60 * MIN;

/// UTC instant of 2024-03-`d` `h`:`m`:`s` (2024-03-04 is a Monday).
fn at(d: u32, h: u32, m: u32, s: u32) -> Ms {
    chrono::Utc
        .with_ymd_and_hms(2024, 3, d, h, m, s)
        .single()
        .unwrap()
        .timestamp_millis()
}

const ROSTER_UTC: &str = r#"
[[mo]]
oid = "mo1"
name = "Поликлиника 1"
tz = "UTC"
planned_arm = 10
"#;

struct T {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: SqliteStore,
    cfg: StoreConfig,
    roster: Arc<Roster>,
}

impl T {
    fn new(region_tz: &str, roster: &str) -> T {
        let raw: RawStore = toml::from_str(&format!("region_tz = \"{region_tz}\"")).unwrap();
        T::with_cfg(raw.validate().unwrap(), roster)
    }

    fn with_cfg(cfg: StoreConfig, roster: &str) -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(dir.path());
        let roster = Arc::new(Roster::from_toml(roster, "roster").unwrap());
        let store = SqliteStore::open(&path, &cfg, roster.clone()).unwrap();
        T {
            _dir: dir,
            path,
            store,
            cfg,
            roster,
        }
    }

    fn write(&mut self, recs: Vec<Record>) {
        for chunk in recs.chunks(500) {
            self.store
                .write(&Batch {
                    records: chunk.to_vec(),
                    delivery: Vec::new(),
                })
                .unwrap();
        }
        // The tables as the pipeline's readers see them once the journal is applied.
        self.store.settle(true).unwrap();
    }

    fn data(&self, from: Ms, to: Ms, now: Ms) -> PeriodData {
        Reader::open(&self.path, &self.cfg)
            .unwrap()
            .period_data(&self.roster, from, to, now)
            .unwrap()
    }
}

fn agg(d: &PeriodData, host: &str) -> HostAgg {
    d.hosts
        .iter()
        .find(|(h, _)| h.host == host)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("no host {host}"))
}

fn reach(d: &PeriodData, mo: &str, c: Category) -> ReachAgg {
    d.mo_reach
        .get(&(mo.to_string(), c))
        .copied()
        .unwrap_or_default()
}

const MIS: &[(&str, Category, bool)] = &[("mis", Category::Mis, true)];
const MIS_DOWN: &[(&str, Category, bool)] = &[("mis", Category::Mis, false)];

#[test]
fn server_reboot_and_lost_channel() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let boot1 = at(3, 0, 0, 0);
    s.birth("mo1", "srv", Role::Server, "", at(4, 0, 0, 0), boot1);
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(4, 10, 0, 0),
        30 * S,
        boot1,
        false,
    );
    // Planned reboot: offline, boot at 10:01, birth 10:01:30.
    s.offline("mo1", "srv", at(4, 10, 0, 10));
    let boot2 = at(4, 10, 1, 0);
    s.birth("mo1", "srv", Role::Server, "", at(4, 10, 1, 30), boot2);
    s.hbs(
        "mo1",
        "srv",
        at(4, 10, 2, 0),
        at(4, 12, 0, 0),
        30 * S,
        boot2,
        false,
    );
    // The channel drops at 12:00; the collector declares it lost; back at 12:30.
    s.lost("mo1", "srv", at(4, 12, 1, 35));
    s.hbs(
        "mo1",
        "srv",
        at(4, 12, 30, 0),
        at(4, 14, 0, 0),
        30 * S,
        boot2,
        false,
    );
    t.write(s.take());
    let d = t.data(at(4, 0, 0, 0), at(4, 14, 0, 0), at(4, 14, 0, 0));
    let a = agg(&d, "srv");
    assert_eq!(a.up_ms, 10 * H + (H + 58 * MIN + 30 * S) + 90 * MIN);
    assert_eq!(a.down_ms, 90 * S + 30 * MIN);
    assert_eq!(a.unknown_ms, 0);
    assert!(a.active);
    // A crash reboot (no offline): labelled reboot, still down.
    let mut s = Sim::new();
    let boot3 = at(4, 14, 1, 0);
    s.birth("mo1", "srv", Role::Server, "", at(4, 14, 1, 40), boot3);
    s.hbs(
        "mo1",
        "srv",
        at(4, 14, 2, 10),
        at(4, 15, 0, 0),
        30 * S,
        boot3,
        false,
    );
    t.write(s.take());
    let d = t.data(at(4, 14, 0, 0), at(4, 15, 0, 0), at(4, 15, 0, 0));
    assert_eq!(agg(&d, "srv").down_ms, 100 * S);
    assert_eq!(agg(&d, "srv").up_ms, H - 100 * S);
}

/// Issue 13, item 8: a server's channel drops at 12:00:10 (the collector marks it lost at
/// 12:01:45); the agent keeps its heartbeats in the spool and is shut down gracefully at
/// 12:20:05, unable to say `offline`. At 13:00 it runs again, its new birth says so
/// (`prev_end`, shutdown) and its spool replays 12:00:30–12:20:00. Then the host is up until
/// 12:20:05 and shut down from there, to the second; an agent that does not say (`prev_end`
/// absent) keeps today's rule (the silence after the replayed heartbeats is lost: `Silent`).
/// Item 9: after an unclean end (same boot), the stamp dates the failure: the segment ends at
/// the stamp 12:20:25 (its last heartbeats were lost), not at 12:20:00.
#[test]
fn prev_end_dates_the_previous_runs_end() {
    for (prev, cause, end) in [
        (
            Some((at(4, 12, 20, 5), true)),
            GapCause::Shutdown,
            at(4, 12, 20, 5),
        ),
        (None, GapCause::Silent, at(4, 12, 20, 0)),
        (
            Some((at(4, 12, 20, 25), false)),
            GapCause::Silent,
            at(4, 12, 20, 25),
        ),
    ] {
        let mut t = T::new("UTC", ROSTER_UTC);
        let mut s = Sim::new();
        s.skew_ms = 7 * MIN; // the agent's clock is 7 min fast: changes nothing
        s.start(at(4, 0, 0, 0));
        let boot = at(3, 0, 0, 0);
        s.birth("mo1", "srv", Role::Server, "", at(4, 11, 0, 0), boot);
        s.hbs(
            "mo1",
            "srv",
            at(4, 11, 0, 0),
            at(4, 12, 0, 10),
            30 * S,
            boot,
            false,
        );
        s.lost("mo1", "srv", at(4, 12, 1, 45));
        t.write(s.take());
        s.prev_end = prev.map(|(at, shutdown)| dozor_proto::PrevEnd { at, shutdown });
        s.birth("mo1", "srv", Role::Server, "", at(4, 13, 0, 0), boot);
        s.hbs(
            "mo1",
            "srv",
            at(4, 13, 0, 30),
            at(4, 14, 0, 10),
            30 * S,
            boot,
            false,
        );
        s.hbs(
            "mo1",
            "srv",
            at(4, 12, 0, 30),
            at(4, 12, 20, 10),
            30 * S,
            boot,
            true,
        );
        t.write(s.take());
        let d = t.data(at(4, 11, 0, 0), at(4, 14, 0, 0), at(4, 14, 0, 0));
        let a = agg(&d, "srv");
        assert_eq!(a.down_ms, at(4, 13, 0, 0) - end, "{prev:?}");
        assert_eq!(a.up_ms, 3 * H - (at(4, 13, 0, 0) - end), "{prev:?}");
        let c = t.store.conn.query_row(
            "SELECT cause, end_ms FROM segs WHERE start_ms = ?1",
            [at(4, 11, 0, 0)],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        );
        assert_eq!(c.unwrap(), (cause as i64, end), "{prev:?}");
    }
}

#[test]
fn workstation_night_shutdown_and_lost() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    // Monday 08:00–18:00, shut down for the night.
    let b = at(4, 7, 55, 0);
    s.birth("mo1", "pc", Role::Workstation, "Корпус", at(4, 8, 0, 0), b);
    s.hbs(
        "mo1",
        "pc",
        at(4, 8, 0, 0),
        at(4, 18, 0, 0),
        30 * S,
        b,
        false,
    );
    s.offline("mo1", "pc", at(4, 18, 0, 5));
    // Tuesday 08:30–11:00, power cut until 13:00, 13:00–19:00, switched off at the wall.
    let b = at(5, 8, 25, 0);
    s.birth("mo1", "pc", Role::Workstation, "Корпус", at(5, 8, 30, 0), b);
    s.hbs(
        "mo1",
        "pc",
        at(5, 8, 30, 0),
        at(5, 11, 0, 0),
        30 * S,
        b,
        false,
    );
    s.lost("mo1", "pc", at(5, 11, 1, 35));
    let b = at(5, 12, 58, 0);
    s.birth("mo1", "pc", Role::Workstation, "Корпус", at(5, 13, 0, 0), b);
    s.hbs(
        "mo1",
        "pc",
        at(5, 13, 0, 0),
        at(5, 19, 0, 0),
        30 * S,
        b,
        false,
    );
    s.lost("mo1", "pc", at(5, 19, 1, 35));
    // Wednesday 08:10–17:00.
    let b = at(6, 8, 5, 0);
    s.birth("mo1", "pc", Role::Workstation, "Корпус", at(6, 8, 10, 0), b);
    s.hbs(
        "mo1",
        "pc",
        at(6, 8, 10, 0),
        at(6, 17, 0, 0),
        30 * S,
        b,
        false,
    );
    s.offline("mo1", "pc", at(6, 17, 0, 3));
    s.stop(at(7, 0, 0, 0));
    t.write(s.take());
    let now = at(7, 0, 0, 0);
    let d = t.data(at(4, 0, 0, 0), at(7, 0, 0, 0), now);
    let a = agg(&d, "pc");
    assert_eq!(
        a.up_w_ms,
        10 * H + (2 * H + 30 * MIN + 6 * H) + (8 * H + 50 * MIN)
    );
    // Down: Tuesday 11:00–13:00 and 19:00–20:00 (the silence began in working hours; the next
    // morning is not counted).
    assert_eq!(a.down_w_ms, 3 * H);
    assert_eq!(a.unknown_w_ms, 0);
    // Tuesday alone.
    let d = t.data(at(5, 0, 0, 0), at(6, 0, 0, 0), now);
    let a = agg(&d, "pc");
    assert_eq!((a.up_w_ms, a.down_w_ms), (8 * H + 30 * MIN, 3 * H));
    // The same after the days are materialized.
    t.store.maintain_now(now).unwrap();
    let d2 = t.data(at(5, 0, 0, 0), at(6, 0, 0, 0), now);
    assert_eq!(agg(&d2, "pc"), a);
}

#[test]
fn collector_gap_is_unknown_until_replay_fills_it() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    let b = at(3, 0, 0, 0);
    s.start(at(4, 0, 0, 0));
    s.birth("mo1", "srv", Role::Server, "", at(4, 0, 0, 0), b);
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(4, 2, 0, 0),
        30 * S,
        b,
        false,
    );
    t.write(s.take());
    // Crash: no stop. Restart at 03:00.
    s.start(at(4, 3, 0, 0));
    s.hbs(
        "mo1",
        "srv",
        at(4, 3, 0, 30),
        at(4, 5, 0, 0),
        30 * S,
        b,
        false,
    );
    t.write(s.take());
    let now = at(4, 5, 0, 0);
    let d = t.data(at(4, 0, 0, 0), now, now);
    let a = agg(&d, "srv");
    assert_eq!(a.up_ms, 2 * H + (H + 59 * MIN + 30 * S));
    assert_eq!(a.down_ms, 0);
    assert_eq!(a.unknown_ms, H + 30 * S);
    // The agent replays what it spooled while the collector was down.
    s.replay_recv_ms = Some(at(4, 5, 0, 0));
    s.hbs(
        "mo1",
        "srv",
        at(4, 2, 0, 30),
        at(4, 3, 0, 0),
        30 * S,
        b,
        true,
    );
    t.write(s.take());
    let a = agg(&t.data(at(4, 0, 0, 0), now, now), "srv");
    assert_eq!((a.up_ms, a.down_ms, a.unknown_ms), (5 * H, 0, 0));
}

#[test]
fn clean_collector_stop_is_unknown_too() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    let b = at(3, 0, 0, 0);
    s.start(at(4, 0, 0, 0));
    s.birth("mo1", "srv", Role::Server, "", at(4, 0, 0, 0), b);
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(4, 1, 0, 0),
        30 * S,
        b,
        false,
    );
    s.stop(at(4, 1, 0, 10));
    s.start(at(4, 2, 0, 0));
    s.hbs(
        "mo1",
        "srv",
        at(4, 2, 0, 20),
        at(4, 3, 0, 0),
        30 * S,
        b,
        false,
    );
    t.write(s.take());
    let now = at(4, 3, 0, 0);
    let a = agg(&t.data(at(4, 0, 0, 0), now, now), "srv");
    assert_eq!(
        (a.up_ms, a.down_ms, a.unknown_ms),
        (2 * H - 20 * S, 0, H + 20 * S)
    );
}

#[test]
fn host_replaying_a_day_of_backlog_is_up_that_day() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    let b = at(3, 0, 0, 0);
    s.start(at(4, 0, 0, 0));
    s.birth("mo1", "srv", Role::Server, "", at(4, 0, 0, 0), b);
    for m in 0..=600 {
        let ts = at(4, 0, 0, 0) + m * MIN;
        s.hb("mo1", "srv", ts, b, false);
        s.probe("mo1", "srv", ts, MIS, false);
    }
    // The МО's channel fails at 10:00; lost at 10:03:05.
    s.lost("mo1", "srv", at(4, 10, 3, 5));
    t.write(s.take());
    // Next day at 10:00 the channel is back: live messages…
    for m in 0..=120 {
        let ts = at(5, 10, 0, 0) + m * MIN;
        s.hb("mo1", "srv", ts, b, false);
        s.probe("mo1", "srv", ts, MIS, false);
    }
    t.write(s.take());
    let now = at(5, 12, 0, 0);
    let day4 = |t: &T| t.data(at(4, 0, 0, 0), at(5, 0, 0, 0), now);
    let before = day4(&t);
    assert_eq!(
        (agg(&before, "srv").up_ms, agg(&before, "srv").down_ms),
        (10 * H, 14 * H)
    );
    // …and the spooled day, replayed (interleaved with live traffic in real life).
    s.replay_recv_ms = Some(now);
    for m in 1..(24 * 60) {
        let ts = at(4, 10, 0, 0) + m * MIN;
        s.hb("mo1", "srv", ts, b, true);
        s.probe("mo1", "srv", ts, MIS, true);
    }
    t.write(s.take());
    let after = day4(&t);
    let a = agg(&after, "srv");
    assert_eq!((a.up_ms, a.down_ms, a.unknown_ms), (24 * H, 0, 0));
    assert_eq!(reach(&after, "mo1", Category::Mis).reach_ms, 24 * H);
    assert_eq!(reach(&after, "mo1", Category::Mis).unreach_ms, 0);
    // Day 4 was materialized when day 5 began; the replay marked it dirty. Recomputing it
    // changes nothing for readers.
    assert!(t.store.maintain_now(now).unwrap().dirty_host_days > 0);
    let again = day4(&t);
    assert_eq!(agg(&again, "srv"), a);
    assert_eq!(again.mo_reach, after.mo_reach);
    assert!(t.store.stats().out_of_order > 0);
}

#[test]
fn mis_reachability_from_an_mo() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(4, 7, 0, 0);
    for h in ["a", "b"] {
        s.birth("mo1", h, Role::Workstation, "", at(4, 8, 0, 0), b);
    }
    for m in 0..=240 {
        let ts = at(4, 8, 0, 0) + m * MIN;
        s.hb("mo1", "a", ts, b, false);
        // "a": МИС fails 09:00–10:00.
        let down = (at(4, 9, 0, 0)..at(4, 10, 0, 0)).contains(&ts);
        s.probe("mo1", "a", ts, if down { MIS_DOWN } else { MIS }, false);
        // "b" is up 08:00–09:30 only and fails from 09:00.
        if ts <= at(4, 9, 30, 0) {
            s.hb("mo1", "b", ts, b, false);
            s.probe(
                "mo1",
                "b",
                ts,
                if ts >= at(4, 9, 0, 0) { MIS_DOWN } else { MIS },
                false,
            );
        }
    }
    s.offline("mo1", "b", at(4, 9, 30, 5));
    s.offline("mo1", "a", at(4, 12, 0, 5));
    t.write(s.take());
    let now = at(4, 13, 0, 0);
    let d = t.data(at(4, 0, 0, 0), now, now);
    let r = reach(&d, "mo1", Category::Mis);
    // Reachable 08:00–09:00 and 10:00–12:00; unreachable 09:00–10:00; nobody up after 12:00.
    assert_eq!((r.reach_ms, r.unreach_ms), (3 * H, H));
    let a = agg(&d, "a");
    assert_eq!(a.reached, crate::availability::cat_bit(Category::Mis));
    // Windows inside the outage: probed but not reached.
    let d = t.data(at(4, 9, 5, 0), at(4, 9, 55, 0), now);
    assert_eq!(agg(&d, "a").reached, 0);
    assert_eq!(agg(&d, "a").probed, 1);
    assert_eq!(reach(&d, "mo1", Category::Mis).unreach_ms, 50 * MIN);
}

#[test]
fn clock_skew_changes_nothing() {
    let run = |skew: Ms| {
        let mut t = T::new("UTC", ROSTER_UTC);
        let mut s = Sim::new();
        s.skew_ms = skew;
        s.start(at(4, 0, 0, 0));
        let b = at(3, 0, 0, 0);
        s.birth("mo1", "srv", Role::Server, "", at(4, 0, 0, 0), b);
        s.hbs(
            "mo1",
            "srv",
            at(4, 0, 0, 0),
            at(4, 2, 0, 0),
            30 * S,
            b,
            false,
        );
        // A fast crash reboot inside the gap tolerance: must still split.
        let b2 = at(4, 2, 0, 20);
        s.birth("mo1", "srv", Role::Server, "", at(4, 2, 0, 50), b2);
        s.hbs(
            "mo1",
            "srv",
            at(4, 2, 1, 0),
            at(4, 3, 0, 0),
            30 * S,
            b2,
            false,
        );
        t.write(s.take());
        agg(
            &t.data(at(4, 0, 0, 0), at(4, 3, 0, 0), at(4, 3, 0, 0)),
            "srv",
        )
    };
    let exact = run(0);
    assert_eq!(exact.down_ms, 50 * S);
    assert_eq!(run(2 * H), exact);
    assert_eq!(run(-7 * H - 13 * S), exact);
}

#[test]
fn period_boundaries_in_region_and_mo_time_zones() {
    let roster = r#"
[[mo]]
oid = "vl"
name = "Владивосток"
tz = "Asia/Vladivostok"
planned_arm = 1
"#;
    let mut t = T::new("Europe/Moscow", roster);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    // Workstation: 2024-03-04 23:00 UTC (Tue 09:00 in Vladivostok, 02:00 in Moscow) until
    // 09:30 UTC (19:30 local).
    let b = at(4, 22, 55, 0);
    s.birth("vl", "pc", Role::Workstation, "", at(4, 23, 0, 0), b);
    s.hbs(
        "vl",
        "pc",
        at(4, 23, 0, 0),
        at(5, 9, 30, 0),
        30 * S,
        b,
        false,
    );
    s.offline("vl", "pc", at(5, 9, 30, 2));
    // Server: 20:00–22:00 UTC = 23:00–01:00 Moscow, then shut down.
    let b = at(4, 19, 0, 0);
    s.birth("vl", "srv", Role::Server, "", at(4, 20, 0, 0), b);
    s.hbs(
        "vl",
        "srv",
        at(4, 20, 0, 0),
        at(4, 22, 0, 0),
        30 * S,
        b,
        false,
    );
    s.offline("vl", "srv", at(4, 22, 0, 1));
    s.stop(at(5, 10, 0, 0));
    t.write(s.take());
    let tz = chrono_tz::Europe::Moscow;
    let now = chrono::Utc
        .with_ymd_and_hms(2024, 4, 2, 12, 0, 0)
        .unwrap()
        .timestamp_millis();
    let q = |t: &T, spec: &str| {
        let p = crate::availability::Period::parse(spec, tz).unwrap();
        t.data(p.from_ms, p.to_ms, now)
    };
    let d4 = q(&t, "2024-03-04");
    assert_eq!(agg(&d4, "srv").up_ms, H);
    assert!(
        d4.hosts.iter().all(|(h, _)| h.host != "pc"),
        "pc appears on the 5th (MSK)"
    );
    let d5 = q(&t, "2024-03-05");
    assert_eq!(agg(&d5, "srv").up_ms, H);
    let pc = agg(&d5, "pc");
    assert_eq!(
        (pc.up_ms, pc.up_w_ms, pc.down_w_ms),
        (10 * H + 30 * MIN, 10 * H + 30 * MIN, 0)
    );
    let raw_month = q(&t, "2024-03");
    let raw_week = q(&t, "2024-W10");
    // Materialize March (and the 1st of April): the month is then read from monthly rows.
    let rep = t.store.maintain_now(now).unwrap();
    assert!(rep.days >= 28, "{rep:?}");
    let month = q(&t, "2024-03");
    assert_eq!(month.hosts, raw_month.hosts);
    assert_eq!(month.mo_reach, raw_month.mo_reach);
    assert_eq!(q(&t, "2024-W10").hosts, raw_week.hosts);
    assert_eq!(agg(&month, "srv").up_ms, 2 * H);
}

/// A deterministic pseudo-random fleet over 12 days.
fn fleet(s: &mut Sim, seed: u64, replay_only: bool) {
    let mut x = seed;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for h in 0..6 {
        let host = format!("h{h}");
        let mo = if h < 3 { "mo1" } else { "mo2" };
        let server = h % 3 == 0;
        let role = if server {
            Role::Server
        } else {
            Role::Workstation
        };
        for day in 4..16u32 {
            let (from, to) = if server {
                (at(day, 0, 0, 0), at(day, 23, 59, 0))
            } else {
                let st = at(day, 7, 0, 0) + rnd(180) as Ms * MIN;
                (st, st + (4 + rnd(8)) as Ms * H)
            };
            let boot = from - 5 * MIN;
            if !replay_only {
                s.birth(mo, &host, role, "", from, boot);
            }
            let mut ts = from;
            let lost_at = (rnd(4) == 0).then(|| from + rnd(((to - from) / MIN) as u64) as Ms * MIN);
            while ts <= to {
                let in_loss = lost_at.is_some_and(|l| ts > l && ts < l + 3 * H);
                let ok = rnd(10) != 0;
                if in_loss == replay_only {
                    s.hb(mo, &host, ts, boot, replay_only);
                    s.probe(
                        mo,
                        &host,
                        ts,
                        &[("mis", Category::Mis, ok), ("lis", Category::Lis, true)],
                        replay_only,
                    );
                }
                ts += 2 * MIN;
            }
            let off = rnd(2) == 0;
            if !replay_only {
                if let Some(l) = lost_at {
                    s.lost(mo, &host, l + 7 * MIN);
                }
                if off {
                    s.offline(mo, &host, to + 10 * S);
                }
            }
        }
    }
    if !replay_only {
        s.records.sort_by_key(super::record_time);
    }
}

#[test]
fn materialized_aggregates_equal_raw_intervals() {
    let roster = "[[mo]]\noid = \"mo1\"\nname = \"A\"\ntz = \"UTC\"\n[[mo]]\noid = \"mo2\"\nname = \"B\"\ntz = \"Asia/Yekaterinburg\"\n";
    // In April: March is materialized as a month, and late data makes days of it dirty.
    let now = chrono::Utc
        .with_ymd_and_hms(2024, 4, 2, 12, 0, 0)
        .unwrap()
        .timestamp_millis();
    let march = crate::availability::Period::parse("2024-03", chrono_tz::Europe::Moscow).unwrap();
    let periods = [
        (at(4, 0, 0, 0), at(17, 0, 0, 0)),
        (at(6, 0, 0, 0), at(7, 0, 0, 0)),
        (at(5, 13, 17, 0), at(11, 2, 0, 0)),
        (at(1, 0, 0, 0), now),
        (march.from_ms, march.to_ms),
    ];
    let mut live = Sim::new();
    live.interval_secs = 60;
    live.start(at(4, 0, 0, 0));
    fleet(&mut live, 7, false);
    live.stop(now);
    let live = live.take();
    // The replay arrives while the collector runs again, at `now`.
    let mut replay = Sim::new();
    replay.interval_secs = 60;
    replay.replay_recv_ms = Some(now);
    replay.start(now);
    fleet(&mut replay, 7, true);
    replay.stop(now);
    let replay = replay.take();

    // Raw only (no maintenance ever).
    let mut raw = T::new("Europe/Moscow", roster);
    raw.store.set_auto_maintain(false);
    raw.write(live.clone());
    let raw_live: Vec<PeriodData> = periods.iter().map(|p| raw.data(p.0, p.1, now)).collect();
    raw.write(replay.clone());
    let raw_all: Vec<PeriodData> = periods.iter().map(|p| raw.data(p.0, p.1, now)).collect();
    assert_ne!(
        raw_live[0].hosts, raw_all[0].hosts,
        "the replay must change history"
    );
    assert_ne!(
        raw_live[0].resources, raw_all[0].resources,
        "the replay must change the resources' figures"
    );
    assert!(raw_all[0].resources.contains_key(&Category::Mis));

    // Maintained while writing, then late data, then maintained again.
    let mut m = T::new("Europe/Moscow", roster);
    m.write(live);
    m.store.maintain_now(now).unwrap();
    for (p, want) in periods.iter().zip(&raw_live) {
        let got = m.data(p.0, p.1, now);
        assert_eq!(got.hosts, want.hosts, "{p:?}");
        assert_eq!(got.mo_reach, want.mo_reach, "{p:?}");
        assert_eq!(got.resources, want.resources, "{p:?}");
    }
    // Every finished day's resources were materialized, none is dirty.
    let count = |t: &T, q: &str| -> i64 { t.store.conn.query_row(q, [], |r| r.get(0)).unwrap() };
    assert!(count(&m, "SELECT count(DISTINCT day) FROM res_day") >= 12);
    assert!(count(&m, "SELECT count(*) FROM res_chan") > 0);
    assert_eq!(count(&m, "SELECT count(*) FROM dirty_res"), 0);
    m.write(replay);
    // The replay changed past days: their resources are read raw until recomputed.
    assert!(count(&m, "SELECT count(*) FROM dirty_res") > 0);
    for (p, want) in periods.iter().zip(&raw_all) {
        let got = m.data(p.0, p.1, now);
        assert_eq!(got.hosts, want.hosts, "dirty {p:?}");
        assert_eq!(got.mo_reach, want.mo_reach, "dirty {p:?}");
        assert_eq!(got.resources, want.resources, "dirty {p:?}");
    }
    m.store.maintain_now(now).unwrap();
    assert_eq!(count(&m, "SELECT count(*) FROM dirty_res"), 0);
    for (p, want) in periods.iter().zip(&raw_all) {
        let got = m.data(p.0, p.1, now);
        assert_eq!(got.hosts, want.hosts, "rematerialized {p:?}");
        assert_eq!(got.mo_reach, want.mo_reach, "rematerialized {p:?}");
        assert_eq!(got.resources, want.resources, "rematerialized {p:?}");
    }
}

#[test]
fn delivery_marks_and_history_survive_reopen() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(3, 0, 0, 0);
    s.birth("mo1", "srv", Role::Server, "", at(4, 0, 0, 0), b);
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(4, 1, 0, 0),
        30 * S,
        b,
        false,
    );
    let mark = DeliveryMark {
        inst: "i1".into(),
        mo: "mo1".into(),
        host: "srv".into(),
        contiguous: 42,
        above: vec![44, 47],
        stored: 45,
        refused: 1,
    };
    t.store
        .write(&Batch {
            records: s.take(),
            delivery: vec![mark.clone()],
        })
        .unwrap();
    drop(std::mem::replace(
        &mut t.store,
        SqliteStore::open(&t.path, &t.cfg, t.roster.clone()).unwrap(),
    ));
    assert_eq!(t.store.load_delivery().unwrap(), vec![mark.clone()]);
    // A later batch's mark of the same instance replaces it (updated in place).
    let later = DeliveryMark {
        contiguous: 47,
        above: Vec::new(),
        stored: 48,
        ..mark
    };
    t.store
        .write(&Batch {
            records: Vec::new(),
            delivery: vec![later.clone()],
        })
        .unwrap();
    assert_eq!(t.store.load_delivery().unwrap(), vec![later]);
    // The reopened store continues the same segment (its tail is loaded from disk).
    s.hbs(
        "mo1",
        "srv",
        at(4, 1, 0, 30),
        at(4, 2, 0, 0),
        30 * S,
        b,
        false,
    );
    t.write(s.take());
    let a = agg(
        &t.data(at(4, 0, 0, 0), at(4, 2, 0, 0), at(4, 2, 0, 0)),
        "srv",
    );
    assert_eq!((a.up_ms, a.down_ms), (2 * H, 0));
    let segs: i64 = t
        .store
        .conn
        .query_row("SELECT count(*) FROM segs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(segs, 1, "one segment, updated in place");
}

#[test]
fn rollups_of_five_minutes() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(3, 0, 0, 0);
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(4, 0, 9, 30),
        30 * S,
        b,
        false,
    );
    t.write(s.take());
    s.replay_recv_ms = Some(at(4, 1, 0, 0));
    s.hb("mo1", "srv", at(4, 0, 4, 59), b, true);
    t.write(s.take());
    let rows: Vec<(i64, i64, i64)> = t
        .store
        .conn
        .prepare("SELECT n, cpu_sum, disk_max FROM rollups ORDER BY bucket")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec![(11, 11 * 1250, 4000), (10, 10 * 1250, 4000)]);
}

/// A bucket written over several batches is updated in place from the writer's totals; the
/// totals equal what one batch writes, a row removed behind the writer's back (retention) is
/// inserted anew, and a reopened store (no totals in memory) merges into the stored row.
#[test]
fn rollups_over_batches_equal_one_batch() {
    fn hbs(s: &mut Sim, cpus: &[f32], from: Ms) -> Vec<Record> {
        let mut out = Vec::new();
        for (i, cpu) in cpus.iter().enumerate() {
            s.hb("mo1", "srv", from + i as Ms * 10 * S, at(3, 0, 0, 0), false);
            for mut r in s.take() {
                if let Record::Msg(a) = &mut r
                    && let dozor_proto::Message::Hb(e) = &mut Arc::make_mut(a).msg
                {
                    e.body.cpu_pct = *cpu;
                }
                out.push(r);
            }
        }
        out
    }
    fn rows(t: &T) -> Vec<(i64, i64, i64, i64, i64)> {
        t.store
            .conn
            .prepare("SELECT bucket, n, cpu_min, cpu_sum, cpu_max FROM rollups ORDER BY bucket")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
    let cpus = [10.0, 5.0, 30.0, 20.0, 7.5];
    let t0 = at(4, 0, 0, 0);
    let bucket = t0 / 300_000;
    let mut one = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(t0);
    let mut recs = s.take();
    recs.extend(hbs(&mut s, &cpus, t0 + S));
    one.write(recs);
    let expect = vec![(bucket, 5, 500, 7250, 3000)];
    assert_eq!(rows(&one), expect);

    let mut many = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(t0);
    many.write(s.take());
    for (i, r) in hbs(&mut s, &cpus, t0 + S).into_iter().enumerate() {
        many.write(vec![r]);
        if i == 2 {
            // Retention took the row (as `DELETE FROM rollups WHERE bucket < …` would).
            many.store.conn.execute("DELETE FROM rollups", []).unwrap();
        }
    }
    assert_eq!(rows(&many), vec![(bucket, 2, 750, 2750, 2000)]);

    // A new writer knows no totals: its first figures merge into the stored row.
    drop(many.store);
    many.store = SqliteStore::open(&many.path, &many.cfg, many.roster.clone()).unwrap();
    let mut s2 = Sim::new();
    many.write(hbs(&mut s2, &[1.0], t0 + 100 * S));
    many.write(hbs(&mut s2, &[2.0], t0 + 110 * S));
    assert_eq!(rows(&many), vec![(bucket, 4, 100, 3050, 2000)]);
}

#[test]
fn retention_removes_old_history() {
    let raw: RawStore =
        toml::from_str("region_tz = \"UTC\"\nretention_days = 2\nrollup_retention_days = 1")
            .unwrap();
    let mut t = T::with_cfg(raw.validate().unwrap(), ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(3, 0, 0, 0);
    for d in [4, 5, 9] {
        s.birth(
            "mo1",
            "srv",
            Role::Server,
            "",
            at(d, 0, 0, 0),
            b + i64::from(d) * H,
        );
        s.hbs(
            "mo1",
            "srv",
            at(d, 0, 0, 0),
            at(d, 1, 0, 0),
            30 * S,
            b + i64::from(d) * H,
            false,
        );
        s.probe("mo1", "srv", at(d, 0, 0, 0), MIS, false);
        s.offline("mo1", "srv", at(d, 1, 0, 1));
    }
    t.write(s.take());
    t.store.maintain_now(at(10, 2, 0, 0)).unwrap();
    let count = |sql: &str| -> i64 { t.store.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    // Day 4's segment and its gap are older than two days; day 5's gap lasts until day 9.
    assert_eq!(count("SELECT count(*) FROM segs"), 2);
    assert_eq!(count("SELECT count(*) FROM probes"), 1);
    assert_eq!(count("SELECT count(*) FROM host_day WHERE day < 19787"), 0);
    assert_eq!(count("SELECT count(*) FROM rollups"), 0);
}

#[test]
fn outbox_holds_influx_lines_and_is_bounded() {
    let raw: RawStore = toml::from_str(
        "region_tz = \"UTC\"\n[influxdb]\nurl = \"http://127.0.0.1:1\"\norg = \"o\"\nbucket = \"b\"",
    )
    .unwrap();
    let mut t = T::with_cfg(raw.validate().unwrap(), ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(3, 0, 0, 0);
    s.birth(
        "mo1",
        "srv",
        Role::Server,
        "Главный корпус",
        at(4, 0, 0, 0),
        b,
    );
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(4, 0, 1, 0),
        30 * S,
        b,
        false,
    );
    s.probe("mo1", "srv", at(4, 0, 1, 0), MIS, false);
    t.write(s.take());
    let body: String = t
        .store
        .conn
        .query_row("SELECT group_concat(body, '') FROM outbox", [], |r| {
            r.get(0)
        })
        .unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("dozor_hb,")).count(),
        3
    );
    assert!(
        lines.contains(&"dozor_probe,category=mis,error=none,host=srv,mo=mo1,target=mis latency_ms=40i,ok=1i,status=200i 1709510460000"),
        "{body}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dozor_mo,mo=mo1,name=Поликлиника\\ 1 ")
                && l.contains("planned_arm=10i")),
        "{body}"
    );
    assert!(body.contains("site=Главный\\ корпус"), "{body}");
    assert!(body.contains(",hostname=srv,"), "{body}");
    // Eight days later the outbox (7-day bound) is emptied and the drop counted.
    let rep = t.store.maintain_now(at(12, 0, 0, 0)).unwrap();
    assert_eq!(rep.outbox_dropped_lines as usize, lines.len());
    assert_eq!(t.store.stats().outbox_dropped_lines as usize, lines.len());
}

#[test]
fn replayed_failures_of_a_short_channel_outage_count() {
    // The МО's uplink is down 10:00–10:10: the agent keeps probing (the МИС is unreachable from
    // the clinic), spools, and replays after live traffic resumed.
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 8, 0, 0));
    let b = at(4, 7, 0, 0);
    s.birth("mo1", "srv", Role::Server, "", at(4, 8, 0, 0), b);
    let step = 30 * S;
    let mut ts = at(4, 8, 0, 0);
    while ts <= at(4, 11, 0, 0) {
        let down = ts > at(4, 10, 0, 0) && ts < at(4, 10, 10, 0);
        if !down {
            s.hb("mo1", "srv", ts, b, false);
            s.probe("mo1", "srv", ts, MIS, false);
        }
        ts += step;
    }
    t.write(s.take());
    s.replay_recv_ms = Some(at(4, 11, 0, 0));
    let mut ts = at(4, 10, 0, 30);
    while ts < at(4, 10, 10, 0) {
        s.hb("mo1", "srv", ts, b, true);
        s.probe("mo1", "srv", ts, MIS_DOWN, true);
        ts += step;
    }
    t.write(s.take());
    let now = at(4, 11, 0, 0);
    let d = t.data(at(4, 8, 0, 0), now, now);
    let r = reach(&d, "mo1", Category::Mis);
    assert_eq!(
        (r.reach_ms, r.unreach_ms),
        (3 * H - 9 * MIN - 30 * S, 9 * MIN + 30 * S)
    );
    let a = agg(&d, "srv");
    assert_eq!((a.up_ms, a.down_ms), (3 * H, 0));
    assert_eq!(t.store.stats().probe_conflicts, 0);
}

#[test]
fn an_outage_over_aggregated_days_makes_them_dirty() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(3, 0, 0, 0);
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(6, 1, 0, 0),
        10 * MIN,
        b,
        false,
    );
    t.write(s.take());
    // Days 4 and 5 are aggregated; an outage discovered over them (clock trouble) dirties both.
    let w = &mut t.store.w;
    w.outage_changed(&t.store.conn, at(4, 12, 0, 0), at(5, 12, 0, 0))
        .unwrap();
    let n: i64 = t
        .store
        .conn
        .query_row("SELECT count(*) FROM dirty_host", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Late data fills history exactly: any arrival order gives the segments of in-order
    /// arrival.
    #[test]
    fn arrival_order_does_not_matter(
        steps in proptest::collection::vec((0usize..4, proptest::bool::weighted(0.15)), 5..60),
        seed in 0u64..1000,
    ) {
        let gaps = [30 * S, 60 * S, 80 * S, 10 * MIN];
        let mut s = Sim::new();
        let mut t = at(4, 8, 0, 0);
        let mut boot = t - H;
        for (g, reboot) in &steps {
            let gap = gaps[*g];
            if *reboot {
                boot = t + gap / 2;
            }
            t += gap;
            s.hb("mo1", "srv", t, boot, false);
            if *reboot {
                s.birth("mo1", "srv", Role::Server, "", t, boot);
            }
        }
        let recs = s.take();
        let mut shuffled = recs.clone();
        // Deterministic shuffle.
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let segs = |recs: Vec<Record>| {
            let mut t = T::new("UTC", ROSTER_UTC);
            t.store.set_auto_maintain(false);
            let mut all = vec![Record::CollectorStart { at_ms: at(4, 0, 0, 0) }];
            all.extend(recs);
            t.write(all);
            let v: Vec<(Ms, Ms, i64, Option<Ms>)> = t
                .store
                .conn
                .prepare("SELECT start_ms, end_ms, cause, next_ms FROM segs ORDER BY start_ms")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            v
        };
        proptest::prop_assert_eq!(segs(shuffled), segs(recs));
    }
}

#[test]
fn changed_working_hours_recompute_aggregated_days() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(4, 7, 0, 0);
    s.birth("mo1", "pc", Role::Workstation, "", at(4, 8, 0, 0), b);
    s.hbs(
        "mo1",
        "pc",
        at(4, 8, 0, 0),
        at(4, 19, 0, 0),
        30 * S,
        b,
        false,
    );
    s.lost("mo1", "pc", at(4, 19, 1, 35));
    s.stop(at(6, 0, 0, 0));
    t.write(s.take());
    let now = at(6, 0, 0, 0);
    t.store.maintain_now(now).unwrap();
    let day = |t: &T| agg(&t.data(at(4, 0, 0, 0), at(5, 0, 0, 0), now), "pc");
    let before = day(&t);
    assert_eq!((before.up_w_ms, before.down_w_ms), (11 * H, H));
    // The МО now works until 18:00: the silence at 19:00 is outside working hours.
    let roster = format!("{ROSTER_UTC}work_end = \"18:00\"\n");
    t.roster = Arc::new(Roster::from_toml(&roster, "roster").unwrap());
    drop(std::mem::replace(
        &mut t.store,
        SqliteStore::open(&t.path, &t.cfg, t.roster.clone()).unwrap(),
    ));
    let raw = day(&t);
    assert_eq!((raw.up_w_ms, raw.down_w_ms), (10 * H, 0));
    let rep = t.store.maintain_now(now).unwrap();
    assert_eq!(rep.stale_host_days, 1, "{rep:?}");
    assert_eq!(day(&t), raw);
    // A reader with the old roster recomputes with the old hours.
    let old = Roster::from_toml(ROSTER_UTC, "old").unwrap();
    let d = Reader::open(&t.path, &t.cfg)
        .unwrap()
        .period_data(&old, at(4, 0, 0, 0), at(5, 0, 0, 0), now)
        .unwrap();
    assert_eq!(agg(&d, "pc"), before);
}

/// A day's resources materialized soon after it ended (hosts probing every 30 min, the last
/// probe at 23:30, maintenance at 00:35) read as the same day read raw days later.
#[test]
fn resource_day_materialized_soon_after_its_last_probe() {
    let roster = "[[mo]]\noid = \"mo1\"\nname = \"A\"\ntz = \"UTC\"\n[[mo]]\noid = \"mo2\"\nname = \"B\"\ntz = \"UTC\"\n";
    let mut s = Sim::new();
    s.interval_secs = 1800;
    s.start(at(4, 0, 0, 0));
    for (mo, host, ok) in [("mo1", "a", true), ("mo2", "b", false)] {
        s.birth(mo, host, Role::Server, "", at(4, 0, 0, 0), at(3, 23, 0, 0));
        let mut ts = at(4, 0, 0, 0);
        // Up past midnight; the probes stop at 23:30.
        while ts <= at(5, 0, 30, 0) {
            s.hb(mo, host, ts, at(3, 23, 0, 0), false);
            if ts <= at(4, 23, 30, 0) {
                s.probe(mo, host, ts, &[("mis", Category::Mis, ok)], false);
            }
            ts += 30 * MIN;
        }
    }
    s.stop(at(5, 0, 40, 0));
    let recs = s.take();
    let later = at(9, 12, 0, 0);
    let day = (at(4, 0, 0, 0), at(5, 0, 0, 0));
    let mut raw = T::new("UTC", roster);
    raw.store.set_auto_maintain(false);
    raw.write(recs.clone());
    let want = raw.data(day.0, day.1, later).resources;
    assert!(want.contains_key(&Category::Mis));
    let mut m = T::new("UTC", roster);
    m.store.set_auto_maintain(false);
    m.write(recs);
    // 00:35: the day is due, 65 min after the last probe (within 2.5 × 30 min).
    assert!(m.store.maintain_now(at(5, 0, 35, 0)).unwrap().days > 0);
    let n: i64 = m
        .store
        .conn
        .query_row(
            "SELECT count(*) FROM res_day WHERE cat = ?1",
            [i64::from(crate::availability::cat_index(Category::Mis))],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(m.data(day.0, day.1, later).resources, want);
}

/// A store of schema 2 (no resources' days) migrated: every aggregated day is marked for
/// the resources, read raw meanwhile, and materialized by maintenance with the same figures.
#[test]
fn schema_2_store_gets_resource_days() {
    let roster = "[[mo]]\noid = \"mo1\"\nname = \"A\"\ntz = \"UTC\"\n[[mo]]\noid = \"mo2\"\nname = \"B\"\ntz = \"UTC\"\n";
    let now = at(20, 12, 0, 0);
    let mut s = Sim::new();
    s.interval_secs = 60;
    s.start(at(4, 0, 0, 0));
    fleet(&mut s, 11, false);
    s.stop(now);
    let mut t = T::new("UTC", roster);
    t.write(s.take());
    t.store.maintain_now(now).unwrap();
    let period = (at(4, 0, 0, 0), at(17, 0, 0, 0));
    let want = t.data(period.0, period.1, now);
    assert!(want.resources.contains_key(&Category::Mis));
    drop(std::mem::replace(
        &mut t.store,
        SqliteStore::open(&t.path, &t.cfg, t.roster.clone()).unwrap(),
    ));
    {
        let c = rusqlite::Connection::open(&t.path).unwrap();
        c.execute_batch("DROP TABLE res_day; DROP TABLE res_chan; DROP TABLE dirty_res")
            .unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
    }
    drop(std::mem::replace(
        &mut t.store,
        SqliteStore::open(&t.path, &t.cfg, t.roster.clone()).unwrap(),
    ));
    let count = |t: &T, q: &str| -> i64 { t.store.conn.query_row(q, [], |r| r.get(0)).unwrap() };
    assert!(count(&t, "SELECT count(*) FROM dirty_res") >= 12);
    assert_eq!(count(&t, "SELECT count(*) FROM res_day"), 0);
    assert_eq!(
        t.data(period.0, period.1, now).resources,
        want.resources,
        "raw"
    );
    let rep = t.store.maintain_now(now).unwrap();
    assert!(rep.dirty_res_days >= 12, "{rep:?}");
    assert_eq!(count(&t, "SELECT count(*) FROM dirty_res"), 0);
    assert!(count(&t, "SELECT count(*) FROM res_day") > 0);
    assert_eq!(
        t.data(period.0, period.1, now).resources,
        want.resources,
        "migrated"
    );
}

/// Issue 13: off in working hours and usage days through the store, raw and materialized, and
/// a store of schema 1 migrated (columns added, every day recomputed).
#[test]
fn off_in_working_hours_and_usage_days_through_the_store() {
    let mut t = T::new("UTC", ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    // Monday: on 08:00, МИС reached, switched off at 10:00 (offline 10:00:04), on again 14:00
    // until 18:00, switched off (offline 18:00:02). Tuesday: on 09:00–12:00, МИС failing,
    // switched off (offline 12:00:03). Saturday: on 10:00–11:00, МИС reached (not a working
    // day of the default calendar).
    // (day, on at, off at, МИС reachable).
    type Day = (u32, (u32, u32), (u32, u32), bool);
    let days: [Day; 4] = [
        (4, (8, 0), (10, 0), true),
        (4, (14, 0), (18, 0), true),
        (5, (9, 0), (12, 0), false),
        (9, (10, 0), (11, 0), true),
    ];
    for (d, (h0, m0), (h1, m1), ok) in days {
        let b = at(d, h0, m0, 0) - 5 * MIN;
        s.birth("mo1", "pc", Role::Workstation, "", at(d, h0, m0, 0), b);
        let mut ts = at(d, h0, m0, 0);
        while ts <= at(d, h1, m1, 0) {
            s.hb("mo1", "pc", ts, b, false);
            s.probe("mo1", "pc", ts, &[("mis", Category::Mis, ok)], false);
            ts += 30 * S;
        }
        s.offline("mo1", "pc", at(d, h1, m1, 0) + 2 * S);
    }
    s.stop(at(11, 0, 0, 0));
    t.write(s.take());
    let now = at(11, 0, 0, 0);
    let check = |t: &T, what: &str| {
        let d = t.data(at(4, 0, 0, 0), at(11, 0, 0, 0), now);
        let a = agg(&d, "pc");
        // Off from the last message before each shutdown to the end of that working day:
        // Monday 10:00–14:00 and 18:00–20:00, Tuesday 12:00–20:00; nothing on Saturday (not a
        // working day) and nothing in the mornings before the PC was switched on.
        assert_eq!(a.off_w_ms, 4 * H + 2 * H + 8 * H, "{what}");
        assert_eq!(a.off_w_days, 2, "{what}");
        assert_eq!(a.down_w_ms, 0, "{what}");
        // Usage: the МИС was reached on Monday only among the 5 working days (Saturday does
        // not count).
        let r = reach(&d, "mo1", Category::Mis);
        assert_eq!((r.ws_days, r.any_days), (1, 1), "{what}");
        // Monday alone.
        let d = t.data(at(4, 0, 0, 0), at(5, 0, 0, 0), now);
        assert_eq!(agg(&d, "pc").off_w_ms, 6 * H, "{what}");
        assert_eq!(reach(&d, "mo1", Category::Mis).ws_days, 1, "{what}");
    };
    check(&t, "raw");
    t.store.maintain_now(now).unwrap();
    check(&t, "materialized");

    // A store of schema 1: the new columns dropped, version 1.
    drop(std::mem::replace(
        &mut t.store,
        SqliteStore::open(&t.path, &t.cfg, t.roster.clone()).unwrap(),
    ));
    {
        let c = rusqlite::Connection::open(&t.path).unwrap();
        for (table, col) in [
            ("host_day", "off_w"),
            ("host_day", "off_d"),
            ("host_month", "off_w"),
            ("host_month", "off_d"),
            ("mo_day", "ws_d"),
            ("mo_day", "any_d"),
            ("mo_month", "ws_d"),
            ("mo_month", "any_d"),
        ] {
            c.execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {col}"))
                .unwrap();
        }
        c.pragma_update(None, "user_version", 1).unwrap();
    }
    assert!(
        Reader::open(&t.path, &t.cfg).is_err(),
        "a reader refuses schema 1"
    );
    drop(std::mem::replace(
        &mut t.store,
        SqliteStore::open(&t.path, &t.cfg, t.roster.clone()).unwrap(),
    ));
    // Before maintenance: host-days read raw (the МО is stale); after it: recomputed.
    let rep = t.store.maintain_now(now).unwrap();
    assert!(rep.stale_host_days > 0, "{rep:?}");
    check(&t, "migrated");
}

/// Planned works (config and API) take the down time inside their windows out of `down`,
/// into `planned`, to the second; up time inside them stays up; materialized days read the
/// same as the raw intervals.
#[test]
fn planned_works_move_down_time_to_planned() {
    use crate::availability::planned::RawPlannedWork;
    let once = |mo: &str, host: Option<&str>, from: Ms, to: Ms| RawPlannedWork {
        title: "Работы".into(),
        mo: Some(mo.into()),
        host: host.map(str::to_string),
        from: Some(chrono::Utc.timestamp_millis_opt(from).unwrap().to_rfc3339()),
        to: Some(chrono::Utc.timestamp_millis_opt(to).unwrap().to_rfc3339()),
        ..RawPlannedWork::default()
    };
    let raw: RawStore = toml::from_str("region_tz = \"UTC\"").unwrap();
    let mut cfg = raw.validate().unwrap();
    // Config: the server's channel work 12:10–12:20, and a window while it was up.
    cfg.planned_works = vec![
        once("mo1", Some("srv"), at(4, 12, 10, 0), at(4, 12, 20, 0))
            .validate(0)
            .unwrap(),
        once("mo1", None, at(4, 2, 0, 0), at(4, 3, 0, 0))
            .validate(1)
            .unwrap(),
    ];
    let mut t = T::with_cfg(cfg, ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let boot = at(3, 0, 0, 0);
    s.birth("mo1", "srv", Role::Server, "", at(4, 0, 0, 0), boot);
    s.hbs(
        "mo1",
        "srv",
        at(4, 0, 0, 0),
        at(4, 12, 0, 0),
        30 * S,
        boot,
        false,
    );
    s.lost("mo1", "srv", at(4, 12, 1, 35));
    s.hbs(
        "mo1",
        "srv",
        at(4, 12, 30, 0),
        at(5, 1, 0, 0),
        30 * S,
        boot,
        false,
    );
    t.write(s.take());
    let day = (at(4, 0, 0, 0), at(5, 0, 0, 0));
    let now = at(5, 1, 0, 0);
    let d = t.data(day.0, day.1, now);
    let a = agg(&d, "srv");
    let pl = d.planned[&("mo1".to_string(), "srv".to_string())];
    assert_eq!(pl.planned_ms, 10 * MIN);
    // Down from the last heartbeat (12:00) to 12:30, less the planned 10 minutes.
    assert_eq!(a.down_ms, 30 * MIN - 10 * MIN);
    assert_eq!(a.up_ms + a.down_ms + pl.planned_ms, 24 * H);
    // An API work over the rest of the outage: all of it planned.
    {
        let conn = crate::store::planned::open_rw(&t.path).unwrap();
        crate::store::planned::insert(
            &conn,
            &once("mo1", Some("srv"), at(4, 11, 0, 0), at(4, 12, 15, 0)),
            "admin",
            0,
        )
        .unwrap()
        .unwrap();
        crate::store::planned::insert(
            &conn,
            &once("mo1", Some("srv"), at(4, 12, 15, 0), at(4, 13, 0, 0)),
            "admin",
            0,
        )
        .unwrap()
        .unwrap();
    }
    let raw_read = t.data(day.0, day.1, now);
    let a = agg(&raw_read, "srv");
    assert_eq!(a.down_ms, 0);
    assert_eq!(
        raw_read.planned[&("mo1".to_string(), "srv".to_string())].planned_ms,
        30 * MIN
    );
    // The same from the materialized day.
    t.store.maintain_now(at(5, 1, 0, 0)).unwrap();
    let m = t.data(day.0, day.1, now);
    assert_eq!(m.hosts, raw_read.hosts);
    assert_eq!(m.planned, raw_read.planned);
    // The availability report: planned is its own figure, out of the availability.
    let rep =
        crate::availability::availability(&m, &t.roster, crate::availability::AvailabilityBy::Host);
    let crate::availability::Availability::Host { rows, .. } = rep else {
        unreachable!()
    };
    assert_eq!(rows[0].avail.planned_ms, 30 * MIN);
    assert_eq!(rows[0].avail.availability_pct, Some(100.0));
}

/// A planned work of the МИС (`target = "mis"`) takes the МО's unreachable time inside it out
/// of `unreach`, into `mo_planned`, to the second; the target report shows it apart.
#[test]
fn target_planned_work_moves_unreachable_time() {
    use crate::availability::planned::RawPlannedWork;
    let raw: RawStore = toml::from_str("region_tz = \"UTC\"").unwrap();
    let mut cfg = raw.validate().unwrap();
    // Weekly on Mondays (2024-03-04) 09:20–09:40 UTC, inside the 09:00–10:00 outage.
    cfg.planned_works = vec![
        RawPlannedWork {
            title: "Обновление МИС".into(),
            target: Some("mis".into()),
            days: vec!["mon".into()],
            start: Some("09:20".into()),
            end: Some("09:40".into()),
            tz: Some("UTC".into()),
            ..RawPlannedWork::default()
        }
        .validate(0)
        .unwrap(),
    ];
    let mut t = T::with_cfg(cfg, ROSTER_UTC);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(4, 7, 0, 0);
    s.birth("mo1", "a", Role::Workstation, "", at(4, 8, 0, 0), b);
    for m in 0..=240 {
        let ts = at(4, 8, 0, 0) + m * MIN;
        s.hb("mo1", "a", ts, b, false);
        let down = (at(4, 9, 0, 0)..at(4, 10, 0, 0)).contains(&ts);
        s.probe("mo1", "a", ts, if down { MIS_DOWN } else { MIS }, false);
    }
    s.offline("mo1", "a", at(4, 12, 0, 5));
    t.write(s.take());
    let now = at(4, 13, 0, 0);
    let d = t.data(at(4, 0, 0, 0), now, now);
    let r = reach(&d, "mo1", Category::Mis);
    assert_eq!((r.reach_ms, r.unreach_ms), (3 * H, 40 * MIN));
    assert_eq!(d.mo_planned[&("mo1".to_string(), Category::Mis)], 20 * MIN);
    let rep = crate::availability::availability(
        &d,
        &t.roster,
        crate::availability::AvailabilityBy::Target,
    );
    let crate::availability::Availability::Target { rows, .. } = rep else {
        unreachable!()
    };
    assert_eq!(rows[0].planned_ms, 20 * MIN);
    assert_eq!(rows[0].mos[0].planned_ms, 20 * MIN);
    assert_eq!(rows[0].mos[0].unreach_ms, 40 * MIN);
}

/// A planned work of the МИС also takes the resource's own down time inside it out of
/// `resource_down_ms` (two МО failing at once: the МИС itself was down), into
/// `resource_planned_ms`; the indicator row's availability leaves it out.
#[test]
fn target_planned_work_moves_resource_down_time() {
    use crate::availability::planned::RawPlannedWork;
    const ROSTER_TWO: &str = r#"
[[mo]]
oid = "mo1"
name = "Поликлиника 1"
tz = "UTC"
planned_arm = 1

[[mo]]
oid = "mo2"
name = "Поликлиника 2"
tz = "UTC"
planned_arm = 1
"#;
    let raw: RawStore = toml::from_str("region_tz = \"UTC\"").unwrap();
    let mut cfg = raw.validate().unwrap();
    cfg.planned_works = vec![
        RawPlannedWork {
            title: "Обновление МИС".into(),
            target: Some("mis".into()),
            days: vec!["mon".into()],
            start: Some("09:20".into()),
            end: Some("09:40".into()),
            tz: Some("UTC".into()),
            ..RawPlannedWork::default()
        }
        .validate(0)
        .unwrap(),
    ];
    let mut t = T::with_cfg(cfg, ROSTER_TWO);
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    let b = at(4, 7, 0, 0);
    for mo in ["mo1", "mo2"] {
        s.birth(mo, "a", Role::Workstation, "", at(4, 8, 0, 0), b);
    }
    for m in 0..=240 {
        let ts = at(4, 8, 0, 0) + m * MIN;
        let down = (at(4, 9, 0, 0)..at(4, 10, 0, 0)).contains(&ts);
        for mo in ["mo1", "mo2"] {
            s.hb(mo, "a", ts, b, false);
            s.probe(mo, "a", ts, if down { MIS_DOWN } else { MIS }, false);
        }
    }
    for mo in ["mo1", "mo2"] {
        s.offline(mo, "a", at(4, 12, 0, 5));
    }
    t.write(s.take());
    let now = at(4, 13, 0, 0);
    let d = t.data(at(4, 0, 0, 0), now, now);
    let r = &d.resources[&Category::Mis];
    assert_eq!(
        (r.resource_down_ms, r.resource_planned_ms),
        (40 * MIN, 20 * MIN),
        "{r:?}"
    );
    let period = crate::availability::Period::parse("2024-03-04", chrono_tz::UTC).unwrap();
    let table = crate::availability::indicators(&d, &t.roster, &t.cfg.indicators, &period);
    let row = table
        .resources
        .iter()
        .find(|x| x.category == Category::Mis)
        .unwrap();
    assert_eq!(row.resource_planned_ms, 20 * MIN);
    assert_eq!(
        row.resource_availability_pct,
        crate::availability::pct(
            r.resource_up_ms as f64,
            (r.resource_up_ms + 40 * MIN) as f64
        )
    );
}

/// Every table's rows as text, sorted (the journal itself excluded).
fn dump(path: &Path) -> Vec<(String, Vec<String>)> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'journal' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            // When retention last ran depends on when maintenance did.
            let q = if t == "meta" {
                "SELECT * FROM meta WHERE key != 'retention_ms'".to_string()
            } else {
                format!("SELECT * FROM {t}")
            };
            let mut st = c.prepare(&q).unwrap();
            let n = st.column_count();
            let mut rows: Vec<String> = st
                .query_map([], |r| {
                    Ok((0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join("|"))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.sort();
            (t, rows)
        })
        .collect()
}

/// Twelve days of a fleet, then a replayed backlog (placed through the database), cut into
/// batches of an odd size, each with the delivery marks of three agent instances.
fn journal_batches() -> Vec<Batch> {
    let mut s = Sim::new();
    s.start(at(4, 0, 0, 0));
    fleet(&mut s, 7, false);
    fleet(&mut s, 7, true);
    s.stop(at(16, 12, 0, 0));
    let recs = s.take();
    recs.chunks(37)
        .enumerate()
        .map(|(k, chunk)| Batch {
            records: chunk.to_vec(),
            delivery: (0..=(k % 3))
                .map(|i| DeliveryMark {
                    inst: format!("i{i}").into(),
                    mo: "mo1".into(),
                    host: format!("h{i}").into(),
                    contiguous: k as u64,
                    above: if k % 2 == 0 {
                        vec![k as u64 + 2]
                    } else {
                        Vec::new()
                    },
                    stored: k as u64 * 3 + i as u64,
                    refused: i as u64,
                })
                .collect(),
        })
        .collect()
}

/// Asserts equal tables, naming the first that differs (not printing whole tables).
/// Runs both stores' maintenance at the same time and compares their tables and delivery marks.
fn same_after_maintenance(direct: &mut T, t: &mut T) {
    let now = at(17, 0, 0, 0);
    direct.store.maintain_now(now).unwrap();
    t.store.maintain_now(now).unwrap();
    same_tables(&direct.path, &t.path);
    assert_eq!(
        t.store.load_delivery().unwrap(),
        direct.store.load_delivery().unwrap()
    );
}

fn same_tables(a: &Path, b: &Path) {
    for ((ta, ra), (tb, rb)) in dump(a).into_iter().zip(dump(b)) {
        assert_eq!(ta, tb);
        let diff: Vec<_> = ra.iter().filter(|r| !rb.contains(r)).take(3).collect();
        assert!(
            ra == rb,
            "table {ta}: {} vs {} rows; first rows only on the left: {diff:?}",
            ra.len(),
            rb.len()
        );
    }
}

const JOURNAL_ROSTER: &str = "[[mo]]\noid = \"mo1\"\nname = \"A\"\ntz = \"UTC\"\n[[mo]]\noid = \"mo2\"\nname = \"B\"\ntz = \"UTC\"\n";

/// The journal's coalesced apply leaves exactly the tables the direct apply of each batch in
/// its own transaction leaves (segments, markers, reachability, rollups, delivery marks, runs,
/// dirty days and, after maintenance, the aggregates).
#[test]
fn journal_apply_equals_direct_apply() {
    let batches = journal_batches();
    let now = at(17, 0, 0, 0);
    // Direct: each batch applied to the tables at once, as before the journal.
    let mut direct = T::new("UTC", JOURNAL_ROSTER);
    direct.store.set_auto_maintain(false);
    for b in &batches {
        direct.store.write(b).unwrap();
        direct.store.settle(true).unwrap();
    }
    // Journal: every batch committed as a row, applied 50 batches at a time.
    let raw: RawStore = toml::from_str("region_tz = \"UTC\"\njournal_apply_ms = 60000").unwrap();
    let mut journal = T::with_cfg(raw.validate().unwrap(), JOURNAL_ROSTER);
    journal.store.set_auto_maintain(false);
    for b in &batches {
        journal.store.write(b).unwrap();
    }
    journal.store.settle(true).unwrap();
    assert!(batches.len() > 200, "{}", batches.len());
    assert_eq!(journal.store.stats().batches, batches.len() as u64);
    assert!(
        journal.store.stats().applies * 40 < batches.len() as u64,
        "{:?}",
        journal.store.stats()
    );
    let a = dump(&direct.path);
    assert!(a.iter().any(|(t, r)| t == "rollups" && r.len() > 100));
    assert!(a.iter().any(|(t, r)| t == "delivery" && r.len() == 3));
    same_tables(&direct.path, &journal.path);
    direct.store.maintain_now(now).unwrap();
    journal.store.maintain_now(now).unwrap();
    same_tables(&direct.path, &journal.path);
    assert_eq!(
        direct.store.load_delivery().unwrap(),
        journal.store.load_delivery().unwrap()
    );
}

/// A crash (kill -9, power cut) after batches were committed to the journal and before they
/// were applied: the committed batches are in the journal only; the next open applies them
/// before anything reads, and the tables equal those of a direct apply.
/// A store that applies its journal only when told (`settle(true)`), within a test's run.
fn lazy_journal() -> StoreConfig {
    let raw: RawStore = toml::from_str(
        "region_tz = \"UTC\"\njournal_apply_ms = 60000\njournal_apply_batches = 10000",
    )
    .unwrap();
    raw.validate().unwrap()
}

#[test]
fn crash_between_journal_commit_and_apply_loses_nothing() {
    let batches = journal_batches();
    let half = batches.len() / 2;
    // The reference: each batch applied at once, and a restart after the first half (a
    // restart forgets the writer's learnt state, e.g. probe periods, in either scheme).
    let mut direct = T::new("UTC", JOURNAL_ROSTER);
    direct.store.set_auto_maintain(false);
    for (i, b) in batches.iter().enumerate() {
        if i == half {
            drop(std::mem::replace(
                &mut direct.store,
                SqliteStore::open(&direct.path, &direct.cfg, direct.roster.clone()).unwrap(),
            ));
            direct.store.set_auto_maintain(false);
        }
        direct.store.write(b).unwrap();
        direct.store.settle(true).unwrap();
    }
    let cfg = lazy_journal();
    let mut t = T::with_cfg(cfg.clone(), JOURNAL_ROSTER);
    t.store.set_auto_maintain(false);
    // Half applied, half only in the journal when the process dies.
    for b in &batches[..half] {
        t.store.write(b).unwrap();
    }
    t.store.settle(true).unwrap();
    for b in &batches[half..] {
        t.store.write(b).unwrap();
    }
    let count = |q: &str| -> i64 {
        rusqlite::Connection::open(&t.path)
            .unwrap()
            .query_row(q, [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        count("SELECT count(*) FROM journal"),
        (batches.len() - half) as i64
    );
    let stale = count("SELECT coalesce(sum(n), 0) FROM rollups");
    // The process dies: no drop, no apply (the connection is leaked, as a killed process's).
    let dead = std::mem::replace(
        &mut t.store,
        SqliteStore::open(&t.path, &cfg, t.roster.clone()).unwrap(),
    );
    std::mem::forget(dead);
    assert_eq!(count("SELECT count(*) FROM journal"), 0);
    assert!(count("SELECT coalesce(sum(n), 0) FROM rollups") > stale);
    // (The start-up apply ran maintenance, the reference did not yet.)
    same_after_maintenance(&mut direct, &mut t);
    // A damaged row is an error naming it, not a guess.
    {
        let c = rusqlite::Connection::open(&t.path).unwrap();
        c.execute("INSERT INTO journal(id, body) VALUES (77, x'01ff')", [])
            .unwrap();
    }
    let e = SqliteStore::open(&t.path, &cfg, t.roster.clone()).unwrap_err();
    assert!(e.to_string().contains("journal row 77"), "{e}");
}

/// An apply whose BEGIN fails (another connection holds the write lock past the busy
/// timeout) keeps its batches pending: the next apply writes them, and deletes no journal row
/// it did not apply (found in review: the batches were taken before BEGIN and lost).
#[test]
fn an_apply_that_cannot_begin_keeps_its_batches() {
    let batches = journal_batches();
    let mut direct = T::new("UTC", JOURNAL_ROSTER);
    direct.store.set_auto_maintain(false);
    for b in &batches {
        direct.store.write(b).unwrap();
        direct.store.settle(true).unwrap();
    }
    let mut t = T::with_cfg(lazy_journal(), JOURNAL_ROSTER);
    t.store.set_auto_maintain(false);
    let half = batches.len() / 2;
    for b in &batches[..half] {
        t.store.write(b).unwrap();
    }
    {
        let other = rusqlite::Connection::open(&t.path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        t.store
            .conn
            .busy_timeout(std::time::Duration::from_millis(50))
            .unwrap();
        assert!(t.store.settle(true).is_err(), "the write lock is held");
        other.execute_batch("ROLLBACK").unwrap();
    }
    for b in &batches[half..] {
        t.store.write(b).unwrap();
    }
    t.store.settle(true).unwrap();
    same_after_maintenance(&mut direct, &mut t);
}

/// A transaction left open (a failed COMMIT elsewhere) must not swallow a batch's journal
/// row: the batch is acknowledged once `write` returns, so the row must be committed by then.
#[test]
fn a_journal_row_never_joins_a_transaction_left_open() {
    let batches = journal_batches();
    let mut t = T::with_cfg(lazy_journal(), JOURNAL_ROSTER);
    t.store.set_auto_maintain(false);
    t.store.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    t.store.write(&batches[0]).unwrap();
    let other = rusqlite::Connection::open(&t.path).unwrap();
    let rows: i64 = other
        .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        rows, 1,
        "the journal row is committed, visible to another connection"
    );
}
