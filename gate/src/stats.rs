//! Counters of refused and closed connections by reason, open/pending gauges, and the rate
//! limit on the warnings they log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Why the gate refused or closed a connection. `as_str` is also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The authorizer refused the credentials (CONNACK 4).
    BadCredentials,
    /// The authorizer refused the client (CONNACK 5).
    NotAuthorized,
    /// A PUBLISH to a topic outside the grant.
    AclPublish,
    /// A SUBSCRIBE to a filter outside the grant.
    AclSubscribe,
    /// A will topic outside the grant (CONNACK 5).
    AclWill,
    /// A client packet larger than `max_packet_size`.
    Oversized,
    /// No CONNECT (or no finished TLS handshake) within `connect_timeout`.
    ConnectTimeout,
    /// `max_connections` were open: the new connection was closed at once.
    OverCapacity,
    /// `max_pending` connections had not sent CONNECT yet: the new one was closed at once.
    OverPending,
    /// Malformed packet, a first packet that is not CONNECT, an MQTT version other than 3.1.1,
    /// a QoS 2 PUBLISH, or a packet only a broker may send.
    ProtocolError,
    /// The TLS handshake failed.
    TlsError,
    /// The grant was no longer valid after `GateHandle::recheck`.
    Revoked,
    /// The upstream broker could not be reached (CONNACK 3).
    UpstreamError,
}

impl Reason {
    /// Every reason, in the order of `GateStats::counters`.
    pub const ALL: [Reason; 13] = [
        Reason::BadCredentials,
        Reason::NotAuthorized,
        Reason::AclPublish,
        Reason::AclSubscribe,
        Reason::AclWill,
        Reason::Oversized,
        Reason::ConnectTimeout,
        Reason::OverCapacity,
        Reason::OverPending,
        Reason::ProtocolError,
        Reason::TlsError,
        Reason::Revoked,
        Reason::UpstreamError,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadCredentials => "bad_credentials",
            Reason::NotAuthorized => "not_authorized",
            Reason::AclPublish => "acl_publish",
            Reason::AclSubscribe => "acl_subscribe",
            Reason::AclWill => "acl_will",
            Reason::Oversized => "oversized",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::OverCapacity => "over_capacity",
            Reason::OverPending => "over_pending",
            Reason::ProtocolError => "protocol_error",
            Reason::TlsError => "tls_error",
            Reason::Revoked => "revoked",
            Reason::UpstreamError => "upstream_error",
        }
    }

    fn index(self) -> usize {
        // `ALL` lists every variant in declaration order, so the discriminant is the index.
        self as usize
    }
}

/// At most one warning per reason per this many milliseconds.
const WARN_INTERVAL_MS: u64 = 10_000;

/// Shared counters of one gate. Cheap to read from a metrics endpoint.
#[derive(Debug)]
pub struct GateStats {
    counts: [AtomicU64; Reason::ALL.len()],
    /// Per reason: milliseconds since `epoch` of the last warning, plus one (0: never warned).
    last_warn: [AtomicU64; Reason::ALL.len()],
    epoch: Instant,
    open: AtomicU64,
    pending: AtomicU64,
}

impl Default for GateStats {
    fn default() -> Self {
        GateStats {
            counts: Default::default(),
            last_warn: Default::default(),
            epoch: Instant::now(),
            open: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }
}

impl GateStats {
    /// `(reason, count)` for every reason, for a Prometheus counter family.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        Reason::ALL
            .iter()
            .map(|r| (r.as_str(), self.count(*r)))
            .collect()
    }

    /// `(name, value)` of the gauges `connections_open` (pending ones included) and
    /// `connections_pending` (not yet past CONNECT).
    pub fn gauges(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("connections_open", self.connections_open()),
            ("connections_pending", self.connections_pending()),
        ]
    }

    /// How many connections were refused or closed for `reason`.
    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Connections open now, pending ones included.
    pub fn connections_open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections open now that have not completed CONNECT.
    pub fn connections_pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts `reason`; logs a warning if none was logged for it in the last 10 s, else at debug.
    pub(crate) fn record(&self, reason: Reason) {
        let total = self.counts[reason.index()].fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if warn_due(&self.last_warn[reason.index()], now_ms) {
            tracing::warn!(
                reason = reason.as_str(),
                total,
                "MQTT gate closed a connection (further ones for this reason logged at debug for 10 s)"
            );
        } else {
            tracing::debug!(
                reason = reason.as_str(),
                total,
                "MQTT gate closed a connection"
            );
        }
    }
}

/// Whether a warning may be logged at `now_ms`, given the slot holding the last one (ms + 1,
/// 0 for never). Claims the slot when it says yes, so concurrent callers warn only once.
fn warn_due(last: &AtomicU64, now_ms: u64) -> bool {
    let prev = last.load(Ordering::Relaxed);
    if prev != 0 && now_ms.saturating_add(1).saturating_sub(prev) < WARN_INTERVAL_MS {
        return false;
    }
    last.compare_exchange(
        prev,
        now_ms.saturating_add(1),
        Ordering::Relaxed,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// One accepted connection's place in the gauges; gives it back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    stats: Arc<GateStats>,
    pending: bool,
}

impl Slot {
    /// Takes an open and a pending place.
    pub(crate) fn new(stats: Arc<GateStats>) -> Slot {
        stats.open.fetch_add(1, Ordering::Relaxed);
        stats.pending.fetch_add(1, Ordering::Relaxed);
        Slot {
            stats,
            pending: true,
        }
    }

    /// The connection completed CONNECT: it no longer counts as pending.
    pub(crate) fn connected(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connected();
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_in_index_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn one_warning_per_ten_seconds() {
        let slot = AtomicU64::new(0);
        assert!(warn_due(&slot, 0), "first ever warns, even at time 0");
        assert!(!warn_due(&slot, 1));
        assert!(!warn_due(&slot, 9_999));
        assert!(warn_due(&slot, 10_000));
        assert!(!warn_due(&slot, 15_000));
        assert!(warn_due(&slot, 20_001));
    }

    #[test]
    fn counts_and_slots() {
        let stats = Arc::new(GateStats::default());
        stats.record(Reason::Oversized);
        stats.record(Reason::Oversized);
        stats.record(Reason::Revoked);
        let counters = stats.counters();
        assert!(counters.contains(&("oversized", 2)));
        assert!(counters.contains(&("revoked", 1)));
        assert!(counters.contains(&("acl_publish", 0)));

        let mut a = Slot::new(stats.clone());
        let b = Slot::new(stats.clone());
        assert_eq!(
            (stats.connections_open(), stats.connections_pending()),
            (2, 2)
        );
        a.connected();
        a.connected(); // idempotent
        assert_eq!(
            (stats.connections_open(), stats.connections_pending()),
            (2, 1)
        );
        drop(b);
        assert_eq!(
            (stats.connections_open(), stats.connections_pending()),
            (1, 0)
        );
        drop(a);
        assert_eq!(
            stats.gauges(),
            vec![("connections_open", 0), ("connections_pending", 0)]
        );
    }
}
