//! MQTT ingest: one task per session drives rumqttc's event loop, decodes each publish against
//! the wire contract and hands it to the pipeline. Errors mean back off and reconnect, never
//! exit.
//!
//! Two sessions (docs/reliability.md, "Live and replayed traffic"): the live one reads the live
//! upstream topics; the replay one, with its own client id and queue, reads the replay topics
//! (backlog re-sent from agents' spools). The pipeline takes from the replay queue only when the
//! live one is empty ([`Inlet`]), so a backlog the store drains slowly waits in its own queue
//! and broker session, never in front of live heartbeats.

pub mod broker;

use crate::clock::now_ms;
use crate::config::MqttConfig;
use crate::identity::{Denied, Registry};
use crate::metrics::{IngestQueueProbe, Metrics, Refusal};
use dozor_proto::auth;
use dozor_proto::{Kind, Limits, MAX_PAYLOAD_BYTES, Message, Reject, Topic, upstream_filter};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, PubAck, Publish, QoS,
    StateError,
};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What the ingest task hands to the pipeline.
// `Msg` is nearly every value sent; boxing it would add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    /// A publish and its decoding. The publish is kept to acknowledge it once its effect is
    /// durable (manual acks).
    Msg {
        publish: Publish,
        /// The connection it came on ([`Session::generation`]): its PUBACK is written only on
        /// that connection.
        generation: u32,
        recv_ms: i64,
        decoded: Result<Message, Refusal>,
        /// Its share of the queue's byte bound, given back when the message is dropped.
        held: Held,
    },
    /// Connected to the broker (after start or a reconnect).
    Connected,
    /// Lost the broker: nothing is observed until `Connected`.
    Disconnected,
}

/// A message's share of the ingest queue's byte bound ([`queue`]), given back when the message
/// is dropped; `Held::default()` holds nothing (messages made outside the queue).
#[derive(Debug, Default)]
pub struct Held {
    /// Kept for its drop, which gives the bytes back.
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// Takes over `other`'s share, to give both back at once: the pipeline gathers the shares
    /// of the messages it handles in one turn and gives them back together (giving bytes back
    /// takes the semaphore's lock, once per turn instead of once per message). Shares of
    /// different queues are not merged: `other` is then dropped, giving its bytes back now.
    pub fn merge(&mut self, other: Held) {
        let Some(theirs) = other.permit else {
            return;
        };
        match &mut self.permit {
            None => self.permit = Some(theirs),
            Some(mine) if Arc::ptr_eq(mine.semaphore(), theirs.semaphore()) => mine.merge(theirs),
            Some(_) => drop(theirs),
        }
    }
}

/// The ingest task's end of the queue between it and the pipeline.
///
/// The task keeps reading the broker while publishes wait here for the pipeline, so the
/// broker's PINGRESP, written behind its deliveries, is read in time and the connection is not
/// taken for dead while the store works (docs/reliability.md). Bounded twice: in messages
/// (`mqtt.ingest_queue`), which with an external broker at QoS 1 should not bind when set at
/// or above the broker's window of unacknowledged deliveries (each waiting publish is
/// unacknowledged, PUBACKs go out only after commit; but Mosquitto 2.0.11 exceeds its window in
/// sustained flow, and after a reconnect the old connection's publishes wait beside the
/// redelivered window); and in bytes (`mqtt.ingest_queue_mib`,
/// [`queue_cost`] per message), against a window of large messages. When either is full the
/// task waits, and TCP backpressure reaches the broker, as before; from the embedded broker
/// (QoS 0, no window) that is how a burst is paced.
#[derive(Debug)]
pub struct QueueTx {
    tx: mpsc::Sender<Inbound>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    max_cost: u32,
    /// A full queue is worth a warning: the broker's window is larger than the queue.
    warn_full: bool,
}

/// The queue between the ingest task and the pipeline, bounded by `cfg.ingest_queue` messages
/// and `cfg.ingest_queue_bytes` ([`QueueTx`]).
pub fn queue(cfg: &MqttConfig) -> (QueueTx, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(cfg.ingest_queue.max(1));
    let bytes = cfg.ingest_queue_bytes.max(1);
    let q = QueueTx {
        tx,
        bytes: Arc::new(Semaphore::new(bytes)),
        max_bytes: bytes,
        max_cost: u32::try_from(bytes).unwrap_or(u32::MAX),
        warn_full: acks_after_commit(cfg),
    };
    (q, rx)
}

/// What a waiting publish is counted as in the queue's byte bound: its payload twice (the
/// payload and what it decodes to), its topic, and 256 bytes of the structures around them.
pub fn queue_cost(p: &Publish) -> usize {
    2 * p.payload.len() + p.topic.len() + 256
}

impl QueueTx {
    /// What waits in the queue now: (messages, bytes).
    fn in_use(&self) -> (usize, usize) {
        (
            self.tx.max_capacity() - self.tx.capacity(),
            self.max_bytes - self.bytes.available_permits(),
        )
    }

