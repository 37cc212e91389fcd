//! The pipeline task: the one owner of live state and delivery tracking.
//!
//! For each inbound message: admit (roster, caps, flood), deduplicate by (instance, seq),
//! correct the timestamp by the host's clock offset, apply to live state, append to the batch.
//! Batches go to the store thread; only when a batch is durable are its MQTT messages
//! acknowledged to the broker and its sequence numbers confirmed to the agents.

use crate::alerts::{AlertInput, AlertSender};
use crate::clock::now_ms;
use crate::delivery::DeliveryMark;
use crate::delivery::{self, Taken, Tracker, Verdict};
use crate::identity::Registry;
use crate::ingest::{Held, Inbound, Outbox};
use crate::metrics::{Metrics, Refusal};
use crate::record::{Accepted, Batch, Record, Transition};
use crate::roster::Roster;
use crate::state::{LiveState, Snapshot, StateError};
use crate::store::Store;
use dozor_proto::{Ack, Kind, Message, SCHEMA_VERSION, topic};
use rumqttc::{AsyncClient, Publish, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Tunables of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub roster_strict: bool,
    pub max_future_ms: i64,
    pub max_age_ms: i64,
    /// Cut a batch when it holds this many records…
    pub max_batch: usize,
    /// …or when its oldest record is this old.
    pub max_batch_delay: Duration,
    pub ack_interval: Duration,
    /// A host confirmed less than this ago waits until it has passed (`Tracker::take_due`).
    pub ack_host_gap: Duration,
    pub snapshot_interval: Duration,
    pub max_insts: usize,
    /// Acknowledge MQTT publishes only after their batch is committed (manual acks); when
    /// false the MQTT client acknowledged them on receipt (see `ingest::acks_after_commit`).
    pub acks_after_commit: bool,
    /// With nothing to write for this long, ask the store for its maintenance.
    pub idle_maintain: Duration,
    /// Believe the `will_seq` of births, and so ignore a last will below it (docs/reliability.md,
    /// "Late last wills"). Off in `security.mode = "open"`: there anybody may publish a birth for
    /// any host, and one forged `will_seq` would silence that host's genuine wills; births then
    /// lose the field before anything reads it.
    pub judge_late_wills: bool,
}

impl Default for PipelineConfig {
    /// Time limits are the defaults of `[limits]` (written once, in `config::RawLimits`).
    fn default() -> Self {
        let l = crate::config::RawLimits::default();
        PipelineConfig {
            roster_strict: false,
            max_future_ms: (l.max_future_secs * 1000) as i64,
            max_age_ms: (l.max_age_days * 86_400_000) as i64,
            max_batch: 5_000,
            max_batch_delay: Duration::from_millis(50),
            ack_interval: Duration::from_secs(1),
            ack_host_gap: Duration::from_millis(crate::config::RawMqtt::default().ack_host_gap_ms),
            snapshot_interval: Duration::from_millis(500),
            max_insts: 400_000,
            acks_after_commit: true,
            idle_maintain: Duration::from_secs(10),
            judge_late_wills: true,
        }
    }
}

/// What [`Pipeline::handle`] decided about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Refused and not settled: never confirmed as stored, so the agent keeps the message and
    /// sends it again later (unreadable, unauthenticated, flood, host caps, full window).
    Rejected(Refusal),
    /// Refused by policy and its sequence number settled (counted as delivered without being
    /// stored) so that the agent's spool is not blocked by a message refused on every resend.
    Settled(Refusal),
    /// A late last will: a `state` `lost` made on an older connection of the agent than one
    /// its births announced (`will_seq`); changes nothing (docs/reliability.md, "Late last
    /// wills").
    LateWill,
    /// Already stored: its confirmation is due again. `restored`: a retained birth whose
    /// inventory (role) went back into the live state the restarted collector had lost.
    Duplicate { restored: bool },
    /// New: applied to the live state and appended to the batch (after `transition`, if the
    /// message changed the host's connection state).
    Accepted {
        accepted: Arc<Accepted>,
        transition: Option<Transition>,
    },
}

