//! Exactly-once counting over at-least-once delivery: per agent instance, which sequence
//! numbers are stored. I/O-free; the store persists its marks in the same transaction as the
//! data they describe, so a restart (even after kill -9) resumes with the same knowledge.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Contiguous delivery progress of one agent instance (what [`Tracker`] persists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMark {
    pub inst: Arc<str>,
    pub mo: Arc<str>,
    pub host: Arc<str>,
    /// Every seq ≤ this is stored (or settled: dropped by the agent's spool bound).
    pub contiguous: u64,
    /// Stored seqs above `contiguous + 1`, ascending, bounded.
    pub above: Vec<u64>,
    /// Messages of this instance stored so far (each sequence number once): the ledger the
    /// fault drills compare with what agents produced.
    pub stored: u64,
    /// Sequence numbers settled without storing (refused by policy).
    pub refused: u64,
}

/// Largest number of out-of-order sequence numbers tracked above the contiguous mark of one
/// instance. Beyond it, new numbers are refused (not stored, not confirmed); the agent keeps
/// them in its spool and sends them again later.
pub const MAX_ABOVE: usize = 100_000;

/// The key of an agent instance's delivery progress: `{mo}/{host}/{inst}`. Keyed by the
/// identity that sent it and not by `inst` alone, so that a host claiming another host's `inst`
/// (with an absurd `oldest_seq`, say) only ever moves its own marks. The store keeps marks under
/// this key.
pub fn key(mo: &str, host: &str, inst: &str) -> String {
    let mut k = String::with_capacity(mo.len() + host.len() + inst.len() + 2);
    key_into(&mut k, mo, host, inst);
    k
}

/// Writes [`key`] into `buf` (cleared first): the pipeline reuses one buffer for every
/// message instead of allocating a key each.
pub fn key_into(buf: &mut String, mo: &str, host: &str, inst: &str) {
    buf.clear();
    buf.push_str(mo);
    buf.push('/');
    buf.push_str(host);
    buf.push('/');
    buf.push_str(inst);
}

/// The `inst` part of a key (ids never contain `/`; marks written before keys existed are
/// bare instance ids).
fn inst_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// What to do with a sequenced message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: store it.
    New,
    /// Already stored: count it once only (drop), but confirm again.
    Duplicate,
    /// Too far ahead of the contiguous mark: refuse for now.
    WindowFull,
}

/// What [`Tracker::take`] did with a sequenced message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Not seen before: recorded as in the batch being built (and the agent's `oldest_seq`
    /// settled below it).
    New,
    /// Already stored: nothing recorded, its confirmation is due again.
    Duplicate,
    /// Too far ahead of the contiguous mark: refused for now, nothing recorded.
    WindowFull,
    /// A new instance and no room to track it: refused for now, nothing recorded.
    NoRoom,
}

#[derive(Debug, Clone)]
struct Inst {
    /// Its key in [`Tracker`]'s map (shared), listed in the dirty list when touched.
    key: Arc<str>,
    inst: Arc<str>,
    mo: Arc<str>,
    host: Arc<str>,
    contiguous: u64,
    above: BTreeSet<u64>,
    /// `contiguous` as of the last committed batch.
    committed: u64,
    /// `committed` as last confirmed to the agent.
    confirmed: Option<u64>,
    /// A confirmation is due (new data committed, or a duplicate showed the agent missed one).
    due: bool,
    /// When the last confirmation was sent (ms since the epoch; `i64::MIN`: never).
    confirmed_at_ms: i64,
    /// When [`Tracker::take_noting`] last reported a new number of this instance as due for
    /// noting (`i64::MIN`: never).
    noted_ms: i64,
    /// Touched since the last batch was cut.
    dirty: bool,
    /// Messages of this instance written to the store (each number once).
    stored: u64,
    /// Numbers settled without storing: refused by policy.
    refused: u64,
}

/// Delivery progress of one instance, for the API and the fault drills.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryView {
    pub inst: Arc<str>,
    pub mo: Arc<str>,
    pub host: Arc<str>,
    pub contiguous: u64,
    pub committed: u64,
    pub pending_above: usize,
    pub stored: u64,
    pub refused: u64,
}

type InstMap = HashMap<Arc<str>, Inst, foldhash::fast::RandomState>;

