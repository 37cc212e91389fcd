//! A small fleet's day written through the store, reported as the indicator table, exported
//! and read back.

use super::*;
use crate::record::Batch;
use crate::store::config::RawStore;
use crate::store::sim::Sim;
use crate::store::{SqliteStore, Store, db_path};
use calamine::{Data, Reader as _, Xlsx};
use chrono::TimeZone;
use dozor_proto::{Category, Role};
use std::sync::Arc;

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;

fn at(d: u32, h: u32, m: u32) -> i64 {
    chrono::Utc
        .with_ymd_and_hms(2024, 3, d, h, m, 0)
        .single()
        .unwrap()
        .timestamp_millis()
}

const ROSTER: &str = r#"
[[mo]]
oid = "1.2.643.5.1.13.13.12.2.77.1"
name = "Городская поликлиника № 1"
[[mo.site]]
name = "Главный корпус"
planned_arm = 2
[[mo.site]]
name = "ФАП Вознесенское"
planned_arm = 1

[[mo]]
oid = "1.2.643.5.1.13.13.12.2.77.2"
name = "Районная больница"
planned_arm = 2
"#;
const MO1: &str = "1.2.643.5.1.13.13.12.2.77.1";
const MO2: &str = "1.2.643.5.1.13.13.12.2.77.2";

/// Every minute over `[from, to]`: a heartbeat and, when `probe` is not empty, a probe round.
#[allow(clippy::too_many_arguments)]
fn run(
    s: &mut Sim,
    mo: &str,
    host: &str,
    from: i64,
    to: i64,
    boot: i64,
    probe: &[(&str, Category, bool)],
) {
    let mut t = from;
    while t <= to {
        s.hb(mo, host, t, boot, false);
        if !probe.is_empty() {
            s.probe(mo, host, t, probe, false);
        }
        t += MIN;
    }
}

/// Writes the fleet; returns (temp dir, db path, config, roster).
pub(crate) fn fleet() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    StoreConfig,
    Arc<Roster>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let cfg = RawStore::default().validate().unwrap();
    let roster = Arc::new(Roster::from_toml(ROSTER, "roster").unwrap());
    let mut store = SqliteStore::open(&path, &cfg, roster.clone()).unwrap();
    let mut s = Sim::new();
    s.interval_secs = 60;
    s.start(at(4, 20, 0));
    let mis_ok = [("МИС", Category::Mis, true)];
    let mis_fail = [("МИС", Category::Mis, false)];
    // Servers from 2024-03-04 20:00 UTC (23:00 MSK, before the reported day).
    let boot = at(1, 0, 0);
    s.birth(
        MO1,
        "s1",
        Role::Server,
        "Главный корпус",
        at(4, 20, 0),
        boot,
    );
    s.birth(MO2, "s2", Role::Server, "", at(4, 20, 0), boot);
    run(&mut s, MO1, "s1", at(4, 20, 0), at(5, 10, 0), boot, &[]);
    s.lost(MO1, "s1", at(5, 10, 3));
    run(&mut s, MO1, "s1", at(5, 11, 0), at(5, 21, 0), boot, &[]);
    run(&mut s, MO2, "s2", at(4, 20, 0), at(5, 21, 0), boot, &mis_ok);
    // Workstations on 2024-03-05 (MSK = UTC+3).
    let b = at(5, 4, 55);
    s.birth(
        MO1,
        "a",
        Role::Workstation,
        "Главный корпус",
        at(5, 5, 0),
        b,
    );
    run(&mut s, MO1, "a", at(5, 5, 0), at(5, 15, 0), b, &mis_ok);
    s.offline(MO1, "a", at(5, 15, 0) + 5_000);
    let b = at(5, 3, 55);
    s.birth(
        MO1,
        "b",
        Role::Workstation,
        "ФАП Вознесенское",
        at(5, 4, 0),
        b,
    );
    run(&mut s, MO1, "b", at(5, 4, 0), at(5, 14, 0), b, &mis_fail);
    s.offline(MO1, "b", at(5, 14, 0) + 5_000);
    let b = at(5, 5, 55);
    s.birth(MO2, "c", Role::Workstation, "", at(5, 6, 0), b);
    run(
        &mut s,
        MO2,
        "c",
        at(5, 6, 0),
        at(5, 14, 0),
        b,
        &[("МИС", Category::Mis, true), ("ЛИС", Category::Lis, true)],
    );
    s.offline(MO2, "c", at(5, 14, 0) + 5_000);
    s.stop(at(5, 21, 1));
    let mut recs = s.take();
    recs.sort_by_key(|r| match r {
        crate::record::Record::Msg(a) => a.recv_ms,
        crate::record::Record::Transition(t) => t.at_ms,
        crate::record::Record::CollectorStart { at_ms }
        | crate::record::Record::CollectorStop { at_ms } => *at_ms,
    });
    for chunk in recs.chunks(2000) {
        store
            .write(&Batch {
                records: chunk.to_vec(),
                delivery: Vec::new(),
            })
            .unwrap();
    }
    (dir, path, cfg, roster)
}

