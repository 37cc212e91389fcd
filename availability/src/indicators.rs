//! The report tables built from a period's aggregates: availability by host / МО / target,
//! counts per МО and site, and the regional indicator table.

use super::usage::{UsageRule, workcal_of, working_days};
use super::{HostAgg, HostInfo, PeriodData, cat_bit, pct};
use crate::roster::{Mo, Roster};
use dozor_proto::{Category, Role};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Period;

/// Grouping of the availability report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AvailabilityBy {
    Host,
    Mo,
    Target,
}

impl AvailabilityBy {
    pub fn parse(s: &str) -> Option<AvailabilityBy> {
        match s {
            "host" => Some(AvailabilityBy::Host),
            "mo" => Some(AvailabilityBy::Mo),
            "target" => Some(AvailabilityBy::Target),
            _ => None,
        }
    }
}

/// Up / down / unknown sums and the availability `up / (up + down)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Avail {
    pub up_ms: i64,
    pub down_ms: i64,
    pub unknown_ms: i64,
    /// Down inside planned works (out of `down_ms` and of the availability).
    pub planned_ms: i64,
    /// `None` when nothing was observed (up + down = 0).
    pub availability_pct: Option<f64>,
}

impl Avail {
    fn add_planned(&mut self, p: Option<&super::timeline::PlannedAgg>, server: bool) {
        if let Some(p) = p {
            self.planned_ms += if server { p.planned_ms } else { p.planned_w_ms };
        }
    }

    fn add(&mut self, (up, down, unknown): (i64, i64, i64)) {
        self.up_ms += up;
        self.down_ms += down;
        self.unknown_ms += unknown;
        self.availability_pct = pct(self.up_ms as f64, (self.up_ms + self.down_ms) as f64);
    }
}

/// Availability of one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostAvail {
    pub mo: String,
    pub host: String,
    pub hostname: String,
    pub role: Option<Role>,
    pub site: String,
    /// `around_the_clock` (servers) or `working_hours` (workstations, unknown role).
    pub basis: &'static str,
    #[serde(flatten)]
    pub avail: Avail,
    /// Switched off in working hours, ms, and on how many working days («выключен в рабочее
    /// время», [`super::offhours`]); `None` for servers (a server switched off is down).
    pub off_w_ms: Option<i64>,
    pub off_days: Option<i64>,
}

/// Availability of one МО's workstations and servers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoAvail {
    pub mo: String,
    pub mo_name: String,
    pub in_roster: bool,
    pub workstations: Avail,
    /// The МО's workstations switched off in working hours: Σ ms, and Σ host-days.
    pub workstations_off_w_ms: i64,
    pub workstations_off_days: i64,
    pub servers: Avail,
}

/// A target category seen from one МО: how often the МО reached it (the mix of the resource
/// and the МО's channel), and the quality of its channel (judged only while the resource was up).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoReach {
    pub mo: String,
    pub mo_name: String,
    pub reach_ms: i64,
    pub unreach_ms: i64,
    /// Unreachable inside planned works of the category (out of `unreach_ms`).
    pub planned_ms: i64,
    /// `reach / (reach + unreach)`: what the МО's users saw.
    pub reachability_pct: Option<f64>,
    /// The МО reached the resource while somebody did.
    pub channel_ok_ms: i64,
    /// The МО failed to reach the resource while somebody else reached it.
    pub channel_fail_ms: i64,
    /// `channel_ok / (channel_ok + channel_fail)`: the МО's channel to the resource.
    pub channel_quality_pct: Option<f64>,
}

