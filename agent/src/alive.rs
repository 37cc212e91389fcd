//! The "last alive" stamp: a one-line file in the data directory that says when this agent was
//! last known alive and whether its run ended gracefully (issue 13, items 8 and 9).
//!
//! - The run's first heartbeat rewrites it in place (`<unix ms> run`, fixed width, so the size
//!   never changes), and then one heartbeat every [`BEAT_EVERY_MS`] (5 minutes), **no fsync**.
//!   It used to be rewritten at every heartbeat; on ext4 each rewrite's mtime change cost one
//!   journal commit with cache flushes: 120 commits and 240 flushes an hour measured at the
//!   30 s interval, issue 15's budget being 60 flushes an hour (docs/benchmarks.md, "The alive
//!   stamp on the device"). A per-heartbeat stamp bought nothing the collector does not
//!   already have: while the link is up it stores each heartbeat live, while the link is down
//!   the spool commits every message durably, so the last stored (or replayed) message dates
//!   an unclean end as closely (docs/reliability.md, "The alive stamp"). What only the stamp
//!   knows is a graceful stop's instant:
//! - A graceful shutdown writes `<unix ms> shutdown` and syncs it (one flush per stop).
//!
//! After a crash or `kill -9` the page cache still holds the stamp, after a power cut it is as
//! old as the kernel's writeback left it, never newer than the truth; the collector uses a
//! `run` stamp only when it is later than the last message it stored.
//!
//! At start the agent reads it into [`PrevEnd`] and sends it in every `birth` of the run: the
//! birth is sequenced, so it is spooled and replayed like any message, and the collector dates
//! the previous run's end by it (a shutdown while the channel was down reads as a shutdown, not
//! a loss).

use std::io::Write;
use std::path::{Path, PathBuf};

use dozor_proto::PrevEnd;

/// File name of the stamp inside the data directory.
pub const FILE_NAME: &str = "alive";

/// Parses the stamp's text; `None` for anything else (a torn write after a crash is simply
/// not used: the collector then keeps dating by the last message it has).
pub fn parse(text: &str) -> Option<PrevEnd> {
    let mut parts = text.split_whitespace();
    let at: i64 = parts.next()?.parse().ok()?;
    let shutdown = match parts.next()? {
        "run" => false,
        "shutdown" => true,
        _ => return None,
    };
    (parts.next().is_none() && at > 0).then_some(PrevEnd { at, shutdown })
}

/// The text of a stamp, always [`STAMP_LEN`] bytes: a rewrite in place never changes the
/// file's size (no truncation, so only the inode's mtime changes on disk).
pub fn render(at_ms: i64, shutdown: bool) -> String {
    format!(
        "{at_ms:>15} {:<8}\n",
        if shutdown { "shutdown" } else { "run" }
    )
}

/// Length of every stamp [`render`] makes.
pub const STAMP_LEN: usize = 25;

/// A running agent rewrites its stamp at most once per this many milliseconds of heartbeat time
/// (the first heartbeat of a run always writes it: a stale `shutdown` stamp of an earlier run
/// must not outlive this run's start).
pub const BEAT_EVERY_MS: i64 = 300_000;

/// Whether a heartbeat at `at_ms` rewrites the stamp last written at `last_ms` (`None`: not yet
/// in this run). A clock stepped back also rewrites it, so the stamp follows the clock the
/// heartbeats carry.
pub fn beat_due(last_ms: Option<i64>, at_ms: i64) -> bool {
    last_ms.is_none_or(|last| at_ms < last || at_ms - last >= BEAT_EVERY_MS)
}

/// The stamp file of one data directory.
#[derive(Debug, Clone)]
pub struct Stamp {
    path: PathBuf,
    /// Heartbeat instant of this run's last rewrite.
    last_beat: Option<i64>,
}

impl Stamp {
    pub fn new(dir: &Path) -> Stamp {
        Stamp {
            path: dir.join(FILE_NAME),
            last_beat: None,
        }
    }

    /// How the previous run ended, if it left a readable stamp.
    pub fn read(&self) -> Option<PrevEnd> {
        parse(&std::fs::read_to_string(&self.path).ok()?)
    }

    /// The agent is alive at `at_ms` (a heartbeat was made): rewrites the stamp without
    /// syncing when [`beat_due`]. A failure is logged at debug: the stamp only refines dating.
    pub fn beat(&mut self, at_ms: i64) {
        if !beat_due(self.last_beat, at_ms) {
            return;
        }
        self.last_beat = Some(at_ms);
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .and_then(|mut f| f.write_all(render(at_ms, false).as_bytes()));
        if let Err(e) = r {
            tracing::debug!(path = %self.path.display(), error = %e, "alive stamp not written");
        }
    }

    /// The run ends gracefully at `at_ms`: writes and syncs the stamp.
    pub fn shutdown(&self, at_ms: i64) {
        let r = std::fs::File::create(&self.path).and_then(|mut f| {
            f.write_all(render(at_ms, true).as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = r {
            tracing::warn!(path = %self.path.display(), error = %e, "shutdown stamp not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_renders_and_nothing_else() {
        for shutdown in [false, true] {
            assert_eq!(render(1_796_000_000_123, shutdown).len(), STAMP_LEN);
            assert_eq!(
                parse(&render(1_796_000_000_123, shutdown)),
                Some(PrevEnd {
                    at: 1_796_000_000_123,
                    shutdown
                })
            );
        }
        for bad in [
            "",
            "\n",
            "1796000000123",
            "1796000000123 crash",
            "x run",
            "-5 run",
            "0 shutdown",
            "1796000000123 run extra",
            "17960000", // torn write
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_run_stamps_its_first_heartbeat_then_every_five_minutes() {
        assert!(beat_due(None, 1_000));
        assert!(!beat_due(Some(1_000), 1_000 + 30_000));
        assert!(!beat_due(Some(1_000), 1_000 + BEAT_EVERY_MS - 1));
        assert!(beat_due(Some(1_000), 1_000 + BEAT_EVERY_MS));
        assert!(beat_due(Some(1_000), 999), "a clock stepped back");
        // An hour at the 30 s interval: 120 heartbeats, 12 rewrites.
        let (mut last, mut writes) = (None, 0);
        for k in 0..120 {
            let at = 1_796_000_000_000 + k * 30_000;
            if beat_due(last, at) {
                last = Some(at);
                writes += 1;
            }
        }
        assert_eq!(writes, 12);
    }

    #[test]
    fn a_rare_beat_leaves_the_file_at_the_last_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        // A stale shutdown stamp of an earlier run is overwritten by this run's first beat.
        Stamp::new(dir.path()).shutdown(500);
        let mut s = Stamp::new(dir.path());
        s.beat(1_000);
        s.beat(31_000);
        let run = |at| {
            Some(PrevEnd {
                at,
                shutdown: false,
            })
        };
        assert_eq!(s.read(), run(1_000));
        s.beat(1_000 + BEAT_EVERY_MS);
        assert_eq!(s.read(), run(1_000 + BEAT_EVERY_MS));
    }

    #[test]
    fn a_beat_then_a_shutdown_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Stamp::new(dir.path());
        assert_eq!(s.read(), None);
        s.beat(1_000);
        assert_eq!(
            s.read(),
            Some(PrevEnd {
                at: 1_000,
                shutdown: false
            })
        );
        s.shutdown(2_000);
        assert_eq!(
            s.read(),
            Some(PrevEnd {
                at: 2_000,
                shutdown: true
            })
        );
    }
}
