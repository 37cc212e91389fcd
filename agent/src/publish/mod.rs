//! The publisher: the one task that owns the spool. It numbers every message, keeps it in the
//! spool (memory first, the file when the spool's index says so), sends it live when connected, announces itself (`birth`, `state`) on every CONNACK, applies the
//! collector's acks, replays the backlog at a bounded rate and says `offline` on shutdown.

pub mod mqtt;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dozor_proto::auth::{self, MacKey};
use dozor_proto::{
    Birth, ConnState, Envelope, Heartbeat, Kind, PrevEnd, Probe, Role, SCHEMA_VERSION, SpoolStats,
    State, TargetInfo, decode_ack, topic,
};
use rumqttc::{AsyncClient, Event, LastWill, Outgoing, Packet, QoS};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::alive::Stamp;
use crate::collect::{Inventory, Sample};
use crate::spool::{AckError, Replay, Spool, SpoolError};
use crate::wall_ms;
pub use mqtt::Net;

/// How long shutdown waits for the broker to confirm the `offline` state.
pub const OFFLINE_ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Rejected (unsigned or forged) acks are logged at most this often.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(60);
/// Proof of a cloned data directory is logged (at error level) at most this often.
const CLONE_LOG_EVERY: Duration = Duration::from_secs(600);
/// True when a throttled log line is due: `last` was never, or at least `every` before `now`
/// (then `last` becomes `now`).
fn log_due(last: &mut Option<Instant>, now: Instant, every: Duration) -> bool {
    if last.is_some_and(|t| now.duration_since(t) < every) {
        return false;
    }
    *last = Some(now);
    true
}

/// How often the age bound of the spool is applied.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// What the producer tasks hand to the publisher.
#[derive(Debug)]
pub enum Input {
    /// A resource sample: becomes a heartbeat (and refreshes the inventory for `birth`).
    Sample { ts_ms: i64, sample: Box<Sample> },
    /// One probe round.
    Probe { ts_ms: i64, probe: Probe },
}

/// Who this agent is on the wire.
#[derive(Debug, Clone)]
pub struct Identity {
    pub mo: String,
    pub host: String,
    pub inst: String,
    /// The message key when enrolled: every payload is signed and only signed acks count.
    pub mac: Option<MacKey>,
}

impl Identity {
    pub fn topic(&self, kind: Kind) -> String {
        topic(&self.mo, &self.host, kind)
    }

    pub fn client_id(&self) -> String {
        dozor_proto::client_id(&self.mo, &self.host)
    }

    fn envelope<B>(&self, seq: u64, ts: i64, body: B) -> Envelope<B> {
        Envelope {
            v: SCHEMA_VERSION,
            mo: self.mo.clone(),
            host: self.host.clone(),
            inst: self.inst.clone(),
            seq,
            ts,
            replay: false,
            body,
        }
    }

    /// A `state` message; it carries the latest sequence number issued and takes none.
    pub fn state_json(&self, last_seq: u64, state: ConnState, reason: Option<&str>) -> Vec<u8> {
        self.envelope(
            last_seq,
            wall_ms(),
            State {
                state,
                reason: reason.map(str::to_owned),
            },
        )
        .to_json()
    }

    /// The payload as published on `topic`: signed when enrolled, as is otherwise. Signing
    /// happens here, at publish time, never in the spool (replays rewrite the JSON).
    pub fn seal(&self, topic: &str, json: Vec<u8>) -> Vec<u8> {
        match &self.mac {
            Some(key) => auth::sign(key, topic, &json),
            None => json,
        }
    }

    /// The last will: retained `state` `lost`, QoS 1 (signed when enrolled).
    pub fn last_will(&self, last_seq: u64) -> LastWill {
        let topic = self.topic(Kind::State);
        let payload = self.seal(&topic, self.state_json(last_seq, ConnState::Lost, None));
        LastWill::new(topic, payload, QoS::AtLeastOnce, true)
    }
}

/// Fixed facts announced in every `birth`.
#[derive(Debug, Clone)]
pub struct Announce {
    pub role: Role,
    pub site: String,
    pub interval_secs: u32,
    pub keepalive_secs: u32,
    pub targets: Vec<TargetInfo>,
}

