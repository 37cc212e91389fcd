//! The gate between real rumqttc clients and a real rumqttd: admission, topic rules, limits,
//! TLS, revocation and shutdown.

use bytes::BytesMut;
use dozor_gate::{
    Authorizer, GateConfig, GateHandle, GateStats, Grant, InProcess, Reason, Refusal, Upstream,
};
use rumqttc::mqttbytes::v4::{Connect, Packet as RawPacket, Publish as RawPublish};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, Publish,
    QoS, TlsConfiguration, Transport,
};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

mod common;
use common::start_broker;

/// Longest any single wait in these tests may take before it counts as a failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// Users are named like their client id; the password is `<name>-pw`; `disabled` is refused.
/// Each may publish under `dozor/v1/<name>/#` and subscribe to `dozor/cmd/<name>`.
#[derive(Default)]
struct TestAuth {
    revoked: Mutex<HashSet<String>>,
}

impl TestAuth {
    fn revoke(&self, identity: &str) {
        self.revoked
            .lock()
            .expect("not poisoned")
            .insert(identity.into());
    }
}

impl Authorizer for TestAuth {
    fn connect(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Grant, Refusal> {
        let user = username.ok_or(Refusal::NotAuthorized)?;
        if password != Some(format!("{user}-pw").as_bytes()) {
            return Err(Refusal::BadCredentials);
        }
        if user == "disabled" || client_id != user {
            return Err(Refusal::NotAuthorized);
        }
        Ok(Grant {
            identity: user.into(),
            publish: vec![format!("dozor/v1/{user}/#")],
            subscribe: vec![format!("dozor/cmd/{user}")],
        })
    }

    fn still_valid(&self, grant: &Grant) -> bool {
        !self
            .revoked
            .lock()
            .expect("not poisoned")
            .contains(&grant.identity)
    }
}

/// A gate in front of its own rumqttd; cancelled on drop.
struct TestGate {
    addr: SocketAddr,
    broker: SocketAddr,
    handle: GateHandle,
    auth: Arc<TestAuth>,
    cancel: CancellationToken,
}

impl Drop for TestGate {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How the gate reaches its broker in a test.
#[derive(Clone, Copy, Debug)]
enum Via {
    Tcp,
    /// In-memory pipes of this many bytes, handed to rumqttd's `Connector`.
    Pipe(usize),
}

impl TestGate {
    /// A gate reaching its broker over TCP.
    async fn start(adjust: impl FnOnce(&mut GateConfig)) -> TestGate {
        TestGate::start_via(Via::Tcp, adjust).await
    }

    async fn start_via(via: Via, adjust: impl FnOnce(&mut GateConfig)) -> TestGate {
        let (broker, connector) = start_broker();
        let upstream = match via {
            Via::Tcp => Upstream::Tcp(broker),
            Via::Pipe(buffer) => Upstream::InProcess(InProcess {
                buffer,
                hand_over: Arc::new(move |pipe| connector.connect(pipe)),
            }),
        };
        let mut cfg = GateConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), upstream);
        adjust(&mut cfg);
        let auth = Arc::new(TestAuth::default());
        let cancel = CancellationToken::new();
        let (addr, handle) = dozor_gate::start(cfg, auth.clone(), cancel.clone())
            .await
            .expect("gate starts");
        TestGate {
            addr,
            broker,
            handle,
            auth,
            cancel,
        }
    }

    fn stats(&self) -> Arc<GateStats> {
        self.handle.stats()
    }

    /// Options for `name` connecting through the gate with the right password.
    fn options(&self, name: &str) -> MqttOptions {
        let mut opts = MqttOptions::new(name, self.addr.ip().to_string(), self.addr.port());
        opts.set_credentials(name, format!("{name}-pw"));
        opts
    }

    async fn client(&self, name: &str) -> Client {
        Client::connect(self.options(name)).await.expect("admitted")
    }

