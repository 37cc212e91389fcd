//! Planned works end to end (issue 13, item 2): a real collector, real agents, a real SMTP
//! server (aiosmtpd) and a real Prometheus Alertmanager. An admin announces a planned work for
//! one server over the API (through the real auth middleware); that server's agent is killed
//! inside the window, another МО's server is killed with no work announced.
//!
//! | host | planned work | expected |
//! |---|---|---|
//! | `srv-a1` (МО А) | in force (API, `p-1`) | incident recorded, silenced by `planned-p-1`; no e-mail, no Alertmanager alert; the report shows `planned_ms`, `down_ms` 0, availability 100 % |
//! | `srv-b1` (МО Б) | none | one e-mail and one Alertmanager alert; the report shows it down |
//!
//! The web UI's «Плановые работы» page lists the work, the host page draws the planned time.

use dozor_tests::alerting::{Alertmanager, Smtp, channels_toml};
use dozor_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const MO_A: &str = "1.2.643.5.1.13.13.12.2.27.9101";
const MO_B: &str = "1.2.643.5.1.13.13.12.2.27.9102";

fn roster() -> String {
    let mut r = String::new();
    for (oid, name) in [(MO_A, "Поликлиника А"), (MO_B, "Поликлиника Б")] {
        r.push_str(&format!(
            "[[mo]]\noid = \"{oid}\"\nname = \"{name}\"\ntz = \"UTC\"\nwork_days = [1, 2, 3, 4, 5, 6, 7]\n\
             work_start = \"00:00\"\nwork_end = \"24:00\"\n[[mo.site]]\nname = \"Главный корпус\"\nplanned_arm = 1\n\n"
        ));
    }
    r
}

fn collector_toml(smtp_port: u16, am: &str) -> String {
    r#"[store]
region_tz = "UTC"

[alerts]
time_zone = "Europe/Moscow"
startup_grace_secs = 0

[alerts.server_lost]
for_secs = 2
resolve_after_secs = 2

[alerts.disk_full]
enabled = false
"#
    .to_string()
        + &channels_toml(smtp_port, am)
}