/// Delivery progress of every known agent instance.
#[derive(Debug, Default)]
pub struct Tracker {
    /// foldhash: fast on short strings, randomly seeded (see `state::IdMap`).
    /// Ids are shared (`Arc<str>`) with marks and views, so that copying them is a count.
    insts: InstMap,
    max_insts: usize,
    /// Keys of the instances whose `dirty` flag is set, each once: [`Tracker::take_dirty`]
    /// visits these instead of walking every instance per batch.
    dirty: Vec<Arc<str>>,
}

impl Tracker {
    /// A tracker for at most `max_insts` instances, loaded with the store's marks.
    pub fn new(max_insts: usize, marks: Vec<DeliveryMark>) -> Tracker {
        let mut t = Tracker {
            insts: HashMap::with_capacity_and_hasher(marks.len(), Default::default()),
            max_insts,
            dirty: Vec::new(),
        };
        for m in marks {
            // Marks from before keys named the identity: re-key them (the larger mark wins).
            let k: Arc<str> = if m.inst.contains('/') {
                m.inst.clone()
            } else {
                key(&m.mo, &m.host, &m.inst).into()
            };
            if t.insts
                .get(&k)
                .is_some_and(|i| i.contiguous >= m.contiguous)
            {
                continue;
            }
            t.insts.insert(
                k.clone(),
                Inst {
                    key: k,
                    inst: Arc::from(inst_of(&m.inst)),
                    mo: m.mo,
                    host: m.host,
                    contiguous: m.contiguous,
                    above: m.above.into_iter().collect(),
                    committed: m.contiguous,
                    confirmed: None,
                    due: true,
                    confirmed_at_ms: i64::MIN,
                    noted_ms: i64::MIN,
                    dirty: false,
                    stored: m.stored,
                    refused: m.refused,
                },
            );
        }
        t
    }

    /// Instances tracked.
    pub fn len(&self) -> usize {
        self.insts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insts.is_empty()
    }

    /// Classifies `seq` of `inst` without changing anything.
    pub fn check(&self, inst: &str, seq: u64) -> Verdict {
        match self.insts.get(inst) {
            None => Verdict::New,
            Some(i) if seq <= i.contiguous || i.above.contains(&seq) => Verdict::Duplicate,
            Some(i) if i.above.len() >= MAX_ABOVE && seq > i.contiguous + 1 => Verdict::WindowFull,
            Some(_) => Verdict::New,
        }
    }

    /// True if a new instance can be tracked.
    pub fn has_room(&self, inst: &str) -> bool {
        self.insts.contains_key(inst) || self.insts.len() < self.max_insts
    }

    /// Records that `seq` of `inst` is in the batch being built.
    pub fn record(&mut self, inst: &str, mo: &str, host: &str, seq: u64) {
        if let Some(i) = self.mark(inst, mo, host, seq) {
            i.stored += 1;
        }
    }

    /// Records that `seq` of `inst` was refused by policy: settled, never stored.
    pub fn refuse(&mut self, inst: &str, mo: &str, host: &str, seq: u64) {
        if let Some(i) = self.mark(inst, mo, host, seq) {
            i.refused += 1;
        }
    }

    /// Records `seq` of `inst`; the instance when it was not recorded before.
    fn mark(&mut self, inst: &str, mo: &str, host: &str, seq: u64) -> Option<&mut Inst> {
        let i = entry(&mut self.insts, &mut self.dirty, inst, mo, host);
        if !mark(i, seq) {
            return None;
        }
        set_dirty(&mut self.dirty, i);
        Some(i)
    }

    /// Decides about sequence number `seq` of instance `key` (of `mo`/`host`) and records it,
    /// looking the instance up twice where the steps one by one took up to eight: what [`Tracker::has_room`], [`Tracker::check`], then
    /// [`Tracker::record`] and [`Tracker::settle_below`] (for `oldest`, the agent's oldest
    /// spooled number) or [`Tracker::confirm_again`] do one after the other.
    pub fn take(
        &mut self,
        key: &str,
        mo: &str,
        host: &str,
        seq: u64,
        oldest: Option<u64>,
    ) -> Taken {
        self.take_noting(key, mo, host, seq, oldest, None).0
    }