    /// A client straight on the broker, subscribed to `filter`.
    async fn watcher(&self, filter: &str) -> Client {
        let opts = MqttOptions::new("watcher", self.broker.ip().to_string(), self.broker.port());
        let mut watcher = Client::connect(opts).await.expect("broker accepts");
        watcher.subscribe(filter).await;
        watcher
    }

    /// Waits until `reason` was counted `n` times.
    async fn wait_count(&self, reason: Reason, n: u64) {
        let stats = self.stats();
        wait_for(&format!("{} == {n}", reason.as_str()), || {
            stats.count(reason) == n
        })
        .await;
    }
}

/// Polls `cond` every 10 ms until it holds; panics after `PATIENCE`.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A rumqttc client whose event loop runs in the background until its first error.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
}

impl Client {
    /// Connects and waits for the CONNACK; the refusal or connection error otherwise.
    async fn connect(opts: MqttOptions) -> Result<Client, ConnectionError> {
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let connack = timeout(PATIENCE, async {
            loop {
                match eventloop.poll().await? {
                    Event::Incoming(Packet::ConnAck(_)) => return Ok::<(), ConnectionError>(()),
                    _ => continue,
                }
            }
        })
        .await
        .expect("CONNACK or error in time");
        connack?;
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Client { client, events })
    }

    async fn next_event(&mut self) -> Result<Event, ConnectionError> {
        timeout(PATIENCE, self.events.recv())
            .await
            .expect("event in time")
            .expect("event loop alive")
    }

    /// Subscribes and waits for the SUBACK.
    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queued");
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = self.next_event().await.expect("connected")
            {
                return;
            }
        }
    }

    async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("queued");
    }

    async fn next_publish(&mut self) -> Publish {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = self.next_event().await.expect("connected")
            {
                return p;
            }
        }
    }

    /// Waits for the connection to fail (the gate closing it).
    async fn disconnected(&mut self) -> ConnectionError {
        loop {
            if let Err(e) = self.next_event().await {
                return e;
            }
        }
    }
}

/// Asserts that `stream` is closed by the other side within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) {
    let mut byte = [0u8; 1];
    match timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("unexpected bytes from the gate"),
        Err(_) => panic!("still open after {within:?}"),
    }
}

fn encode(packet: &RawPacket) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.write(&mut buf, usize::MAX).expect("encodes");
    buf
}

#[tokio::test]
async fn allowed_publish_reaches_the_broker() {
    let gate = TestGate::start(|_| {}).await;
    let mut watcher = gate.watcher("dozor/#").await;
    let pc = gate.client("pc-1").await;
    pc.publish("dozor/v1/pc-1/metrics", "hello").await;
    let got = watcher.next_publish().await;
    assert_eq!(got.topic, "dozor/v1/pc-1/metrics");
    assert_eq!(&got.payload[..], b"hello");
    assert_eq!(gate.stats().connections_open(), 1);
    assert_eq!(gate.stats().connections_pending(), 0);
}

#[tokio::test]
async fn allowed_subscription_receives_from_the_broker() {
    let gate = TestGate::start(|_| {}).await;
    let mut pc = gate.client("pc-1").await;
    pc.subscribe("dozor/cmd/pc-1").await;
    let commander = gate.watcher("unused").await;
    commander.publish("dozor/cmd/pc-1", "reboot").await;
    let got = pc.next_publish().await;
    assert_eq!(got.topic, "dozor/cmd/pc-1");
    assert_eq!(&got.payload[..], b"reboot");
}

#[tokio::test]
async fn wrong_password_and_disabled_are_refused() {
    let gate = TestGate::start(|_| {}).await;
    let mut opts = gate.options("pc-1");
    opts.set_credentials("pc-1", "wrong");
    match Client::connect(opts).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)) => {}
        other => panic!("expected refusal 4, got {:?}", other.err()),
    }
    match Client::connect(gate.options("disabled")).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        other => panic!("expected refusal 5, got {:?}", other.err()),
    }
    gate.wait_count(Reason::BadCredentials, 1).await;
    gate.wait_count(Reason::NotAuthorized, 1).await;
    wait_for("no connection left", || {
        gate.stats().connections_open() == 0
    })
    .await;
}

