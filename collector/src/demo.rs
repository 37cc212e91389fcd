//! `--demo`: a simulated region published through the real MQTT path, plus this machine's own
//! agent when the `dozor-agent` binary sits next to the collector's.
//!
//! Every МО of the roster gets its workstations (about 90 % of plan) and two servers; they
//! report heartbeats and probe results of the МИС, ИЭМК and ЛИС. The fourth МО has lost its
//! channel to the МИС, and a few PCs cannot reach the ЛИС, so the status page has something
//! to show.

use crate::clock::now_ms;
use crate::identity::SecurityMode;
use crate::identity::service::Identities;
use crate::roster::Roster;
use dozor_proto::auth::MacKey;
use dozor_proto::{
    Birth, Category, ConnState, DiskInfo, DiskUsage, Envelope, ErrorClass, Heartbeat, Kind, Probe,
    ProbeResult, Role, SCHEMA_VERSION, State, TargetInfo, topic,
};
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The embedded demo roster.
pub const DEMO_ROSTER: &str = include_str!("../../deploy/roster-demo.toml");

/// Heartbeat interval of simulated hosts.
const INTERVAL_SECS: u32 = 10;

struct SimHost {
    mo: String,
    host: String,
    site: String,
    role: Role,
    inst: String,
    seq: u64,
    boot_time: i64,
    cpu: f32,
    mis_channel_down: bool,
    lis_broken: bool,
    /// The MAC key of the identity the demo issued for this host (enrolled mode).
    key: Option<MacKey>,
}

impl SimHost {
    /// Topic and payload of a message of this host, signed with its identity when it has one.
    fn out(&self, kind: Kind, json: Vec<u8>) -> (String, Vec<u8>) {
        let t = topic(&self.mo, &self.host, kind);
        let payload = match &self.key {
            Some(k) => dozor_proto::auth::sign(k, &t, &json),
            None => json,
        };
        (t, payload)
    }