struct Job {
    batch: Batch,
    acks: Vec<PubAckDue>,
    /// Nothing to write: run the store's periodic maintenance as of this time instead (an idle
    /// collector still records that it is alive, closes days, applies retention).
    maintain_at: Option<i64>,
}

/// A PUBACK owed once its publish's batch is committed.
#[derive(Debug, Clone, Copy)]
struct PubAckDue {
    /// The connection it came on (see `Pipeline::generation`).
    generation: u32,
    pkid: u16,
}

struct Committed {
    marks: Vec<DeliveryMark>,
    acks: Vec<PubAckDue>,
    /// The batch's record vector, emptied on the store thread, for the pipeline's next batch:
    /// a fresh one grew to `max_batch` records (~0.5 MiB) by doubling for every batch, on
    /// memory the allocator had often given back to the kernel, so each batch paid page faults
    /// and zeroing (docs/benchmarks.md, "the tokio side's allocations").
    records: Vec<Record>,
}

/// Runs the store on a dedicated thread: writes each batch durably (retrying until it
/// succeeds or the process stops), then reports it committed.
fn spawn_store(
    mut store: Box<dyn Store>,
    rx: flume::Receiver<Job>,
    done: mpsc::UnboundedSender<Committed>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store".into())
        .spawn(move || {
        let mut retry =
            crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            // While the store defers work (the journal), wake up when it is due, or to retry a
            // failed apply with backoff; idle otherwise.
            let wait = match store.settle(false) {
                Ok(wait) => {
                    retry.reset();
                    wait
                }
                Err(e) => {
                    metrics.store_error();
                    let delay = retry.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "applying the store journal failed; retried");
                    Some(delay)
                }
            };
            let job = match wait {
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(flume::RecvError::Disconnected) => break,
                },
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(flume::RecvTimeoutError::Timeout) => continue,
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                },
            };
            if let Some(at) = job.maintain_at {
                if let Err(e) = store.maintain(at) {
                    tracing::warn!(error = %e, "store maintenance failed; retried later");
                }
                if done.send(Committed { marks: Vec::new(), acks: Vec::new(), records: Vec::new() }).is_err() {
                    break;
                }
                continue;
            }
            let mut backoff =
                crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            metrics.set_store_busy_since(now_ms());
            let started = std::time::Instant::now();
            loop {
                match store.write(&job.batch) {
                    Ok(()) => break,
                    Err(e) => {
                        metrics.store_error();
                        tracing::error!(error = %e, "store write failed; retrying (nothing is acknowledged meanwhile)");
                        std::thread::sleep(backoff.next_delay());
                    }
                }
            }
            metrics.set_store_busy_since(0);
            metrics.batch(job.batch.records.len(), started.elapsed());
            let mut records = job.batch.records;
            // The records are dropped here, on the store thread, as before; the capacity goes
            // back to the pipeline.
            records.clear();
            if done
                .send(Committed {
                    marks: job.batch.delivery,
                    acks: job.acks,
                    records,
                })
                .is_err()
            {
                break;
            }
        }
        // A graceful end applies the journal (a crash leaves it to the next start).
        if let Err(e) = store.settle(true) {
            tracing::warn!(error = %e, "applying the store journal at the end failed; applied at the next start");
        }
    })
}

/// The pipeline's state.
pub struct Pipeline {
    cfg: PipelineConfig,
    state: LiveState,
    tracker: Tracker,
    roster: Arc<Roster>,
    metrics: Arc<Metrics>,
    batch: Batch,
    acks: Vec<PubAckDue>,
    /// Committed publishes whose PUBACK did not fit into the MQTT client's request queue yet.
    unacked: std::collections::VecDeque<PubAckDue>,
    /// Connections to the broker so far (`Inbound::Connected` count), the same count as the
    /// ingest task's: a PUBACK is written only on the connection its publish came on.
    generation: u32,
    batch_started: Option<tokio::time::Instant>,
    transitions: Vec<Transition>,
    connected: bool,
    /// When the last job went to the store.
    last_job: tokio::time::Instant,
    /// Identities whose keys sign the acks (enrolled mode); `None`: acks go unsigned.
    registry: Option<watch::Receiver<Arc<Registry>>>,
    /// Host ids heard from several agent installs at once.
    clones: clones::CloneWatch,
    /// Where committed PUBACKs and the confirmations to agents go to be written in bulk by the
    /// ingest task; `None`: each through the MQTT client's request queue.
    outbox: Option<Outbox>,
    /// The delivery key of the message being handled ([`delivery::key_into`]), reused so that
    /// a message costs no key allocation.
    key: String,
    /// An emptied record vector a committed batch gave back ([`Committed::records`]), for the
    /// next batch.
    spare: Vec<Record>,
}

