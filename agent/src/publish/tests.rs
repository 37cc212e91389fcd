//! Publisher tests: the task runs for real against a stand-in for rumqttc's request queue and
//! scripted broker events, with a real spool in a temporary directory.

use std::path::Path;

use dozor_proto::{Ack, DiskInfo, Limits as ProtoLimits, Message, decode};
use rumqttc::{ConnAck, ConnectReturnCode, PubAck, Publish, Request};
use serde_json::{Value, json};

use super::*;
use crate::config::{SpoolConfig, Synchronous};
use crate::spool::{MAX_SKIP_TO as MAX_SKIP_TO_TEST, SKIP_MARGIN};

const MO: &str = "1.2.643.5.1.13.13.12.2.27.1234";
const HOST: &str = "pc-01";
const WAIT: Duration = Duration::from_secs(5);

fn inventory() -> Inventory {
    Inventory {
        hostname: "reg-01".into(),
        os_name: "Astra Linux".into(),
        os_version: "1.7".into(),
        cpu_model: "Intel Core i3".into(),
        cpu_count: 4,
        mem_total_bytes: 8 << 30,
        disks: vec![DiskInfo {
            mount: "/".into(),
            fs: "ext4".into(),
            total_bytes: 100 << 30,
        }],
        boot_time: 1_750_000_000,
        boot_id: "b1".into(),
    }
}

fn sample() -> Input {
    Input::Sample {
        ts_ms: wall_ms(),
        sample: Box::new(Sample {
            inventory: inventory(),
            uptime_secs: 100,
            cpu_pct: 12.5,
            mem_used_bytes: 1 << 30,
            mem_total_bytes: 8 << 30,
            load: Some([0.5, 0.4, 0.3]),
            disks: vec![],
        }),
    }
}

fn probe() -> Input {
    Input::Probe {
        ts_ms: wall_ms(),
        probe: Probe { results: vec![] },
    }
}

/// The same input made an hour ago.
fn aged(input: Input) -> Input {
    const HOUR_MS: i64 = 3_600_000;
    match input {
        Input::Sample { ts_ms, sample } => Input::Sample {
            ts_ms: ts_ms - HOUR_MS,
            sample,
        },
        Input::Probe { ts_ms, probe } => Input::Probe {
            ts_ms: ts_ms - HOUR_MS,
            probe,
        },
    }
}

/// Backlog goes on the replay topics, a resend of what is still current on the live ones;
/// `state` has no replay topic.
#[test]
fn resends_older_than_an_interval_are_replays() {
    let now = 1_750_000_000_000;
    assert_eq!(resend_kind(Kind::Hb, now - 29_999, now, 30), Kind::Hb);
    assert_eq!(resend_kind(Kind::Hb, now - 30_000, now, 30), Kind::HbReplay);
    assert_eq!(
        resend_kind(Kind::Probe, now - 86_400_000, now, 30),
        Kind::ProbeReplay
    );
    assert_eq!(
        resend_kind(Kind::Birth, now - 60_000, now, 30),
        Kind::BirthReplay
    );
    // A clock set back since: the message looks fresh, and is sent live, as before.
    assert_eq!(resend_kind(Kind::Hb, now + 60_000, now, 30), Kind::Hb);
    assert_eq!(resend_kind(Kind::State, now - 60_000, now, 30), Kind::State);
}

struct Harness {
    requests: flume::Receiver<Request>,
    net: mpsc::Sender<Net>,
    inputs: mpsc::Sender<Input>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    spool: Arc<Mutex<Spool>>,
    inst: String,
    /// What `drive`'s will closure would set: the `seq` of the latest will made.
    will: Arc<AtomicU64>,
    /// What `drive`'s will closure reads: the latest number issued.
    last_seq: Arc<AtomicU64>,
}

fn spool_config(rate: u32) -> SpoolConfig {
    SpoolConfig {
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(14 * 86_400),
        resend_after: Duration::from_secs(60),
        replay_rate_per_sec: rate,
        flush_after: Duration::from_secs(10),
        synchronous: Synchronous::Normal,
    }
}

fn start(dir: &Path, rate: u32) -> Harness {
    start_with(dir, rate, None)
}