    fn envelope<B>(&mut self, body: B) -> Envelope<B> {
        self.seq += 1;
        Envelope {
            v: SCHEMA_VERSION,
            mo: self.mo.clone(),
            host: self.host.clone(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: now_ms(),
            replay: false,
            body,
        }
    }

    fn birth(&mut self) -> Vec<u8> {
        let seq_base = self.seq + 1;
        let body = Birth {
            agent_version: format!("{}-demo", env!("CARGO_PKG_VERSION")),
            role: self.role,
            site: self.site.clone(),
            hostname: self.host.to_uppercase(),
            os_name: if self.role == Role::Server {
                "Astra Linux".into()
            } else {
                "Windows".into()
            },
            os_version: if self.role == Role::Server {
                "1.7".into()
            } else {
                "10".into()
            },
            cpu_model: "Intel(R) Core(TM) i3-10100".into(),
            cpu_count: 4,
            mem_total_bytes: 8 << 30,
            disks: vec![DiskInfo {
                mount: "/".into(),
                fs: "ext4".into(),
                total_bytes: 256 << 30,
            }],
            boot_time: self.boot_time,
            boot_id: format!("{}-boot", self.host),
            seq_base,
            interval_secs: INTERVAL_SECS,
            keepalive_secs: 30,
            prev_end: None,
            will_seq: None,
            targets: vec![
                TargetInfo {
                    name: "mis".into(),
                    category: Category::Mis,
                },
                TargetInfo {
                    name: "iemk".into(),
                    category: Category::Iemk,
                },
                TargetInfo {
                    name: "lis".into(),
                    category: Category::Lis,
                },
            ],
        };
        self.envelope(body).to_json()
    }

    fn hb(&mut self, rng: &mut impl Rng) -> Vec<u8> {
        self.cpu = (self.cpu + rng.random_range(-5.0..5.0)).clamp(1.0, 95.0);
        let uptime = (now_ms() / 1000 - self.boot_time).max(0) as u64;
        let body = Heartbeat {
            uptime_secs: uptime,
            cpu_pct: self.cpu,
            mem_used_bytes: rng.random_range(2u64 << 30..6u64 << 30),
            mem_total_bytes: 8 << 30,
            load: Some([self.cpu / 25.0, self.cpu / 30.0, self.cpu / 35.0]),
            disks: vec![DiskUsage {
                mount: "/".into(),
                total_bytes: 256 << 30,
                used_bytes: 120 << 30,
            }],
            interval_secs: INTERVAL_SECS,
            spool: None,
        };
        self.envelope(body).to_json()
    }

    fn probe(&mut self, rng: &mut impl Rng) -> Vec<u8> {
        let mut r = |target: &str, category, fail: Option<ErrorClass>| ProbeResult {
            target: target.into(),
            category,
            ok: fail.is_none(),
            latency_ms: Some(if fail == Some(ErrorClass::Timeout) {
                5000
            } else {
                rng.random_range(8..120)
            }),
            error: fail,
            status: if fail.is_none() && category != Category::Lis {
                Some(200)
            } else {
                None
            },
        };
        let results = vec![
            r(
                "mis",
                Category::Mis,
                self.mis_channel_down.then_some(ErrorClass::Timeout),
            ),
            r("iemk", Category::Iemk, None),
            r(
                "lis",
                Category::Lis,
                self.lis_broken.then_some(ErrorClass::Connect),
            ),
        ];
        self.envelope(Probe { results }).to_json()
    }

    fn state(&mut self, state: ConnState) -> Vec<u8> {
        let e = Envelope {
            v: SCHEMA_VERSION,
            mo: self.mo.clone(),
            host: self.host.clone(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: now_ms(),
            replay: false,
            body: State {
                state,
                reason: None,
            },
        };
        e.to_json()
    }
}

fn fleet(roster: &Roster) -> Vec<Vec<SimHost>> {
    let mut rng = rand::rng();
    let now_s = now_ms() / 1000;
    roster
        .mos
        .iter()
        .enumerate()
        .map(|(i, mo)| {
            let mut hosts = Vec::new();
            let sites: Vec<(String, u32)> = if mo.sites.is_empty() {
                vec![("Основное".into(), mo.planned_arm)]
            } else {
                mo.sites
                    .iter()
                    .map(|s| (s.name.clone(), s.planned_arm))
                    .collect()
            };
            for (si, (site, plan)) in sites.iter().enumerate() {
                let n = (plan * 9).div_ceil(10);
                for k in 0..n {
                    hosts.push(SimHost {
                        mo: mo.oid.clone(),
                        host: format!("arm-{}-{}-{:03}", i + 1, si + 1, k + 1),
                        site: site.clone(),
                        role: Role::Workstation,
                        inst: format!("demo{}{}{:03}", i + 1, si + 1, k + 1),
                        seq: 0,
                        boot_time: now_s - rng.random_range(600..36_000),
                        cpu: rng.random_range(2.0..40.0),
                        mis_channel_down: i == 3,
                        lis_broken: k % 37 == 5,
                        key: None,
                    });
                }
            }
            for k in 0..2 {
                hosts.push(SimHost {
                    mo: mo.oid.clone(),
                    host: format!("srv-{}-{}", i + 1, k + 1),
                    site: sites[0].0.clone(),
                    role: Role::Server,
                    inst: format!("demosrv{}{}", i + 1, k + 1),
                    seq: 0,
                    boot_time: now_s - rng.random_range(86_400..3_000_000),
                    cpu: rng.random_range(5.0..30.0),
                    mis_channel_down: i == 3,
                    lis_broken: false,
                    key: None,
                });
            }
            hosts
        })
        .collect()
}

async fn run_mo(
    mut hosts: Vec<SimHost>,
    mqtt: (IpAddr, u16),
    idx: usize,
    cancel: CancellationToken,
) {
    let mut o = MqttOptions::new(format!("dozor-demo-{idx}"), mqtt.0.to_string(), mqtt.1);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(o, 4096);
    let driver = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    // Spread the fleet's messages over the interval.
    let step = Duration::from_millis(u64::from(INTERVAL_SECS) * 1000 / hosts.len().max(1) as u64);
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for h in &mut hosts {
        let b = h.birth();
        let (t, b) = h.out(Kind::Birth, b);
        let _ = client.publish(t, QoS::AtLeastOnce, true, b).await;
        let s = h.state(ConnState::Online);
        let (t, s) = h.out(Kind::State, s);
        let _ = client.publish(t, QoS::AtLeastOnce, true, s).await;
    }
    'outer: loop {
        for h in &mut hosts {
            tokio::select! {
                _ = cancel.cancelled() => break 'outer,
                _ = tokio::time::sleep(step) => {}
            }
            let hb = h.hb(&mut rng);
            let (t, hb) = h.out(Kind::Hb, hb);
            let _ = client.publish(t, QoS::AtLeastOnce, false, hb).await;
            let p = h.probe(&mut rng);
            let (t, p) = h.out(Kind::Probe, p);
            let _ = client.publish(t, QoS::AtLeastOnce, false, p).await;
        }
    }
    for h in &mut hosts {
        let s = h.state(ConnState::Offline);
        let (t, s) = h.out(Kind::State, s);
        let _ = client.publish(t, QoS::AtLeastOnce, true, s).await;
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    driver.abort();
}

/// Starts the simulated region and, if found, this machine's agent.
///
/// `internal` is the embedded broker itself (the simulated hosts share one connection per МО,
/// which the gateway would refuse: one login speaks for one host); `agents` is where real
/// agents connect. In enrolled mode the demo issues its simulated hosts' identities itself and
/// enrolls this machine's agent with a one-use token for the first МО.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    tasks: &TaskTracker,
    roster: &Roster,
    internal: (IpAddr, u16),
    agents: (IpAddr, u16),
    http: SocketAddr,
    ids: &Arc<Identities>,
    data_dir: &Path,
    cancel: CancellationToken,
) {
    let mqtt = internal;
    let mut fleet = fleet(roster);
    if ids.mode == SecurityMode::Enrolled {
        let names: Vec<(String, String)> = fleet
            .iter()
            .flatten()
            .map(|h| (h.mo.clone(), h.host.clone()))
            .collect();
        match ids.issue_many(&names, now_ms()) {
            Ok(_) => {
                let reg = ids.current();
                for h in fleet.iter_mut().flatten() {
                    h.key = reg.key_for(&h.mo, &h.host).ok().cloned();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "demo: cannot issue identities for the simulated hosts")
            }
        }
    }
    let n: usize = fleet.iter().map(Vec::len).sum();
    tracing::info!(
        hosts = n,
        mos = fleet.len(),
        "demo: simulated region starting"
    );
    for (i, hosts) in fleet.into_iter().enumerate() {
        tasks.spawn(run_mo(hosts, mqtt, i, cancel.clone()));
    }
    let Some(mo) = roster.mos.first().map(|m| m.oid.clone()) else {
        return;
    };
    let agent = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("dozor-agent")))
        .filter(|p| p.exists());
    let Some(agent) = agent else {
        tracing::info!(
            "demo: dozor-agent binary not found next to the collector; running the simulated region only"
        );
        return;
    };
    // The demo's agent keeps its spool and identity in the demo's own data dir.
    let data_dir = data_dir.join("demo-agent");
    let token = if ids.mode == SecurityMode::Enrolled && !data_dir.join("identity.json").exists() {
        match ids.create_token(&mo, Some(1), now_ms()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "demo: cannot create an enrollment token for the local agent");
                None
            }
        }
    } else {
        None
    };
    let http_host = if http.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], http.port()))
    } else {
        http
    };
    let mut cmd = tokio::process::Command::new(&agent);
    if let Some(t) = token {
        // Through the environment, never the command line (visible to every local user).
        cmd.env("DOZOR_ENROLL_TOKEN", t)
            .env("DOZOR_ENROLL_URL", format!("http://{http_host}"))
            .env("DOZOR_ENROLL_ALLOW_PLAIN_HTTP", "true");
    }
    // The agent stops by itself if this collector dies without stopping it (kill -9).
    cmd.env("DOZOR_EXIT_WITH_PARENT", "1");
    cmd.arg("--mqtt-url")
        .arg(format!("mqtt://{}:{}", agents.0, agents.1))
        .arg("--mo")
        .arg(&mo)
        .arg("--role")
        .arg("server")
        .arg("--site")
        .arg("Главный корпус")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--interval-secs")
        .arg("10")
        .arg("--probe")
        .arg(format!("mis=http://{http_host}/healthz"))
        .kill_on_drop(true);
    tasks.spawn(async move {
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(agent = %agent.display(), "demo: this machine's agent started");
                tokio::select! {
                    _ = cancel.cancelled() => {
                        // Graceful stop so the agent publishes `offline`.
                        if let Some(pid) = child.id() {
                            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    }
                    _ = child.wait() => tracing::warn!("demo: the local agent exited"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "demo: could not start the local agent"),
        }
    });
}