    /// [`Tracker::take`], and with `note = Some((now_ms, every_ms))` also whether a new number
    /// of this instance is the first one in `every_ms` (then `now_ms` is remembered): lets the
    /// caller sample per-instance bookkeeping (the clone watch) from the lookup it already
    /// pays for, instead of a lookup of its own for every message.
    pub fn take_noting(
        &mut self,
        key: &str,
        mo: &str,
        host: &str,
        seq: u64,
        oldest: Option<u64>,
        note: Option<(i64, i64)>,
    ) -> (Taken, bool) {
        if self.insts.len() >= self.max_insts && !self.insts.contains_key(key) {
            return (Taken::NoRoom, false);
        }
        let i = entry(&mut self.insts, &mut self.dirty, key, mo, host);
        if seq <= i.contiguous || i.above.contains(&seq) {
            i.due = true;
            i.confirmed = None;
            return (Taken::Duplicate, false);
        }
        if i.above.len() >= MAX_ABOVE && seq > i.contiguous + 1 {
            return (Taken::WindowFull, false);
        }
        mark(i, seq);
        i.stored += 1;
        if let Some(oldest) = oldest {
            settle(i, oldest);
        }
        let noted = match note {
            Some((now_ms, every_ms)) if now_ms.saturating_sub(i.noted_ms) >= every_ms => {
                i.noted_ms = now_ms;
                true
            }
            _ => false,
        };
        set_dirty(&mut self.dirty, i);
        (Taken::New, noted)
    }

    /// Progress of every instance, in no particular order (readers sort what they show).
    pub fn views(&self) -> Vec<DeliveryView> {
        self.insts
            .values()
            .map(|i| DeliveryView {
                inst: i.inst.clone(),
                mo: i.mo.clone(),
                host: i.host.clone(),
                contiguous: i.contiguous,
                committed: i.committed,
                pending_above: i.above.len(),
                stored: i.stored,
                refused: i.refused,
            })
            .collect()
    }

    /// The agent says every number below `oldest` is settled (confirmed or dropped by its bound).
    pub fn settle_below(&mut self, inst: &str, mo: &str, host: &str, oldest: u64) {
        let i = entry(&mut self.insts, &mut self.dirty, inst, mo, host);
        if settle(i, oldest) {
            set_dirty(&mut self.dirty, i);
        }
    }

    /// Marks that a confirmation should be sent again (a duplicate arrived).
    pub fn confirm_again(&mut self, inst: &str) {
        if let Some(i) = self.insts.get_mut(inst) {
            i.due = true;
            i.confirmed = None;
        }
    }

    /// The marks of every instance touched since the last call, for the next batch.
    pub fn take_dirty(&mut self) -> Vec<DeliveryMark> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for inst in self.dirty.drain(..) {
            let Some(i) = self.insts.get_mut(&inst) else {
                continue;
            };
            i.dirty = false;
            out.push(DeliveryMark {
                inst,
                mo: i.mo.clone(),
                host: i.host.clone(),
                contiguous: i.contiguous,
                above: i.above.iter().copied().collect(),
                stored: i.stored,
                refused: i.refused,
            });
        }
        out
    }

    /// The store committed a batch carrying these marks.
    pub fn committed(&mut self, marks: &[DeliveryMark]) {
        for m in marks {
            if let Some(i) = self.insts.get_mut(&m.inst)
                && m.contiguous > i.committed
            {
                i.committed = m.contiguous;
                i.due = true;
            }
        }
    }

    /// Confirmations to send at `now_ms`: (mo, host, inst, acked_seq) for each instance with
    /// one due, except those confirmed less than `min_gap_ms` ago: they stay due and go once the
    /// gap has passed, with everything committed by then. A host sending once per interval is
    /// confirmed at the next call after each message; a host sending many a second (a replay,
    /// the switch-on burst, a benchmark) once per `min_gap_ms`, which spares the broker one
    /// retained publish per message in exactly the storms that load it most.
    pub fn take_due(
        &mut self,
        now_ms: i64,
        min_gap_ms: i64,
        mut f: impl FnMut(&str, &str, &str, u64),
    ) {
        for i in self.insts.values_mut().filter(|i| i.due) {
            if i.confirmed == Some(i.committed) || i.committed == 0 {
                i.due = false;
                continue;
            }
            if now_ms.saturating_sub(i.confirmed_at_ms) < min_gap_ms {
                continue;
            }
            i.due = false;
            i.confirmed = Some(i.committed);
            i.confirmed_at_ms = now_ms;
            f(&i.mo, &i.host, &i.inst, i.committed);
        }
    }
}

