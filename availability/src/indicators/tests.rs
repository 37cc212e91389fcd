use super::*;
use crate::{HostAgg, HostInfo, PeriodData, ReachAgg, cat_bit};

const H: i64 = 3_600_000;

fn roster() -> Roster {
    Roster::from_toml(
        r#"
[[mo]]
oid = "mo1"
name = "Поликлиника 1"
[[mo.site]]
name = "Главный корпус"
planned_arm = 3
[[mo.site]]
name = "ФАП"
planned_arm = 1

[[mo]]
oid = "mo2"
name = "Больница 2"
planned_arm = 2
"#,
        "t",
    )
    .unwrap()
}

fn host(mo: &str, id: &str, role: Role, site: &str) -> HostInfo {
    HostInfo {
        mo: mo.into(),
        host: id.into(),
        role: Some(role),
        site: site.into(),
        hostname: id.into(),
        first_ms: 0,
    }
}

fn agg(active: bool, reached: u16, up: i64, down: i64) -> HostAgg {
    HostAgg {
        up_ms: up,
        down_ms: down,
        up_w_ms: up,
        down_w_ms: down,
        active,
        reached,
        probed: reached | cat_bit(Category::Lis),
        ..HostAgg::default()
    }
}

fn data() -> PeriodData {
    let mis = cat_bit(Category::Mis);
    let lis = cat_bit(Category::Lis);
    let mut d = PeriodData {
        from: 0,
        to: 100 * H,
        ..PeriodData::default()
    };
    d.hosts = vec![
        (
            host("mo1", "a", Role::Workstation, "Главный корпус"),
            agg(true, mis | lis, 10 * H, 0),
        ),
        (
            host("mo1", "b", Role::Workstation, "главный корпус "),
            agg(true, 0, 5 * H, 5 * H),
        ),
        (
            host("mo1", "c", Role::Workstation, "ФАП"),
            agg(false, 0, 0, 0),
        ),
        (
            host("mo1", "s", Role::Server, ""),
            agg(true, mis, 99 * H, H),
        ),
        (
            host("mo2", "d", Role::Workstation, ""),
            agg(true, mis, 8 * H, 0),
        ),
        (
            host("mo2", "s", Role::Server, ""),
            agg(true, 0, 97 * H, 3 * H),
        ),
        (
            host("mo9", "x", Role::Workstation, ""),
            agg(true, mis, H, 0),
        ),
    ];
    let r = |reach: i64, unreach: i64| ReachAgg {
        reach_ms: reach * H,
        unreach_ms: unreach * H,
    };
    d.mo_reach.insert(("mo1".into(), Category::Mis), r(90, 10));
    d.mo_reach.insert(("mo2".into(), Category::Mis), r(50, 0));
    d.mo_reach.insert(("mo1".into(), Category::Lis), r(10, 0));
    d.mo_reach.insert(("mo9".into(), Category::Mis), r(0, 100));
    d
}

fn find<'a>(t: &'a IndicatorTable, id: &str) -> &'a IndicatorRow {
    t.rows
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no row {id}: {:#?}", t.rows))
}

#[test]
fn indicator_table() {
    let period = Period::parse("2024-Q1", chrono_tz::Europe::Moscow).unwrap();
    let t = indicators(&data(), &roster(), &IndicatorsConfig::default(), &period);
    let arm = find(&t, "arm");
    assert_eq!((arm.plan, arm.fact), (Some(6.0), Some(3.0)));
    assert_eq!(arm.pct_of_plan, Some(50.0));
    // Both roster МО have a workstation reaching the МИС; mo9 is outside the roster.
    let r = find(&t, "mo_mis");
    assert_eq!(r.fact, Some(100.0));
    // Subsystems probed: ЛИС; only mo1 reached it.
    assert_eq!(find(&t, "mo_subsystems").fact, Some(50.0));
    assert_eq!(find(&t, "mo_subsystem_lis").fact, Some(50.0));
    // Sites: mo1 has two (Главный корпус reached, ФАП not), mo2 counts as one (reached).
    let s = find(&t, "sites_mis");
    assert_eq!(s.fact.map(|f| (f * 1000.0).round() / 1000.0), Some(66.667));
    assert_eq!(s.basis, "2 из 3 подразделений");
    // Servers: 196 h up of 200 h observed.
    assert_eq!(find(&t, "availability_servers").fact, Some(98.0));
    // МИС from the roster's МО: 140 of 150 h.
    let m = find(&t, "availability_mis");
    assert_eq!(m.fact.map(|f| (f * 1000.0).round() / 1000.0), Some(93.333));
    assert_eq!(m.pct_of_plan.map(|f| (f * 10.0).round() / 10.0), Some(94.3));
    assert!(t.notes.iter().any(|n| n.contains("1 МО")), "{:?}", t.notes);
}

