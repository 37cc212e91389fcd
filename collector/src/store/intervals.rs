//! Interval building without I/O: where a message (evidence that a host was up at `t`) or a
//! probe result goes among the stored intervals next to it, and what the gaps are labelled.
//!
//! Messages arrive late and out of order (replays), so every operation takes the neighbours of
//! `t` — the interval with the greatest start ≤ `t` (`prev`) and the one after it (`next`) — and
//! says how they change. The SQLite store fetches the neighbours (from its in-memory tail for
//! in-order data, from the database otherwise) and applies the result.

use crate::availability::{GapCause, Ms};

/// Two boot-time estimates closer than this are the same boot (uptime is in whole seconds and
/// clock-offset corrections jitter).
pub const BOOT_MARGIN_MS: Ms = 10_000;

/// A stored "up" segment: first..last message of one boot of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub start: Ms,
    pub end: Ms,
    /// Hash of the birth's `boot_id`, once a birth of this boot was seen.
    pub boot_id: Option<i64>,
    /// Earliest estimate of the boot instant (message time − uptime).
    pub boot_ms: Option<Ms>,
}

/// Evidence that a host was up at `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    pub t: Ms,
    pub boot_id: Option<i64>,
    /// `t − uptime`, when the message carries the uptime.
    pub boot_ms: Option<Ms>,
}

impl Evidence {
    fn seg(&self) -> Seg {
        Seg {
            start: self.t,
            end: self.t,
            boot_id: self.boot_id,
            boot_ms: self.boot_ms,
        }
    }
}

/// True if `later` belongs to a boot that began after `earlier` ended.
pub fn rebooted_between(earlier: &Seg, later: &Seg) -> bool {
    if let (Some(a), Some(b)) = (earlier.boot_id, later.boot_id)
        && a != b
    {
        return true;
    }
    later
        .boot_ms
        .is_some_and(|b| b > earlier.end + BOOT_MARGIN_MS)
}

fn merge_boot(a: &mut Seg, b: &Seg) {
    a.boot_id = a.boot_id.or(b.boot_id);
    a.boot_ms = match (a.boot_ms, b.boot_ms) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
}

/// How evidence changes the segments around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Already inside `prev`; `Some` when `prev` learned its boot from it.
    Inside(Option<Seg>),
    /// `prev` grows to the evidence.
    ExtendPrev(Seg),
    /// `next` grows back to the evidence.
    ExtendNext(Seg),
    /// The evidence joins both: `prev` becomes the returned segment and `next` goes away.
    Bridge(Seg),
    /// A new segment of one message.
    New(Seg),
}

/// Places evidence `e` between `prev` (greatest start ≤ `e.t`) and `next` (least start >
/// `e.t`); messages at most `tol` apart of the same boot join one segment.
pub fn place(prev: Option<&Seg>, next: Option<&Seg>, e: &Evidence, tol: Ms) -> Place {
    let es = e.seg();
    if let Some(p) = prev
        && e.t <= p.end
    {
        // Inside (a conflicting boot inside a segment is clock trouble: the segment stands).
        let mut q = *p;
        if !rebooted_between(&es, p) && !rebooted_between(p, &es) {
            merge_boot(&mut q, &es);
        }
        return Place::Inside((q != *p).then_some(q));
    }
    let joins_prev = prev.filter(|p| e.t - p.end <= tol && !rebooted_between(p, &es));
    let joins_next = next.filter(|n| n.start - e.t <= tol && !rebooted_between(&es, n));
    match (joins_prev, joins_next) {
        (Some(p), Some(n)) => {
            let mut s = *p;
            s.end = n.end;
            merge_boot(&mut s, &es);
            merge_boot(&mut s, n);
            Place::Bridge(s)
        }
        (Some(p), None) => {
            let mut s = *p;
            s.end = e.t;
            merge_boot(&mut s, &es);
            Place::ExtendPrev(s)
        }
        (None, Some(n)) => {
            let mut s = *n;
            s.start = e.t;
            merge_boot(&mut s, &es);
            Place::ExtendNext(s)
        }
        (None, None) => Place::New(es),
    }
}

/// What was seen in a gap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// A graceful `offline`.
    pub offline: bool,
    /// A `lost` (last will, lapsed heartbeats).
    pub lost: bool,
}

/// Marker kinds as stored.
pub const MARK_OFFLINE: i64 = 1;
pub const MARK_LOST: i64 = 3;

impl Marks {
    pub fn add(&mut self, kind: i64) {
        match kind {
            MARK_OFFLINE => self.offline = true,
            MARK_LOST => self.lost = true,
            _ => {}
        }
    }
}