/// A target category over the period: the resource's own availability, the regional
/// reachability from the МО (resource and channels mixed), and each МО's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetAvail {
    pub category: Category,
    pub title: &'static str,
    /// Somebody reached the resource.
    pub resource_up_ms: i64,
    /// Nobody reached it while a working channel (or two МО at once) saw it failing.
    pub resource_down_ms: i64,
    /// Observed, but only by one МО that reached nothing else.
    pub resource_unknown_ms: i64,
    /// Down inside planned works of the category: out of `resource_down_ms` and of the
    /// availability.
    pub resource_planned_ms: i64,
    /// The resource's own availability `up / (up + down)`: «работоспособность ресурса».
    pub resource_availability_pct: Option<f64>,
    /// Σ over the МО of the time each reached it.
    pub reach_from_mos_ms: i64,
    /// Σ over the МО of the time each observed it failing.
    pub unreach_from_mos_ms: i64,
    /// `reach / (reach + unreach)` over the МО: resource and channels mixed.
    pub reachability_from_mos_pct: Option<f64>,
    /// Σ over the МО of the time unreachable inside planned works of the category (out of
    /// `unreach_from_mos_ms`).
    pub planned_ms: i64,
    /// МО that observed the target at some time in the period.
    pub mo_observing: usize,
    pub mos: Vec<MoReach>,
}

/// The availability report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Availability {
    Host {
        from_ms: i64,
        to_ms: i64,
        rows: Vec<HostAvail>,
    },
    Mo {
        from_ms: i64,
        to_ms: i64,
        rows: Vec<MoAvail>,
    },
    Target {
        from_ms: i64,
        to_ms: i64,
        rows: Vec<TargetAvail>,
    },
}

fn mo_name(roster: &Roster, oid: &str) -> (String, bool) {
    match roster.get(oid) {
        Some(m) => (m.name.clone(), true),
        None => (oid.to_string(), false),
    }
}

fn is_server(h: &HostInfo) -> bool {
    h.role == Some(Role::Server)
}

/// Availability over the period grouped `by`.
pub fn availability(data: &PeriodData, roster: &Roster, by: AvailabilityBy) -> Availability {
    let (from_ms, to_ms) = (data.from, data.to);
    match by {
        AvailabilityBy::Host => {
            let rows = data
                .hosts
                .iter()
                .map(|(h, a)| {
                    let mut avail = Avail::default();
                    avail.add(a.for_role(is_server(h)));
                    avail.add_planned(data.planned_of(h), is_server(h));
                    HostAvail {
                        mo: h.mo.clone(),
                        host: h.host.clone(),
                        hostname: h.hostname.clone(),
                        role: h.role,
                        site: h.site.clone(),
                        basis: if is_server(h) {
                            "around_the_clock"
                        } else {
                            "working_hours"
                        },
                        avail,
                        off_w_ms: (!is_server(h)).then_some(a.off_w_ms),
                        off_days: (!is_server(h)).then_some(a.off_w_days),
                    }
                })
                .collect();
            Availability::Host {
                from_ms,
                to_ms,
                rows,
            }
        }
        AvailabilityBy::Mo => {
            let mut by_mo: BTreeMap<&str, (Avail, Avail, i64, i64)> = BTreeMap::new();
            for m in &roster.mos {
                by_mo.entry(&m.oid).or_default();
            }
            for (h, a) in &data.hosts {
                let e = by_mo.entry(&h.mo).or_default();
                if is_server(h) {
                    e.1.add(a.for_role(true));
                    e.1.add_planned(data.planned_of(h), true);
                } else if h.role == Some(Role::Workstation) {
                    e.0.add(a.for_role(false));
                    e.2 += a.off_w_ms;
                    e.3 += a.off_w_days;
                    e.0.add_planned(data.planned_of(h), false);
                }
            }
            let rows = by_mo
                .into_iter()
                .map(|(mo, (w, s, off, off_days))| {
                    let (mo_name, in_roster) = mo_name(roster, mo);
                    MoAvail {
                        mo: mo.to_string(),
                        mo_name,
                        in_roster,
                        workstations: w,
                        workstations_off_w_ms: off,
                        workstations_off_days: off_days,
                        servers: s,
                    }
                })
                .collect();
            Availability::Mo {
                from_ms,
                to_ms,
                rows,
            }
        }
        AvailabilityBy::Target => Availability::Target {
            from_ms,
            to_ms,
            rows: targets(data, roster, |_| true),
        },
    }
}