/// Re-serializes a stored envelope with `replay: true`, keeping its header and body as stored
/// except `mo` and `host`, which become `id`'s: messages spooled before enrollment (under the
/// configured ids) are then published under the enrolled ones, matching their topic and MAC.
/// `None` if the bytes are not an envelope (they are then discarded).
pub fn as_replay(stored: &[u8], id: &Identity) -> Option<Vec<u8>> {
    as_replay_made(stored, id).map(|(bytes, _)| bytes)
}

/// [`as_replay`], and when the message was made (its `ts`, Unix ms by the agent's clock).
fn as_replay_made(stored: &[u8], id: &Identity) -> Option<(Vec<u8>, i64)> {
    let mut env: Envelope<Box<RawValue>> = serde_json::from_slice(stored).ok()?;
    env.replay = true;
    if env.mo != id.mo || env.host != id.host {
        env.mo.clone_from(&id.mo);
        env.host.clone_from(&id.host);
    }
    let ts = env.ts;
    serde_json::to_vec(&env).ok().map(|b| (b, ts))
}

/// A stored envelope with its `seq` replaced (the counter skipped ahead, see
/// [`Spool::skip_past`]); everything else as stored (a birth's `seq_base` keeps the old
/// number: nothing reads it). `None` if the bytes are not an envelope.
fn renumbered(stored: &[u8], seq: u64) -> Option<Vec<u8>> {
    let mut env: Envelope<Box<RawValue>> = serde_json::from_slice(stored).ok()?;
    env.seq = seq;
    serde_json::to_vec(&env).ok()
}

/// The kind a message re-sent from the spool is published as: made at least one heartbeat
/// interval before `now_ms`, it is backlog and goes on its kind's replay topic
/// (`…/hb-replay`), which the collector reads on a session and queue of their own, behind live
/// messages (docs/protocol.md, "Live and replayed messages"); younger, it is still the host's
/// current state (a resend after a brief reconnect) and goes on the live topic.
pub fn resend_kind(kind: Kind, made_ms: i64, now_ms: i64, interval_secs: u32) -> Kind {
    let old = now_ms.saturating_sub(made_ms) >= i64::from(interval_secs) * 1000;
    match kind.replay() {
        Some(replay) if old => replay,
        _ => kind,
    }
}

/// The publisher task's state.
pub struct Publisher {
    id: Identity,
    announce: Announce,
    client: AsyncClient,
    spool: Arc<Mutex<Spool>>,
    last_seq: Arc<AtomicU64>,
    inventory: Inventory,
    connected: bool,
    /// A failure to (re)connect has been logged at warn since the last connection.
    down_reported: bool,
    /// Publishes handed to rumqttc and not yet written to the socket.
    queued: usize,
    /// Packet ids written and not yet acknowledged by the broker.
    unacked: HashSet<u16>,
    replay_at: Instant,
    /// Acks refused because their signature is missing or wrong, or their number is absurd
    /// (beyond [`crate::spool::MAX_SKIP_TO`]), since start.
    rejected_acks: u64,
    /// When a refused ack was last logged.
    reject_logged: Option<Instant>,
    /// Times the counter skipped ahead of a verified ack beyond it (the counter had gone
    /// back: a restored backup), since start.
    counter_skips: u64,
    /// When a skip was last logged (clones skip each other on nearly every message).
    skip_logged: Option<Instant>,
    /// The lowest number of the last skip: a later ack beyond the counter that confirms it or
    /// more proves another live agent numbers in this `inst` (a cloned data directory).
    skipped_to: Option<u64>,
    /// Skips that proved a clone, since start; when the last one was logged.
    clone_skips: u64,
    clone_logged: Option<Instant>,
    /// The connection was closed by the agent after a skip: the driver's report of it is
    /// expected, and is not the start of an outage.
    closing_for_skip: bool,
    /// Where `cfg` messages go (the `central` task); `None`: not subscribed.
    cfg: Option<mpsc::Sender<Vec<u8>>>,
    /// The "last alive" stamp ([`crate::alive`]): rewritten at the run's first heartbeat and
    /// then every 5 minutes, synced at shutdown.
    stamp: Option<Stamp>,
    /// How the previous run ended, announced in every `birth` of this run.
    prev_end: Option<PrevEnd>,
    /// The `seq` of the last will made for the latest connection attempt (set by the closure
    /// [`mqtt::drive`] asks for the will), announced in the birth as `will_seq`; `None`: not
    /// announced ([`Publisher::with_will_seq`]).
    will_seq: Option<Arc<AtomicU64>>,
}

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    // A panic while holding the lock cannot leave the spool half-updated in a way that matters
    // more than stopping would: the file is transactional and the index is rebuilt at start.
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

