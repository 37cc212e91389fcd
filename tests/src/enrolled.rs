//! Enrolled identities for attack tests: enrollment tokens made with the collector's CLI (as a
//! region admin would), and `SimAgent`, which enrolls over the collector's real HTTP endpoint
//! and signs exactly as the agent does (`dozor_proto::auth`), so a test controls what an
//! attacker with root on one clinic PC sends, byte for byte.

use crate::{Collector, bin, unix_ms};
use dozor_proto::auth::{MacKey, Secret, sign};
use dozor_proto::{
    Birth, ConnState, DiskUsage, Envelope, Heartbeat, Kind, Probe, ProbeResult, Role,
    SCHEMA_VERSION, SpoolStats, State, client_id, topic, username,
};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

/// Creates an enrollment token for `mo` with the collector's CLI; `extra` e.g. `--uses 2`.
pub fn token(data_dir: &Path, mo: &str, extra: &[&str]) -> String {
    let out = Command::new(bin("dozor-collector"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["token", "create", "--mo", mo])
        .args(extra)
        .stderr(Stdio::null())
        .output()
        .expect("dozor-collector token create");
    assert!(out.status.success(), "token create failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8 token")
        .trim()
        .to_string()
}

/// Agent arguments that enroll with `token` at the collector's plain-HTTP API (a lab).
pub fn enroll_args(c: &Collector, token: &str) -> Vec<String> {
    vec![
        "--enroll-token".into(),
        token.into(),
        "--enroll-url".into(),
        format!("http://{}", c.http),
        "--enroll-allow-plain-http".into(),
    ]
}

/// Enrolls over HTTP; returns (status, JSON body).
pub async fn enroll(c: &Collector, token: &str, hint: &str) -> (u16, serde_json::Value) {
    let r = c
        .client
        .post(format!("http://{}/api/v1/enroll", c.http))
        .json(&serde_json::json!({"token": token, "host_hint": hint, "hostname": hint}))
        .send()
        .await
        .expect("POST /api/v1/enroll");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// An enrolled identity driven by the test.
pub struct SimAgent {
    pub mo: String,
    pub host: String,
    pub secret: Secret,
    pub inst: String,
    pub seq: u64,
}

impl SimAgent {
    pub async fn enroll(c: &Collector, token: &str, hint: &str) -> SimAgent {
        let (status, body) = enroll(c, token, hint).await;
        assert_eq!(status, 200, "enrollment: {body}");
        SimAgent {
            mo: body["mo"].as_str().expect("mo").into(),
            host: body["host"].as_str().expect("host").into(),
            secret: Secret::from_hex(body["secret"].as_str().expect("secret")).expect("hex"),
            inst: format!("inst-{hint}"),
            seq: 0,
        }
    }

    pub fn key(&self) -> MacKey {
        self.secret.mac_key()
    }

    pub fn options(&self, port: u16) -> MqttOptions {
        let mut o = MqttOptions::new(client_id(&self.mo, &self.host), "127.0.0.1", port);
        o.set_credentials(username(&self.mo, &self.host), self.secret.mqtt_password())
            .set_keep_alive(Duration::from_secs(30));
        o
    }

    /// A heartbeat envelope for any (mo, host, inst), numbered by this identity, unsigned.
    pub fn hb_json(&mut self, mo: &str, host: &str, inst: &str, oldest: Option<u64>) -> Vec<u8> {
        self.seq += 1;
        serde_json::to_vec(&Envelope {
            v: SCHEMA_VERSION,
            mo: mo.into(),
            host: host.into(),
            inst: inst.into(),
            seq: self.seq,
            ts: unix_ms(),
            replay: false,
            body: Heartbeat {
                uptime_secs: 100,
                cpu_pct: 5.0,
                mem_used_bytes: 1 << 30,
                mem_total_bytes: 4 << 30,
                load: None,
                disks: vec![DiskUsage {
                    mount: "/".into(),
                    total_bytes: 100,
                    used_bytes: 10,
                }],
                interval_secs: 1,
                spool: oldest.map(|o| SpoolStats {
                    pending: 0,
                    bytes: 0,
                    dropped: 0,
                    oldest_seq: Some(o),
                }),
            },
        })
        .expect("heartbeat JSON")
    }

    /// Its own heartbeat, signed: (topic, payload).
    pub fn hb(&mut self) -> (String, Vec<u8>) {
        let (mo, host, inst) = (self.mo.clone(), self.host.clone(), self.inst.clone());
        let json = self.hb_json(&mo, &host, &inst, None);
        let t = topic(&mo, &host, Kind::Hb);
        (t.clone(), sign(&self.key(), &t, &json))
    }

    /// A heartbeat made an hour ago, replayed on `mo`/`host`'s replay topic (`…/hb-replay`),
    /// signed with its own key: its own backlog, or a forgery for another host.
    pub fn hb_replay_for(&mut self, mo: &str, host: &str) -> (String, Vec<u8>) {
        let inst = self.inst.clone();
        let json = self.hb_json(mo, host, &inst, None);
        let mut v: serde_json::Value = serde_json::from_slice(&json).expect("heartbeat JSON");
        v["replay"] = true.into();
        v["ts"] = (unix_ms() - 3_600_000).into();
        let json = serde_json::to_vec(&v).expect("heartbeat JSON");
        let t = topic(mo, host, Kind::HbReplay);
        (t.clone(), sign(&self.key(), &t, &json))
    }

    /// Its own birth, signed.
    pub fn birth(&mut self, role: Role) -> (String, Vec<u8>) {
        self.seq += 1;
        let json = serde_json::to_vec(&Envelope {
            v: SCHEMA_VERSION,
            mo: self.mo.clone(),
            host: self.host.clone(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: unix_ms(),
            replay: false,
            body: Birth {
                agent_version: "test".into(),
                role,
                site: "Главный корпус".into(),
                hostname: self.host.clone(),
                os_name: "Linux".into(),
                os_version: "1".into(),
                cpu_model: "x".into(),
                cpu_count: 2,
                mem_total_bytes: 4 << 30,
                disks: vec![],
                boot_time: unix_ms() / 1000 - 100,
                boot_id: "b".into(),
                seq_base: self.seq,
                interval_secs: 1,
                keepalive_secs: 30,
                prev_end: None,
                will_seq: None,
                targets: vec![],
            },
        })
        .expect("birth JSON");
        let t = topic(&self.mo, &self.host, Kind::Birth);
        (t.clone(), sign(&self.key(), &t, &json))
    }

    /// A probe round claiming to be (mo, host)'s, published on that host's topic and signed
    /// with this identity's key: `results` as (target name, category, ok).
    pub fn probe_for(
        &mut self,
        mo: &str,
        host: &str,
        results: &[(&str, dozor_proto::Category, bool)],
    ) -> (String, Vec<u8>) {
        let json = self.probe_json(mo, host, results);
        let t = topic(mo, host, Kind::Probe);
        (t.clone(), sign(&self.key(), &t, &json))
    }

    /// A probe round's envelope naming (mo, host), numbered by this identity, unsigned.
    pub fn probe_json(
        &mut self,
        mo: &str,
        host: &str,
        results: &[(&str, dozor_proto::Category, bool)],
    ) -> Vec<u8> {
        self.seq += 1;
        serde_json::to_vec(&Envelope {
            v: SCHEMA_VERSION,
            mo: mo.into(),
            host: host.into(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: unix_ms(),
            replay: false,
            body: Probe {
                results: results
                    .iter()
                    .map(|(name, category, ok)| ProbeResult {
                        target: (*name).into(),
                        category: *category,
                        ok: *ok,
                        latency_ms: Some(3),
                        error: None,
                        status: ok.then_some(200),
                    })
                    .collect(),
            },
        })
        .expect("probe JSON")
    }

    /// Its own probe round, signed.
    pub fn probe(&mut self, results: &[(&str, dozor_proto::Category, bool)]) -> (String, Vec<u8>) {
        let (mo, host) = (self.mo.clone(), self.host.clone());
        self.probe_for(&mo, &host, results)
    }

    /// A `state` for any (mo, host), signed with this identity's key.
    pub fn state_for(&self, mo: &str, host: &str, st: ConnState) -> (String, Vec<u8>) {
        let json = serde_json::to_vec(&Envelope {
            v: SCHEMA_VERSION,
            mo: mo.into(),
            host: host.into(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: unix_ms(),
            replay: false,
            body: State {
                state: st,
                reason: Some("shutdown".into()),
            },
        })
        .expect("state JSON");
        let t = topic(mo, host, Kind::State);
        (t.clone(), sign(&self.key(), &t, &json))
    }
}

/// A connected MQTT client; `events` reports connection outcomes.
pub struct Conn {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<Event, String>>,
}

/// Starts an MQTT client with `o`; its event loop runs in a task until refused or dropped.
pub async fn connect(o: MqttOptions) -> Conn {
    let (client, mut el) = AsyncClient::new(o, 10_000);
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if tx.send(Ok(ev)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let refused = matches!(e, ConnectionError::ConnectionRefused(_));
                    if tx.send(Err(e.to_string())).is_err() || refused {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    });
    Conn { client, events }
}

/// Connects until the broker accepts the login (the collector provisions asynchronously).
pub async fn connect_when_accepted(o: impl Fn() -> MqttOptions) -> Option<Conn> {
    // Up to 20 s: under a loaded CI machine the broker's provisioning can lag.
    for _ in 0..80 {
        let mut k = connect(o()).await;
        if k.connected().await {
            return Some(k);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

impl Conn {
    /// Waits for the CONNACK (true) or a refusal/error (false).
    pub async fn connected(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(Event::Incoming(Packet::ConnAck(_))))) => return true,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Waits until the connection drops (an error after having connected).
    pub async fn dropped(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Err(_))) | Ok(None) => return true,
                Ok(Some(Ok(_))) => {}
                Err(_) => return false,
            }
        }
    }

    pub async fn publish(&self, (t, p): (String, Vec<u8>), retain: bool) {
        self.client
            .publish(t, QoS::AtLeastOnce, retain, p)
            .await
            .expect("queue publish");
    }
}
