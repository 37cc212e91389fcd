//! A host's timeline: stored "up" segments and the causes of the gaps between them, turned into
//! labelled pieces (up / down with cause / unknown) over a window, and integrated into the
//! per-role availability sums.
//!
//! Rules (see `docs/indicators.md`):
//! - between the first and the last message of a segment the host is **up**;
//! - the latest segment's open gap is up for `tol` after the last message (the next heartbeat is
//!   not overdue yet), lost after that;
//! - time the collector was not running is **unknown**, never down; a silence nobody marked
//!   (`reboot`, `silent`, overdue `pending`) within `tol` of a collector outage is unknown too
//!   (the collector could not have noticed it);
//! - after the collector starts, a host not heard since before the start is **unknown** until it
//!   had a fair chance to reconnect ([`Outages::reconnect_ms`] + `tol`): a restart never produces
//!   down; after that window the stored history (replayed or not) decides;
//! - servers: every down second counts; workstations: only working hours count, a graceful
//!   shutdown is never down, and a lost/reboot silence is down only within the working window
//!   in which it began.

use super::{GapCause, Ms, ProbeRow, SegRow};
use serde::Serialize;

/// The longest an agent takes to reconnect after the collector (with its embedded broker) comes
/// back, before it sends its first message: the agent's reconnect backoff is capped at 30 s
/// (`BACKOFF_CAP`, `agent/src/publish/mqtt.rs`; a delay is uniform in [d/2, d]) and a connection
/// attempt that started while the collector's machine was still rebooting may hang for the
/// agent's 10 s connect timeout before that sleep. The first message after the connection comes
/// within one heartbeat interval (the spool replays at once), which the host's `tol`
/// (2.5 intervals) covers with room to spare.
pub const AGENT_RECONNECT_MS: Ms = 30_000 + 10_000;

/// Time the collector was not running, as sorted disjoint spans, and how long after each
/// restart a host is given to reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outages {
    spans: Vec<(Ms, Ms)>,
    /// After an outage ends, hosts not heard since before its end are unknown for this long
    /// plus their `tol`.
    reconnect_ms: Ms,
}

impl Default for Outages {
    fn default() -> Self {
        Outages {
            spans: Vec::new(),
            reconnect_ms: AGENT_RECONNECT_MS,
        }
    }
}

impl Outages {
    /// No outage at all.
    pub fn none() -> Outages {
        Outages::default()
    }

    /// The same outages with another reconnect allowance (at least 0).
    pub fn with_reconnect(mut self, ms: Ms) -> Outages {
        self.reconnect_ms = ms.max(0);
        self
    }

    /// The reconnect allowance after each outage, without the host's `tol`.
    pub fn reconnect_ms(&self) -> Ms {
        self.reconnect_ms
    }

    /// Outages from the collector's runs `(start, end)`: before the first run, between runs and
    /// after the last one up to `horizon`. Without any run there is no outage (the store was
    /// filled without collector start records).
    pub fn from_runs(runs: &[(Ms, Ms)], horizon: Ms) -> Outages {
        let mut runs: Vec<(Ms, Ms)> = runs.iter().copied().filter(|r| r.1 >= r.0).collect();
        runs.sort_unstable();
        let mut spans = Vec::new();
        let Some(first) = runs.first() else {
            return Outages {
                spans,
                ..Outages::default()
            };
        };
        spans.push((Ms::MIN, first.0));
        let mut covered = first.1;
        for r in &runs[1..] {
            if r.0 > covered {
                spans.push((covered, r.0));
            }
            covered = covered.max(r.1);
        }
        if covered < horizon {
            spans.push((covered, Ms::MAX));
        }
        Outages {
            spans,
            ..Outages::default()
        }
    }

    pub fn spans(&self) -> &[(Ms, Ms)] {
        &self.spans
    }