impl Publisher {
    pub fn new(
        id: Identity,
        announce: Announce,
        client: AsyncClient,
        spool: Arc<Mutex<Spool>>,
        last_seq: Arc<AtomicU64>,
        inventory: Inventory,
    ) -> Publisher {
        Publisher {
            id,
            announce,
            client,
            spool,
            last_seq,
            inventory,
            connected: false,
            down_reported: false,
            queued: 0,
            unacked: HashSet::new(),
            replay_at: Instant::now(),
            rejected_acks: 0,
            reject_logged: None,
            counter_skips: 0,
            skip_logged: None,
            skipped_to: None,
            clone_skips: 0,
            clone_logged: None,
            closing_for_skip: false,
            cfg: None,
            stamp: None,
            prev_end: None,
            will_seq: None,
        }
    }

    /// Announces in every birth the `seq` of the last will made for the connection: `made` is
    /// set by the will closure of [`mqtt::drive`] before each connection attempt. Read at the
    /// CONNACK, it is that connection's will, or a later attempt's (then the birth goes out
    /// on that later connection, whose will it is): never above the will of the connection
    /// the birth is sent on, so the collector never takes that connection's will for a late
    /// one (docs/reliability.md, "Late last wills").
    pub fn with_will_seq(mut self, made: Arc<AtomicU64>) -> Publisher {
        self.will_seq = Some(made);
        self
    }

    /// Keeps the "last alive" stamp and announces how the previous run ended.
    pub fn with_alive(mut self, stamp: Stamp, prev_end: Option<PrevEnd>) -> Publisher {
        self.stamp = Some(stamp);
        self.prev_end = prev_end;
        self
    }

    /// Subscribes to this host's `cfg` topic and hands what arrives to `tx` (the `central`
    /// task, which authenticates and applies it).
    pub fn with_cfg(mut self, tx: mpsc::Sender<Vec<u8>>) -> Publisher {
        self.cfg = Some(tx);
        self
    }

