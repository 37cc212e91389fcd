//! A real-world roster end to end: the region's roster as Russian Excel saves it (CP1251, `;`,
//! CRLF, a quoted name holding `;`) loaded by the real collector, real agents on its sites, and
//! the `report` subcommand, run without `--roster` and with `--data-dir` after the subcommand,
//! giving the same plan, sites and counts as the HTTP API.

use dozor_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const MO1: &str = "1.2.643.5.1.13.13.12.2.27.1001";
const MO2: &str = "1.2.643.5.1.13.13.12.2.27.1002";
const SITE_MAIN: &str = "Главный корпус; 2 этаж";
const SITE_FAP: &str = "ФАП «Сосновка»";

/// Planned АРМ: 3 + 2 in МО 1, 4 in МО 2.
const PLANNED: u64 = 9;

/// The roster as Excel's «CSV (разделители — точка с запятой)» writes it on a Russian Windows.
fn excel_roster() -> Vec<u8> {
    let text = format!(
        "Реестр МО на 01.01.2025;;;\r\n\
         ОИД МО;Наименование МО;Подразделение;План АРМ\r\n\
         {MO1};\"КГБУЗ \"\"Городская поликлиника № 3\"\"; филиал\";\"{SITE_MAIN}\";3\r\n\
         {MO1};\"КГБУЗ \"\"Городская поликлиника № 3\"\"; филиал\";{SITE_FAP};2\r\n\
         {MO2};Районная больница;Главный;4\r\n"
    );
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(&text);
    assert!(!unmappable);
    let bytes = bytes.into_owned();
    assert!(std::str::from_utf8(&bytes).is_err(), "the file is CP1251");
    bytes
}