    /// Reads [`QueueTx::in_use`] for `/metrics` without keeping the queue open.
    pub fn probe(&self) -> IngestQueueProbe {
        let tx = self.tx.downgrade();
        let bytes = self.bytes.clone();
        let max_bytes = self.max_bytes;
        IngestQueueProbe(Box::new(move || {
            let messages = tx.upgrade().map_or(0, |t| t.max_capacity() - t.capacity());
            (messages, max_bytes - bytes.available_permits())
        }))
    }

    /// Hands a connection event to the pipeline.
    async fn send(&self, m: Inbound) -> Result<(), ()> {
        self.tx.send(m).await.map_err(drop)
    }

    /// Hands a publish to the pipeline once both bounds have room. `Ok(Some(in_use))`: it had
    /// to wait, and [`QueueTx::in_use`] as it was when it began to wait (read after the wait, the
    /// queue may already be empty).
    async fn send_msg(
        &self,
        publish: Publish,
        generation: u32,
        recv_ms: i64,
        decoded: Result<Message, Refusal>,
    ) -> Result<Option<(usize, usize)>, ()> {
        let cost = u32::try_from(queue_cost(&publish))
            .unwrap_or(u32::MAX)
            .min(self.max_cost);
        let mut waited = None;
        let permit = match self.bytes.clone().try_acquire_many_owned(cost) {
            Ok(p) => p,
            Err(_) => {
                waited = Some(self.in_use());
                self.bytes
                    .clone()
                    .acquire_many_owned(cost)
                    .await
                    .map_err(drop)?
            }
        };
        if waited.is_none() && self.tx.capacity() == 0 {
            waited = Some(self.in_use());
        }
        let msg = Inbound::Msg {
            publish,
            generation,
            recv_ms,
            decoded,
            held: Held {
                permit: Some(permit),
            },
        };
        self.tx.send(msg).await.map_err(drop)?;
        Ok(waited)
    }
}

/// Upstream kinds the collector subscribes to, on one session or the other.
pub const SUBSCRIBED: [Kind; 7] = dozor_proto::UPSTREAM;

/// Which of the collector's MQTT sessions an ingest task drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The live upstream topics; with `mqtt.replay_session = false` the replay topics too.
    Live,
    /// The replay topics, on a client id of its own (`{client_id}-replay`).
    Replay,
}

/// Set in the connection count of the replay session, so that a PUBACK queued for it is
/// written on it and not on the live one ([`Outbox::pubacks`]).
const REPLAY_GENERATION: u32 = 1 << 31;

impl Session {
    /// The topic filters this session subscribes to.
    pub fn filters(self, cfg: &MqttConfig) -> Vec<String> {
        let kinds: &[Kind] = match (self, cfg.replay_session) {
            (Session::Live, true) => &dozor_proto::LIVE,
            (Session::Live, false) => &SUBSCRIBED,
            (Session::Replay, _) => &dozor_proto::REPLAY,
        };
        kinds.iter().map(|k| upstream_filter(*k)).collect()
    }

    /// The session's MQTT client id.
    pub fn client_id(self, cfg: &MqttConfig) -> String {
        match self {
            Session::Live => cfg.client_id.clone(),
            Session::Replay => format!("{}-replay", cfg.client_id),
        }
    }

    /// The `n`th connection of this session as the pipeline counts it.
    fn generation(self, n: u32) -> u32 {
        match self {
            Session::Live => n & !REPLAY_GENERATION,
            Session::Replay => n | REPLAY_GENERATION,
        }
    }
}

/// The pipeline's end of the two ingest queues: a live message is always taken before a
/// replayed one.
#[derive(Debug)]
pub struct Inlet {
    live: mpsc::Receiver<Inbound>,
    replay: Option<mpsc::Receiver<Inbound>>,
    live_done: bool,
}

impl From<mpsc::Receiver<Inbound>> for Inlet {
    fn from(live: mpsc::Receiver<Inbound>) -> Inlet {
        Inlet::new(live, None)
    }
}

impl Inlet {
    pub fn new(live: mpsc::Receiver<Inbound>, replay: Option<mpsc::Receiver<Inbound>>) -> Inlet {
        Inlet {
            live,
            replay,
            live_done: false,
        }
    }

    /// The next message, live first; `None` once both queues are closed and drained.
    pub async fn recv(&mut self) -> Option<Inbound> {
        loop {
            if let Ok(m) = self.try_recv() {
                return Some(m);
            }
            let next = match (&mut self.replay, self.live_done) {
                (None, true) => return None,
                (None, false) => Some(self.live.recv().await),
                (Some(replay), true) => match replay.recv().await {
                    Some(m) => return Some(m),
                    None => {
                        self.replay = None;
                        continue;
                    }
                },
                (Some(replay), false) => tokio::select! {
                    biased;
                    m = self.live.recv() => Some(m),
                    m = replay.recv() => match m {
                        Some(m) => return Some(m),
                        None => None,
                    },
                },
            };
            match next {
                Some(Some(m)) => return Some(m),
                Some(None) => self.live_done = true,
                // The replay queue closed and is drained.
                None => self.replay = None,
            }
        }
    }

