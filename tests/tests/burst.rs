//! A burst far bigger than the embedded broker's log reaches the collector whole: the gateway
//! holds the publishers back (backpressure) instead of rumqttd dropping what the collector has
//! not read yet (docs/benchmarks.md, "Embedded broker without drops").

use dozor_tests::*;
use std::process::Command;
use std::time::Duration;

/// Heartbeats in the burst, ~300 bytes each: ~6 MB, 16× the broker's log of 384 KiB per
/// subscription at `backlog_kib = 256` (it held 64 MiB before and dropped above that).
const MESSAGES: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_bigger_than_the_brokers_log_is_accepted_whole() {
    burst(4, 256).await;
}

/// The same through 200 connections at once into the smallest window (64 KiB, logs of 96 KiB):
/// 200 reads of 4 KiB in flight when the window fills (800 KiB) would overrun the log if the
/// gate checked the window per read instead of per publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_many_connections_is_accepted_whole() {
    burst(200, 64).await;
}

async fn burst(connections: u32, backlog_kib: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nbacklog_kib = {backlog_kib}\n[limits]\nmax_msgs_per_host_per_min = 1000000\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let collector = Collector::start(
        &Broker::Embedded(free_port()),
        &data,
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(
        collector
            .metric("dozor_mqtt_broker_backlog_limit_bytes")
            .await,
        (backlog_kib * 1024) as f64
    );
    // Let the collector subscribe before the burst (a publish before that has no subscriber).
    wait_for(Duration::from_secs(10), || async {
        (collector.metric("dozor_ready{check=\"broker\"}").await == 1.0).then_some(())
    })
    .await
    .expect("collector connected to its broker");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Unpaced, QoS 1, through the gateway: rumqttd acknowledges each publish as it appends it
    // to its log, so without backpressure the load generator runs far ahead of the collector.
    let out = Command::new(bin("dozor-loadgen"))
        .args(["--mqtt-url", &collector.mqtt_url()])
        .args(["--hosts", "200", "--mo-count", "4"])
        .args(["--connections", &connections.to_string()])
        .args(["--messages", &MESSAGES.to_string(), "--qos", "1"])
        .args(["--timeout-secs", "240"])
        .output()
        .expect("run dozor-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dozor-loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", stdout.trim());

    let accepted = wait_for(Duration::from_secs(120), || async {
        let a = collector
            .metric("dozor_messages_accepted_total{kind=\"hb\"}")
            .await;
        (a >= MESSAGES as f64).then_some(a)
    })
    .await;
    let pauses = collector
        .metric("dozor_mqtt_gate_backlog_pauses_total")
        .await;
    let resets = collector
        .metric("dozor_mqtt_gate_backlog_resets_total")
        .await;
    let got = collector
        .metric("dozor_messages_accepted_total{kind=\"hb\"}")
        .await;
    println!("accepted {got} of {MESSAGES}, backlog pauses {pauses}, resets {resets}");
    assert_eq!(
        accepted,
        Some(MESSAGES as f64),
        "every heartbeat of the burst accepted (got {got})"
    );
    assert_eq!(
        collector.metric("dozor_messages_duplicate_total").await,
        0.0
    );
    assert!(
        pauses >= 1.0,
        "the burst outran the collector, so the gateway must have paused its readers"
    );
    assert_eq!(resets, 0.0, "the collector never stalled for 10 s");
    assert_eq!(
        collector.metric("dozor_mqtt_broker_backlog_bytes").await,
        0.0,
        "everything forwarded was received"
    );
}
