//! A central resource's own availability, told apart from the МО channels to it (issue 13,
//! item 4): «работоспособность информационного ресурса» must not fall because one МО's uplink
//! broke while the resource answered everybody else.
//!
//! Rules (see `docs/indicators.md`, "Resource and channel"), at every instant, for a category:
//! - the resource is **up** while at least one МО reaches it — unless that is a single МО
//!   while at least two others observe it failing: then it is **unknown** (disputed), so that
//!   one clinic PC's forged probe results cannot hold a resource at 100 %;
//! - it is **down** while nobody reaches it and it is observed failing by an МО whose channel
//!   demonstrably works (that МО reaches another central target at the same instant), or by
//!   at least two МО at once (independent channels do not fail together);
//! - otherwise it is **unknown**: nobody observes it, or only one МО does, and that МО reaches
//!   nothing else (its channel may be what is broken);
//! - an МО's **channel** to the resource is good while it reaches the resource, bad while it
//!   observes the resource failing *while the resource is up*; time the resource itself is
//!   down or unknown is not held against the channel.

use super::reach::{HostReach, union_spans};
use super::{Ms, cat_of, pct};
use dozor_proto::Category;
use serde::Serialize;
use std::collections::BTreeMap;

/// What one МО observed of every category (indexed as [`dozor_proto::Category::ALL`]) over a
/// window: sorted disjoint spans while some up host of the МО reached it (`ok`) and while some
/// up host probed it (`seen`, a superset of `ok`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoSpans {
    pub ok: [Vec<(Ms, Ms)>; 12],
    pub seen: [Vec<(Ms, Ms)>; 12],
}

impl MoSpans {
    /// The spans of an МО's hosts over `[a, b)` (probe results count only while their host is
    /// up, as in [`super::mo_reach`]).
    pub fn of(hosts: &[HostReach<'_>], a: Ms, b: Ms) -> MoSpans {
        let mut ok: [Vec<(Ms, Ms)>; 12] = Default::default();
        let mut seen: [Vec<(Ms, Ms)>; 12] = Default::default();
        for h in hosts {
            for p in h.probes {
                let (s, e) = (p.start.max(a), p.end.min(b));
                if s >= e {
                    continue;
                }
                let c = usize::from(p.cat).min(11);
                super::reach::intersect(h.up, s, e, |x, y| {
                    seen[c].push((x, y));
                    if p.ok {
                        ok[c].push((x, y));
                    }
                });
            }
        }
        MoSpans {
            ok: ok.map(|mut v| union_spans(&mut v)),
            seen: seen.map(|mut v| union_spans(&mut v)),
        }
    }
}

/// An МО's channel to one resource: ms the МО reached it, ms it failed to while the resource
/// was up (somebody else reached it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChannelAgg {
    pub channel_ok_ms: i64,
    pub channel_fail_ms: i64,
}

impl ChannelAgg {
    /// Channel quality `ok / (ok + fail) × 100`; `None` when never observed while the resource
    /// was up.
    pub fn quality_pct(&self) -> Option<f64> {
        pct(
            self.channel_ok_ms as f64,
            (self.channel_ok_ms + self.channel_fail_ms) as f64,
        )
    }

    pub fn is_zero(&self) -> bool {
        self.channel_ok_ms == 0 && self.channel_fail_ms == 0
    }
}

/// A resource's own availability over a window and each МО's channel to it (by МО id);
/// additive over disjoint windows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceAgg {
    /// Somebody reached the resource.
    pub resource_up_ms: i64,
    /// Nobody reached it, and a working channel (or two МО at once) saw it failing.
    pub resource_down_ms: i64,
    /// Observed by somebody, but not decidable (one МО without a working channel).
    pub resource_unknown_ms: i64,
    /// Down inside planned works of the resource's category (out of `resource_down_ms` and of
    /// the availability).
    pub resource_planned_ms: i64,
    /// Each observing МО's channel to the resource, by МО id.
    pub channels: BTreeMap<String, ChannelAgg>,
}

impl ResourceAgg {
    /// The resource's own availability `up / (up + down) × 100`; `None` when nothing was
    /// decided.
    pub fn availability_pct(&self) -> Option<f64> {
        pct(
            self.resource_up_ms as f64,
            (self.resource_up_ms + self.resource_down_ms) as f64,
        )
    }

    pub fn is_zero(&self) -> bool {
        self.resource_up_ms == 0
            && self.resource_down_ms == 0
            && self.resource_unknown_ms == 0
            && self.resource_planned_ms == 0
            && self.channels.values().all(ChannelAgg::is_zero)
    }

    /// Moves `ms` of down time (measured inside planned works of the category) to planned.
    pub fn move_to_planned(&mut self, ms: i64) {
        let ms = ms.clamp(0, self.resource_down_ms);
        self.resource_down_ms -= ms;
        self.resource_planned_ms += ms;
    }