/// The instance `inst` of `insts`, created (and listed in `dirty`) if missing. Two lookups
/// when it exists (the borrow checker cannot yet return a `get_mut` borrow conditionally).
fn entry<'a>(
    insts: &'a mut InstMap,
    dirty: &mut Vec<Arc<str>>,
    inst: &str,
    mo: &str,
    host: &str,
) -> &'a mut Inst {
    if !insts.contains_key(inst) {
        let key: Arc<str> = Arc::from(inst);
        dirty.push(key.clone());
        insts.insert(
            key.clone(),
            Inst {
                key,
                inst: Arc::from(inst_of(inst)),
                mo: Arc::from(mo),
                host: Arc::from(host),
                contiguous: 0,
                above: BTreeSet::new(),
                committed: 0,
                confirmed: None,
                due: false,
                confirmed_at_ms: i64::MIN,
                noted_ms: i64::MIN,
                dirty: true,
                stored: 0,
                refused: 0,
            },
        );
    }
    // Inserted above if it was missing.
    insts.get_mut(inst).expect("instance present")
}

/// Marks `i` dirty, listing its key once.
fn set_dirty(list: &mut Vec<Arc<str>>, i: &mut Inst) {
    if !i.dirty {
        i.dirty = true;
        list.push(i.key.clone());
    }
}

/// Records `seq` of `i`; false when it was already recorded.
fn mark(i: &mut Inst, seq: u64) -> bool {
    // Fast path: the next number in order (the common case) touches no tree node.
    if seq == i.contiguous + 1 && i.above.is_empty() {
        i.contiguous = seq;
        return true;
    }
    if seq <= i.contiguous || !i.above.insert(seq) {
        return false;
    }
    collapse(i);
    true
}

/// Settles every number of `i` below `oldest`; false when that changed nothing.
fn settle(i: &mut Inst, oldest: u64) -> bool {
    let settled = oldest.saturating_sub(1);
    if settled <= i.contiguous {
        return false;
    }
    i.contiguous = settled;
    i.above = i.above.split_off(&(settled + 1));
    collapse(i);
    true
}