/// Per category: the resource's own figures (from every МО's vantage point), and the
/// reachability sums and channels over the МО accepted by `keep`.
fn targets(data: &PeriodData, roster: &Roster, keep: impl Fn(&str) -> bool) -> Vec<TargetAvail> {
    let mut out: BTreeMap<Category, TargetAvail> = BTreeMap::new();
    let blank = |cat: Category| TargetAvail {
        category: cat,
        title: cat.title_ru(),
        resource_up_ms: 0,
        resource_down_ms: 0,
        resource_unknown_ms: 0,
        resource_planned_ms: 0,
        resource_availability_pct: None,
        reach_from_mos_ms: 0,
        unreach_from_mos_ms: 0,
        reachability_from_mos_pct: None,
        planned_ms: 0,
        mo_observing: 0,
        mos: Vec::new(),
    };
    for ((mo, cat), r) in &data.mo_reach {
        if r.is_zero() || !keep(mo) {
            continue;
        }
        let t = out.entry(*cat).or_insert_with(|| blank(*cat));
        let planned_ms = data
            .mo_planned
            .get(&(mo.clone(), *cat))
            .copied()
            .unwrap_or(0);
        t.reach_from_mos_ms += r.reach_ms;
        t.unreach_from_mos_ms += r.unreach_ms;
        t.planned_ms += planned_ms;
        t.mo_observing += 1;
        let (mo_name, _) = mo_name(roster, mo);
        let ch = data
            .resources
            .get(cat)
            .and_then(|x| x.channels.get(mo))
            .copied()
            .unwrap_or_default();
        t.mos.push(MoReach {
            mo: mo.clone(),
            mo_name,
            reach_ms: r.reach_ms,
            unreach_ms: r.unreach_ms,
            planned_ms,
            reachability_pct: pct(r.reach_ms as f64, r.observed_ms() as f64),
            channel_ok_ms: ch.channel_ok_ms,
            channel_fail_ms: ch.channel_fail_ms,
            channel_quality_pct: ch.quality_pct(),
        });
    }
    for (cat, r) in &data.resources {
        // A resource only МО outside `keep` observed is not the region's.
        let Some(t) = out.get_mut(cat) else { continue };
        t.resource_up_ms = r.resource_up_ms;
        t.resource_down_ms = r.resource_down_ms;
        t.resource_unknown_ms = r.resource_unknown_ms;
        t.resource_planned_ms = r.resource_planned_ms;
        t.resource_availability_pct = r.availability_pct();
    }
    out.into_values()
        .map(|mut t| {
            t.reachability_from_mos_pct = pct(
                t.reach_from_mos_ms as f64,
                (t.reach_from_mos_ms + t.unreach_from_mos_ms) as f64,
            );
            t
        })
        .collect()
}

/// Counts of one site (or of an МО as a whole).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CountRow {
    pub planned_arm: u64,
    /// Workstations known by the end of the period.
    pub workstations_registered: u64,
    /// Workstations that sent at least one message in the period.
    pub workstations_active: u64,
    /// Workstations with at least one successful МИС probe in the period.
    pub workstations_reaching_mis: u64,
    pub servers_registered: u64,
    pub servers_active: u64,
    /// Hosts whose role is not known yet (no birth message stored).
    pub unknown_role: u64,
    /// Planned АРМ without an active workstation: `planned − active` when positive. The region's
    /// total is the sum over its МО, so a surplus in one МО never hides a shortage in another.
    pub arm_shortfall: u64,
}

impl CountRow {
    fn count(&mut self, h: &HostInfo, a: &HostAgg, to: i64) {
        let registered = h.first_ms < to;
        match h.role {
            Some(Role::Workstation) => {
                self.workstations_registered += u64::from(registered);
                self.workstations_active += u64::from(a.active);
                self.workstations_reaching_mis +=
                    u64::from(a.active && a.reached & cat_bit(Category::Mis) != 0);
            }
            Some(Role::Server) => {
                self.servers_registered += u64::from(registered);
                self.servers_active += u64::from(a.active);
            }
            None => self.unknown_role += u64::from(registered),
        }
    }

