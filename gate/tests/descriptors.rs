//! Descriptors stay bounded under a flood of idle connections, and a client piped to an
//! in-process broker costs no descriptor beyond its own socket. A test binary of its own, so no
//! other test's sockets are counted; its tests take turns (`TURN`) for the same reason.

mod common;

use dozor_gate::{Authorizer, GateConfig, Grant, InProcess, Reason, Refusal, Upstream};
use rumqttc::mqttbytes::v4::{Connect, Packet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// Refuses everyone; never asked here, since no client sends CONNECT.
struct Nobody;

impl Authorizer for Nobody {
    fn connect(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> Result<Grant, Refusal> {
        Err(Refusal::NotAuthorized)
    }
    fn still_valid(&self, _: &Grant) -> bool {
        false
    }
}

/// One test at a time counts descriptors.
static TURN: Mutex<()> = Mutex::const_new(());

/// Admits everyone to everything.
struct Everyone;

impl Authorizer for Everyone {
    fn connect(
        &self,
        client_id: &str,
        _: Option<&str>,
        _: Option<&[u8]>,
    ) -> Result<Grant, Refusal> {
        Ok(Grant {
            identity: client_id.into(),
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        })
    }
    fn still_valid(&self, _: &Grant) -> bool {
        true
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("Linux /proc")
        .count()
}

#[tokio::test]
async fn a_thousand_idle_connections_hold_at_most_max_pending_descriptors() {
    let _turn = TURN.lock().await;
    const IDLE: usize = 1_000;
    const MAX_PENDING: usize = 100;
    let mut cfg = GateConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        // Never dialled: no connection gets past CONNECT.
        SocketAddr::from(([127, 0, 0, 1], 9)),
    );
    cfg.max_pending = MAX_PENDING;
    cfg.connect_timeout = Duration::from_secs(60);
    let cancel = CancellationToken::new();
    let (addr, handle) = dozor_gate::start(cfg, Arc::new(Nobody), cancel.clone())
        .await
        .expect("gate starts");
    let stats = handle.stats();

    let before = open_descriptors();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.expect("connects"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.count(Reason::OverPending) < (IDLE - MAX_PENDING) as u64 {
        assert!(Instant::now() < deadline, "only {:?}", stats.counters());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gate_side = open_descriptors() - before - IDLE;
    assert!(
        gate_side <= MAX_PENDING + 10,
        "the gate holds {gate_side} descriptors for {IDLE} idle clients"
    );
    assert_eq!(stats.connections_pending(), MAX_PENDING as u64);
    cancel.cancel();
    handle.stopped().await;
    assert_eq!(stats.connections_open(), 0);
}

/// Through in-process pipes a connected client costs the process two descriptors: its own
/// socket here and the gate's end of it (over TCP to the broker it was four: two more for the
/// connection gate → broker, both ends in this process).
#[tokio::test]
async fn piped_clients_cost_no_descriptor_beyond_their_socket() {
    const CLIENTS: usize = 50;
    let _turn = TURN.lock().await;
    let (_, connector) = common::start_broker();
    let cfg = GateConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Upstream::InProcess(InProcess {
            buffer: 64 * 1024,
            hand_over: Arc::new(move |pipe| connector.connect(pipe)),
        }),
    );
    let cancel = CancellationToken::new();
    let (addr, handle) = dozor_gate::start(cfg, Arc::new(Everyone), cancel.clone())
        .await
        .expect("gate starts");
    let before = open_descriptors();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut tcp = TcpStream::connect(addr).await.expect("connects");
        let mut out = bytes::BytesMut::new();
        Packet::Connect(Connect::new(format!("pc-{i}")))
            .write(&mut out, usize::MAX)
            .expect("encodes");
        tcp.write_all(&out).await.expect("sent");
        let mut connack = [0u8; 4];
        timeout(Duration::from_secs(10), tcp.read_exact(&mut connack))
            .await
            .expect("CONNACK in time")
            .expect("CONNACK");
        assert_eq!(connack, [0x20, 2, 0, 0], "the broker accepted pc-{i}");
        clients.push(tcp);
    }
    let added = open_descriptors() - before;
    assert!(
        added <= 2 * CLIENTS + 5,
        "{added} descriptors for {CLIENTS} piped clients"
    );
    assert_eq!(handle.stats().connections_open(), CLIENTS as u64);
    cancel.cancel();
    handle.stopped().await;
}
