//! Issue 13, item 1: a workstation switched off in working hours is its own figure, neither down
//! nor hidden. Real collector (embedded broker), real agents, a roster whose working calendar
//! puts "now" in the middle of a working day (a fixed-offset time zone where it is about noon,
//! every day 00:00–24:00). One workstation is shut down gracefully (SIGTERM: the agent says
//! `offline`), one keeps working, one server is shut down too. Then:
//! - `/api/v1/availability?by=host` shows the switched-off workstation's seconds off in working
//!   hours, no down time, and the server's shutdown as down (never as "off");
//! - `/api/v1/offhours` and `dozor-collector report offhours` list that workstation (and only it)
//!   with those seconds, on one working day, and the same figures;
//! - the МО page of the web UI lists it in «АРМ, чаще всего выключенные в рабочее время».

use dozor_tests::*;
use serde_json::Value;
use std::time::Duration;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.7001";

/// A fixed-offset zone in which the local time now is about noon (so the working day
/// 00:00–24:00 has ~12 h on either side of the test).
fn noon_zone() -> String {
    let hour = (unix_ms() / 3_600_000).rem_euclid(24);
    // Local = UTC + k; want local ≈ 12. Etc/GMT-k is UTC+k (the sign is POSIX's).
    let k = 12 - hour; // −11..=12
    match k {
        0 => "Etc/GMT".into(),
        k if k > 0 => format!("Etc/GMT-{k}"),
        k => format!("Etc/GMT+{}", -k),
    }
}

fn host<'a>(rows: &'a Value, id: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == id)
        .unwrap_or_else(|| panic!("no host {id} in {rows:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_in_working_hours_is_its_own_figure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let roster = dir.path().join("roster.toml");
    std::fs::write(
        &roster,
        format!(
            "[[mo]]\noid = \"{MO}\"\nname = \"Районная больница\"\ntz = \"{}\"\n\
             work_days = [1, 2, 3, 4, 5, 6, 7]\nwork_start = \"00:00\"\nwork_end = \"24:00\"\n\
             planned_arm = 2\n",
            noon_zone()
        ),
    )
    .unwrap();
    let start = unix_ms() - 60_000;
    let c = Collector::start(
        &Broker::Embedded(0),
        &data,
        &["--roster", roster.to_str().unwrap()],
    );
    let agent = |id: &str, extra: &[&str]| {
        // 2 s: a heartbeat late by up to 5 s on a loaded machine still keeps one segment.
        let mut args = vec!["--interval-secs", "2", "--site", "Поликлиника"];
        args.extend_from_slice(extra);
        Agent::start(&c.mqtt_url(), MO, id, &dir.path().join(id), &args)
    };
    let mut off = agent("pc-off", &[]);
    let _on = agent("pc-on", &[]);
    let mut srv = agent("srv-1", &["--role", "server"]);
    let to = unix_ms() + 3_600_000;
    let query = format!("from={start}&to={to}");
    wait_for(Duration::from_secs(30), || async {
        let a = c.get(&format!("/api/v1/counts?{query}")).await;
        (a["total"]["workstations_active"] == 2 && a["total"]["servers_active"] == 1).then_some(())
    })
    .await
    .expect("two workstations and a server active within 30 s");
    // Let both run a few heartbeats, then switch one workstation and the server off.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t_off = unix_ms();
    assert_eq!(off.proc.terminate(), Some(0), "the agent stops gracefully");
    assert_eq!(srv.proc.terminate(), Some(0));
    let t_stopped = unix_ms();
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Availability by host: off seconds, not down; the server's shutdown is down.
    let t0 = unix_ms();
    let a = c
        .get(&format!("/api/v1/availability?{query}&by=host"))
        .await;
    let t1 = unix_ms();
    let pc = host(&a["rows"], "pc-off");
    let off_ms = pc["off_w_ms"].as_i64().unwrap();
    // Off from its last message (about one 2 s interval before SIGTERM, more if a heartbeat
    // was late) until the report's "now".
    assert!(
        off_ms >= t0 - t_stopped - 1_000 && off_ms <= t1 - t_off + 6_000,
        "pc-off off {off_ms} ms; expected about {} ms: {pc:#}",
        t0 - t_off
    );
    assert_eq!(pc["off_days"], 1);
    assert_eq!(
        pc["down_ms"], 0,
        "a graceful shutdown is never down: {pc:#}"
    );
    assert_eq!(host(&a["rows"], "pc-on")["off_w_ms"], 0);
    let s = host(&a["rows"], "srv-1");
    assert!(s["off_w_ms"].is_null(), "no off figure for servers: {s:#}");
    assert!(
        s["down_ms"].as_i64().unwrap() >= t0 - t_stopped - 1_000,
        "a server switched off is down: {s:#}"
    );
    // By МО: the workstations' sum.
    let m = c.get(&format!("/api/v1/availability?{query}&by=mo")).await;
    let mo = &m["rows"][0];
    assert!(mo["workstations_off_w_ms"].as_i64().unwrap() >= off_ms);
    assert_eq!(mo["workstations_off_days"], 1);

    // The top-N report: only pc-off, with its seconds and its day.
    let r = c.get(&format!("/api/v1/offhours?{query}&top=5")).await;
    let top = r["top"].as_array().unwrap();
    assert_eq!(top.len(), 1, "{r:#}");
    assert_eq!(top[0]["host"], "pc-off");
    assert_eq!(top[0]["mo_name"], "Районная больница");
    assert_eq!(top[0]["site"], "Поликлиника");
    assert_eq!(top[0]["off_days"], 1);
    assert!(top[0]["off_w_ms"].as_i64().unwrap() >= off_ms);
    assert_eq!(r["region"]["hosts"], 2, "workstations only: {r:#}");
    assert_eq!(r["region"]["hosts_off"], 1);
    assert_eq!(r["mos"][0]["sites"][0]["site"], "Поликлиника");
    assert_eq!(r["mos"][0]["top"][0]["host"], "pc-off");
    // A bad N is refused, naming the parameter.
    let bad = c
        .client
        .get(format!("http://{}/api/v1/offhours?{query}&top=0", c.http))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body = bad.text().await.unwrap();
    assert!(body.contains("top"), "{body}");

    // The CLI: the same list (its "now" is a little later, so the seconds may only grow).
    let range = format!("{start}..{to}");
    let out = collector_cli(
        &data,
        &[
            "report", "offhours", "--period", &range, "--format", "json", "--top", "5",
        ],
    );
    let cli: Value = serde_json::from_str(&out).expect("report offhours --format json");
    let ctop = cli["top"].as_array().unwrap();
    assert_eq!(ctop.len(), 1, "{cli:#}");
    assert_eq!(ctop[0]["host"], "pc-off");
    assert_eq!(ctop[0]["off_days"], 1);
    assert!(ctop[0]["off_w_ms"].as_i64().unwrap() >= top[0]["off_w_ms"].as_i64().unwrap());
    let csv = collector_cli(
        &data,
        &["report", "offhours", "--period", &range, "--format", "csv"],
    );
    assert!(csv.contains("pc-off"), "{csv}");
    assert!(csv.contains("Выключен в рабочее время, ч"), "{csv}");

    // The МО page lists it.
    let page = c.text(&format!("/mo/{MO}")).await;
    assert!(
        page.contains("АРМ, чаще всего выключенные в рабочее время"),
        "{page}"
    );
    let table = page
        .split("id=\"offhours\"")
        .nth(1)
        .expect("the МО page has the offhours table");
    assert!(table.contains("pc-off"), "{table}");
    assert!(!table.split("</table>").next().unwrap().contains("pc-on"));
}
