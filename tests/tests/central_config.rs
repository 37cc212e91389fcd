//! Central probe configuration (issue 12): the region's targets are defined once in the
//! collector's `[probes]`; changing the МИС URL there is one edit of the file, and every agent
//! probes the new URL within a minute — enrolled agents behind the embedded broker, agents of
//! an open-mode collector, an agent that was off during the change once it returns — while a
//! `cfg` forged on a broker without ACLs is refused by the agent.
//!
//! The old МИС answers 503 and the new one 200, so the collector's own probe data (the host
//! list's `probes.mis.ok`) shows which URL each agent probes.

use dozor_tests::enrolled::{self, enroll_args};
use dozor_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MO: &str = "1.2.643.5.1.13.13.12.2.27.1234";
/// Realistic cadence: probes every 30 s, so "within 60 s" is not won by probing every second.
const AGENT_ARGS: [&str; 6] = [
    "--interval-secs",
    "5",
    "--probe-interval-secs",
    "30",
    "--probe-timeout-ms",
    "2000",
];

/// Writes the collector's configuration with the region's МИС at `mis_url`, checked for
/// changes every second.
fn write_config(path: &Path, mis_url: &str) {
    write_config_watched(path, mis_url, 1);
}

fn write_config_watched(path: &Path, mis_url: &str, watch_secs: u32) {
    let text = format!(
        "[probes]\nwatch_secs = {watch_secs}\n\n[[probes.target]]\nname = \"mis\"\nurl = \"{mis_url}\"\n"
    );
    // Write-then-rename: the collector never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// An enrollment token for the test's МО.
fn token(data_dir: &Path) -> String {
    enrolled::token(data_dir, MO, &[])
}

fn start_agent(mqtt_url: &str, dir: &Path, host: &str, extra: &[String]) -> Agent {
    let mut args: Vec<&str> = AGENT_ARGS.to_vec();
    args.extend(extra.iter().map(String::as_str));
    Agent::start(mqtt_url, MO, host, &dir.join(host), &args)
}

/// `probes.mis.ok` of a host in the collector's host list (`None` before its first МИС probe).
async fn mis_ok(c: &Collector, host: &str) -> Option<bool> {
    c.host(host).await?["probes"]["mis"]["ok"].as_bool()
}

/// Waits until every host's latest МИС probe reads `ok`.
async fn wait_mis(c: &Collector, hosts: &[&str], ok: bool, within: Duration) -> Duration {
    let start = Instant::now();
    wait_for(within, || async {
        for h in hosts {
            if mis_ok(c, h).await != Some(ok) {
                return None;
            }
        }
        Some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!("not every one of {hosts:?} probed the МИС with ok={ok} within {within:?}")
    });
    start.elapsed()
}

/// The central configuration an agent saved beside its identity.
fn saved(agent_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(agent_dir.join("central.json")).expect("central.json");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_enrolled_agent_probes_the_new_mis_url_within_a_minute() {
    let old = FakeMis::start().await;
    old.set(MIS_500);
    let new = FakeMis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("collector.toml");
    write_config(&conf, &old.url());
    let cdir = dir.path().join("collector");
    let port = free_port();
    let conf_arg = conf.display().to_string();
    let c = Collector::start(
        &Broker::Embedded(port),
        &cdir,
        &["--security-mode", "enrolled", "--config", &conf_arg],
    );
    let tok = token(&cdir);
    let hosts = ["pc-1", "pc-2", "pc-3"];
    let _agents: Vec<Agent> = hosts
        .iter()
        .map(|h| start_agent(&c.mqtt_url(), dir.path(), h, &enroll_args(&c, &tok)))
        .collect();
    // Nothing local is configured: the old МИС they probe came from the collector.
    wait_mis(&c, &hosts, false, Duration::from_secs(60)).await;
    let v1 = saved(&dir.path().join("pc-1"))["version"].as_u64().unwrap();

    write_config(&conf, &new.url());
    let took = wait_mis(&c, &hosts, true, Duration::from_secs(60)).await;
    eprintln!("every agent probed the new МИС URL {took:?} after the edit");
    for h in hosts {
        let s = saved(&dir.path().join(h));
        assert!(s["version"].as_u64().unwrap() > v1, "{h}: {s}");
        assert_eq!(s["targets"][0]["url"], new.url(), "{h}: {s}");
    }
    assert!(
        c.metric("dozor_cfg_reloads_total{outcome=\"applied\"}")
            .await
            >= 1.0
    );
    assert!(c.metric("dozor_cfg_sent_total").await >= 6.0);

    // A broken edit is refused, named, and changes nothing.
    std::fs::write(
        &conf,
        "[probes]\n[[probes.target]]\nname = \"mis\"\nurl = \"ftp://x\"\n",
    )
    .unwrap();
    wait_for(Duration::from_secs(15), || async {
        (c.metric("dozor_cfg_reloads_total{outcome=\"invalid\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await
    .expect("the invalid file is counted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for h in hosts {
        assert_eq!(mis_ok(&c, h).await, Some(true), "{h}");
        assert_eq!(saved(&dir.path().join(h))["targets"][0]["url"], new.url());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_offline_during_the_change_probes_the_new_url_when_it_returns() {
    // Open mode (the harness default): configurations go unsigned, to every host heard from.
    let old = FakeMis::start().await;
    old.set(MIS_500);
    let new = FakeMis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("collector.toml");
    write_config(&conf, &old.url());
    let conf_arg = conf.display().to_string();
    let c = Collector::start(
        &Broker::Embedded(free_port()),
        &dir.path().join("collector"),
        &["--config", &conf_arg],
    );
    let online = ["pc-1", "pc-2"];
    let _agents: Vec<Agent> = online
        .iter()
        .map(|h| start_agent(&c.mqtt_url(), dir.path(), h, &[]))
        .collect();
    let mut away = start_agent(&c.mqtt_url(), dir.path(), "pc-away", &[]);
    // A PC whose МИС is pinned locally (its own replica, here the old one): the local one wins.
    let pin = format!("mis={}", old.url());
    let _pinned = start_agent(
        &c.mqtt_url(),
        dir.path(),
        "pc-pinned",
        &["--probe".into(), pin],
    );
    wait_mis(
        &c,
        &["pc-1", "pc-2", "pc-away", "pc-pinned"],
        false,
        Duration::from_secs(60),
    )
    .await;
    let v1 = saved(&dir.path().join("pc-away"))["version"]
        .as_u64()
        .unwrap();
    away.proc.terminate();

    write_config(&conf, &new.url());
    wait_mis(&c, &online, true, Duration::from_secs(60)).await;
    // The pinned PC took the new version but still probes its own МИС.
    wait_for(Duration::from_secs(15), || async {
        (saved(&dir.path().join("pc-pinned"))["targets"][0]["url"] == new.url()).then_some(())
    })
    .await
    .expect("the pinned PC applies the new version");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mis_ok(&c, "pc-pinned").await,
        Some(false),
        "the local pin must win"
    );
    // While it was off, its saved configuration stayed the old one.
    assert_eq!(
        saved(&dir.path().join("pc-away"))["version"].as_u64(),
        Some(v1)
    );

    let _back = start_agent(&c.mqtt_url(), dir.path(), "pc-away", &[]);
    let took = wait_mis(&c, &["pc-away"], true, Duration::from_secs(60)).await;
    eprintln!("the returning agent probed the new МИС URL {took:?} after its start");
    let s = saved(&dir.path().join("pc-away"));
    assert!(s["version"].as_u64().unwrap() > v1, "{s}");
    assert_eq!(s["targets"][0]["url"], new.url());
}

/// An HTTP server that counts the requests it answers (200): the attacker's МИС.
async fn counting_server() -> (String, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/evil", l.local_addr().unwrap());
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, hits)
}

/// Publishes a retained payload as an anonymous client of the (ACL-less) broker.
fn mosquitto_pub(port: u16, topic: &str, payload: &[u8]) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), payload).unwrap();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-r",
            "-t",
            topic,
            "-f",
        ])
        .arg(f.path())
        .status()
        .expect("mosquitto_pub");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_cfg_on_a_broker_without_acls_is_refused_and_counted() {
    let m = Mosquitto::start();
    let mis = FakeMis::start().await;
    let (evil_url, evil_hits) = counting_server().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("collector.toml");
    write_config(&conf, &mis.url());
    let cdir = dir.path().join("collector");
    let conf_arg = conf.display().to_string();
    let c = Collector::start(
        &Broker::External(m.url()),
        &cdir,
        &["--security-mode", "enrolled", "--config", &conf_arg],
    );
    let tok = token(&cdir);
    let adir: PathBuf = dir.path().join("pc-victim");
    let log = dir.path().join("pc-victim.log");
    let mut args: Vec<String> = AGENT_ARGS.iter().map(|s| s.to_string()).collect();
    args.extend(enroll_args(&c, &tok));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _victim = Agent::start_logged(
        &m.url(),
        MO,
        "pc-victim",
        &adir,
        &args,
        Some((&log, "info")),
    );
    wait_mis(&c, &["pc-victim"], true, Duration::from_secs(60)).await;
    let version = saved(&adir)["version"].as_u64().unwrap();

    // Anyone on this broker may publish to the victim's cfg topic: a newer version pointing
    // the МИС probe at the attacker, unsigned and then signed with a key that is not the
    // victim's.
    let topic = dozor_proto::topic(MO, "pc-victim", dozor_proto::Kind::Cfg);
    let forged = serde_json::to_vec(&dozor_proto::Cfg {
        v: dozor_proto::SCHEMA_VERSION,
        mo: MO.into(),
        host: "pc-victim".into(),
        version: version + 1_000_000,
        ts: unix_ms(),
        targets: vec![dozor_proto::CfgTarget {
            name: "mis".into(),
            category: dozor_proto::Category::Mis,
            url: evil_url.clone(),
            timeout_ms: None,
        }],
    })
    .unwrap();
    mosquitto_pub(m.port, &topic, &forged);
    let other_key = dozor_proto::auth::Secret([7; 32]).mac_key();
    mosquitto_pub(
        m.port,
        &topic,
        &dozor_proto::auth::sign(&other_key, &topic, &forged),
    );

    // Both refused, each counted (logged once a minute per reason, with the running total).
    let logged = wait_for(Duration::from_secs(15), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let refusals: Vec<String> = text
            .lines()
            .filter(|l| l.contains("refused a central probe configuration"))
            .map(str::to_string)
            .collect();
        (refusals.len() >= 2).then_some(refusals)
    })
    .await
    .expect("the agent logs both refusals");
    assert!(
        logged[0].contains("reason=\"unsigned\"") && logged[0].contains("refused_total=1"),
        "{logged:?}"
    );
    assert!(
        logged[1].contains("reason=\"bad_mac\"") && logged[1].contains("refused_total=2"),
        "{logged:?}"
    );
    // Nothing applied: the saved version, the probed URL and the attacker's silence.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(saved(&adir)["version"].as_u64(), Some(version));
    assert_eq!(saved(&adir)["targets"][0]["url"], mis.url());
    assert_eq!(mis_ok(&c, "pc-victim").await, Some(true));
    assert_eq!(
        evil_hits.load(Ordering::SeqCst),
        0,
        "the agent probed the attacker's URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_an_edit_at_once() {
    // The file is checked only hourly: the edit reaches the agent because of the signal.
    let old = FakeMis::start().await;
    old.set(MIS_500);
    let new = FakeMis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("collector.toml");
    write_config_watched(&conf, &old.url(), 3600);
    let conf_arg = conf.display().to_string();
    let c = Collector::start(
        &Broker::Embedded(free_port()),
        &dir.path().join("collector"),
        &["--config", &conf_arg],
    );
    let _agent = start_agent(&c.mqtt_url(), dir.path(), "pc-1", &[]);
    wait_mis(&c, &["pc-1"], false, Duration::from_secs(60)).await;
    write_config_watched(&conf, &new.url(), 3600);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mis_ok(&c, "pc-1").await,
        Some(false),
        "not before the signal"
    );
    let status = Command::new("kill")
        .args(["-HUP", &c.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_mis(&c, &["pc-1"], true, Duration::from_secs(15)).await;
    assert_eq!(
        c.metric("dozor_cfg_reloads_total{outcome=\"applied\"}")
            .await,
        1.0
    );
}