    /// A message waiting now, live first.
    pub fn try_recv(&mut self) -> Result<Inbound, mpsc::error::TryRecvError> {
        match self.live.try_recv() {
            Ok(m) => Ok(m),
            Err(e) => match &mut self.replay {
                Some(r) => r.try_recv().or(Err(e)),
                None => Err(e),
            },
        }
    }

    /// Closes both queues; what waits in them can still be received.
    pub fn close(&mut self) {
        self.live.close();
        if let Some(r) = &mut self.replay {
            r.close();
        }
    }
}

pub use crate::config::MAX_PACKET;

/// Whether publishes are acknowledged to the broker only once their effect is durable.
///
/// True for an external broker: it holds what the collector has not acknowledged, so a
/// collector `kill -9` loses nothing the broker had. False for the embedded broker: its log is
/// in this process's memory and dies with it whatever was acknowledged, so holding the PUBACK
/// until the commit protects nothing and only throttles delivery (rumqttd allows 100
/// unacknowledged deliveries per connection). End to end, agents keep every message in their
/// spool until the collector confirms it stored on the `ack` topic, in both modes.
pub fn acks_after_commit(cfg: &MqttConfig) -> bool {
    matches!(cfg.mode, crate::config::MqttMode::External { .. })
}

/// QoS of the collector's subscriptions: 1 from an external broker (it keeps what the
/// collector has not acknowledged, see [`acks_after_commit`]), 0 from the embedded broker
/// (unless `mqtt.batched_writes = false`). rumqttd lets a QoS 1 subscriber have at most 100 unacknowledged
/// deliveries (hard-coded), so at QoS 1 the drain rate was one window per loopback round trip
/// and fell behind bursts the log then dropped (docs/benchmarks.md); at QoS 0 it streams,
/// bounded by its 200-packet outgoing buffer and the socket. Nothing is weaker for it: the
/// broker is in this process, an acknowledgement to it protected nothing, and the agents keep
/// every message until the collector confirms it stored.
pub fn subscription_qos(cfg: &MqttConfig) -> QoS {
    if acks_after_commit(cfg) || !cfg.batched_writes {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    }
}

/// Builds the client options: persistent session, wide inflight window, manual acks for an
/// external broker (see [`acks_after_commit`]).
pub fn options(cfg: &MqttConfig, session: Session, host: &str, port: u16) -> MqttOptions {
    let mut o = cfg.connection_options(session.client_id(cfg), host, port);
    o.set_clean_session(false)
        .set_manual_acks(acks_after_commit(cfg))
        .set_inflight(1000)
        .set_request_channel_capacity(200_000);
    o
}

/// Creates the client and its event loop.
pub fn client(
    cfg: &MqttConfig,
    session: Session,
    host: &str,
    port: u16,
) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options(cfg, session, host, port), 200_000)
}

