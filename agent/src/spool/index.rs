//! The spool's bookkeeping without I/O: which sequence number comes next, what waits for the
//! collector's confirmation, what the bounds drop, and what to (re)send when. Time is passed
//! in by the caller (`now` monotonic, `now_ms` wall clock), so every rule is unit-tested here.

use std::collections::VecDeque;
use std::time::Duration;

use dozor_proto::{Kind, SpoolStats};
use tokio::time::Instant;

/// Longest resend backoff: `resend_after` times 2^4 (16 min with the default 60 s).
pub const MAX_BACKOFF_EXP: u32 = 4;

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
}

impl Entry {
    pub fn new(seq: u64, kind: Kind, ts_ms: i64, len: u32) -> Entry {
        Entry {
            seq,
            kind,
            ts_ms,
            len,
            sent_at: None,
        }
    }
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
    /// The collector confirmed a number this spool has not issued yet.
    #[error("acked_seq {acked} is beyond the last issued {last}")]
    Future { acked: u64, last: u64 },
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
        }
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

    /// Adds a message (not yet sent) and applies the bounds, oldest first. The newest message
    /// itself is never dropped.
    pub fn append(&mut self, kind: Kind, ts_ms: i64, len: u32, now_ms: i64) -> Appended {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry::new(seq, kind, ts_ms, len));
        self.bytes += u64::from(len);
        if self.connected {
            self.restart_pass_at(seq);
        }
        let by_size = self.drop_while(|ix| ix.bytes > ix.limits.max_bytes);
        let by_age = self.expire(now_ms);
        Appended {
            seq,
            drop_through: by_age.or(by_size),
        }
    }

    /// Drops messages older than the age bound; returns the highest dropped number.
    pub fn expire(&mut self, now_ms: i64) -> Option<u64> {
        let oldest_kept = now_ms.saturating_sub(self.limits.max_age_ms);
        self.drop_while(|ix| ix.entries.front().is_some_and(|e| e.ts_ms < oldest_kept))
    }

    fn drop_while(&mut self, cond: impl Fn(&SpoolIndex) -> bool) -> Option<u64> {
        let mut through = None;
        while self.entries.len() > 1 && cond(self) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= u64::from(e.len);
                self.dropped += 1;
                through = Some(e.seq);
            }
        }
        through
    }

    /// Removes one message that could not be kept (its write failed, or its payload is gone),
    /// counting it as dropped.
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
    pub fn ack(&mut self, acked_seq: u64) -> Result<Option<u64>, AckError> {
        if acked_seq >= self.next_seq {
            return Err(AckError::Future {
                acked: acked_seq,
                last: self.last_seq(),
            });
        }
        let mut removed = false;
        while self.entries.front().is_some_and(|e| e.seq <= acked_seq) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= u64::from(e.len);
                removed = true;
            }
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
        let a = ix.append(Kind::Birth, T0, 10, T0);
        let b = ix.append(Kind::Hb, T0, 10, T0);
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
            assert_eq!(ix.append(Kind::Hb, T0, 100, T0).drop_through, None);
        }
        let a = ix.append(Kind::Hb, T0, 250, T0);
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
        let a = ix.append(Kind::Probe, T0, 5000, T0);
        assert_eq!(a.drop_through, Some(11));
        assert_eq!(seqs(&ix), [12]);
    }

    #[test]
    fn age_bound_drops_old_messages() {
        let now = Instant::now();
        let mut ix = index(now);
        ix.append(Kind::Hb, T0, 1, T0);
        ix.append(Kind::Hb, T0 + MIN, 1, T0 + MIN);
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
            ix.append(Kind::Hb, T0, 10, T0);
        }
        assert_eq!(ix.ack(0), Ok(None));
        assert_eq!(ix.ack(3), Ok(Some(3)));
        assert_eq!(seqs(&ix), [4, 5]);
        assert_eq!(ix.ack(3), Ok(None));
        assert_eq!(ix.ack(6), Err(AckError::Future { acked: 6, last: 5 }));
        assert_eq!(
            ix.ack(u64::MAX),
            Err(AckError::Future {
                acked: u64::MAX,
                last: 5
            })
        );
        assert_eq!(ix.ack(5), Ok(Some(5)));
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
        ix.append(Kind::Hb, T0, 10, T0);
        assert_eq!(ix.poll_replay(now), Replay::Idle);
    }

    #[test]
    fn reconnect_replays_backlog_oldest_first_at_the_rate() {
        let t = Instant::now();
        let mut ix = index(t);
        for _ in 0..5 {
            ix.append(Kind::Hb, T0, 10, T0);
        }
        ix.connected(t);
        // Live first: the backlog waits one interval.
        assert_eq!(
            ix.poll_replay(t),
            Replay::WaitUntil(t + Duration::from_millis(200))
        );
        // A live message sent now is not replayed.
        let live = ix.append(Kind::Birth, T0, 10, T0).seq;
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
        let s = ix.append(Kind::Hb, T0, 10, T0).seq;
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
        let s2 = ix.append(Kind::Hb, T0, 10, T0).seq;
        ix.mark_sent(s2, now);
        assert_eq!(ix.ack(s), Ok(Some(s)));
        assert_eq!(
            ix.poll_replay(now),
            Replay::WaitUntil(now + Duration::from_secs(60))
        );
        assert_eq!(ix.ack(s2), Ok(Some(s2)));
        assert_eq!(ix.poll_replay(now), Replay::Idle);
    }

    #[test]
    fn failed_live_send_is_picked_up_by_the_replayer() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.connected(t);
        let (sent, now) = drain(&mut ix, t, 10);
        assert!(sent.is_empty());
        let s = ix.append(Kind::Hb, T0, 10, T0).seq;
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
            let s = ix.append(Kind::Hb, T0, 10, T0).seq;
            ix.mark_sent(s, t);
        }
        ix.disconnected();
        let s4 = ix.append(Kind::Hb, T0, 10, T0).seq;
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
            ix.append(Kind::Hb, T0, 10, T0);
        }
        ix.connected(t);
        let (sent, now) = drain(&mut ix, t, 2);
        assert_eq!(sent, [1, 2]);
        assert_eq!(ix.ack(4), Ok(Some(4)));
        let (sent, _) = drain(&mut ix, now, 100);
        assert_eq!(sent, [5, 6]);
    }

    #[test]
    fn forget_counts_as_dropped() {
        let t = Instant::now();
        let mut ix = index(t);
        ix.append(Kind::Hb, T0, 10, T0);
        ix.append(Kind::Hb, T0, 10, T0);
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
}
