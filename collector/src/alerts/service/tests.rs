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
    raw.validate().unwrap()
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