fn row<'a>(t: &'a IndicatorTable, id: &str) -> &'a availability::IndicatorRow {
    t.rows.iter().find(|r| r.id == id).unwrap()
}

fn round3(v: Option<f64>) -> Option<f64> {
    v.map(|v| (v * 1000.0).round() / 1000.0)
}

#[test]
fn indicator_table_of_a_day() {
    let (_dir, path, cfg, roster) = fleet();
    let reader = Reader::open(&path, &cfg).unwrap();
    let p = parse_period("2024-03-05", &cfg).unwrap();
    let t = indicators(&reader, &roster, &cfg, &p, at(6, 12, 0)).unwrap();
    assert_eq!(row(&t, "arm").plan, Some(5.0));
    assert_eq!(row(&t, "arm").fact, Some(3.0));
    assert_eq!(row(&t, "arm").pct_of_plan, Some(60.0));
    assert_eq!(row(&t, "mo_mis").fact, Some(100.0));
    assert_eq!(row(&t, "mo_subsystems").fact, Some(50.0));
    assert_eq!(row(&t, "mo_subsystem_lis").fact, Some(50.0));
    assert_eq!(round3(row(&t, "sites_mis").fact), Some(66.667));
    // Servers: 23 h + 24 h up, 1 h down.
    assert_eq!(round3(row(&t, "availability_servers").fact), Some(97.917));
    // МИС: МО 1 reachable 10 h, unreachable 1 h (only "b", failing, was up 04:00–05:00 UTC);
    // МО 2 reachable 24 h. МО 2 reached it all that time, so the МИС itself worked: 100 %,
    // and the hour is МО 1's channel (below).
    assert_eq!(row(&t, "availability_mis").fact, Some(100.0));
    assert_eq!(row(&t, "availability_lis").fact, Some(100.0));
    // 100 % against a plan of 99 %: the plan is met, shown as 100 % of plan and said so.
    let lis = row(&t, "availability_lis");
    assert_eq!((lis.pct_of_plan, lis.capped), (Some(100.0), true));
    assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
    assert!(t.notes[0].contains("план выполнен") && t.notes[0].contains("«ЛИС»"));
    assert!(t.notes[0].contains("«МИС»"));
    // Each МО is one АРМ short: 2 of 3 and 1 of 2.
    assert_eq!(
        row(&t, "arm").basis,
        "3 АРМ передавали данные; ниже плана 2 МО, не хватает 2 АРМ"
    );

    // The same through the availability and counts reports.
    let Availability::Target { rows, .. } = availability(
        &reader,
        &roster,
        p.from_ms,
        p.to_ms,
        AvailabilityBy::Target,
        at(6, 12, 0),
    )
    .unwrap() else {
        panic!()
    };
    let mis = rows.iter().find(|r| r.category == Category::Mis).unwrap();
    assert_eq!(
        (mis.reach_from_mos_ms, mis.unreach_from_mos_ms),
        (34 * H, H)
    );
    assert_eq!(round3(mis.reachability_from_mos_pct), Some(97.143));
    assert_eq!(
        (
            mis.resource_up_ms,
            mis.resource_down_ms,
            mis.resource_unknown_ms
        ),
        (24 * H, 0, 0)
    );
    assert_eq!(mis.resource_availability_pct, Some(100.0));
    let mo1 = &mis.mos[0];
    assert_eq!((mo1.channel_ok_ms, mo1.channel_fail_ms), (10 * H, H));
    assert_eq!(round3(mo1.channel_quality_pct), Some(90.909));
    assert_eq!(mis.mos[1].channel_quality_pct, Some(100.0));
    let c = counts(&reader, &roster, p.from_ms, p.to_ms, at(6, 12, 0)).unwrap();
    assert_eq!(c.total.workstations_active, 3);
    assert_eq!(c.total.workstations_reaching_mis, 2);
    assert_eq!(c.total.servers_active, 2);
}