/// What the pipeline sends to the broker in bulk: PUBACKs of committed publishes and the
/// QoS 0 confirmations to agents (`…/ack`).
///
/// rumqttc sends each request on its own: a turn of its event loop and a write to the socket
/// per packet, and the broker then reads each small packet on its own. The pipeline queues a
/// committed batch's PUBACKs, and each second's confirmations, here instead, and the ingest task
/// writes them onto the connection in bulk, one flush for all, after each event of the event
/// loop ([`run`]). PUBACKs are queued only after their batch is committed, so the guarantee is
/// unchanged: nothing is acknowledged to the broker before the store has it.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    queued: Arc<Mutex<Queued>>,
    /// Wakes the replay session's loop when PUBACKs for it are queued: it has no
    /// confirmations of its own to wake it (see [`Outbox::pubacks`]), and once the broker's
    /// window of unacknowledged deliveries is full nothing else arrives on it until the
    /// keep-alive.
    replay_wake: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct Queued {
    /// (connection, packet id): written only on the connection the publish came on.
    pubacks: Vec<(u32, u16)>,
    /// The same for the replay session's connections ([`Session::generation`]).
    replay_pubacks: Vec<(u32, u16)>,
    /// Written by the live session only.
    publishes: Vec<Publish>,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues PUBACKs of committed publishes: (connection count when received, packet id).
    /// No wake-up: while publishes arrive the event loop has events all the time, and when they
    /// stop, the confirmations of the same messages wake it within a second ([`Outbox::publish`]);
    /// a PUBACK that waits costs at most a redelivered duplicate.
    /// The replay session's loop is woken (it has no confirmations of its own).
    pub fn pubacks(&self, acks: impl IntoIterator<Item = (u32, u16)>) {
        let mut replay = false;
        {
            let mut q = self.lock();
            for a in acks {
                if a.0 & REPLAY_GENERATION != 0 {
                    q.replay_pubacks.push(a);
                    replay = true;
                } else {
                    q.pubacks.push(a);
                }
            }
        }
        if replay {
            self.replay_wake.notify_one();
        }
    }

    /// Queues QoS 0 publishes and wakes the event loop with the last one, sent through the
    /// client's request queue (if that is full, it is queued too: the loop is busy then and
    /// writes the queue after its next event). The last may reach the broker before the rest of
    /// its hand-over, which names each host once; an earlier hand-over was written right after
    /// its own wake-up, so a host's confirmations stay in order.
    pub fn publish(&self, client: &AsyncClient, mut publishes: Vec<Publish>) {
        let Some(last) = publishes.pop() else {
            return;
        };
        let mut q = self.lock();
        q.publishes.append(&mut publishes);
        if client
            .try_publish(
                last.topic.clone(),
                last.qos,
                last.retain,
                last.payload.clone(),
            )
            .is_err()
        {
            q.publishes.push(last);
        }
    }

    /// Packets waiting to be written.
    pub fn len(&self) -> usize {
        let q = self.lock();
        q.pubacks.len() + q.replay_pubacks.len() + q.publishes.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`write_outbox`], and when the connection broke: the next poll reports it and reconnects.
/// The broker redelivers what the lost PUBACKs were for, and the duplicates are acknowledged
/// again; a lost confirmation costs the agent a resend (see the pipeline).
async fn flush_outbox(
    eventloop: &mut EventLoop,
    outbox: &Outbox,
    session: Session,
    generation: u32,
    buf: &mut Queued,
) {
    if let Err(e) = write_outbox(eventloop, outbox, session, generation, buf).await {
        tracing::debug!(error = %e, "queued packets not written");
        *buf = Queued::default();
    }
}

/// Writes the queued packets of `session` onto its connection `generation` (the count of
/// connections so far), one flush for all; PUBACKs of publishes received on an earlier
/// connection are dropped, the broker redelivers those. Without a connection everything stays
/// queued.
async fn write_outbox(
    eventloop: &mut EventLoop,
    outbox: &Outbox,
    session: Session,
    generation: u32,
    buf: &mut Queued,
) -> Result<usize, StateError> {
    let Some(network) = eventloop.network.as_mut() else {
        return Ok(0);
    };
    {
        let mut q = outbox.lock();
        match session {
            Session::Live => {
                if q.pubacks.is_empty() && q.publishes.is_empty() {
                    return Ok(0);
                }
                std::mem::swap(&mut q.pubacks, &mut buf.pubacks);
                std::mem::swap(&mut q.publishes, &mut buf.publishes);
            }
            Session::Replay => {
                if q.replay_pubacks.is_empty() {
                    return Ok(0);
                }
                // Written below like the live session's.
                std::mem::swap(&mut q.replay_pubacks, &mut buf.pubacks);
            }
        }
    }
    let mut n = 0;
    for (g, pkid) in buf.pubacks.drain(..) {
        if g == generation {
            network.write(Packet::PubAck(PubAck::new(pkid))).await?;
            n += 1;
        }
    }
    for p in buf.publishes.drain(..) {
        network.write(Packet::Publish(p)).await?;
        n += 1;
    }
    network.flush().await?;
    Ok(n)
}

/// Authenticates and decodes one publish. With `registry` (enrolled mode) the topic must name
/// an active identity and the payload carry that identity's MAC; without it (open mode) a MAC,
/// if present, is stripped unchecked. Size is checked first, before any other work.
pub fn authenticate_decode(
    topic: &str,
    payload: &[u8],
    registry: Option<&Registry>,
    limits: &Limits,
) -> Result<Message, Refusal> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Refusal::Decode(Reject::Oversized));
    }
    let unsigned: Cow<'_, [u8]> = match registry {
        Some(reg) => {
            let t = Topic::parse(topic).map_err(Refusal::Decode)?;
            let key = reg.key_for(t.mo, t.host).map_err(|d| match d {
                Denied::Unenrolled => Refusal::Unenrolled,
                Denied::Revoked => Refusal::Revoked,
            })?;
            let split = auth::split(payload).ok_or(Refusal::Unsigned)?;
            auth::verify_split(key, topic, &split).map_err(|_| Refusal::BadMac)?;
            Cow::Owned(split.unsigned)
        }
        None => match auth::split(payload) {
            Some(s) => Cow::Owned(s.unsigned),
            None => Cow::Borrowed(payload),
        },
    };
    dozor_proto::decode(topic, &unsigned, limits).map_err(Refusal::Decode)
}

/// True for a client error caused by what the broker sent (a packet too big or malformed):
/// the broker would send it again on the same persistent session.
fn poisoned(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(_))
    )
}

/// The next event rumqttc has already read and parsed, if it is a publish; any other event
/// stays first in its queue for the next poll (order kept).
fn next_publish(state: &mut rumqttc::MqttState) -> Option<Publish> {
    match state.events.pop_front() {
        Some(Event::Incoming(Packet::Publish(p))) => Some(p),
        Some(other) => {
            state.events.push_front(other);
            None
        }
        None => None,
    }
}

