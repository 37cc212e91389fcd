//! Fault drills (issue: nothing lost, nothing counted twice). Several agents publish at a 1 s
//! interval through real brokers to a real collector; faults are injected with real process
//! kills and restarts; then what the agents produced is compared with what the collector holds.
//!
//! For each agent instance: `produced` = sequence numbers issued (the agent's persisted
//! `next_seq − 1`, less the numbers it skipped after a `kill -9`: reserved, never written), `stored` = numbers the collector stored (its ledger, persisted in the same
//! transaction as the data), `in_spool` = numbers still waiting in the agent's spool and not
//! stored (not lost: they are sent at its next start), `lost` = produced − stored − refused − in_spool − dropped,
//! `duplicated` = numbers counted more than once: heartbeats in the collector's history (5-minute
//! rollups, an independent count) beyond the heartbeats it stored.

use dozor_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MO: &str = "1.2.643.5.1.13.13.12.2.27.3001";
const AGENTS: usize = 4;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    produced: u64,
    stored: u64,
    refused: u64,
    in_spool: u64,
    dropped: u64,
    lost: i64,
    duplicated: i64,
    redelivered: u64,
}

struct Fleet {
    dir: PathBuf,
    agents: Vec<Agent>,
    mis_port: u16,
    /// Extra agent flags (enrollment and TLS in the secure drills).
    extra: Vec<String>,
}

fn agent_args(mis_port: u16) -> Vec<String> {
    drill_agent_args("workstation", 200, mis_port)
}

impl Fleet {
    async fn start(dir: &Path, mqtt_url: &str) -> Fleet {
        Fleet::start_with(dir, mqtt_url, Vec::new()).await
    }

    async fn start_with(dir: &Path, mqtt_url: &str, extra: Vec<String>) -> Fleet {
        let mis_port = tcp_mis().await;
        let mut f = Fleet {
            dir: dir.to_path_buf(),
            agents: Vec::new(),
            mis_port,
            extra,
        };
        for i in 0..AGENTS {
            f.agents.push(f.start_agent(i, mqtt_url));
        }
        f
    }

    fn host(i: usize) -> String {
        format!("drill-{i:02}")
    }

    fn start_agent(&self, i: usize, mqtt_url: &str) -> Agent {
        let mut args = agent_args(self.mis_port);
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start(
            mqtt_url,
            MO,
            &Fleet::host(i),
            &self.dir.join(Fleet::host(i)),
            &args,
        )
    }

    /// SIGTERM every agent: they publish `offline` and exit; their spools keep what is unconfirmed.
    fn stop(&mut self) {
        for a in &mut self.agents {
            assert_eq!(a.proc.terminate(), Some(0), "{} exits cleanly", a.host_id);
        }
    }
}

/// Heartbeats counted in the collector's history (sum of 5-minute rollup counts) per host.
fn history_heartbeats(db: &Path, host: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("dozor.db");
    conn.query_row(
        "SELECT COALESCE(SUM(r.n), 0) FROM rollups r JOIN hosts h ON h.id = r.host_id WHERE h.host = ?1",
        [host],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Waits until the collector has stored everything the (stopped) agents produced, or 60 s.
async fn tally(c: &Collector, fleet: &Fleet, name: &str) -> Tally {
    let mut t = Tally::default();
    let spools: Vec<_> = (0..AGENTS)
        .map(|i| spool_of(&fleet.dir.join(Fleet::host(i))))
        .collect();
    // Let the last confirmed batch land.
    let _ = wait_for(Duration::from_secs(20), || async {
        let d = c.get("/api/v1/delivery").await;
        let all = spools.iter().all(|(inst, produced, spooled, _)| {
            d.as_array()
                .into_iter()
                .flatten()
                .find(|v| v["inst"] == inst.as_str())
                .is_some_and(|v| {
                    let c = v["contiguous"].as_u64().unwrap_or(0);
                    c >= *produced
                        || spooled.iter().all(|s| *s <= c) && c + spooled.len() as u64 >= *produced
                })
        });
        all.then_some(())
    })
    .await;
    let d = c.get("/api/v1/delivery").await;
    for (inst, produced, spooled, dropped) in &spools {
        let v = d
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["inst"] == inst.as_str())
            .cloned()
            .unwrap_or_default();
        let stored = v["stored"].as_u64().unwrap_or(0);
        let refused = v["refused"].as_u64().unwrap_or(0);
        let contiguous = v["contiguous"].as_u64().unwrap_or(0);
        // Numbers above a gap that are already stored stay in the spool until the gap is
        // filled (the agent deletes only up to the contiguous mark): count them once.
        let stored_above = v["pending_above"].as_u64().unwrap_or(0);
        let in_spool = (spooled.iter().filter(|s| **s > contiguous).count() as u64)
            .saturating_sub(stored_above);
        t.produced += produced;
        t.stored += stored;
        t.refused += refused;
        t.in_spool += in_spool;
        t.dropped += dropped;
        t.lost += *produced as i64 - (stored + refused + in_spool + dropped) as i64;
    }
    t.redelivered = c.metric("dozor_messages_duplicate_total").await as u64;
    // Double counting: heartbeats in history must not exceed heartbeats stored. Each agent
    // sends about one heartbeat per probe round, so hb ≤ stored / 2 + births.
    let db = c.data_dir.join("dozor.db");
    for (i, (_, _, _, _)) in spools.iter().enumerate() {
        let hist = history_heartbeats(&db, &Fleet::host(i));
        let v = d
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["host"] == Fleet::host(i))
            .cloned()
            .unwrap_or_default();
        let stored = v["stored"].as_i64().unwrap_or(0);
        t.duplicated += (hist - stored).max(0);
    }
    println!(
        "DRILL {name}: produced {} stored {} refused {} in_spool {} dropped {} lost {} duplicated {} (redelivered and dropped as duplicates: {})",
        t.produced, t.stored, t.refused, t.in_spool, t.dropped, t.lost, t.duplicated, t.redelivered
    );
    t
}

