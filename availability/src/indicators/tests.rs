use super::*;
use crate::usage::UsageRule;
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
    // The period has 2 working days (Thu 1970-01-01 and Fri, 08:00–20:00 Moscow time).
    let r = |reach: i64, unreach: i64, ws_days: i64, any_days: i64| ReachAgg {
        reach_ms: reach * H,
        unreach_ms: unreach * H,
        ws_days,
        any_days,
    };
    d.mo_reach
        .insert(("mo1".into(), Category::Mis), r(90, 10, 2, 2));
    d.mo_reach
        .insert(("mo2".into(), Category::Mis), r(50, 0, 2, 2));
    d.mo_reach
        .insert(("mo1".into(), Category::Lis), r(10, 0, 2, 2));
    d.mo_reach
        .insert(("mo9".into(), Category::Mis), r(0, 100, 2, 2));
    // The МИС itself: reached by somebody 99 h, down for everyone 1 h; mo1's channel failed
    // 9 h while mo2 reached it.
    let ch = |ok: i64, fail: i64| crate::ChannelAgg {
        channel_ok_ms: ok * H,
        channel_fail_ms: fail * H,
    };
    d.resources.insert(
        Category::Mis,
        crate::ResourceAgg {
            resource_up_ms: 99 * H,
            resource_down_ms: H,
            resource_unknown_ms: 0,
            resource_planned_ms: 0,
            channels: [
                ("mo1".to_string(), ch(90, 9)),
                ("mo2".to_string(), ch(50, 0)),
                ("mo9".to_string(), ch(0, 99)),
            ]
            .into(),
        },
    );
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
    // The МИС's own availability, 99 of 100 h, not the reachability from the МО (140 of
    // 150 h, channels mixed in); two МО's channels failed at times.
    let m = find(&t, "availability_mis");
    assert_eq!(m.name, "Работоспособность информационного ресурса «МИС»");
    assert_eq!(m.fact, Some(99.0));
    assert_eq!(m.pct_of_plan, Some(100.0));
    assert_eq!(
        m.basis,
        "работал 99,0 ч, не работал 1,0 ч, не определено 0,0 ч; наблюдали 2 МО; у 1 МО канал к \
         ресурсу работал с перебоями (лист «Каналы МО»)"
    );
    let mis = t
        .resources
        .iter()
        .find(|r| r.category == Category::Mis)
        .unwrap();
    assert_eq!(
        mis.reachability_from_mos_pct
            .map(|f| (f * 1000.0).round() / 1000.0),
        Some(93.333)
    );
    let mo1 = mis.mos.iter().find(|m| m.mo == "mo1").unwrap();
    assert_eq!((mo1.channel_ok_ms, mo1.channel_fail_ms), (90 * H, 9 * H));
    assert_eq!(
        mo1.channel_quality_pct.map(|f| (f * 10.0).round() / 10.0),
        Some(90.9)
    );
    assert_eq!(mo1.reachability_pct, Some(90.0));
    assert!(t.notes.iter().any(|n| n.contains("1 МО")), "{:?}", t.notes);
}