/// Takes a packet just read from the broker as the answer to an outstanding PINGREQ.
///
/// rumqttc sends a PINGREQ every keep-alive and fails the connection (`Last pingreq isn't
/// acked`) when the previous one is still unanswered at the next. The broker writes its
/// PINGRESP behind every delivery already on the way: with the broker's window of
/// unacknowledged deliveries (Mosquitto's `max_inflight_messages`, 20,000 in
/// deploy/mosquitto.conf) that is up to a window of publishes, and a collector slower than
/// window ÷ keep-alive (667 msg/s at 20,000 and 30 s) failed the check while reading them, was
/// sent the same window again after the reconnect, and made no headway (docs/reliability.md).
/// A packet read after the PINGREQ went out proves the connection delivers; a dead one delivers
/// nothing, so it is still noticed within two keep-alives of its last packet.
fn heard_from_broker(state: &mut rumqttc::MqttState) {
    state.await_pingresp = false;
}

/// Test-only: extra time the ingest task spends on each publish, from
/// `DOZOR_TEST_INGEST_DELAY_US` (unset in production). It makes a collector slower than its
/// broker's window, as a debug build on a loaded machine is (`tests/tests/livelock.rs`). The
/// task sleeps off what it owes in slices of at least 5 ms, like work it does for the messages.
fn test_delay() -> Option<Duration> {
    let us: u64 = std::env::var("DOZOR_TEST_INGEST_DELAY_US")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let delay = (us > 0).then(|| Duration::from_micros(us.min(1_000_000)))?;
    tracing::warn!(
        delay_us = delay.as_micros() as u64,
        "DOZOR_TEST_INGEST_DELAY_US is set: every publish is slowed on purpose (a test setting; \
         unset it in production)"
    );
    Some(delay)
}

