//! Counters of the ingest path, rendered as Prometheus text on `/metrics`.
//!
//! Plain atomics: incremented on the hot path without locks or allocation.

use dozor_proto::{Kind, Reject};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The dynamic-security commands the collector sends, as counted on `/metrics`.
pub const DYNSEC_COMMANDS: [&str; 6] = [
    "createRole",
    "createClient",
    "addRoleACL",
    "addClientRole",
    "deleteClient",
    "deleteRole",
];

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

/// Reads what waits in the ingest queue: (messages, bytes).
pub struct IngestQueueProbe(pub Box<dyn Fn() -> (usize, usize) + Send + Sync>);

impl std::fmt::Debug for IngestQueueProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngestQueueProbe")
    }
}

/// All counters. One instance, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    received: AtomicU64,
    received_bytes: AtomicU64,
    /// The same measure for the publishes of the replay session (`ingest::Session::Replay`),
    /// which the embedded broker's replay window counts against.
    replay_received_bytes: AtomicU64,
    accepted: [AtomicU64; 4],
    replayed: AtomicU64,
    duplicates: AtomicU64,
    rejected: [AtomicU64; N_DROPS],
    batches: AtomicU64,
    batch_records: AtomicU64,
    store_errors: AtomicU64,
    acks_sent: AtomicU64,
    mqtt_reconnects: AtomicU64,
    /// Commands sent to Mosquitto's dynamic-security plugin, per [`DYNSEC_COMMANDS`] entry.
    dynsec_commands: [AtomicU64; DYNSEC_COMMANDS.len()],
    /// Host ids found sent by two or more agent installs at once (cloned machine ids).
    cloned_ids: AtomicU64,
    /// Last wills of an older connection than the host's birth, ignored (`Outcome::LateWill`).
    late_wills: AtomicU64,
    /// Seconds from handing a batch to the store until it is committed (retries included).
    store_write: Histogram,
    /// Readiness inputs (see `health`): the ingest client holds a broker connection.
    broker_connected: std::sync::atomic::AtomicBool,
    /// Unix ms since the store thread has been writing the current batch; 0 when idle.
    store_busy_since_ms: std::sync::atomic::AtomicI64,
    /// Unix ms of the pipeline's last flush tick (it ticks every few ms while it runs).
    pipeline_tick_ms: std::sync::atomic::AtomicI64,
    /// What waits in the ingest queue now, (messages, bytes), set once at start
    /// (`ingest::queue`); and the most messages it held at once.
    ingest_queue: std::sync::OnceLock<IngestQueueProbe>,
    ingest_queue_peak: AtomicU64,
    /// The replay session's queue, the same way.
    replay_queue: std::sync::OnceLock<IngestQueueProbe>,
    /// Last time a rejection was logged, per reason, as ms since `started` (rate-limited log).
    last_log_ms: [AtomicU64; N_DROPS],
    suppressed: [AtomicU64; N_DROPS],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            received: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            replay_received_bytes: AtomicU64::new(0),
            accepted: Default::default(),
            replayed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            batches: AtomicU64::new(0),
            batch_records: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            acks_sent: AtomicU64::new(0),
            mqtt_reconnects: AtomicU64::new(0),
            dynsec_commands: Default::default(),
            cloned_ids: AtomicU64::new(0),
            late_wills: AtomicU64::new(0),
            store_write: Histogram::new(STORE_WRITE_BUCKETS),
            broker_connected: Default::default(),
            store_busy_since_ms: Default::default(),
            pipeline_tick_ms: std::sync::atomic::AtomicI64::new(crate::clock::now_ms()),
            ingest_queue: std::sync::OnceLock::new(),
            ingest_queue_peak: AtomicU64::new(0),
            replay_queue: std::sync::OnceLock::new(),
            last_log_ms: std::array::from_fn(|_| AtomicU64::new(0)),
            suppressed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Upper bounds (seconds) of the store-write histogram: a batch commits in milliseconds with