fn assert_clean(t: &Tally) {
    assert!(t.produced > 0);
    assert_eq!(t.lost, 0, "messages lost: {t:?}");
    assert_eq!(t.duplicated, 0, "messages counted twice: {t:?}");
}

/// Waits until every drill agent reports (in a fresh heartbeat) an almost empty spool: its
/// backlog has been replayed and confirmed. Agents back off up to 30 s between reconnects.
async fn wait_drained(c: &Collector, hosts: &[String], timeout: Duration) {
    let start = Instant::now();
    let since = now_ms() + 1_000;
    let ok = wait_for(timeout, || async {
        for h in hosts {
            let v = c.get(&format!("/api/v1/hosts/{h}")).await;
            let pending = v["resources"]["spool"]["pending"]
                .as_u64()
                .unwrap_or(u64::MAX);
            // A heartbeat made after recovery (the agent's clock is this machine's).
            let fresh = v["last_agent_ts_ms"].as_i64().unwrap_or(0) > since;
            if pending > 5 || !fresh {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "agents' spools did not drain within {timeout:?}"
    );
    println!("backlog drained {:?} after recovery", start.elapsed());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn all_hosts() -> Vec<String> {
    (0..AGENTS).map(Fleet::host).collect()
}

async fn wait_all_online(c: &Collector) {
    let ok = wait_for(Duration::from_secs(15), || async {
        let hosts = c.get(&format!("/api/v1/hosts?mo={MO}&state=online")).await;
        (hosts.as_array().map_or(0, Vec::len) == AGENTS).then_some(())
    })
    .await;
    assert!(ok.is_some(), "not all agents online");
}

/// 1. Mosquitto stopped for 60 s, then restarted on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_1_mosquitto_down_60s() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mosquitto::start();
    let port = m.port;
    let c = Collector::start(
        &Broker::External(m.url()),
        &dir.path().join("collector"),
        &[],
    );
    let mut fleet = Fleet::start(dir.path(), &m.url()).await;
    wait_all_online(&c).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    m.proc.kill9();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let _m2 = Mosquitto::start_on(port);
    wait_drained(&c, &all_hosts(), Duration::from_secs(90)).await;
    fleet.stop();
    let t = tally(&c, &fleet, "1 mosquitto down 60 s").await;
    assert_clean(&t);
    assert!(
        t.stored >= (AGENTS as u64) * 120,
        "the outage's backlog arrived: {t:?}"
    );
}

async fn collector_kill9(external: bool) {
    collector_kill9_with(external, false).await;
}

/// With `secure`: the collector in enrolled mode, MQTT over TLS (the embedded broker's gateway
/// with a certificate, or Mosquitto with TLS and dynamic security), every agent enrolled with
/// one МО token at its first start and signing every message.
async fn collector_kill9_with(external: bool, secure: bool) {
    let dir = tempfile::tempdir().unwrap();
    let m = match (external, secure) {
        (false, _) => None,
        (true, false) => Some(Mosquitto::start()),
        (true, true) => Some(Mosquitto::start_secure(
            "dozor-collector",
            "collector-secret",
        )),
    };
    let cdir = dir.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    let scheme = if secure { "mqtts" } else { "mqtt" };
    let (broker, url) = match &m {
        Some(m) => (
            Broker::External(format!("{scheme}://127.0.0.1:{}", m.port)),
            format!("{scheme}://127.0.0.1:{}", m.port),
        ),
        None => {
            let port = free_port();
            (
                Broker::Embedded(port),
                format!("{scheme}://127.0.0.1:{port}"),
            )
        }
    };
    let mut extra: Vec<String> = Vec::new();
    let mut agent_extra: Vec<String> = Vec::new();
    let ca = match &m {
        Some(m) => m.ca_file(),
        None => dir.path().join("ca.pem"),
    };
    if secure {
        let conf = dir.path().join("collector.toml");
        let toml = match &m {
            Some(_) => format!(
                "[mqtt]\ntype = \"external\"\nurl = \"{url}\"\nca_file = \"{}\"\n\
                 username = \"dozor-collector\"\npassword = \"collector-secret\"\ndynsec = true\n",
                ca.display()
            ),
            None => {
                let cert =
                    rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
                std::fs::write(&ca, cert.cert.pem()).unwrap();
                let key = dir.path().join("key.pem");
                std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
                format!(
                    "[mqtt]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                    ca.display(),
                    key.display()
                )
            }
        };
        std::fs::write(&conf, toml).unwrap();
        extra = vec![
            "--security-mode".into(),
            "enrolled".into(),
            "--config".into(),
            conf.display().to_string(),
        ];
    }
    let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut c = Collector::start(&broker, &cdir, &extra_ref);
    if secure {
        let out = std::process::Command::new(bin("dozor-collector"))
            .arg("--data-dir")
            .arg(&cdir)
            .args(["token", "create", "--mo", MO, "--max-uses"])
            .arg(AGENTS.to_string())
            .output()
            .unwrap();
        assert!(out.status.success());
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        agent_extra = vec![
            "--enroll-token".into(),
            token,
            "--enroll-url".into(),
            format!("http://{}", c.http),
            "--enroll-allow-plain-http".into(),
            "--tls-ca-file".into(),
            ca.display().to_string(),
        ];
    }
    let mut fleet = Fleet::start_with(dir.path(), &url, agent_extra).await;
    wait_all_online(&c).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.proc.kill9();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let c = Collector::start(&broker, &cdir, &extra_ref);
    println!("collector restarted after {:?}", down.elapsed());
    wait_drained(&c, &all_hosts(), Duration::from_secs(90)).await;
    fleet.stop();
    let name = match (external, secure) {
        (true, false) => "2a collector kill -9 (Mosquitto)",
        (false, false) => "2b collector kill -9 (embedded broker)",
        (true, true) => "2c collector kill -9 (Mosquitto, TLS + dynsec, enrolled agents)",
        (false, true) => "2d collector kill -9 (embedded broker, TLS gateway, enrolled agents)",
    };
    let t = tally(&c, &fleet, name).await;
    assert_clean(&t);
}

/// 2c. As 2a with TLS, dynamic security and enrolled, signing agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_2c_collector_kill9_mosquitto_secure() {
    collector_kill9_with(true, true).await;
}

/// 2d. As 2b with the gateway's TLS listener and enrolled, signing agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_2d_collector_kill9_embedded_secure() {
    collector_kill9_with(false, true).await;
}

/// 2a. Collector kill -9 mid-stream, then restarted, with Mosquitto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_2a_collector_kill9_mosquitto() {
    collector_kill9(true).await;
}