/// `YYYY-MM-DD` (UTC) of Unix ms `ms` (days-from-civil inverted; no calendar crate needed).
fn utc_date(ms: i64) -> String {
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 (UTC) of Unix ms, whole seconds.
fn rfc3339(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    let t = s.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        utc_date(ms),
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

fn agent_args() -> Vec<&'static str> {
    vec![
        "--role",
        "server",
        "--site",
        "Главный корпус",
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "2",
    ]
}

async fn host_row(c: &Collector, from: &str, to: &str, host: &str) -> Value {
    let rep = c
        .get(&format!("/api/v1/availability?from={from}&to={to}&by=host"))
        .await;
    rep["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["host"] == host).cloned())
        .unwrap_or_else(|| panic!("no row of {host}: {rep}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_work_reports_planned_and_silences_only_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path());
    let am = Alertmanager::start(dir.path()).await;
    let roster_file = dir.path().join("roster.toml");
    std::fs::write(&roster_file, roster()).unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, collector_toml(smtp.port, &am.base)).unwrap();
    let c = Collector::start(
        &Broker::Embedded(0),
        &dir.path().join("collector"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--roster",
            roster_file.to_str().unwrap(),
        ],
    );
    let mut a1 = Agent::start(
        &c.mqtt_url(),
        MO_A,
        "srv-a1",
        &dir.path().join("a1"),
        &agent_args(),
    );
    let mut b1 = Agent::start(
        &c.mqtt_url(),
        MO_B,
        "srv-b1",
        &dir.path().join("b1"),
        &agent_args(),
    );
    let online = wait_for(Duration::from_secs(40), || async {
        let hs = c.get("/api/v1/hosts").await;
        let n = hs
            .as_array()?
            .iter()
            .filter(|h| h["state"] == "online" && h["role"] == "server")
            .count();
        (n == 2).then_some(())
    })
    .await;
    assert!(online.is_some(), "both servers online within 40 s");

    // An admin announces works on srv-a1 from now for 10 minutes (the harness's admin token,
    // through the real auth middleware); nobody anonymous may.
    let now = unix_ms();
    let body = json!({"title": "Замена ИБП", "mo": MO_A, "host": "srv-a1",
                      "from": rfc3339(now - 1000), "to": rfc3339(now + 600_000)});
    let url = format!("http://{}/api/v1/planned-works", c.http);
    let anonymous = reqwest::Client::new().post(&url).json(&body).send().await;
    assert_eq!(anonymous.unwrap().status(), 401);
    let bad = c
        .client
        .post(&url)
        .json(
            &json!({"title": "x", "mo": "1.2.3.unknown", "from": rfc3339(now),
                      "to": rfc3339(now + 60_000)}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "mo");
    let r = c.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let w: Value = r.json().await.unwrap();
    assert_eq!(w["id"], "p-1");
    assert_eq!(w["active"], true, "{w}");
    assert!(
        w["created_by"].as_str().unwrap().starts_with("token:"),
        "{w}"
    );
    // Let the alert thread pick it up (evaluation every second).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Inside the window: srv-a1's agent killed → an incident, silenced, nobody told.
    a1.proc.kill9();
    let silenced = wait_for(Duration::from_secs(20), || async {
        let l = c.get("/api/v1/incidents?rule=server_lost").await;
        l.as_array()?
            .iter()
            .find(|i| i["hosts"] == json!(["srv-a1"]) && i["state"] == "firing")
            .cloned()
    })
    .await
    .expect("a server_lost incident for srv-a1 within 20 s");
    assert_eq!(silenced["silenced_by"], "planned-p-1", "{silenced}");

    // Outside any window: srv-b1 killed → told by e-mail and to Alertmanager.
    b1.proc.kill9();
    let told = wait_for(Duration::from_secs(30), || async {
        let s = smtp.subjects();
        let am = am.active_hosts("server_lost").await;
        (!s.is_empty() && !am.is_empty()).then_some((s, am))
    })
    .await;
    let (subjects, am_hosts) = told.expect("srv-b1's loss e-mailed and in Alertmanager in 30 s");
    // Both notifiers had seconds to tell about srv-a1 too; give them a few more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let subjects_after = smtp.subjects();
    assert_eq!(subjects_after.len(), 1, "{subjects_after:?}");
    assert!(
        subjects[0].contains("АВАРИЯ") && subjects[0].contains("Поликлиника Б"),
        "{subjects:?}"
    );
    assert_eq!(am_hosts, ["srv-b1"]);
    assert_eq!(am.active_hosts("server_lost").await, ["srv-b1"]);

    // The report: srv-a1's silence is planned, not down; srv-b1's is down.
    let (from, to) = (utc_date(now), utc_date(now + 86_400_000));
    let a = host_row(&c, &from, &to, "srv-a1").await;
    let b = host_row(&c, &from, &to, "srv-b1").await;
    println!("PLANNED srv-a1 {a}\nPLANNED srv-b1 {b}");
    assert_eq!(a["down_ms"], 0, "{a}");
    assert!(a["planned_ms"].as_i64().unwrap() > 5_000, "{a}");
    assert_eq!(a["availability_pct"], 100.0, "{a}");
    assert_eq!(b["planned_ms"], 0, "{b}");
    assert!(b["down_ms"].as_i64().unwrap() > 5_000, "{b}");
    assert!(b["availability_pct"].as_f64().unwrap() < 100.0, "{b}");
    let csv = c
        .text(&format!(
            "/api/v1/availability?from={from}&to={to}&by=host&format=csv"
        ))
        .await;
    assert!(csv.contains("Плановые работы, ч"), "{csv}");

    // The web UI: the page lists it, the host page draws the planned time.
    let page = c.text("/planned").await;
    assert!(
        page.contains("Замена ИБП") && page.contains("идут сейчас"),
        "{page}"
    );
    let host_page = c.text(&format!("/host/{MO_A}/srv-a1")).await;
    assert!(
        host_page.contains("tl-planned"),
        "no planned stretch on the host page"
    );
    let incident = c
        .text(&format!("/incidents/{}", silenced["id"].as_u64().unwrap()))
        .await;
    assert!(
        incident.contains("плановые работы «Замена ИБП»"),
        "the incident page names the work"
    );
}
