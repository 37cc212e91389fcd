//! The service end to end: live state → engine → journal → HTTP API, across a restart.

use super::*;
use crate::alerts::config::RawAlerts;
use crate::alerts::model::{ChangeKind, IncidentState, Rule};
use crate::state::{LiveState, StateConfig};
use std::sync::atomic::AtomicI64;

/// Tuesday 2024-01-09 11:00 MSK.
const T0: i64 = 1_704_787_200_000;

fn birth(mo: &str, host: &str, role: dozor_proto::Role, ts: i64) -> dozor_proto::Message {
    dozor_proto::Message::Birth(dozor_proto::Envelope {
        v: 1,
        mo: mo.into(),
        host: host.into(),
        inst: "i".into(),
        seq: 1,
        ts,
        replay: false,
        body: dozor_proto::Birth {
            agent_version: "t".into(),
            role,
            site: String::new(),
            hostname: host.into(),
            os_name: "РЕД ОС".into(),
            os_version: "7.3".into(),
            cpu_model: String::new(),
            cpu_count: 2,
            mem_total_bytes: 1,
            disks: Vec::new(),
            boot_time: ts / 1000 - 3600,
            boot_id: "b".into(),
            seq_base: 1,
            interval_secs: 10,
            keepalive_secs: 10,
            prev_end: None,
            will_seq: None,
            targets: Vec::new(),
        },
    })
}

fn roster() -> Arc<Roster> {
    Arc::new(
        Roster::from_toml(
            "[[mo]]\noid = \"mo1\"\nname = \"ЦРБ\"\n[[mo]]\noid = \"mo2\"\nname = \"ФАП\"\n",
            "t",
        )
        .unwrap(),
    )
}

fn cfg() -> AlertsConfig {
    let mut raw = RawAlerts {
        startup_grace_secs: 30,
        ..RawAlerts::default()
    };
    raw.server_lost.for_secs = 20;
    crate::alerts::config::validate(raw).unwrap()
}

/// A live state with one server in mo1 that stops reporting at T0 and is lost 35 s later.
fn live() -> LiveState {
    let mut s = LiveState::new(StateConfig::default());
    s.apply(
        &birth("mo1", "srv-1", dozor_proto::Role::Server, T0),
        T0,
        false,
        true,
    )
    .unwrap();
    s
}

async fn serve(h: AlertHandle) -> (String, CancellationToken) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(l, super::super::router(h))
            .with_graceful_shutdown(s.cancelled_owned())
            .await
            .unwrap();
    });
    (url, stop)
}

/// Runs the live state and the service from `from` to `to` (ms) in 1 s steps.
fn run(
    svc: &mut AlertService,
    live: &mut LiveState,
    clock: &AtomicI64,
    from: i64,
    to: i64,
) -> Vec<Change> {
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        now += 1000;
        clock.store(now, Ordering::Relaxed);
        let mut ts = Vec::new();
        live.tick(now, &mut ts);
        for t in &ts {
            out.extend(svc.on_transition(t));
        }
        out.extend(svc.evaluate(now, &live.snapshot(now)));
    }
    out
}

