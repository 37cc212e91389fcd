//! Trust on MQTT (issue 9): an attacker at one clinic PC, with its own enrolled identity or
//! none, against a real collector in enrolled mode — the embedded broker behind its gateway,
//! and Mosquitto (with and without ACLs). Every attack is refused with its reason counted on
//! /metrics, and a victim host's real data keeps arriving.
//!
//! `SimAgent` (`dozor_tests::enrolled`) enrolls over the collector's real HTTP endpoint and
//! signs exactly as the agent does, so each test controls what the attacker sends byte for byte.

use dozor_proto::auth::{Secret, sign};
use dozor_proto::{ConnState, Envelope, Role, SCHEMA_VERSION, State, client_id, topic, username};
use dozor_tests::enrolled::{SimAgent, connect, connect_when_accepted, enroll, token};
use dozor_tests::*;
use rumqttc::{Event, MqttOptions, Packet, QoS};
use std::process::{Command, Stdio};
use std::time::Duration;

const MO_A: &str = "1.2.643.5.1.13.13.12.2.27.11";
const MO_B: &str = "1.2.643.5.1.13.13.12.2.27.22";

fn now_ms() -> i64 {
    unix_ms()
}

/// Revokes an identity with the collector's CLI (as a region admin would).
fn revoke(data_dir: &std::path::Path, a: &SimAgent) {
    let status = Command::new(bin("dozor-collector"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["agent", "revoke", &format!("{}/{}", a.mo, a.host)])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "agent revoke failed");
}

fn start_enrolled(broker: &Broker, dir: &std::path::Path) -> Collector {
    Collector::start(broker, dir, &["--security-mode", "enrolled"])
}