#[test]
fn configured_subsystems() {
    let cfg = IndicatorsConfig {
        subsystems: vec![Category::Lis, Category::Pacs],
        ..IndicatorsConfig::default()
    };
    let period = Period::parse("2024-Q1", chrono_tz::Europe::Moscow).unwrap();
    let t = indicators(&data(), &roster(), &cfg, &period);
    assert_eq!(find(&t, "mo_subsystems").fact, Some(0.0));
    assert_eq!(find(&t, "mo_subsystem_pacs").fact, Some(0.0));
}

#[test]
fn counts_per_mo_and_site() {
    let c = counts(&data(), &roster());
    let mo1 = c.mos.iter().find(|m| m.mo == "mo1").unwrap();
    assert_eq!(mo1.counts.planned_arm, 4);
    assert_eq!(mo1.counts.workstations_registered, 3);
    assert_eq!(mo1.counts.workstations_active, 2);
    assert_eq!(mo1.counts.workstations_reaching_mis, 1);
    assert_eq!(mo1.counts.servers_active, 1);
    let main = &mo1.sites[0];
    assert_eq!(
        (main.site.as_str(), main.counts.workstations_active),
        ("Главный корпус", 2)
    );
    let fap = &mo1.sites[1];
    assert_eq!(
        (fap.counts.planned_arm, fap.counts.workstations_registered),
        (1, 1)
    );
    assert_eq!(c.total.planned_arm, 6);
    assert_eq!(c.total.workstations_active, 3);
    assert!(c.mos.iter().any(|m| m.mo == "mo9" && !m.in_roster));
}

#[test]
fn availability_views() {
    let Availability::Mo { rows, .. } = availability(&data(), &roster(), AvailabilityBy::Mo) else {
        panic!()
    };
    let mo1 = rows.iter().find(|r| r.mo == "mo1").unwrap();
    assert_eq!(mo1.workstations.up_ms, 15 * H);
    assert_eq!(mo1.workstations.availability_pct, Some(75.0));
    assert_eq!(mo1.servers.availability_pct, Some(99.0));
    let Availability::Target { rows, .. } =
        availability(&data(), &roster(), AvailabilityBy::Target)
    else {
        panic!()
    };
    let mis = rows.iter().find(|r| r.category == Category::Mis).unwrap();
    assert_eq!(mis.mo_observing, 3);
    assert_eq!(mis.reach_ms, 140 * H);
    let Availability::Host { rows, .. } = availability(&data(), &roster(), AvailabilityBy::Host)
    else {
        panic!()
    };
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[3].basis, "around_the_clock");
}

#[test]
fn empty_roster_uses_observed_mo() {
    let period = Period::parse("2024-03", chrono_tz::Europe::Moscow).unwrap();
    let t = indicators(
        &data(),
        &Roster::default(),
        &IndicatorsConfig::default(),
        &period,
    );
    assert_eq!(find(&t, "arm").plan, None);
    assert_eq!(find(&t, "arm").fact, Some(4.0));
    assert_eq!(find(&t, "mo_mis").fact, Some(100.0));
    assert!(!t.notes.is_empty());
}
