//! A replay storm through Mosquitto drains with a collector slower than the broker's window
//! (issue 15: the replay-storm livelock).
//!
//! Found in the region bench (docs/benchmarks.md, "A region's day"): with an external broker
//! the collector acknowledges a publish only after its batch is committed, so Mosquitto keeps
//! up to `max_inflight_messages` (20,000, as in deploy/mosquitto.conf and this harness)
//! deliveries in flight to it, and its PINGRESP is written behind them. A collector that needed
//! longer than `mqtt.keepalive_secs` to read one window failed its keep-alive check
//! (rumqttc's `Last pingreq isn't acked`), reconnected, and was sent the window again: 249,803
//! duplicates and no headway in 6 minutes.
//!
//! Here the keep-alive is 5 s and the collector is made to spend 400 µs on each message
//! (`DOZOR_TEST_INGEST_DELAY_US`, a test-only knob of the ingest task): at most 2,500 msg/s,
//! so a window of 20,000 takes at least 8 s to read. Six hosts publish 60,000 heartbeats at
//! QoS 1 as fast as the broker takes them. Asserted: every heartbeat is stored exactly once
//! within 120 s (at least 24 s of work at that rate), without a reconnect.
//!
//! Before the fix (`ingest::heard_from_broker`) the connection dropped with `Last pingreq
//! isn't acked` every ~10 s of the drain (30.11.2026: 2 reconnects and 305 duplicates, drained
//! in 29.0 s; after it 0 and 0). The pipeline keeps up here, so little is redelivered: it is
//! the slow reader that fails the keep-alive check, whatever else is slow; in the region bench
//! the pipeline was slow too and each drop cost most of a window.

use dozor_tests::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOSTS: u64 = 6;
const MESSAGES: u64 = 60_000;
const DRAIN_BOUND: Duration = Duration::from_secs(120);

/// (committed, stored) summed over every agent instance.
async fn delivered(c: &Collector) -> (u64, u64) {
    let d = c.get("/api/v1/delivery").await;
    let sum = |k: &str| {
        d.as_array()
            .map(|a| a.iter().filter_map(|i| i[k].as_u64()).sum())
            .unwrap_or(0)
    };
    (sum("committed"), sum("stored"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_storm_drains_through_a_slow_collector() {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("collector.toml");
    std::fs::write(
        &conf,
        "[mqtt]\nkeepalive_secs = 5\n[limits]\nmax_msgs_per_host_per_min = 1000000\n",
    )
    .unwrap();
    let conf_arg = conf.display().to_string();
    let coll = Collector::start_env(
        &Broker::External(mosq.url()),
        &dir.path().join("data"),
        &["--config", &conf_arg],
        &[("DOZOR_TEST_INGEST_DELAY_US", "400")],
    );
    assert!(
        wait_for(Duration::from_secs(20), || async {
            (coll.metric("dozor_ready{check=\"broker\"}").await == 1.0).then_some(())
        })
        .await
        .is_some(),
        "collector did not connect to Mosquitto"
    );

    let start = Instant::now();
    let out = tokio::task::spawn_blocking({
        let url = mosq.url();
        move || {
            Command::new(bin("dozor-loadgen"))
                .args(["--mqtt-url", &url, "--mo-count", "1", "--connections", "2"])
                .args(["--hosts", &HOSTS.to_string()])
                .args(["--messages", &MESSAGES.to_string()])
                .args(["--qos", "1", "--timeout-secs", "120", "--run-id", "1"])
                .stderr(Stdio::inherit())
                .output()
                .expect("run dozor-loadgen")
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dozor-loadgen failed: {text}");
    eprintln!(
        "published in {:.1} s: {}",
        start.elapsed().as_secs_f64(),
        text.trim()
    );

    let mut last = delivered(&coll).await;
    while last.0 < MESSAGES && start.elapsed() < DRAIN_BOUND {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = delivered(&coll).await;
    }
    let drained = last.0 >= MESSAGES;
    let secs = start.elapsed().as_secs_f64();
    let reconnects = coll.metric("dozor_mqtt_reconnects_total").await;
    let duplicates = coll.metric("dozor_messages_duplicate_total").await;
    let accepted = coll
        .metric("dozor_messages_accepted_total{kind=\"hb\"}")
        .await;
    let received = coll.metric("dozor_messages_received_total").await;
    let peak = coll.metric("dozor_ingest_queue_peak_messages").await;
    eprintln!(
        "LIVELOCK drained={drained} secs={secs:.1} committed={} stored={} accepted={accepted} \
         received={received} duplicates={duplicates} reconnects={reconnects} queue_peak={peak}",
        last.0, last.1
    );
    assert!(
        drained,
        "backlog not drained within {DRAIN_BOUND:?}: {} of {MESSAGES} committed, {reconnects} \
         reconnects, {duplicates} duplicates",
        last.0
    );
    assert_eq!(reconnects, 0.0, "reconnects while draining");
    // Each heartbeat stored once: the ledger counts each (instance, seq) once, and every
    // redelivered one was recognised as a duplicate.
    assert_eq!(last.1, MESSAGES, "stored once each");
    assert_eq!(accepted, MESSAGES as f64, "accepted once each");
    assert!(
        (1.0..=32_768.0).contains(&peak),
        "the ingest queue's peak is reported and within its bound: {peak}"
    );
    let hosts: Value = coll.get("/api/v1/hosts").await;
    assert_eq!(
        hosts.as_array().map(Vec::len),
        Some(HOSTS as usize),
        "{hosts}"
    );
}