async fn wait_metric(c: &Collector, series: &str, at_least: f64) -> f64 {
    wait_for(Duration::from_secs(15), || async {
        let v = c.metric(series).await;
        (v >= at_least).then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("{series} did not reach {at_least}"))
}

async fn accepted_hb(c: &Collector) -> f64 {
    c.metric("dozor_messages_accepted_total{kind=\"hb\"}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_wrong_logins_are_refused_at_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_enrolled(&Broker::Embedded(0), dir.path());
    // mosquitto_pub as an anonymous client on a clinic PC.
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &c.mqtt_port.to_string()])
        .args(["-t", "dozor/v1/x/y/hb", "-m", "{}", "-q", "1"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!out.success(), "anonymous publish must be refused");
    // A subscriber to everything gets nowhere either.
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &c.mqtt_port.to_string()])
        .args(["-t", "dozor/v1/#", "-C", "1", "-W", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!out.success(), "anonymous subscribe must be refused");
    wait_metric(
        &c,
        "dozor_mqtt_gate_closed_total{reason=\"bad_credentials\"}",
        2.0,
    )
    .await;
    // An enrolled identity with a guessed password, and with the right one but someone else's
    // client id (which would take over that host's session).
    let t = token(dir.path(), MO_A, &[]);
    let a = SimAgent::enroll(&c, &t, "pc-a").await;
    let mut o = a.options(c.mqtt_port);
    o.set_credentials(username(&a.mo, &a.host), "guess");
    assert!(!connect(o).await.connected().await);
    let mut o = a.options(c.mqtt_port);
    o.set_client_id(client_id(&a.mo, "pc-other"));
    assert!(!connect(o).await.connected().await);
    wait_metric(
        &c,
        "dozor_mqtt_gate_closed_total{reason=\"not_authorized\"}",
        1.0,
    )
    .await;
    assert!(connect(a.options(c.mqtt_port)).await.connected().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_cannot_publish_for_another_host_or_mo_nor_write_acks() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_enrolled(&Broker::Embedded(0), dir.path());
    let mut a = SimAgent::enroll(&c, &token(dir.path(), MO_A, &[]), "pc-a").await;
    let mut b = SimAgent::enroll(&c, &token(dir.path(), MO_B, &[]), "srv-b").await;
    let mut vb = connect(b.options(c.mqtt_port)).await;
    assert!(vb.connected().await);
    vb.publish(b.birth(Role::Server), true).await;
    vb.publish(b.hb(), false).await;
    wait_for(Duration::from_secs(10), || async {
        c.host(&b.host).await.filter(|h| h["state"] == "online")
    })
    .await
    .expect("victim online");

    // The attacker forges the victim's `offline/shutdown` (hides a real crash), with its own
    // key, through the gateway: disconnected, nothing reaches the collector.
    let mut att = connect(a.options(c.mqtt_port)).await;
    assert!(att.connected().await);
    att.publish(a.state_for(&b.mo, &b.host, ConnState::Offline), true)
        .await;
    assert!(
        att.dropped(Duration::from_secs(5)).await,
        "gateway must cut it"
    );
    // Same for a made-up host in the attacker's own МО, and for the victim's ack topic.
    let mut att = connect(a.options(c.mqtt_port)).await;
    assert!(att.connected().await);
    att.publish(a.state_for(&a.mo, "made-up-1", ConnState::Online), false)
        .await;
    assert!(att.dropped(Duration::from_secs(5)).await);
    let mut att = connect(a.options(c.mqtt_port)).await;
    assert!(att.connected().await);
    att.client
        .publish(
            topic(&b.mo, &b.host, dozor_proto::Kind::Ack),
            QoS::AtLeastOnce,
            true,
            b"{\"v\":1,\"inst\":\"x\",\"acked_seq\":99999999,\"ts\":1}".to_vec(),
        )
        .await
        .unwrap();
    assert!(att.dropped(Duration::from_secs(5)).await);
    // The victim's replay topic too: a forged backlog for another host.
    let mut att = connect(a.options(c.mqtt_port)).await;
    assert!(att.connected().await);
    att.publish(a.hb_replay_for(&b.mo, &b.host), false).await;
    assert!(att.dropped(Duration::from_secs(5)).await);
    // Reading the whole region is refused too.
    let mut att = connect(a.options(c.mqtt_port)).await;
    assert!(att.connected().await);
    att.client
        .subscribe("dozor/v1/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(att.dropped(Duration::from_secs(5)).await);
    // QoS 2 on its own topic: rumqttd would hold it unbounded until a PUBREL that never comes,
    // while the gate's backlog counted it owed to the collector (one PC could pause every
    // agent's socket). Cut at the first such packet.
    let mut att = connect(a.options(c.mqtt_port)).await;
    assert!(att.connected().await);
    att.client
        .publish(
            topic(&a.mo, &a.host, dozor_proto::Kind::Hb),
            QoS::ExactlyOnce,
            false,
            vec![b'x'; 8 * 1024],
        )
        .await
        .unwrap();
    assert!(att.dropped(Duration::from_secs(5)).await);
    wait_metric(
        &c,
        "dozor_mqtt_gate_closed_total{reason=\"protocol_error\"}",
        1.0,
    )
    .await;

    wait_metric(
        &c,
        "dozor_mqtt_gate_closed_total{reason=\"acl_publish\"}",
        4.0,
    )
    .await;
    wait_metric(
        &c,
        "dozor_mqtt_gate_closed_total{reason=\"acl_subscribe\"}",
        1.0,
    )
    .await;
    // The victim still reads online and is still heard; the made-up host does not exist.
    let before = accepted_hb(&c).await;
    vb.publish(b.hb(), false).await;
    wait_metric(
        &c,
        "dozor_messages_accepted_total{kind=\"hb\"}",
        before + 1.0,
    )
    .await;
    let h = c.host(&b.host).await.unwrap();
    assert_eq!(h["state"], "online", "{h}");
    assert_eq!(h["role"], "server");
    assert!(c.host("made-up-1").await.is_none());
    // The attacker's own data is still welcome, its own replayed backlog included.
    let mut own = connect(a.options(c.mqtt_port)).await;
    assert!(own.connected().await);
    own.publish(a.hb(), false).await;
    let (mo, host) = (a.mo.clone(), a.host.clone());
    own.publish(a.hb_replay_for(&mo, &host), false).await;
    wait_metric(
        &c,
        "dozor_messages_accepted_total{kind=\"hb\"}",
        before + 3.0,
    )
    .await;
    assert!(c.metric("dozor_messages_replayed_total").await >= 1.0);
}

/// A broker that lets anyone publish anything (Mosquitto without ACLs): the collector's own
/// checks still refuse every forgery, and a real host's data is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_broker_forgeries_fail_end_to_end() {
    let m = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let c = start_enrolled(&Broker::External(m.url()), dir.path());
    let mut a = SimAgent::enroll(&c, &token(dir.path(), MO_A, &[]), "pc-a").await;
    let mut b = SimAgent::enroll(&c, &token(dir.path(), MO_B, &[]), "srv-b").await;
    let mut anon_o = MqttOptions::new("anon", "127.0.0.1", m.port);
    anon_o.set_keep_alive(Duration::from_secs(30));
    let mut anon = connect(anon_o).await;
    assert!(anon.connected().await);
    let mut vb = connect(b.options(m.port)).await;
    assert!(vb.connected().await);
    vb.publish(b.birth(Role::Server), true).await;
    for _ in 0..3 {
        vb.publish(b.hb(), false).await;
    }
    wait_metric(&c, "dozor_messages_accepted_total{kind=\"hb\"}", 3.0).await;
    wait_for(Duration::from_secs(10), || async {
        c.host(&b.host).await.filter(|h| h["state"] == "online")
    })
    .await
    .expect("victim online");

    // Unsigned forgery of the victim's state.
    let unsigned = serde_json::to_vec(&Envelope {
        v: SCHEMA_VERSION,
        mo: b.mo.clone(),
        host: b.host.clone(),
        inst: b.inst.clone(),
        seq: 1,
        ts: now_ms(),
        replay: false,
        body: State {
            state: ConnState::Offline,
            reason: Some("shutdown".into()),
        },
    })
    .unwrap();
    anon.publish(
        (topic(&b.mo, &b.host, dozor_proto::Kind::State), unsigned),
        false,
    )
    .await;
    // Signed by the attacker's own identity, on the victim's topic.
    anon.publish(a.state_for(&b.mo, &b.host, ConnState::Offline), false)
        .await;
    // Made-up hosts (unenrolled), a thousand of them: none may take a place.
    for i in 0..1000 {
        let mut fake = SimAgent {
            mo: MO_B.into(),
            host: format!("fake-{i}"),
            secret: Secret([9; 32]),
            inst: format!("f{i}"),
            seq: 0,
        };
        anon.publish(fake.hb(), false).await;
    }
    // The attacker's own heartbeat claiming the victim's `inst` with an absurd oldest_seq: it
    // may only move the attacker's own delivery marks.
    let json = a.hb_json(
        &a.mo.clone(),
        &a.host.clone(),
        &b.inst.clone(),
        Some(1_000_000_000_000),
    );
    let t = topic(&a.mo, &a.host, dozor_proto::Kind::Hb);
    anon.publish((t.clone(), sign(&a.key(), &t, &json)), false)
        .await;
    // 700 forged heartbeats on the victim's topic (its budget is 600 a minute): refused before
    // admission, so they cannot spend it.
    for _ in 0..700 {
        let mut forged = SimAgent {
            mo: b.mo.clone(),
            host: b.host.clone(),
            secret: Secret([8; 32]),
            inst: b.inst.clone(),
            seq: 1_000_000,
        };
        anon.publish(forged.hb(), false).await;
    }

    wait_metric(
        &c,
        "dozor_messages_rejected_total{reason=\"unsigned\"}",
        1.0,
    )
    .await;
    wait_metric(
        &c,
        "dozor_messages_rejected_total{reason=\"bad_mac\"}",
        701.0,
    )
    .await;
    wait_metric(
        &c,
        "dozor_messages_rejected_total{reason=\"unenrolled\"}",
        1000.0,
    )
    .await;
    let all = c.get("/api/v1/hosts").await;
    let h = c
        .host(&b.host)
        .await
        .unwrap_or_else(|| panic!("victim unknown: {all}"));
    assert_eq!(h["state"], "online", "forged offline must not apply: {h}");
    // Every later heartbeat of the victim is still new data, not a "duplicate".
    let before = accepted_hb(&c).await;
    let dups = c.metric("dozor_messages_duplicate_total").await;
    for _ in 0..5 {
        vb.publish(b.hb(), false).await;
    }
    wait_metric(
        &c,
        "dozor_messages_accepted_total{kind=\"hb\"}",
        before + 5.0,
    )
    .await;
    assert_eq!(c.metric("dozor_messages_duplicate_total").await, dups);
    assert_eq!(
        c.metric("dozor_messages_rejected_total{reason=\"flood\"}")
            .await,
        0.0,
        "the victim's flood budget was spent by forgeries"
    );
    let hosts = c.get("/api/v1/hosts").await;
    assert!(
        hosts.as_array().unwrap().len() <= 3,
        "no made-up host may be admitted: {}",
        hosts.as_array().unwrap().len()
    );
    // And the victim's delivery progress is its own: contiguous up to what it sent.
    let want = b.seq;
    let mine = wait_for(Duration::from_secs(10), || async {
        let d = c.get("/api/v1/delivery").await;
        d.as_array()?
            .iter()
            .find(|v| v["host"] == b.host.as_str() && v["contiguous"] == want)
            .cloned()
    })
    .await;
    assert!(
        mine.is_some(),
        "victim's marks: {}",
        c.get("/api/v1/delivery").await
    );
}

/// One 3 MB message on a Mosquitto without `max_packet_size` costs one counted rejection, not
/// the ingest: later messages are still received and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_does_not_wedge_ingest() {
    let m = Mosquitto::start_without_packet_limit();
    let dir = tempfile::tempdir().unwrap();
    let c = start_enrolled(&Broker::External(m.url()), dir.path());
    let mut b = SimAgent::enroll(&c, &token(dir.path(), MO_B, &[]), "srv-b").await;
    let mut vb = connect(b.options(m.port)).await;
    assert!(vb.connected().await);
    vb.publish(b.hb(), false).await;
    wait_metric(&c, "dozor_messages_accepted_total{kind=\"hb\"}", 1.0).await;
    let big = vec![b'x'; 3 * 1024 * 1024];
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &m.port.to_string()])
        .args(["-t", "dozor/v1/x/y/hb", "-q", "1", "-s"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(&big)?;
            ch.wait()
        })
        .unwrap();
    assert!(status.success());
    wait_metric(
        &c,
        "dozor_messages_rejected_total{reason=\"unreadable_packet\"}",
        1.0,
    )
    .await;
    // Ingest continues. What was published while the collector re-subscribed is re-sent by
    // real agents from their spool; this test's agent simply keeps publishing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while accepted_hb(&c).await < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest wedged after the oversized message"
        );
        vb.publish(b.hb(), false).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let n = accepted_hb(&c).await;
    for _ in 0..3 {
        vb.publish(b.hb(), false).await;
    }
    wait_metric(&c, "dozor_messages_accepted_total{kind=\"hb\"}", n + 3.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resets = c
        .metric("dozor_messages_rejected_total{reason=\"unreadable_packet\"}")
        .await;
    assert!(resets <= 2.0, "the poison must not come back: {resets}");
}