    pub fn add(&mut self, o: &ResourceAgg) {
        self.resource_up_ms += o.resource_up_ms;
        self.resource_down_ms += o.resource_down_ms;
        self.resource_unknown_ms += o.resource_unknown_ms;
        self.resource_planned_ms += o.resource_planned_ms;
        for (mo, c) in &o.channels {
            let m = self.channels.entry(mo.clone()).or_default();
            m.channel_ok_ms += c.channel_ok_ms;
            m.channel_fail_ms += c.channel_fail_ms;
        }
    }
}

/// True if `t` lies in one of the sorted disjoint `spans`.
fn holds(spans: &[(Ms, Ms)], t: Ms) -> bool {
    let i = spans.partition_point(|s| s.1 <= t);
    spans.get(i).is_some_and(|s| s.0 <= t)
}

/// Every category some МО observed over `[a, b)`, with its resource figures.
pub fn resources(mos: &[(String, MoSpans)], a: Ms, b: Ms) -> BTreeMap<Category, ResourceAgg> {
    let mut out = BTreeMap::new();
    for c in 0..12 {
        if mos.iter().any(|(_, m)| !m.seen[c].is_empty()) {
            let r = resource(mos, c, a, b);
            if !r.is_zero() {
                out.insert(cat_of(c as u8), r);
            }
        }
    }
    out
}