/// Issue 13 item 5: an МО uses the МИС when its workstations reached it on at least 80 % of its
/// working days; subsystems by the same rule, workstations only unless configured.
#[test]
fn usage_rules_by_working_days() {
    let period = Period::parse("2024-Q1", chrono_tz::Europe::Moscow).unwrap();
    let mut d = data();
    // mo2's workstations reached the МИС on one of its 2 working days: 50 % < 80 %.
    d.mo_reach
        .get_mut(&("mo2".to_string(), Category::Mis))
        .unwrap()
        .ws_days = 1;
    // mo2's ЛИС: reached by its server only, on both days.
    d.mo_reach.insert(
        ("mo2".into(), Category::Lis),
        ReachAgg {
            reach_ms: H,
            any_days: 2,
            ..ReachAgg::default()
        },
    );
    let t = indicators(&d, &roster(), &IndicatorsConfig::default(), &period);
    let r = find(&t, "mo_mis");
    assert_eq!(r.fact, Some(50.0));
    assert_eq!(
        r.basis,
        "1 из 2 МО: АРМ обращались к МИС не менее чем в 80 % рабочих дней"
    );
    let mo2 = t.mos.iter().find(|m| m.mo == "mo2").unwrap();
    assert_eq!(
        (mo2.uses_mis, mo2.mis_days, mo2.working_days),
        (false, 1, 2)
    );
    // Workstations only: mo2 is not connected to the ЛИС.
    assert_eq!(find(&t, "mo_subsystem_lis").fact, Some(50.0));
    assert_eq!(mo2.subsystems_missing, vec!["ЛИС"]);
    // A share of 50 % accepts mo2's МИС; servers counted accept its ЛИС.
    let cfg = IndicatorsConfig {
        mis_use: UsageRule {
            min_working_days_pct: 50.0,
            servers: false,
        },
        subsystem_use: UsageRule {
            min_working_days_pct: 80.0,
            servers: true,
        },
        ..IndicatorsConfig::default()
    };
    let t = indicators(&d, &roster(), &cfg, &period);
    assert_eq!(find(&t, "mo_mis").fact, Some(100.0));
    assert_eq!(find(&t, "mo_subsystem_lis").fact, Some(100.0));
    assert!(
        find(&t, "mo_subsystems")
            .basis
            .starts_with("2 из 2 МО: АРМ и серверы обращались"),
        "{}",
        find(&t, "mo_subsystems").basis
    );
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
    assert_eq!(mis.reach_from_mos_ms, 140 * H);
    assert_eq!(mis.resource_availability_pct, Some(99.0));
    let mo9 = mis.mos.iter().find(|m| m.mo == "mo9").unwrap();
    assert_eq!(mo9.channel_quality_pct, Some(0.0));
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

/// mo1 is 2 АРМ short of its plan of 4; mo2 (plan 2) has 4 active: the region meets its plan
/// of 6 (6 active) while mo1 is short, and the reports say so.
fn surplus_hides_shortage() -> PeriodData {
    let mut d = data();
    for id in ["e", "f", "g"] {
        d.hosts
            .push((host("mo2", id, Role::Workstation, ""), agg(true, 0, H, 0)));
    }
    d
}

#[test]
fn shortfall_per_mo_and_site_is_not_hidden_by_a_surplus() {
    let c = counts(&surplus_hides_shortage(), &roster());
    let mo1 = c.mos.iter().find(|m| m.mo == "mo1").unwrap();
    let mo2 = c.mos.iter().find(|m| m.mo == "mo2").unwrap();
    assert_eq!(
        (mo1.counts.planned_arm, mo1.counts.workstations_active),
        (4, 2)
    );
    assert_eq!(mo1.counts.arm_shortfall, 2);
    assert_eq!(mo1.counts.arm_pct_of_plan(), Some(50.0));
    // Sites: Главный корпус 2 of 3, ФАП 0 of 1 (its workstation was not active); the server
    // named no site (no plan there).
    let short: Vec<(&str, u64)> = mo1
        .sites
        .iter()
        .map(|s| (s.site.as_str(), s.counts.arm_shortfall))
        .collect();
    assert_eq!(short, [("Главный корпус", 1), ("ФАП", 1), ("", 0)]);
    assert_eq!(
        (mo2.counts.workstations_active, mo2.counts.arm_shortfall),
        (4, 0)
    );
    assert_eq!(mo2.counts.arm_pct_of_plan(), Some(200.0));
    // The region: 6 active of 6 planned, yet 2 АРМ short (mo1); mo9 is outside the roster.
    assert_eq!((c.total.planned_arm, c.total.workstations_active), (6, 6));
    assert_eq!(c.total.arm_shortfall, 2);

    let period = Period::parse("2024-Q1", chrono_tz::Europe::Moscow).unwrap();
    let t = indicators(
        &surplus_hides_shortage(),
        &roster(),
        &IndicatorsConfig::default(),
        &period,
    );
    let arm = find(&t, "arm");
    assert_eq!(
        (arm.plan, arm.fact, arm.pct_of_plan),
        (Some(6.0), Some(6.0), Some(100.0))
    );
    assert_eq!(
        arm.basis,
        "6 АРМ передавали данные; ниже плана 1 МО, не хватает 2 АРМ"
    );
    let by: Vec<(&str, Option<u64>, u64, u64)> = t
        .mos
        .iter()
        .map(|m| (m.mo.as_str(), m.planned_arm, m.arm_active, m.arm_shortfall))
        .collect();
    assert_eq!(by, [("mo1", Some(4), 2, 2), ("mo2", Some(2), 4, 0)]);
}

#[test]
fn indicator_breakdown_per_mo() {
    let period = Period::parse("2024-Q1", chrono_tz::Europe::Moscow).unwrap();
    let t = indicators(&data(), &roster(), &IndicatorsConfig::default(), &period);
    assert_eq!(t.mos.len(), 2, "the roster's МО only");
    let mo1 = &t.mos[0];
    assert_eq!(mo1.mo_name, "Поликлиника 1");
    assert_eq!(
        (mo1.planned_arm, mo1.arm_active, mo1.arm_shortfall),
        (Some(4), 2, 2)
    );
    assert_eq!(mo1.arm_pct_of_plan, Some(50.0));
    assert!(mo1.uses_mis);
    assert_eq!((mo1.sites_mis, mo1.sites_total), (1, 2));
    // ЛИС is the only subsystem probed: mo1 reached it, mo2 did not.
    assert!(mo1.subsystems_missing.is_empty());
    assert_eq!(mo1.servers_availability_pct, Some(99.0));
    let mo2 = &t.mos[1];
    assert_eq!((mo2.sites_mis, mo2.sites_total), (1, 1));
    assert_eq!(mo2.subsystems_missing, ["ЛИС"]);
    assert_eq!(mo2.servers_availability_pct, Some(97.0));
    // Rows sum to the regional facts.
    assert_eq!(t.mos.iter().map(|m| m.arm_active).sum::<u64>(), 3);
    assert_eq!(
        t.mos.iter().map(|m| m.sites_mis).sum::<u64>(),
        2,
        "as sites_mis: 2 из 3"
    );
}

#[test]
fn percent_of_plan_is_capped_for_percent_rows_only() {
    let check = |unit: Unit, plan: f64, fact: f64, pct: f64, capped: bool| {
        let r = row("x", "x", unit, Some(plan), Some(fact), String::new());
        assert_eq!(
            (r.pct_of_plan, r.capped),
            (Some(pct), capped),
            "{unit:?} {plan} {fact}"
        );
    };
    // Availability 99.99 % against a plan of 99 %: the plan is met, not "101 %".
    check(Unit::Percent, 99.0, 99.99, 100.0, true);
    check(Unit::Percent, 99.0, 99.0, 100.0, false);
    check(Unit::Percent, 76.0, 38.0, 50.0, false);
    // Counts keep their surplus: 7,200 АРМ of 7,155 planned.
    check(Unit::Count, 7155.0, 7200.0, 7200.0 / 7155.0 * 100.0, false);
    // The table says which rows were capped.
    let mut d = data();
    d.hosts
        .retain(|(h, _)| h.role != Some(Role::Server) || h.mo == "mo1");
    let period = Period::parse("2024-Q1", chrono_tz::Europe::Moscow).unwrap();
    let cfg = IndicatorsConfig {
        plan_availability_pct: 95.0,
        ..IndicatorsConfig::default()
    };
    let t = indicators(&d, &roster(), &cfg, &period);
    let s = find(&t, "availability_servers");
    assert_eq!(
        (s.fact, s.pct_of_plan, s.capped),
        (Some(99.0), Some(100.0), true)
    );
    assert!(
        t.notes
            .iter()
            .any(|n| n.contains("план выполнен") && n.contains("серверного оборудования")),
        "{:?}",
        t.notes
    );
}
