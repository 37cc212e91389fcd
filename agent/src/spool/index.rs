//! The spool's bookkeeping without I/O: which sequence number comes next, what waits for the
//! collector's confirmation, what the bounds drop, what to (re)send when, and what must be
//! written to the file when (write-behind: see [`SpoolIndex::flush_due`]). Time is passed in by
//! the caller (`now` monotonic, `now_ms` wall clock), so every rule is unit-tested here.

use std::collections::VecDeque;
use std::time::Duration;

use dozor_proto::{Kind, SpoolStats};
use tokio::time::Instant;

/// Longest resend backoff: `resend_after` times 2^4 (16 min with the default 60 s).
pub const MAX_BACKOFF_EXP: u32 = 4;

/// How far past a confirmation beyond the counter the counter skips
/// ([`SpoolIndex::skip_past`]). The collector's ack is its contiguous mark: the timeline that
/// went on without this agent may have left a gap there (a message dropped on a full spool) and
/// the collector may already store numbers above it (a replay under way when that timeline
/// ended). Each of those would be dropped as a duplicate if issued again, so the margin must
/// exceed every number a spool can hold: 2^20 (a million; a full default spool of 64 MiB holds
/// about 130 000 messages, 14 days of heartbeats and probes about 80 000). Numbers are free:
/// the collector settles the jumped range through the next heartbeat's `oldest_seq`.
pub const SKIP_MARGIN: u64 = 1 << 20;

/// The largest `acked_seq` the counter is ever moved past ([`SpoolIndex::skip_past`]):
/// 2^53 − 2^32, so that after the largest skip ([`SKIP_MARGIN`] above it) the counter still has
/// 2^32 − 2^20 numbers (130 years at one message a second) before 2^53, the largest integer a
/// JSON reader working in doubles (a dashboard) still reads exactly; and so far below
/// `u64::MAX` (and SQLite's `i64`) that no sum on the counter can overflow. At ten messages a
/// second an agent would reach it in 28 million years: an ack beyond it is forged.
pub const MAX_SKIP_TO: u64 = (1 << 53) - (1 << 32);

/// Bounds and pacing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Total payload bytes kept; the oldest messages are dropped beyond it.
    pub max_bytes: u64,
    /// Messages older than this (by their own `ts`) are dropped.
    pub max_age_ms: i64,
    /// An unconfirmed message is sent again after this long (doubled per fruitless pass).
    pub resend_after: Duration,
    /// Smallest gap between two replayed messages.
    pub replay_interval: Duration,
    /// While connected, a message stays in memory only until it is confirmed or this old;
    /// then everything unconfirmed is written. Zero writes every message at once.
    pub flush_after: Duration,
    /// Sequence numbers reserved per counter write: the file's counter runs ahead of the
    /// numbers issued, so a restart after a crash never reuses a number.
    pub seq_block: u64,
}

/// One spooled message as the index sees it (the payload stays on disk).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub kind: Kind,
    pub ts_ms: i64,
    pub len: u32,
    /// When it was last handed to the broker on the current connection.
    sent_at: Option<Instant>,
    /// `Some(t)`: held in memory only, since `t`; `None`: in the file.
    mem_since: Option<Instant>,
}

impl Entry {
    /// An entry that is in the file (as loaded at start).
    pub fn new(seq: u64, kind: Kind, ts_ms: i64, len: u32) -> Entry {
        Entry {
            seq,
            kind,
            ts_ms,
            len,
            sent_at: None,
            mem_since: None,
        }
    }

    /// True once the message is in the file.
    pub fn is_durable(&self) -> bool {
        self.mem_since.is_none()
    }
}

/// One write of the spool file, as [`SpoolIndex::take_flush`] plans it: insert the payloads of
/// `insert` (held in memory until now), delete every row up to `delete_through`, store the
/// counters. Applied in one transaction, then reported with [`SpoolIndex::flushed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush {
    pub insert: Vec<u64>,
    pub delete_through: Option<u64>,
    /// The counter stored: numbers below it may have been issued; a restart starts here.
    pub next_seq: u64,
    /// Every number below this is in the file, confirmed or dropped once the write lands.
    pub flushed_seq: u64,
    pub dropped: u64,
    pub skipped: u64,
    /// See [`SpoolIndex::set_unconfirmed_from`]; `None` deletes the key.
    pub unconfirmed_from: Option<u64>,
}

/// The result of [`SpoolIndex::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The bounds dropped every message with a sequence number up to this one.
    pub drop_through: Option<u64>,
}

/// What the replayer should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Send this message again (with `replay: true`).
    Send(u64),
    /// Nothing to send before this instant.
    WaitUntil(Instant),
    /// Nothing to send until something changes (an append, a connection).
    Idle,
}

/// An acknowledgement that cannot be right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The collector confirmed a number this spool has not issued yet: the counter went back
    /// (a restored backup), see [`SpoolIndex::skip_past`].
    #[error("acked_seq {acked} is beyond the last issued {last}")]
    Future { acked: u64, last: u64 },
    /// A confirmation beyond [`MAX_SKIP_TO`]: no collector ever sends it; refused.
    #[error("acked_seq {acked} is beyond any number an agent issues ({MAX_SKIP_TO})")]
    Absurd { acked: u64 },
}

/// What [`SpoolIndex::skip_past`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The last number issued before the skip.
    pub last: u64,
    /// Unconfirmed messages (see [`SpoolIndex::unconfirmed_from`]) re-numbered above the skip, `(old, new)`, oldest first: their
    /// payloads must be rewritten with the new number (then [`SpoolIndex::resize`]).
    pub renumbered: Vec<(u64, u64)>,
    /// Older messages held (the backup's), removed and counted as dropped.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pass {
    /// Walking the spool oldest-first; `cursor` is the next sequence number to look at.
    Running { cursor: u64 },
    /// Everything was sent; the earliest resend falls due at this instant.
    Waiting { until: Instant },
    /// Nothing in the spool.
    Idle,
}