fn cell_f64(d: &Data) -> Option<f64> {
    match d {
        Data::Float(f) => Some(*f),
        Data::Int(i) => Some(*i as f64),
        _ => None,
    }
}

#[test]
fn xlsx_and_csv_files() {
    let (dir, path, _cfg, roster) = fleet();
    let out = dir.path().join("report.xlsx");
    run_report(&path, &roster, "2024-03-05", Format::Xlsx, &out).unwrap();
    let mut wb: Xlsx<_> = calamine::open_workbook(&out).unwrap();
    let range = wb.worksheet_range("Показатели").unwrap();
    let rows: Vec<&[Data]> = range.rows().collect();
    assert!(
        rows[0][0].to_string().contains("05.03.2024"),
        "{:?}",
        rows[0]
    );
    let header = rows
        .iter()
        .position(|r| matches!(&r[0], Data::String(s) if s == "Показатель"))
        .unwrap();
    assert_eq!(rows[header][3].to_string(), "Факт");
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r[0].to_string().starts_with(prefix))
            .unwrap_or_else(|| panic!("no row {prefix}"))
    };
    let arm = find("Организовано автоматизированных рабочих мест");
    assert_eq!(
        (cell_f64(&arm[2]), cell_f64(&arm[3]), cell_f64(&arm[4])),
        (Some(5.0), Some(3.0), Some(60.0))
    );
    assert_eq!(arm[1].to_string(), "ед.");
    let mis = find("Доля МО, использующих медицинские информационные системы");
    assert_eq!(cell_f64(&mis[3]), Some(100.0));
    let srv = find("Работоспособность серверного оборудования");
    assert_eq!(
        cell_f64(&srv[3]).map(|v| (v * 1000.0).round()),
        Some(97917.0)
    );
    let res = find("Работоспособность информационного ресурса «МИС»");
    assert_eq!(cell_f64(&res[2]), Some(99.0));
    assert_eq!(cell_f64(&res[3]), Some(100.0));

    // The per-МО sheet: plan vs fact with the shortfall of each МО.
    let range = wb.worksheet_range("По МО").unwrap();
    let rows: Vec<Vec<String>> = range
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    let by = |first: &str| -> &[String] {
        rows.iter()
            .find(|r| r[0] == first || r[1] == first)
            .unwrap_or_else(|| panic!("no row {first}: {rows:?}"))
    };
    let header = by("ОИД МО");
    assert_eq!(header[5], "Не хватает АРМ до плана");
    let mo1 = by(MO1);
    assert_eq!(mo1[1], "Городская поликлиника № 1");
    // Plan 3, 2 active (66.7 %), 1 short, uses the МИС, 1 of 2 sites ("b" at the ФАП failed).
    let pct1: f64 = mo1[4].parse().unwrap();
    assert_eq!((pct1 * 10.0).round(), 667.0);
    assert_eq!(mo1[2..4], ["3", "2"]);
    // Uses the МИС: reached on 1 of its 1 working day (a Tuesday).
    assert_eq!(mo1[5..11], ["1", "да", "1", "1", "1", "2"]);
    // ЛИС, probed in the period by МО 2 only, is what МО 1 lacks.
    assert_eq!(mo1[11], "ЛИС");
    // Its server: 23 h up, 1 h down.
    let srv1: f64 = mo1[12].parse().unwrap();
    assert_eq!((srv1 * 100.0).round(), 9583.0);
    let mo2 = by(MO2);
    assert_eq!(
        mo2[2..12],
        ["2", "1", "50", "1", "да", "1", "1", "1", "1", ""]
    );
    let total = by("Итого по региону");
    assert_eq!(
        total[2..11],
        ["5", "3", "60", "2", "2 из 2", "", "", "2", "3"]
    );

    // The channel sheet: the МИС itself worked (МО 2 reached it all day); МО 1's channel
    // failed one hour of the eleven it observed it.
    let range = wb.worksheet_range("Каналы МО").unwrap();
    let rows: Vec<Vec<String>> = range
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    let header = rows.iter().find(|r| r[0] == "Ресурс").unwrap();
    assert_eq!(header[3], "Работоспособность ресурса, %");
    assert_eq!(header[9], "Качество канала МО, %");
    let region = rows
        .iter()
        .find(|r| r[0] == "МИС" && r[2] == "Регион")
        .unwrap();
    assert_eq!(region[3], "100");
    let mo1 = rows.iter().find(|r| r[0] == "МИС" && r[1] == MO1).unwrap();
    assert_eq!(mo1[3], "");
    assert_eq!((mo1[7].as_str(), mo1[8].as_str()), ("10", "1"));
    let q: f64 = mo1[9].parse().unwrap();
    assert_eq!((q * 1000.0).round(), 90909.0);

    let out = dir.path().join("report.csv");
    run_report(&path, &roster, "2024-03-05", Format::Csv, &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("\u{feff}Показатель;Ед. изм.;План;Факт;% выполнения плана;Расчёт\r\n")
    );
    // Counts are whole numbers, measures keep one decimal.
    assert!(text.contains(";ед.;5;3;60,0;"), "{text}");
    assert!(text.contains(";%;99,0;100,0;100,0;"), "ЛИС capped: {text}");
    assert!(run_report(&path, &roster, "2024-13", Format::Csv, &out).is_err());
}