impl Pipeline {
    pub fn new(
        cfg: PipelineConfig,
        state: LiveState,
        marks: Vec<DeliveryMark>,
        roster: Arc<Roster>,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        let tracker = Tracker::new(cfg.max_insts, marks);
        Pipeline {
            cfg,
            state,
            tracker,
            roster,
            metrics,
            batch: Batch::default(),
            acks: Vec::new(),
            unacked: std::collections::VecDeque::new(),
            generation: 0,
            batch_started: None,
            transitions: Vec::new(),
            connected: false,
            last_job: tokio::time::Instant::now(),
            registry: None,
            clones: clones::CloneWatch::default(),
            outbox: None,
            key: String::new(),
            spare: Vec::new(),
        }
    }

    /// Hands committed PUBACKs and the confirmations to agents to the ingest task's [`Outbox`]
    /// instead of the MQTT client's request queue one by one.
    pub fn with_outbox(mut self, outbox: Outbox) -> Pipeline {
        self.outbox = Some(outbox);
        self
    }

    /// Signs every ack with the key of the identity it is for (enrolled mode).
    pub fn with_registry(mut self, registry: Option<watch::Receiver<Arc<Registry>>>) -> Pipeline {
        self.registry = registry;
        self
    }

    /// Decides about one decoded message received at `recv_ms` and applies it to the live
    /// state, the delivery tracker and the batch: admission (roster, caps, flood), clock
    /// correction, timestamp range, deduplication, settling. No I/O, no clock, no counters:
    /// the caller counts the [`Outcome`] ([`Pipeline::count`]) and tells the alerts.
    pub fn handle(
        &mut self,
        decoded: Result<Message, Refusal>,
        retained: bool,
        recv_ms: i64,
    ) -> Outcome {
        let mut msg = match decoded {
            Ok(m) => m,
            Err(d) => return Outcome::Rejected(d),
        };
        if !self.cfg.judge_late_wills
            && let Message::Birth(e) = &mut msg
        {
            // Open mode: a `will_seq` anybody could have forged is not believed.
            e.body.will_seq = None;
        }
        let h = msg.header();
        let in_roster = self.roster.contains(h.mo);
        if self.cfg.roster_strict && !in_roster {
            return self.reject_settled(&msg, Refusal::UnknownMo);
        }
        // One lookup of the host for this message: admit, clock offset and apply use the slot.
        let slot = match self.state.admit_slot(h.mo, h.host, recv_ms, in_roster) {
            Ok(s) => s,
            // Not settled: refused for now is never confirmed as stored. The agent keeps the
            // message and sends it again once its budget (or a place) is free.
            Err(e) => {
                return Outcome::Rejected(match e {
                    StateError::Flood => Refusal::Flood,
                    StateError::TooManyHosts | StateError::TooManyHostsInMo => {
                        Refusal::TooManyHosts
                    }
                });
            }
        };
        // Correct the agent's clock: live messages define the offset; replays use the latest.
        let offset = if h.replay || retained {
            self.state.clock_offset_at(slot).unwrap_or(0)
        } else {
            recv_ms - h.ts
        };
        let ts_ms = h.ts.saturating_add(offset);
        if ts_ms > recv_ms + self.cfg.max_future_ms || ts_ms < recv_ms - self.cfg.max_age_ms {
            return self.reject_settled(&msg, Refusal::TimestampRange);
        }
        if msg.is_sequenced() {
            delivery::key_into(&mut self.key, h.mo, h.host, h.inst);
            let oldest = match &msg {
                Message::Hb(e) => e.body.spool.as_ref().and_then(|s| s.oldest_seq),
                _ => None,
            };
            // One lookup: room, duplicate check, record, and settling below the agent's
            // oldest spooled number (once the message is known to be new).
            // Live messages sample the clone watch, at most once per instance per
            // `CLONE_SAMPLE_MS`, through this same lookup.
            let note = (!h.replay && !retained).then_some((recv_ms, clones::CLONE_SAMPLE_MS));
            let (taken, noted) = self
                .tracker
                .take_noting(&self.key, h.mo, h.host, h.seq, oldest, note);
            match taken {
                Taken::New => {}
                Taken::Duplicate => {
                    // A retained birth redelivered after a collector restart is a duplicate of
                    // what is stored, but the live state lost it with the process: take the
                    // inventory (role!) from it, or a crashed server would page nobody.
                    let restored = if let Message::Birth(e) = &msg {
                        self.state.restore_birth(
                            (h.mo, h.host, h.inst),
                            &e.body,
                            e.replay,
                            recv_ms,
                            in_roster,
                        );
                        true
                    } else {
                        false
                    };
                    return Outcome::Duplicate { restored };
                }
                Taken::WindowFull => return Outcome::Rejected(Refusal::SeqWindow),
                Taken::NoRoom => return Outcome::Rejected(Refusal::TooManyHosts),
            }
            if noted {
                self.watch_clones(&h, recv_ms);
            }
        }
        // admit_slot() created the host above; nothing since moved it (only snapshots do).
        if let Some(late) = self.state.late_will(slot, &msg) {
            tracing::debug!(
                mo = h.mo,
                host = h.host,
                seq = late.seq,
                will_seq = late.will_seq,
                "ignoring a last will of an older connection than the host's birth"
            );
            return Outcome::LateWill;
        }
        let transition = self.state.apply_slot(slot, &msg, recv_ms, retained);
        if let Some(t) = &transition {
            self.push(Record::Transition(t.clone()));
        }
        let accepted = Arc::new(Accepted {
            msg,
            recv_ms,
            ts_ms,
        });
        self.push(Record::Msg(accepted.clone()));
        Outcome::Accepted {
            accepted,
            transition,
        }
    }