/// 2b. Collector kill -9 with the embedded broker, which dies with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_2b_collector_kill9_embedded() {
    collector_kill9(false).await;
}

/// 3. Agent kill -9 with an unsent backlog (its broker was unreachable), then restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_3_agent_kill9_with_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mosquitto::start();
    let port = m.port;
    let c = Collector::start(
        &Broker::External(m.url()),
        &dir.path().join("collector"),
        &[],
    );
    let mut fleet = Fleet::start(dir.path(), &m.url()).await;
    wait_all_online(&c).await;
    // Cut the broker so that the agents build a backlog, then kill them hard.
    m.proc.kill9();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for a in &mut fleet.agents {
        a.proc.kill9();
    }
    let _m2 = Mosquitto::start_on(port);
    wait_port(port, Duration::from_secs(5));
    let url = format!("mqtt://127.0.0.1:{port}");
    for i in 0..AGENTS {
        fleet.agents[i] = fleet.start_agent(i, &url);
    }
    wait_drained(&c, &all_hosts(), Duration::from_secs(90)).await;
    fleet.stop();
    let t = tally(&c, &fleet, "3 agent kill -9 with backlog").await;
    assert_clean(&t);
    assert!(t.redelivered + t.stored > 0);
}

/// 4. A long outage of the agent's broker: the spool stays within its byte bound by dropping
/// the oldest messages (counted), the backlog is replayed at the configured rate, and the drop
/// counter matches exactly what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_4_long_outage_bounded_spool_and_paced_replay() {
    const MAX_BYTES: u64 = 24 * 1024;
    const RATE: f64 = 5.0;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mis = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mis_port = mis.local_addr().unwrap().port();
    let adir = dir.path().join("agent");
    let max = MAX_BYTES.to_string();
    let rate = RATE.to_string();
    let probe = format!("mis=tcp://127.0.0.1:{mis_port}");
    // The broker is not there yet: the agent spools everything.
    let mut agent = Agent::start(
        &url,
        MO,
        "drill-long",
        &adir,
        &[
            "--interval-secs",
            "1",
            "--probe-interval-secs",
            "1",
            "--probe",
            &probe,
            "--spool-max-bytes",
            &max,
            "--spool-replay-rate-per-sec",
            &rate,
            "--spool-resend-after-secs",
            "30",
        ],
    );
    tokio::time::sleep(Duration::from_secs(40)).await;
    let m = Mosquitto::start_on(port);
    let c = Collector::start(
        &Broker::External(m.url()),
        &dir.path().join("collector"),
        &[],
    );
    // The agent reconnects on its own backoff (up to 30 s); measure once it is back.
    let back = wait_for(Duration::from_secs(45), || async {
        c.host("drill-long")
            .await
            .filter(|h| h["state"] == "online")
            .map(|_| ())
    })
    .await;
    assert!(back.is_some(), "agent did not reconnect");
    // Measure the replay rate while the backlog drains.
    let t0 = Instant::now();
    let r0 = c.metric("dozor_messages_replayed_total").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let r1 = c.metric("dozor_messages_replayed_total").await;
    let rate_seen = (r1 - r0) / t0.elapsed().as_secs_f64();
    println!("replay rate over 10 s: {rate_seen:.1} msgs/s (limit {RATE})");
    assert!(
        rate_seen <= RATE * 1.2 + 0.5,
        "replay exceeds its rate: {rate_seen:.1}/s"
    );
    assert!(rate_seen >= RATE * 0.5, "replay too slow: {rate_seen:.1}/s");
    assert!(c.host("drill-long").await.is_some(), "host known");
    let full = c.get("/api/v1/hosts/drill-long").await;
    let bytes = full["resources"]["spool"]["bytes"].as_u64().unwrap_or(0);
    let reported_dropped = full["resources"]["spool"]["dropped"].as_u64().unwrap_or(0);
    println!(
        "agent spool while draining: {bytes} bytes (bound {MAX_BYTES}), dropped {reported_dropped}"
    );
    assert!(bytes <= MAX_BYTES, "spool over its bound");
    assert!(
        reported_dropped > 0,
        "40 s at 2 msgs/s must overflow a {MAX_BYTES}-byte spool"
    );
    // Drain the rest, then stop and count.
    let _ = wait_for(Duration::from_secs(60), || async {
        let v = c.get("/api/v1/hosts/drill-long").await;
        v["resources"]["spool"]["pending"]
            .as_u64()
            .is_some_and(|p| p <= 3)
            .then_some(())
    })
    .await;
    assert_eq!(agent.proc.terminate(), Some(0));
    let (inst, produced, spooled, dropped) = spool_of(&adir);
    let d = c.get("/api/v1/delivery").await;
    let v = d
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["inst"] == inst.as_str())
        .cloned()
        .unwrap_or_default();
    let stored = v["stored"].as_u64().unwrap_or(0);
    let refused = v["refused"].as_u64().unwrap_or(0);
    let contiguous = v["contiguous"].as_u64().unwrap_or(0);
    let in_spool = spooled.iter().filter(|s| **s > contiguous).count() as u64;
    // Numbers the collector settled without storing them: the spool bound dropped them before
    // they were sent (the agent's `oldest_seq` moved past them). The agent's own counter may
    // be higher: it also counts dropped messages that had been sent and stored already.
    let dropped_unsent = contiguous.saturating_sub(stored + refused);
    let lost = produced as i64 - (stored + refused + dropped_unsent + in_spool) as i64;
    println!(
        "DRILL 4 long outage: produced {produced} stored {stored} dropped-before-sending {dropped_unsent} (agent counter {dropped}, reported in heartbeat {reported_dropped}) in_spool {in_spool} lost {lost}"
    );
    assert_eq!(
        lost, 0,
        "every message is stored, dropped-and-counted, or still spooled"
    );
    assert!(dropped_unsent > 0, "the bound dropped something");
    assert!(
        dropped_unsent <= dropped,
        "the agent counted every drop ({dropped_unsent} > {dropped})"
    );
    assert!(dropped >= reported_dropped);
}

