//! Live heartbeats are not held behind a replay storm (issue 15, "A region in a box"; the
//! remedy of docs/reliability.md, "Live and replayed traffic").
//!
//! A host whose agent kept a long backlog replays it unpaced on its replay topic
//! (`…/hb-replay`) through Mosquitto, faster than the collector stores it (the collector is
//! held to at most 5,000 msg/s by the test-only `DOZOR_TEST_INGEST_DELAY_US`, as a debug build
//! on a loaded box is), while three real agents send live heartbeats every second. Asserted by
//! order, not by time: once the whole backlog is in the broker, one more host publishes a live
//! heartbeat, and it is handled while the backlog is still being stored — it overtook every
//! replayed message still queued before it (the delivery API shows both from one snapshot).
//! With `mqtt.replay_session = false` (one session, one queue, as before) the same heartbeat is
//! handled only after the whole backlog: the second test pins that, so the first one measures
//! what it claims. Afterwards the backlog is stored completely, each message once; how many of
//! the live agents read `online` at each read during the storm is printed.

use dozor_proto::{DiskUsage, Envelope, Heartbeat, Kind, SCHEMA_VERSION, topic};
use dozor_tests::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.77";
const BACKLOG_HOST: &str = "pc-backlog";
const LIVE_HOSTS: [&str; 3] = ["pc-live-1", "pc-live-2", "pc-live-3"];
/// Replayed heartbeats in the backlog host's spool (a week at 10 s).
const BACKLOG: u64 = 60_000;
/// Generous bounds for a loaded box; the assertions are about order, not these.
const PATIENCE: Duration = Duration::from_secs(120);

/// A heartbeat of `host` (instance `inst`) made at `ts`.
fn heartbeat(host: &str, inst: &str, seq: u64, ts: i64, replay: bool) -> Vec<u8> {
    let e = Envelope {
        v: SCHEMA_VERSION,
        mo: MO.into(),
        host: host.into(),
        inst: inst.into(),
        seq,
        ts,
        replay,
        body: Heartbeat {
            uptime_secs: 10,
            cpu_pct: 3.0,
            mem_used_bytes: 1 << 30,
            mem_total_bytes: 4 << 30,
            load: None,
            disks: vec![DiskUsage {
                mount: "/".into(),
                total_bytes: 100,
                used_bytes: 10,
            }],
            interval_secs: 10,
            spool: None,
        },
    };
    serde_json::to_vec(&e).unwrap()
}

/// (stored, contiguous) of agent instance `inst` in one delivery snapshot.
fn delivery_of_inst(d: &Value, inst: &str) -> (u64, u64) {
    d.as_array()
        .and_then(|a| a.iter().find(|i| i["inst"] == inst))
        .map_or((0, 0), |i| {
            (
                i["stored"].as_u64().unwrap_or(0),
                i["contiguous"].as_u64().unwrap_or(0),
            )
        })
}

/// The backlog host's delivery entry: (stored, contiguous).
async fn backlog_delivery(c: &Collector) -> (u64, u64) {
    delivery_of_inst(&c.get("/api/v1/delivery").await, "backlog1")
}

/// Whether every live host's last live message was received after `t0_ms`.
async fn live_heard_since(c: &Collector, t0_ms: i64) -> bool {
    let hosts: Value = c.get("/api/v1/hosts").await;
    LIVE_HOSTS.iter().all(|h| {
        hosts.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["host_id"] == *h && x["last_seen_ms"].as_i64().is_some_and(|t| t > t0_ms)
            })
        })
    })
}

