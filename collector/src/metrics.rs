//! Counters of the ingest path, rendered as Prometheus text on `/metrics`.
//!
//! Plain atomics: incremented on the hot path without locks or allocation.

use dozor_proto::{Kind, Reject};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Reasons the collector itself (not the decoder) rejects a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A decode/validation failure (see [`Reject`]).
    Decode(Reject),
    /// The host sent more than `max_msgs_per_host_per_min`.
    Flood,
    /// Tracking the host would exceed `max_hosts` or `max_hosts_per_mo`.
    TooManyHosts,
    /// The МО is not in the roster and the roster is strict.
    UnknownMo,
    /// The corrected timestamp is too far in the future or older than `max_age_days`.
    TimestampRange,
    /// Too many out-of-order sequence numbers pending for the instance (the agent will resend).
    SeqWindow,
    /// No identity was issued for the topic's (МО, host) (enrolled mode).
    Unenrolled,
    /// The topic's identity was revoked.
    Revoked,
    /// The message carries no MAC (enrolled mode).
    Unsigned,
    /// The MAC does not match: forged, or signed by another identity.
    BadMac,
    /// A packet the MQTT client cannot read (larger than it reads, or malformed): costs the
    /// broker session once, never the ingest (see `ingest`).
    UnreadablePacket,
}

impl Refusal {
    pub const COLLECTOR: [Refusal; 10] = [
        Refusal::Flood,
        Refusal::TooManyHosts,
        Refusal::UnknownMo,
        Refusal::TimestampRange,
        Refusal::SeqWindow,
        Refusal::Unenrolled,
        Refusal::Revoked,
        Refusal::Unsigned,
        Refusal::BadMac,
        Refusal::UnreadablePacket,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Decode(r) => r.as_str(),
            Refusal::Flood => "flood",
            Refusal::TooManyHosts => "too_many_hosts",
            Refusal::UnknownMo => "unknown_mo",
            Refusal::TimestampRange => "timestamp_range",
            Refusal::SeqWindow => "seq_window",
            Refusal::Unenrolled => "unenrolled",
            Refusal::Revoked => "revoked",
            Refusal::Unsigned => "unsigned",
            Refusal::BadMac => "bad_mac",
            Refusal::UnreadablePacket => "unreadable_packet",
        }
    }

    fn index(self) -> usize {
        match self {
            Refusal::Decode(r) => Reject::ALL.iter().position(|x| *x == r).unwrap_or(0),
            Refusal::Flood => Reject::ALL.len(),
            Refusal::TooManyHosts => Reject::ALL.len() + 1,
            Refusal::UnknownMo => Reject::ALL.len() + 2,
            Refusal::TimestampRange => Reject::ALL.len() + 3,
            Refusal::SeqWindow => Reject::ALL.len() + 4,
            Refusal::Unenrolled => Reject::ALL.len() + 5,
            Refusal::Revoked => Reject::ALL.len() + 6,
            Refusal::Unsigned => Reject::ALL.len() + 7,
            Refusal::BadMac => Reject::ALL.len() + 8,
            Refusal::UnreadablePacket => Reject::ALL.len() + 9,
        }
    }
}

const N_DROPS: usize = Reject::ALL.len() + Refusal::COLLECTOR.len();
const KINDS: [Kind; 4] = [Kind::Birth, Kind::State, Kind::Hb, Kind::Probe];