#[tokio::test]
async fn http_endpoints() {
    let (_dir, path, cfg, roster) = fleet();
    let mut state = http::ReportState::new(path.clone(), roster.clone(), cfg.clone());
    state.clock = Arc::new(|| at(6, 12, 0));
    let app = http::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let get = |q: &str| client.get(format!("{base}{q}")).send();

    let r = get("/api/v1/indicators?period=2024-03-05").await.unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    let rows = j["rows"].as_array().unwrap();
    let arm = rows.iter().find(|r| r["id"] == "arm").unwrap();
    assert_eq!(arm["fact"], 3.0);
    assert_eq!(j["period"]["label"], "05.03.2024");

    let r = get("/api/v1/indicators?from=2024-03-05&to=2024-03-05&format=xlsx")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[reqwest::header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .ends_with(".xlsx\"")
    );
    let bytes = r.bytes().await.unwrap();
    let mut wb: Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).unwrap();
    assert!(wb.worksheet_range("Показатели").is_ok());

    let r = get("/api/v1/counts?period=2024-03-05&format=csv")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    // Counts as whole numbers; 60 % of plan, 2 АРМ short (one in each МО).
    assert!(
        text.contains("Итого по региону;;5;3;3;60,0;2;2;2;2"),
        "{text}"
    );
    assert!(!text.contains("5,0"), "{text}");

    let r = get("/api/v1/availability?period=2024-03-05&by=host")
        .await
        .unwrap();
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["by"], "host");
    let s1 = j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "s1")
        .unwrap();
    assert_eq!(s1["down_ms"], H);

    // One error shape: an English code, the field, a Russian message naming the value.
    for (q, field, needle) in [
        ("/api/v1/indicators", "period", "нужен period"),
        (
            "/api/v1/indicators?period=2024-Q7",
            "period",
            "\"2024-Q7\": ожидается",
        ),
        (
            "/api/v1/availability?period=2024-03&by=planet",
            "by",
            "\"planet\": ожидается",
        ),
        (
            "/api/v1/counts?period=2024-03&format=pdf",
            "format",
            "\"pdf\": ожидается",
        ),
        ("/api/v1/counts?from=2024-03-05", "period", "нужен period"),
        (
            "/api/v1/counts?from=garbage&to=2024-03-05",
            "from",
            "\"garbage\"",
        ),
    ] {
        let r = get(q).await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let j: serde_json::Value = r.json().await.unwrap();
        assert_eq!(j["error"], "invalid_field", "{q}: {j}");
        assert_eq!(j["field"], field, "{q}: {j}");
        let m = j["message"].as_str().unwrap();
        assert!(m.starts_with(&format!("{field}: ")), "{q}: {j}");
        assert!(m.contains(needle), "{q}: {j}");
    }
}

#[tokio::test]
async fn missing_store_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let state = http::ReportState::new(
        dir.path().join("dozor.db"),
        Arc::new(Roster::default()),
        StoreConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, http::router(state)).await });
    let r = reqwest::get(format!("http://{addr}/api/v1/indicators?period=2024"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}