/// Runs the storm; returns how many backlog messages were handled when a live heartbeat
/// published after the whole backlog was in the broker had been handled.
async fn storm(replay_session: bool) -> u64 {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("collector.toml");
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nreplay_session = {replay_session}\n\
             [limits]\nmax_msgs_per_host_per_min = 1000000\n"
        ),
    )
    .unwrap();
    let conf_arg = conf.display().to_string();
    let coll = Collector::start_env(
        &Broker::External(mosq.url()),
        &dir.path().join("data"),
        &["--config", &conf_arg],
        &[("DOZOR_TEST_INGEST_DELAY_US", "200")],
    );
    let agents: Vec<Agent> = LIVE_HOSTS
        .iter()
        .map(|h| Agent::start(&mosq.url(), MO, h, &dir.path().join(h), &[]))
        .collect();
    assert!(
        wait_for(PATIENCE, || async {
            live_heard_since(&coll, 0).await.then_some(())
        })
        .await
        .is_some(),
        "the live agents are not heard"
    );

    // The backlog host's replay, unpaced, at QoS 1 as an agent sends it.
    let mut o = MqttOptions::new(format!("dozor-{MO}-{BACKLOG_HOST}"), "127.0.0.1", mosq.port);
    o.set_inflight(1000).set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(o, 10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let counted = acked.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counted.fetch_add(1, Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let t = topic(MO, BACKLOG_HOST, Kind::HbReplay);
    let oldest = unix_ms() - BACKLOG as i64 * 10_000;
    let made = |seq: u64| {
        heartbeat(
            BACKLOG_HOST,
            "backlog1",
            seq,
            oldest + seq as i64 * 10_000,
            true,
        )
    };
    // The first one alone: the collector's sessions are subscribed once it is handled.
    client
        .publish(t.clone(), QoS::AtLeastOnce, false, made(1))
        .await
        .unwrap();
    assert!(
        wait_for(PATIENCE, || async {
            (backlog_delivery(&coll).await.0 >= 1).then_some(())
        })
        .await
        .is_some(),
        "the first replayed message is not stored"
    );
    for seq in 2..=BACKLOG {
        client
            .publish(t.clone(), QoS::AtLeastOnce, false, made(seq))
            .await
            .unwrap();
    }
    assert!(
        wait_for(PATIENCE, || async {
            (acked.load(Relaxed) >= BACKLOG).then_some(())
        })
        .await
        .is_some(),
        "Mosquitto did not take the backlog: {} of {BACKLOG}",
        acked.load(Relaxed)
    );
    // Every backlog message is in the broker, queued for the collector, before this one.
    let (at_publish, _) = backlog_delivery(&coll).await;
    let t = topic(MO, "pc-live-probe", Kind::Hb);
    client
        .publish(
            t,
            QoS::AtLeastOnce,
            false,
            heartbeat("pc-live-probe", "probe1", 1, unix_ms(), false),
        )
        .await
        .unwrap();

    let mut handled_then = None;
    let mut online_reads = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let hosts: Value = coll.get("/api/v1/hosts").await;
        let online = hosts.as_array().map_or(0, |a| {
            a.iter()
                .filter(|x| LIVE_HOSTS.iter().any(|h| x["host_id"] == *h) && x["state"] == "online")
                .count()
        });
        online_reads.push(online);
        let d = coll.get("/api/v1/delivery").await;
        if delivery_of_inst(&d, "probe1").0 >= 1 {
            handled_then = Some(delivery_of_inst(&d, "backlog1").0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handled_then = handled_then.expect("the live heartbeat is not handled");

    // Nothing of the backlog is lost, nothing is stored twice.
    let drained = wait_for(PATIENCE, || async {
        let (stored, contiguous) = backlog_delivery(&coll).await;
        (contiguous >= BACKLOG).then_some(stored)
    })
    .await;
    let duplicates = coll.metric("dozor_messages_duplicate_total").await;
    let reconnects = coll.metric("dozor_mqtt_reconnects_total").await;
    eprintln!(
        "REPLAY_PRIORITY replay_session={replay_session} backlog={BACKLOG} \
         handled_at_publish_end={at_publish} handled_when_live_heard={handled_then} \
         drained={drained:?} duplicates={duplicates} reconnects={reconnects} \
         reads={} fewest_live_online={}_of_{}",
        online_reads.len(),
        online_reads.iter().min().unwrap_or(&0),
        LIVE_HOSTS.len()
    );
    assert_eq!(
        drained,
        Some(BACKLOG),
        "the backlog is stored completely, each message once"
    );
    drop(agents);
    handled_then
}

/// With the replay session (the default), live heartbeats overtake the queued backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_heartbeats_overtake_an_unpaced_replay() {
    let handled = storm(true).await;
    assert!(
        handled < BACKLOG,
        "the live heartbeat waited behind the whole backlog ({handled} of {BACKLOG} handled \
         before it)"
    );
}

/// One session and one queue (`mqtt.replay_session = false`, the behaviour before): the same
/// heartbeat is handled only after every replayed message queued before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_queue_live_heartbeats_wait_behind_the_replay() {
    assert_eq!(storm(false).await, BACKLOG);
}
