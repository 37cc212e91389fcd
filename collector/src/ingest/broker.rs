//! The embedded MQTT broker (rumqttd), so that a single collector binary needs nothing else.

use crate::identity::service::Identities;
use crate::identity::{LoginError, Registry, SecurityMode};
use dozor_gate::{
    Authorizer, Backlog, GateConfig, GateStats, Grant, InProcess, Refusal, ReplayWindow,
};
use dozor_proto::{Kind, MAX_PAYLOAD_BYTES, Topic, parse_username, upstream_filter};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address cannot be bound.
    #[error("embedded MQTT broker cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The broker thread could not be started.
    #[error("embedded MQTT broker: {0}")]
    Start(String),
}

/// Segments of the log of each of the collector's subscriptions: it holds at least
/// `(UPSTREAM_SEGMENTS - 1)` segments of a quarter of the backlog each, i.e. 1.25× the backlog,
/// before it drops unread messages, and at most 1.5× (plus one message) at any time.
const UPSTREAM_SEGMENTS: usize = 6;

/// The log of any other subscription (an agent's `ack` and `cfg` topics): rumqttd keeps a
/// filter's log as long as it runs, up to its capacity, whether anybody reads it or not, so with
/// its default (here once 8 × 8 MiB) every agent's confirmations would pile up to 64 MiB each.
/// 2 × 8 KiB is a minute of confirmations of a busy agent; one bigger message is always kept.
const OTHER_SEGMENT_BYTES: usize = 8 * 1024;
const OTHER_SEGMENTS: usize = 2;

/// rumqttd's settings. Why the logs are sized as they are: rumqttd appends each publish to the
/// in-memory log of every matching subscription and acknowledges it at once; a subscriber reads
/// the log at its own pace. When a log is full it drops its oldest segment, read or not (the
/// reader's cursor jumps ahead: "Read cursor start jumped"), and never slows a publisher down.
/// So the gateway bounds what is owed to the collector to `backlog_bytes`
/// ([`dozor_gate::Backlog`]) and the collector's logs hold more than that: a burst the
/// collector cannot drain at once waits in the agents' sockets and spools instead of being
/// dropped here.
fn config(listen: SocketAddr, backlog_bytes: u64) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        // Four times the protocol limit: oversized messages still reach the collector to be
        // counted, while truly huge ones are cut off by the broker.
        max_payload_size: MAX_PAYLOAD_BYTES * 4,
        max_inflight_count: 10_000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "dozor-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let upstream = SegmentConfig {
        max_segment_size: usize::try_from(backlog_bytes / 4)
            .unwrap_or(usize::MAX)
            .max(1024),
        max_segment_count: UPSTREAM_SEGMENTS,
    };
    let custom_segment = crate::ingest::SUBSCRIBED
        .iter()
        .map(|k| (upstream_filter(*k), upstream.clone()))
        .collect();
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 100_000,
            max_outgoing_packet_count: 10_000,
            max_segment_size: OTHER_SEGMENT_BYTES,
            max_segment_count: OTHER_SEGMENTS,
            custom_segment: Some(custom_segment),
            // The collector's filters exist from the start: a publish that arrives before the
            // collector has subscribed (agents reconnecting faster after a restart) goes to
            // their bounded logs, instead of rumqttd creating a log per topic (it would inherit
            // the collector's log size, be appended to for the rest of the process and never
            // be read).
            initialized_filters: Some(
                crate::ingest::SUBSCRIBED
                    .iter()
                    .map(|k| upstream_filter(*k))
                    .collect(),
            ),
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Each direction of an agent's in-process pipe between the gateway and rumqttd holds this much
/// before its writer waits, as a full socket buffer made it wait (the gateway's backlog window,
/// not this, bounds what is owed to the collector). The gateway forwards what one read of an
/// agent's socket brought (~4 KiB), so it is one read ahead of rumqttd at most. Kept small
/// because a pipe's buffer keeps the largest capacity it ever needed (up to twice this), in the
/// process's memory where a socket's was the kernel's: with 64 KiB, a burst over 1,000
/// connections left the collector's peak RSS ~100 MB higher than over loopback TCP
/// (docs/benchmarks.md, "Embedded broker over in-process pipes").
const PIPE_BYTES: usize = 8 * 1024;