/// `synchronous = "full"` on a healthy disk; seconds mean a slow or failing disk.
const STORE_WRITE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Minimum time between two log lines about the same rejection reason.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Metrics {
    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    /// Counts the topic and payload bytes of a received publish.
    pub fn received_bytes(&self, n: u64) {
        self.received_bytes.fetch_add(n, Relaxed);
    }

    /// Topic and payload bytes of every publish received so far.
    pub fn received_bytes_total(&self) -> u64 {
        self.received_bytes.load(Relaxed)
    }

    /// Counts the topic and payload bytes of a publish received on the replay session.
    pub fn replay_received_bytes(&self, n: u64) {
        self.replay_received_bytes.fetch_add(n, Relaxed);
    }

    /// Topic and payload bytes of every publish received on the replay session so far.
    pub fn replay_received_bytes_total(&self) -> u64 {
        self.replay_received_bytes.load(Relaxed)
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

    /// A batch of `records` was committed, `took` after it was handed to the store.
    pub fn batch(&self, records: usize, took: Duration) {
        self.batches.fetch_add(1, Relaxed);
        self.batch_records.fetch_add(records as u64, Relaxed);
        self.store_write.observe(took.as_secs_f64());
    }

    /// The ingest client gained or lost its broker connection.
    pub fn set_broker_connected(&self, up: bool) {
        self.broker_connected.store(up, Relaxed);
    }

    /// The store thread started writing a batch at `at_ms` (0: it finished).
    pub fn set_store_busy_since(&self, at_ms: i64) {
        self.store_busy_since_ms.store(at_ms, Relaxed);
    }

    /// The pipeline ticked at `at_ms`.
    pub fn pipeline_tick(&self, at_ms: i64) {
        self.pipeline_tick_ms.store(at_ms, Relaxed);
    }

    /// Readiness inputs: (broker connected, store busy since ms or 0, last pipeline tick ms).
    pub(crate) fn readiness_inputs(&self) -> (bool, i64, i64) {
        (
            self.broker_connected.load(Relaxed),
            self.store_busy_since_ms.load(Relaxed),
            self.pipeline_tick_ms.load(Relaxed),
        )
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Relaxed);
    }

    pub fn acks_sent(&self, n: u64) {
        self.acks_sent.fetch_add(n, Relaxed);
    }

    /// A host id was found sent by more agent installs at once than before.
    pub fn cloned_id(&self) {
        self.cloned_ids.fetch_add(1, Relaxed);
    }

    /// A late last will was ignored.
    pub fn late_will(&self) {
        self.late_wills.fetch_add(1, Relaxed);
    }

    /// Where `/metrics` reads the ingest queue's depth from (set once; later calls are ignored).
    pub fn set_ingest_queue(&self, probe: IngestQueueProbe) {
        let _ = self.ingest_queue.set(probe);
    }

    /// Publishes waiting in the ingest queue now (0 before the queue exists).
    pub fn ingest_queue_waiting(&self) -> u64 {
        self.ingest_queue
            .get()
            .map_or(0, |probe| (probe.0)().0 as u64)
    }

    /// Where `/metrics` reads the replay session's queue from (set once).
    pub fn set_replay_queue(&self, probe: IngestQueueProbe) {
        let _ = self.replay_queue.set(probe);
    }

    /// Publishes waiting in the replay session's queue now (0 without one).
    pub fn replay_queue_waiting(&self) -> u64 {
        self.replay_queue
            .get()
            .map_or(0, |probe| (probe.0)().0 as u64)
    }

    /// The ingest queue held `messages` at once.
    pub fn ingest_queue_depth(&self, messages: usize) {
        self.ingest_queue_peak.fetch_max(messages as u64, Relaxed);
    }

    pub fn mqtt_reconnect(&self) {
        self.mqtt_reconnects.fetch_add(1, Relaxed);
    }

    /// Counts one command sent to the broker's dynamic-security plugin (`identity::dynsec`).
    pub fn dynsec_sent(&self, command: &str) {
        if let Some(i) = DYNSEC_COMMANDS.iter().position(|c| *c == command) {
            self.dynsec_commands[i].fetch_add(1, Relaxed);
        }
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
    /// Appends the ingest families to `out` (see [`Families`]).
    pub fn render(&self, out: &mut String) {
        let mut f = Families::default();
        f.counter("dozor_messages_received_total", "MQTT messages received.")
            .sample(&[], self.received.load(Relaxed));
        f.counter(
            "dozor_messages_received_bytes_total",
            "Topic and payload bytes of the MQTT messages received.",
        )
        .sample(&[], self.received_bytes.load(Relaxed));
        let accepted = f.counter(
            "dozor_messages_accepted_total",
            "Messages accepted, by kind.",
        );
        for (k, v) in KINDS.iter().zip(&self.accepted) {
            accepted.sample(&[("kind", k.as_str())], v.load(Relaxed));
        }
        f.counter(
            "dozor_messages_replayed_total",
            "Accepted messages that were replays from agent spools.",
        )
        .sample(&[], self.replayed.load(Relaxed));
        f.counter(
            "dozor_messages_duplicate_total",
            "Messages already stored (redelivered or replayed twice), counted once.",
        )
        .sample(&[], self.duplicates.load(Relaxed));
        let rejected = f.counter(
            "dozor_messages_rejected_total",
            "Messages rejected, by reason.",
        );
        let reasons = Reject::ALL
            .iter()
            .map(|r| Refusal::Decode(*r))
            .chain(Refusal::COLLECTOR);
        for d in reasons {
            rejected.sample(&[("reason", d.as_str())], self.rejected_count(d));
        }
        for (n, help, v) in [
            (
                "dozor_store_batches_total",
                "Batches committed to the store.",
                &self.batches,
            ),
            (
                "dozor_store_records_total",
                "Records in the committed batches.",
                &self.batch_records,
            ),
            (
                "dozor_store_errors_total",
                "Failed store commits (the batch is retried).",
                &self.store_errors,
            ),
            (
                "dozor_cloned_machine_ids_total",
                "Host ids found sent live by two or more agent installs at once (cloned disk images).",
                &self.cloned_ids,
            ),
            (
                "dozor_states_stale_total",
                "Last wills (state lost) of an older agent connection than the host's birth, ignored.",
                &self.late_wills,
            ),
        ] {
            f.counter(n, help).sample(&[], v.load(Relaxed));
        }
        f.counter(
            "dozor_delivery_acks_sent_total",
            "Confirmations of stored data sent to agents.",
        )
        .sample(&[], self.acks_sent.load(Relaxed));
        f.counter(
            "dozor_mqtt_reconnects_total",
            "Reconnections of the collector's MQTT client.",
        )
        .sample(&[], self.mqtt_reconnects.load(Relaxed));
        let f_dynsec = f.counter(
            "dozor_dynsec_commands_total",
            "Commands sent to Mosquitto's dynamic-security plugin (mqtt.dynsec), by command.",
        );
        for (c, n) in DYNSEC_COMMANDS.iter().zip(&self.dynsec_commands) {
            f_dynsec.sample(&[("command", c)], n.load(Relaxed));
        }
        if let Some(probe) = self.ingest_queue.get() {
            let (messages, bytes) = (probe.0)();
            f.gauge(
                "dozor_ingest_queue_messages",
                "Publishes read from the broker waiting for the pipeline.",
            )
            .sample(&[], messages as u64);
            f.gauge(
                "dozor_ingest_queue_bytes",
                "Their estimated size (mqtt.ingest_queue_mib bounds it).",
            )
            .sample(&[], bytes as u64);
            f.gauge(
                "dozor_ingest_queue_peak_messages",
                "The most publishes the ingest queue held at once since the start.",
            )
            .sample(&[], self.ingest_queue_peak.load(Relaxed));
        }
        if let Some(probe) = self.replay_queue.get() {
            let (messages, bytes) = (probe.0)();
            f.gauge(
                "dozor_replay_queue_messages",
                "Replayed publishes read on the replay session waiting for the pipeline.",
            )
            .sample(&[], messages as u64);
            f.gauge(
                "dozor_replay_queue_bytes",
                "Their estimated size (mqtt.ingest_queue_mib bounds it, separately).",
            )
            .sample(&[], bytes as u64);
        }
        f.write(out);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            "dozor_store_write_seconds",
            "Time from handing a batch to the store until it is committed (retries included).",
            self.store_write.clone(),
        );
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
    }
}

