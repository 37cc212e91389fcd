//! A central resource's own availability told apart from one МО's broken channel to it (issue
//! 13, item 4), end to end: real agents probe a real HTTP server standing in for the ЛИС; one
//! МО reaches it, the other's channel to it is broken (its target address refuses, as a cut
//! uplink or a wrong route does), while both reach the МИС.

use dozor_tests::*;
use serde_json::Value;
use std::time::Duration;

const MO_OK: &str = "1.2.643.5.1.13.13.12.2.27.2001";
const MO_CUT: &str = "1.2.643.5.1.13.13.12.2.27.2002";

fn agent(
    c: &Collector,
    dir: &std::path::Path,
    mo: &str,
    host: &str,
    lis: &str,
    mis: &str,
) -> Agent {
    let lis = format!("lis={lis}");
    let mis = format!("mis={mis}");
    Agent::start(
        &c.mqtt_url(),
        mo,
        host,
        &dir.join(host),
        &[
            "--role",
            "server",
            "--interval-secs",
            "1",
            "--probe-timeout-ms",
            "1000",
            "--probe",
            &lis,
            "--probe",
            &mis,
        ],
    )
}

fn target<'a>(a: &'a Value, cat: &str) -> Option<&'a Value> {
    a["rows"].as_array()?.iter().find(|r| r["category"] == cat)
}

fn mo_of<'a>(t: &'a Value, mo: &str) -> Option<&'a Value> {
    t["mos"].as_array()?.iter().find(|m| m["mo"] == mo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_channel_of_one_mo_is_not_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&Broker::Embedded(0), &dir.path().join("collector"), &[]);
    let service = FakeMis::start().await;
    // МО 2's route to the ЛИС: a port nobody listens on.
    let dead = free_port();
    let _a = agent(
        &c,
        dir.path(),
        MO_OK,
        "srv-a",
        &service.url(),
        &service.url(),
    );
    // МО 1 first: while МО 2 alone observed the ЛИС failing and reached the МИС, the rule would
    // rightly call the ЛИС down (a working channel saw it fail), which is not this scenario.
    wait_for(Duration::from_secs(30), || async {
        let h = c.host("srv-a").await?;
        (h["probes"]["lis"]["ok"] == true).then_some(())
    })
    .await
    .expect("МО 1 reaches the ЛИС");
    let _b = agent(
        &c,
        dir.path(),
        MO_CUT,
        "srv-b",
        &format!("http://127.0.0.1:{dead}/lis"),
        &service.url(),
    );
    wait_for(Duration::from_secs(30), || async {
        let h = c.host("srv-b").await?;
        (h["probes"]["lis"]["ok"] == false).then_some(())
    })
    .await
    .expect("МО 2 observes the ЛИС");
    // The report starts once both agents' probe periods are learnt: in an agent's first
    // seconds its results come faster than its period and the reachability rows have gaps
    // (docs/indicators.md, "Resource and channel").
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = unix_ms();
    // Wait until both МО observed the ЛИС for at least 8 s. The window ends 5 s before the
    // present: its rows are settled (see docs/indicators.md on the edge of a period in
    // progress).
    const SETTLED_MS: i64 = 5_000;
    let q = |to: i64| format!("/api/v1/availability?by=target&from={from}&to={to}");
    let report = wait_for(Duration::from_secs(60), || async {
        let a = c.get(&q(unix_ms() - SETTLED_MS)).await;
        let t = target(&a, "lis")?;
        let b = mo_of(t, MO_CUT)?;
        (b["unreach_ms"].as_i64()? >= 8_000 && t["resource_up_ms"].as_i64()? >= 8_000)
            .then(|| a.clone())
    })
    .await
    .expect("both МО observe the ЛИС within 60 s");
    println!("{report:#}");
    let lis = target(&report, "lis").unwrap();
    // The ЛИС answered everyone whose channel worked: the resource is 100 %.
    assert_eq!(lis["resource_down_ms"], 0, "{lis:#}");
    assert_eq!(lis["resource_availability_pct"].as_f64(), Some(100.0));
    // The mixed regional reachability is what the old row showed (≈ 50 %).
    let mixed = lis["reachability_from_mos_pct"].as_f64().unwrap();
    assert!((35.0..65.0).contains(&mixed), "mixed reachability {mixed}");
    // МО 1's channel is fine, МО 2's is broken.
    let ok = mo_of(lis, MO_OK).unwrap();
    assert!(ok["channel_quality_pct"].as_f64().unwrap() > 95.0, "{ok}");
    let cut = mo_of(lis, MO_CUT).unwrap();
    assert!(cut["channel_quality_pct"].as_f64().unwrap() < 5.0, "{cut}");
    assert!(cut["channel_fail_ms"].as_i64().unwrap() >= 8_000, "{cut}");
    // The МИС: both reach it, both channels good.
    let mis = target(&report, "mis").unwrap();
    assert_eq!(mis["resource_availability_pct"].as_f64(), Some(100.0));
    assert!(
        mo_of(mis, MO_CUT).unwrap()["channel_quality_pct"]
            .as_f64()
            .unwrap()
            > 95.0
    );

    // The indicator table's row is the resource's own figure; its channels come along.
    let to = unix_ms() - SETTLED_MS;
    let t = c
        .get(&format!("/api/v1/indicators?from={from}&to={to}"))
        .await;
    let row = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "availability_lis")
        .unwrap_or_else(|| panic!("no ЛИС row: {t:#}"));
    assert_eq!(
        row["name"],
        "Работоспособность информационного ресурса «ЛИС»"
    );
    assert_eq!(row["fact"].as_f64(), Some(100.0), "{row}");
    assert!(
        row["basis"]
            .as_str()
            .unwrap()
            .contains("у 1 МО канал к ресурсу работал с перебоями"),
        "{row}"
    );
    let res = t["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["category"] == "lis")
        .unwrap();
    assert!(
        mo_of(res, MO_CUT).unwrap()["channel_quality_pct"]
            .as_f64()
            .unwrap()
            < 5.0
    );

    // The workbook's channel sheet says the same.
    let url = format!(
        "http://{}/api/v1/indicators?from={from}&to={to}&format=xlsx",
        c.http
    );
    let bytes = c
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    use calamine::{Data, Reader as _, Xlsx};
    let mut wb: Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec()))
        .expect("an XLSX file");
    let sheet = wb.worksheet_range("Каналы МО").expect("the channel sheet");
    let cut_row = sheet
        .rows()
        .find(|r| {
            r.first() == Some(&Data::String("ЛИС".into()))
                && r.get(1) == Some(&Data::String(MO_CUT.into()))
        })
        .expect("МО 2's ЛИС row");
    let q = match &cut_row[9] {
        Data::Float(f) => *f,
        Data::Int(i) => *i as f64,
        other => panic!("channel quality cell {other:?}"),
    };
    assert!(q < 5.0, "channel quality {q}");
}