    /// Splits `[x, y)`, part of a silence that began at `g0`, into sub-spans inside (true) and
    /// outside (false) the outages, each outage widened by `pad` on both sides; an outage that
    /// ended after `g0` (the host was not heard since before the restart) is also widened after
    /// its end by the reconnect allowance `reconnect` (the larger of the two wins). With
    /// `backlog` (a silence closed by later messages), so is an outage that ended less than
    /// [`Outages::reconnect_ms`] before `g0`: a message made after the start by an agent still
    /// in its reconnect backoff reaches the collector only with the agent's backlog, and a
    /// replay in progress (oldest first, after the live messages) leaves a silence before the
    /// live messages that is not one.
    #[allow(clippy::too_many_arguments)]
    fn split(
        &self,
        x: Ms,
        y: Ms,
        pad: Ms,
        g0: Ms,
        reconnect: Ms,
        backlog: bool,
        mut f: impl FnMut(Ms, Ms, bool),
    ) {
        let mut at = x;
        for &(s, e) in &self.spans {
            if at >= y {
                break;
            }
            let late = backlog && g0 < e.saturating_add(self.reconnect_ms);
            let post = if g0 < e || late {
                pad.max(reconnect)
            } else {
                pad
            };
            let (s, e) = (s.saturating_sub(pad), e.saturating_add(post));
            if e <= at {
                continue;
            }
            if s >= y {
                break;
            }
            if s > at {
                f(at, s, false);
                at = s;
            }
            let end = e.min(y);
            if end > at {
                f(at, end, true);
                at = end;
            }
        }
        if at < y {
            f(at, y, false);
        }
    }
}

/// State of a piece of a host's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceState {
    Up,
    /// Down, with the cause of the gap (`Silent` and overdue `Pending` are reported as `Lost`).
    Down(GapCause),
    /// The collector could not observe the host.
    Unknown,
    /// Down (with the gap's cause) inside an announced planned work ([`super::planned`]);
    /// never counted as down. [`host_pieces`] never yields it; [`super::planned::split_piece`]
    /// does.
    Planned(GapCause),
}

/// A labelled piece `[start, end)` of a host's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Piece {
    pub start: Ms,
    pub end: Ms,
    pub state: PieceState,
    /// For pieces of a gap: when the silence began (the last message before it).
    pub gap_start: Ms,
}

/// The labelled pieces of `[a, b)` from a host's segments (ascending by start; must include the
/// segment whose gap covers `a`, if any). Time before the first segment is not part of the
/// host's life and yields no piece. `b` must not be after the horizon ("now").
pub fn host_pieces(
    segs: &[SegRow],
    tol: Ms,
    outages: &Outages,
    a: Ms,
    b: Ms,
    mut emit: impl FnMut(Piece),
) {
    let mut piece = |start: Ms, end: Ms, state: PieceState, gap_start: Ms| {
        let (s, e) = (start.max(a), end.min(b));
        if s < e {
            emit(Piece {
                start: s,
                end: e,
                state,
                gap_start,
            });
        }
    };
    for seg in segs {
        if seg.start >= b {
            break;
        }
        piece(seg.start, seg.end, PieceState::Up, seg.start);
        let g0 = seg.end;
        let g1 = seg.next.unwrap_or(Ms::MAX);
        if g1 <= a || g0 >= b {
            continue;
        }
        let cause = match (seg.cause, seg.next) {
            (GapCause::Pending, Some(_)) => GapCause::Silent,
            (c, _) => c,
        };
        let (x, y) = (g0.max(a), g1.min(b));
        let rc = outages.reconnect_ms.saturating_add(tol);
        // A silence closed by later messages may be backlog not replayed yet: an agent sends
        // its live messages first and replays oldest first after them. An open silence after
        // the start is not (the latest message is live: the host had reconnected), nor is an
        // `offline`, the agent's own word.
        let backlog = cause != GapCause::Shutdown && seg.next.is_some();
        match cause {
            GapCause::Shutdown | GapCause::Lost => {
                outages.split(x, y, 0, g0, rc, backlog, |s, e, out| {
                    let st = if out {
                        PieceState::Unknown
                    } else {
                        PieceState::Down(cause)
                    };
                    piece(s, e, st, g0);
                })
            }
            GapCause::Reboot | GapCause::Silent => {
                outages.split(x, y, tol, g0, rc, backlog, |s, e, out| {
                    let st = if out {
                        PieceState::Unknown
                    } else {
                        PieceState::Down(if cause == GapCause::Silent {
                            GapCause::Lost
                        } else {
                            cause
                        })
                    };
                    piece(s, e, st, g0);
                })
            }
            GapCause::Pending => {
                let due = g0.saturating_add(tol);
                if x < due {
                    outages.split(x, due.min(y), 0, g0, rc, false, |s, e, out| {
                        let st = if out {
                            PieceState::Unknown
                        } else {
                            PieceState::Up
                        };
                        piece(s, e, st, g0);
                    });
                }
                if y > due {
                    outages.split(x.max(due), y, tol, g0, rc, backlog, |s, e, out| {
                        let st = if out {
                            PieceState::Unknown
                        } else {
                            PieceState::Down(GapCause::Lost)
                        };
                        piece(s, e, st, g0);
                    });
                }
            }
        }
    }
}

