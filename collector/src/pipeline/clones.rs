//! Cloned machine ids (issue 13, item 10): two PCs made from one disk image share
//! `/etc/machine-id` (or Windows' `MachineGuid`, which sysprep keeps), so agents that derive
//! their host id from it claim the same host. Each agent install numbers its messages under its
//! own random instance id (`inst`, kept in its state dir and stable across restarts; a reinstall
//! makes a new one and never sends under the old one again). So one host id heard live from two
//! instances within a short window is two machines, not one machine restarted.
//!
//! Logic without I/O: the pipeline feeds every live (not replayed) sequenced message with the
//! collector's receive time.

use std::collections::HashMap;

/// Keyed by ids from the wire, looked up for every live message: foldhash, randomly seeded,
/// and nested so that a lookup borrows the ids instead of allocating a key.
type IdMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Two instances of one host id heard live within this window are two machines; a reported
/// clone clears once one instance has been heard alone for longer than this window (the other
/// PC re-imaged, given its own host id, or retired). A clone that returns later is reported
/// (and counted) again. An agent
/// reinstalled on the same PC stops sending under the old instance at once, so a window of a
/// few heartbeat intervals (30 s by default) tells the two cases apart; 10 minutes also covers
/// clones that are switched on in turns during a working day.
pub(crate) const CLONE_WINDOW_MS: i64 = 10 * 60_000;

/// The pipeline tells the watch of an instance's live messages at most once per this
/// interval (its first message always): an instance's "last heard" is then at most this
/// stale, against a window of ten minutes, and the watch costs one lookup per instance per
/// 10 s instead of one per message (4 % of the collector's CPU in a 60,000 msg/s burst).
pub(crate) const CLONE_SAMPLE_MS: i64 = 10_000;

/// At most this many instances are remembered per host id (the newest).
const MAX_INSTS: usize = 8;

/// What [`CloneWatch::seen`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloneVerdict {
    /// Nothing new.
    Quiet,
    /// The host id is now heard from `insts` instances at once (first time for this host id,
    /// or more than before): count it and show the warning.
    Cloned { insts: usize },
    /// A reported host id is still heard from several instances, but fewer than reported
    /// (one of three went silent): update the warning's count, count nothing.
    Fewer { insts: usize },
    /// A reported host id has been heard from this one instance alone for more than
    /// [`CLONE_WINDOW_MS`] (see [`CloneWatch::seen`]): take the warning away.
    Cleared,
}

/// Per host id (МО, host), the instances heard live recently.
#[derive(Debug, Default)]
pub(crate) struct CloneWatch {
    /// МО → host id → instances with when each was last heard.
    hosts: IdMap<IdMap<Vec<(String, i64)>>>,
    /// Host ids reported as cloned.
    reported: HashMap<(String, String), Reported>,
}

/// A host id reported as cloned.
#[derive(Debug)]
struct Reported {
    /// How many instances the warning names.
    insts: usize,
    /// The instance heard alone since the last message of any other, the time of its first
    /// message of that stretch and of its latest one; a gap longer than the window (the PC
    /// was off) starts a new stretch: nothing was heard in it.
    solo: Option<(String, i64, i64)>,
}