/// rumqttd running in this process.
#[derive(Debug)]
pub struct Internal {
    /// Its TCP listener on loopback: the collector's own client and the demo's simulated fleet.
    pub addr: SocketAddr,
    /// The way in without a socket, for the gateway (`rumqttd::Connector`, a dozor patch).
    pub connector: rumqttd::Connector,
}

/// Starts rumqttd on `listen` in its own threads. It lives as long as the process.
///
/// The listener is bound here and handed to rumqttd (`rumqttd::adopt_listener`, a dozor patch):
/// with port 0 (the internal listener) a port found by binding and releasing could be taken by
/// another socket before rumqttd bound it again in its own thread, and the collector would
/// start without a broker (this happened in CI). Connections made before rumqttd accepts wait
/// in the listen backlog, and streams handed to the connector in its queue, so it accepts both
/// as soon as this returns.
pub fn start(listen: SocketAddr, backlog_bytes: u64) -> Result<Internal, BrokerError> {
    let bind_err = |source| BrokerError::Bind {
        addr: listen,
        source,
    };
    let listener = bind_listener(listen).map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    rumqttd::adopt_listener(listener);
    let mut broker = Broker::new(config(bound, backlog_bytes));
    let connector = broker.connector(bound);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let addr = if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    };
    Ok(Internal { addr, connector })
}

/// Binds and listens as tokio's `TcpListener::bind` does (SO_REUSEADDR, a backlog of 1,024:
/// a reconnect storm opens one internal connection per agent at once).
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The embedded broker as agents see it.
pub struct Embedded {
    /// Where agents connect: the gateway (TLS when configured).
    pub public: SocketAddr,
    /// rumqttd itself, on loopback: the collector's own client and the demo's simulated fleet.
    pub internal: SocketAddr,
    pub stats: BrokerStats,
}

/// The gateway's counters and the backlog window, for `/metrics`.
#[derive(Debug, Clone)]
pub struct BrokerStats {
    pub gate: Arc<GateStats>,
    pub backlog: Arc<Backlog>,
    /// The replay topics' own window (`mqtt.replay_session`).
    pub replay: Option<Arc<Backlog>>,
}

/// A subscriber that takes nothing for this long with the window full is assumed to have lost
/// what it was owed ([`dozor_gate::Backlog`]); shorter than an agent's keepalive (30 s), so
/// agents waiting on a full window are not cut off by their own pings.
const BACKLOG_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Decides logins at the gateway from the identity registry.
struct RegistryAuth {
    mode: SecurityMode,
    registry: watch::Receiver<Arc<Registry>>,
}