    /// Runs until `shutdown` is cancelled, then publishes `offline`, waits (bounded) for the
    /// broker's PUBACK and disconnects.
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut net: mpsc::Receiver<Net>,
        shutdown: CancellationToken,
    ) {
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flush_at = self.spool().next_flush();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                n = net.recv() => match n {
                    Some(n) => self.on_net(n).await,
                    None => break,
                },
                Some(input) = inputs.recv() => self.on_input(input).await,
                _ = sleep_until(self.replay_at), if self.connected => self.replay_step().await,
                _ = sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    self.flush_spool().await;
                }
                _ = expire.tick() => self.spool().expire(wall_ms(), Instant::now()),
            }
        }
        // The instant of the stop, before waiting for the broker.
        let stopped_at = wall_ms();
        self.shutdown(&mut net).await;
        // A graceful end, whether or not `offline` reached the broker: the next run's births
        // carry it (spooled and replayed like any message).
        if let Some(stamp) = self.stamp.clone() {
            let at = stopped_at;
            let _ = tokio::task::spawn_blocking(move || stamp.shutdown(at)).await;
        }
        // Everything still unconfirmed goes to the file, with the exact counter.
        if let Some(Err(e)) = self.with_spool(|s| s.close(Instant::now())).await {
            tracing::error!(error = %e, "final spool write failed");
        }
    }

    /// Writes the spool file if its index says so (a message unconfirmed for `flush_after`,
    /// the link down, deletes waiting).
    async fn flush_spool(&self) {
        if let Some(Err(e)) = self.with_spool(|s| s.flush_if_due(Instant::now())).await {
            tracing::error!(error = %e, "spool write failed: unconfirmed messages held in memory");
        }
    }

    /// Runs a spool operation on the blocking pool (SQLite commits fsync), so the event loop
    /// task keeps answering the broker meanwhile. `None` if the operation panicked.
    async fn with_spool<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> Option<R> {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || f(&mut lock(&spool))).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "spool operation failed");
                None
            }
        }
    }

    fn spool(&self) -> MutexGuard<'_, Spool> {
        lock(&self.spool)
    }

    async fn on_input(&mut self, input: Input) {
        match input {
            Input::Sample { ts_ms, sample } => {
                let Sample {
                    inventory,
                    uptime_secs,
                    cpu_pct,
                    mem_used_bytes,
                    mem_total_bytes,
                    load,
                    disks,
                } = *sample;
                self.inventory = inventory;
                if let Some(stamp) = &mut self.stamp {
                    stamp.beat(ts_ms);
                }
                let interval_secs = self.announce.interval_secs;
                let hb = move |_, stats| Heartbeat {
                    uptime_secs,
                    cpu_pct,
                    mem_used_bytes,
                    mem_total_bytes,
                    load,
                    disks,
                    interval_secs,
                    spool: Some(stats),
                };
                self.send_sequenced(Kind::Hb, ts_ms, false, hb).await;
            }
            Input::Probe { ts_ms, probe } => {
                self.send_sequenced(Kind::Probe, ts_ms, false, move |_, _| probe)
                    .await;
            }
        }
    }

    /// Numbers, commits and (when connected) publishes one message. Returns its number.
    async fn send_sequenced<B: Serialize + Send + 'static>(
        &mut self,
        kind: Kind,
        ts_ms: i64,
        retain: bool,
        body: impl FnOnce(u64, SpoolStats) -> B + Send + 'static,
    ) -> Option<u64> {
        let id = self.id.clone();
        let now_ms = wall_ms();
        let append = move |s: &mut Spool| {
            s.append(kind, ts_ms, now_ms, Instant::now(), |seq, stats| {
                id.envelope(seq, ts_ms, body(seq, stats)).to_json()
            })
        };
        // An append that writes nothing (the usual case with the link up) stays on this task:
        // a hop to the blocking pool cost more CPU than the append itself.
        let writes = self.spool().index().append_writes();
        let spooled = if writes {
            self.with_spool(append).await?
        } else {
            append(&mut self.spool())
        };
        self.last_seq.store(spooled.seq, Ordering::Relaxed);
        if let Some(e) = &spooled.error {
            tracing::error!(seq = spooled.seq, error = %e, "spool write failed: holding messages in memory");
        }
        if self.connected {
            let seq = spooled.seq;
            let sent = self.publish(self.id.topic(kind), retain, spooled.bytes);
            let now = Instant::now();
            let mut spool = self.spool();
            if sent {
                spool.index_mut().mark_sent(seq, now);
            } else {
                spool.index_mut().send_failed(seq);
            }
        }
        self.replay_at = Instant::now();
        Some(spooled.seq)
    }

    /// Hands a QoS 1 publish to rumqttc, signed when enrolled; false if its queue is full.
    fn publish(&mut self, topic: String, retain: bool, payload: Vec<u8>) -> bool {
        let payload = self.id.seal(&topic, payload);
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.queued += 1;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "MQTT queue full; will retry from the spool");
                false
            }
        }
    }

    async fn on_net(&mut self, n: Net) {
        match n {
            Net::Event(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                self.on_connected().await;
            }
            Net::Event(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == self.id.topic(Kind::Ack) {
                    self.on_ack(&p.payload).await;
                } else if let (Some(tx), true) = (&self.cfg, p.topic == self.id.topic(Kind::Cfg)) {
                    // Never waits: a flood is dropped here; the retained one comes again.
                    if tx.try_send(p.payload.to_vec()).is_err() {
                        tracing::debug!("central configuration queue full; message dropped");
                    }
                } else {
                    tracing::debug!(topic = %p.topic, "ignoring message on unexpected topic");
                }
            }
            Net::Event(Event::Incoming(Packet::PubAck(a))) => {
                self.unacked.remove(&a.pkid);
            }
            Net::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                self.queued = self.queued.saturating_sub(1);
                self.unacked.insert(pkid);
            }
            Net::Event(_) => {}
            Net::Down { error, retry_in } => {
                if std::mem::take(&mut self.closing_for_skip) {
                    // The agent closed it itself (`skip_counter`): not an outage, so a failing
                    // reconnect after it is still warned about, once.
                    tracing::debug!(%error, ?retry_in, "closed after the counter skip; reconnecting");
                } else if self.connected {
                    tracing::info!(%error, ?retry_in, "disconnected from the broker; reconnecting");
                    self.down_reported = true;
                } else if self.down_reported {
                    tracing::debug!(%error, ?retry_in, "broker still unreachable");
                } else {
                    // Say it once per outage; the spool keeps everything until the broker is back.
                    tracing::warn!(%error, ?retry_in, "cannot connect to the broker; retrying");
                    self.down_reported = true;
                }
                self.connected = false;
                self.queued = 0;
                self.unacked.clear();
                self.spool().index_mut().disconnected();
                // The link is down: what was held in memory goes to the file now.
                self.flush_spool().await;
            }
        }
    }

    /// On every CONNACK: subscribe to acks, publish `birth` (retained, sequenced) and
    /// `state` online (retained), and schedule the backlog.
    async fn on_connected(&mut self) {
        self.connected = true;
        self.down_reported = false;
        self.closing_for_skip = false;
        self.queued = 0;
        self.unacked.clear();
        self.spool().index_mut().connected(Instant::now());
        if let Err(e) = self
            .client
            .try_subscribe(self.id.topic(Kind::Ack), QoS::AtLeastOnce)
        {
            tracing::warn!(error = %e, "could not queue the ack subscription");
        }
        if self.cfg.is_some()
            && let Err(e) = self
                .client
                .try_subscribe(self.id.topic(Kind::Cfg), QoS::AtLeastOnce)
        {
            tracing::warn!(error = %e, "could not queue the cfg subscription");
        }
        let inv = self.inventory.clone();
        let a = self.announce.clone();
        let prev_end = self.prev_end;
        let will_seq = self.will_seq.as_ref().map(|w| w.load(Ordering::Relaxed));
        let birth = move |seq_base, _| Birth {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            role: a.role,
            site: a.site,
            hostname: inv.hostname,
            os_name: inv.os_name,
            os_version: inv.os_version,
            cpu_model: inv.cpu_model,
            cpu_count: inv.cpu_count,
            mem_total_bytes: inv.mem_total_bytes,
            disks: inv.disks,
            boot_time: inv.boot_time,
            boot_id: inv.boot_id,
            seq_base,
            interval_secs: a.interval_secs,
            keepalive_secs: a.keepalive_secs,
            targets: a.targets,
            prev_end,
            will_seq,
        };
        self.send_sequenced(Kind::Birth, wall_ms(), true, birth)
            .await;
        let last = self.spool().index().last_seq();
        let online = self.id.state_json(last, ConnState::Online, None);
        self.publish(self.id.topic(Kind::State), true, online);
    }

    async fn on_ack(&mut self, payload: &[u8]) {
        // Enrolled: only an ack signed with this host's key may delete spooled messages; a
        // retained forgery from another PC on the broker must not.
        let verified;
        let payload = match &self.id.mac {
            Some(key) => match auth::verify(key, &self.id.topic(Kind::Ack), payload) {
                Ok(unsigned) => {
                    verified = unsigned;
                    &verified[..]
                }
                Err(e) => {
                    self.reject_ack(&e, "ignoring an ack that is not signed for this host");
                    return;
                }
            },
            None => payload,
        };
        let ack = match decode_ack(payload) {
            Ok(ack) => ack,
            Err(reason) => {
                tracing::warn!(reason = reason.as_str(), "ignoring a malformed ack");
                return;
            }
        };
        if ack.inst != self.id.inst {
            tracing::debug!(inst = %ack.inst, "ignoring an ack for another instance");
            return;
        }
        let acked = ack.acked_seq;
        // An ack writes nothing (deletes wait for the next write): no blocking-pool hop.
        let applied = self.spool().ack(acked, Instant::now());
        match applied {
            Ok(n) => {
                tracing::debug!(acked, confirmed = n, "collector confirmed messages");
                self.replay_at = Instant::now();
            }
            Err(SpoolError::Ack(AckError::Future { acked, last })) => {
                self.skip_counter(acked, last).await;
            }
            Err(SpoolError::Ack(e)) => tracing::warn!(error = %e, "ignoring an ack"),
            Err(e) => tracing::error!(error = %e, "could not apply a confirmation"),
        }
    }

    /// The collector confirmed `acked`, more than this agent issued (`last`): its counter went
    /// back for this `inst` (the data directory restored from a backup, a VM snapshot
    /// reverted), so every message it numbers up to `acked` is dropped at the collector as a
    /// duplicate. Reached only with an ack of this `inst` that passed the signature check
    /// when enrolled (a forged one never moves the counter); in open mode acks are unsigned
    /// and it applies too (docs/reliability.md, "A counter that goes back").
    ///
    /// The spool skips its counter past `acked` (durably) and re-numbers the messages issued
    /// since the collector last confirmed anything above it; then the connection is closed
    /// with a DISCONNECT (the broker discards its will, whose number is below the collector's
    /// will floor) and the driver reconnects with a will made after the skip; the birth of
    /// that connection announces it. A skip is logged at most once a minute; an ack beyond
    /// the numbers of the last skip proves a clone and is logged at error level.
    async fn skip_counter(&mut self, acked: u64, last: u64) {
        let skip = self
            .with_spool(move |s| s.skip_past(acked, Instant::now(), renumbered))
            .await;
        let skip = match skip {
            Some(Ok(Some(skip))) => skip,
            // Not ahead any more (cannot happen: one task owns the spool).
            Some(Ok(None)) | None => return,
            Some(Err(e)) => {
                self.reject_ack(&e, "ignoring an ack beyond any number an agent issues");
                return;
            }
        };
        self.counter_skips += 1;
        self.last_seq
            .store(skip.next_seq.saturating_sub(1), Ordering::Relaxed);
        let now = Instant::now();
        if self.skipped_to.is_some_and(|s| acked >= s) {
            // Numbers this agent skipped to were confirmed without it issuing them: another
            // live agent numbers in this inst (a disk image taken after the first start).
            // Each keeps pushing the other's counter ahead; only deleting one's state ends it.
            self.clone_skips += 1;
            if log_due(&mut self.clone_logged, now, CLONE_LOG_EVERY) {
                tracing::error!(
                    acked,
                    clone_skips_total = self.clone_skips,
                    skips_total = self.counter_skips,
                    "another running agent uses this agent's spool instance: its data directory \
                     was cloned (a disk image taken after the agent's first start); stop the \
                     agent on one of the PCs, delete its data directory (spool.db, \
                     identity.json) and start it again (docs/security.md, \"Cloned disk images\")"
                );
            }
        }
        self.skipped_to = Some(acked.saturating_add(1 + crate::spool::SKIP_MARGIN));
        if log_due(&mut self.skip_logged, now, REJECT_LOG_EVERY) {
            tracing::warn!(
                acked,
                last,
                next_seq = skip.next_seq,
                renumbered = skip.renumbered,
                dropped = skip.dropped,
                skips_total = self.counter_skips,
                "the collector confirmed sequence numbers this agent has not issued: its state \
                 was restored from a backup or a snapshot (or cloned); the counter skips ahead, \
                 unconfirmed messages are re-sent under new numbers and the agent reconnects"
            );
        }
        if let Some(e) = &skip.error {
            tracing::error!(error = %e, "spool write failed: the skip is held in memory");
        }
        self.replay_at = Instant::now();
        if !self.connected {
            // The next connection's will is made after the skip already.
            return;
        }
        match self.client.try_disconnect() {
            Ok(()) => {
                // Nothing more goes out on the closing connection: what is made meanwhile is
                // spooled and sent on the next one, after its birth. The driver's report of
                // the closed connection then reads as a known outage (debug).
                self.connected = false;
                self.closing_for_skip = true;
                self.spool().index_mut().disconnected();
                self.flush_spool().await;
            }
            // The next reconnect makes the new will; until then a will of this connection
            // would be taken as late.
            Err(e) => tracing::warn!(error = %e, "could not queue the disconnect after the skip"),
        }
    }

    /// Counts a refused ack (forged, unsigned, absurd) and logs it at most once a minute.
    fn reject_ack(&mut self, error: &dyn std::fmt::Display, what: &'static str) {
        self.rejected_acks += 1;
        let now = Instant::now();
        if log_due(&mut self.reject_logged, now, REJECT_LOG_EVERY) {
            tracing::warn!(%error, rejected_total = self.rejected_acks, "{what}");
        }
    }

    /// Sends at most one backlog message, as the index's pacing allows.
    async fn replay_step(&mut self) {
        let now = Instant::now();
        let poll = self.spool().index_mut().poll_replay(now);
        let seq = match poll {
            Replay::Send(seq) => seq,
            Replay::WaitUntil(t) => {
                self.replay_at = t;
                return;
            }
            Replay::Idle => {
                self.replay_at = now + Duration::from_secs(3600);
                return;
            }
        };
        self.replay_at = now;
        let Some(kind) = self.spool().index().get(seq).map(|e| e.kind) else {
            return;
        };
        match self.with_spool(move |s| s.body(seq)).await {
            Some(Ok(Some(stored))) => match as_replay_made(&stored, &self.id) {
                Some((bytes, made)) => {
                    let kind = resend_kind(kind, made, wall_ms(), self.announce.interval_secs);
                    let sent = self.publish(self.id.topic(kind), false, bytes);
                    let mut spool = self.spool();
                    if sent {
                        spool.index_mut().mark_sent(seq, Instant::now());
                    } else {
                        spool.index_mut().send_failed(seq);
                    }
                }
                None => {
                    tracing::error!(seq, "spooled message is not an envelope; discarding it");
                    if let Some(Err(e)) = self.with_spool(move |s| s.discard(seq)).await {
                        tracing::error!(error = %e, "could not discard a message");
                    }
                }
            },
            Some(Ok(None)) => tracing::warn!(seq, "spooled message vanished; counted as dropped"),
            Some(Err(e)) => {
                tracing::error!(seq, error = %e, "could not read a spooled message");
                // Retry on the resend schedule rather than at the replay rate.
                self.spool().index_mut().mark_sent(seq, Instant::now());
            }
            None => {}
        }
    }

    /// Publishes `offline` (retained), waits for its PUBACK up to [`OFFLINE_ACK_TIMEOUT`] and
    /// disconnects. Without a connection there is nothing to say: the will covers it.
    async fn shutdown(&mut self, net: &mut mpsc::Receiver<Net>) {
        if !self.connected {
            tracing::info!("shutting down (not connected)");
            return;
        }
        let last = self.spool().index().last_seq();
        let offline = self
            .id
            .state_json(last, ConnState::Offline, Some("shutdown"));
        if self.publish(self.id.topic(Kind::State), true, offline) {
            let deadline = Instant::now() + OFFLINE_ACK_TIMEOUT;
            while self.connected && (self.queued > 0 || !self.unacked.is_empty()) {
                tokio::select! {
                    _ = sleep_until(deadline) => {
                        tracing::warn!("the broker did not confirm the offline state in time");
                        break;
                    }
                    n = net.recv() => match n {
                        Some(n @ (Net::Event(Event::Incoming(Packet::PubAck(_)))
                            | Net::Event(Event::Outgoing(Outgoing::Publish(_)))
                            | Net::Down { .. })) => self.on_net(n).await,
                        Some(Net::Event(Event::Incoming(Packet::Publish(p)))) => {
                            if p.topic == self.id.topic(Kind::Ack) {
                                self.on_ack(&p.payload).await;
                            }
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
        }
        if self.connected {
            let _ = self.client.try_disconnect();
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                tokio::select! {
                    _ = sleep_until(deadline) => break,
                    n = net.recv() => match n {
                        Some(Net::Event(Event::Outgoing(Outgoing::Disconnect))) | Some(Net::Down { .. }) | None => break,
                        Some(_) => {}
                    }
                }
            }
        }
        tracing::info!("disconnected from the broker: shutdown");
    }
}

#[cfg(test)]
mod tests;