    fn add(&mut self, o: &CountRow) {
        self.planned_arm += o.planned_arm;
        self.workstations_registered += o.workstations_registered;
        self.workstations_active += o.workstations_active;
        self.workstations_reaching_mis += o.workstations_reaching_mis;
        self.servers_registered += o.servers_registered;
        self.servers_active += o.servers_active;
        self.unknown_role += o.unknown_role;
        self.arm_shortfall += o.arm_shortfall;
    }

    /// Sets the shortfall of this row from its own plan and fact.
    fn settle(&mut self) {
        self.arm_shortfall = self.planned_arm.saturating_sub(self.workstations_active);
    }

    /// Active workstations as a share of the plan, `None` without a plan. Not capped: a
    /// surplus shows as more than 100.
    pub fn arm_pct_of_plan(&self) -> Option<f64> {
        pct(self.workstations_active as f64, self.planned_arm as f64)
    }
}

/// Counts of one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteCounts {
    pub site: String,
    /// False for a site named by hosts but missing from the roster.
    pub in_roster: bool,
    #[serde(flatten)]
    pub counts: CountRow,
}

/// Counts of one МО and its sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoCounts {
    pub mo: String,
    pub mo_name: String,
    pub in_roster: bool,
    #[serde(flatten)]
    pub counts: CountRow,
    pub sites: Vec<SiteCounts>,
}

/// The counts report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Region totals over the roster's МО.
    pub total: CountRow,
    pub mos: Vec<MoCounts>,
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Counts per МО and site over the period.
pub fn counts(data: &PeriodData, roster: &Roster) -> Counts {
    let mut mos: BTreeMap<String, MoCounts> = BTreeMap::new();
    for m in &roster.mos {
        let sites = m
            .sites
            .iter()
            .map(|s| SiteCounts {
                site: s.name.clone(),
                in_roster: true,
                counts: CountRow {
                    planned_arm: u64::from(s.planned_arm),
                    ..CountRow::default()
                },
            })
            .collect();
        mos.insert(
            m.oid.clone(),
            MoCounts {
                mo: m.oid.clone(),
                mo_name: m.name.clone(),
                in_roster: true,
                counts: CountRow {
                    planned_arm: u64::from(m.planned_arm),
                    ..CountRow::default()
                },
                sites,
            },
        );
    }
    for (h, a) in &data.hosts {
        let m = mos.entry(h.mo.clone()).or_insert_with(|| MoCounts {
            mo: h.mo.clone(),
            mo_name: h.mo.clone(),
            in_roster: false,
            counts: CountRow::default(),
            sites: Vec::new(),
        });
        m.counts.count(h, a, data.to);
        let key = norm(&h.site);
        let site = match m.sites.iter_mut().position(|s| norm(&s.site) == key) {
            Some(i) => &mut m.sites[i],
            None => {
                m.sites.push(SiteCounts {
                    site: h.site.clone(),
                    in_roster: false,
                    counts: CountRow::default(),
                });
                let last = m.sites.len() - 1;
                &mut m.sites[last]
            }
        };
        site.counts.count(h, a, data.to);
    }
    for m in mos.values_mut() {
        m.counts.settle();
        for s in &mut m.sites {
            s.counts.settle();
        }
    }
    let mut total = CountRow::default();
    for m in mos
        .values()
        .filter(|m| m.in_roster || roster.mos.is_empty())
    {
        total.add(&m.counts);
    }
    Counts {
        from_ms: data.from,
        to_ms: data.to,
        total,
        mos: mos.into_values().collect(),
    }
}

/// Unit of an indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Items (ед.).
    Count,
    /// Percent.
    Percent,
}

impl Unit {
    pub fn ru(self) -> &'static str {
        match self {
            Unit::Count => "ед.",
            Unit::Percent => "%",
        }
    }
}