impl Authorizer for RegistryAuth {
    fn connect(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Grant, Refusal> {
        if self.mode == SecurityMode::Open {
            // Labs only: anyone publishes any upstream kind and reads any downstream topic,
            // but still nobody writes acks (only the collector, connected directly).
            return Ok(Grant {
                identity: client_id.to_string(),
                publish: dozor_proto::UPSTREAM
                    .iter()
                    .map(|k| upstream_filter(*k))
                    .collect(),
                subscribe: [Kind::Ack, Kind::Cfg]
                    .iter()
                    .map(|k| upstream_filter(*k))
                    .collect(),
            });
        }
        let reg = self.registry.borrow().clone();
        match reg.login(client_id, username, password) {
            Ok(g) => Ok(Grant {
                identity: dozor_proto::username(&g.mo, &g.host),
                publish: g.publish,
                subscribe: g.subscribe,
            }),
            Err(LoginError::BadCredentials) => Err(Refusal::BadCredentials),
            Err(LoginError::Revoked | LoginError::WrongClientId) => Err(Refusal::NotAuthorized),
        }
    }

    fn still_valid(&self, grant: &Grant) -> bool {
        if self.mode == SecurityMode::Open {
            return true;
        }
        let reg = self.registry.borrow().clone();
        parse_username(&grant.identity).is_some_and(|(mo, host)| reg.still_valid(mo, host))
    }
}

/// Starts rumqttd on loopback and the gateway in front of it on `listen`: agents are
/// authenticated and held to their own topics there (rumqttd itself has no topic ACLs), with
/// connection caps, a CONNECT deadline and a packet limit. Revoking an identity closes its
/// connection within a second (the registry's change triggers a recheck). While more than
/// `backlog_bytes` of forwarded messages are not yet received by the collector (`metrics`),
/// the gateway stops reading agents' sockets (see [`config`] for why). With `replay_session`,
/// the replay topics have a window of their own, as large, drained by the collector's replay
/// session: a replay storm the collector stores slowly fills that one and pauses only the
/// connections that replay, never the live heartbeats of the others.
#[allow(clippy::too_many_arguments)]
pub async fn start_secured(
    listen: SocketAddr,
    tls: Option<&crate::tls::ServerFiles>,
    max_connections: usize,
    backlog_bytes: u64,
    replay_session: bool,
    metrics: Arc<crate::metrics::Metrics>,
    ids: Arc<Identities>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<Embedded> {
    let Internal {
        addr: internal,
        connector,
    } = start(SocketAddr::from(([127, 0, 0, 1], 0)), backlog_bytes)?;
    // The gateway reaches rumqttd through in-memory pipes, not loopback TCP: one descriptor per
    // agent (its own socket) instead of three, and no kernel socket work per message.
    let mut cfg = GateConfig::new(
        listen,
        InProcess {
            buffer: PIPE_BYTES,
            hand_over: Arc::new(move |pipe| connector.connect(pipe)),
        },
    );
    let busy = metrics.clone();
    let replay = replay_session.then(|| {
        let (taken, busy) = (metrics.clone(), metrics.clone());
        Backlog::new(
            backlog_bytes,
            BACKLOG_STALL,
            Box::new(move || taken.replay_received_bytes_total()),
            Box::new(move || busy.replay_queue_waiting() > 0),
        )
    });
    cfg.replay = replay.clone().map(|backlog| ReplayWindow {
        backlog,
        matches: |topic| Topic::parse(topic).is_ok_and(|t| t.kind.is_replay()),
    });
    let backlog = Backlog::new(
        backlog_bytes,
        BACKLOG_STALL,
        Box::new(move || metrics.received_bytes_total()),
        // Publishes read and waiting for the pipeline: the collector is slow, not deaf.
        Box::new(move || busy.ingest_queue_waiting() > 0),
    );
    cfg.backlog = Some(backlog.clone());
    cfg.max_connections = max_connections;
    cfg.max_pending = max_connections.clamp(1, 1024);
    // Agents' messages are at most 16 KiB; the gate refuses far bigger packets outright.
    cfg.max_packet_size = MAX_PAYLOAD_BYTES * 4;
    if let Some(files) = tls {
        cfg.tls = Some(crate::tls::server_config(files)?);
    }
    let auth = Arc::new(RegistryAuth {
        mode: ids.mode,
        registry: ids.receiver(),
    });
    let (public, handle) = dozor_gate::start(cfg, auth, cancel.clone()).await?;
    let stats = handle.stats();
    let mut changes = ids.receiver();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = changes.changed() => {
                    if r.is_err() { break }
                    handle.recheck();
                }
            }
        }
    });
    tracing::info!(%public, tls = tls.is_some(), "embedded MQTT broker listening (behind the gateway)");
    Ok(Embedded {
        public,
        internal,
        stats: BrokerStats {
            gate: stats,
            backlog,
            replay,
        },
    })
}