/// A host's sums over a window, for both readings of its role; additive over disjoint windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostAgg {
    /// Around the clock (servers): up, down (any cause), unknown, ms.
    pub up_ms: i64,
    pub down_ms: i64,
    pub unknown_ms: i64,
    /// Within the МО's working hours (workstations): up, down (lost/reboot that began in the
    /// same working window), unknown, ms. Graceful shutdowns are excluded.
    pub up_w_ms: i64,
    pub down_w_ms: i64,
    pub unknown_w_ms: i64,
    /// Switched off (graceful shutdown) within the working window in which the shutdown began,
    /// ms: «выключен в рабочее время», neither down nor hidden ([`super::offhours`]).
    pub off_w_ms: i64,
    /// Working windows with some of that time (one per working day).
    pub off_w_days: i64,
    /// The host sent at least one message in the window.
    pub active: bool,
    /// Categories (bits of [`super::cat_bit`]) with an ok result in the window.
    pub reached: u16,
    /// Categories with any result in the window.
    pub probed: u16,
}

impl HostAgg {
    pub fn add(&mut self, o: &HostAgg) {
        self.up_ms += o.up_ms;
        self.down_ms += o.down_ms;
        self.unknown_ms += o.unknown_ms;
        self.up_w_ms += o.up_w_ms;
        self.down_w_ms += o.down_w_ms;
        self.unknown_w_ms += o.unknown_w_ms;
        self.off_w_ms += o.off_w_ms;
        self.off_w_days += o.off_w_days;
        self.active |= o.active;
        self.reached |= o.reached;
        self.probed |= o.probed;
    }

    /// Up, down, unknown for the role: servers around the clock, workstations (and hosts of
    /// unknown role) in working hours.
    pub fn for_role(&self, server: bool) -> (i64, i64, i64) {
        if server {
            (self.up_ms, self.down_ms, self.unknown_ms)
        } else {
            (self.up_w_ms, self.down_w_ms, self.unknown_w_ms)
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == HostAgg::default()
    }
}

/// Integrates a host's window `[a, b)`: `work` are the МО's working windows overlapping it
/// ([`super::WorkCal::windows`]), `probes` the host's reachability rows touching it.
pub fn host_agg(
    segs: &[SegRow],
    probes: &[ProbeRow],
    tol: Ms,
    outages: &Outages,
    work: &[(Ms, Ms)],
    a: Ms,
    b: Ms,
) -> HostAgg {
    let mut agg = HostAgg {
        active: segs.iter().any(|s| s.start < b && s.end >= a),
        ..HostAgg::default()
    };
    for p in probes.iter().filter(|p| p.touches(a, b)) {
        let bit = 1u16 << p.cat;
        agg.probed |= bit;
        if p.ok {
            agg.reached |= bit;
        }
    }
    let mut off = super::offhours::OffWindows::default();
    host_pieces(segs, tol, outages, a, b, |p| {
        integrate(&mut agg, &p, work, None, &mut off)
    });
    agg
}

/// Time a host was down inside planned works; additive over disjoint windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlannedAgg {
    /// Around the clock (servers).
    pub planned_ms: i64,
    /// Within working hours, by the workstation rules (a planned shutdown is not expected up
    /// anyway, so only lost/reboot silences that began in the working window count).
    pub planned_w_ms: i64,
    /// «Выключен в рабочее время» the works explain: a workstation switched off inside a
    /// planned work is not "off" (ms, and working days), to be taken out of the figures made
    /// without the works.
    pub off_w_ms: i64,
    pub off_w_days: i64,
}

