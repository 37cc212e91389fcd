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

/// Two instances of one host id heard live within this window are two machines. An agent
/// reinstalled on the same PC stops sending under the old instance at once, so a window of a
/// few heartbeat intervals (30 s by default) tells the two cases apart; 10 minutes also covers
/// clones that are switched on in turns during a working day.
pub(crate) const CLONE_WINDOW_MS: i64 = 10 * 60_000;

/// At most this many instances are remembered per host id (the newest).
const MAX_INSTS: usize = 8;

/// What [`CloneWatch::seen`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloneVerdict {
    /// Nothing new.
    Quiet,
    /// The host id is now heard from `insts` instances at once (first time for this host id,
    /// or more than before).
    Cloned { insts: usize },
}

/// Per host id (МО, host), the instances heard live recently.
#[derive(Debug, Default)]
pub(crate) struct CloneWatch {
    /// МО → host id → instances with when each was last heard.
    hosts: IdMap<IdMap<Vec<(String, i64)>>>,
    /// Host ids reported as cloned, with how many instances were reported.
    reported: HashMap<(String, String), usize>,
}

impl CloneWatch {
    /// A live message of `inst` for (`mo`, `host`) received at `now_ms`.
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
        if live < 2 {
            return CloneVerdict::Quiet;
        }
        let key = (mo.to_owned(), host.to_owned());
        let before = self.reported.get(&key).copied().unwrap_or(0);
        if live > before {
            self.reported.insert(key, live);
            CloneVerdict::Cloned { insts: live }
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

/// The Russian warning for a cloned host id (UI, API, log).
pub(crate) fn warning_ru(mo: &str, host: &str, insts: usize) -> String {
    format!(
        "Клонированный идентификатор машины: узел «{host}» (МО {mo}) одновременно передают {insts} \
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

    #[test]
    fn warning_is_russian_and_names_the_host() {
        let s = warning_ru("1.2.3", "pc-01", 2);
        assert!(s.starts_with("Клонированный идентификатор машины"));
        assert!(s.contains("«pc-01»") && s.contains("2 разных установки"));
    }
}
