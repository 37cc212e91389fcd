//! A last will of an agent's OLD connection that reaches the collector after the agent's new
//! birth (as an edge broker of a bridge tree delivers the wills it kept over a restart,
//! docs/benchmarks.md "A Mosquitto bridge tree") must not make the connected host `lost`, nor
//! open a `server_lost`.
//!
//! Real binaries, in enrolled mode (the region's: every message signed by its host's key): a
//! real agent enrolls, first connects to a second Mosquitto and is killed there with
//! `kill -9`; the will that broker publishes (its exact signed bytes) is kept. The same agent (same
//! data dir, same install) then connects to the collector's Mosquitto and is online; its birth
//! announces the `seq` of its new connection's will (`will_seq`), above the kept will's. The
//! kept will is published there, retained, as the bridge would. The collector counts it in
//! `dozor_states_stale_total` and the server stays online with no incident. Then the agent is
//! killed with `kill -9` on the collector's broker: its current connection's will makes the
//! server `lost` by `last_will` (a rule that threw genuine wills away would show here).
//!
//! Without the collector's rule (its binary from before it, `DOZOR_BIN_DIR`) the test fails
//! at "a stale will acted": the host read `lost` and a `server_lost` opened.

use dozor_tests::enrolled;
use dozor_tests::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.77";
const HOST: &str = "srv-stale";

/// Publishes of `filter` on the broker at `port`, as (retain, payload).
async fn watch(
    port: u16,
    id: &str,
    filter: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(bool, Vec<u8>)>,
) {
    let o = MqttOptions::new(id, "127.0.0.1", port);
    let (c, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.retain, p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (c, rx)
}

fn agent_args() -> Vec<&'static str> {
    vec![
        "--role",
        "server",
        "--interval-secs",
        "30",
        "--keepalive-secs",
        "5",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_of_an_older_connection_delivered_after_the_new_birth_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    let cdir = dir.path().join("data");
    let topic = dozor_proto::topic(MO, HOST, dozor_proto::Kind::State);

    // The collector as a region runs it: enrolled (an `open` collector believes no births'
    // `will_seq`, since anybody could forge them there). Its broker is a plain Mosquitto: the
    // messages' signatures are what the collector checks.
    let m = Mosquitto::start();
    let c = Collector::start(
        &Broker::External(m.url()),
        &cdir,
        &["--security-mode", "enrolled"],
    );
    let mut args: Vec<String> = agent_args().iter().map(|a| a.to_string()).collect();
    args.extend(enrolled::enroll_args(&c, &enrolled::token(&cdir, MO, &[])));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // 1. The old connection, on another broker: its (signed) will is kept. The agent enrolls
    //    with the collector over HTTP first.
    let other = Mosquitto::start();
    let (_w, mut states) = watch(other.port, "will-catcher", &topic).await;
    let mut a = Agent::start(&other.url(), MO, HOST, &agent_dir, &args);
    // The agent's retained `online` follows its birth: the connection is up.
    let online = tokio::time::timeout(Duration::from_secs(30), states.recv())
        .await
        .expect("the agent's online state within 30 s")
        .unwrap();
    assert!(String::from_utf8_lossy(&online.1).contains("\"online\""));
    a.proc.kill9();
    let will = loop {
        let (_, p) = tokio::time::timeout(Duration::from_secs(30), states.recv())
            .await
            .expect("the broker publishes the will of the killed agent")
            .unwrap();
        if String::from_utf8_lossy(&p).contains("\"lost\"") {
            break p;
        }
    };

    // 2. The new connection, on the collector's broker (same data dir: the same identity).
    let mut b = Agent::start(&m.url(), MO, HOST, &agent_dir, &args);
    let online = wait_for(Duration::from_secs(30), || async {
        c.host(HOST)
            .await
            .filter(|h| h["state"] == "online" && h["role"] == "server")
    })
    .await;
    assert!(online.is_some(), "the server online within 30 s");
    // The new birth announces its connection's will, made after the old connection's birth.
    let old_seq = json(&will)["seq"].as_u64().expect("the will's seq");
    let birth_topic = dozor_proto::topic(MO, HOST, dozor_proto::Kind::Birth);
    let (_bw, mut births) = watch(m.port, "birth-catcher", &birth_topic).await;
    let (_, birth) = tokio::time::timeout(Duration::from_secs(30), births.recv())
        .await
        .expect("the retained birth")
        .unwrap();
    let will_seq = json(&birth)["body"]["will_seq"].as_u64();
    assert!(
        will_seq.is_some_and(|w| w > old_seq),
        "birth will_seq {will_seq:?}, old will's seq {old_seq}"
    );
    const ACCEPTED: &str = "dozor_messages_accepted_total{kind=\"state\"}";
    const STALE: &str = "dozor_states_stale_total";
    let before = c.metric(ACCEPTED).await + c.metric(STALE).await;

    // 3. The old will arrives late, retained, as through a bridge.
    let (p, _rx) = watch(m.port, "late-bridge", "dozor/v1/none").await;
    p.publish(&topic, QoS::AtLeastOnce, true, will)
        .await
        .unwrap();
    let counted = wait_for(Duration::from_secs(30), || async {
        (c.metric(ACCEPTED).await + c.metric(STALE).await > before).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the late will counted within 30 s");
    // The live state and the alerts follow the pipeline by a snapshot (about a second): look
    // for the harm for 3 s. The count of `stale_state` below is the exact check; these show
    // what the late will did without it.
    let harm = wait_for(Duration::from_secs(3), || async {
        let h = c.host(HOST).await?;
        let incidents = c.get("/api/v1/incidents?rule=server_lost").await;
        (h["state"] != "online" || incidents.as_array().is_some_and(|a| !a.is_empty()))
            .then(|| format!("host {h}, incidents {incidents}"))
    })
    .await;
    assert_eq!(harm, None, "a stale will acted");
    assert_eq!(c.metric(STALE).await, 1.0, "the late will counted as stale");

    // 4. The current connection ends: its own will is honoured.
    b.proc.kill9();
    let lost = wait_for(Duration::from_secs(30), || async {
        c.host(HOST)
            .await
            .filter(|h| h["state"] == "lost" && h["reason"] == "last_will")
    })
    .await;
    assert!(
        lost.is_some(),
        "the current connection's will makes the server lost within 30 s: {:?}",
        c.host(HOST).await
    );
    assert_eq!(c.metric(STALE).await, 1.0, "the current will is not stale");
}

/// The JSON of a will as the broker published it (signed: `{"mac":…,` then the envelope).
fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).expect("the will is JSON")
}