/// After a collector restart with an external broker, the retained birth (a duplicate of what
/// is stored) still gives the host its role, so a server crash pages someone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_survive_a_collector_restart() {
    let m = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let mut c = start_enrolled(&Broker::External(m.url()), dir.path());
    let mut b = SimAgent::enroll(&c, &token(dir.path(), MO_B, &[]), "srv-b").await;
    let mut vb = connect(b.options(m.port)).await;
    assert!(vb.connected().await);
    vb.publish(b.birth(Role::Server), true).await;
    vb.publish(b.hb(), false).await;
    wait_for(Duration::from_secs(10), || async {
        c.host(&b.host).await.filter(|h| h["role"] == "server")
    })
    .await
    .expect("role learnt");
    c.proc.terminate();
    let c = start_enrolled(&Broker::External(m.url()), dir.path());
    let h = wait_for(Duration::from_secs(15), || async {
        c.host(&b.host).await.filter(|h| h["role"] == "server")
    })
    .await;
    assert!(
        h.is_some(),
        "role lost after restart: {:?}",
        c.host(&b.host).await
    );
    assert!(c.metric("dozor_messages_duplicate_total").await >= 1.0);
}

/// Revoking an identity cuts its connection within seconds, without a restart; an expired or
/// used-up token enrolls nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_agents_and_expired_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_enrolled(&Broker::Embedded(0), dir.path());
    let t = token(dir.path(), MO_A, &["--max-uses", "1"]);
    let mut a = SimAgent::enroll(&c, &t, "pc-a").await;
    let (status, body) = enroll(&c, &t, "pc-b").await;
    assert_eq!(status, 401, "a used-up token: {body}");
    assert_eq!(body["error"], "token_invalid");
    let expired = token(dir.path(), MO_A, &["--expires-days", "0"]);
    assert_eq!(enroll(&c, &expired, "pc-c").await.0, 401);
    let (status, _) = enroll(&c, "dz1.nothing.here", "pc-d").await;
    assert_eq!(status, 401);
    wait_metric(
        &c,
        "dozor_enrollments_total{outcome=\"token_invalid\"}",
        3.0,
    )
    .await;

    let mut conn = connect(a.options(c.mqtt_port)).await;
    assert!(conn.connected().await);
    conn.publish(a.hb(), false).await;
    wait_metric(&c, "dozor_messages_accepted_total{kind=\"hb\"}", 1.0).await;
    revoke(dir.path(), &a);
    assert!(
        conn.dropped(Duration::from_secs(10)).await,
        "a revoked agent must be disconnected"
    );
    assert!(!connect(a.options(c.mqtt_port)).await.connected().await);
    wait_metric(&c, "dozor_mqtt_gate_closed_total{reason=\"revoked\"}", 1.0).await;
}