fn start_with(dir: &Path, rate: u32, mac: Option<MacKey>) -> Harness {
    let spool = Spool::open(dir, &spool_config(rate), Instant::now(), wall_ms()).expect("spool");
    let inst = spool.inst().to_owned();
    let id = Identity {
        mo: MO.into(),
        host: HOST.into(),
        inst: inst.clone(),
        mac,
    };
    let last_seq = Arc::new(AtomicU64::new(spool.index().last_seq()));
    let spool = Arc::new(Mutex::new(spool));
    let (req_tx, requests) = flume::bounded(64);
    let client = AsyncClient::from_senders(req_tx);
    let announce = Announce {
        role: Role::Workstation,
        site: "Поликлиника №1".into(),
        interval_secs: 1,
        keepalive_secs: 2,
        targets: vec![TargetInfo {
            name: "mis".into(),
            category: dozor_proto::Category::Mis,
        }],
    };
    let (net, net_rx) = mpsc::channel(64);
    let (inputs, in_rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let will = Arc::new(AtomicU64::new(last_seq.load(Ordering::Relaxed)));
    let publisher = Publisher::new(
        id,
        announce,
        client,
        spool.clone(),
        last_seq.clone(),
        inventory(),
    )
    .with_will_seq(will.clone());
    let task = tokio::spawn(publisher.run(in_rx, net_rx, shutdown.clone()));
    Harness {
        requests,
        net,
        inputs,
        shutdown,
        task,
        spool,
        inst,
        will,
        last_seq,
    }
}

impl Harness {
    async fn connack(&self) {
        let ack = ConnAck::new(ConnectReturnCode::Success, false);
        self.net
            .send(Net::Event(Event::Incoming(Packet::ConnAck(ack))))
            .await
            .expect("publisher alive");
    }

    async fn down(&self) {
        self.net
            .send(Net::Down {
                error: "test".into(),
                retry_in: Duration::from_secs(1),
            })
            .await
            .expect("publisher alive");
    }

    async fn ack_payload(&self, payload: Vec<u8>) {
        let p = Publish::new(topic(MO, HOST, Kind::Ack), QoS::AtLeastOnce, payload);
        self.net
            .send(Net::Event(Event::Incoming(Packet::Publish(p))))
            .await
            .expect("publisher alive");
    }

    async fn ack(&self, acked_seq: u64) {
        let ack = Ack {
            v: SCHEMA_VERSION,
            inst: self.inst.clone(),
            acked_seq,
            ts: wall_ms(),
        };
        self.ack_payload(serde_json::to_vec(&ack).expect("json"))
            .await;
    }

    /// The next request, skipping nothing.
    async fn request(&self) -> Request {
        tokio::time::timeout(WAIT, self.requests.recv_async())
            .await
            .expect("a request in time")
            .expect("client alive")
    }

    /// The next publish (subscriptions are checked and skipped).
    async fn publish(&self) -> Publish {
        loop {
            match self.request().await {
                Request::Publish(p) => return p,
                Request::Subscribe(s) => {
                    assert_eq!(s.filters[0].path, topic(MO, HOST, Kind::Ack));
                    assert_eq!(s.filters[0].qos, QoS::AtLeastOnce);
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
    }

    async fn no_request_for(&self, d: Duration) {
        if let Ok(r) = tokio::time::timeout(d, self.requests.recv_async()).await {
            panic!("unexpected request {r:?}");
        }
    }

    fn pending(&self) -> Vec<u64> {
        lock(&self.spool).index().entries().map(|e| e.seq).collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("stops in time")
            .expect("no panic");
    }
}

/// Decodes a publish as the collector would, and returns its JSON.
fn check(p: &Publish) -> (Message, Value) {
    let msg = decode(&p.topic, &p.payload, &ProtoLimits::DEFAULT)
        .unwrap_or_else(|r| panic!("collector would reject {}: {r:?}", p.topic));
    let json = serde_json::from_slice(&p.payload).expect("json");
    (msg, json)
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn connect_announces_then_streams_and_acks_drain_the_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.connack().await;

    match h.request().await {
        Request::Subscribe(s) => assert_eq!(s.filters[0].path, topic(MO, HOST, Kind::Ack)),
        other => panic!("expected the ack subscription first, got {other:?}"),
    }
    let birth = h.publish().await;
    assert_eq!(birth.topic, topic(MO, HOST, Kind::Birth));
    assert!(birth.retain);
    assert_eq!(birth.qos, QoS::AtLeastOnce);
    let (msg, json) = check(&birth);
    assert_eq!(msg.header().seq, 1);
    assert!(!msg.header().replay);
    assert_eq!(json["body"]["seq_base"], 1);
    assert_eq!(
        json["body"]["targets"],
        json!([{"name": "mis", "category": "mis"}])
    );

    let state = h.publish().await;
    assert_eq!(state.topic, topic(MO, HOST, Kind::State));
    assert!(state.retain);
    let (_, json) = check(&state);
    assert_eq!(
        json["seq"], 1,
        "state carries the latest number and takes none"
    );
    assert_eq!(json["body"], json!({"state": "online"}));

    h.inputs.send(sample()).await.expect("send");
    let hb = h.publish().await;
    assert_eq!(hb.topic, topic(MO, HOST, Kind::Hb));
    assert!(!hb.retain);
    let (_, json) = check(&hb);
    assert_eq!(json["seq"], 2);
    assert_eq!(
        json["body"]["spool"],
        json!({"pending": 1, "bytes": birth.payload.len(), "dropped": 0, "oldest_seq": 1})
    );

    h.inputs.send(probe()).await.expect("send");
    let (_, json) = check(&h.publish().await);
    assert_eq!(json["seq"], 3);
    wait_for(|| h.pending() == [1, 2, 3]).await;

    h.ack(2).await;
    wait_for(|| h.pending() == [3]).await;
    h.ack(3).await;
    wait_for(|| h.pending().is_empty()).await;
    // Nothing left to replay.
    h.no_request_for(Duration::from_millis(100)).await;
    h.stop().await;
}

#[tokio::test]
async fn offline_messages_are_spooled_and_replayed_after_live_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.down().await;
    // Made an hour ago: backlog, re-sent on the replay topics (fresh resends are below).
    for _ in 0..3 {
        h.inputs.send(aged(sample())).await.expect("send");
        h.inputs.send(aged(probe())).await.expect("send");
    }
    wait_for(|| h.pending().len() == 6).await;
    h.no_request_for(Duration::from_millis(50)).await;
    let stored: Vec<Vec<u8>> = (1..=6)
        .map(|s| lock(&h.spool).body(s).expect("read").expect("stored"))
        .collect();

    h.connack().await;
    let birth = h.publish().await;
    assert_eq!(birth.topic, topic(MO, HOST, Kind::Birth));
    let (msg, _) = check(&birth);
    assert_eq!(msg.header().seq, 7);
    assert!(!msg.header().replay);
    assert_eq!(h.publish().await.topic, topic(MO, HOST, Kind::State));

    for (i, original) in stored.iter().enumerate() {
        let p = h.publish().await;
        assert!(!p.retain, "replays are never retained");
        let (msg, json) = check(&p);
        assert_eq!(msg.header().seq, i as u64 + 1, "oldest first");
        assert!(msg.header().replay);
        // Same message as stored, only flagged as a replay.
        let mut orig: Value = serde_json::from_slice(original).expect("json");
        orig["replay"] = json!(true);
        assert_eq!(json, orig);
        let kind = if i % 2 == 0 {
            Kind::HbReplay
        } else {
            Kind::ProbeReplay
        };
        assert_eq!(p.topic, topic(MO, HOST, kind));
    }
    h.no_request_for(Duration::from_millis(100)).await;
    h.stop().await;
}

#[tokio::test]
async fn replay_is_paced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 20);
    h.down().await;
    for _ in 0..6 {
        h.inputs.send(probe()).await.expect("send");
    }
    wait_for(|| h.pending().len() == 6).await;
    h.connack().await;
    h.publish().await; // birth
    h.publish().await; // state
    let start = Instant::now();
    for _ in 0..6 {
        assert!(check(&h.publish().await).0.header().replay);
    }
    // 20 msg/s: six replays take at least 5 intervals of 50 ms after the first one's 50 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(280),
        "{:?}",
        start.elapsed()
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_acks_never_panic_nor_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.connack().await;
    h.publish().await;
    h.publish().await;
    h.inputs.send(probe()).await.expect("send");
    h.publish().await;
    wait_for(|| h.pending() == [1, 2]).await;

    h.ack_payload(b"not json".to_vec()).await;
    h.ack_payload(vec![0xff; 20_000]).await;
    h.ack_payload(br#"{"v":2,"inst":"x","acked_seq":1,"ts":0}"#.to_vec())
        .await;
    h.ack_payload(br#"{"v":1,"inst":"other","acked_seq":2,"ts":0}"#.to_vec())
        .await;
    h.ack_payload(br#"{"v":1,"inst":"x","acked_seq":-1,"ts":0}"#.to_vec())
        .await;
    // Beyond any number an agent issues (a forgery: never moves the counter; beyond what
    // was issued but sane is a restored backup, see `a_future_ack_skips_…`).
    h.ack(u64::MAX).await;
    h.ack(MAX_SKIP_TO_TEST + 1).await;
    h.ack(0).await;
    // An unrelated topic.
    let p = Publish::new("dozor/v1/x/y/cfg", QoS::AtLeastOnce, b"{}".to_vec());
    h.net
        .send(Net::Event(Event::Incoming(Packet::Publish(p))))
        .await
        .expect("alive");
    h.ack(1).await;
    wait_for(|| h.pending() == [2]).await;
    h.stop().await;
}

#[tokio::test]
async fn shutdown_says_offline_waits_for_puback_and_disconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.connack().await;
    h.publish().await;
    h.publish().await;
    h.shutdown.cancel();
    let offline = h.publish().await;
    assert_eq!(offline.topic, topic(MO, HOST, Kind::State));
    assert!(offline.retain);
    let (_, json) = check(&offline);
    assert_eq!(
        json["body"],
        json!({"state": "offline", "reason": "shutdown"})
    );
    // The broker has not confirmed yet: no disconnect.
    h.no_request_for(Duration::from_millis(100)).await;
    assert!(!h.task.is_finished());
    for (pkid, ev) in [
        (1, Event::Outgoing(Outgoing::Publish(1))),
        (2, Event::Outgoing(Outgoing::Publish(2))),
        (3, Event::Outgoing(Outgoing::Publish(3))),
        (1, Event::Incoming(Packet::PubAck(PubAck::new(1)))),
        (2, Event::Incoming(Packet::PubAck(PubAck::new(2)))),
    ] {
        let _ = pkid;
        h.net.send(Net::Event(ev)).await.expect("alive");
    }
    h.no_request_for(Duration::from_millis(100)).await;
    h.net
        .send(Net::Event(Event::Incoming(Packet::PubAck(PubAck::new(3)))))
        .await
        .expect("alive");
    assert!(matches!(h.request().await, Request::Disconnect(_)));
    h.net
        .send(Net::Event(Event::Outgoing(Outgoing::Disconnect)))
        .await
        .expect("alive");
    tokio::time::timeout(WAIT, h.task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test]
async fn shutdown_gives_up_waiting_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.connack().await;
    h.publish().await;
    h.publish().await;
    let start = Instant::now();
    h.shutdown.cancel();
    h.publish().await; // offline
    assert!(matches!(h.request().await, Request::Disconnect(_)));
    assert!(start.elapsed() >= OFFLINE_ACK_TIMEOUT - Duration::from_millis(100));
    tokio::time::timeout(WAIT, h.task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test]
async fn restart_resends_what_was_not_confirmed_and_keeps_numbering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    let inst = h.inst.clone();
    h.connack().await;
    h.publish().await;
    h.publish().await;
    for _ in 0..3 {
        h.inputs.send(probe()).await.expect("send");
        h.publish().await;
    }
    h.ack(2).await;
    wait_for(|| h.pending() == [3, 4]).await;
    // The link drops: what memory holds unconfirmed goes to the file at once.
    h.net
        .send(Net::Down {
            error: "gone".into(),
            retry_in: Duration::from_secs(1),
        })
        .await
        .expect("alive");
    wait_for(|| {
        let mut s = h.spool.lock().expect("lock");
        s.store_mut().seqs().expect("seqs") == [3, 4]
    })
    .await;
    // Simulate a crash: the task goes away without any goodbye.
    h.task.abort();
    drop(h.spool);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let h = start(dir.path(), 1000);
    assert_eq!(h.inst, inst, "the instance id survives restarts");
    assert_eq!(h.pending(), [3, 4]);
    h.connack().await;
    let (msg, _) = check(&h.publish().await);
    // Numbering continues above every number the crashed run may have issued.
    assert!(msg.header().seq > 4, "numbering continues");
    h.publish().await; // state
    let seqs = [h.publish().await, h.publish().await].map(|p| check(&p).0.header().seq);
    assert_eq!(seqs, [3, 4]);
    h.stop().await;
}

#[tokio::test]
async fn reconnect_resends_unconfirmed_and_announces_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.connack().await;
    h.publish().await;
    h.publish().await;
    h.inputs.send(sample()).await.expect("send");
    h.publish().await;
    h.down().await;
    h.no_request_for(Duration::from_millis(50)).await;
    h.connack().await;
    let (birth, _) = check(&h.publish().await);
    assert_eq!(birth.header().seq, 3);
    h.publish().await; // state
    let seqs = [h.publish().await, h.publish().await].map(|p| {
        let (m, _) = check(&p);
        assert!(m.header().replay);
        m.header().seq
    });
    assert_eq!(
        seqs,
        [1, 2],
        "the first birth and the heartbeat, not the new birth"
    );
    h.stop().await;
}

/// Each birth announces the `seq` of its own connection's will, also when a heartbeat took a
/// number between the connect (the will) and the birth.
#[tokio::test]
async fn every_birth_carries_its_connections_will_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.connack().await;
    let (birth, json) = check(&h.publish().await);
    assert_eq!(birth.header().seq, 1);
    assert_eq!(json["body"]["will_seq"], 0);
    h.publish().await; // state
    h.inputs.send(sample()).await.expect("send");
    h.publish().await; // hb 2
    h.down().await;
    // `drive` makes the next will at the latest number issued (2); a heartbeat sampled before
    // the CONNACK takes 3.
    h.will.store(2, Ordering::Relaxed);
    h.inputs.send(sample()).await.expect("send");
    wait_for(|| h.pending().contains(&3)).await;
    h.connack().await;
    let (birth, json) = check(&h.publish().await);
    assert_eq!(birth.header().seq, 4);
    assert_eq!(json["body"]["will_seq"], 2);
    h.stop().await;
}

#[test]
fn last_will_is_a_retained_lost_state() {
    let id = Identity {
        mo: MO.into(),
        host: HOST.into(),
        inst: "0123456789abcdef".into(),
        mac: None,
    };
    assert_eq!(id.client_id(), format!("dozor-{MO}-{HOST}"));
    let will = id.last_will(41);
    assert_eq!(will.topic, topic(MO, HOST, Kind::State));
    assert!(will.retain);
    assert_eq!(will.qos, QoS::AtLeastOnce);
    let p = Publish::new(will.topic.clone(), will.qos, will.message.to_vec());
    let (msg, json) = check(&p);
    assert_eq!(msg.header().seq, 41);
    assert_eq!(json["body"], json!({"state": "lost"}));
}

#[test]
fn replay_rewrite_keeps_everything_but_the_flag() {
    let stored = br#"{"v":1,"mo":"m","host":"h","inst":"i","seq":7,"ts":1750000000000,"body":{"results":[{"target":"mis","category":"mis","ok":true,"latency_ms":3}]}}"#;
    let id = Identity {
        mo: "m".into(),
        host: "h".into(),
        inst: "i".into(),
        mac: None,
    };
    let out = as_replay(stored, &id).expect("envelope");
    let a: Value = serde_json::from_slice(stored).expect("json");
    let mut b: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(b["replay"], json!(true));
    b.as_object_mut().expect("object").remove("replay");
    assert_eq!(a, b);
    assert!(as_replay(b"garbage", &id).is_none());
    assert!(as_replay(br#"{"v":1}"#, &id).is_none());

    // Spooled before enrollment under the configured ids: replayed under the enrolled ones.
    let enrolled = Identity {
        mo: "m2".into(),
        host: "h-7".into(),
        ..id
    };
    let mut c: Value =
        serde_json::from_slice(&as_replay(stored, &enrolled).expect("envelope")).expect("json");
    assert_eq!(
        (c["mo"].clone(), c["host"].clone()),
        (json!("m2"), json!("h-7"))
    );
    let obj = c.as_object_mut().expect("object");
    for k in ["mo", "host", "replay"] {
        obj.remove(k);
    }
    let mut a = a;
    let obj = a.as_object_mut().expect("object");
    obj.remove("mo");
    obj.remove("host");
    assert_eq!(a, c, "nothing else changes");
}

fn key(b: u8) -> MacKey {
    dozor_proto::auth::Secret([b; 32]).mac_key()
}

/// Verifies a signed publish with `k` and decodes the unsigned JSON as the collector would.
fn check_signed(p: &Publish, k: &MacKey) -> (Message, Value) {
    let unsigned = auth::verify(k, &p.topic, &p.payload)
        .unwrap_or_else(|e| panic!("{} is not signed for this host: {e}", p.topic));
    let unsigned = Publish::new(p.topic.clone(), p.qos, unsigned);
    check(&unsigned)
}

impl Harness {
    fn signed_ack(&self, k: &MacKey, topic: &str, acked_seq: u64) -> Vec<u8> {
        let ack = Ack {
            v: SCHEMA_VERSION,
            inst: self.inst.clone(),
            acked_seq,
            ts: wall_ms(),
        };
        auth::sign(k, topic, &serde_json::to_vec(&ack).expect("json"))
    }
}

#[tokio::test]
async fn enrolled_agent_signs_live_replayed_and_goodbye_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key(3);
    let h = start_with(dir.path(), 1000, Some(k.clone()));
    h.down().await;
    h.inputs.send(probe()).await.expect("send");
    wait_for(|| h.pending() == [1]).await;
    // The spool keeps the unsigned JSON: signing happens at publish time.
    let stored = lock(&h.spool).body(1).expect("read").expect("stored");
    assert!(!stored.starts_with(auth::MAC_PREFIX));

    h.connack().await;
    let (birth, _) = check_signed(&h.publish().await, &k);
    assert_eq!(birth.header().seq, 2);
    let (_, state) = check_signed(&h.publish().await, &k);
    assert_eq!(state["body"], json!({"state": "online"}));
    let replay = h.publish().await;
    let (msg, _) = check_signed(&replay, &k);
    assert!(msg.header().replay, "replays are signed after the rewrite");
    assert!(auth::verify(&key(4), &replay.topic, &replay.payload).is_err());

    h.inputs.send(sample()).await.expect("send");
    let (hb, _) = check_signed(&h.publish().await, &k);
    assert_eq!(hb.header().seq, 3);

    h.shutdown.cancel();
    let (_, offline) = check_signed(&h.publish().await, &k);
    assert_eq!(offline["body"]["state"], "offline");
    tokio::time::timeout(WAIT, h.task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[test]
fn enrolled_last_will_is_signed() {
    let k = key(5);
    let id = Identity {
        mo: MO.into(),
        host: HOST.into(),
        inst: "0123456789abcdef".into(),
        mac: Some(k.clone()),
    };
    let will = id.last_will(7);
    let p = Publish::new(will.topic.clone(), will.qos, will.message.to_vec());
    let (msg, json) = check_signed(&p, &k);
    assert_eq!(msg.header().seq, 7);
    assert_eq!(json["body"], json!({"state": "lost"}));
}

#[tokio::test]
async fn forged_or_unsigned_acks_never_delete_and_signed_ones_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key(3);
    let h = start_with(dir.path(), 1000, Some(k.clone()));
    h.connack().await;
    h.publish().await; // birth, seq 1
    h.publish().await; // state
    h.inputs.send(probe()).await.expect("send");
    h.publish().await; // probe, seq 2
    wait_for(|| h.pending() == [1, 2]).await;

    let ack_topic = topic(MO, HOST, Kind::Ack);
    // What a PC on the same broker could publish (retained or not) to make this agent drop
    // its unsent data: unsigned, signed with its own key, another host's ack replayed here.
    h.ack(2).await;
    h.ack_payload(h.signed_ack(&key(9), &ack_topic, 2)).await;
    h.ack_payload(h.signed_ack(&k, &topic(MO, "pc-02", Kind::Ack), 2))
        .await;
    let mut tampered = h.signed_ack(&k, &ack_topic, 1);
    let n = tampered.len();
    tampered[n - 2] = if tampered[n - 2] == b'9' { b'8' } else { b'9' };
    h.ack_payload(tampered).await;
    h.ack_payload(b"{\"mac\":\"zz".to_vec()).await;
    // The genuine ack for 1 is processed after all of them (one channel, in order).
    h.ack_payload(h.signed_ack(&k, &ack_topic, 1)).await;
    wait_for(|| h.pending() == [2]).await;
    h.no_request_for(Duration::from_millis(50)).await;
    assert_eq!(h.pending(), [2], "nothing forged deleted anything");
    h.ack_payload(h.signed_ack(&k, &ack_topic, 2)).await;
    wait_for(|| h.pending().is_empty()).await;
    h.stop().await;
}

impl Harness {
    /// What `drive` does before a connection attempt: the will made at the latest number.
    fn make_will(&self) -> u64 {
        let seq = self.last_seq.load(Ordering::Relaxed);
        self.will.store(seq, Ordering::Relaxed);
        seq
    }
}

/// A restored backup: the collector's ack confirms more than the agent issued. The counter
/// skips past it (durably), this run's messages are re-sent under new numbers, and the agent
/// reconnects, so its will and birth are above the collector's floor.
#[tokio::test]
async fn a_future_ack_skips_the_counter_renumbers_and_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.make_will();
    h.connack().await;
    h.publish().await; // birth 1
    h.publish().await; // state
    h.inputs.send(sample()).await.expect("send");
    let (_, hb) = check(&h.publish().await);
    assert_eq!(hb["seq"], 2);
    wait_for(|| h.pending() == [1, 2]).await;

    h.ack(500).await;
    let first = 500 + 1 + SKIP_MARGIN;
    assert!(
        matches!(h.request().await, Request::Disconnect(_)),
        "the connection (and its will, below the floor) is given up"
    );
    wait_for(|| h.pending() == [first, first + 1]).await;
    assert_eq!(h.last_seq.load(Ordering::Relaxed), first + 1);
    // Nothing more on the closing connection: a heartbeat made now is spooled.
    h.inputs.send(sample()).await.expect("send");
    wait_for(|| h.pending().len() == 3).await;
    h.no_request_for(Duration::from_millis(50)).await;
    // Durable already: the file holds the new numbers and the counter above them.
    let mut on_disk = lock(&h.spool).store_mut().seqs().expect("seqs");
    on_disk.sort_unstable();
    assert_eq!(on_disk, [first, first + 1, first + 2]);

    // The driver sees the connection close and connects again with a will made now.
    h.down().await;
    let will = h.make_will();
    assert_eq!(will, first + 2);
    h.connack().await;
    let (birth, json) = check(&h.publish().await);
    assert_eq!(birth.header().seq, first + 3);
    assert_eq!(
        json["body"]["will_seq"], will,
        "the birth announces the new will"
    );
    h.publish().await; // state
    // This run's messages again, under their new numbers, bodies unchanged.
    let (m, json) = check(&h.publish().await);
    assert_eq!((m.header().seq, m.header().replay), (first, true));
    assert_eq!(json["body"]["seq_base"], 1, "the first birth, as stored");
    let (m, json) = check(&h.publish().await);
    assert_eq!(m.header().seq, first + 1);
    assert_eq!(json["body"]["cpu_pct"], 12.5);
    let (m, _) = check(&h.publish().await);
    assert_eq!(m.header().seq, first + 2);
    // The collector's retained ack for 500 again: nothing to do.
    h.ack(500).await;
    h.no_request_for(Duration::from_millis(100)).await;
    h.ack(first + 3).await;
    wait_for(|| h.pending().is_empty()).await;
    h.stop().await;
}

/// Enrolled: an ack beyond the counter that is not signed with this host's key (another PC
/// on the broker) never moves the counter; a signed one does.
#[tokio::test]
async fn an_unverified_future_ack_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key(3);
    let h = start_with(dir.path(), 1000, Some(k.clone()));
    h.connack().await;
    h.publish().await; // birth 1
    h.publish().await; // state
    wait_for(|| h.pending() == [1]).await;
    let ack_topic = topic(MO, HOST, Kind::Ack);
    h.ack(500).await; // unsigned
    h.ack_payload(h.signed_ack(&key(9), &ack_topic, 500)).await;
    h.ack_payload(h.signed_ack(&k, &topic(MO, "pc-02", Kind::Ack), 500))
        .await;
    // Signed, but absurd: refused too.
    h.ack_payload(h.signed_ack(&k, &ack_topic, u64::MAX)).await;
    // Signed, for another instance of this host (an earlier install): not this counter's.
    let other = Ack {
        v: SCHEMA_VERSION,
        inst: "0123456789abcdef".into(),
        acked_seq: 500,
        ts: wall_ms(),
    };
    let other = auth::sign(&k, &ack_topic, &serde_json::to_vec(&other).expect("json"));
    h.ack_payload(other).await;
    h.no_request_for(Duration::from_millis(100)).await;
    assert_eq!(h.pending(), [1]);
    h.inputs.send(probe()).await.expect("send");
    let (m, _) = check_signed(&h.publish().await, &k);
    assert_eq!(m.header().seq, 2, "the counter did not move");
    assert_eq!(h.last_seq.load(Ordering::Relaxed), 2);

    h.ack_payload(h.signed_ack(&k, &ack_topic, 500)).await;
    assert!(matches!(h.request().await, Request::Disconnect(_)));
    let first = 500 + 1 + SKIP_MARGIN;
    wait_for(|| h.pending() == [first, first + 1]).await;
    h.stop().await;
}

/// Log lines of the current thread (the test's runtime runs the publisher on it).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }

    /// Lines at `level` containing `text`.
    fn count(&self, level: &str, text: &str) -> usize {
        let all = String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned();
        all.lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }
}

