//! The vertical slice end to end: real agent → real broker (embedded or Mosquitto) → real
//! collector → HTTP API.

use dozor_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const MO: &str = "1.2.643.5.1.13.13.12.2.27.1001";
/// Agent keep-alive in these tests; the broker declares it gone after 1.5 × this.
const KEEPALIVE_SECS: u64 = 2;

struct Setup {
    collector: Collector,
    mis: FakeMis,
    lis_port: u16,
    _mosquitto: Option<Mosquitto>,
    dir: tempfile::TempDir,
}

async fn setup(external: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = external.then(Mosquitto::start);
    let broker = match &mosquitto {
        Some(m) => Broker::External(m.url()),
        None => Broker::Embedded(0),
    };
    let collector = Collector::start(&broker, &dir.path().join("collector"), &[]);
    let mis = FakeMis::start().await;
    let lis = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lis_port = lis.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let _ = lis.accept().await;
        }
    });
    Setup {
        collector,
        mis,
        lis_port,
        _mosquitto: mosquitto,
        dir,
    }
}

fn start_agent(s: &Setup, host: &str) -> Agent {
    let ka = KEEPALIVE_SECS.to_string();
    let mis = format!("mis={}", s.mis.url());
    let lis = format!("lis=tcp://127.0.0.1:{}", s.lis_port);
    Agent::start(
        &s.collector.mqtt_url(),
        MO,
        host,
        &s.dir.path().join(host),
        &[
            "--role",
            "server",
            "--site",
            "Главный корпус",
            "--interval-secs",
            "1",
            "--keepalive-secs",
            &ka,
            "--probe-timeout-ms",
            "1000",
            "--probe",
            &mis,
            "--probe",
            &lis,
        ],
    )
}

async fn host_where(
    c: &Collector,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    wait_for(timeout, || async {
        let h = c.host(id).await?;
        pred(&h).then_some(h)
    })
    .await
}

