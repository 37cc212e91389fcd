//! An agent whose sequence counter goes BACK for the same `inst` (its state directory restored
//! from a backup, a VM snapshot reverted) must be heard again at once, not after its numbering
//! passes the collector's old high mark (docs/reliability.md, "A counter that goes back").
//!
//! Real binaries, in enrolled mode (the region's): a real agent enrolls and runs; it is stopped
//! and its data directory copied (the backup). Started again it runs on, and is killed with
//! `kill -9` once (the restart skips a reserved block of 256 numbers), so the collector holds
//! this `inst` about 270 numbers past the backup. The backup is restored and the agent started:
//! the collector's retained, signed ack confirms more than it ever issued, and the agent skips
//! its counter past it. Within 30 s its new messages are stored again, the server is online,
//! its new birth announces a will above the collector's will floor, and when it is then killed
//! with `kill -9` that will makes the server `lost` by `last_will` (a will below the floor
//! would be ignored as late).
//!
//! With the agent of main before the skip (`DOZOR_BIN_DIR` pointing at its binaries) the test
//! fails at "new messages stored within 30 s": every message of the restored agent is a
//! duplicate for about 270 s at one message a second.

use dozor_tests::enrolled;
use dozor_tests::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::time::Duration;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.88";
const HOST: &str = "srv-restored";

/// The collector's delivery row of this host's instance (there is one: one install).
async fn delivery(c: &Collector) -> Option<serde_json::Value> {
    let d = c.get("/api/v1/delivery").await;
    d.as_array()?.iter().find(|v| v["host"] == HOST).cloned()
}

/// Waits until the delivery row's contiguous mark reaches `at_least`; returns the row.
async fn contiguous_reaches(c: &Collector, at_least: u64, what: &str) -> serde_json::Value {
    let row = wait_for(Duration::from_secs(30), || async {
        delivery(c)
            .await
            .filter(|d| d["contiguous"].as_u64().unwrap_or(0) >= at_least)
    })
    .await;
    match row {
        Some(row) => row,
        None => panic!("{what}: contiguous ≥ {at_least}: {:?}", delivery(c).await),
    }
}