#[tokio::test]
async fn publish_outside_the_grant_disconnects_and_never_reaches_the_broker() {
    let gate = TestGate::start(|_| {}).await;
    let mut watcher = gate.watcher("dozor/#").await;
    let mut pc = gate.client("pc-1").await;
    pc.publish("dozor/v1/pc-2/metrics", "forged").await;
    pc.disconnected().await;
    gate.wait_count(Reason::AclPublish, 1).await;
    // A marker published after the disconnect is the first thing the watcher sees.
    let other = gate.client("pc-3").await;
    other.publish("dozor/v1/pc-3/metrics", "marker").await;
    let got = watcher.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("dozor/v1/pc-3/metrics", &b"marker"[..])
    );
}

#[tokio::test]
async fn subscribe_outside_the_grant_disconnects() {
    let gate = TestGate::start(|_| {}).await;
    let mut pc = gate.client("pc-1").await;
    pc.client
        .subscribe("dozor/cmd/#", QoS::AtLeastOnce)
        .await
        .expect("queued");
    pc.disconnected().await;
    gate.wait_count(Reason::AclSubscribe, 1).await;
}

#[tokio::test]
async fn will_outside_the_grant_is_refused() {
    let gate = TestGate::start(|_| {}).await;
    let mut opts = gate.options("pc-1");
    opts.set_last_will(LastWill::new(
        "dozor/v1/pc-2/status",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    match Client::connect(opts).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        other => panic!("expected refusal 5, got {:?}", other.err()),
    }
    gate.wait_count(Reason::AclWill, 1).await;
    // The same client with its own will topic is admitted.
    let mut opts = gate.options("pc-1");
    opts.set_last_will(LastWill::new(
        "dozor/v1/pc-1/status",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    Client::connect(opts).await.expect("admitted");
}

#[tokio::test]
async fn oversized_publish_disconnects_before_its_body_arrives() {
    let gate = TestGate::start(|cfg| cfg.max_packet_size = 1024).await;
    let mut tcp = TcpStream::connect(gate.addr).await.expect("connects");
    let mut connect = Connect::new("pc-1");
    connect.set_login("pc-1", "pc-1-pw");
    tcp.write_all(&encode(&RawPacket::Connect(connect)))
        .await
        .expect("sent");
    let mut connack = [0u8; 4];
    timeout(PATIENCE, tcp.read_exact(&mut connack))
        .await
        .expect("in time")
        .expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    // A PUBLISH announcing 10 MB; only its first bytes are ever sent. The gate must close on the
    // header alone: had it waited for the body, this read would time out.
    let ten_mb = 10 * 1024 * 1024;
    let mut header = vec![0x30];
    let mut len = ten_mb;
    while len > 0 {
        let byte = (len % 128) as u8;
        len /= 128;
        header.push(if len > 0 { byte | 0x80 } else { byte });
    }
    header.extend_from_slice(&[0, 3, b'a', b'/', b'b']);
    tcp.write_all(&header).await.expect("sent");
    closed_within(&mut tcp, Duration::from_secs(3)).await;
    gate.wait_count(Reason::Oversized, 1).await;

    // Through rumqttc too: a 2 KiB payload disconnects and never reaches the broker.
    let mut watcher = gate.watcher("dozor/#").await;
    let mut pc = gate.client("pc-1").await;
    pc.publish("dozor/v1/pc-1/big", &"x".repeat(2048)).await;
    pc.disconnected().await;
    gate.wait_count(Reason::Oversized, 2).await;
    let pc = gate.client("pc-1").await;
    pc.publish("dozor/v1/pc-1/small", "marker").await;
    assert_eq!(watcher.next_publish().await.topic, "dozor/v1/pc-1/small");
}

#[tokio::test]
async fn idle_connections_without_connect_are_closed_in_time() {
    let connect_timeout = Duration::from_millis(500);
    let gate = TestGate::start(|cfg| cfg.connect_timeout = connect_timeout).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(gate.addr).await.expect("connects"));
    }
    let readers: Vec<_> = idle
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move {
                closed_within(&mut tcp, PATIENCE).await;
                Instant::now()
            })
        })
        .collect();
    for reader in readers {
        let closed_at = reader.await.expect("closed, not panicked");
        // Each was accepted after `started`, so is closed by `connect_timeout` after that plus
        // the time to open the rest; a second of slack covers a loaded 2-core machine.
        assert!(
            closed_at - started < connect_timeout + Duration::from_secs(1),
            "closed after {:?}",
            closed_at - started
        );
    }
    gate.wait_count(Reason::ConnectTimeout, 300).await;
    let stats = gate.stats();
    wait_for("gauges back to 0", || {
        stats.connections_open() == 0 && stats.connections_pending() == 0
    })
    .await;
}