impl CloneWatch {
    /// A live message of `inst` for (`mo`, `host`) received at `now_ms`.
    ///
    /// A reported clone clears when one instance has been heard alone — no other instance,
    /// no gap in its own messages longer than [`CLONE_WINDOW_MS`] — for more than
    /// [`CLONE_WINDOW_MS`]. A host id nobody hears keeps its warning (nothing says the clone
    /// was resolved: both PCs may just be off for the night).
    pub(crate) fn seen(&mut self, mo: &str, host: &str, inst: &str, now_ms: i64) -> CloneVerdict {
        let list = match self.hosts.get_mut(mo).and_then(|m| m.get_mut(host)) {
            Some(l) => l,
            None => self
                .hosts
                .entry(mo.to_owned())
                .or_default()
                .entry(host.to_owned())
                .or_default(),
        };
        if let [(i, t)] = list.as_mut_slice()
            && i == inst
        {
            // The common case: one install, heard again.
            *t = (*t).max(now_ms);
            return CloneVerdict::Quiet;
        }
        match list.iter_mut().find(|(i, _)| i == inst) {
            Some(e) => e.1 = e.1.max(now_ms),
            None => {
                if list.len() >= MAX_INSTS {
                    list.sort_by_key(|e| std::cmp::Reverse(e.1));
                    list.truncate(MAX_INSTS - 1);
                }
                list.push((inst.to_owned(), now_ms));
            }
        }
        let live = list
            .iter()
            .filter(|(_, t)| now_ms - *t <= CLONE_WINDOW_MS)
            .count();
        let key = (mo.to_owned(), host.to_owned());
        let Some(r) = self.reported.get_mut(&key) else {
            if live < 2 {
                return CloneVerdict::Quiet;
            }
            self.reported.insert(
                key,
                Reported {
                    insts: live,
                    solo: None,
                },
            );
            return CloneVerdict::Cloned { insts: live };
        };
        let solo = match r.solo.take() {
            Some((i, since, last)) if i == inst && now_ms - last <= CLONE_WINDOW_MS => {
                (i, since, now_ms.max(last))
            }
            _ => (inst.to_owned(), now_ms, now_ms),
        };
        let alone_for = solo.2 - solo.1;
        r.solo = Some(solo);
        if alone_for > CLONE_WINDOW_MS {
            self.reported.remove(&key);
            // Forget the silent ones: a clone that returns is a new finding.
            list.retain(|(i, _)| i == inst);
            return CloneVerdict::Cleared;
        }
        if live > r.insts {
            r.insts = live;
            CloneVerdict::Cloned { insts: live }
        } else if live < r.insts && live >= 2 {
            r.insts = live;
            CloneVerdict::Fewer { insts: live }
        } else {
            CloneVerdict::Quiet
        }
    }

    /// Host ids heard from two or more instances within the window before `now_ms`.
    #[cfg(test)]
    pub(crate) fn cloned(&self, now_ms: i64) -> Vec<(String, String, usize)> {
        let mut out: Vec<(String, String, usize)> = self
            .hosts
            .iter()
            .flat_map(|(mo, m)| m.iter().map(move |(host, list)| (mo, host, list)))
            .filter_map(|(mo, host, list)| {
                let n = list
                    .iter()
                    .filter(|(_, t)| now_ms - *t <= CLONE_WINDOW_MS)
                    .count();
                (n >= 2).then(|| (mo.clone(), host.clone(), n))
            })
            .collect();
        out.sort();
        out
    }
}

/// The kind of the warning (its text up to the first `:`), by which it is replaced or cleared.
pub(crate) const WARNING_KIND: &str = "Клонированный идентификатор машины";