/// One row of the indicator table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorRow {
    /// Stable machine id: `arm`, `mo_mis`, `mo_subsystems`, `mo_subsystem_lis`, `sites_mis`,
    /// `availability_servers`, `availability_mis`, …
    pub id: String,
    /// Wording of the regional reports.
    pub name: String,
    pub unit: Unit,
    pub plan: Option<f64>,
    /// `None` when nothing could be measured (e.g. no server reported).
    pub fact: Option<f64>,
    /// `fact / plan × 100`; for rows in percent (shares, availability) at most 100 — a fact
    /// above its plan is a plan met (`capped` says so), as the regional forms report it.
    pub pct_of_plan: Option<f64>,
    /// True when `pct_of_plan` was capped at 100.
    pub capped: bool,
    /// What the fact is made of: «95 из 100 МО».
    pub basis: String,
}

/// The regional indicator table of a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorTable {
    pub period: Period,
    /// Actual end of the data (the period's end, or now for a period in progress).
    pub computed_to_ms: i64,
    pub rows: Vec<IndicatorRow>,
    /// The same facts per МО (the roster's, or those that sent data without a roster).
    pub mos: Vec<MoIndicators>,
    /// Each central resource: its own availability (the `availability_<cat>` rows) and each
    /// МО's reachability and channel quality to it.
    pub resources: Vec<TargetAvail>,
    /// Remarks on the data (МО outside the roster, …), Russian.
    pub notes: Vec<String>,
}

/// One МО's part of the indicator table: what the region acts on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoIndicators {
    pub mo: String,
    pub mo_name: String,
    /// Planned АРМ; `None` without a roster.
    pub planned_arm: Option<u64>,
    /// Workstations active in the period.
    pub arm_active: u64,
    /// `planned − active` when positive.
    pub arm_shortfall: u64,
    /// `active / planned × 100`, not capped (a surplus shows).
    pub arm_pct_of_plan: Option<f64>,
    /// The МО uses the МИС: its workstations reached it on at least `mis_use` of its working
    /// days ([`super::usage`]).
    pub uses_mis: bool,
    /// Working days of the МО in the period (its calendar).
    pub working_days: i64,
    /// Of them, days on which its workstations reached the МИС.
    pub mis_days: i64,
    /// Sites with an active workstation that reached the МИС, of `sites_total`.
    pub sites_mis: u64,
    pub sites_total: u64,
    /// Required subsystems the МО is not connected to by the `subsystem_use` rule (titles).
    pub subsystems_missing: Vec<&'static str>,
    /// Availability of the МО's servers, around the clock.
    pub servers_availability_pct: Option<f64>,
}

fn row(
    id: impl Into<String>,
    name: impl Into<String>,
    unit: Unit,
    plan: Option<f64>,
    fact: Option<f64>,
    basis: String,
) -> IndicatorRow {
    let raw = match (plan, fact) {
        (Some(p), Some(f)) if p > 0.0 => Some(f / p * 100.0),
        _ => None,
    };
    // A share or an availability cannot be "over-fulfilled" in any useful sense (101 % of a
    // 99 % availability plan says only that the plan was met); counts keep their surplus.
    let capped = unit == Unit::Percent && raw.is_some_and(|p| p > 100.0);
    IndicatorRow {
        id: id.into(),
        name: name.into(),
        unit,
        plan,
        fact,
        pct_of_plan: if capped { Some(100.0) } else { raw },
        capped,
        basis,
    }
}

/// Per-МО facts for the shares.
/// Settings of the indicator table (validated `[store.indicators]`): which subsystems count and
/// the plan of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorsConfig {
    /// Required subsystems; empty = those probed in the period.
    pub subsystems: Vec<Category>,
    pub plan_mo_mis_pct: f64,
    pub plan_mo_subsystems_pct: f64,
    pub plan_availability_pct: f64,
    pub plan_sites_pct: f64,
    /// When an МО "uses the МИС" (`mo_mis`, per-МО `uses_mis`).
    pub mis_use: UsageRule,
    /// When an МО "is connected to a subsystem" (`mo_subsystems`, `mo_subsystem_<cat>`).
    pub subsystem_use: UsageRule,
}