    /// Counts an outcome of [`Pipeline::handle`] for `/metrics`.
    pub fn count(&self, outcome: &Outcome, topic: &str) {
        match outcome {
            Outcome::Rejected(r) | Outcome::Settled(r) => self.metrics.rejected(*r, topic),
            Outcome::LateWill => self.metrics.late_will(),
            Outcome::Duplicate { .. } => self.metrics.duplicate(),
            Outcome::Accepted { accepted, .. } => self
                .metrics
                .accepted(accepted.msg.kind(), accepted.msg.header().replay),
        }
    }

    /// Feeds a live message to the clone watch and applies its verdict: a new finding is
    /// counted and warned about; a changed count rewrites the warning; a resolved clone takes
    /// it away.
    fn watch_clones(&mut self, h: &dozor_proto::Header<'_>, recv_ms: i64) {
        match self.clones.seen(h.mo, h.host, h.inst, recv_ms) {
            clones::CloneVerdict::Quiet => {}
            clones::CloneVerdict::Cloned { insts } => {
                self.metrics.cloned_id();
                let text = clones::warning_ru(h.mo, h.host, insts);
                tracing::warn!(mo = h.mo, host = h.host, insts, "{text}");
                self.state.warn(h.mo, h.host, text);
            }
            clones::CloneVerdict::Fewer { insts } => {
                self.state
                    .warn(h.mo, h.host, clones::warning_ru(h.mo, h.host, insts));
            }
            clones::CloneVerdict::Cleared => {
                tracing::info!(
                    mo = h.mo,
                    host = h.host,
                    "cloned machine id resolved: one agent install heard alone for 10 minutes"
                );
                self.state.unwarn(h.mo, h.host, clones::WARNING_KIND);
            }
        }
    }