/// The Russian warning for a cloned host id (UI, API, log).
pub(crate) fn warning_ru(mo: &str, host: &str, insts: usize) -> String {
    format!(
        "{WARNING_KIND}: узел «{host}» (МО {mo}) одновременно передают {insts} \
         разных установки агента — вероятно, компьютеры развернуты из одного образа диска. \
         Задайте каждому свой host_id или пересоздайте идентификатор машины \
         (systemd-machine-id-setup, sysprep)."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// Two installs alternate under one host id: one warning, then quiet.
    #[test]
    fn two_installs_at_once_are_reported_once() {
        let mut w = CloneWatch::default();
        assert_eq!(w.seen("mo", "h", "i1", 0), CloneVerdict::Quiet);
        assert_eq!(w.seen("mo", "h", "i1", 30_000), CloneVerdict::Quiet);
        assert_eq!(
            w.seen("mo", "h", "i2", 31_000),
            CloneVerdict::Cloned { insts: 2 }
        );
        for t in 1..100 {
            assert_eq!(
                w.seen("mo", "h", "i1", 31_000 + t * 1000),
                CloneVerdict::Quiet
            );
            assert_eq!(
                w.seen("mo", "h", "i2", 31_500 + t * 1000),
                CloneVerdict::Quiet
            );
        }
        assert_eq!(w.cloned(140_000), vec![("mo".into(), "h".into(), 2)]);
        // A third clone is reported again.
        assert_eq!(
            w.seen("mo", "h", "i3", 141_000),
            CloneVerdict::Cloned { insts: 3 }
        );
    }

    /// A reinstall (new instance, the old one never heard again after the window) is not a
    /// clone; neither are two hosts of one МО, nor one host id in two МО.
    #[test]
    fn reinstall_is_not_a_clone() {
        let mut w = CloneWatch::default();
        w.seen("mo", "h", "old", 0);
        assert_eq!(w.seen("mo", "h", "new", 11 * MIN), CloneVerdict::Quiet);
        assert_eq!(w.seen("mo", "h2", "x", 11 * MIN), CloneVerdict::Quiet);
        assert_eq!(w.seen("mo2", "h", "y", 11 * MIN), CloneVerdict::Quiet);
        assert!(w.cloned(11 * MIN).is_empty());
    }

    /// The window: the clone reads as cloned while both are heard, and clears after.
    #[test]
    fn clears_when_one_falls_silent() {
        let mut w = CloneWatch::default();
        w.seen("mo", "h", "a", 0);
        w.seen("mo", "h", "b", 5 * MIN);
        assert_eq!(w.cloned(9 * MIN).len(), 1);
        w.seen("mo", "h", "b", 12 * MIN);
        assert!(w.cloned(12 * MIN).is_empty());
    }

    /// The reported warning clears once one install has been heard alone for more than the
    /// window, and not a moment earlier; a clone that comes back later is a new finding.
    #[test]
    fn a_resolved_clone_clears_after_ten_minutes_of_one_install() {
        let mut w = CloneWatch::default();
        w.seen("mo", "h", "a", 0);
        assert_eq!(
            w.seen("mo", "h", "b", 1_000),
            CloneVerdict::Cloned { insts: 2 }
        );
        // `b` is re-imaged after its message at 1 s; `a` keeps sending every 30 s from 30 s.
        let mut t = 30_000;
        while t <= 30_000 + CLONE_WINDOW_MS {
            assert_eq!(w.seen("mo", "h", "a", t), CloneVerdict::Quiet, "at {t}");
            t += 30_000;
        }
        assert_eq!(w.cloned(t - 30_000), Vec::new(), "b is out of the window");
        assert_eq!(w.seen("mo", "h", "a", t), CloneVerdict::Cleared);
        assert_eq!(w.seen("mo", "h", "a", t + 30_000), CloneVerdict::Quiet);
        // `b` returns (the same image switched on again): reported and counted again.
        assert_eq!(
            w.seen("mo", "h", "b", t + 60_000),
            CloneVerdict::Cloned { insts: 2 }
        );
    }

    /// While both are heard, however long, the warning stays.
    #[test]
    fn two_live_installs_never_clear() {
        let mut w = CloneWatch::default();
        w.seen("mo", "h", "a", 0);
        assert_eq!(w.seen("mo", "h", "b", 0), CloneVerdict::Cloned { insts: 2 });
        for t in 1..200 {
            // `a` every 30 s, `b` every 9 minutes.
            assert_eq!(w.seen("mo", "h", "a", t * 30_000), CloneVerdict::Quiet);
            if t % 18 == 0 {
                assert_eq!(w.seen("mo", "h", "b", t * 30_000), CloneVerdict::Quiet);
            }
        }
    }

    /// Three installs, one falls silent: the count goes down without a new finding. A host id
    /// nobody hears keeps its warning: both clones off for the night are still clones in the
    /// morning (no clearing, no second count).
    #[test]
    fn fewer_installs_rewrite_the_warning_and_a_night_off_keeps_it() {
        let mut w = CloneWatch::default();
        w.seen("mo", "h", "a", 0);
        w.seen("mo", "h", "b", 0);
        assert_eq!(w.seen("mo", "h", "c", 0), CloneVerdict::Cloned { insts: 3 });
        assert_eq!(w.seen("mo", "h", "a", 5 * MIN), CloneVerdict::Quiet);
        assert_eq!(w.seen("mo", "h", "b", 5 * MIN), CloneVerdict::Quiet);
        assert_eq!(
            w.seen("mo", "h", "a", 11 * MIN),
            CloneVerdict::Fewer { insts: 2 }
        );
        assert_eq!(w.seen("mo", "h", "b", 11 * MIN), CloneVerdict::Quiet);
        // Both off for a night; `a` is switched on first in the morning.
        let morning = 24 * 60 * MIN;
        for t in 0..8 {
            assert_eq!(
                w.seen("mo", "h", "a", morning + t * MIN),
                CloneVerdict::Quiet
            );
        }
        assert_eq!(
            w.seen("mo", "h", "b", morning + 8 * MIN),
            CloneVerdict::Quiet
        );
        assert_eq!(w.cloned(morning + 8 * MIN).len(), 1);
    }

    #[test]
    fn warning_is_russian_and_names_the_host() {
        let s = warning_ru("1.2.3", "pc-01", 2);
        assert!(s.starts_with("Клонированный идентификатор машины"));
        assert!(s.contains("«pc-01»") && s.contains("2 разных установки"));
    }
}