impl Harness {
    /// Requests until the DISCONNECT a skip sends.
    async fn until_disconnect(&self) {
        while !matches!(self.request().await, Request::Disconnect(_)) {}
    }
}

/// The agent's own DISCONNECT after a skip is not an outage: a reconnect that then fails for
/// real is warned about, once. A second agent numbering in this inst (a data directory cloned
/// after the first start) shows as an ack beyond the numbers this agent skipped to: named at
/// error level, and neither the skips nor the proof flood the log.
#[tokio::test]
async fn clones_and_outages_after_a_skip_are_told_once() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), 1000);
    h.connack().await;
    h.publish().await; // birth 1
    h.publish().await; // state
    wait_for(|| h.pending() == [1]).await;
    h.ack(500).await;
    h.until_disconnect().await;
    let first = 500 + 1 + SKIP_MARGIN;
    wait_for(|| h.pending() == [first]).await;
    const SKIP: &str = "confirmed sequence numbers this agent has not issued";
    const DOWN: &str = "cannot connect to the broker";
    assert_eq!(logs.count("WARN", SKIP), 1);
    // The driver reports the closed connection (expected), then the broker is really gone.
    h.down().await;
    h.inputs.send(sample()).await.expect("send");
    wait_for(|| h.pending().len() == 2).await;
    assert_eq!(
        logs.count("WARN", DOWN),
        0,
        "the agent's own close is no outage"
    );
    h.down().await;
    h.down().await;
    h.inputs.send(sample()).await.expect("send");
    wait_for(|| h.pending().len() == 3).await;
    assert_eq!(
        logs.count("WARN", DOWN),
        1,
        "a real outage after the skip, once"
    );

    // The clone: it skipped past this agent's numbers and the collector confirms its own.
    const CLONE: &str = "its data directory was cloned";
    for round in 1..=3u64 {
        h.connack().await;
        let next = lock(&h.spool).index().next_seq();
        h.ack(next + 1000).await;
        h.until_disconnect().await;
        wait_for(|| lock(&h.spool).index().next_seq() > next + 1000).await;
        h.down().await;
        assert_eq!(logs.count("ERROR", CLONE), 1, "round {round}");
    }
    assert_eq!(logs.count("WARN", SKIP), 1, "skips are throttled");
    assert_eq!(logs.count("WARN", DOWN), 1);
    h.stop().await;
}