impl Default for IndicatorsConfig {
    /// The plans of `deploy/collector.toml` (a store config test checks they agree).
    fn default() -> Self {
        IndicatorsConfig {
            subsystems: Vec::new(),
            plan_mo_mis_pct: 100.0,
            plan_mo_subsystems_pct: 100.0,
            plan_availability_pct: 99.0,
            plan_sites_pct: 100.0,
            mis_use: UsageRule::default(),
            subsystem_use: UsageRule::default(),
        }
    }
}

#[derive(Default)]
struct MoFacts {
    /// A workstation was active and reached the МИС.
    ws_mis: bool,
    /// Normalized sites with an active workstation reaching the МИС.
    sites_mis: BTreeSet<String>,
    /// Active workstations.
    arm_active: u64,
    servers: Avail,
}

/// The regional indicator table.
pub fn indicators(
    data: &PeriodData,
    roster: &Roster,
    cfg: &IndicatorsConfig,
    period: &Period,
) -> IndicatorTable {
    let mut notes = Vec::new();
    let use_all = roster.mos.is_empty();
    if use_all {
        notes.push(
            "Реестр МО не загружен: доли рассчитаны по МО, приславшим данные, план АРМ не задан."
                .to_string(),
        );
    }
    let in_scope = |mo: &str| use_all || roster.contains(mo);
    let mut facts: HashMap<&str, MoFacts> = HashMap::new();
    let mut outside: BTreeSet<&str> = BTreeSet::new();
    let mut arm_active = 0u64;
    let mut servers = Avail::default();
    let mut probed_any: u16 = 0;
    for (h, a) in &data.hosts {
        if !in_scope(&h.mo) {
            outside.insert(&h.mo);
            continue;
        }
        let f = facts.entry(&h.mo).or_default();
        probed_any |= a.probed;
        match h.role {
            Some(Role::Workstation) => {
                arm_active += u64::from(a.active);
                f.arm_active += u64::from(a.active);
                if a.active && a.reached & cat_bit(Category::Mis) != 0 {
                    f.ws_mis = true;
                    f.sites_mis.insert(norm(&h.site));
                }
            }
            Some(Role::Server) => {
                servers.add(a.for_role(true));
                f.servers.add(a.for_role(true));
            }
            None => {}
        }
    }
    if !outside.is_empty() {
        notes.push(format!(
            "Данные {} МО, отсутствующих в реестре, в показатели не включены.",
            outside.len()
        ));
    }
    let mo_list: Vec<&str> = if use_all {
        let mut v: Vec<&str> = facts.keys().copied().collect();
        v.sort_unstable();
        v
    } else {
        roster.mos.iter().map(|m| m.oid.as_str()).collect()
    };
    let n_mo = mo_list.len() as f64;
    let mut rows = Vec::new();
    // Usage by the rules of `cfg.mis_use` / `cfg.subsystem_use`: days reached of working days.
    let working: HashMap<&str, i64> = mo_list
        .iter()
        .map(|m| (*m, working_days(&workcal_of(roster, m), data.from, data.to)))
        .collect();
    let days = |oid: &str, c: Category, rule: &UsageRule| -> i64 {
        data.mo_reach
            .get(&(oid.to_string(), c))
            .map_or(0, |r| rule.days(r.ws_days, r.any_days))
    };
    let uses = |oid: &str, c: Category, rule: &UsageRule| -> bool {
        rule.met(days(oid, c, rule), working.get(oid).copied().unwrap_or(0))
    };
    let uses_mis = |oid: &str| uses(oid, Category::Mis, &cfg.mis_use);
    let connected = |oid: &str, c: Category| uses(oid, c, &cfg.subsystem_use);

    // 1. АРМ: the regional total the form asks for; the basis names the МО short of plan,
    // which a surplus elsewhere would hide.
    let plan_arm = (!use_all).then(|| roster.planned_arm() as f64);
    let (mut short_mo, mut short_arm) = (0usize, 0u64);
    for oid in &mo_list {
        let planned = roster.get(oid).map_or(0, |m| u64::from(m.planned_arm));
        let active = facts.get(oid).map_or(0, |f| f.arm_active);
        if planned > active {
            short_mo += 1;
            short_arm += planned - active;
        }
    }
    let mut basis = format!("{arm_active} АРМ передавали данные");
    if short_mo > 0 {
        basis.push_str(&format!(
            "; ниже плана {short_mo} МО, не хватает {short_arm} АРМ"
        ));
    }
    rows.push(row(
        "arm",
        "Организовано автоматизированных рабочих мест медицинских работников (АРМ, передававших данные в периоде)",
        Unit::Count,
        plan_arm,
        Some(arm_active as f64),
        basis,
    ));

    // 2. МО using the МИС.
    let mo_mis = mo_list.iter().filter(|m| uses_mis(m)).count();
    rows.push(row(
        "mo_mis",
        "Доля МО, использующих медицинские информационные системы, обеспечивающие информационное взаимодействие с ЕГИСЗ",
        Unit::Percent,
        Some(cfg.plan_mo_mis_pct),
        pct(mo_mis as f64, n_mo),
        format!(
            "{mo_mis} из {} МО: {} обращались к МИС не менее чем в {} % рабочих дней",
            mo_list.len(),
            who(&cfg.mis_use),
            pct_text(cfg.mis_use.min_working_days_pct)
        ),
    ));

    // 3. МО connected to the centralized subsystems.
    let subsystems: Vec<Category> = if cfg.subsystems.is_empty() {
        Category::ALL
            .into_iter()
            .filter(|c| *c != Category::Mis && probed_any & cat_bit(*c) != 0)
            .collect()
    } else {
        cfg.subsystems.clone()
    };
    if subsystems.is_empty() {
        notes.push(
            "Централизованные подсистемы не заданы и не проверялись агентами в периоде."
                .to_string(),
        );
    } else {
        let all = mo_list
            .iter()
            .filter(|m| subsystems.iter().all(|c| connected(m, *c)))
            .count();
        let names: Vec<&str> = subsystems.iter().map(|c| c.title_ru()).collect();
        rows.push(row(
            "mo_subsystems",
            "Доля МО, подключенных к централизованным подсистемам государственной информационной системы в сфере здравоохранения субъекта",
            Unit::Percent,
            Some(cfg.plan_mo_subsystems_pct),
            pct(all as f64, n_mo),
            format!(
                "{all} из {} МО: {} обращались ко всем подсистемам не менее чем в {} % рабочих \
                 дней: {}",
                mo_list.len(),
                who(&cfg.subsystem_use),
                pct_text(cfg.subsystem_use.min_working_days_pct),
                names.join(", ")
            ),
        ));
        for c in &subsystems {
            let n = mo_list.iter().filter(|m| connected(m, *c)).count();
            rows.push(row(
                format!("mo_subsystem_{}", c.as_str()),
                format!("Доля МО, подключенных к подсистеме «{}»", c.title_ru()),
                Unit::Percent,
                Some(cfg.plan_mo_subsystems_pct),
                pct(n as f64, n_mo),
                format!("{n} из {} МО", mo_list.len()),
            ));
        }
    }

    // 4. Sites keeping the electronic medical record.
    let (mut sites_total, mut sites_ok) = (0usize, 0usize);
    let mut mos = Vec::with_capacity(mo_list.len());
    for oid in &mo_list {
        let f = facts.get(oid);
        let roster_mo: Option<&Mo> = roster.get(oid);
        let (mut total, mut ok) = (0usize, 0usize);
        match roster_mo.filter(|m| !m.sites.is_empty()) {
            Some(m) => {
                for s in &m.sites {
                    total += 1;
                    ok += usize::from(f.is_some_and(|f| f.sites_mis.contains(&norm(&s.name))));
                }
            }
            None => {
                total += 1;
                ok += usize::from(f.is_some_and(|f| f.ws_mis));
            }
        }
        sites_total += total;
        sites_ok += ok;
        let planned = roster_mo.map(|m| u64::from(m.planned_arm));
        let active = f.map_or(0, |f| f.arm_active);
        mos.push(MoIndicators {
            mo: oid.to_string(),
            mo_name: roster_mo.map_or_else(|| oid.to_string(), |m| m.name.clone()),
            planned_arm: planned,
            arm_active: active,
            arm_shortfall: planned.unwrap_or(0).saturating_sub(active),
            arm_pct_of_plan: planned.and_then(|p| pct(active as f64, p as f64)),
            uses_mis: uses_mis(oid),
            working_days: working.get(oid).copied().unwrap_or(0),
            mis_days: days(oid, Category::Mis, &cfg.mis_use),
            sites_mis: ok as u64,
            sites_total: total as u64,
            subsystems_missing: subsystems
                .iter()
                .filter(|c| !connected(oid, **c))
                .map(|c| c.title_ru())
                .collect(),
            servers_availability_pct: f.and_then(|f| f.servers.availability_pct),
        });
    }
    rows.push(row(
        "sites_mis",
        "Доля подразделений МО, в которых ведется электронная медицинская карта (АРМ подключены к МИС)",
        Unit::Percent,
        Some(cfg.plan_sites_pct),
        pct(sites_ok as f64, sites_total as f64),
        format!("{sites_ok} из {sites_total} подразделений"),
    ));

    // 5. Availability of servers and of each target.
    rows.push(row(
        "availability_servers",
        "Работоспособность серверного оборудования МО (доступность серверов)",
        Unit::Percent,
        Some(cfg.plan_availability_pct),
        servers.availability_pct,
        format!(
            "работали {} ч, простой {} ч, нет данных {} ч",
            hours(servers.up_ms),
            hours(servers.down_ms),
            hours(servers.unknown_ms)
        ),
    ));
    let resources = targets(data, roster, in_scope);
    for t in &resources {
        rows.push(row(
            format!("availability_{}", t.category.as_str()),
            format!("Работоспособность информационного ресурса «{}»", t.title),
            Unit::Percent,
            Some(cfg.plan_availability_pct),
            t.resource_availability_pct,
            resource_basis(t),
        ));
    }
    let capped: Vec<&str> = rows
        .iter()
        .filter(|r| r.capped)
        .map(|r| r.name.as_str())
        .collect();
    if !capped.is_empty() {
        notes.push(format!(
            "Факт выше плана, план выполнен; процент выполнения показателей в процентах указан \
             не выше 100: {}.",
            capped.join("; ")
        ));
    }
    IndicatorTable {
        period: period.clone(),
        computed_to_ms: data.to,
        rows,
        mos,
        resources,
        notes,
    }
}

