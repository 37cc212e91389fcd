//! Usage rules of the indicator table (issue 13, item 5): an МО "uses the МИС" (or "is
//! connected to a subsystem") when its workstations reached it on at least a configured share
//! of its working days in the period. See `docs/indicators.md` for the default and its reason.
//!
//! The day counts are materialized per (МО, category, region day) in [`super::ReachAgg`]
//! (`ws_days`, `any_days`: 1 for a day on which a workstation, resp. any host, of the МО had an
//! ok result of the category and which overlaps one of the МО's working windows), so they add up
//! over months like the rest of the aggregates; [`day_use`] computes them for one day.

use super::{Ms, ProbeRow, WorkCal};
use crate::roster::Roster;
use serde::Serialize;

/// One rule: the share of working days and which hosts count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UsageRule {
    /// Minimum share of the МО's working days in the period with a successful probe, % (0–100).
    pub min_working_days_pct: f64,
    /// Servers count too (default: workstations only; hosts of unknown role count as
    /// workstations, as everywhere).
    pub servers: bool,
}

impl Default for UsageRule {
    fn default() -> Self {
        UsageRule {
            min_working_days_pct: DEFAULT_MIN_WORKING_DAYS_PCT,
            servers: false,
        }
    }
}

/// The default share: 80 % of working days (reason in `docs/indicators.md`).
pub const DEFAULT_MIN_WORKING_DAYS_PCT: f64 = 80.0;

impl UsageRule {
    /// Working days needed out of `working`: `⌈pct × working / 100⌉`, at least 1.
    pub fn days_needed(&self, working: i64) -> i64 {
        let need = (self.min_working_days_pct * working as f64 / 100.0 - 1e-9).ceil() as i64;
        need.max(1)
    }

    /// The days of a (МО, category) this rule counts.
    pub fn days(&self, ws_days: i64, any_days: i64) -> i64 {
        if self.servers { any_days } else { ws_days }
    }

    /// True when `days` reached of `working` working days satisfy the rule. A period without
    /// working days (a weekend) asks for one day with a successful probe.
    pub fn met(&self, days: i64, working: i64) -> bool {
        days >= self.days_needed(working)
    }
}

/// Working days of an МО in `[from, to)`: its working windows that begin inside the period or
/// overlap its start.
pub fn working_days(cal: &WorkCal, from: Ms, to: Ms) -> i64 {
    cal.windows(from, to).len() as i64
}

/// The working calendar of an МО (the default one when the МО is not in the roster).
pub fn workcal_of(roster: &Roster, oid: &str) -> WorkCal {
    roster.get(oid).map_or_else(WorkCal::default, |m| WorkCal {
        tz: m.tz,
        hours: m.work,
    })
}

/// For one region day `[a, b)` of one МО: per category (bits of [`super::cat_bit`]) whether a
/// workstation (first mask) or any host (second mask) had an ok result in the day, when the day
/// overlaps one of the МО's working windows `work`; `(0, 0)` on a day off.
/// `hosts`: (is a server, its reachability rows).
pub fn day_use(work: &[(Ms, Ms)], hosts: &[(bool, &[ProbeRow])], a: Ms, b: Ms) -> (u16, u16) {
    if !work.iter().any(|&(w0, w1)| w0 < b && w1 > a) {
        return (0, 0);
    }
    let (mut ws, mut any) = (0u16, 0u16);
    for (server, probes) in hosts {
        for p in probes.iter().filter(|p| p.ok && p.touches(a, b)) {
            let bit = 1u16 << p.cat.min(11);
            any |= bit;
            if !server {
                ws |= bit;
            }
        }
    }
    (ws, any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::WorkHours;

    const H: Ms = 3_600_000;
    /// Mon 2024-03-04 00:00 UTC.
    const MON: Ms = 1_709_510_400_000;

    fn utc_cal() -> WorkCal {
        WorkCal {
            tz: chrono_tz::UTC,
            hours: WorkHours::default(),
        }
    }

    fn probe(cat: u8, start: Ms, end: Ms, ok: bool) -> ProbeRow {
        ProbeRow {
            cat,
            start,
            end,
            ok,
            closed: true,
        }
    }

    #[test]
    fn share_of_working_days() {
        let r = UsageRule::default();
        // 23 working days (a month): 80 % = 18.4 → 19 days.
        assert_eq!(r.days_needed(23), 19);
        assert!(r.met(19, 23));
        assert!(!r.met(18, 23));
        // Exactly 80 %: 5 working days → 4.
        assert_eq!(r.days_needed(5), 4);
        // A weekend: one day with a successful probe.
        assert_eq!(r.days_needed(0), 1);
        assert!(!r.met(0, 0));
        let all = UsageRule {
            min_working_days_pct: 100.0,
            servers: false,
        };
        assert_eq!(all.days_needed(63), 63);
        let one = UsageRule {
            min_working_days_pct: 0.0,
            servers: true,
        };
        assert_eq!(one.days_needed(63), 1, "0 % is the old rule: one day");
        assert_eq!(one.days(2, 5), 5);
        assert_eq!(r.days(2, 5), 2);
    }

    #[test]
    fn working_days_of_a_week() {
        let c = utc_cal();
        // Mon..Sun: 5 working days.
        assert_eq!(working_days(&c, MON, MON + 7 * 24 * H), 5);
        // From Wednesday 12:00 to Friday 09:00: Wed (begun), Thu, Fri (begun).
        assert_eq!(
            working_days(&c, MON + 2 * 24 * H + 12 * H, MON + 4 * 24 * H + 9 * H),
            3
        );
        // Saturday and Sunday: none.
        assert_eq!(working_days(&c, MON + 5 * 24 * H, MON + 7 * 24 * H), 0);
        // Friday 20:00 to Monday 08:00: none.
        assert_eq!(
            working_days(&c, MON + 4 * 24 * H + 20 * H, MON + 7 * 24 * H + 8 * H),
            0
        );
    }

    #[test]
    fn a_day_of_use() {
        let c = utc_cal();
        let mon = (MON, MON + 24 * H);
        let work = c.windows(mon.0, mon.1);
        let ws_ok = [probe(0, MON + 9 * H, MON + 10 * H, true)];
        let ws_fail = [probe(1, MON + 9 * H, MON + 10 * H, false)];
        let srv = [probe(1, MON + 2 * H, MON + 3 * H, true)];
        let hosts: [(bool, &[ProbeRow]); 3] = [(false, &ws_ok), (false, &ws_fail), (true, &srv)];
        assert_eq!(day_use(&work, &hosts, mon.0, mon.1), (0b01, 0b11));
        // A result of the previous day that ended at midnight does not count on Monday.
        let sun = [probe(0, MON - 2 * H, MON - H, true)];
        assert_eq!(day_use(&work, &[(false, &sun)], mon.0, mon.1), (0, 0));
        // Saturday: not a working day, nothing counts.
        let sat = (MON + 5 * 24 * H, MON + 6 * 24 * H);
        let sat_ok = [probe(0, sat.0 + 10 * H, sat.0 + 11 * H, true)];
        let work = c.windows(sat.0, sat.1);
        assert_eq!(day_use(&work, &[(false, &sat_ok)], sat.0, sat.1), (0, 0));
    }
}