/// The CONNECT deadline to the millisecond, in paused time (tokio's test clock): the gate's
/// timer is the only one due, so the runtime jumps to it, and the connection must close exactly
/// then: not before `connect_timeout`, and not waiting for anything after it.
#[tokio::test]
async fn the_connect_deadline_is_exact_in_paused_time() {
    let connect_timeout = Duration::from_secs(30);
    let gate = TestGate::start(|cfg| cfg.connect_timeout = connect_timeout).await;
    // From here the clock moves only when every task waits on a timer.
    tokio::time::pause();
    let started = Instant::now();
    let mut idle = TcpStream::connect(gate.addr).await.expect("connects");
    closed_within(&mut idle, PATIENCE * 10).await;
    let took = started.elapsed();
    assert!(
        took >= connect_timeout && took < connect_timeout + Duration::from_millis(100),
        "closed after {took:?} of test time"
    );
    tokio::time::resume();
    gate.wait_count(Reason::ConnectTimeout, 1).await;
}

#[tokio::test]
async fn pending_connections_beyond_max_pending_are_closed_at_once() {
    let gate = TestGate::start(|cfg| {
        cfg.max_pending = 10;
        cfg.connect_timeout = Duration::from_secs(60);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..25 {
        idle.push(TcpStream::connect(gate.addr).await.expect("connects"));
    }
    gate.wait_count(Reason::OverPending, 15).await;
    assert_eq!(gate.stats().connections_pending(), 10);
    // A real client is turned away too while the pending slots are taken...
    assert!(Client::connect(gate.options("pc-1")).await.is_err());
    gate.wait_count(Reason::OverPending, 16).await;
    // ...and admitted once the idle ones hang up.
    drop(idle);
    let stats = gate.stats();
    wait_for("pending back to 0", || stats.connections_pending() == 0).await;
    gate.client("pc-1").await;
    assert_eq!(stats.count(Reason::ConnectTimeout), 0);
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let gate = TestGate::start(|cfg| cfg.max_connections = 2).await;
    let first = gate.client("pc-1").await;
    let _second = gate.client("pc-2").await;
    let mut third = TcpStream::connect(gate.addr).await.expect("accepted");
    closed_within(&mut third, Duration::from_secs(2)).await;
    gate.wait_count(Reason::OverCapacity, 1).await;
    assert_eq!(gate.stats().connections_open(), 2);
    // A freed place is usable again.
    first.client.disconnect().await.expect("queued");
    let stats = gate.stats();
    wait_for("one connection left", || stats.connections_open() == 1).await;
    gate.client("pc-3").await;
}

#[tokio::test]
async fn garbage_instead_of_connect_is_a_protocol_error() {
    let gate = TestGate::start(|_| {}).await;
    let mut tcp = TcpStream::connect(gate.addr).await.expect("connects");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("sent");
    closed_within(&mut tcp, Duration::from_secs(2)).await;
    gate.wait_count(Reason::ProtocolError, 1).await;
    // A PUBLISH before CONNECT is one too.
    let mut tcp = TcpStream::connect(gate.addr).await.expect("connects");
    let publish = RawPublish::new("dozor/v1/pc-1/m", rumqttc::mqttbytes::QoS::AtMostOnce, "x");
    tcp.write_all(&encode(&RawPacket::Publish(publish)))
        .await
        .expect("sent");
    closed_within(&mut tcp, Duration::from_secs(2)).await;
    gate.wait_count(Reason::ProtocolError, 2).await;
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test]
async fn tls_clients_connect_through_the_gate() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let cert_der = cert.cert.der().clone();
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let server = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key.into())
        .expect("server config");
    let gate = TestGate::start(|cfg| cfg.tls = Some(Arc::new(server))).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut watcher = gate.watcher("dozor/#").await;
    let mut opts = gate.options("pc-1");
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(client),
    )));
    let pc = Client::connect(opts).await.expect("admitted over TLS");
    pc.publish("dozor/v1/pc-1/metrics", "secure").await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"secure");

    // Plain MQTT on the TLS port fails the handshake.
    assert!(Client::connect(gate.options("pc-2")).await.is_err());
    gate.wait_count(Reason::TlsError, 1).await;
}

