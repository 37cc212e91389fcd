//! The "last alive" stamp: a one-line file in the data directory that says when this agent was
//! last known alive and whether its run ended gracefully (issue 13, items 8 and 9).
//!
//! - Every heartbeat rewrites it in place (`<unix ms> run`, fixed width, so the size never
//!   changes): one small write per interval, **no fsync**, so it asks for no cache flush (the
//!   spool's disk-write budget of issue 15; the file system still writes the page and the
//!   inode's mtime back on its own schedule); after a crash or
//!   `kill -9` the page cache still holds it, after a power cut it is as old as the kernel's
//!   writeback left it (up to `vm.dirty_expire_centisecs`, 30 s by default), never newer than
//!   the truth.
//! - A graceful shutdown writes `<unix ms> shutdown` and syncs it (one flush per stop).
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

/// The stamp file of one data directory.
#[derive(Debug, Clone)]
pub struct Stamp {
    path: PathBuf,
}

impl Stamp {
    pub fn new(dir: &Path) -> Stamp {
        Stamp {
            path: dir.join(FILE_NAME),
        }
    }

    /// How the previous run ended, if it left a readable stamp.
    pub fn read(&self) -> Option<PrevEnd> {
        parse(&std::fs::read_to_string(&self.path).ok()?)
    }

    /// The agent is alive at `at_ms` (a heartbeat was made): rewrites the stamp without
    /// syncing. A failure is logged at debug: the stamp only refines dating.
    pub fn beat(&self, at_ms: i64) {
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
    fn a_beat_then_a_shutdown_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Stamp::new(dir.path());
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
