//! Backpressure for the broker behind the gate: a bound on the bytes of PUBLISH packets the
//! gate has forwarded that the broker's subscriber has not yet taken.
//!
//! rumqttd keeps every subscription's messages in an in-memory log of a fixed number of
//! segments and, when the log is full, drops its oldest segment even if a subscriber has not
//! read it yet (the subscriber's cursor then jumps ahead, logged as "Read cursor start jumped").
//! It never slows a publisher down. The gate does it instead: while more than `limit` bytes are
//! owed to the subscriber, every connection stops reading its client's socket, so TCP pushes
//! back on the publishers (their PUBACKs, and so their QoS 1 windows, wait) until the
//! subscriber has drained below `resume`. Sized well under the broker's log, nothing is dropped.
//!
//! The subscriber's progress comes from a counter it keeps (the collector counts the topic and
//! payload bytes of each publish it receives, the same measure as [`publish_bytes`]). Bytes the
//! subscriber will never see (a publish before it subscribed, a session it discarded) would
//! hold the window shut forever: when the window has been full, the subscriber has taken
//! nothing for `stall` and has nothing of its own waiting (`busy` is false: it is not merely
//! slow, its store stalled), what is owed is written off (counted in `resets`) and the gate
//! resumes. Bytes the subscriber takes that the gate never counted (a will rumqttd publishes
//! itself, retained messages sent again on a resubscription, written-off bytes drained later)
//! never become credit: [`Backlog::owed`] raises the forwarded count to what was taken.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the window is checked while connections wait.
const POLL: Duration = Duration::from_millis(2);

/// The subscriber's count of bytes taken (monotonic).
pub type Drained = Box<dyn Fn() -> u64 + Send + Sync>;

/// Whether the subscriber still has taken messages waiting to be processed (it is slow, not
/// deaf): no write-off then.
pub type Busy = Box<dyn Fn() -> bool + Send + Sync>;

/// A shared window between the gate's connections and the broker's subscriber.
pub struct Backlog {
    limit: u64,
    resume: u64,
    stall: Duration,
    forwarded: AtomicU64,
    /// Bytes written off by stall resets, added to what the subscriber took.
    written_off: AtomicU64,
    drained: Drained,
    busy: Busy,
    /// Wakes waiting connections (poller → connections).
    room: Notify,
    /// Wakes the poller (a connection → poller).
    full: Notify,
    pauses: AtomicU64,
    resets: AtomicU64,
}

impl std::fmt::Debug for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backlog")
            .field("limit", &self.limit)
            .field("owed", &self.owed())
            .finish_non_exhaustive()
    }
}

impl Backlog {
    /// A window of `limit` bytes; waiting connections resume below three quarters of it. A full
    /// window whose subscriber takes nothing for `stall` while not `busy` is written off.
    pub fn new(limit: u64, stall: Duration, drained: Drained, busy: Busy) -> Arc<Backlog> {
        let limit = limit.max(1);
        Arc::new(Backlog {
            limit,
            resume: limit / 4 * 3,
            stall,
            forwarded: AtomicU64::new(0),
            written_off: AtomicU64::new(0),
            drained,
            busy,
            room: Notify::new(),
            full: Notify::new(),
            pauses: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        })
    }

    /// The window's size in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes forwarded and not yet taken by the subscriber. Takings beyond what was forwarded
    /// (bytes the gate never counted) raise the forwarded count instead of becoming credit for
    /// later publishes: the gate counts a publish before writing it, so the subscriber cannot
    /// legitimately be ahead.
    pub fn owed(&self) -> u64 {
        let taken = (self.drained)().saturating_add(self.written_off.load(Relaxed));
        let forwarded = self.forwarded.fetch_max(taken, Relaxed).max(taken);
        forwarded - taken
    }

    /// Whether one more publish may be forwarded now.
    pub fn has_room(&self) -> bool {
        self.owed() < self.limit
    }