/// Drives the event loop until cancelled: decodes publishes and sends them to the pipeline,
/// and writes what the pipeline queued in `outbox` between polls.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    session: Session,
    filters: Vec<String>,
    client: AsyncClient,
    mut eventloop: EventLoop,
    tx: QueueTx,
    metrics: Arc<Metrics>,
    registry: Option<watch::Receiver<Arc<Registry>>>,
    provision: Option<Vec<u8>>,
    outbox: Outbox,
    sub_qos: QoS,
    cancel: CancellationToken,
) {
    let limits = Limits::DEFAULT;
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut connected = false;
    let mut connect_warned = false;
    let mut out_buf = Queued::default();
    // Connections so far; the pipeline counts the same from `Inbound::Connected`.
    let mut generation: u32 = 0;
    let delay = test_delay();
    let mut full_warned = false;
    // Subscriptions the broker refused, in a row (the retry's backoff).
    let mut refused_subs: u32 = 0;
    let mut owed = Duration::ZERO;
    // Made once: a `cancelled()` made per packet registered and removed a waiter (two locks)
    // for every publish read.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        if connected {
            flush_outbox(
                &mut eventloop,
                &outbox,
                session,
                session.generation(generation),
                &mut out_buf,
            )
            .await;
        }
        let ev = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            ev = eventloop.poll() => ev,
            // Only between packets in practice: a poll waiting for the network, its requests
            // or the keep-alive; what it had read stays in its buffers for the next poll.
            () = outbox.replay_wake.notified(), if session == Session::Replay => continue,
        };
        if let Ok(Event::Incoming(_)) = &ev {
            heard_from_broker(&mut eventloop.state);
        }
        match ev {
            Ok(Event::Incoming(Packet::Publish(first))) => {
                // rumqttc reads up to ten packets per read and hands them out one per poll: the
                // publishes it has already parsed are taken here in one go, without a turn of
                // this loop (a `select!` with the cancellation, the poll) for each.
                let mut next = Some(first);
                let mut closed = false;
                while let Some(p) = next.take() {
                    metrics.received();
                    // The embedded broker's gateway bounds what it forwards by this (its backlog
                    // windows, one per session).
                    let bytes = (p.topic.len() + p.payload.len()) as u64;
                    match session {
                        Session::Live => metrics.received_bytes(bytes),
                        Session::Replay => metrics.replay_received_bytes(bytes),
                    }
                    if let Some(d) = delay {
                        owed += d;
                        if owed >= Duration::from_millis(5) {
                            // Blocks this worker thread, as the work it stands for would.
                            std::thread::sleep(std::mem::take(&mut owed));
                        }
                    }
                    let decoded = {
                        let reg = registry.as_ref().map(|r| r.borrow());
                        authenticate_decode(
                            &p.topic,
                            &p.payload,
                            reg.as_deref().map(|a| &**a),
                            &limits,
                        )
                    };
                    let sent = tx
                        .send_msg(p, session.generation(generation), now_ms(), decoded)
                        .await;
                    match sent {
                        Err(()) => {
                            closed = true;
                            break;
                        }
                        Ok(Some((messages, bytes))) if tx.warn_full && !full_warned => {
                            full_warned = true;
                            tracing::warn!(
                                messages,
                                bytes,
                                ?session,
                                "ingest queue full (mqtt.ingest_queue, mqtt.ingest_queue_mib): reading \
                             from the broker paused until the pipeline catches up; keep \
                             mqtt.ingest_queue at or above the broker's max_inflight_messages"
                            );
                        }
                        Ok(_) => {}
                    }
                    next = next_publish(&mut eventloop.state);
                    // PUBACKs the pipeline queued meanwhile go out as promptly as before (between
                    // publishes): the broker's window refills only with them.
                    if next.is_some() {
                        flush_outbox(
                            &mut eventloop,
                            &outbox,
                            session,
                            session.generation(generation),
                            &mut out_buf,
                        )
                        .await;
                    }
                }
                metrics.ingest_queue_depth(tx.in_use().0);
                if closed {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(
                    session_present = ack.session_present,
                    ?session,
                    "connected to MQTT broker"
                );
                backoff.reset();
                connected = true;
                generation = generation.wrapping_add(1);
                connect_warned = false;
                full_warned = false;
                if session == Session::Live {
                    metrics.set_broker_connected(true);
                }
                // After a poisoned session was discarded, persist the session again from the
                // next reconnect on.
                eventloop.mqtt_options.set_clean_session(false);
                if let Some(p) = &provision
                    && let Err(e) = client
                        .publish(
                            crate::identity::dynsec::CONTROL_TOPIC,
                            QoS::AtLeastOnce,
                            false,
                            p.clone(),
                        )
                        .await
                {
                    tracing::warn!(error = %e, "dynsec self-provisioning not sent");
                }
                for filter in &filters {
                    if let Err(e) = client.subscribe(filter.clone(), sub_qos).await {
                        tracing::warn!(error = %e, "subscribe failed");
                    }
                }
                // The pipeline's view of the broker (live state, the collector's runs) follows
                // the live session; replays say nothing about who is online now.
                if session == Session::Live && tx.send(Inbound::Connected).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack)))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                // E.g. Mosquitto's dynamic security before the live session's provisioning
                // gave the collector's role these topics (the replay session subscribes at the
                // same time): without a retry nothing of them would ever arrive.
                refused_subs = refused_subs.saturating_add(1);
                let delay = Duration::from_secs(1 << refused_subs.min(5));
                tracing::warn!(
                    ?session,
                    retry_in_secs = delay.as_secs(),
                    "the MQTT broker refused a subscription (the collector's user may not read \
                     these topics yet); subscribing again"
                );
                let (c, f) = (client.clone(), filters.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    for filter in f {
                        let _ = c.subscribe(filter, sub_qos).await;
                    }
                });
            }
            Ok(_) => {}
            Err(e) => {
                if poisoned(&e) {
                    // The broker holds a message we cannot read (bigger than MAX_PACKET or not
                    // MQTT). Reconnecting to the same session would receive it again, forever:
                    // start a clean session once, which makes the broker discard it. What else
                    // was queued for us is re-sent by the agents, which keep every message
                    // until we confirm it stored.
                    metrics.rejected(Refusal::UnreadablePacket, "");
                    tracing::warn!(error = %e, "unreadable message from the broker; discarding the session");
                    eventloop.mqtt_options.set_clean_session(true);
                }
                if session == Session::Live {
                    metrics.set_broker_connected(false);
                }
                if connected {
                    connected = false;
                    metrics.mqtt_reconnect();
                    tracing::warn!(error = %e, ?session, "MQTT connection lost; reconnecting");
                    if session == Session::Live && tx.send(Inbound::Disconnected).await.is_err() {
                        break;
                    }
                } else if !connect_warned {
                    // Once per outage at warn (an unreachable broker at start used to be
                    // logged at debug only); the retries at debug.
                    connect_warned = true;
                    tracing::warn!(error = %e, "cannot connect to the MQTT broker; retrying");
                } else {
                    tracing::debug!(error = %e, "MQTT connect failed; retrying");
                }
                tokio::select! {
                    _ = &mut cancelled => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    let _ = client.disconnect().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttMode;
    use rumqttc::{MqttState, PingReq, Request};

    fn publish(payload_len: usize) -> Publish {
        Publish::new(
            "dozor/v1/mo/h/hb",
            QoS::AtLeastOnce,
            vec![b'x'; payload_len],
        )
    }

    /// Queued PUBACKs of the replay session wake its loop (found in review: they waited for
    /// the keep-alive once the broker's window was full); live ones do not need to.
    #[tokio::test]
    async fn replay_pubacks_wake_the_replay_loop() {
        let soon = Duration::from_millis(50);
        let outbox = Outbox::default();
        outbox.pubacks([(1, 7)]);
        assert!(
            tokio::time::timeout(soon, outbox.replay_wake.notified())
                .await
                .is_err(),
            "a live PUBACK does not wake the replay loop"
        );
        outbox.pubacks([(REPLAY_GENERATION | 1, 8)]);
        tokio::time::timeout(soon, outbox.replay_wake.notified())
            .await
            .expect("woken, even though nobody waited when it was queued");
        assert_eq!(outbox.len(), 2);
    }

    /// Both bounds hold: a publish waits for room in messages and in bytes, and a message's
    /// bytes come back when the pipeline drops it.
    #[tokio::test]
    async fn the_queue_is_bounded_in_messages_and_bytes() {
        let ext = MqttMode::External {
            host: "mq".into(),
            port: 1883,
        };
        let small = |n, bytes| MqttConfig {
            ingest_queue: n,
            ingest_queue_bytes: bytes,
            ..cfg(ext.clone())
        };
        let refused = || Err(Refusal::Unsigned);
        let soon = Duration::from_millis(50);

        let (tx, mut rx) = queue(&small(2, 1 << 20));
        assert!(
            tx.warn_full,
            "an external broker's window is worth a warning"
        );
        assert_eq!(tx.send_msg(publish(10), 0, 0, refused()).await, Ok(None));
        assert_eq!(tx.send_msg(publish(10), 0, 0, refused()).await, Ok(None));
        let third = tx.send_msg(publish(10), 0, 0, refused());
        tokio::pin!(third);
        assert!(tokio::time::timeout(soon, &mut third).await.is_err());
        drop(rx.recv().await);
        assert_eq!(
            third.await,
            Ok(Some((2, 3 * queue_cost(&publish(10))))),
            "sent once one was taken; it had found two waiting (its own bytes already reserved)"
        );

        // 1,000 payload bytes cost 2,272: two fit in 5,000 bytes, a third waits until one is
        // dropped, not merely received.
        let (tx, mut rx) = queue(&small(100, 5_000));
        assert_eq!(queue_cost(&publish(1_000)), 2_272);
        assert_eq!(tx.send_msg(publish(1_000), 0, 0, refused()).await, Ok(None));
        assert_eq!(tx.send_msg(publish(1_000), 0, 0, refused()).await, Ok(None));
        let third = tx.send_msg(publish(1_000), 0, 0, refused());
        tokio::pin!(third);
        assert!(tokio::time::timeout(soon, &mut third).await.is_err());
        let first = rx.recv().await;
        assert!(tokio::time::timeout(soon, &mut third).await.is_err());
        drop(first);
        assert_eq!(third.await, Ok(Some((2, 2 * 2_272))), "it found two held");

        // A message bigger than the whole bound still passes, alone.
        let (tx, _rx) = queue(&small(100, 1_000));
        assert_eq!(tx.send_msg(publish(4_000), 0, 0, refused()).await, Ok(None));

        let embedded = MqttConfig {
            ingest_queue: 10,
            ..cfg(MqttMode::Embedded {
                listen: "127.0.0.1:1883".parse().unwrap(),
                tls: None,
                max_connections: 10,
                backlog_bytes: 1 << 20,
            })
        };
        assert!(
            !queue(&embedded).0.warn_full,
            "QoS 0 from the embedded broker is paced so"
        );
    }

    /// The publishes rumqttc has already parsed are taken in one go, in order, up to the
    /// first other event, which stays first for the next poll.
    #[test]
    fn queued_publishes_are_taken_up_to_another_event() {
        let mut s = MqttState::new(100, true);
        s.events
            .push_back(Event::Incoming(Packet::Publish(publish(1))));
        s.events
            .push_back(Event::Incoming(Packet::Publish(publish(2))));
        s.events.push_back(Event::Incoming(Packet::PingResp));
        s.events
            .push_back(Event::Incoming(Packet::Publish(publish(3))));
        assert_eq!(next_publish(&mut s).map(|p| p.payload.len()), Some(1));
        assert_eq!(next_publish(&mut s).map(|p| p.payload.len()), Some(2));
        assert!(next_publish(&mut s).is_none());
        assert!(next_publish(&mut s).is_none(), "still waiting for the poll");
        assert!(matches!(
            s.events.front(),
            Some(Event::Incoming(Packet::PingResp))
        ));
        assert_eq!(s.events.len(), 2);
    }

    /// What [`heard_from_broker`] relies on in rumqttc: a second PINGREQ fails while the first
    /// is unanswered, and does not once a packet was heard.
    #[test]
    fn a_packet_heard_answers_the_keepalive() {
        let mut s = MqttState::new(100, true);
        assert!(s.handle_outgoing_packet(Request::PingReq(PingReq)).is_ok());
        assert!(matches!(
            s.handle_outgoing_packet(Request::PingReq(PingReq)),
            Err(StateError::AwaitPingResp)
        ));
        heard_from_broker(&mut s);
        assert!(s.handle_outgoing_packet(Request::PingReq(PingReq)).is_ok());
        assert!(s.await_pingresp, "the new PINGREQ waits for its answer");
    }

    fn cfg(mode: MqttMode) -> MqttConfig {
        MqttConfig {
            mode,
            client_id: "c".into(),
            keepalive: Duration::from_secs(30),
            ack_interval: Duration::from_secs(1),
            ack_host_gap: Duration::from_secs(5),
            credentials: None,
            tls: None,
            dynsec: false,
            batched_writes: true,
            ingest_queue: 32_768,
            ingest_queue_bytes: 64 << 20,
            replay_session: true,
        }
    }

    fn msg(topic: &str) -> Inbound {
        Inbound::Msg {
            publish: Publish::new(topic, QoS::AtLeastOnce, vec![]),
            generation: 0,
            recv_ms: 0,
            decoded: Err(Refusal::Unsigned),
            held: Held::default(),
        }
    }

    fn topic_of(m: Option<Inbound>) -> Option<String> {
        match m {
            Some(Inbound::Msg { publish, .. }) => Some(publish.topic),
            Some(other) => Some(format!("{other:?}")),
            None => None,
        }
    }

    /// The pipeline takes a replayed message only when no live one waits, and drains both
    /// queues once they are closed.
    #[tokio::test]
    async fn live_messages_are_taken_before_replayed_ones() {
        let (live_tx, live_rx) = mpsc::channel(16);
        let (replay_tx, replay_rx) = mpsc::channel(16);
        let mut inlet = Inlet::new(live_rx, Some(replay_rx));
        for i in 0..3 {
            replay_tx.send(msg(&format!("r{i}"))).await.unwrap();
        }
        live_tx.send(msg("l0")).await.unwrap();
        live_tx.send(msg("l1")).await.unwrap();
        assert_eq!(topic_of(inlet.recv().await).as_deref(), Some("l0"));
        assert_eq!(topic_of(inlet.try_recv().ok()).as_deref(), Some("l1"));
        assert_eq!(topic_of(inlet.recv().await).as_deref(), Some("r0"));
        live_tx.send(msg("l2")).await.unwrap();
        assert_eq!(topic_of(inlet.recv().await).as_deref(), Some("l2"));
        assert_eq!(topic_of(inlet.recv().await).as_deref(), Some("r1"));
        assert_eq!(topic_of(inlet.recv().await).as_deref(), Some("r2"));
        // Both empty: a replay arriving while the pipeline waits is taken.
        let waiting = tokio::spawn(async move { (topic_of(inlet.recv().await), inlet) });
        replay_tx.send(msg("r3")).await.unwrap();
        let (first, mut inlet) = waiting.await.unwrap();
        assert_eq!(first.as_deref(), Some("r3"));
        replay_tx.send(msg("r4")).await.unwrap();
        inlet.close();
        assert!(live_tx.send(msg("late")).await.is_err(), "closed");
        assert_eq!(
            topic_of(inlet.recv().await).as_deref(),
            Some("r4"),
            "drained"
        );
        assert!(inlet.recv().await.is_none());
        drop((live_tx, replay_tx));
    }

    /// PUBACKs go back on the session (and connection) their publish came on.
    #[test]
    fn pubacks_are_sorted_by_session() {
        let outbox = Outbox::default();
        let live = Session::Live.generation(3);
        let replay = Session::Replay.generation(3);
        assert_ne!(live, replay);
        outbox.pubacks([(live, 1), (replay, 2), (live, 3)]);
        let q = outbox.lock();
        assert_eq!(q.pubacks, [(live, 1), (live, 3)]);
        assert_eq!(q.replay_pubacks, [(replay, 2)]);
    }

    #[test]
    fn sessions_split_the_filters_unless_switched_off() {
        let c = cfg(MqttMode::External {
            host: "mq".into(),
            port: 1883,
        });
        assert_eq!(
            Session::Live.filters(&c),
            [
                "dozor/v1/+/+/birth",
                "dozor/v1/+/+/state",
                "dozor/v1/+/+/hb",
                "dozor/v1/+/+/probe"
            ]
        );
        assert_eq!(
            Session::Replay.filters(&c),
            [
                "dozor/v1/+/+/birth-replay",
                "dozor/v1/+/+/hb-replay",
                "dozor/v1/+/+/probe-replay"
            ]
        );
        assert_eq!(Session::Replay.client_id(&c), "c-replay");
        let one = MqttConfig {
            replay_session: false,
            ..c
        };
        assert_eq!(
            Session::Live.filters(&one).len(),
            7,
            "one session reads both"
        );
    }

    #[test]
    fn external_broker_is_acknowledged_after_commit_embedded_on_receipt() {
        let external = cfg(MqttMode::External {
            host: "mq".into(),
            port: 1883,
        });
        assert!(acks_after_commit(&external));
        assert!(options(&external, Session::Live, "mq", 1883).manual_acks());
        assert_eq!(subscription_qos(&external), QoS::AtLeastOnce);
        let embedded = cfg(MqttMode::Embedded {
            listen: "127.0.0.1:1883".parse().unwrap(),
            tls: None,
            max_connections: 10,
            backlog_bytes: 1 << 20,
        });
        assert!(!acks_after_commit(&embedded));
        assert!(!options(&embedded, Session::Live, "127.0.0.1", 1883).manual_acks());
        assert_eq!(subscription_qos(&embedded), QoS::AtMostOnce);
        let unbatched = MqttConfig {
            batched_writes: false,
            ..embedded
        };
        assert_eq!(subscription_qos(&unbatched), QoS::AtLeastOnce);
    }
}