/// 1,000 connections that never log in are closed by the gateway's deadline; a real identity
/// still connects and the HTTP API still answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_enrolled(&Broker::Embedded(0), dir.path());
    let mut a = SimAgent::enroll(&c, &token(dir.path(), MO_A, &[]), "pc-a").await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", c.mqtt_port)).await {
            idle.push(s);
        }
    }
    assert_eq!(c.get("/healthz").await["status"], "ok");
    let mut conn = None;
    for _ in 0..20 {
        let mut k = connect(a.options(c.mqtt_port)).await;
        if k.connected().await {
            conn = Some(k);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let conn = conn.expect("a real agent connects despite 1,000 idle sockets");
    conn.publish(a.hb(), false).await;
    wait_metric(&c, "dozor_messages_accepted_total{kind=\"hb\"}", 1.0).await;
    let closed = c
        .metric("dozor_mqtt_gate_closed_total{reason=\"connect_timeout\"}")
        .await
        + c.metric("dozor_mqtt_gate_closed_total{reason=\"over_pending\"}")
            .await;
    let closed = if closed < 1000.0 {
        wait_for(Duration::from_secs(15), || async {
            let v = c
                .metric("dozor_mqtt_gate_closed_total{reason=\"connect_timeout\"}")
                .await
                + c.metric("dozor_mqtt_gate_closed_total{reason=\"over_pending\"}")
                    .await;
            (v >= 1000.0).then_some(v)
        })
        .await
        .unwrap_or(closed)
    } else {
        closed
    };
    assert!(closed >= 1000.0, "idle connections closed: {closed}");
    drop(idle);
}

fn tls_client(ca: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Mosquitto as a region runs it: TLS only, no anonymous clients, dynamic security provisioned
/// by the collector at enrollment. Each agent is held to its own topics by the broker itself,
/// and a revoked agent is disconnected by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_with_tls_and_dynsec_holds_each_agent_to_its_own_topics() {
    let m = Mosquitto::start_secure("dozor-collector", "collector-secret");
    let dir = tempfile::tempdir().unwrap();
    let c = dynsec_collector(&m, dir.path());
    let tls = tls_client(&m.ca_file());
    let with_tls = |mut o: MqttOptions| {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
        o
    };
    let a = SimAgent::enroll(&c, &token(dir.path(), MO_A, &[]), "pc-a").await;
    let mut b = SimAgent::enroll(&c, &token(dir.path(), MO_B, &[]), "srv-b").await;
    // The collector provisions the broker asynchronously: wait until B may log in.
    let vb = connect_when_accepted(|| with_tls(b.options(m.port))).await;
    let vb = vb.expect("an enrolled agent logs in to Mosquitto");
    vb.publish(b.birth(Role::Server), true).await;
    vb.publish(b.hb(), false).await;
    wait_for(Duration::from_secs(10), || async {
        c.host(&b.host).await.filter(|h| h["state"] == "online")
    })
    .await
    .expect("victim online through Mosquitto");

    // Anonymous, plain-text and wrong-password clients are refused by the broker.
    let anon = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &m.port.to_string()])
        .arg("--cafile")
        .arg(m.ca_file())
        .args(["-t", "dozor/v1/#", "-C", "1", "-W", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!anon.success(), "anonymous subscriber must be refused");
    let mut plain = b.options(m.port);
    plain.set_keep_alive(Duration::from_secs(5));
    assert!(!connect(plain).await.connected().await, "no plain MQTT");
    let mut wrong = with_tls(a.options(m.port));
    wrong.set_credentials(username(&a.mo, &a.host), "guess");
    assert!(!connect(wrong).await.connected().await);

    // A, logged in as itself, tries B's topics and the whole region: the broker drops it all.
    let att = connect_when_accepted(|| with_tls(a.options(m.port))).await;
    let mut att = att.expect("attacker logs in as itself");
    att.client
        .subscribe("dozor/v1/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    att.publish(a.state_for(&b.mo, &b.host, ConnState::Offline), true)
        .await;
    att.client
        .publish(
            topic(&b.mo, &b.host, dozor_proto::Kind::Ack),
            QoS::AtLeastOnce,
            true,
            b"{\"v\":1,\"inst\":\"x\",\"acked_seq\":99999999,\"ts\":1}".to_vec(),
        )
        .await
        .unwrap();
    // A forged backlog on B's replay topic.
    let mut a = a;
    att.publish(a.hb_replay_for(&b.mo, &b.host), false).await;
    let before = accepted_hb(&c).await;
    vb.publish(b.hb(), false).await;
    wait_metric(
        &c,
        "dozor_messages_accepted_total{kind=\"hb\"}",
        before + 1.0,
    )
    .await;
    // B's own replay is allowed by its role (the collector reads it on its replay session).
    let (mo, host) = (b.mo.clone(), b.host.clone());
    vb.publish(b.hb_replay_for(&mo, &host), false).await;
    wait_metric(
        &c,
        "dozor_messages_accepted_total{kind=\"hb\"}",
        before + 2.0,
    )
    .await;
    assert_eq!(
        c.metric("dozor_messages_replayed_total").await,
        1.0,
        "B's replay only, not A's forgery"
    );
    // Nothing of B's reached A, and the forged state never reached the collector.
    let mut leaked = 0;
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_millis(500), att.events.recv()).await
    {
        if let Ok(Event::Incoming(Packet::Publish(p))) = ev
            && p.topic.contains(&b.host)
        {
            leaked += 1;
        }
    }
    assert_eq!(leaked, 0, "the attacker read another host's messages");
    assert_eq!(c.host(&b.host).await.unwrap()["state"], "online");
    assert_eq!(
        c.metric("dozor_messages_rejected_total{reason=\"bad_mac\"}")
            .await,
        0.0,
        "the broker itself must have dropped the forgery"
    );

    // Revoking B deletes its broker client, which disconnects it.
    let mut vb = vb;
    revoke(dir.path(), &b);
    assert!(
        vb.dropped(Duration::from_secs(10)).await,
        "Mosquitto must disconnect a revoked agent"
    );
    assert!(!connect(with_tls(b.options(m.port))).await.connected().await);
}