async fn online_with_uptime_and_probes(external: bool) {
    let s = setup(external).await;
    let _agent = start_agent(&s, "srv-01");
    let start = Instant::now();
    let h = host_where(&s.collector, "srv-01", Duration::from_secs(5), |h| {
        h["state"] == "online"
            && h["uptime_secs"].as_u64().unwrap_or(0) > 0
            && h["probes"]["mis"]["ok"] == true
            && h["probes"]["lis"]["ok"] == true
    })
    .await;
    let h = h.expect("host online with uptime and probe results within 5 s");
    println!("online with uptime and probes after {:?}", start.elapsed());
    assert_eq!(h["mo"], MO);
    assert_eq!(h["role"], "server");
    assert_eq!(h["probes"]["mis"]["category"], "mis");
    assert!(h["last_seen"].is_string());
    let mos = s.collector.get("/api/v1/mos").await;
    let mo = mos
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["oid"] == MO)
        .expect("МО listed");
    assert_eq!(mo["servers_online"], 1);
    assert_eq!(mo["hosts_reaching_mis"], 1);
    let page = s.collector.text("/").await;
    assert!(
        page.contains("Медицинские организации"),
        "status page is Russian"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_host_online_with_uptime_and_probes() {
    online_with_uptime_and_probes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_host_online_with_uptime_and_probes() {
    online_with_uptime_and_probes(true).await;
}

async fn kill9_is_lost_within_keepalive(external: bool) {
    let s = setup(external).await;
    let mut agent = start_agent(&s, "srv-02");
    host_where(&s.collector, "srv-02", Duration::from_secs(10), |h| {
        h["state"] == "online"
    })
    .await
    .expect("online");
    let killed = Instant::now();
    agent.proc.kill9();
    let limit = Duration::from_millis(KEEPALIVE_SECS * 1500 + 1000);
    let h = host_where(&s.collector, "srv-02", limit, |h| h["state"] == "lost").await;
    let took = killed.elapsed();
    let h = h.unwrap_or_else(|| {
        panic!("not lost within {limit:?} (1.5 × keep-alive + 1 s of polling and delivery)")
    });
    println!("lost after {took:?}, reason {}", h["reason"]);
    assert_eq!(
        h["reason"], "last_will",
        "the broker's last will, not our heartbeat timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_kill9_is_lost_within_keepalive() {
    kill9_is_lost_within_keepalive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_kill9_is_lost_within_keepalive() {
    kill9_is_lost_within_keepalive(true).await;
}

async fn sigterm_is_offline_shutdown(external: bool) {
    let s = setup(external).await;
    let mut agent = start_agent(&s, "srv-03");
    host_where(&s.collector, "srv-03", Duration::from_secs(10), |h| {
        h["state"] == "online"
    })
    .await
    .expect("online");
    assert_eq!(agent.proc.terminate(), Some(0), "agent exits 0 on SIGTERM");
    let h = host_where(&s.collector, "srv-03", Duration::from_secs(5), |h| {
        h["state"] != "online"
    })
    .await
    .expect("state changes");
    assert_eq!(h["state"], "offline");
    assert_eq!(h["reason"], "shutdown");
    // And it stays offline: no last will fires later.
    tokio::time::sleep(Duration::from_millis(KEEPALIVE_SECS * 1500 + 500)).await;
    assert_eq!(
        s.collector.host("srv-03").await.unwrap()["state"],
        "offline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_sigterm_is_offline_shutdown() {
    sigterm_is_offline_shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sigterm_is_offline_shutdown() {
    sigterm_is_offline_shutdown(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_target_reports_error_class() {
    let s = setup(true).await;
    let _agent = start_agent(&s, "srv-04");
    host_where(&s.collector, "srv-04", Duration::from_secs(10), |h| {
        h["probes"]["mis"]["ok"] == true
    })
    .await
    .expect("mis ok first");
    for (mode, class) in [
        (MIS_500, "http_status"),
        (MIS_HANG, "timeout"),
        (MIS_DOWN, "connect"),
        (MIS_OK, ""),
    ] {
        s.mis.set(mode);
        let h = host_where(&s.collector, "srv-04", Duration::from_secs(10), |h| {
            let p = &h["probes"]["mis"];
            if class.is_empty() {
                p["ok"] == true
            } else {
                p["ok"] == false && p["error"] == class
            }
        })
        .await;
        assert!(
            h.is_some(),
            "mis probe did not report {class:?} within 10 s"
        );
    }
    // The other target was unaffected throughout.
    assert_eq!(
        s.collector.host("srv-04").await.unwrap()["probes"]["lis"]["ok"],
        true
    );
}

/// A frozen agent (SIGSTOP: the socket stays open, nothing is sent, as with a power cut behind
/// a NAT or a hung PC) is declared lost by the broker's keep-alive: within 1.5 × keep-alive.
async fn frozen_agent_is_lost_by_keepalive(external: bool) {
    let s = setup(external).await;
    let mut agent = start_agent(&s, "srv-05");
    host_where(&s.collector, "srv-05", Duration::from_secs(10), |h| {
        h["state"] == "online"
    })
    .await
    .expect("online");
    let pid = agent.proc.pid().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    let frozen = Instant::now();
    // Brokers check keep-alive on their own tick and count from the last packet received (up
    // to one heartbeat before the freeze): Mosquitto 2.0 measured 5.0 s, rumqttd 4.0 s for
    // a 2 s keep-alive. Allow 1.5 × keep-alive + 3 s.
    let limit = Duration::from_millis(KEEPALIVE_SECS * 1500 + 3000);
    let h = host_where(&s.collector, "srv-05", limit, |h| h["state"] == "lost").await;
    let took = frozen.elapsed();
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    let h = h.unwrap_or_else(|| panic!("frozen agent not lost within {limit:?}"));
    println!("frozen agent lost after {took:?}, reason {}", h["reason"]);
    assert_eq!(h["reason"], "last_will");
    assert!(
        took >= Duration::from_millis(KEEPALIVE_SECS * 1000 - 200),
        "lost too early: {took:?}"
    );
    agent.proc.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_frozen_agent_is_lost_by_keepalive() {
    frozen_agent_is_lost_by_keepalive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_frozen_agent_is_lost_by_keepalive() {
    frozen_agent_is_lost_by_keepalive(true).await;
}