    /// Times the window filled and connections paused.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Relaxed)
    }

    /// Times a full window was written off because the subscriber took nothing for `stall`.
    pub fn resets(&self) -> u64 {
        self.resets.load(Relaxed)
    }

    /// Counts a forwarded PUBLISH of `bytes` (topic and payload), after absorbing takings the
    /// gate never counted (see [`Backlog::owed`]).
    pub fn forwarded(&self, bytes: u64) {
        let _ = self.owed();
        self.forwarded.fetch_add(bytes, Relaxed);
    }

    /// Returns once the window has room (at once when it has).
    pub async fn room(&self) {
        loop {
            if self.owed() < self.limit {
                return;
            }
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Checked again after registering: a wake-up in between is not lost.
            if self.owed() < self.limit {
                return;
            }
            self.full.notify_one();
            room.await;
        }
    }

    /// Watches the window while connections wait and wakes them when it has drained below
    /// `resume`, or writes it off after `stall` without progress. Runs until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.full.notified() => {}
            }
            if self.owed() < self.limit {
                self.room.notify_waiters();
                continue;
            }
            self.pauses.fetch_add(1, Relaxed);
            let mut last = (self.drained)();
            let mut since = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
                let now = tokio::time::Instant::now();
                let drained = (self.drained)();
                if drained != last {
                    last = drained;
                    since = now;
                }
                if self.owed() < self.resume {
                    break;
                }
                if now - since >= self.stall && !(self.busy)() {
                    let owed = self.owed();
                    self.written_off.fetch_add(owed, Relaxed);
                    self.resets.fetch_add(1, Relaxed);
                    tracing::warn!(
                        owed,
                        "MQTT gate: the collector took nothing for {:?} with the broker's window full; \
                         written off, publishers resume",
                        self.stall
                    );
                    break;
                }
            }
            self.room.notify_waiters();
        }
    }
}

/// A second window, for publishes whose topic `matches` (the replay topics: backlog re-sent
/// from agents' spools), read by a subscriber of its own: the collector reads replays on a
/// second session and counts what it takes there separately. A replay storm the collector drains
/// slowly then fills this window, not the live one, and live publishes keep flowing.
#[derive(Clone)]
pub struct ReplayWindow {
    pub backlog: Arc<Backlog>,
    /// True for a topic that counts against this window.
    pub matches: fn(&str) -> bool,
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}

/// The topic of a PUBLISH frame; `None` for any other packet or a topic that is not UTF-8.
pub(crate) fn publish_topic(frame: &[u8]) -> Option<&str> {
    if frame.first()? >> 4 != 3 {
        return None;
    }
    let mut header = 1;
    while frame.get(header).is_some_and(|b| b & 0x80 != 0) {
        header += 1;
    }
    header += 1;
    let len = usize::from(u16::from_be_bytes([
        *frame.get(header)?,
        *frame.get(header + 1)?,
    ]));
    let start = header + 2;
    std::str::from_utf8(frame.get(start..start + len)?).ok()
}