/// As [`host_agg`], with the host's planned windows (sorted disjoint spans,
/// [`super::planned::host_windows`]): down time inside them is moved out of `down` into the
/// returned [`PlannedAgg`].
#[allow(clippy::too_many_arguments)]
pub fn host_agg_planned(
    segs: &[SegRow],
    probes: &[ProbeRow],
    tol: Ms,
    outages: &Outages,
    work: &[(Ms, Ms)],
    planned: &[(Ms, Ms)],
    a: Ms,
    b: Ms,
) -> (HostAgg, PlannedAgg) {
    let mut agg = HostAgg {
        active: segs.iter().any(|s| s.start < b && s.end >= a),
        reached: 0,
        probed: 0,
        ..HostAgg::default()
    };
    for p in probes.iter().filter(|p| p.touches(a, b)) {
        let bit = 1u16 << p.cat;
        agg.probed |= bit;
        if p.ok {
            agg.reached |= bit;
        }
    }
    let mut pl = PlannedAgg::default();
    let mut off = super::offhours::OffWindows::default();
    host_pieces(segs, tol, outages, a, b, |p| {
        super::planned::split_piece(p, planned, |q| {
            integrate(&mut agg, &q, work, Some(&mut pl), &mut off);
        });
    });
    if !planned.is_empty() {
        let base = host_agg(segs, probes, tol, outages, work, a, b);
        pl.off_w_ms = (base.off_w_ms - agg.off_w_ms).max(0);
        pl.off_w_days = (base.off_w_days - agg.off_w_days).max(0);
    }
    (agg, pl)
}

fn integrate(
    agg: &mut HostAgg,
    p: &Piece,
    work: &[(Ms, Ms)],
    mut pl: Option<&mut PlannedAgg>,
    off: &mut super::offhours::OffWindows,
) {
    let len = p.end - p.start;
    match p.state {
        PieceState::Up => agg.up_ms += len,
        PieceState::Down(_) => agg.down_ms += len,
        PieceState::Unknown => agg.unknown_ms += len,
        PieceState::Planned(_) => {
            if let Some(pl) = pl.as_deref_mut() {
                pl.planned_ms += len;
            }
        }
    }
    for &(w0, w1) in work {
        let (s, e) = (p.start.max(w0), p.end.min(w1));
        if s >= e {
            continue;
        }
        let len = e - s;
        let began_here = (w0..w1).contains(&p.gap_start);
        match p.state {
            PieceState::Up => agg.up_w_ms += len,
            PieceState::Unknown => agg.unknown_w_ms += len,
            PieceState::Down(GapCause::Shutdown) => {
                if began_here {
                    off.add(agg, w0, len);
                }
            }
            PieceState::Down(_) => {
                if began_here {
                    agg.down_w_ms += len;
                }
            }
            PieceState::Planned(GapCause::Shutdown) => {}
            PieceState::Planned(_) => {
                if let Some(pl) = pl.as_deref_mut()
                    && began_here
                {
                    pl.planned_w_ms += len;
                }
            }
        }
    }
}

/// The up intervals of `[a, b)`, ascending.
pub fn up_spans(segs: &[SegRow], tol: Ms, outages: &Outages, a: Ms, b: Ms) -> Vec<(Ms, Ms)> {
    let mut out: Vec<(Ms, Ms)> = Vec::new();
    host_pieces(segs, tol, outages, a, b, |p| {
        if p.state == PieceState::Up {
            match out.last_mut() {
                Some(l) if l.1 == p.start => l.1 = p.end,
                _ => out.push((p.start, p.end)),
            }
        }
    });
    out
}

#[cfg(test)]
mod tests;
