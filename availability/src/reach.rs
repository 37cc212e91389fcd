//! Reachability of a target category from an МО: reachable while at least one of its up hosts
//! reaches it, unreachable while hosts that probe it are up but none reaches it, unknown while
//! none of its hosts that probe it is up.

use super::{Ms, ProbeRow};
use serde::Serialize;

/// Reachable and unreachable time of one category from one МО; additive over disjoint windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReachAgg {
    pub reach_ms: i64,
    pub unreach_ms: i64,
    /// Working days (region days overlapping a working window of the МО) on which a
    /// workstation of the МО had an ok result of the category ([`super::usage`]).
    pub ws_days: i64,
    /// The same for any host, servers included.
    pub any_days: i64,
}

impl ReachAgg {
    pub fn add(&mut self, o: &ReachAgg) {
        self.reach_ms += o.reach_ms;
        self.unreach_ms += o.unreach_ms;
        self.ws_days += o.ws_days;
        self.any_days += o.any_days;
    }

    /// Observed time: reachable + unreachable.
    pub fn observed_ms(&self) -> i64 {
        self.reach_ms + self.unreach_ms
    }

    pub fn is_zero(&self) -> bool {
        self.reach_ms == 0 && self.unreach_ms == 0 && self.ws_days == 0 && self.any_days == 0
    }
}

/// One host's contribution: its up spans and its reachability rows.
#[derive(Debug, Clone, Copy)]
pub struct HostReach<'a> {
    pub up: &'a [(Ms, Ms)],
    pub probes: &'a [ProbeRow],
}

/// Reachability of every category (indexed as [`dozor_proto::Category::ALL`]) from an МО over
/// `[a, b)`.
pub fn mo_reach(hosts: &[HostReach<'_>], a: Ms, b: Ms) -> [ReachAgg; 12] {
    let mut ok: [Vec<(Ms, Ms)>; 12] = Default::default();
    let mut seen: [Vec<(Ms, Ms)>; 12] = Default::default();
    for h in hosts {
        if h.up.is_empty() {
            continue;
        }
        for p in h.probes {
            let (s, e) = (p.start.max(a), p.end.min(b));
            if s >= e {
                continue;
            }
            let c = usize::from(p.cat).min(11);
            intersect(h.up, s, e, |x, y| {
                seen[c].push((x, y));
                if p.ok {
                    ok[c].push((x, y));
                }
            });
        }
    }
    let mut out = [ReachAgg::default(); 12];
    for c in 0..12 {
        let observed = union_len(&mut seen[c]);
        let reach = union_len(&mut ok[c]);
        out[c] = ReachAgg {
            reach_ms: reach,
            unreach_ms: observed - reach,
            ..ReachAgg::default()
        };
    }
    out
}

/// Calls `f` with each part of `[s, e)` inside the sorted disjoint spans.
pub(crate) fn intersect(spans: &[(Ms, Ms)], s: Ms, e: Ms, mut f: impl FnMut(Ms, Ms)) {
    let i = spans.partition_point(|x| x.1 <= s);
    for &(x, y) in &spans[i..] {
        if x >= e {
            break;
        }
        let (p, q) = (x.max(s), y.min(e));
        if p < q {
            f(p, q);
        }
    }
}

/// The union of spans as sorted disjoint spans (sorts them).
pub(crate) fn union_spans(v: &mut [(Ms, Ms)]) -> Vec<(Ms, Ms)> {
    v.sort_unstable();
    let mut out: Vec<(Ms, Ms)> = Vec::new();
    for &(s, e) in v.iter() {
        match out.last_mut() {
            Some(c) if s <= c.1 => c.1 = c.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Length of the union of spans (sorts them).
pub fn union_len(v: &mut [(Ms, Ms)]) -> i64 {
    v.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(Ms, Ms)> = None;
    for &(s, e) in v.iter() {
        match &mut cur {
            Some(c) if s <= c.1 => c.1 = c.1.max(e),
            _ => {
                if let Some(c) = cur {
                    total += c.1 - c.0;
                }
                cur = Some((s, e));
            }
        }
    }
    if let Some(c) = cur {
        total += c.1 - c.0;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Ms = 60_000;

    fn row(cat: u8, start: Ms, end: Ms, ok: bool) -> ProbeRow {
        ProbeRow {
            cat,
            start,
            end,
            ok,
            closed: true,
        }
    }

    #[test]
    fn reachable_while_any_up_host_reaches() {
        // Host A up 0..60 min, reaches МИС 0..30, fails 30..60.
        // Host B up 20..50 min, reaches МИС 20..50.
        // Host C up 70..80, fails 70..80; nobody up 60..70 → unknown.
        let a_up = [(0, 60 * MIN)];
        let a_p = [row(0, 0, 30 * MIN, true), row(0, 30 * MIN, 60 * MIN, false)];
        let b_up = [(20 * MIN, 50 * MIN)];
        let b_p = [row(0, 20 * MIN, 50 * MIN, true)];
        let c_up = [(70 * MIN, 80 * MIN)];
        let c_p = [
            row(0, 70 * MIN, 80 * MIN, false),
            row(2, 70 * MIN, 75 * MIN, true),
        ];
        let hosts = [
            HostReach {
                up: &a_up,
                probes: &a_p,
            },
            HostReach {
                up: &b_up,
                probes: &b_p,
            },
            HostReach {
                up: &c_up,
                probes: &c_p,
            },
        ];
        let r = mo_reach(&hosts, 0, 100 * MIN);
        // Reachable 0..50; unreachable 50..60 and 70..80.
        assert_eq!(r[0].reach_ms, 50 * MIN);
        assert_eq!(r[0].unreach_ms, 20 * MIN);
        assert_eq!(r[2].reach_ms, 5 * MIN);
        assert_eq!(r[2].unreach_ms, 0);
        assert!(r[1].is_zero());
        // Window clipping.
        let r = mo_reach(&hosts, 45 * MIN, 75 * MIN);
        // Reachable 45..50 (B); unreachable 50..60 (A fails) and 70..75 (C fails).
        assert_eq!(r[0].reach_ms, 5 * MIN);
        assert_eq!(r[0].unreach_ms, 15 * MIN);
    }

    #[test]
    fn probes_outside_up_time_do_not_count() {
        let up = [(10 * MIN, 20 * MIN)];
        let p = [row(0, 0, 30 * MIN, true)];
        let r = mo_reach(
            &[HostReach {
                up: &up,
                probes: &p,
            }],
            0,
            60 * MIN,
        );
        assert_eq!(r[0].reach_ms, 10 * MIN);
    }
}