/// The resource of category index `cat` over `[a, b)` as seen from `mos` (МО id, spans).
pub fn resource(mos: &[(String, MoSpans)], cat: usize, a: Ms, b: Ms) -> ResourceAgg {
    let cat = cat.min(11);
    let mut out = ResourceAgg::default();
    let mut channels = vec![ChannelAgg::default(); mos.len()];
    // Every state is constant between consecutive span edges.
    let mut edges: Vec<Ms> = vec![a, b];
    for (_, m) in mos {
        for c in 0..12 {
            for &(s, e) in m.ok[c].iter().chain(&m.seen[c]) {
                edges.extend([s.clamp(a, b), e.clamp(a, b)]);
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    let mut reached = Vec::with_capacity(mos.len());
    let mut observing = Vec::with_capacity(mos.len());
    for w in edges.windows(2) {
        let (t, len) = (w[0], w[1] - w[0]);
        reached.clear();
        observing.clear();
        let mut working_observer = false;
        for (_, m) in mos {
            let seen = holds(&m.seen[cat], t);
            let ok = seen && holds(&m.ok[cat], t);
            reached.push(ok);
            observing.push(seen);
            if seen && !ok {
                working_observer |= (0..12).any(|c| c != cat && holds(&m.ok[c], t));
            }
        }
        let observers = observing.iter().filter(|o| **o).count();
        if observers == 0 {
            continue;
        }
        let reachers = reached.iter().filter(|r| **r).count();
        // One МО alone reaching what at least two others see failing is disputed, not up:
        // one clinic PC's (possibly forged) probe results must not hold a region's resource
        // at 100 %.
        let disputed = reachers == 1 && observers - reachers >= 2;
        if disputed {
            out.resource_unknown_ms += len;
        } else if reachers > 0 {
            out.resource_up_ms += len;
            for (i, ch) in channels.iter_mut().enumerate() {
                if reached[i] {
                    ch.channel_ok_ms += len;
                } else if observing[i] {
                    ch.channel_fail_ms += len;
                }
            }
        } else if working_observer || observers >= 2 {
            out.resource_down_ms += len;
        } else {
            out.resource_unknown_ms += len;
        }
    }
    for ((mo, m), ch) in mos.iter().zip(channels) {
        if !m.seen[cat].is_empty() {
            out.channels.insert(mo.clone(), ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Ms = 60_000;
    const MIS: usize = 0;
    const LIS: usize = 2;

    /// (category, seen, ok) of one МО.
    type Obs<'a> = (usize, &'a [(Ms, Ms)], &'a [(Ms, Ms)]);

    /// An МО that observed each category over `seen` and reached it over `ok`.
    fn mo(spans: &[Obs<'_>]) -> MoSpans {
        let mut m = MoSpans::default();
        for (c, seen, ok) in spans {
            m.seen[*c] = seen.to_vec();
            m.ok[*c] = ok.to_vec();
        }
        m
    }

    /// The case: the ЛИС answered everyone whose channel worked; one МО's channel was
    /// broken for 30 min of the hour. The resource is 100 %, that МО's channel 50 %.
    #[test]
    fn one_broken_channel_is_not_the_resource() {
        let h = [(0, 60 * MIN)];
        let good = mo(&[(LIS, &h, &h), (MIS, &h, &h)]);
        let broken = mo(&[(LIS, &h, &[(0, 30 * MIN)]), (MIS, &h, &[(0, 30 * MIN)])]);
        let r = resource(
            &[("a".into(), good), ("b".into(), broken)],
            LIS,
            0,
            60 * MIN,
        );
        assert_eq!(
            (r.resource_up_ms, r.resource_down_ms, r.resource_unknown_ms),
            (60 * MIN, 0, 0)
        );
        assert_eq!(r.availability_pct(), Some(100.0));
        assert_eq!(
            r.channels["a"],
            ChannelAgg {
                channel_ok_ms: 60 * MIN,
                channel_fail_ms: 0
            }
        );
        assert_eq!(
            r.channels["b"],
            ChannelAgg {
                channel_ok_ms: 30 * MIN,
                channel_fail_ms: 30 * MIN
            }
        );
        assert_eq!(r.channels["b"].quality_pct(), Some(50.0));
    }

    /// Down for everyone 10:00–10:20 (two МО fail together): the resource is down, no channel
    /// is blamed.
    #[test]
    fn outage_for_everyone_is_the_resource() {
        let h = [(0, 60 * MIN)];
        let ok: &[(Ms, Ms)] = &[(0, 10 * MIN), (30 * MIN, 60 * MIN)];
        let a = mo(&[(LIS, &h, ok)]);
        let b = mo(&[(LIS, &h, ok)]);
        let r = resource(&[("a".into(), a), ("b".into(), b)], LIS, 0, 60 * MIN);
        assert_eq!(
            (r.resource_up_ms, r.resource_down_ms, r.resource_unknown_ms),
            (40 * MIN, 20 * MIN, 0)
        );
        for ch in r.channels.values() {
            assert_eq!(
                *ch,
                ChannelAgg {
                    channel_ok_ms: 40 * MIN,
                    channel_fail_ms: 0
                }
            );
        }
    }

    /// One МО alone reaching the ЛИС while two others see it failing (as forged results from
    /// one clinic PC would): disputed, unknown, and no channel is blamed.
    #[test]
    fn one_mo_against_two_is_disputed() {
        let h = [(0, 60 * MIN)];
        let liar = mo(&[(LIS, &h, &h), (MIS, &h, &h)]);
        let failing = || mo(&[(LIS, &h, &[(0, 20 * MIN)]), (MIS, &h, &h)]);
        let r = resource(
            &[
                ("liar".into(), liar),
                ("b".into(), failing()),
                ("c".into(), failing()),
            ],
            LIS,
            0,
            60 * MIN,
        );
        assert_eq!(
            (r.resource_up_ms, r.resource_down_ms, r.resource_unknown_ms),
            (20 * MIN, 0, 40 * MIN)
        );
        assert_eq!(r.channels["b"].channel_fail_ms, 0);
        // Two МО reaching it against two failing: up, and the failing channels are blamed.
        let r = resource(
            &[
                ("a".into(), mo(&[(LIS, &h, &h)])),
                ("a2".into(), mo(&[(LIS, &h, &h)])),
                ("b".into(), failing()),
                ("c".into(), failing()),
            ],
            LIS,
            0,
            60 * MIN,
        );
        assert_eq!(r.resource_up_ms, 60 * MIN);
        assert_eq!(r.channels["b"].channel_fail_ms, 40 * MIN);
    }

    /// A single observer: failing while it reaches the МИС (working channel) is the resource;
    /// failing while it reaches nothing is unknown (its channel may be broken).
    #[test]
    fn single_observer_needs_a_working_channel() {
        let h = [(0, 60 * MIN)];
        // ЛИС fails 10–40; the МИС is reached 0–25 only (channel lost at 25).
        let m = mo(&[
            (LIS, &h, &[(0, 10 * MIN), (40 * MIN, 60 * MIN)]),
            (MIS, &h, &[(0, 25 * MIN)]),
        ]);
        let r = resource(&[("a".into(), m)], LIS, 0, 60 * MIN);
        assert_eq!(r.resource_up_ms, 30 * MIN);
        assert_eq!(r.resource_down_ms, 15 * MIN, "10–25: the channel worked");
        assert_eq!(
            r.resource_unknown_ms,
            15 * MIN,
            "25–40: nothing reached, cannot tell"
        );
        assert_eq!(
            r.channels["a"],
            ChannelAgg {
                channel_ok_ms: 30 * MIN,
                channel_fail_ms: 0
            }
        );
    }

    /// Nobody observing (night, no servers): neither up, down nor unknown; windows clip and
    /// the sums are additive.
    #[test]
    fn unobserved_and_additive() {
        let a = mo(&[(LIS, &[(10 * MIN, 20 * MIN)], &[(10 * MIN, 15 * MIN)])]);
        let b = mo(&[(LIS, &[(12 * MIN, 30 * MIN)], &[])]);
        let mos = [("a".to_string(), a), ("b".to_string(), b)];
        let whole = resource(&mos, LIS, 0, 60 * MIN);
        // 10–12 up (a), 12–15 up (a; b's channel fails), 15–20 down (both fail),
        // 20–30 only b fails and b reaches nothing else: unknown.
        assert_eq!(
            (
                whole.resource_up_ms,
                whole.resource_down_ms,
                whole.resource_unknown_ms
            ),
            (5 * MIN, 5 * MIN, 10 * MIN)
        );
        assert_eq!(
            whole.channels["b"],
            ChannelAgg {
                channel_ok_ms: 0,
                channel_fail_ms: 3 * MIN
            }
        );
        let mut parts = resource(&mos, LIS, 0, 13 * MIN);
        parts.add(&resource(&mos, LIS, 13 * MIN, 60 * MIN));
        assert_eq!(parts, whole);
    }

    fn spans_of(raw: &[(i64, i64)]) -> Vec<(Ms, Ms)> {
        let mut v: Vec<(Ms, Ms)> = raw.iter().map(|(s, l)| (s * MIN, (s + l) * MIN)).collect();
        union_spans(&mut v)
    }

    proptest::proptest! {
        /// Every observed instant is exactly one of up, down, unknown; a channel is judged only
        /// while the resource is up; the sums are additive over any split.
        #[test]
        fn partitions_observed_time(
            mos in proptest::collection::vec(
                (
                    proptest::collection::vec((0i64..100, 1i64..30), 0..4),
                    proptest::collection::vec((0i64..100, 1i64..30), 0..4),
                    proptest::collection::vec((0i64..100, 1i64..30), 0..3),
                ),
                1..4,
            ),
            cut in 1i64..129,
        ) {
            let mos: Vec<(String, MoSpans)> = mos
                .iter()
                .enumerate()
                .map(|(i, (seen, ok, other))| {
                    let mut m = MoSpans::default();
                    m.seen[LIS] = spans_of(seen);
                    // ok ⊆ seen, as MoSpans::of builds them.
                    let mut ok_in: Vec<(Ms, Ms)> = Vec::new();
                    for &(s, e) in &spans_of(ok) {
                        crate::reach::intersect(&m.seen[LIS], s, e, |x, y| ok_in.push((x, y)));
                    }
                    m.ok[LIS] = union_spans(&mut ok_in);
                    m.ok[MIS] = spans_of(other);
                    m.seen[MIS] = m.ok[MIS].clone();
                    (format!("mo{i}"), m)
                })
                .collect();
            let (a, b) = (0, 130 * MIN);
            let r = resource(&mos, LIS, a, b);
            let mut all: Vec<(Ms, Ms)> = mos.iter().flat_map(|(_, m)| m.seen[LIS].clone()).collect();
            let observed = crate::reach::union_len(&mut all);
            proptest::prop_assert_eq!(r.resource_up_ms + r.resource_down_ms + r.resource_unknown_ms, observed);
            let mut any_ok: Vec<(Ms, Ms)> = mos.iter().flat_map(|(_, m)| m.ok[LIS].clone()).collect();
            // Up while somebody reached it, less what was disputed (one МО against two).
            proptest::prop_assert!(r.resource_up_ms <= crate::reach::union_len(&mut any_ok));
            if mos.len() < 3 {
                proptest::prop_assert_eq!(r.resource_up_ms, crate::reach::union_len(&mut any_ok));
            }
            for (mo, m) in &mos {
                let ch = r.channels.get(mo).copied().unwrap_or_default();
                let mut ok = m.ok[LIS].clone();
                let ok_len = crate::reach::union_len(&mut ok);
                proptest::prop_assert!(ch.channel_ok_ms <= ok_len);
                if mos.len() < 3 {
                    proptest::prop_assert_eq!(ch.channel_ok_ms, ok_len);
                }
                proptest::prop_assert!(ch.channel_ok_ms + ch.channel_fail_ms <= r.resource_up_ms);
            }
            let m = cut * MIN;
            let mut parts = resource(&mos, LIS, a, m);
            parts.add(&resource(&mos, LIS, m, b));
            proptest::prop_assert_eq!(parts, r);
        }
    }

    /// From host rows: probe results count only while their host is up.
    #[test]
    fn spans_from_hosts() {
        use crate::ProbeRow;
        let up = [(10 * MIN, 20 * MIN)];
        let p = [ProbeRow {
            cat: LIS as u8,
            start: 0,
            end: 30 * MIN,
            ok: true,
            closed: true,
        }];
        let m = MoSpans::of(
            &[HostReach {
                up: &up,
                probes: &p,
            }],
            0,
            60 * MIN,
        );
        assert_eq!(m.ok[LIS], vec![(10 * MIN, 20 * MIN)]);
        assert_eq!(m.seen[LIS], vec![(10 * MIN, 20 * MIN)]);
        assert!(m.ok[MIS].is_empty());
    }
}