/// The metric families of one scrape, written by `prometheus-client` in the OpenMetrics text
/// format (`/metrics` ends with `# EOF`). The counters themselves stay plain atomics owned by
/// each component; a component adds its families here when scraped. Every family has a HELP.
#[derive(Debug, Default)]
pub struct Families(Vec<Family>);

/// One family being filled: add samples with [`Family::sample`].
#[derive(Debug)]
pub struct Family {
    /// The family's name: a counter's without `_total` (the encoder appends it to samples).
    name: String,
    help: String,
    counter: bool,
    samples: Vec<(Vec<(String, String)>, u64)>,
}

impl Family {
    /// Adds a sample with these labels (in this order).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Family {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.samples.push((labels, value));
        self
    }
}

impl Families {
    /// A counter family; `name` is the samples' name, ending with `_total`.
    pub fn counter(&mut self, name: &str, help: &str) -> &mut Family {
        debug_assert!(name.ends_with("_total"), "counter {name} without _total");
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.push(base, help, true)
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str) -> &mut Family {
        self.push(name, help, false)
    }

    fn push(&mut self, name: &str, help: &str, counter: bool) -> &mut Family {
        self.0.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            counter,
            samples: Vec::new(),
        });
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    /// Appends the families to `out` (without the final `# EOF`, which the handler writes).
    pub fn write(self, out: &mut String) {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
    }
}