/// In-memory index of the spool: sequence numbers, sizes and send state, oldest first.
#[derive(Debug)]
pub struct SpoolIndex {
    limits: Limits,
    entries: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
    connected: bool,
    pass: Pass,
    next_slot: Instant,
    backoff_exp: u32,
    resent_on_timeout: bool,
    /// The counter in the file: every number below it is covered across a crash.
    reserved: u64,
    /// The highest number removed (confirmed or dropped) whose row may still be in the file.
    delete_through: Option<u64>,
    /// Since when a delete or a counter change waits for the next write.
    dirty_since: Option<Instant>,
    /// After a failed write, no new attempt before this instant.
    retry_at: Option<Instant>,
    /// Numbers abandoned at restarts (issued or not, never durable) or jumped over by
    /// [`SpoolIndex::skip_past`], persisted for ledgers.
    skipped: u64,
    /// The counter when the spool was opened: every number from it on was issued by this run.
    opened_at: u64,
    /// Persisted: the counter at the first open since the collector last confirmed anything
    /// (every number from it on was issued by a run that has not reached the collector since,
    /// this one or an earlier one); `None` once a confirmation applied in this run.
    unconfirmed_from: Option<u64>,
}

impl SpoolIndex {
    /// Rebuilds the index from what the store holds. `entries` must be sorted by `seq`;
    /// `next_seq` is raised above every stored number whatever the store said.
    pub fn new(
        limits: Limits,
        entries: Vec<Entry>,
        next_seq: u64,
        dropped: u64,
        now: Instant,
    ) -> SpoolIndex {
        let mut entries: VecDeque<Entry> = entries.into();
        entries.make_contiguous().sort_by_key(|e| e.seq);
        let entries: VecDeque<Entry> = {
            let mut v: Vec<Entry> = entries.into();
            v.dedup_by_key(|e| e.seq);
            v.into()
        };
        let next_seq = entries
            .back()
            .map_or(next_seq, |e| next_seq.max(e.seq + 1))
            .max(1);
        let bytes = entries.iter().map(|e| u64::from(e.len)).sum();
        // Every number below the stored counter may have been issued before a crash.
        let reserved = next_seq;
        SpoolIndex {
            limits,
            entries,
            bytes,
            next_seq,
            dropped,
            connected: false,
            pass: Pass::Idle,
            next_slot: now,
            backoff_exp: 0,
            resent_on_timeout: false,
            reserved,
            delete_through: None,
            dirty_since: None,
            retry_at: None,
            skipped: 0,
            opened_at: next_seq,
            unconfirmed_from: Some(next_seq),
        }
    }

    /// At open: `stored` is the file's `unconfirmed_from`. Kept when present (the earlier runs
    /// since the last confirmation never reached the collector: a restored PC switched off
    /// before its channel came back), else this open's counter.
    pub fn set_unconfirmed_from(&mut self, stored: Option<u64>) {
        self.unconfirmed_from = Some(stored.map_or(self.opened_at, |u| u.min(self.opened_at)));
    }

    /// Every held number from this one on was issued since the collector last confirmed
    /// anything: the messages [`SpoolIndex::skip_past`] re-numbers rather than drops.
    pub fn unconfirmed_from(&self) -> u64 {
        self.unconfirmed_from.unwrap_or(self.opened_at)
    }

    /// Numbers abandoned at restarts since the spool was created (see [`Flush::flushed_seq`]).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// At open: numbers from `flushed_seq` (the last write's mark) up to the counter were
    /// reserved by a run that ended without writing them; they are skipped, never reissued.
    /// `skipped` is the persisted total so far. Returns the new total.
    pub fn skip_unwritten(&mut self, flushed_seq: Option<u64>, skipped: u64) -> u64 {
        let flushed = flushed_seq.unwrap_or(self.next_seq).min(self.next_seq);
        self.skipped = skipped + (self.next_seq - flushed);
        self.skipped
    }

