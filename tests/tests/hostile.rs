//! Hostile and broken input against a real collector: every case is rejected with its reason
//! counted on /metrics, nothing panics, memory stays bounded.

use dozor_proto::{DiskUsage, Envelope, Heartbeat, SCHEMA_VERSION};
use dozor_tests::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::Duration;

const MOS: [&str; 4] = [
    "1.2.643.5.1.13.13.12.2.27.1",
    "1.2.643.5.1.13.13.12.2.27.2",
    "1.2.643.5.1.13.13.12.2.27.3",
    "1.2.643.5.1.13.13.12.2.27.4",
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn hb(mo: &str, host: &str, seq: u64, ts: i64) -> serde_json::Value {
    let e = Envelope {
        v: SCHEMA_VERSION,
        mo: mo.into(),
        host: host.into(),
        inst: format!("i{host}"),
        seq,
        ts,
        replay: false,
        body: Heartbeat {
            uptime_secs: 10,
            cpu_pct: 3.0,
            mem_used_bytes: 1 << 30,
            mem_total_bytes: 4 << 30,
            load: Some([0.1, 0.1, 0.1]),
            disks: vec![DiskUsage {
                mount: "/".into(),
                total_bytes: 100,
                used_bytes: 10,
            }],
            interval_secs: 30,
            spool: None,
        },
    };
    serde_json::to_value(e).unwrap()
}

fn topic(mo: &str, host: &str) -> String {
    format!("dozor/v1/{mo}/{host}/hb")
}

async fn connect(port: u16, id: &str) -> AsyncClient {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(1000);
    let (c, mut el) = AsyncClient::new(o, 10_000);
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    c
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Starts a collector with small caps and a strict roster of four МО.
fn capped_collector(dir: &std::path::Path, broker: &Broker) -> Collector {
    let roster = dir.join("roster.toml");
    let mut r = String::new();
    for (i, mo) in MOS.iter().enumerate() {
        r.push_str(&format!(
            "[[mo]]\noid = \"{mo}\"\nname = \"МО {i}\"\nplanned_arm = 10\n"
        ));
    }
    std::fs::write(&roster, r).unwrap();
    let cfg = dir.join("collector.toml");
    std::fs::write(&cfg, "[limits]\nmax_hosts = 1000\nmax_hosts_per_mo = 400\nmax_msgs_per_host_per_min = 100\nmax_future_secs = 300\nmax_age_days = 30\n").unwrap();
    Collector::start(
        broker,
        &dir.join("data"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--roster",
            roster.to_str().unwrap(),
            "--roster-strict",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_rejected_and_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = capped_collector(dir.path(), &Broker::Embedded(0));
    let client = connect(c.mqtt_port, "hostile").await;
    let mo = MOS[0];
    let now = now_ms();
    let send = |t: String, p: Vec<u8>| {
        let client = client.clone();
        async move { client.publish(t, QoS::AtLeastOnce, false, p).await.unwrap() }
    };
    let js = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();

    // One valid message first: it must be accepted.
    send(topic(mo, "ok-1"), js(hb(mo, "ok-1", 1, now))).await;
    send(topic(mo, "x"), vec![b' '; 20 * 1024]).await;
    send(topic(mo, "x"), b"\xff\xfe\xfd".to_vec()).await;
    send(topic(mo, "x"), b"{\"v\":1,".to_vec()).await;
    let mut v = hb(mo, "x", 1, now);
    v["v"] = 99.into();
    send(topic(mo, "x"), js(v)).await;
    send(topic(mo, "x"), js(hb(mo, "someone-else", 1, now))).await;
    let mut v = hb(mo, "x", 2, now);
    v["body"]["cpu_pct"] = (-5.0).into();
    send(topic(mo, "x"), js(v)).await;
    let mut v = hb(mo, "x", 3, now);
    v["body"]["mem_used_bytes"] = (u64::MAX).into();
    send(topic(mo, "x"), js(v)).await;
    let mut v = hb(mo, "x", 4, now);
    v["body"]["load"] = serde_json::json!([1e9, 1.0, 1.0]);
    send(topic(mo, "x"), js(v)).await;
    // Far past (before 2020) and far future (after 2100): absurd on any clock.
    send(topic(mo, "x"), js(hb(mo, "x", 5, 1_000_000_000_000))).await;
    send(topic(mo, "x"), js(hb(mo, "x", 6, 5_000_000_000_000))).await;
    // A replay 60 days old, and one a day ahead, from a host whose clock is right.
    send(topic(mo, "clock"), js(hb(mo, "clock", 1, now))).await;
    let mut v = hb(mo, "clock", 2, now - 60 * 86_400_000);
    v["replay"] = true.into();
    send(topic(mo, "clock"), js(v)).await;
    let mut v = hb(mo, "clock", 3, now + 86_400_000);
    v["replay"] = true.into();
    send(topic(mo, "clock"), js(v)).await;
    // Unknown МО with a strict roster.
    send(
        topic("1.2.643.9.9.9", "y"),
        js(hb("1.2.643.9.9.9", "y", 1, now)),
    )
    .await;
    // A wrong topic shape is not even subscribed to; a wrong kind for the body is bad_json.
    send(format!("dozor/v1/{mo}/x/probe"), js(hb(mo, "x", 7, now))).await;
    // One host flooding: 300 messages in a burst, limit 100 a minute.
    for seq in 1..=300 {
        send(topic(mo, "flood"), js(hb(mo, "flood", seq, now))).await;
    }

    let expect = [
        ("oversized", 1.0),
        ("bad_utf8", 1.0),
        ("bad_json", 2.0),
        ("unknown_version", 1.0),
        ("identity_mismatch", 1.0),
        ("bad_value", 3.0),
        ("bad_timestamp", 2.0),
        ("timestamp_range", 2.0),
        ("unknown_mo", 1.0),
        ("flood", 200.0),
    ];
    let ok = wait_for(Duration::from_secs(15), || async {
        for (reason, n) in expect {
            if c.metric(&format!(
                "dozor_messages_rejected_total{{reason=\"{reason}\"}}"
            ))
            .await
                < n
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    let metrics = c.text("/metrics").await;
    assert!(ok.is_some(), "not all rejections counted:\n{metrics}");
    for (reason, n) in expect {
        let got = c
            .metric(&format!(
                "dozor_messages_rejected_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert_eq!(got, n, "reason {reason}");
    }
    // The valid ones were accepted: ok-1, clock#1 and the first 100 of the flood.
    assert_eq!(
        c.metric("dozor_messages_accepted_total{kind=\"hb\"}").await,
        102.0
    );

    assert_eq!(c.get("/healthz").await["status"], "ok", "still alive");
}

async fn fleet_clients(port: u16, round: u64) -> Vec<AsyncClient> {
    let mut v = Vec::new();
    for k in 0..4 {
        v.push(connect(port, &format!("fake-fleet-{round}-{k}")).await);
    }
    v
}

/// 100,000 distinct fake host ids. Run through Mosquitto: the embedded broker (rumqttd 0.20)
/// caches every distinct topic it has seen (`DataLog::publish_filters`), about 1 KB each, which
/// is the broker's memory, not the collector's; see docs/reliability.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_fake_hosts_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start();
    let c = capped_collector(dir.path(), &Broker::External(mosquitto.url()));
    // 100,000 distinct fake host ids, in two rounds of 50,000: at most max_hosts are tracked,
    // the rest are refused, and the second round costs no more memory than the first.
    let mut rss = vec![rss_kb(c.proc.pid())];
    for round in 0..2u64 {
        let received_before = c.metric("dozor_messages_received_total").await;
        let started = std::time::Instant::now();
        let half = 50_000u64;
        let clients = fleet_clients(mosquitto.port, round).await;
        let mut handles = Vec::new();
        for (k, client) in clients.into_iter().enumerate() {
            handles.push(tokio::spawn(async move {
                let mut i = k as u64;
                while i < half {
                    let n = round * half + i;
                    let mo = MOS[(n % 4) as usize];
                    let host = format!("fake-{n}");
                    let body = serde_json::to_vec(&hb(mo, &host, 1, now_ms())).unwrap();
                    client
                        .publish(topic(mo, &host), QoS::AtLeastOnce, false, body)
                        .await
                        .unwrap();
                    i += 4;
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let done = wait_for(Duration::from_secs(120), || async {
            (c.metric("dozor_messages_received_total").await >= received_before + half as f64)
                .then_some(())
        })
        .await;
        assert!(
            done.is_some(),
            "collector did not receive all fake hosts' messages"
        );
        println!(
            "round {round}: 50,000 fake-host messages received in {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kb(c.proc.pid()));
    }
    let hosts = c.get("/api/v1/hosts").await;
    let tracked = hosts.as_array().unwrap().len();
    assert!(tracked <= 1000, "tracked {tracked} hosts, cap is 1000");
    let too_many = c
        .metric("dozor_messages_rejected_total{reason=\"too_many_hosts\"}")
        .await;
    assert!(too_many >= 99_000.0, "too_many_hosts = {too_many}");
    println!(
        "collector RSS kB: start {}, after 50,000 fake hosts {}, after 100,000 {}; tracked {tracked}",
        rss[0], rss[1], rss[2]
    );
    assert!(
        rss[2] < rss[1] + 16 * 1024,
        "memory grows with fake hosts: {rss:?} kB"
    );
    assert!(rss[2] < 512 * 1024, "RSS {} kB", rss[2]);
    assert_eq!(c.get("/healthz").await["status"], "ok", "still alive");
}