/// Writes the gateway's counters and gauges.
pub fn write_metrics(broker: &BrokerStats, out: &mut String) {
    let stats = &broker.gate;
    let mut f = crate::metrics::Families::default();
    let closed = f.counter(
        "dozor_mqtt_gate_closed_total",
        "MQTT connections refused or closed by the gateway, by reason.",
    );
    for (reason, v) in stats.counters() {
        closed.sample(&[("reason", reason)], v);
    }
    for (g, v) in stats.gauges() {
        let help = match g {
            "connections_open" => {
                "MQTT connections open now at the gateway, pending ones included."
            }
            "connections_pending" => {
                "MQTT connections at the gateway still before their CONNECT is accepted."
            }
            _ => "MQTT gateway gauge.",
        };
        f.gauge(&format!("dozor_mqtt_gate_{g}"), help)
            .sample(&[], v);
    }
    let b = &broker.backlog;
    f.gauge(
        "dozor_mqtt_broker_backlog_bytes",
        "Bytes of messages the embedded broker holds for the collector (forwarded by the gateway, not yet received).",
    )
    .sample(&[], b.owed());
    f.gauge(
        "dozor_mqtt_broker_backlog_limit_bytes",
        "Above this backlog the gateway stops reading agents' sockets (mqtt.backlog_kib).",
    )
    .sample(&[], b.limit());
    f.counter(
        "dozor_mqtt_gate_backlog_pauses_total",
        "Times the embedded broker's backlog was full and the gateway paused its readers.",
    )
    .sample(&[], b.pauses());
    f.counter(
        "dozor_mqtt_gate_backlog_resets_total",
        "Times a full backlog was written off because the collector took nothing for 10 s.",
    )
    .sample(&[], b.resets());
    if let Some(r) = &broker.replay {
        f.gauge(
            "dozor_mqtt_broker_replay_backlog_bytes",
            "Bytes of replayed messages the embedded broker holds for the collector's replay session (a window of mqtt.backlog_kib of its own).",
        )
        .sample(&[], r.owed());
        f.counter(
            "dozor_mqtt_gate_replay_backlog_pauses_total",
            "Times the replay window was full and the gateway held back replay publishes.",
        )
        .sample(&[], r.pauses());
    }
    f.write(out);
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// The port is bound before `start` returns and rumqttd serves on exactly that listener: a
    /// client connecting at once gets its CONNACK (no probe-then-rebind window to lose).
    #[test]
    fn the_embedded_broker_serves_on_the_listener_bound_at_start() {
        let addr = super::start("127.0.0.1:0".parse().unwrap(), 1 << 20)
            .unwrap()
            .addr;
        assert_ne!(addr.port(), 0);
        assert!(
            std::net::TcpListener::bind(addr).is_err(),
            "the port is held when start returns"
        );
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        // MQTT 3.1.1 CONNECT, clean session, keep-alive 30 s, client id "t".
        s.write_all(&[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 1, b't',
        ])
        .unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
    }

    /// The gateway's way in: an in-memory pipe handed to the connector is served like an
    /// accepted socket (CONNECT answered with a CONNACK, then the link). That closing the pipe
    /// fires the client's will is tested in the gate's tests (`gate/tests/gate.rs`).
    #[tokio::test]
    async fn the_connector_serves_an_in_process_pipe_like_a_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let internal = super::start("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let (mut ours, broker) = tokio::io::duplex(super::PIPE_BYTES);
        internal.connector.connect(broker).unwrap();
        ours.write_all(&[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 1, b'p',
        ])
        .await
        .unwrap();
        let mut connack = [0u8; 4];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            ours.read_exact(&mut connack),
        )
        .await
        .expect("CONNACK in time")
        .unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        // A PINGREQ answered proves the link runs on the pipe.
        ours.write_all(&[0xc0, 0]).await.unwrap();
        let mut pingresp = [0u8; 2];
        ours.read_exact(&mut pingresp).await.unwrap();
        assert_eq!(pingresp, [0xd0, 0]);
    }

    /// A port another socket holds is refused at start, naming the address.
    #[test]
    fn a_taken_port_is_refused_at_start() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = super::start(held.local_addr().unwrap(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("cannot listen on"), "{e}");
    }
}