/// All counters. One instance, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    received: AtomicU64,
    accepted: [AtomicU64; 4],
    replayed: AtomicU64,
    duplicates: AtomicU64,
    rejected: [AtomicU64; N_DROPS],
    batches: AtomicU64,
    batch_records: AtomicU64,
    store_errors: AtomicU64,
    acks_sent: AtomicU64,
    mqtt_reconnects: AtomicU64,
    /// Last time a rejection was logged, per reason, as ms since `started` (rate-limited log).
    last_log_ms: [AtomicU64; N_DROPS],
    suppressed: [AtomicU64; N_DROPS],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            received: AtomicU64::new(0),
            accepted: Default::default(),
            replayed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            batches: AtomicU64::new(0),
            batch_records: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            acks_sent: AtomicU64::new(0),
            mqtt_reconnects: AtomicU64::new(0),
            last_log_ms: std::array::from_fn(|_| AtomicU64::new(0)),
            suppressed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Minimum time between two log lines about the same rejection reason.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Metrics {
    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    pub fn accepted(&self, kind: Kind, replay: bool) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.accepted[i].fetch_add(1, Relaxed);
        }
        if replay {
            self.replayed.fetch_add(1, Relaxed);
        }
    }

    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }

    pub fn batch(&self, records: usize) {
        self.batches.fetch_add(1, Relaxed);
        self.batch_records.fetch_add(records as u64, Relaxed);
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Relaxed);
    }

    pub fn acks_sent(&self, n: u64) {
        self.acks_sent.fetch_add(n, Relaxed);
    }

    pub fn mqtt_reconnect(&self) {
        self.mqtt_reconnects.fetch_add(1, Relaxed);
    }

    /// Counts a rejection and logs it, at most once per reason every 10 s.
    pub fn rejected(&self, why: Refusal, topic: &str) {
        let i = why.index();
        self.rejected[i].fetch_add(1, Relaxed);
        let now = self.started.elapsed().as_millis() as u64 + LOG_EVERY.as_millis() as u64;
        let last = self.last_log_ms[i].load(Relaxed);
        if now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64
            && self.last_log_ms[i]
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed[i].swap(0, Relaxed);
            let topic: String = topic.chars().take(120).collect();
            tracing::warn!(reason = why.as_str(), topic, suppressed, "message rejected");
        } else {
            self.suppressed[i].fetch_add(1, Relaxed);
        }
    }

    pub fn rejected_count(&self, why: Refusal) -> u64 {
        self.rejected[why.index()].load(Relaxed)
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted.iter().map(|a| a.load(Relaxed)).sum()
    }

    pub fn duplicates_total(&self) -> u64 {
        self.duplicates.load(Relaxed)
    }

    /// Renders the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let c = "counter";
        let n = "dozor_messages_received_total";
        family(out, n, c, Some("MQTT messages received."));
        sample(out, n, &[], self.received.load(Relaxed));
        let n = "dozor_messages_accepted_total";
        family(out, n, c, Some("Messages accepted, by kind."));
        for (k, v) in KINDS.iter().zip(&self.accepted) {
            sample(out, n, &[("kind", k.as_str())], v.load(Relaxed));
        }
        let n = "dozor_messages_replayed_total";
        family(
            out,
            n,
            c,
            Some("Accepted messages that were replays from agent spools."),
        );
        sample(out, n, &[], self.replayed.load(Relaxed));
        let n = "dozor_messages_duplicate_total";
        let help = "Messages already stored (redelivered or replayed twice), counted once.";
        family(out, n, c, Some(help));
        sample(out, n, &[], self.duplicates.load(Relaxed));
        let n = "dozor_messages_rejected_total";
        family(out, n, c, Some("Messages rejected, by reason."));
        let reasons = Reject::ALL
            .iter()
            .map(|r| Refusal::Decode(*r))
            .chain(Refusal::COLLECTOR);
        for d in reasons {
            sample(out, n, &[("reason", d.as_str())], self.rejected_count(d));
        }
        for (n, v) in [
            ("dozor_store_batches_total", &self.batches),
            ("dozor_store_records_total", &self.batch_records),
            ("dozor_store_errors_total", &self.store_errors),
        ] {
            family(out, n, c, None);
            sample(out, n, &[], v.load(Relaxed));
        }
        let n = "dozor_delivery_acks_sent_total";
        family(
            out,
            n,
            c,
            Some("Confirmations of stored data sent to agents."),
        );
        sample(out, n, &[], self.acks_sent.load(Relaxed));
        let n = "dozor_mqtt_reconnects_total";
        family(out, n, c, None);
        sample(out, n, &[], self.mqtt_reconnects.load(Relaxed));
    }
}

/// Prometheus text format: the `# HELP` (when given) and `# TYPE` lines of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: Option<&str>) {
    if let Some(help) = help {
        let _ = writeln!(out, "# HELP {name} {help}");
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Prometheus text format: one sample, `name{k="v",…} value`.
pub fn sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    for (i, (k, v)) in labels.iter().enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        let _ = write!(out, "{k}=\"{v}\"");
    }
    if !labels.is_empty() {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}