impl prometheus_client::collector::Collector for Families {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        for f in &self.0 {
            let kind = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(&f.name, &f.help, None, kind)?;
            if let [(labels, v)] = f.samples.as_slice()
                && labels.is_empty()
            {
                // A single series without labels: `name 5`, not `name{} 5`.
                if f.counter {
                    ConstCounter::new(*v).encode(metric)?;
                } else {
                    ConstGauge::new(*v).encode(metric)?;
                }
                continue;
            }
            for (labels, v) in &f.samples {
                let m = metric.encode_family(labels)?;
                if f.counter {
                    ConstCounter::new(*v).encode(m)?;
                } else {
                    ConstGauge::new(*v).encode(m)?;
                }
            }
        }
        Ok(())
    }
}

/// The end of an OpenMetrics exposition.
pub const EOF: &str = "# EOF\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Checks `text` as an OpenMetrics exposition of counters and gauges: every family has HELP
    /// and TYPE before its samples, samples are named after their family (a counter's with
    /// `_total`), labels are `k="v"`, values are numbers, and it ends with `# EOF`. Returns
    /// sample name + labels → value.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let mut help: BTreeMap<&str, &str> = BTreeMap::new();
        let mut family: Option<(&str, &str)> = None;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end");
        for line in &lines[..lines.len() - 1] {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').expect("HELP name text");
                assert!(!h.is_empty());
                assert!(help.insert(name, h).is_none(), "family {name} twice");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(help.contains_key(name), "{name} has no HELP");
                assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
                family = Some((name, kind));
            } else {
                let (name, kind) = family.expect("a sample before any TYPE");
                let (series, value) = line.rsplit_once(' ').expect("series value");
                value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
                assert!(!series.ends_with("{}"), "empty label set: {line}");
                let (sample, labels) = match series.split_once('{') {
                    Some((s, l)) => (s, l.strip_suffix('}').expect("closing brace")),
                    None => (series, ""),
                };
                let want: Vec<String> = match kind {
                    "counter" => vec![format!("{name}_total")],
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .collect(),
                    _ => vec![name.to_string()],
                };
                assert!(
                    want.iter().any(|w| w == sample),
                    "sample outside its family: {line}"
                );
                for pair in labels.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("k=v");
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
                out.insert(series.to_string(), value.parse().unwrap_or(f64::NAN));
            }
        }
        out
    }

    #[test]
    fn the_exposition_parses_back() {
        let m = Metrics::default();
        m.received();
        m.accepted(Kind::Hb, true);
        m.rejected(Refusal::Flood, "t");
        m.batch(3, Duration::from_millis(7));
        m.set_ingest_queue(IngestQueueProbe(Box::new(|| (5, 4_096))));
        m.ingest_queue_depth(9);
        m.ingest_queue_depth(6);
        let mut text = String::new();
        m.render(&mut text);
        let mut f = Families::default();
        f.gauge("dozor_hosts", "Hosts by live state and role.")
            .sample(&[("state", "online"), ("role", "server")], 3);
        f.write(&mut text);
        // A second component's families, written after the first (as /metrics does).
        let mut g = Families::default();
        g.counter("dozor_alert_journal_errors_total", "x.")
            .sample(&[], 2);
        g.write(&mut text);
        text.push_str(EOF);
        let v = parse(&text);
        assert_eq!(v["dozor_messages_received_total"], 1.0);
        assert_eq!(v["dozor_messages_accepted_total{kind=\"hb\"}"], 1.0);
        assert_eq!(v["dozor_messages_replayed_total"], 1.0);
        assert_eq!(v["dozor_messages_rejected_total{reason=\"flood\"}"], 1.0);
        assert_eq!(v["dozor_mqtt_reconnects_total"], 0.0);
        assert_eq!(v["dozor_store_write_seconds_count"], 1.0);
        assert_eq!(v["dozor_store_write_seconds_bucket{le=\"0.005\"}"], 0.0);
        assert_eq!(v["dozor_store_write_seconds_bucket{le=\"0.01\"}"], 1.0);
        assert_eq!(v["dozor_hosts{state=\"online\",role=\"server\"}"], 3.0);
        assert_eq!(v["dozor_alert_journal_errors_total"], 2.0);
        assert_eq!(v["dozor_ingest_queue_messages"], 5.0);
        assert_eq!(v["dozor_ingest_queue_bytes"], 4_096.0);
        assert_eq!(v["dozor_ingest_queue_peak_messages"], 9.0);
    }
}