/// Topic and payload bytes of a PUBLISH frame (fixed header included), the measure both sides
/// of the window count; `None` for any other packet.
pub(crate) fn publish_bytes(frame: &[u8]) -> Option<u64> {
    let first = *frame.first()?;
    if first >> 4 != 3 {
        return None;
    }
    // Remaining length: 1 to 4 bytes of 7 bits each, high bit set while more follow.
    let mut header = 1;
    while frame.get(header).is_some_and(|b| b & 0x80 != 0) {
        header += 1;
    }
    header += 1;
    let qos = (first >> 1) & 0b11;
    // Topic length (2 bytes) and, above QoS 0, the packet id (2 bytes).
    let fixed = header + 2 + if qos > 0 { 2 } else { 0 };
    Some(frame.len().saturating_sub(fixed) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{Packet, Publish};
    use std::sync::atomic::{AtomicBool, AtomicU64};

    fn frame(p: Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.write(&mut out, usize::MAX).unwrap();
        out.to_vec()
    }

    #[test]
    fn publish_bytes_are_topic_and_payload() {
        for (qos, payload) in [
            (QoS::AtMostOnce, 10),
            (QoS::AtLeastOnce, 300),
            (QoS::ExactlyOnce, 20_000),
        ] {
            let mut p = Publish::new("dozor/v1/mo/host/hb", qos, vec![7u8; payload]);
            p.pkid = u16::from(qos != QoS::AtMostOnce);
            let f = frame(Packet::Publish(p));
            assert_eq!(
                publish_bytes(&f),
                Some(19 + payload as u64),
                "{qos:?} {payload}"
            );
        }
        assert_eq!(publish_bytes(&frame(Packet::PingReq)), None);
        assert_eq!(publish_bytes(&[]), None);
    }

    #[test]
    fn publish_topic_is_read_from_the_frame() {
        // A payload long enough for a two-byte remaining length.
        let mut p = Publish::new(
            "dozor/v1/mo/host/hb-replay",
            QoS::AtLeastOnce,
            vec![7u8; 300],
        );
        p.pkid = 1;
        let f = frame(Packet::Publish(p));
        assert_eq!(publish_topic(&f), Some("dozor/v1/mo/host/hb-replay"));
        assert_eq!(publish_topic(&f[..4]), None, "cut short");
        assert_eq!(publish_topic(&frame(Packet::PingReq)), None);
        assert_eq!(publish_topic(&[]), None);
    }

    fn window(limit: u64) -> (Arc<Backlog>, Arc<AtomicU64>) {
        let (b, taken, _) = window_busy(limit);
        (b, taken)
    }

    /// A window, the subscriber's bytes taken, and whether it has messages waiting.
    fn window_busy(limit: u64) -> (Arc<Backlog>, Arc<AtomicU64>, Arc<AtomicBool>) {
        let taken = Arc::new(AtomicU64::new(0));
        let busy = Arc::new(AtomicBool::new(false));
        let (t, bz) = (taken.clone(), busy.clone());
        let b = Backlog::new(
            limit,
            Duration::from_secs(10),
            Box::new(move || t.load(Relaxed)),
            Box::new(move || bz.load(Relaxed)),
        );
        (b, taken, busy)
    }

    /// A subscriber that is slow (messages of its own waiting), not deaf, is never written off:
    /// that would let publishers run into the broker's dropping log while the collector's
    /// store is stalled.
    #[tokio::test(start_paused = true)]
    async fn a_busy_subscriber_is_not_written_off() {
        let (b, taken, busy) = window_busy(1000);
        busy.store(true, Relaxed);
        let cancel = CancellationToken::new();
        tokio::spawn(b.clone().run(cancel.clone()));
        b.forwarded(1500);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.room().await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        assert_eq!(b.resets(), 0);
        // Its queue empties and it still takes nothing: now written off.
        busy.store(false, Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(waiter.is_finished());
        assert_eq!(b.resets(), 1);
        // Taking the written-off bytes later gives no credit.
        taken.store(1500, Relaxed);
        b.forwarded(1000);
        assert_eq!(b.owed(), 1000);
        cancel.cancel();
    }

    /// Bytes the subscriber takes that the gate never counted (a will rumqttd publishes itself,
    /// retained messages sent again) do not become credit that later lets the window overfill.
    #[test]
    fn takings_beyond_what_was_forwarded_are_no_credit() {
        let (b, taken) = window(1000);
        b.forwarded(500);
        taken.store(700, Relaxed);
        assert_eq!(b.owed(), 0);
        b.forwarded(1000);
        assert_eq!(b.owed(), 1000);
        assert!(!b.has_room());
        taken.store(1400, Relaxed);
        assert_eq!(b.owed(), 300);
        assert!(b.has_room());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_waits_until_the_subscriber_drains_below_resume() {
        let (b, taken) = window(1000);
        let cancel = CancellationToken::new();
        tokio::spawn(b.clone().run(cancel.clone()));
        b.forwarded(999);
        // Below the limit: no wait.
        tokio::time::timeout(Duration::from_millis(1), b.room())
            .await
            .unwrap();
        b.forwarded(1);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        // Drained to 800 owed: under the limit but not under resume (750): still waiting.
        taken.store(200, Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        taken.store(300, Relaxed);
        tokio::time::timeout(Duration::from_millis(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((b.pauses(), b.resets(), b.owed()), (1, 0, 700));
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_subscriber_is_written_off() {
        let (b, taken) = window(1000);
        let cancel = CancellationToken::new();
        tokio::spawn(b.clone().run(cancel.clone()));
        b.forwarded(1500);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.room().await }
        });
        // Progress restarts the stall clock.
        tokio::time::sleep(Duration::from_secs(8)).await;
        taken.store(100, Relaxed);
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(waiter.is_finished());
        assert_eq!((b.resets(), b.owed()), (1, 0));
        // Later progress of the subscriber never makes the count go below zero.
        taken.store(2000, Relaxed);
        assert_eq!(b.owed(), 0);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_all_resume() {
        let (b, taken) = window(100);
        let cancel = CancellationToken::new();
        tokio::spawn(b.clone().run(cancel.clone()));
        b.forwarded(100);
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.room().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        taken.store(100, Relaxed);
        for w in waiters {
            tokio::time::timeout(Duration::from_millis(10), w)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(b.pauses(), 1);
        cancel.cancel();
    }
}
