//! `dozor-availability`: the region's roster and the maths over it, without I/O beyond reading
//! a roster file — availability over periods, counts per МО and site, the regional indicator
//! table. Everything here takes plain rows and instants (Unix ms) and is unit-tested to the
//! second; the collector's store loads the rows and its report layer serves the results.
//! Definitions: `docs/indicators.md`.

pub mod calendar;
pub mod indicators;
pub mod offhours;
pub mod period;
pub mod planned;
pub mod reach;
pub mod resource;
pub mod roster;
pub mod timeline;
pub mod usage;

pub use calendar::{Calendar, WorkCal};
pub use indicators::{
    Availability, AvailabilityBy, Counts, IndicatorRow, IndicatorTable, Unit, availability, counts,
    indicators,
};
pub use offhours::{OffHours, offhours};
pub use period::{Period, PeriodError};
pub use reach::{ReachAgg, mo_reach};
pub use resource::{ChannelAgg, MoSpans, ResourceAgg, resource, resources};
pub use timeline::{HostAgg, Outages, Piece, PieceState, host_agg, host_pieces};

use dozor_proto::{Category, Role};
use serde::Serialize;
use std::collections::BTreeMap;

/// Unix milliseconds.
pub type Ms = i64;

/// Why a host was silent after an "up" segment, stored with that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum GapCause {
    /// The segment is the host's latest and no `offline`/`lost` has been seen since: the host is
    /// up until its heartbeats are overdue (`tol` after the last message), lost after that.
    Pending = 0,
    /// A graceful `offline` was seen in the gap (planned shutdown or reboot).
    Shutdown = 1,
    /// No `offline`, and the next segment booted within the gap shortly after: a crash reboot.
    Reboot = 2,
    /// A `lost` (last will or lapsed heartbeats) was seen in the gap.
    Lost = 3,
    /// Nothing was seen in the gap: lost by silence (unknown near collector outages).
    Silent = 4,
}

impl GapCause {
    pub fn from_i64(v: i64) -> GapCause {
        match v {
            1 => GapCause::Shutdown,
            2 => GapCause::Reboot,
            3 => GapCause::Lost,
            4 => GapCause::Silent,
            _ => GapCause::Pending,
        }
    }

    /// True when an explicit `offline`/`lost` was seen: the silence was observed, so only the
    /// collector's own outages are unknown.
    pub fn is_marked(self) -> bool {
        matches!(self, GapCause::Shutdown | GapCause::Lost)
    }
}

/// One stored "up" segment of a host with the gap that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegRow {
    /// First message of the segment.
    pub start: Ms,
    /// Last message of the segment (inclusive).
    pub end: Ms,
    /// Cause of the gap `[end, next)`.
    pub cause: GapCause,
    /// Start of the next segment; `None` for the latest segment (open gap).
    pub next: Option<Ms>,
}

/// One stored reachability interval of a (host, target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRow {
    /// Index of the target's category in [`Category::ALL`].
    pub cat: u8,
    /// A result was taken at `start` (or the state held there, for a row continued at midnight).
    pub start: Ms,
    /// The state held until here.
    pub end: Ms,
    pub ok: bool,
    /// True when `end` is itself a result of this state; false when the next state took over
    /// at `end`.
    pub closed: bool,
}

impl ProbeRow {
    /// True if the row holds at some instant of `[a, b)`.
    pub fn touches(&self, a: Ms, b: Ms) -> bool {
        self.start < b && (self.start >= a || self.end > a || (self.closed && self.end >= a))
    }
}

/// Bit of a category in the `reached`/`probed` masks.
pub fn cat_bit(c: Category) -> u16 {
    1 << cat_index(c)
}

/// Index of a category in [`Category::ALL`].
pub fn cat_index(c: Category) -> u8 {
    Category::ALL.iter().position(|x| *x == c).unwrap_or(11) as u8
}

/// The category of an index (out of range: `Other`).
pub fn cat_of(i: u8) -> Category {
    Category::ALL
        .get(usize::from(i))
        .copied()
        .unwrap_or(Category::Other)
}

/// A host of the registry, as the derivations see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostInfo {
    pub mo: String,
    pub host: String,
    /// `None` until the host's first birth message.
    pub role: Option<Role>,
    pub site: String,
    pub hostname: String,
    /// First message ever stored, Unix ms.
    pub first_ms: Ms,
}

/// Everything the derivations need about a period, loaded by the store's reader.
#[derive(Debug, Clone, Default)]
pub struct PeriodData {
    pub from: Ms,
    pub to: Ms,
    /// Every registered host with its aggregate over the period (zero when it has no history in
    /// the period).
    pub hosts: Vec<(HostInfo, HostAgg)>,
    /// Reachability of each category from each МО over the period.
    pub mo_reach: BTreeMap<(String, Category), ReachAgg>,
    /// Each central resource's own availability and every МО's channel to it
    /// ([`resource::resources`]).
    pub resources: BTreeMap<Category, ResourceAgg>,
    /// Down time inside planned works, by (МО, host id), already taken out of the hosts'
    /// `down` ([`planned`]; absent: none).
    pub planned: BTreeMap<(String, String), timeline::PlannedAgg>,
    /// Unreachable time of a category from an МО inside planned works scoped to that category
    /// (`target = …`), already taken out of `mo_reach`'s `unreach_ms`.
    pub mo_planned: BTreeMap<(String, Category), i64>,
}

impl PeriodData {
    /// The host's down time inside planned works, if any.
    pub fn planned_of(&self, h: &HostInfo) -> Option<&timeline::PlannedAgg> {
        self.planned.get(&(h.mo.clone(), h.host.clone()))
    }
}

/// Percentage `num / den × 100`, `None` when the denominator is zero.
pub fn pct(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den * 100.0)
}
