//! Workstations switched off in working hours («выключен в рабочее время»): the per-host
//! figure integrated by [`super::timeline`], and the report of the workstations most often off
//! in working time, per region, МО and site.
//!
//! Rule (`docs/indicators.md`): a graceful shutdown of a workstation is never down, but the time
//! it stays off **within the working window in which it was switched off** is its own figure;
//! the number of working days on which that happened is counted with it. A PC switched off at
//! 18:00 (working day until 20:00) is off in working time for 2 h, on one day; the next morning
//! before somebody switches it on is not counted (nobody switched it off then). Servers are
//! expected up around the clock: a server switched off is **down** (cause `shutdown`) in every
//! server figure and alert, and is not part of this report.

use super::{HostAgg, HostInfo, Ms, PeriodData};
use crate::roster::Roster;
use dozor_proto::Role;
use serde::Serialize;
use std::collections::BTreeMap;

/// Counts each working window once while a host's pieces are integrated in ascending order.
#[derive(Debug, Default)]
pub(crate) struct OffWindows {
    last: Option<Ms>,
}

impl OffWindows {
    /// Adds `len` ms of off time inside the working window starting at `w0`.
    pub(crate) fn add(&mut self, agg: &mut HostAgg, w0: Ms, len: Ms) {
        if len <= 0 {
            return;
        }
        agg.off_w_ms += len;
        if self.last != Some(w0) {
            self.last = Some(w0);
            agg.off_w_days += 1;
        }
    }
}

/// True for the hosts the figure is about: workstations, and hosts whose role is not known yet
/// (counted as workstations everywhere).
pub fn counts_off(h: &HostInfo) -> bool {
    h.role != Some(Role::Server)
}

/// One workstation's time off in working hours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostOff {
    pub mo: String,
    pub mo_name: String,
    pub host: String,
    pub hostname: String,
    pub site: String,
    /// Off in working hours, ms.
    pub off_w_ms: i64,
    /// Working days on which it was switched off in working hours.
    pub off_days: i64,
    /// Up in working hours, ms (for scale: how long it worked).
    pub up_w_ms: i64,
}

/// One site's (or МО's) sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OffSum {
    /// Workstations switched off in working hours at least once.
    pub hosts_off: u64,
    /// Workstations counted (with any history in the period).
    pub hosts: u64,
    pub off_w_ms: i64,
    /// Host-days: Σ over workstations of the days each was switched off in working hours.
    pub off_days: i64,
}

impl OffSum {
    fn add(&mut self, a: &HostAgg) {
        self.hosts += 1;
        self.hosts_off += u64::from(a.off_w_ms > 0);
        self.off_w_ms += a.off_w_ms;
        self.off_days += a.off_w_days;
    }
}

/// One site of an МО.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteOff {
    pub site: String,
    #[serde(flatten)]
    pub sum: OffSum,
}

/// One МО with its sites and its workstations most often off (at most `top`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoOff {
    pub mo: String,
    pub mo_name: String,
    pub in_roster: bool,
    #[serde(flatten)]
    pub sum: OffSum,
    pub sites: Vec<SiteOff>,
    pub top: Vec<HostOff>,
}

/// The report «АРМ, чаще всего выключенные в рабочее время».
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffHours {
    pub from_ms: Ms,
    pub to_ms: Ms,
    /// The `N` of the top lists.
    pub top_n: usize,
    /// Region totals (МО of the roster; all МО without a roster).
    pub region: OffSum,
    /// The region's workstations most often off: by hours off, then by days.
    pub top: Vec<HostOff>,
    pub mos: Vec<MoOff>,
}

/// Orders hosts most often off first: more time off, then more days, then by name.
fn rank(a: &HostOff, b: &HostOff) -> std::cmp::Ordering {
    b.off_w_ms
        .cmp(&a.off_w_ms)
        .then(b.off_days.cmp(&a.off_days))
        .then_with(|| a.mo.cmp(&b.mo))
        .then_with(|| a.hostname.cmp(&b.hostname))
        .then_with(|| a.host.cmp(&b.host))
}

/// An МО's sums, its sites' sums and its hosts off in working hours.
type MoAcc<'a> = (OffSum, BTreeMap<&'a str, OffSum>, Vec<HostOff>);

/// Builds the report over the period's hosts; `mo` keeps one МО only. Hosts never switched off
/// in working hours are counted in the sums but never listed.
pub fn offhours(data: &PeriodData, roster: &Roster, top_n: usize, mo: Option<&str>) -> OffHours {
    let use_all = roster.mos.is_empty();
    let mut mos: BTreeMap<&str, MoAcc<'_>> = BTreeMap::new();
    if !use_all {
        for m in &roster.mos {
            mos.entry(&m.oid).or_default();
        }
    }
    let mut region = OffSum::default();
    let mut all: Vec<HostOff> = Vec::new();
    for (h, a) in &data.hosts {
        if !counts_off(h) || mo.is_some_and(|m| m != h.mo) {
            continue;
        }
        let in_roster = use_all || roster.contains(&h.mo);
        let e = mos.entry(&h.mo).or_default();
        e.0.add(a);
        e.1.entry(&h.site).or_default().add(a);
        if in_roster {
            region.add(a);
        }
        if a.off_w_ms > 0 {
            let ho = HostOff {
                mo: h.mo.clone(),
                mo_name: roster
                    .get(&h.mo)
                    .map_or_else(|| h.mo.clone(), |m| m.name.clone()),
                host: h.host.clone(),
                hostname: h.hostname.clone(),
                site: h.site.clone(),
                off_w_ms: a.off_w_ms,
                off_days: a.off_w_days,
                up_w_ms: a.up_w_ms,
            };
            if in_roster {
                all.push(ho.clone());
            }
            e.2.push(ho);
        }
    }
    all.sort_by(rank);
    all.truncate(top_n);
    let mos = mos
        .into_iter()
        .filter(|(oid, _)| mo.is_none_or(|m| m == *oid))
        .map(|(oid, (sum, sites, mut top))| {
            top.sort_by(rank);
            top.truncate(top_n);
            let r = roster.get(oid);
            MoOff {
                mo: oid.to_string(),
                mo_name: r.map_or_else(|| oid.to_string(), |m| m.name.clone()),
                in_roster: r.is_some(),
                sum,
                sites: sites
                    .into_iter()
                    .map(|(s, sum)| SiteOff {
                        site: s.to_string(),
                        sum,
                    })
                    .collect(),
                top,
            }
        })
        .collect();
    OffHours {
        from_ms: data.from,
        to_ms: data.to,
        top_n,
        region,
        top: all,
        mos,
    }
}

#[cfg(test)]
mod tests;