/// Moves the contiguous mark over the numbers that now follow it without a gap.
fn collapse(i: &mut Inst) {
    while i.above.first() == Some(&(i.contiguous + 1)) {
        i.above.pop_first();
        i.contiguous += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contiguous_and_out_of_order() {
        let mut t = Tracker::new(10, vec![]);
        assert_eq!(t.check("a", 1), Verdict::New);
        t.record("a", "mo", "h", 1);
        t.record("a", "mo", "h", 3);
        assert_eq!(t.check("a", 1), Verdict::Duplicate);
        assert_eq!(t.check("a", 2), Verdict::New);
        assert_eq!(t.check("a", 3), Verdict::Duplicate);
        let marks = t.take_dirty();
        assert_eq!(marks[0].contiguous, 1);
        assert_eq!(marks[0].above, vec![3]);
        t.record("a", "mo", "h", 2);
        let marks = t.take_dirty();
        assert_eq!((marks[0].contiguous, marks[0].above.len()), (3, 0));
        assert!(t.take_dirty().is_empty());
    }

    #[test]
    fn confirmations_follow_commits_only() {
        let mut t = Tracker::new(10, vec![]);
        t.record("a", "mo", "h", 1);
        t.record("a", "mo", "h", 2);
        let mut sent = vec![];
        t.take_due(0, 0, |_, _, i, s| sent.push((i.to_string(), s)));
        assert!(sent.is_empty(), "nothing committed yet");
        let marks = t.take_dirty();
        t.committed(&marks);
        t.take_due(0, 0, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(sent, vec![("a".to_string(), 2)]);
        t.take_due(0, 0, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(sent.len(), 1, "no repeat without news");
        t.confirm_again("a");
        t.take_due(0, 0, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(sent.len(), 2, "a duplicate asks for the confirmation again");
    }

    /// A host confirmed a moment ago waits out the gap, then gets one confirmation for all it
    /// sent meanwhile; a host quiet for longer than the gap is confirmed at once.
    #[test]
    fn a_busy_host_is_confirmed_once_per_gap() {
        let mut t = Tracker::new(10, vec![]);
        let mut sent = vec![];
        let commit = |t: &mut Tracker, seq| {
            t.record("a", "mo", "h", seq);
            let marks = t.take_dirty();
            t.committed(&marks);
        };
        commit(&mut t, 1);
        t.take_due(10_000, 5_000, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(sent, vec![("a".to_string(), 1)], "the first at once");
        for (seq, now) in [(2, 11_000), (3, 12_000), (4, 14_999)] {
            commit(&mut t, seq);
            t.take_due(now, 5_000, |_, _, i, s| sent.push((i.to_string(), s)));
        }
        assert_eq!(sent.len(), 1, "within the gap: held");
        t.confirm_again("a");
        t.take_due(14_999, 5_000, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(sent.len(), 1, "a duplicate within the gap: held too");
        t.take_due(15_000, 5_000, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(
            sent[1],
            ("a".to_string(), 4),
            "after it: everything at once"
        );
        t.take_due(40_000, 5_000, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(sent.len(), 2, "no news, no confirmation");
        commit(&mut t, 5);
        t.take_due(40_000, 5_000, |_, _, i, s| sent.push((i.to_string(), s)));
        assert_eq!(
            sent[2],
            ("a".to_string(), 5),
            "quiet for longer than the gap: at once"
        );
    }

    /// `take_noting` reports the first new number of an instance in each interval, per
    /// instance, and never a duplicate or a message taken without `note`.
    #[test]
    fn new_numbers_are_noted_once_per_interval_per_instance() {
        let mut t = Tracker::new(10, vec![]);
        let take = |t: &mut Tracker, k: &str, seq, note| t.take_noting(k, "mo", k, seq, None, note);
        assert_eq!(
            take(&mut t, "a", 1, Some((0, 10))),
            (Taken::New, true),
            "the first"
        );
        assert_eq!(
            take(&mut t, "b", 1, Some((1, 10))),
            (Taken::New, true),
            "another instance"
        );
        assert_eq!(take(&mut t, "a", 2, Some((9, 10))), (Taken::New, false));
        assert_eq!(
            take(&mut t, "a", 2, Some((10, 10))),
            (Taken::Duplicate, false)
        );
        assert_eq!(take(&mut t, "a", 3, None), (Taken::New, false));
        assert_eq!(
            take(&mut t, "a", 4, Some((10, 10))),
            (Taken::New, true),
            "next interval"
        );
        assert_eq!(take(&mut t, "b", 2, Some((10, 10))), (Taken::New, false));
    }

    #[test]
    fn settle_below_skips_dropped_numbers() {
        let mut t = Tracker::new(10, vec![]);
        t.record("a", "mo", "h", 10);
        t.record("a", "mo", "h", 12);
        t.settle_below("a", "mo", "h", 10);
        let m = t.take_dirty();
        assert_eq!((m[0].contiguous, m[0].above.clone()), (10, vec![12]));
        assert_eq!(t.check("a", 5), Verdict::Duplicate);
    }

    #[test]
    fn restart_from_marks() {
        let marks = vec![DeliveryMark {
            inst: "a".into(),
            mo: "mo".into(),
            host: "h".into(),
            contiguous: 5,
            above: vec![7],
            stored: 6,
            refused: 0,
        }];
        let t = Tracker::new(10, marks.clone());
        let a = key("mo", "h", "a");
        assert_eq!(t.check(&a, 5), Verdict::Duplicate);
        assert_eq!(t.check(&a, 6), Verdict::New);
        assert_eq!(t.check(&a, 7), Verdict::Duplicate);
        // The restored instance takes one of the places.
        assert_eq!(t.len(), 1);
        assert!(t.has_room("x"));
        let full = Tracker::new(1, marks);
        assert!(full.has_room(&a), "a known instance always has its place");
        assert!(
            !full.has_room("x"),
            "a new one does not when the tracker is full"
        );
    }

    #[test]
    fn bare_marks_are_rekeyed_by_identity() {
        let mark = |inst: &str, contiguous| DeliveryMark {
            inst: inst.into(),
            mo: "mo".into(),
            host: "h".into(),
            contiguous,
            above: vec![],
            stored: contiguous,
            refused: 0,
        };
        let t = Tracker::new(10, vec![mark("a", 5), mark("mo/h/a", 3)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(&key("mo", "h", "a"), 5), Verdict::Duplicate);
        assert_eq!(t.views()[0].inst.as_ref(), "a");
        // Another host's instance of the same name is another key.
        assert_eq!(t.check(&key("mo", "x", "a"), 1), Verdict::New);
    }

    proptest! {
        /// Any order and repetition of deliveries: each number is New exactly once.
        #[test]
        fn each_seq_counted_once(seqs in proptest::collection::vec(1u64..200, 0..600)) {
            let mut t = Tracker::new(10, vec![]);
            let mut counted = std::collections::HashSet::new();
            for s in seqs {
                match t.check("a", s) {
                    Verdict::New => {
                        prop_assert!(counted.insert(s), "seq {} counted twice", s);
                        t.record("a", "mo", "h", s);
                    }
                    Verdict::Duplicate => prop_assert!(counted.contains(&s)),
                    Verdict::WindowFull => prop_assert!(false),
                }
            }
            let m = t.take_dirty();
            if let Some(m) = m.first() {
                for s in 1..=m.contiguous {
                    prop_assert!(counted.contains(&s));
                }
            }
        }

        /// `take` does in one call what the pipeline did with `has_room`, `check`, `record`,
        /// `settle_below` and `confirm_again`: same verdicts, same marks per batch (the dirty
        /// list holds each touched instance once), same confirmations, same views.
        #[test]
        fn take_equals_the_separate_steps(
            ops in proptest::collection::vec(
                (0usize..4, 1u64..60, proptest::option::of(1u64..70), any::<bool>()),
                0..400,
            )
        ) {
            let mut one = Tracker::new(3, vec![]);
            let mut steps = Tracker::new(3, vec![]);
            for (n, (who, seq, oldest, cut)) in ops.into_iter().enumerate() {
                let k = key("mo", &format!("h{who}"), "i");
                let host = format!("h{who}");
                let got = one.take(&k, "mo", &host, seq, oldest);
                let want = if !steps.has_room(&k) {
                    Taken::NoRoom
                } else {
                    match steps.check(&k, seq) {
                        Verdict::Duplicate => {
                            steps.confirm_again(&k);
                            Taken::Duplicate
                        }
                        Verdict::WindowFull => Taken::WindowFull,
                        Verdict::New => {
                            steps.record(&k, "mo", &host, seq);
                            if let Some(o) = oldest {
                                steps.settle_below(&k, "mo", &host, o);
                            }
                            Taken::New
                        }
                    }
                };
                prop_assert_eq!(got, want, "op {}", n);
                if cut {
                    let mut a = one.take_dirty();
                    let mut b = steps.take_dirty();
                    a.sort_by(|x, y| x.inst.cmp(&y.inst));
                    b.sort_by(|x, y| x.inst.cmp(&y.inst));
                    prop_assert_eq!(&a, &b);
                    let mut seen = std::collections::HashSet::new();
                    prop_assert!(a.iter().all(|m| seen.insert(m.inst.clone())), "listed once");
                    one.committed(&a);
                    steps.committed(&b);
                    let (mut ca, mut cb) = (vec![], vec![]);
                    one.take_due(0, 0, |m, h, i, s| ca.push(format!("{m}/{h}/{i}={s}")));
                    steps.take_due(0, 0, |m, h, i, s| cb.push(format!("{m}/{h}/{i}={s}")));
                    ca.sort();
                    cb.sort();
                    prop_assert_eq!(ca, cb);
                }
            }
            let mut va = one.views();
            let mut vb = steps.views();
            va.sort_by(|x, y| x.host.cmp(&y.host));
            vb.sort_by(|x, y| x.host.cmp(&y.host));
            prop_assert_eq!(va, vb);
            prop_assert!(one.take_dirty().iter().all(|m| !m.inst.is_empty()));
        }
    }
}