/// The delivery row once the agent is gone and the collector is done with it: `contiguous` ==
/// `committed` and the row unchanged for 2 s (on a loaded machine the last heartbeat can be
/// taken well after the agent exited).
async fn settled(c: &Collector) -> serde_json::Value {
    let mut last: Option<(serde_json::Value, std::time::Instant)> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = delivery(c).await.expect("the row");
        let done = row["contiguous"] == row["committed"];
        match &last {
            Some((prev, since)) if *prev == row => {
                if done && since.elapsed() >= Duration::from_secs(2) {
                    return row;
                }
            }
            _ => last = Some((row.clone(), std::time::Instant::now())),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery row never settled: {row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// The stored counter (`next_seq`) of the spool in `dir` (the agent stopped).
fn counter(dir: &Path) -> u64 {
    let conn = rusqlite::Connection::open(dir.join("spool.db")).expect("spool.db");
    let next: i64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'next_seq'",
            [],
            |r| r.get(0),
        )
        .expect("next_seq");
    u64::try_from(next).expect("a positive counter")
}

/// The host's retained message of `kind` on the broker at `port`, as JSON (signed: the MAC
/// is one more field).
async fn retained(port: u16, kind: dozor_proto::Kind) -> serde_json::Value {
    let id = format!("reader-{}-{}", kind.as_str(), unix_ms());
    let o = MqttOptions::new(id, "127.0.0.1", port);
    let (c, mut el) = AsyncClient::new(o, 10);
    let t = dozor_proto::topic(MO, HOST, kind);
    c.subscribe(&t, QoS::AtLeastOnce).await.expect("subscribe");
    let birth = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                break p.payload.to_vec();
            }
        }
    })
    .await
    .expect("the retained message");
    serde_json::from_slice(&birth).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_is_heard_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    let backup = dir.path().join("backup");
    let cdir = dir.path().join("data");
    let log = dir.path().join("agent.log");

    let m = Mosquitto::start();
    let c = Collector::start(
        &Broker::External(m.url()),
        &cdir,
        &["--security-mode", "enrolled"],
    );
    let mut args: Vec<String> = [
        "--role",
        "server",
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "5",
        "--spool-resend-after-secs",
        "5",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(enrolled::enroll_args(&c, &enrolled::token(&cdir, MO, &[])));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = || Agent::start_logged(&m.url(), MO, HOST, &agent_dir, &args, Some((&log, "warn")));

    // 1. The agent enrolls and runs; stopped, its directory is the backup.
    let mut a = start();
    contiguous_reaches(&c, 3, "the first run").await;
    assert_eq!(a.proc.terminate(), Some(0));
    copy_dir(&agent_dir, &backup);
    let (inst, ..) = spool_of(&backup);
    let backup_last = counter(&backup) - 1;

    // 2. Life goes on past the backup, with a crash (256 numbers reserved and skipped).
    let mut a = start();
    contiguous_reaches(&c, backup_last + 3, "after the backup").await;
    a.proc.kill9();
    let mut a = start();
    let row = contiguous_reaches(&c, backup_last + 256 + 3, "after the crash").await;
    assert_eq!(row["inst"], inst.as_str(), "one install, one inst");
    assert_eq!(a.proc.terminate(), Some(0));
    // The collector may still be taking the agent's last messages: wait until everything
    // stored is committed (what acks confirm) and nothing moved for 2 s.
    let row = settled(&c).await;
    let high = row["contiguous"].as_u64().expect("contiguous");
    let stored_before = row["stored"].as_u64().expect("stored");
    // The collector's retained ack for this inst confirms the high mark (acks go out every
    // second): what a restored agent finds on the broker days later.
    let acked = wait_for(Duration::from_secs(20), || async {
        let ack = retained(m.port, dozor_proto::Kind::Ack).await;
        (ack["acked_seq"].as_u64() == Some(high)).then_some(())
    })
    .await;
    assert!(acked.is_some(), "the retained ack confirms {high}");

    // 3. The backup is restored and the agent started: its counter is ~270 numbers behind.
    std::fs::remove_dir_all(&agent_dir).expect("rm");
    copy_dir(&backup, &agent_dir);
    let mut a = start();
    let stored = wait_for(Duration::from_secs(30), || async {
        delivery(&c)
            .await
            .filter(|d| d["stored"].as_u64().unwrap_or(0) >= stored_before + 5)
    })
    .await;
    assert!(
        stored.is_some(),
        "new messages stored within 30 s (stored before {stored_before}, high {high}, backup \
         {backup_last}): {:?}",
        delivery(&c).await
    );
    // Longer than the heartbeat timeout (3 intervals + 5 s): the server is heard, online.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let h = c.host(HOST).await.expect("the host");
    assert_eq!(h["state"], "online", "{h}");
    assert!(
        unix_ms() - h["last_seen_ms"].as_i64().unwrap_or(0) < 5_000,
        "heartbeats heard: {h}"
    );
    let birth = retained(m.port, dozor_proto::Kind::Birth).await;
    let will_seq = birth["body"]["will_seq"].as_u64().unwrap_or(0);
    assert!(
        will_seq > high && birth["seq"].as_u64().unwrap_or(0) > will_seq,
        "the new birth announces a will above the old high mark {high}: {birth}"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("has not issued"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {text}");
    assert!(
        warnings[0].contains(&format!("acked={high}")) && warnings[0].contains("last="),
        "the warning says acked and last: {text}"
    );

    // 4. The current connection's will is above the floor: honoured.
    a.proc.kill9();
    let lost = wait_for(Duration::from_secs(30), || async {
        c.host(HOST)
            .await
            .filter(|h| h["state"] == "lost" && h["reason"] == "last_will")
    })
    .await;
    assert!(
        lost.is_some(),
        "the will of the connection after the skip makes the server lost within 30 s: {:?}",
        c.host(HOST).await
    );
    // The restored spool skipped past the collector's mark, durably.
    let next = counter(&agent_dir);
    assert!(next > high, "the counter stays above {high}: {next}");
}