/// The cause of the gap after `prev` (until `next`, or open).
pub fn gap_cause(prev: &Seg, next: Option<&Seg>, marks: Marks, reboot_max: Ms) -> GapCause {
    if marks.offline {
        return GapCause::Shutdown;
    }
    match next {
        None if marks.lost => GapCause::Lost,
        None => GapCause::Pending,
        Some(n) if n.start - prev.end <= reboot_max && rebooted_between(prev, n) => {
            GapCause::Reboot
        }
        Some(_) if marks.lost => GapCause::Lost,
        Some(_) => GapCause::Silent,
    }
}

/// A stored reachability interval of one (host, target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PIv {
    pub start: Ms,
    pub end: Ms,
    pub ok: bool,
    /// 0 for none, else error class index + 1.
    pub err: u8,
    /// `end` is a result of this state (else the next state took over at `end`).
    pub closed: bool,
    /// Results in the interval.
    pub n: i64,
    pub lat_sum: i64,
    pub lat_n: i64,
}

/// One probe result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PResult {
    pub t: Ms,
    pub ok: bool,
    pub err: u8,
    pub latency_ms: Option<i64>,
}

impl PIv {
    fn same_state(&self, r: &PResult) -> bool {
        self.ok == r.ok && self.err == r.err
    }

    fn count(&mut self, r: &PResult) {
        self.n += 1;
        if let Some(l) = r.latency_ms {
            self.lat_sum += l;
            self.lat_n += 1;
        }
    }

    fn of(r: &PResult) -> PIv {
        let mut p = PIv {
            start: r.t,
            end: r.t,
            ok: r.ok,
            err: r.err,
            closed: true,
            n: 0,
            lat_sum: 0,
            lat_n: 0,
        };
        p.count(r);
        p
    }
}

/// How a probe result changes the intervals around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeEdit {
    /// New value of `prev`, if it changed.
    pub prev: Option<PIv>,
    /// A new interval to insert.
    pub new: Option<PIv>,
    pub next: NextEdit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextEdit {
    Keep,
    Update(PIv),
    /// `next` was merged into `prev` or into the new interval.
    Delete,
}

/// Places a result between `prev` (greatest start ≤ `r.t`) and `next`: a state holds from a
/// result until the next result if that comes within `tol`; equal states join. A result that
/// contradicts the interval it falls inside (clock trouble) is ignored: `None`.
pub fn place_probe(
    prev: Option<&PIv>,
    next: Option<&PIv>,
    r: &PResult,
    tol: Ms,
) -> Option<ProbeEdit> {
    if let Some(p) = prev
        && r.t <= p.end
    {
        if !p.same_state(r) {
            return None;
        }
        let mut q = *p;
        q.count(r);
        return Some(ProbeEdit {
            prev: Some(q),
            new: None,
            next: NextEdit::Keep,
        });
    }
    let mut prev_edit = None;
    // `cur` is the interval holding the result: the extended prev, or a new one.
    let mut cur_is_prev = false;
    let mut cur = PIv::of(r);
    if let Some(p) = prev.filter(|p| r.t - p.end <= tol) {
        let mut q = *p;
        if p.same_state(r) {
            q.end = r.t;
            q.closed = true;
            q.count(r);
            cur = q;
            cur_is_prev = true;
        } else {
            q.end = r.t;
            q.closed = false;
            prev_edit = Some(q);
        }
    }
    let mut next_edit = NextEdit::Keep;
    if let Some(n) = next.filter(|n| n.start - r.t <= tol) {
        if n.ok == cur.ok && n.err == cur.err {
            cur.end = n.end;
            cur.closed = n.closed;
            cur.n += n.n;
            cur.lat_sum += n.lat_sum;
            cur.lat_n += n.lat_n;
            next_edit = NextEdit::Delete;
        } else {
            cur.end = n.start;
            cur.closed = false;
        }
    }
    Some(if cur_is_prev {
        ProbeEdit {
            prev: Some(cur),
            new: None,
            next: next_edit,
        }
    } else {
        ProbeEdit {
            prev: prev_edit,
            new: Some(cur),
            next: next_edit,
        }
    })
}

/// Splits an interval at the region midnights strictly after its start (and at its end when
/// the end is a midnight), so that every stored interval lies within one region day.
/// `next_midnight(t)` is the first midnight > t.
pub fn split_days(iv: PIv, next_midnight: impl Fn(Ms) -> Ms) -> Vec<PIv> {
    let mut out = Vec::new();
    let mut cur = iv;
    loop {
        let m = next_midnight(cur.start);
        if m > cur.end || (m == cur.end && !cur.closed) {
            out.push(cur);
            return out;
        }
        // Results are counted in the first piece.
        let mut head = cur;
        head.end = m;
        head.closed = false;
        out.push(head);
        cur = PIv {
            start: m,
            n: 0,
            lat_sum: 0,
            lat_n: 0,
            ..iv
        };
        if m == iv.end {
            // The end is a midnight result: a one-instant piece carries it.
            cur.end = m;
            cur.closed = iv.closed;
            out.push(cur);
            return out;
        }
        cur.end = iv.end;
        cur.closed = iv.closed;
    }
}

#[cfg(test)]
mod tests;
