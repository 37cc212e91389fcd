//! Issue 13's availability rules with real agents and a real collector (docs/indicators.md).
//!
//! A collector restart never produces down: after the collector starts, a host not heard since
//! before the start is `unknown` until it had a fair chance to reconnect (the agents' backoff
//! cap + connect timeout + the host's tolerance), and then the stored history decides.

use dozor_tests::*;
use std::time::Duration;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.3101";

/// (host, up, down, unknown) ms of every host over `[from, now)`.
async fn by_host(c: &Collector, from: i64) -> Vec<(String, i64, i64, i64)> {
    let to = unix_ms();
    let v = c
        .get(&format!("/api/v1/availability?by=host&from={from}&to={to}"))
        .await;
    v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {v}"))
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or_default().to_string(),
                r["up_ms"].as_i64().unwrap_or(-1),
                r["down_ms"].as_i64().unwrap_or(-1),
                r["unknown_ms"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

async fn online(c: &Collector) -> Vec<String> {
    let hosts = c.get(&format!("/api/v1/hosts?mo={MO}&state=online")).await;
    hosts
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["host_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Two servers (availability around the clock, so any down second shows) report at a 1 s
/// interval through the collector's embedded broker, one of them through a relay standing in
/// for a slow channel. The collector is stopped (`kill9`: hard, else SIGTERM) for 10 s; after
/// its start the relay stays cut for 15 s more, so that agent cannot reconnect. Throughout,
/// and after it reconnected and replayed, no host has any down.
async fn restart(kill9: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    let port = free_port();
    let broker = Broker::Embedded(port);
    let mut c = Collector::start(&broker, &cdir, &[]);
    let relay = Relay::start(port).await;
    let args = [
        "--role",
        "server",
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "5",
        "--spool-resend-after-secs",
        "5",
    ];
    let direct = format!("mqtt://127.0.0.1:{port}");
    let slow = format!("mqtt://127.0.0.1:{}", relay.port);
    let mut agents = [
        Agent::start(&direct, MO, "srv-direct", &dir.path().join("a"), &args),
        Agent::start(&slow, MO, "srv-slow", &dir.path().join("b"), &args),
    ];
    let t0 = unix_ms();
    let up = wait_for(Duration::from_secs(20), || async {
        (online(&c).await.len() == 2).then_some(())
    })
    .await;
    assert!(up.is_some(), "both agents online");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Stop first, then cut: a channel cut while the collector still runs is observed (the
    // agent's last will marks it lost), which is not what this test is about.
    if kill9 {
        c.proc.kill9();
    } else {
        assert_eq!(c.proc.terminate(), Some(0), "collector stops cleanly");
    }
    relay.set(false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let c = Collector::start(&broker, &cdir, &[]);
    let started = unix_ms();
    // 15 s with the slow agent's channel cut: reports taken meanwhile show no down.
    let mut samples = 0;
    while unix_ms() - started < 15_000 {
        for (host, _, down, _) in by_host(&c, t0).await {
            assert_eq!(
                down,
                0,
                "{host}: down {down} ms at {} ms after the start",
                { unix_ms() - started }
            );
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(samples >= 10, "sampled the window ({samples} reports)");
    // The window was really exercised: the slow agent could not have reconnected (well past
    // its 2.5 s tolerance, where it used to count as down).
    assert!(
        !online(&c).await.contains(&"srv-slow".to_string()),
        "srv-slow is still cut off"
    );
    let rows = by_host(&c, t0).await;
    let slow_row = rows.iter().find(|r| r.0 == "srv-slow").expect("srv-slow");
    assert!(
        slow_row.3 >= 20_000,
        "srv-slow is unknown through the outage and since the start: {slow_row:?}"
    );

    // The channel comes back: the agent reconnects, replays, and the history decides (it was
    // up all along).
    relay.set(true);
    let back = wait_for(Duration::from_secs(60), || async {
        (online(&c).await.len() == 2).then_some(())
    })
    .await;
    assert!(back.is_some(), "srv-slow reconnected");
    let replayed = wait_for(Duration::from_secs(60), || async {
        let rows = by_host(&c, t0).await;
        rows.iter().all(|r| r.3 < 5_000 && r.2 == 0).then_some(rows)
    })
    .await;
    let rows = by_host(&c, t0).await;
    assert!(
        replayed.is_some(),
        "after the replay the outage is filled and nothing is down: {rows:?}"
    );
    for (host, up, down, unknown) in &rows {
        println!("RESTART kill9={kill9} {host}: up {up} ms, down {down} ms, unknown {unknown} ms");
        assert_eq!(*down, 0, "{host}");
    }
    for a in &mut agents {
        a.proc.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_sigterm_restart_produces_no_down() {
    restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_kill9_restart_produces_no_down() {
    restart(true).await;
}