    /// Rejects a well-formed message by policy. Its sequence number is settled (counted as
    /// delivered without being stored) so that the agent's spool is not blocked by a message
    /// that would be refused again on every resend.
    fn reject_settled(&mut self, msg: &Message, why: Refusal) -> Outcome {
        let h = msg.header();
        let key = delivery::key(h.mo, h.host, h.inst);
        if msg.is_sequenced()
            && self.tracker.has_room(&key)
            && self.tracker.check(&key, h.seq) == Verdict::New
        {
            self.tracker.refuse(&key, h.mo, h.host, h.seq);
        }
        Outcome::Settled(why)
    }

    /// Hands committed publishes' PUBACKs to the MQTT client without ever waiting for it.
    ///
    /// Awaiting the client here deadlocks under load: rumqttc's event loop takes one request
    /// per poll but reads up to ten publishes, so PUBACKs pile up in its request queue; once
    /// the queue is full an awaiting pipeline stops draining the ingest channel, the ingest task
    /// stops polling the event loop, and the queue is never read again (docs/benchmarks.md).
    /// What does not fit waits here for the next flush tick; the broker's window of
    /// unacknowledged deliveries (Mosquitto `max_inflight_messages`) bounds it.
    ///
    /// With an [`Outbox`], all at once: the ingest task writes them in bulk.
    fn send_acks(&mut self, client: &AsyncClient) {
        if let Some(outbox) = &self.outbox {
            if !self.unacked.is_empty() {
                outbox.pubacks(self.unacked.drain(..).map(|a| (a.generation, a.pkid)));
            }
            return;
        }
        while let Some(due) = self.unacked.front() {
            if due.generation != self.generation {
                // Received on an earlier connection: the broker redelivers it.
                self.unacked.pop_front();
                continue;
            }
            let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::new());
            publish.pkid = due.pkid;
            if client.try_ack(&publish).is_err() {
                break;
            }
            self.unacked.pop_front();
        }
    }

    fn push(&mut self, r: Record) {
        if self.batch.records.is_empty() {
            self.batch_started = Some(tokio::time::Instant::now());
        }
        self.batch.records.push(r);
    }

    fn batch_due(&self) -> bool {
        self.batch.records.len() >= self.cfg.max_batch
            || self.acks.len() >= self.cfg.max_batch
            || self
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.cfg.max_batch_delay)
            || (self.batch.records.is_empty() && !self.acks.is_empty())
    }

    fn cut(&mut self) -> Job {
        let records = match std::mem::take(&mut self.spare) {
            v if v.capacity() > 0 => v,
            _ => Vec::with_capacity(self.cfg.max_batch.min(1024)),
        };
        let fresh = Batch {
            records,
            ..Batch::default()
        };
        let mut batch = std::mem::replace(&mut self.batch, fresh);
        batch.delivery = self.tracker.take_dirty();
        self.batch_started = None;
        self.last_job = tokio::time::Instant::now();
        Job {
            batch,
            acks: std::mem::take(&mut self.acks),
            maintain_at: None,
        }
    }

    /// Keeps the larger of the emptied record vectors for the next batch.
    fn recycle(&mut self, records: Vec<Record>) {
        debug_assert!(records.is_empty());
        if records.capacity() > self.spare.capacity() {
            self.spare = records;
        }
    }

    /// Periodic work: lost detection.
    fn tick(&mut self, now_ms: i64, alerts: &mut Option<AlertSender>) {
        if !self.connected {
            return;
        }
        let mut ts = std::mem::take(&mut self.transitions);
        self.state.tick(now_ms, &mut ts);
        for t in ts.drain(..) {
            if let Some(a) = alerts {
                a.send(AlertInput::Transition(t.clone()));
            }
            self.push(Record::Transition(t));
        }
        self.transitions = ts;
    }

    pub fn state(&self) -> &LiveState {
        &self.state
    }
}

/// Most inbound messages handled per turn of the pipeline's loop.
const DRAIN: usize = 256;

/// Handles to the running pipeline.
pub struct PipelineHandles {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
}