/// 5. Forged retained acks while the collector is down, on a broker without ACLs (Mosquitto,
/// anonymous): unsigned, and signed with another identity's key, each claiming everything is
/// stored. Enrolled agents must apply none of them and keep their backlog; after the collector
/// returns nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_5_forged_acks_while_the_collector_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mosquitto::start();
    let cdir = dir.path().join("collector");
    let broker = Broker::External(m.url());
    let secure = ["--security-mode", "enrolled"];
    let mut c = Collector::start(&broker, &cdir, &secure);
    let out = std::process::Command::new(bin("dozor-collector"))
        .arg("--data-dir")
        .arg(&cdir)
        .args(["token", "create", "--mo", MO])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let extra = vec![
        "--enroll-token".to_string(),
        token,
        "--enroll-url".into(),
        format!("http://{}", c.http),
        "--enroll-allow-plain-http".into(),
    ];
    let mut fleet = Fleet::start_with(dir.path(), &m.url(), extra).await;
    wait_all_online(&c).await;
    // The attacker (anonymous on this broker) learns every agent's instance id from the traffic.
    let d = c.get("/api/v1/delivery").await;
    let insts: Vec<String> = (0..AGENTS)
        .map(|i| {
            d.as_array()
                .into_iter()
                .flatten()
                .find(|v| v["host"] == Fleet::host(i))
                .and_then(|v| v["inst"].as_str())
                .expect("instance of every agent")
                .to_string()
        })
        .collect();
    c.proc.terminate();
    let other_key = dozor_proto::auth::Secret([7; 32]).mac_key();
    for (i, inst) in insts.iter().enumerate() {
        let t = dozor_proto::topic(MO, &Fleet::host(i), dozor_proto::Kind::Ack);
        let ack = serde_json::json!({"v": 1, "inst": inst, "acked_seq": 1_000_000_000u64, "ts": now_ms()});
        let json = serde_json::to_vec(&ack).unwrap();
        for payload in [json.clone(), dozor_proto::auth::sign(&other_key, &t, &json)] {
            let status = std::process::Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &m.port.to_string(),
                    "-q",
                    "1",
                    "-r",
                ])
                .arg("-t")
                .arg(&t)
                .arg("-m")
                .arg(String::from_utf8(payload).unwrap())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    // The agents keep producing into their spools while the collector is away; stopped (the
    // spool is locked while an agent runs), each still holds its backlog.
    tokio::time::sleep(Duration::from_secs(8)).await;
    fleet.stop();
    for i in 0..AGENTS {
        let (_, _, spooled, _) = spool_of(&fleet.dir.join(Fleet::host(i)));
        assert!(
            spooled.len() >= 5,
            "agent {i} dropped its backlog on a forged ack: {} left",
            spooled.len()
        );
    }
    for i in 0..AGENTS {
        fleet.agents[i] = fleet.start_agent(i, &m.url());
    }
    let c = Collector::start(&broker, &cdir, &secure);
    wait_drained(&c, &all_hosts(), Duration::from_secs(90)).await;
    fleet.stop();
    let t = tally(&c, &fleet, "5 forged acks while the collector is down").await;
    assert_clean(&t);
}