#[tokio::test]
async fn tls_handshake_counts_against_connect_timeout() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let server = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())
        .expect("server config");
    let gate = TestGate::start(|cfg| {
        cfg.tls = Some(Arc::new(server));
        cfg.connect_timeout = Duration::from_millis(300);
    })
    .await;
    // Half a ClientHello record header, then silence.
    let mut tcp = TcpStream::connect(gate.addr).await.expect("connects");
    tcp.write_all(&[0x16, 0x03]).await.expect("sent");
    closed_within(&mut tcp, Duration::from_secs(2)).await;
    gate.wait_count(Reason::ConnectTimeout, 1).await;
}

#[tokio::test]
async fn recheck_drops_revoked_identities_only() {
    let gate = TestGate::start(|_| {}).await;
    let mut watcher = gate.watcher("dozor/#").await;
    let mut revoked = gate.client("pc-1").await;
    let kept = gate.client("pc-2").await;
    gate.auth.revoke("pc-1");
    gate.handle.recheck();
    revoked.disconnected().await;
    gate.wait_count(Reason::Revoked, 1).await;
    kept.publish("dozor/v1/pc-2/metrics", "still here").await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"still here");
    // A revoked identity reconnecting is the authorizer's business; the gate only asked.
    assert_eq!(gate.stats().connections_open(), 1);
}

#[tokio::test]
async fn cancellation_closes_connections_and_stops_accepting() {
    let gate = TestGate::start(|_| {}).await;
    let mut pc = gate.client("pc-1").await;
    let mut idle = TcpStream::connect(gate.addr).await.expect("connects");
    let stats = gate.stats();
    wait_for("both accepted", || stats.connections_open() == 2).await;
    gate.cancel.cancel();
    pc.disconnected().await;
    closed_within(&mut idle, Duration::from_secs(2)).await;
    timeout(PATIENCE, gate.handle.stopped())
        .await
        .expect("stopped in time");
    assert_eq!(stats.connections_open(), 0);
    assert!(
        TcpStream::connect(gate.addr).await.is_err(),
        "listener closed"
    );
}

/// A client of `gate` is refused with "server unavailable" (3), counted as an upstream error.
async fn refused_as_unavailable(gate: &TestGate) {
    match Client::connect(gate.options("pc-1")).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable)) => {}
        other => panic!("expected refusal 3, got {:?}", other.err()),
    }
    gate.wait_count(Reason::UpstreamError, 1).await;
}

#[tokio::test]
async fn unreachable_broker_refuses_with_server_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let closed_addr = closed.local_addr().expect("bound");
    drop(closed);
    let gate = TestGate::start(|cfg| cfg.upstream = closed_addr.into()).await;
    refused_as_unavailable(&gate).await;
}