    /// The number the next appended message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The latest number issued (0 before the first message); `state` messages carry it.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Figures for the heartbeat; `oldest_seq` is the lowest number still held.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            pending: self.entries.len() as u64,
            bytes: self.bytes,
            dropped: self.dropped,
            oldest_seq: self.entries.front().map(|e| e.seq),
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        self.position(seq).map(|i| &self.entries[i])
    }

    fn position(&self, seq: u64) -> Option<usize> {
        let i = self.entries.partition_point(|e| e.seq < seq);
        (self.entries.get(i)?.seq == seq).then_some(i)
    }

    fn resend_after(&self) -> Duration {
        self.limits.resend_after * (1u32 << self.backoff_exp)
    }

    /// Adds a message (not yet sent, held in memory: see [`SpoolIndex::flush_due`]) and
    /// applies the bounds, oldest first. The newest message itself is never dropped.
    pub fn append(
        &mut self,
        kind: Kind,
        ts_ms: i64,
        len: u32,
        now_ms: i64,
        now: Instant,
    ) -> Appended {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut e = Entry::new(seq, kind, ts_ms, len);
        e.mem_since = Some(now);
        self.entries.push_back(e);
        self.bytes += u64::from(len);
        if self.connected {
            self.restart_pass_at(seq);
        }
        let by_size = self.drop_while(|ix| ix.bytes > ix.limits.max_bytes);
        let by_age = self.expire(now_ms);
        if by_size.is_some() || by_age.is_some() {
            self.touch(now);
        }
        Appended {
            seq,
            drop_through: by_age.or(by_size),
        }
    }

    /// Drops messages older than the age bound; returns the highest dropped number. The
    /// caller marks the change for the next write ([`SpoolIndex::changed`]).
    pub fn expire(&mut self, now_ms: i64) -> Option<u64> {
        let oldest_kept = now_ms.saturating_sub(self.limits.max_age_ms);
        self.drop_while(|ix| ix.entries.front().is_some_and(|e| e.ts_ms < oldest_kept))
    }

    fn drop_while(&mut self, cond: impl Fn(&SpoolIndex) -> bool) -> Option<u64> {
        let mut through = None;
        while self.entries.len() > 1 && cond(self) {
            if let Some(e) = self.entries.pop_front() {
                self.removed(&e);
                self.dropped += 1;
                through = Some(e.seq);
            }
        }
        through
    }

    /// Bookkeeping of an entry leaving the front of the index: its row, if it has one, is
    /// deleted with the next write.
    fn removed(&mut self, e: &Entry) {
        self.bytes -= u64::from(e.len);
        if e.is_durable() {
            self.delete_through = Some(self.delete_through.map_or(e.seq, |d| d.max(e.seq)));
        }
    }

    /// Something only the next write records (a delete, a counter) changed at `now`.
    fn touch(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    /// Removes one message that could not be kept (its write failed, or its payload is gone),
    /// counting it as dropped.
    /// The caller deletes its row, if any, and stores the counter itself.
    pub fn forget(&mut self, seq: u64) {
        if let Some(i) = self.position(seq)
            && let Some(e) = self.entries.remove(i)
        {
            self.bytes -= u64::from(e.len);
            self.dropped += 1;
        }
    }

    /// The collector has stored everything of this instance up to `acked_seq`. Returns the
    /// number to delete through, if anything was removed.
    pub fn ack(&mut self, acked_seq: u64, now: Instant) -> Result<Option<u64>, AckError> {
        if acked_seq >= self.next_seq {
            return Err(AckError::Future {
                acked: acked_seq,
                last: self.last_seq(),
            });
        }
        let mut removed = false;
        while self.entries.front().is_some_and(|e| e.seq <= acked_seq) {
            if let Some(e) = self.entries.pop_front() {
                self.removed(&e);
                removed = true;
            }
        }
        if self.unconfirmed_from.take().is_some() {
            // The collector is reached on this timeline: held messages of earlier runs are
            // now only the collector's to settle (see `skip_past`).
            self.touch(now);
        }
        if self.delete_through.is_some() {
            // Deleting confirmed rows waits for the next write (at most `flush_after`): a
            // crash before it only replays them, and the collector recognises duplicates.
            self.touch(now);
        }
        if !removed {
            return Ok(None);
        }
        // Progress: the collector is there. Resend at the base pace again.
        self.backoff_exp = 0;
        self.resent_on_timeout = false;
        if let Pass::Waiting { .. } = self.pass {
            self.pass = Pass::Running { cursor: 0 };
        }
        Ok(Some(acked_seq))
    }

    /// The collector confirmed `acked`, beyond the last number issued: the counter went BACK
    /// for this `inst` (the state directory restored from a backup, a VM snapshot reverted),
    /// and every number up to `acked` is taken at the collector, which drops what carries
    /// one as a duplicate. The counter skips ahead so the next number is above `acked` plus
    /// [`SKIP_MARGIN`] (numbers the old timeline issued and the collector stores above its
    /// contiguous mark are not in `acked`); the numbers jumped over count in `skipped`.
    /// Everything held has a number up to `acked`: messages issued since the collector last
    /// confirmed anything (by this run or earlier runs that never reached it, see
    /// [`SpoolIndex::unconfirmed_from`]; made after the counter went back, the collector
    /// dropped them) are re-numbered above the skip, in order, to be sent again; older ones
    /// (in a restore, the backup's, which the old timeline sent on and the collector has)
    /// are removed and counted as dropped —
    /// an upper bound, like every drop. Their rows are deleted with the next write, which the
    /// caller makes at once, so the counter is durable before anything is sent.
    ///
    /// `None` if `acked` is below the next number (nothing to skip); an error beyond
    /// [`MAX_SKIP_TO`], which leaves everything as it was.
    pub fn skip_past(&mut self, acked: u64, now: Instant) -> Result<Option<Skipped>, AckError> {
        if acked < self.next_seq {
            return Ok(None);
        }
        if acked > MAX_SKIP_TO {
            return Err(AckError::Absurd { acked });
        }
        let last = self.last_seq();
        let from = self.unconfirmed_from();
        // No overflow: acked ≤ MAX_SKIP_TO, far below u64::MAX.
        let mut next = acked + 1 + SKIP_MARGIN;
        self.skipped += next - self.next_seq;
        let mut renumbered = Vec::new();
        let mut dropped = 0;
        for mut e in std::mem::take(&mut self.entries) {
            self.removed(&e);
            if e.seq >= from {
                renumbered.push((e.seq, next));
                e.seq = next;
                e.sent_at = None;
                e.mem_since = Some(now);
                self.bytes += u64::from(e.len);
                self.entries.push_back(e);
                next += 1;
            } else {
                self.dropped += 1;
                dropped += 1;
            }
        }
        self.next_seq = next;
        // Still unconfirmed: the re-numbered messages stay this timeline's across a restart.
        self.unconfirmed_from = Some(from);
        self.touch(now);
        self.backoff_exp = 0;
        if self.connected {
            self.pass = Pass::Running { cursor: 0 };
        }
        Ok(Some(Skipped {
            last,
            renumbered,
            dropped,
        }))
    }

    /// The payload of `seq` was rewritten to `len` bytes.
    pub fn resize(&mut self, seq: u64, len: u32) {
        if let Some(i) = self.position(seq) {
            let e = &mut self.entries[i];
            self.bytes = self.bytes - u64::from(e.len) + u64::from(len);
            e.len = len;
        }
    }

    /// A change only the next write records (a drop, a delete) happened at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.touch(now);
    }

    /// True if the file must be written now. Messages live in memory while the collector
    /// confirms them promptly; the file is written (everything unconfirmed, deletes, counters,
    /// in one transaction) when
    /// - the link is down and something is held in memory only (an outage is spooled durably,
    ///   message by message, as it happens),
    /// - a message was issued with a number the file's counter does not cover yet,
    /// - the oldest message held in memory, or the oldest unwritten delete, is `flush_after`
    ///   old (`flush_after` is the most a power cut can cost while the link is up),
    /// - `flush_after` is zero (write-through) and anything is unwritten,
    ///
    /// but never before `retry_at` after a failed write.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.next_flush().is_some_and(|t| t <= now)
    }

    /// True if an append now would have to write the file before returning (link down, the
    /// counter block used up, write-through); false means it stays in memory.
    pub fn append_writes(&self) -> bool {
        !self.connected || self.next_seq >= self.reserved || self.limits.flush_after.is_zero()
    }

    /// When the file must be written next, if anything waits; see [`SpoolIndex::flush_due`].
    pub fn next_flush(&self) -> Option<Instant> {
        let oldest_mem = self.entries.iter().filter_map(|e| e.mem_since).min();
        let urgent = oldest_mem.is_some()
            && (!self.connected
                || self.next_seq > self.reserved
                || self.limits.flush_after.is_zero());
        let due = if urgent {
            oldest_mem
        } else {
            [oldest_mem, self.dirty_since]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t + self.limits.flush_after)
        }?;
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }

    /// Plans a write of everything unwritten. `exact` (at shutdown) stores the counter without
    /// a reserve, so a clean restart skips no number.
    pub fn take_flush(&self, exact: bool) -> Flush {
        let reserve = if exact {
            0
        } else {
            self.limits.seq_block.max(1)
        };
        Flush {
            insert: self
                .entries
                .iter()
                .filter(|e| !e.is_durable())
                .map(|e| e.seq)
                .collect(),
            delete_through: self.delete_through,
            next_seq: self.next_seq + reserve,
            flushed_seq: self.next_seq,
            dropped: self.dropped,
            skipped: self.skipped,
            unconfirmed_from: self.unconfirmed_from,
        }
    }

    /// The write planned by `plan` committed.
    pub fn flushed(&mut self, plan: &Flush) {
        for e in &mut self.entries {
            if plan.insert.binary_search(&e.seq).is_ok() {
                e.mem_since = None;
            }
        }
        if self.delete_through <= plan.delete_through {
            self.delete_through = None;
        }
        self.reserved = plan.next_seq;
        self.dirty_since = None;
        self.retry_at = None;
    }

    /// The write failed; the next attempt waits `flush_after` (at least a second).
    pub fn flush_failed(&mut self, now: Instant) {
        self.retry_at = Some(now + self.limits.flush_after.max(Duration::from_secs(1)));
    }

    /// A connection to the broker is up: everything unconfirmed is due again, live messages
    /// go first and the backlog starts one replay interval later.
    pub fn connected(&mut self, now: Instant) {
        self.connected = true;
        for e in &mut self.entries {
            e.sent_at = None;
        }
        self.pass = Pass::Running { cursor: 0 };
        self.resent_on_timeout = false;
        self.next_slot = now + self.limits.replay_interval;
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The message was handed to the broker connection.
    pub fn mark_sent(&mut self, seq: u64, now: Instant) {
        let Some(i) = self.position(seq) else { return };
        self.entries[i].sent_at = Some(now);
        let due = now + self.resend_after();
        match self.pass {
            Pass::Idle => self.pass = Pass::Waiting { until: due },
            Pass::Waiting { until } if due < until => self.pass = Pass::Waiting { until: due },
            _ => {}
        }
    }

    /// The message could not be handed over (queue full); try again on the replay schedule.
    pub fn send_failed(&mut self, seq: u64) {
        if let Some(i) = self.position(seq) {
            self.entries[i].sent_at = None;
            self.restart_pass_at(seq);
        }
    }

    fn restart_pass_at(&mut self, seq: u64) {
        self.pass = match self.pass {
            Pass::Running { cursor } => Pass::Running {
                cursor: cursor.min(seq),
            },
            _ => Pass::Running { cursor: seq },
        };
    }

    /// What the replayer should do at `now`: oldest-first, at most one message per
    /// `replay_interval`, messages sent on this connection only after `resend_after`.
    /// A caller that gets `Send` sends it and calls [`SpoolIndex::mark_sent`].
    pub fn poll_replay(&mut self, now: Instant) -> Replay {
        if !self.connected {
            return Replay::Idle;
        }
        loop {
            match self.pass {
                Pass::Idle => return Replay::Idle,
                Pass::Waiting { until } if now < until => return Replay::WaitUntil(until),
                Pass::Waiting { .. } => self.pass = Pass::Running { cursor: 0 },
                Pass::Running { cursor } => {
                    let resend_after = self.resend_after();
                    let start = self.entries.partition_point(|e| e.seq < cursor);
                    let due = self
                        .entries
                        .iter()
                        .skip(start)
                        .find(|e| e.sent_at.is_none_or(|t| now >= t + resend_after));
                    if let Some(e) = due {
                        if now < self.next_slot {
                            // Park at this entry until the rate allows the next send.
                            self.pass = Pass::Running { cursor: e.seq };
                            return Replay::WaitUntil(self.next_slot);
                        }
                        let seq = e.seq;
                        if e.sent_at.is_some() {
                            self.resent_on_timeout = true;
                        }
                        self.pass = Pass::Running { cursor: seq + 1 };
                        self.next_slot = now + self.limits.replay_interval;
                        return Replay::Send(seq);
                    }
                    // The pass is complete.
                    if self.resent_on_timeout {
                        self.backoff_exp = (self.backoff_exp + 1).min(MAX_BACKOFF_EXP);
                        self.resent_on_timeout = false;
                    }
                    let resend_after = self.resend_after();
                    self.pass = match self.entries.iter().filter_map(|e| e.sent_at).min() {
                        Some(t) => Pass::Waiting {
                            until: (t + resend_after).max(now),
                        },
                        None => Pass::Idle,
                    };
                    if let Pass::Waiting { until } = self.pass
                        && until <= now
                    {
                        // Cannot happen (every due entry would have been found), but never spin.
                        return Replay::WaitUntil(now + self.limits.replay_interval);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_750_000_000_000;

    fn limits() -> Limits {
        Limits {
            max_bytes: 1000,
            max_age_ms: 14 * 24 * 60 * MIN,
            resend_after: Duration::from_secs(60),
            replay_interval: Duration::from_millis(200),
            flush_after: Duration::from_secs(10),
            seq_block: 100,
        }
    }

    fn index(now: Instant) -> SpoolIndex {
        SpoolIndex::new(limits(), vec![], 1, 0, now)
    }

    fn seqs(ix: &SpoolIndex) -> Vec<u64> {
        ix.entries().map(|e| e.seq).collect()
    }

    /// Drains the replayer at `now`, marking what it sends; returns the sequence numbers.
    fn drain(ix: &mut SpoolIndex, mut now: Instant, limit: usize) -> (Vec<u64>, Instant) {
        let mut sent = Vec::new();
        while sent.len() < limit {
            match ix.poll_replay(now) {
                Replay::Send(s) => {
                    ix.mark_sent(s, now);
                    sent.push(s);
                }
                Replay::WaitUntil(t) if t - now <= Duration::from_secs(1) => now = t,
                _ => break,
            }
        }
        (sent, now)
    }

    #[test]
    fn numbers_start_at_one_and_increase() {
        let now = Instant::now();
        let mut ix = index(now);
        assert_eq!(ix.last_seq(), 0);
        let a = ix.append(Kind::Birth, T0, 10, T0, Instant::now());
        let b = ix.append(Kind::Hb, T0, 10, T0, Instant::now());
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(ix.last_seq(), 2);
        // Reopening with a stale counter never reissues a stored number.
        let ix = SpoolIndex::new(limits(), vec![Entry::new(7, Kind::Hb, T0, 1)], 3, 0, now);
        assert_eq!(ix.next_seq(), 8);
        let ix = SpoolIndex::new(limits(), vec![], 0, 0, now);
        assert_eq!(ix.next_seq(), 1);
    }

    #[test]
    fn size_bound_drops_oldest_first_and_counts() {
        let now = Instant::now();
        let mut ix = index(now);
        for _ in 0..10 {
            assert_eq!(
                ix.append(Kind::Hb, T0, 100, T0, Instant::now())
                    .drop_through,
                None
            );
        }
        let a = ix.append(Kind::Hb, T0, 250, T0, Instant::now());
        assert_eq!(a.drop_through, Some(3));
        assert_eq!(seqs(&ix), (4..=11).collect::<Vec<_>>());
        assert_eq!(
            ix.stats(),
            SpoolStats {
                pending: 8,
                bytes: 950,
                dropped: 3,
                oldest_seq: Some(4)
            }
        );
        // A message larger than the bound is still kept, alone.
        let a = ix.append(Kind::Probe, T0, 5000, T0, Instant::now());
        assert_eq!(a.drop_through, Some(11));
        assert_eq!(seqs(&ix), [12]);
    }

    #[test]
    fn age_bound_drops_old_messages() {
        let now = Instant::now();
        let mut ix = index(now);
        ix.append(Kind::Hb, T0, 1, T0, Instant::now());
        ix.append(Kind::Hb, T0 + MIN, 1, T0 + MIN, Instant::now());
        let later = T0 + limits().max_age_ms + 30_000;
        assert_eq!(ix.expire(later), Some(1));
        assert_eq!(seqs(&ix), [2]);
        assert_eq!(ix.dropped(), 1);
        // The newest is never dropped, even when the clock jumps years ahead.
        assert_eq!(ix.expire(later * 2), None);
        assert_eq!(seqs(&ix), [2]);
    }

    #[test]
    fn ack_removes_through_and_rejects_the_future() {
        let now = Instant::now();
        let mut ix = index(now);
        for _ in 0..5 {
            ix.append(Kind::Hb, T0, 10, T0, Instant::now());
        }
        assert_eq!(ix.ack(0, Instant::now()), Ok(None));
        assert_eq!(ix.ack(3, Instant::now()), Ok(Some(3)));
        assert_eq!(seqs(&ix), [4, 5]);
        assert_eq!(ix.ack(3, Instant::now()), Ok(None));
        assert_eq!(
            ix.ack(6, Instant::now()),
            Err(AckError::Future { acked: 6, last: 5 })
        );
        assert_eq!(
            ix.ack(u64::MAX, Instant::now()),
            Err(AckError::Future {
                acked: u64::MAX,
                last: 5
            })
        );
        assert_eq!(ix.ack(5, Instant::now()), Ok(Some(5)));
        assert_eq!(
            ix.stats(),
            SpoolStats {
                pending: 0,
                bytes: 0,
                dropped: 0,
                oldest_seq: None
            }
        );
    }

    #[test]
    fn nothing_is_replayed_while_offline() {
        let now = Instant::now();
        let mut ix = index(now);
        ix.append(Kind::Hb, T0, 10, T0, Instant::now());
        assert_eq!(ix.poll_replay(now), Replay::Idle);
    }

    #[test]
    fn reconnect_replays_backlog_oldest_first_at_the_rate() {
        let t = Instant::now();
        let mut ix = index(t);
        for _ in 0..5 {
            ix.append(Kind::Hb, T0, 10, T0, Instant::now());
        }
        ix.connected(t);
        // Live first: the backlog waits one interval.
        assert_eq!(
            ix.poll_replay(t),
            Replay::WaitUntil(t + Duration::from_millis(200))
        );
        // A live message sent now is not replayed.
        let live = ix.append(Kind::Birth, T0, 10, T0, Instant::now()).seq;
        ix.mark_sent(live, t);
        let mut now = t + Duration::from_millis(200);
        let mut sent = Vec::new();
        for i in 0..5 {
            match ix.poll_replay(now) {
                Replay::Send(s) => {
                    ix.mark_sent(s, now);
                    sent.push((s, now - t));
                }
                other => panic!("expected Send, got {other:?}"),
            }
            if i < 4 {
                assert_eq!(
                    ix.poll_replay(now),
                    Replay::WaitUntil(now + Duration::from_millis(200))
                );
            }
            now += Duration::from_millis(200);
        }
        let order: Vec<u64> = sent.iter().map(|s| s.0).collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);
        // Then nothing until the earliest resend falls due (the live message, sent at t).
        assert_eq!(
            ix.poll_replay(now),
            Replay::WaitUntil(t + Duration::from_secs(60))
        );
    }

    #[test]
    fn unconfirmed_messages_are_resent_after_timeout_with_backoff() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        let s = ix.append(Kind::Hb, T0, 10, T0, Instant::now()).seq;
        ix.mark_sent(s, t);
        assert_eq!(
            ix.poll_replay(t),
            Replay::WaitUntil(t + Duration::from_secs(60))
        );
        let t1 = t + Duration::from_secs(60);
        assert_eq!(ix.poll_replay(t1), Replay::Send(s));
        ix.mark_sent(s, t1);
        // No ack came: the next resend waits twice as long.
        assert_eq!(
            ix.poll_replay(t1),
            Replay::WaitUntil(t1 + Duration::from_secs(120))
        );
        let t2 = t1 + Duration::from_secs(120);
        assert_eq!(ix.poll_replay(t2), Replay::Send(s));
        ix.mark_sent(s, t2);
        assert_eq!(
            ix.poll_replay(t2),
            Replay::WaitUntil(t2 + Duration::from_secs(240))
        );
        // Backoff is capped.
        let mut now = t2;
        for _ in 0..10 {
            match ix.poll_replay(now) {
                Replay::WaitUntil(u) => now = u,
                Replay::Send(x) => ix.mark_sent(x, now),
                Replay::Idle => panic!("idle with a pending message"),
            }
        }
        let Replay::WaitUntil(u) = ix.poll_replay(now) else {
            panic!()
        };
        assert!(u - now <= Duration::from_secs(60 * 16));
        // An ack resets the pace.
        let s2 = ix.append(Kind::Hb, T0, 10, T0, Instant::now()).seq;
        ix.mark_sent(s2, now);
        assert_eq!(ix.ack(s, Instant::now()), Ok(Some(s)));
        assert_eq!(
            ix.poll_replay(now),
            Replay::WaitUntil(now + Duration::from_secs(60))
        );
        assert_eq!(ix.ack(s2, Instant::now()), Ok(Some(s2)));
        assert_eq!(ix.poll_replay(now), Replay::Idle);
    }

    #[test]
    fn failed_live_send_is_picked_up_by_the_replayer() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        let (sent, now) = drain(&mut ix, t, 10);
        assert!(sent.is_empty());
        let s = ix.append(Kind::Hb, T0, 10, T0, Instant::now()).seq;
        ix.send_failed(s);
        let (sent, _) = drain(&mut ix, now, 10);
        assert_eq!(sent, [s]);
    }

    #[test]
    fn disconnect_then_reconnect_resends_everything_once() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        for _ in 0..3 {
            let s = ix.append(Kind::Hb, T0, 10, T0, Instant::now()).seq;
            ix.mark_sent(s, t);
        }
        ix.disconnected();
        let s4 = ix.append(Kind::Hb, T0, 10, T0, Instant::now()).seq;
        assert_eq!(s4, 4);
        let t2 = t + Duration::from_secs(5);
        ix.connected(t2);
        let (sent, _) = drain(&mut ix, t2, 100);
        assert_eq!(sent, [1, 2, 3, 4]);
    }

    #[test]
    fn acks_during_replay_skip_confirmed_messages() {
        let t = Instant::now();
        let mut ix = index(t);
        for _ in 0..6 {
            ix.append(Kind::Hb, T0, 10, T0, Instant::now());
        }
        ix.connected(t);
        let (sent, now) = drain(&mut ix, t, 2);
        assert_eq!(sent, [1, 2]);
        assert_eq!(ix.ack(4, Instant::now()), Ok(Some(4)));
        let (sent, _) = drain(&mut ix, now, 100);
        assert_eq!(sent, [5, 6]);
    }

    #[test]
    fn forget_counts_as_dropped() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.append(Kind::Hb, T0, 10, T0, Instant::now());
        ix.append(Kind::Hb, T0, 10, T0, Instant::now());
        ix.forget(2);
        ix.forget(99);
        assert_eq!(
            ix.stats(),
            SpoolStats {
                pending: 1,
                bytes: 10,
                dropped: 1,
                oldest_seq: Some(1)
            }
        );
        assert_eq!(ix.next_seq(), 3);
    }

    /// Applies every write the index asks for up to `to`; returns how many there were.
    fn run_writes(ix: &mut SpoolIndex, now: &mut Instant, to: Instant) -> usize {
        let mut n = 0;
        while let Some(t) = ix.next_flush().filter(|t| *t <= to) {
            *now = t.max(*now);
            let plan = ix.take_flush(false);
            ix.flushed(&plan);
            n += 1;
        }
        *now = to;
        n
    }

    #[test]
    fn prompt_confirmations_keep_messages_in_memory() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        let mut now = t;
        // The first number needs the counter written (and takes the message with it).
        let s1 = ix.append(Kind::Hb, T0, 10, T0, now).seq;
        assert!(ix.flush_due(now));
        assert_eq!(
            {
                let to = t;
                run_writes(&mut ix, &mut now, to)
            },
            1
        );
        assert!(ix.get(s1).is_some_and(Entry::is_durable));
        assert_eq!(ix.ack(s1, now), Ok(Some(s1)));
        // The delete of its row waits for a write, at most flush_after.
        assert_eq!(ix.next_flush(), Some(now + Duration::from_secs(10)));
        let s2 = ix.append(Kind::Hb, T0, 10, T0, now).seq;
        assert!(!ix.flush_due(now));
        assert!(!ix.get(s2).is_some_and(Entry::is_durable));
        assert_eq!(ix.ack(s2, now), Ok(Some(s2)));
        let plan = ix.take_flush(false);
        assert_eq!(plan.insert, Vec::<u64>::new());
        assert_eq!(plan.delete_through, Some(s1));
        assert_eq!(
            {
                let to = t + Duration::from_secs(60);
                run_writes(&mut ix, &mut now, to)
            },
            1
        );
        assert_eq!(ix.next_flush(), None);
    }

    #[test]
    fn an_hour_at_30s_with_prompt_acks_writes_once_per_counter_block() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        let mut now = t;
        let mut writes = 0;
        for _ in 0..120 {
            for kind in [Kind::Hb, Kind::Probe] {
                let s = ix.append(kind, T0, 500, T0, now).seq;
                writes += {
                    let to = now;
                    run_writes(&mut ix, &mut now, to)
                };
                ix.mark_sent(s, now);
            }
            writes += {
                let to = now + Duration::from_millis(300);
                run_writes(&mut ix, &mut now, to)
            };
            ix.ack(ix.last_seq(), now).expect("ack");
            writes += {
                let to = now + Duration::from_millis(29_700);
                run_writes(&mut ix, &mut now, to)
            };
        }
        // 240 numbers in blocks of 100: three counter writes (each with the messages held at
        // that moment) and the deletes those rows then need.
        assert!(writes <= 6, "{writes} writes");
    }

    #[test]
    fn unconfirmed_messages_are_written_after_flush_after() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        let mut now = t;
        {
            let to = t;
            run_writes(&mut ix, &mut now, to)
        };
        ix.append(Kind::Hb, T0, 10, T0, now);
        {
            let to = t;
            run_writes(&mut ix, &mut now, to)
        }; // the counter block
        let t1 = t + Duration::from_secs(3);
        let a = ix.append(Kind::Hb, T0, 10, T0, t1).seq;
        let b = ix
            .append(Kind::Probe, T0, 10, T0, t1 + Duration::from_secs(5))
            .seq;
        assert_eq!(ix.next_flush(), Some(t1 + Duration::from_secs(10)));
        let plan = ix.take_flush(false);
        assert_eq!(plan.insert, [a, b], "everything unconfirmed goes together");
        assert_eq!(
            {
                let to = t1 + Duration::from_secs(10);
                run_writes(&mut ix, &mut now, to)
            },
            1
        );
        assert!(ix.entries().all(Entry::is_durable));
    }

    #[test]
    fn link_down_writes_every_message_at_once() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        let mut now = t;
        ix.append(Kind::Hb, T0, 10, T0, now);
        {
            let to = t;
            run_writes(&mut ix, &mut now, to)
        };
        assert!(!ix.append_writes());
        let held = ix.append(Kind::Hb, T0, 10, T0, now).seq;
        assert!(!ix.flush_due(now));
        ix.disconnected();
        assert!(ix.append_writes());
        assert!(
            ix.flush_due(now),
            "what memory holds is written when the link drops"
        );
        assert_eq!(ix.take_flush(false).insert, [held]);
        {
            let to = now;
            run_writes(&mut ix, &mut now, to)
        };
        let s = ix.append(Kind::Hb, T0, 10, T0, now).seq;
        assert!(ix.flush_due(now));
        assert_eq!(ix.take_flush(false).insert, [s]);
    }

    #[test]
    fn zero_flush_after_writes_through() {
        let t = Instant::now();
        let mut ix = SpoolIndex::new(
            Limits {
                flush_after: Duration::ZERO,
                ..limits()
            },
            vec![],
            1,
            0,
            t,
        );
        ix.connected(t);
        let mut now = t;
        ix.append(Kind::Hb, T0, 10, T0, now);
        {
            let to = t;
            run_writes(&mut ix, &mut now, to)
        };
        ix.append(Kind::Hb, T0, 10, T0, now);
        assert!(ix.flush_due(now));
    }

    #[test]
    fn a_failed_write_is_retried_later_not_in_a_loop() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.append(Kind::Hb, T0, 10, T0, t);
        assert!(ix.flush_due(t));
        ix.flush_failed(t);
        assert!(!ix.flush_due(t));
        assert_eq!(ix.next_flush(), Some(t + Duration::from_secs(10)));
        let plan = ix.take_flush(false);
        ix.flushed(&plan);
        assert_eq!(ix.next_flush(), None);
    }

    #[test]
    fn the_counter_is_written_ahead_and_exactly_at_shutdown() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.append(Kind::Hb, T0, 10, T0, t);
        let plan = ix.take_flush(false);
        assert_eq!((plan.next_seq, plan.flushed_seq), (102, 2));
        ix.flushed(&plan);
        let exact = ix.take_flush(true);
        assert_eq!((exact.next_seq, exact.flushed_seq), (2, 2));
        // At open, the numbers between the last write's mark and the counter are skipped.
        let mut ix = SpoolIndex::new(limits(), vec![], 102, 0, t);
        assert_eq!(ix.skip_unwritten(Some(2), 7), 107);
        assert_eq!(ix.next_seq(), 102);
        let mut ix = SpoolIndex::new(limits(), vec![], 102, 0, t);
        assert_eq!(
            ix.skip_unwritten(None, 0),
            0,
            "older files have no mark: nothing skipped"
        );
    }

    #[test]
    fn a_future_ack_skips_the_counter_and_renumbers_this_runs_messages() {
        let t = Instant::now();
        // Two messages in the file from an earlier run (a backup's), counter at 5.
        let held = vec![
            Entry::new(3, Kind::Hb, T0, 10),
            Entry::new(4, Kind::Hb, T0, 10),
        ];
        let mut ix = SpoolIndex::new(limits(), held, 5, 0, t);
        ix.connected(t);
        let a = ix.append(Kind::Birth, T0, 20, T0, t).seq;
        let b = ix.append(Kind::Hb, T0, 30, T0, t).seq;
        assert_eq!((a, b), (5, 6));
        assert_eq!(ix.ack(7, t), Err(AckError::Future { acked: 7, last: 6 }));

        // The collector holds everything up to 100 of this inst: the counter skips past it
        // and the margin, this run's messages are re-numbered in order, the backup's are
        // settled as dropped.
        let skip = ix.skip_past(100, t).expect("sane").expect("ahead");
        let first = 101 + SKIP_MARGIN;
        assert_eq!(
            skip,
            Skipped {
                last: 6,
                renumbered: vec![(5, first), (6, first + 1)],
                dropped: 2,
            }
        );
        assert_eq!(ix.next_seq(), first + 2);
        assert_eq!(seqs(&ix), [first, first + 1]);
        assert_eq!(
            ix.stats(),
            SpoolStats {
                pending: 2,
                bytes: 50,
                dropped: 2,
                oldest_seq: Some(first)
            }
        );
        assert_eq!(ix.skipped(), first - 7, "numbers jumped over");
        assert!(ix.entries().all(|e| !e.is_durable()));
        // Written at once: the new numbers' payloads, the old rows deleted, the new counter.
        assert!(ix.flush_due(t));
        let plan = ix.take_flush(false);
        assert_eq!(plan.insert, [first, first + 1]);
        assert_eq!(plan.delete_through, Some(4));
        assert_eq!((plan.next_seq, plan.flushed_seq), (first + 102, first + 2));
        assert_eq!(plan.unconfirmed_from, Some(5), "still unconfirmed");
        ix.flushed(&plan);
        // Re-numbered messages are due again, oldest first.
        let (sent, _) = drain(&mut ix, t, 10);
        assert_eq!(sent, [first, first + 1]);
        // The counter never goes back: the same ack again confirms nothing, asks no skip.
        assert_eq!(ix.ack(100, t), Ok(None));
        assert_eq!(ix.skip_past(100, t), Ok(None));
        assert_eq!(ix.skip_past(first - 1, t), Ok(None));
        assert_eq!(ix.append(Kind::Hb, T0, 1, T0, t).seq, first + 2);
        assert_eq!(ix.ack(first + 1, t), Ok(Some(first + 1)));
        assert_eq!(seqs(&ix), [first + 2]);
        assert_eq!(ix.take_flush(false).unconfirmed_from, None, "confirmed");
    }

    /// The old timeline left a gap at the collector (a message it dropped on a full spool)
    /// and the collector stores 300 numbers above it (a replay under way when that timeline
    /// ended): the ack says 100, yet 102..=401 are taken too. The skip's margin clears every
    /// one of them, so no re-numbered or new message lands on a stored number.
    #[test]
    fn a_skip_clears_numbers_stored_above_a_gap() {
        let t = Instant::now();
        let stored: std::collections::BTreeSet<u64> = (1..=100).chain(102..=401).collect();
        let mut ix = SpoolIndex::new(limits(), vec![], 50, 0, t);
        ix.connected(t);
        for _ in 0..5 {
            ix.append(Kind::Hb, T0, 10, T0, t);
        }
        let skip = ix.skip_past(100, t).expect("sane").expect("ahead");
        for _ in 0..500 {
            ix.append(Kind::Hb, T0, 1, T0, t);
        }
        let issued: Vec<u64> = skip
            .renumbered
            .iter()
            .map(|&(_, new)| new)
            .chain(seqs(&ix))
            .collect();
        assert_eq!(issued.len(), 5 + 5 + 500);
        assert!(issued.iter().all(|s| !stored.contains(s) && *s > 401));
        // The whole margin is above the most numbers a spool holds (64 MiB of ~500 bytes).
        const { assert!(SKIP_MARGIN > (64 << 20) / 500) };
    }

    #[test]
    fn an_absurd_ack_never_moves_the_counter() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.append(Kind::Hb, T0, 10, T0, t);
        for acked in [MAX_SKIP_TO + 1, 1 << 53, u64::MAX - 1, u64::MAX] {
            assert_eq!(ix.skip_past(acked, t), Err(AckError::Absurd { acked }));
        }
        assert_eq!((ix.next_seq(), seqs(&ix)), (2, vec![1]));
        assert_eq!(ix.skipped(), 0);
        // The bound itself is taken, and the counter stays below 2^53 with room to spare.
        let skip = ix.skip_past(MAX_SKIP_TO, t).expect("sane").expect("ahead");
        let first = MAX_SKIP_TO + 1 + SKIP_MARGIN;
        assert_eq!(skip.renumbered, [(1, first)]);
        assert_eq!(ix.next_seq(), first + 1);
        let plan = ix.take_flush(false);
        assert_eq!(plan.next_seq, first + 101);
        assert!(
            (1u64 << 53) - plan.next_seq > 4_000_000_000,
            "room below 2^53"
        );
        // Beyond it nothing more can push it.
        assert_eq!(ix.skip_past(first, t), Ok(None));
        assert_eq!(
            ix.skip_past(first + 1, t),
            Err(AckError::Absurd { acked: first + 1 })
        );
    }

    #[test]
    fn resize_keeps_the_byte_count() {
        let t = Instant::now();
        let mut ix = index(t);
        let s = ix.append(Kind::Hb, T0, 10, T0, t).seq;
        ix.resize(s, 14);
        ix.resize(99, 1000);
        assert_eq!(ix.stats().bytes, 14);
        assert_eq!(ix.ack(s, t), Ok(Some(s)));
        assert_eq!(ix.stats().bytes, 0);
    }
}