#[tokio::test]
async fn api_silences_incidents_and_a_restart_that_does_not_repage() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(T0));
    let c = clock.clone();
    let clk: Clock = Arc::new(move || c.load(Ordering::Relaxed));
    let mut svc = AlertService::with_clock(cfg(), dir.path(), roster(), clk.clone()).unwrap();
    let (url, stop) = serve(svc.handle()).await;
    let http = reqwest::Client::new();

    // A maintenance window for mo1 over the API.
    let r = http
        .post(format!("{url}/api/v1/silences"))
        .json(&serde_json::json!({"mo": "mo1", "duration_secs": 3600, "comment": "замена ИБП"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let s: serde_json::Value = r.json().await.unwrap();
    assert_eq!(s["id"], "s-1");
    assert_eq!(s["active"], true);
    let bad = http
        .post(format!("{url}/api/v1/silences"))
        .json(&serde_json::json!({"duration_secs": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The server goes silent: an incident, recorded but not sent.
    let mut live = live();
    let ch = run(&mut svc, &mut live, &clock, T0, T0 + 120_000);
    assert!(ch.iter().all(|c| !c.notify), "{ch:?}");
    let list: serde_json::Value = http
        .get(format!("{url}/api/v1/incidents?state=firing"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["rule"], "server_lost");
    assert_eq!(list[0]["silenced_by"], "s-1");
    assert_eq!(list[0]["title"], "Сервер srv-1 (МО «ЦРБ») не на связи");
    let id = list[0]["id"].as_u64().unwrap();
    let one = http
        .get(format!("{url}/api/v1/incidents/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let st = http
        .get(format!("{url}/api/v1/incidents?state=open"))
        .send()
        .await
        .unwrap();
    assert_eq!(st.status(), 400);

    // The window is closed early: now people are told, once.
    let del = http
        .delete(format!("{url}/api/v1/silences/s-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let again = http
        .delete(format!("{url}/api/v1/silences/s-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let ch = run(&mut svc, &mut live, &clock, T0 + 120_000, T0 + 130_000);
    let sent: Vec<_> = ch
        .iter()
        .filter(|c| c.notify)
        .map(|c| (c.kind, c.incident.id))
        .collect();
    assert_eq!(sent, vec![(ChangeKind::Firing, id)]);
    let m = svc.handle().metrics_text();
    assert!(
        m.contains("dozor_alert_incidents{state=\"firing\"} 1\n"),
        "{m}"
    );
    stop.cancel();
    drop(svc);

    // Restart: the incident is restored, firing, and is not sent again.
    let mut svc = AlertService::with_clock(cfg(), dir.path(), roster(), clk).unwrap();
    assert!(svc.handle().silences().is_empty());
    let inc = svc.handle().incidents();
    assert_eq!(inc.len(), 1);
    assert_eq!((inc[0].id, inc[0].state), (id, IncidentState::Firing));
    let ch = run(&mut svc, &mut live, &clock, T0 + 130_000, T0 + 200_000);
    assert!(ch.iter().all(|c| !c.notify), "{ch:?}");
    assert_eq!(
        svc.engine()
            .incidents()
            .filter(|i| i.rule == Rule::ServerLost)
            .count(),
        1
    );
}

#[tokio::test]
async fn an_acknowledgement_is_shown_at_once_stored_and_stops_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(T0));
    let c = clock.clone();
    let clk: Clock = Arc::new(move || c.load(Ordering::Relaxed));
    let mut svc = AlertService::with_clock(cfg(), dir.path(), roster(), clk.clone()).unwrap();
    // The operator as the auth middleware would name them.
    let app = super::super::router(svc.handle()).layer(axum::Extension(crate::auth::Principal {
        name: "petrova".into(),
        role: crate::auth::Role::Operator,
        via: crate::auth::Via::Session,
    }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let http = reqwest::Client::new();

    let mut live = live();
    let ch = run(&mut svc, &mut live, &clock, T0, T0 + 120_000);
    let firing: Vec<_> = ch.iter().filter(|c| c.notify).collect();
    assert_eq!(firing.len(), 1, "{ch:?}");
    let id = firing[0].incident.id;
    assert_eq!(svc.handle().incidents()[0].ack, None);

    let ack = |body: serde_json::Value, id: u64| {
        http.post(format!("{url}/api/v1/incidents/{id}/ack"))
            .json(&body)
            .send()
    };
    let r = ack(serde_json::json!({"comment": "связались с ЦРБ"}), id)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(inc["id"], id);
    assert_eq!(
        inc["ack"],
        serde_json::json!({"by": "petrova", "at_ms": T0 + 120_000, "comment": "связались с ЦРБ"})
    );
    // Listed at once, before the alert thread has seen it.
    let listed: serde_json::Value = http
        .get(format!("{url}/api/v1/incidents/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["ack"]["by"], "petrova");
    // Refused: unknown incident, a control character, a field that is not ours.
    assert_eq!(ack(serde_json::json!({}), 999).await.unwrap().status(), 404);
    let bad = ack(serde_json::json!({"comment": "a\u{7}"}), id)
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(bad["field"], "comment");
    let bad = ack(serde_json::json!({"by": "someone-else"}), id)
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The server comes back (recovery sent), then is lost again: the reopened incident fires
    // without telling anyone.
    let ch = run(&mut svc, &mut live, &clock, T0 + 120_000, T0 + 121_000);
    assert!(ch.iter().all(|c| !c.notify), "{ch:?}");
    assert_eq!(
        svc.engine()
            .incident(id)
            .unwrap()
            .ack
            .as_ref()
            .map(|a| a.by.as_str()),
        Some("petrova")
    );
    let hb = |ts: i64, seq: u64| {
        dozor_proto::Message::Hb(dozor_proto::Envelope {
            v: 1,
            mo: "mo1".into(),
            host: "srv-1".into(),
            inst: "i".into(),
            seq,
            ts,
            replay: false,
            body: dozor_proto::Heartbeat {
                uptime_secs: 7200,
                cpu_pct: 1.0,
                mem_used_bytes: 1,
                mem_total_bytes: 2,
                load: None,
                disks: Vec::new(),
                interval_secs: 10,
                spool: None,
            },
        })
    };
    let back = T0 + 121_000;
    let mut ch = Vec::new();
    for k in 0..12 {
        let at = back + k * 10_000;
        if let Some(t) = live.apply(&hb(at, 2 + k as u64), at, false, true).unwrap() {
            ch.extend(svc.on_transition(&t));
        }
        ch.extend(run(&mut svc, &mut live, &clock, at, at + 10_000));
    }
    let sent: Vec<_> = ch.iter().filter(|c| c.notify).map(|c| c.kind).collect();
    assert_eq!(sent, vec![ChangeKind::Resolved], "{ch:?}");
    let ch = run(&mut svc, &mut live, &clock, back + 120_000, back + 300_000);
    let inc = svc.engine().incident(id).unwrap();
    assert_eq!((inc.state, inc.reopened), (IncidentState::Firing, 1));
    assert!(ch.iter().all(|c| !c.notify), "{ch:?}");
    drop(svc);

    // Stored in incidents.db: a restart keeps who, when and why.
    let svc = AlertService::with_clock(cfg(), dir.path(), roster(), clk).unwrap();
    let inc = svc.handle().incidents();
    let a = inc[0].ack.as_ref().unwrap();
    assert_eq!(
        (a.by.as_str(), a.at_ms, a.comment.as_str()),
        ("petrova", T0 + 120_000, "связались с ЦРБ")
    );
}

/// A storm of transitions applied as one batch (the alert task's way): each opens its
/// incident at once, but the journal write and the published list wait for the batch's end,
/// and then hold every one of them (also after a restart).
#[test]
fn a_batch_of_transitions_is_written_and_published_once_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let clk: Clock = Arc::new(move || T0 + 3_600_000);
    let mut svc = AlertService::with_clock(cfg(), dir.path(), roster(), clk.clone()).unwrap();
    let handle = svc.handle();
    let published = |h: &AlertHandle| {
        h.shared
            .incidents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    };
    let lost = |i: usize| crate::record::Transition {
        mo: "mo1".into(),
        host_id: format!("srv-{i}"),
        role: Some(dozor_proto::Role::Server),
        from: dozor_proto::ConnState::Online,
        to: dozor_proto::ConnState::Lost,
        reason: Some("last_will".into()),
        at_ms: T0 + 3_600_000,
    };
    let started = std::time::Instant::now();
    svc.begin_batch();
    for i in 0..2_000 {
        let changes = svc.on_transition(&lost(i));
        assert!(
            changes.iter().any(|c| c.kind == ChangeKind::Opened),
            "opened at once: {changes:?}"
        );
    }
    assert_eq!(
        published(&handle),
        0,
        "nothing published before the batch ends"
    );
    svc.end_batch();
    // Informational, not asserted (docs/benchmarks.md has the figures: 7,500 transitions one
    // input at a time took 18.6 s in a release build, batched 84 ms).
    eprintln!("2,000 transitions in one batch: {:?}", started.elapsed());
    assert_eq!(published(&handle), 2_000);
    assert_eq!(svc.engine().incidents().count(), 2_000);
    drop(svc);
    let again = AlertService::with_clock(cfg(), dir.path(), roster(), clk).unwrap();
    assert_eq!(again.engine().incidents().count(), 2_000, "all journaled");
}