/// Who counts for a usage rule, Russian.
fn who(r: &UsageRule) -> &'static str {
    if r.servers {
        "АРМ и серверы"
    } else {
        "АРМ"
    }
}

/// A percentage without a needless fraction: «80», «87,5».
fn pct_text(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}").replace('.', ",")
    }
}

/// How the resource's figure was made, and the channels that were worse than the resource.
fn resource_basis(t: &TargetAvail) -> String {
    let mut s = format!(
        "работал {} ч, не работал {} ч, не определено {} ч; наблюдали {} МО",
        hours(t.resource_up_ms),
        hours(t.resource_down_ms),
        hours(t.resource_unknown_ms),
        t.mo_observing
    );
    if t.resource_planned_ms > 0 {
        s.push_str(&format!(
            "; плановые работы {} ч (не считаются простоем)",
            hours(t.resource_planned_ms)
        ));
    }
    let bad = t.mos.iter().filter(|m| m.channel_fail_ms > 0).count();
    if bad > 0 {
        s.push_str(&format!(
            "; у {bad} МО канал к ресурсу работал с перебоями (лист «Каналы МО»)"
        ));
    }
    s
}

fn hours(ms: i64) -> String {
    let h = ms as f64 / 3_600_000.0;
    if h >= 100.0 {
        format!("{h:.0}")
    } else {
        format!("{h:.1}")
    }
    .replace('.', ",")
}

#[cfg(test)]
mod tests;