/// 6. Agents `kill -9`ed at random points with the link up (the collector confirming), then
/// restarted; finally a `kill -9` with the link down. Messages held only in memory when the
/// process dies may be lost, at most those of the last `spool.flush_after_secs`
/// (docs/reliability.md); everything the agent numbered while the link was down survives.
/// "Issued" is the agent's own record: the `issued seq=N` trace line it writes when it
/// numbers a message, before sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_6_agent_kill9_link_up_loses_at_most_the_bound() {
    const FLUSH_AFTER_SECS: u64 = 10;
    const KILLS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mosquitto::start();
    let port = m.port;
    let c = Collector::start(
        &Broker::External(m.url()),
        &dir.path().join("collector"),
        &[],
    );
    let mis_port = tcp_mis().await;
    let adir = dir.path().join("killed");
    let log = dir.path().join("killed.log");
    let mut args = agent_args(mis_port);
    args.extend([
        "--spool-flush-after-secs".to_string(),
        FLUSH_AFTER_SECS.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = |url: &str| {
        Agent::start_logged(
            url,
            MO,
            "drill-killed",
            &adir,
            &args,
            Some((&log, "warn,dozor_agent::spool=trace")),
        )
    };
    let mut agent = start(&m.url());
    // Random points: 2–7 s apart, from the clock's nanoseconds.
    let jitter = || {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Duration::from_millis(2_000 + u64::from(n % 5_000))
    };
    for _ in 0..KILLS {
        tokio::time::sleep(jitter()).await;
        agent.proc.kill9();
        agent = start(&m.url());
    }
    // Link down: the broker dies, the agent numbers messages for 5 s, then is killed.
    tokio::time::sleep(jitter()).await;
    m.proc.kill9();
    // The agent sees the closed socket at once; from then on every message is written as it
    // is numbered.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = issued_seqs(&log).len();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    agent.proc.kill9();
    let outage: Vec<u64> = issued_seqs(&log)[before..].to_vec();
    let on_disk = spool_of(&adir).2;
    let missing: Vec<u64> = outage
        .iter()
        .filter(|s| !on_disk.contains(s))
        .copied()
        .collect();
    let _m2 = Mosquitto::start_on(port);
    wait_port(port, Duration::from_secs(5));
    let url = format!("mqtt://127.0.0.1:{port}");
    agent = start(&url);
    wait_drained(&c, &["drill-killed".to_string()], Duration::from_secs(90)).await;
    assert_eq!(agent.proc.terminate(), Some(0));

    let issued = issued_seqs(&log);
    let (inst, _, spooled, _) = spool_of(&adir);
    // Let the last confirmed batch land, then count (as `tally` does).
    let count = || async {
        let d = c.get("/api/v1/delivery").await;
        let v = d
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["inst"] == inst.as_str())
            .cloned()
            .unwrap_or_default();
        let stored = v["stored"].as_u64().unwrap_or(0);
        let contiguous = v["contiguous"].as_u64().unwrap_or(0);
        let above = v["pending_above"].as_u64().unwrap_or(0);
        let in_spool =
            (spooled.iter().filter(|s| **s > contiguous).count() as u64).saturating_sub(above);
        (stored, in_spool)
    };
    let _ = wait_for(Duration::from_secs(20), || async {
        let (stored, in_spool) = count().await;
        (stored + in_spool >= issued.len() as u64).then_some(())
    })
    .await;
    let (stored, in_spool) = count().await;
    let lost = issued.len() as i64 - (stored + in_spool) as i64;
    println!(
        "DRILL 6 agent kill -9 x{KILLS} link up + 1 link down: issued {} stored {stored} in_spool {in_spool} lost {lost} (bound {} per kill: 2 msgs/s x {FLUSH_AFTER_SECS} s); outage: {} numbered, {} missing from the file at the kill",
        issued.len(),
        2 * FLUSH_AFTER_SECS,
        outage.len(),
        missing.len()
    );
    assert!(issued.len() > 20, "the agent numbered messages");
    assert!(
        lost >= 0 && lost as u64 <= KILLS as u64 * 2 * FLUSH_AFTER_SECS,
        "lost {lost} beyond the bound"
    );
    let db = c.data_dir.join("dozor.db");
    assert_eq!(
        (history_heartbeats(&db, "drill-killed") - stored as i64).max(0),
        0,
        "counted twice"
    );
    // Link down: every message numbered during the outage was in the file when the agent died.
    assert!(
        outage.len() >= 4,
        "the agent numbered messages during the outage"
    );
    assert!(
        missing.is_empty(),
        "outage messages {missing:?} of {outage:?} were not on disk at the kill"
    );
}