/// Runs `dozor-collector ARGS` in `cwd`; returns stdout (bytes) after a successful exit.
fn collector_in(cwd: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(bin("dozor-collector"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run dozor-collector");
    assert!(out.status.success(), "dozor-collector {args:?} failed");
    out.stdout
}

fn agent(c: &Collector, dir: &Path, mo: &str, host: &str, site: &str) -> Agent {
    Agent::start(
        &c.mqtt_url(),
        mo,
        host,
        &dir.join(host),
        &["--site", site, "--interval-secs", "1"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_uses_the_kept_roster_and_equals_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let roster = dir.path().join("реестр.csv");
    std::fs::write(&roster, excel_roster()).unwrap();
    let start = unix_ms() - 60_000;
    let mut collector = Collector::start(
        &Broker::Embedded(0),
        &data,
        &["--roster", roster.to_str().unwrap()],
    );
    assert!(
        data.join("roster.toml").exists(),
        "the collector keeps the roster it loaded"
    );
    let _agents = [
        agent(&collector, dir.path(), MO1, "pc-main-1", SITE_MAIN),
        agent(&collector, dir.path(), MO1, "pc-fap-1", SITE_FAP),
        agent(&collector, dir.path(), MO2, "pc-crb-1", "Главный"),
    ];
    let to = unix_ms() + 3_600_000;
    let range = format!("{start}..{to}");
    let query = format!("from={start}&to={to}");
    // Every workstation stored as active in the period.
    let api = wait_for(Duration::from_secs(30), || async {
        let c = collector.get(&format!("/api/v1/counts?{query}")).await;
        (c["total"]["workstations_active"] == 3).then_some(c)
    })
    .await
    .expect("three active workstations in /api/v1/counts within 30 s");
    assert_eq!(api["total"]["planned_arm"], PLANNED);

    // `report` without --roster, global options after the subcommand, JSON to stdout.
    let cwd = tempfile::tempdir().unwrap();
    let data_arg = data.to_str().unwrap();
    let out = collector_in(
        cwd.path(),
        &[
            "report",
            "counts",
            "--period",
            &range,
            "--format",
            "json",
            "-o",
            "-",
            "--data-dir",
            data_arg,
        ],
    );
    let cli: Value = serde_json::from_slice(&out).expect("report counts --format json");
    assert_eq!(cli["total"], api["total"], "CLI {cli:#}\nAPI {api:#}");
    assert_eq!(cli["mos"], api["mos"]);
    let sites: Vec<(&str, u64)> = cli["mos"][0]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["site"].as_str().unwrap(),
                s["planned_arm"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sites, [(SITE_MAIN, 3), (SITE_FAP, 2)]);
    assert_eq!(
        cli["mos"][0]["mo_name"],
        "КГБУЗ \"Городская поликлиника № 3\"; филиал"
    );

    // The indicator table: the same plan and the same sites as the API's.
    let out = collector_in(
        cwd.path(),
        &[
            "report",
            "--period",
            &range,
            "--format",
            "json",
            "--data-dir",
            data_arg,
        ],
    );
    let cli: Value = serde_json::from_slice(&out).expect("report --format json");
    let api = collector.get(&format!("/api/v1/indicators?{query}")).await;
    let row = |t: &Value, id: &str| -> Value {
        t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no row {id} in {t:#}"))
    };
    for id in ["arm", "sites_mis"] {
        assert_eq!(row(&cli, id)["plan"], row(&api, id)["plan"], "{id}");
        assert_eq!(row(&cli, id)["basis"], row(&api, id)["basis"], "{id}");
    }
    assert_eq!(row(&cli, "arm")["plan"], PLANNED as f64);
    assert_eq!(row(&cli, "sites_mis")["basis"], "0 из 3 подразделений");

    // CSV to stdout for Russian Excel; no file named `-`.
    let out = collector_in(
        cwd.path(),
        &[
            "report",
            "indicators",
            "--period",
            &range,
            "-o",
            "-",
            "--data-dir",
            data_arg,
        ],
    );
    let csv = String::from_utf8(out).expect("UTF-8 CSV");
    assert!(csv.starts_with('\u{feff}'), "{csv}");
    assert!(csv.contains("Организовано"), "{csv}");
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "report -o - wrote a file"
    );

    // XLSX of the counts to stdout, read back.
    let out = collector_in(
        cwd.path(),
        &[
            "report",
            "counts",
            "--period",
            &range,
            "--format",
            "xlsx",
            "--data-dir",
            data_arg,
        ],
    );
    {
        use calamine::{Data, Reader as _, Xlsx};
        let mut wb: Xlsx<_> =
            calamine::open_workbook_from_rs(std::io::Cursor::new(out)).expect("an XLSX file");
        let range = wb
            .worksheet_range_at(0)
            .expect("a sheet")
            .expect("readable");
        let text = |d: &Data| d.to_string();
        let site_row = range
            .rows()
            .find(|r| r.iter().any(|c| text(c) == SITE_MAIN))
            .expect("the site's row");
        assert!(site_row.contains(&Data::Float(3.0)), "{site_row:?}");
    }

    // The indicator workbook to stdout: the table and the per-МО sheet with each МО's plan.
    let out = collector_in(
        cwd.path(),
        &[
            "report",
            "--period",
            &range,
            "--format",
            "xlsx",
            "-o",
            "-",
            "--data-dir",
            data_arg,
        ],
    );
    {
        use calamine::{Data, Reader as _, Xlsx};
        let mut wb: Xlsx<_> =
            calamine::open_workbook_from_rs(std::io::Cursor::new(out)).expect("an XLSX file");
        assert_eq!(wb.sheet_names(), ["Показатели", "По МО", "Каналы МО"]);
        let by_mo = wb.worksheet_range("По МО").expect("the per-МО sheet");
        let mo1 = by_mo
            .rows()
            .find(|r| r.first() == Some(&Data::String(MO1.into())))
            .expect("МО 1's row");
        // Plan 5, 2 active, 3 short.
        assert_eq!(mo1[2..4], [Data::Float(5.0), Data::Float(2.0)]);
        assert_eq!(mo1[5], Data::Float(3.0));
    }

    // Restarted without --roster, the collector uses the kept one.
    collector.proc.terminate();
    let collector = Collector::start(&Broker::Embedded(0), &data, &[]);
    let c = collector.get(&format!("/api/v1/counts?{query}")).await;
    assert_eq!(c["total"]["planned_arm"], PLANNED);
    assert_eq!(c["mos"][0]["sites"][0]["site"], SITE_MAIN);

    // An explicit --roster wins over the kept one for `report`.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!("[[mo]]\noid = \"{MO1}\"\nname = \"Другая\"\nplanned_arm = 50\n"),
    )
    .unwrap();
    let out = collector_in(
        cwd.path(),
        &[
            "report",
            "counts",
            "--period",
            &range,
            "--format",
            "json",
            "--data-dir",
            data_arg,
            "--roster",
            other.to_str().unwrap(),
        ],
    );
    let cli: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(cli["total"]["planned_arm"], 50);
}

/// A roster with a mistake stops the collector before it starts (exit 64), naming the file,
/// the row and the column as Excel shows them.
#[test]
fn a_bad_roster_stops_the_collector_naming_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let roster = dir.path().join("реестр.csv");
    let text = format!(
        "ОИД МО;Наименование МО;Подразделение;План АРМ\r\n\
         {MO1};Поликлиника;Главный;3\r\n\
         {MO1};Поликлиника;ФАП;два\r\n"
    );
    std::fs::write(&roster, encoding_rs::WINDOWS_1251.encode(&text).0).unwrap();
    let out = Command::new(bin("dozor-collector"))
        .arg("--roster")
        .arg(&roster)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run dozor-collector");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("реестр.csv: row 3, column D (План АРМ): \"два\" is not a whole number"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").join("roster.toml").exists(),
        "nothing kept from a bad roster"
    );
}