/// Runs the pipeline until cancelled and the inbound channel is drained; flushes the last
/// batch before returning.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut p: Pipeline,
    store: Box<dyn Store>,
    client: AsyncClient,
    rx: impl Into<crate::ingest::Inlet>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    mut alerts: Option<AlertSender>,
    cancel: CancellationToken,
) {
    // Live messages first, then replayed ones (`ingest::Inlet`).
    let mut rx = rx.into();
    // A flume channel: sent to from async code, waited on with a deadline by the store thread.
    let (job_tx, job_rx) = flume::bounded::<Job>(2);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Committed>();
    let store_thread = match spawn_store(store, job_rx, done_tx, p.metrics.clone()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the store thread; ingest stopped");
            return;
        }
    };
    let start = now_ms();
    p.push(Record::CollectorStart { at_ms: start });
    let mut flush = tokio::time::interval(Duration::from_millis(10));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut snap = tokio::time::interval(p.cfg.snapshot_interval);
    let mut ack = tokio::time::interval(p.cfg.ack_interval);
    let mut in_flight = 0usize;
    let mut stopping = false;
    // When ingest stopped: nothing is heard after it, so the run ends here for availability
    // (a slow final flush must not stretch the run over time nobody could observe; issue 13).
    let mut stopped_at: Option<i64> = None;
    'run: loop {
        tokio::select! {
            biased;
            Some(c) = done_rx.recv() => {
                in_flight -= 1;
                p.tracker.committed(&c.marks);
                p.unacked.extend(c.acks);
                p.recycle(c.records);
                p.send_acks(&client);
            }
            _ = cancel.cancelled(), if !stopping => {
                stopping = true;
                stopped_at = Some(now_ms());
                rx.close();
            }
            msg = rx.recv(), if in_flight < 2 || p.batch.records.len() < p.cfg.max_batch => {
                // Up to DRAIN messages per turn of this loop, which polls every branch (four
                // timers among them) each turn.
                let mut next = msg;
                let mut drained = 0;
                // The queue's byte shares of the messages of this turn, given back at its end.
                let mut held = Held::default();
                loop {
                    match next {
                        Some(Inbound::Msg { publish, generation, recv_ms, decoded, held: h }) => {
                            held.merge(h);
                            let outcome = p.handle(decoded, publish.retain, recv_ms);
                            p.count(&outcome, &publish.topic);
                            if let (Some(a), Outcome::Accepted { accepted, transition }) = (&mut alerts, outcome) {
                                if let Some(t) = transition {
                                    a.send(AlertInput::Transition(t));
                                }
                                if accepted.msg.header().replay {
                                    a.send(AlertInput::Replay(accepted));
                                }
                            }
                            if p.cfg.acks_after_commit && publish.qos == QoS::AtLeastOnce {
                                // Only the packet id is needed to acknowledge: the topic and
                                // payload are freed now rather than held until the commit.
                                p.acks.push(PubAckDue { generation, pkid: publish.pkid });
                            }
                        }
                        Some(Inbound::Connected) => {
                            p.generation = p.generation.wrapping_add(1);
                            let now = now_ms();
                            if !p.connected && now - start > 1_000 {
                                p.push(Record::CollectorStart { at_ms: now });
                            }
                            p.connected = true;
                            p.state.regained_broker(now);
                        }
                        Some(Inbound::Disconnected) => {
                            p.connected = false;
                            p.push(Record::CollectorStop { at_ms: now_ms() });
                        }
                        None => break 'run,
                    }
                    if in_flight < 2 && p.batch.records.len() >= p.cfg.max_batch {
                        let job = p.cut();
                        in_flight += 1;
                        if job_tx.send_async(job).await.is_err() { break 'run; }
                    }
                    drained += 1;
                    if drained >= DRAIN || !(in_flight < 2 || p.batch.records.len() < p.cfg.max_batch) {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(m) => next = Some(m),
                        Err(_) => break,
                    }
                }
            }
            _ = flush.tick() => {
                p.metrics.pipeline_tick(now_ms());
                p.send_acks(&client);
                if let Some(a) = &mut alerts {
                    a.flush();
                }
                if in_flight < 2 && p.batch_due() {
                    let job = p.cut();
                    in_flight += 1;
                    if job_tx.send_async(job).await.is_err() { break; }
                }
            }
            _ = second.tick() => {
                let now = now_ms();
                p.tick(now, &mut alerts);
                if let Some(a) = &mut alerts {
                    a.send(AlertInput::Tick { now_ms: now, snapshot: snapshot_tx.borrow().clone() });
                }
                if in_flight == 0
                    && p.batch.records.is_empty()
                    && p.acks.is_empty()
                    && p.last_job.elapsed() >= p.cfg.idle_maintain
                {
                    p.last_job = tokio::time::Instant::now();
                    in_flight += 1;
                    let job = Job { batch: Batch::default(), acks: Vec::new(), maintain_at: Some(now) };
                    if job_tx.send_async(job).await.is_err() { break; }
                }
            }
            _ = snap.tick() => {
                let mut s = p.state.snapshot(now_ms());
                s.delivery = p.tracker.views();
                let _ = snapshot_tx.send(Arc::new(s));
            }
            _ = ack.tick() => {
                let mut out = Vec::new();
                let gap = i64::try_from(p.cfg.ack_host_gap.as_millis()).unwrap_or(i64::MAX);
                p.tracker.take_due(now_ms(), gap, |mo, host, inst, seq| out.push((mo.to_string(), host.to_string(), Ack { v: SCHEMA_VERSION, inst: inst.to_string(), acked_seq: seq, ts: 0 })));
                let now = now_ms();
                let mut n = 0;
                let reg = p.registry.as_ref().map(|r| r.borrow().clone());
                let mut bulk = Vec::new();
                for (mo, host, mut a) in out {
                    a.ts = now;
                    let t = topic(&mo, &host, Kind::Ack);
                    let json = serde_json::to_vec(&a).unwrap_or_default();
                    // Signed with the agent's own key: an agent applies no ack it cannot verify,
                    // so nobody but the collector can make it delete its spool.
                    let body = match &reg {
                        Some(reg) => match reg.key_for(&mo, &host) {
                            Ok(key) => dozor_proto::auth::sign(key, &t, &json),
                            // Revoked or unknown: nobody to confirm to.
                            Err(_) => continue,
                        },
                        None => json,
                    };
                    // QoS 0, never awaited: QoS 1 confirmations would occupy rumqttc's outgoing
                    // window, which also holds back the PUBACKs of received messages, and under
                    // load the two deadlocked (docs/benchmarks.md). A lost confirmation costs a
                    // resend: the agent re-sends, the duplicate asks for the confirmation again.
                    if p.outbox.is_some() {
                        let mut publish = Publish::new(t, QoS::AtMostOnce, body);
                        publish.retain = true;
                        bulk.push(publish);
                        n += 1;
                    } else if client.try_publish(t, QoS::AtMostOnce, true, body).is_ok() {
                        n += 1;
                    } else {
                        p.tracker.confirm_again(&delivery::key(&mo, &host, &a.inst));
                    }
                }
                if let Some(outbox) = &p.outbox {
                    // Queued even when the wake-up does not fit: written after the event
                    // loop's next event.
                    outbox.publish(&client, bulk);
                }
                p.metrics.acks_sent(n);
            }
        }
    }
    // Final flush: everything received is written and acknowledged before we go.
    p.push(Record::CollectorStop {
        at_ms: stopped_at.unwrap_or_else(now_ms),
    });
    let job = p.cut();
    in_flight += 1;
    let _ = job_tx.send_async(job).await;
    drop(job_tx);
    while in_flight > 0 {
        match done_rx.recv().await {
            Some(c) => {
                in_flight -= 1;
                p.tracker.committed(&c.marks);
                p.unacked.extend(c.acks);
            }
            None => break,
        }
    }
    // Best effort: what does not fit into the client's queue now is redelivered by the broker
    // after the restart and dropped there as a duplicate.
    p.send_acks(&client);
    let mut s = p.state.snapshot(now_ms());
    s.delivery = p.tracker.views();
    let _ = snapshot_tx.send(Arc::new(s));
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    if let Some(a) = alerts {
        a.close().await;
    }
}

#[cfg(test)]
mod tests;

pub(crate) mod clones;