/// A replay window that the subscriber never drains holds back the replaying client's next
/// replay publish, never another client's live ones (the collector reads replays on a session
/// of its own: a replay storm must not delay live heartbeats at the gate).
#[tokio::test]
async fn a_full_replay_window_holds_back_replays_not_live_publishes() {
    replay_window_holds_back_replays_only(Via::Tcp).await;
}

/// The same through in-process pipes.
#[tokio::test]
async fn a_full_replay_window_holds_back_piped_replays_not_live_publishes() {
    replay_window_holds_back_replays_only(Via::Pipe(64 * 1024)).await;
}

async fn replay_window_holds_back_replays_only(via: Via) {
    use dozor_gate::{Backlog, ReplayWindow};
    let window = |limit| {
        Backlog::new(
            limit,
            Duration::from_secs(3600),
            Box::new(|| 0),
            Box::new(|| true),
        )
    };
    let replay = window(64);
    let gate = TestGate::start_via(via, |c| {
        c.backlog = Some(window(1 << 20));
        c.replay = Some(ReplayWindow {
            backlog: replay.clone(),
            matches: |t| t.ends_with("-replay"),
        });
    })
    .await;
    let mut watcher = gate.watcher("dozor/#").await;
    let replaying = gate.client("pc-1").await;
    for i in 0..3 {
        replaying
            .publish(
                "dozor/v1/pc-1/hb-replay",
                &format!("old {i} {}", "x".repeat(64)),
            )
            .await;
    }
    let first = watcher.next_publish().await;
    assert_eq!(first.topic, "dozor/v1/pc-1/hb-replay");
    wait_for("the replay window full", || !replay.has_room()).await;
    let live = gate.client("pc-2").await;
    live.publish("dozor/v1/pc-2/hb", "now").await;
    replaying.publish("dozor/v1/pc-1/hb", "also now").await;
    let next = watcher.next_publish().await;
    assert_eq!(
        (next.topic.as_str(), &next.payload[..]),
        ("dozor/v1/pc-2/hb", &b"now"[..]),
        "another client's live publish passes the full replay window"
    );
}

/// Both ways through in-memory pipes to the broker: a publish reaches a subscriber on the
/// broker's TCP listener, and the broker's publish reaches the gate's client. The pipe is small
/// (1 KiB) and the payloads larger, so they cross it in several writes each way.
#[tokio::test]
async fn in_process_pipes_carry_both_ways() {
    let gate = TestGate::start_via(Via::Pipe(1024), |_| {}).await;
    let mut watcher = gate.watcher("dozor/#").await;
    let mut pc = gate.client("pc-1").await;
    pc.subscribe("dozor/cmd/pc-1").await;
    let up = "u".repeat(5000);
    pc.publish("dozor/v1/pc-1/metrics", &up).await;
    let got = watcher.next_publish().await;
    assert_eq!(got.topic, "dozor/v1/pc-1/metrics");
    assert_eq!(got.payload.len(), up.len());
    let down = "d".repeat(5000);
    watcher.publish("dozor/cmd/pc-1", &down).await;
    assert_eq!(pc.next_publish().await.payload.len(), down.len());
    assert_eq!(gate.stats().connections_open(), 1);
}

/// Connects `name` through the gate with a will on its status topic, raw, so that the test can
/// drop the socket without a DISCONNECT.
async fn raw_client_with_will(gate: &TestGate, name: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(gate.addr).await.expect("connects");
    let mut connect = Connect::new(name);
    connect.set_login(name, format!("{name}-pw"));
    connect.last_will = Some(rumqttc::mqttbytes::v4::LastWill::new(
        format!("dozor/v1/{name}/status"),
        "gone",
        rumqttc::mqttbytes::QoS::AtLeastOnce,
        false,
    ));
    tcp.write_all(&encode(&RawPacket::Connect(connect)))
        .await
        .expect("sent");
    let mut connack = [0u8; 4];
    timeout(PATIENCE, tcp.read_exact(&mut connack))
        .await
        .expect("in time")
        .expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    tcp
}