fn dynsec_collector(m: &Mosquitto, dir: &std::path::Path) -> Collector {
    let conf = dir.join("collector.toml");
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\ntype = \"external\"\nurl = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"\n\
             username = \"dozor-collector\"\npassword = \"collector-secret\"\ndynsec = true\n",
            m.port,
            m.ca_file().display()
        ),
    )
    .unwrap();
    Collector::start(
        &Broker::External(format!("mqtts://127.0.0.1:{}", m.port)),
        dir,
        &[
            "--security-mode",
            "enrolled",
            "--config",
            conf.to_str().unwrap(),
        ],
    )
}

async fn dynsec_sent(c: &Collector, command: &str) -> f64 {
    c.metric(&format!(
        "dozor_dynsec_commands_total{{command=\"{command}\"}}"
    ))
    .await
}

/// At start the collector lists what Mosquitto's dynamic-security plugin holds and sends only
/// the difference (the plugin rewrites its whole file per command, so a full sync per start
/// is quadratic in the fleet): nothing for identities the broker has, a client deleted behind
/// its back is re-created, a revoked identity still on the broker is deleted. Agents log in
/// and are confined as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sends_mosquitto_only_the_identities_it_lacks() {
    let m = Mosquitto::start_secure("dozor-collector", "collector-secret");
    let dir = tempfile::tempdir().unwrap();
    let mut c = dynsec_collector(&m, dir.path());
    let tls = tls_client(&m.ca_file());
    let with_tls = |mut o: MqttOptions| {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
        o
    };
    let a = SimAgent::enroll(&c, &token(dir.path(), MO_A, &[]), "pc-a").await;
    let mut b = SimAgent::enroll(&c, &token(dir.path(), MO_B, &[]), "srv-b").await;
    let d = SimAgent::enroll(&c, &token(dir.path(), MO_A, &[]), "pc-d").await;
    for agent in [&a, &b, &d] {
        let conn = connect_when_accepted(|| with_tls(agent.options(m.port))).await;
        assert!(conn.is_some(), "{} logs in before the restart", agent.host);
    }
    assert_eq!(
        dynsec_sent(&c, "createClient").await,
        3.0,
        "one per enrollment"
    );
    c.proc.terminate();

    // Behind the collector's back: A's client deleted on the broker, D revoked offline.
    let ctrl = Command::new("mosquitto_ctrl")
        .args(["-h", "127.0.0.1", "-p", &m.port.to_string()])
        .arg("--cafile")
        .arg(m.ca_file())
        .args(["-u", "dozor-collector", "-P", "collector-secret"])
        .args(["dynsec", "deleteClient", &username(&a.mo, &a.host)])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ctrl.success(), "mosquitto_ctrl dynsec deleteClient");
    assert!(
        !connect(with_tls(a.options(m.port))).await.connected().await,
        "A's client is gone from the broker"
    );
    revoke(dir.path(), &d);

    let c = dynsec_collector(&m, dir.path());
    wait_metric(
        &c,
        "dozor_dynsec_commands_total{command=\"deleteClient\"}",
        1.0,
    )
    .await;
    for (command, sent) in [
        ("createClient", 1.0),
        ("createRole", 0.0),
        ("addRoleACL", 0.0),
        ("addClientRole", 0.0),
        ("deleteClient", 1.0),
        ("deleteRole", 1.0),
    ] {
        assert_eq!(dynsec_sent(&c, command).await, sent, "{command} at restart");
    }
    let va = connect_when_accepted(|| with_tls(a.options(m.port))).await;
    assert!(va.is_some(), "A re-created on the broker logs in again");
    assert!(
        !connect(with_tls(d.options(m.port))).await.connected().await,
        "the revoked D is refused by the broker"
    );
    // B, untouched, still logs in and is still held to its own topics.
    let vb = connect_when_accepted(|| with_tls(b.options(m.port))).await;
    let vb = vb.expect("B logs in after the restart");
    vb.publish(b.hb(), false).await;
    wait_metric(&c, "dozor_messages_accepted_total{kind=\"hb\"}", 1.0).await;
    let before = accepted_hb(&c).await;
    let (_, forged) = b.hb();
    vb.client
        .publish(
            topic(&a.mo, &a.host, dozor_proto::Kind::Hb),
            QoS::AtLeastOnce,
            false,
            forged,
        )
        .await
        .unwrap();
    vb.publish(b.hb(), false).await;
    wait_metric(
        &c,
        "dozor_messages_accepted_total{kind=\"hb\"}",
        before + 1.0,
    )
    .await;
    assert_eq!(
        c.metric("dozor_messages_rejected_total{reason=\"bad_mac\"}")
            .await,
        0.0,
        "the broker itself dropped B's message on A's topic"
    );
}