/// Waits for the will of `name` at `watcher`.
async fn will_of(watcher: &mut Client, name: &str) {
    let got = watcher.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (format!("dozor/v1/{name}/status").as_str(), &b"gone"[..])
    );
}

/// However a client's connection ends at the gate, the broker's in-process end closes with it
/// and the client's will is published: the client hanging up, the gate closing it for a
/// forbidden packet, its identity revoked, the gate stopping.
#[tokio::test]
async fn every_way_a_piped_connection_ends_fires_its_will() {
    let gate = TestGate::start_via(Via::Pipe(64 * 1024), |_| {}).await;
    let mut watcher = gate.watcher("dozor/v1/+/status").await;

    let hung_up = raw_client_with_will(&gate, "pc-1").await;
    drop(hung_up);
    will_of(&mut watcher, "pc-1").await;

    let mut forbidden = raw_client_with_will(&gate, "pc-2").await;
    let publish = RawPublish::new("dozor/v1/pc-9/m", rumqttc::mqttbytes::QoS::AtMostOnce, "x");
    forbidden
        .write_all(&encode(&RawPacket::Publish(publish)))
        .await
        .expect("sent");
    will_of(&mut watcher, "pc-2").await;
    gate.wait_count(Reason::AclPublish, 1).await;

    let _revoked = raw_client_with_will(&gate, "pc-3").await;
    gate.auth.revoke("pc-3");
    gate.handle.recheck();
    will_of(&mut watcher, "pc-3").await;

    let _stopped = raw_client_with_will(&gate, "pc-4").await;
    gate.cancel.cancel();
    will_of(&mut watcher, "pc-4").await;
    timeout(PATIENCE, gate.handle.stopped())
        .await
        .expect("stopped in time");
}

/// A broker that takes no more pipes (stopped) refuses clients as an unreachable one does.
#[tokio::test]
async fn a_broker_refusing_the_pipe_refuses_with_server_unavailable() {
    let gate = TestGate::start(|cfg| {
        cfg.upstream = Upstream::InProcess(InProcess {
            buffer: 4096,
            hand_over: Arc::new(|_| Err(std::io::ErrorKind::NotConnected.into())),
        });
    })
    .await;
    refused_as_unavailable(&gate).await;
}

/// The backlog window bounds what a client forwards through its pipe as it did through a
/// socket: with the subscriber taking nothing, the publishes counted until the window was full
/// reach the broker and no more; once the subscriber has taken them, the rest follow.
#[tokio::test]
async fn the_backlog_window_holds_back_publishes_through_pipes() {
    use dozor_gate::Backlog;
    use std::sync::atomic::{AtomicU64, Ordering};
    let taken = Arc::new(AtomicU64::new(0));
    let drained = taken.clone();
    // Each publish counts 15 topic + 100 payload bytes: the 3rd fills 300 bytes.
    let window = Backlog::new(
        300,
        Duration::from_secs(3600),
        Box::new(move || drained.load(Ordering::Relaxed)),
        Box::new(|| true),
    );
    let gate =
        TestGate::start_via(Via::Pipe(64 * 1024), |c| c.backlog = Some(window.clone())).await;
    let mut watcher = gate.watcher("dozor/#").await;
    let pc = gate.client("pc-1").await;
    for i in 0..10 {
        pc.publish("dozor/v1/pc-1/m", &format!("{i:0>100}")).await;
    }
    for _ in 0..3 {
        watcher.next_publish().await;
    }
    assert!(
        timeout(Duration::from_millis(500), watcher.next_publish())
            .await
            .is_err(),
        "a 4th publish passed the full window"
    );
    assert_eq!(window.owed(), 345);
    // The subscriber takes what it received, as the collector counts it.
    taken.store(345, Ordering::Relaxed);
    for _ in 3..10 {
        watcher.next_publish().await;
        taken.fetch_add(115, Ordering::Relaxed);
    }
}
