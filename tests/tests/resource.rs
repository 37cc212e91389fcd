//! A central resource's own availability told apart from one МО's broken channel to it (issue
//! 13, item 4), end to end: real agents probe a real HTTP server standing in for the ЛИС; one
//! МО reaches it, the other's channel to it is broken (its target address refuses, as a cut
//! uplink or a wrong route does), while both reach the МИС. And the other way round: a forger
//! on one enrolled PC cannot hold up a resource two МО see failing.

use dozor_tests::*;
use serde_json::Value;
use std::time::Duration;

const MO_OK: &str = "1.2.643.5.1.13.13.12.2.27.2001";
const MO_CUT: &str = "1.2.643.5.1.13.13.12.2.27.2002";

/// A server agent of `mo` probing the ЛИС at `lis` and the МИС at `mis` every second;
/// `extra`: e.g. enrollment.
fn agent_with(
    c: &Collector,
    dir: &std::path::Path,
    (mo, host): (&str, &str),
    (lis, mis): (&str, &str),
    extra: &[String],
) -> Agent {
    let lis = format!("lis={lis}");
    let mis = format!("mis={mis}");
    let mut args = vec![
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
    ];
    args.extend(extra.iter().map(String::as_str));
    Agent::start(&c.mqtt_url(), mo, host, &dir.join(host), &args)
}

fn agent(
    c: &Collector,
    dir: &std::path::Path,
    mo: &str,
    host: &str,
    lis: &str,
    mis: &str,
) -> Agent {
    agent_with(c, dir, (mo, host), (lis, mis), &[])
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

const MO_FORGER: &str = "1.2.643.5.1.13.13.12.2.27.2011";
const MO_B: &str = "1.2.643.5.1.13.13.12.2.27.2012";
const MO_C: &str = "1.2.643.5.1.13.13.12.2.27.2013";

/// `/api/v1/availability?by=target` over `[from, now − 5 s)` once `ready` holds for its ЛИС row.
async fn lis_row(c: &Collector, from: i64, ready: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(60), || async {
        let a = c
            .get(&format!(
                "/api/v1/availability?by=target&from={from}&to={}",
                unix_ms() - 5_000
            ))
            .await;
        target(&a, "lis").filter(|t| ready(t)).cloned()
    })
    .await
    .unwrap_or_else(|| panic!("the ЛИС row did not settle within 60 s"))
}

/// An attacker with root on one enrolled clinic PC (МО A) forges `ok` probe results for a
/// central resource — the ЛИС, which really refuses everybody (503) — while real agents of two
/// other МО see it failing and reach the МИС. Forging "up" must take PCs in as many МО as see it
/// failing (docs/indicators.md, "Resource and channel"): the resource's own figure turns from
/// down to unknown (disputed), never up, no МО's channel is blamed, the forger cannot speak for
/// another host or МО (each refusal counted by reason), and nothing the real agents sent is
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forger_in_one_mo_cannot_hold_a_failing_resource_up() {
    use dozor_proto::{Category, Role};
    use dozor_tests::enrolled::{SimAgent, connect, enroll_args, token};

    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("collector");
    let c = Collector::start(
        &Broker::Embedded(free_port()),
        &cdir,
        &["--security-mode", "enrolled"],
    );
    let lis = FakeMis::start().await;
    lis.set(MIS_500);
    let mis = FakeMis::start().await;
    let real = |mo: &str, host: &str| {
        let enroll = enroll_args(&c, &token(&cdir, mo, &[]));
        agent_with(
            &c,
            dir.path(),
            (mo, host),
            (&lis.url(), &mis.url()),
            &enroll,
        )
    };
    let mut b = real(MO_B, "srv-b");
    let mut cc = real(MO_C, "srv-c");
    for h in ["srv-b", "srv-c"] {
        wait_for(Duration::from_secs(60), || async {
            let h = c.host(h).await?;
            (h["probes"]["lis"]["ok"] == false && h["probes"]["mis"]["ok"] == true).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{h} observes the ЛИС failing and reaches the МИС"));
    }
    // Let both agents' probe periods be learnt (see the test above).
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Control: two МО with working channels see the ЛИС failing — it is down.
    let before = unix_ms();
    let t = lis_row(&c, before, |t| {
        t["resource_down_ms"].as_i64().unwrap_or(0) >= 5_000
    })
    .await;
    assert_eq!(t["resource_up_ms"], 0, "{t:#}");
    assert_eq!(t["resource_availability_pct"].as_f64(), Some(0.0), "{t:#}");

    // The forger: its own identity, its own topics, every second a heartbeat and a probe
    // round that reaches everything.
    let mut a = SimAgent::enroll(&c, &token(&cdir, MO_FORGER, &[]), "pc-forger").await;
    let mut att = connect(a.options(c.mqtt_port)).await;
    assert!(att.connected().await);
    att.publish(a.birth(Role::Workstation), true).await;
    let forged_ok = [("lis", Category::Lis, true), ("mis", Category::Mis, true)];
    let forger = a.host.clone();
    let forging = async {
        loop {
            att.publish(a.hb(), false).await;
            att.publish(a.probe(&forged_ok), false).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let observed = async {
        wait_for(Duration::from_secs(30), || async {
            let h = c.host(&forger).await?;
            (h["probes"]["lis"]["ok"] == true).then_some(())
        })
        .await
        .expect("the forged results are accepted as the forger's own");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let from = unix_ms();
        lis_row(&c, from, |t| {
            t["resource_unknown_ms"].as_i64().unwrap_or(0) >= 8_000
        })
        .await
    };
    let t = tokio::select! {
        t = observed => t,
        () = forging => unreachable!("the forging loop never ends"),
    };
    println!("ЛИС while forged: {t:#}");
    // Its session ends here: the attempts below log in with the same client id.
    att.client.disconnect().await.expect("disconnect");
    drop(att);
    // Not up: one МО against two is disputed, so the resource's own figure is unknown.
    assert_eq!(t["resource_up_ms"], 0, "{t:#}");
    assert!(
        t["resource_availability_pct"].as_f64().unwrap_or(0.0) < 1.0,
        "the forger raised the resource's figure: {t:#}"
    );
    // Nobody's channel is blamed for a resource that is not up (least of all the real МО's).
    for mo in [MO_B, MO_C, MO_FORGER] {
        let m = mo_of(&t, mo).unwrap_or_else(|| panic!("{mo} in {t:#}"));
        assert_eq!(m["channel_fail_ms"], 0, "{m}");
    }
    // The forger's МО reaching the ЛИС is what its own row says, and nothing more.
    assert!(
        mo_of(&t, MO_FORGER).unwrap()["reach_ms"]
            .as_i64()
            .unwrap_or(0)
            > 0
    );

    // The forger cannot speak for another host: the gateway cuts a probe round signed with
    // its key on another МО's host topic, and on a made-up host of its own МО.
    let cuts = c
        .metric("dozor_mqtt_gate_closed_total{reason=\"acl_publish\"}")
        .await;
    for (mo, host) in [(MO_B, "srv-b"), (MO_FORGER, "made-up-1")] {
        let mut k = connect(a.options(c.mqtt_port)).await;
        assert!(k.connected().await);
        k.publish(a.probe_for(mo, host, &forged_ok), false).await;
        assert!(k.dropped(Duration::from_secs(5)).await, "{mo}/{host}");
    }
    // On its own topic, an envelope naming another host is refused by the collector.
    // The MAC is right for the forger's own topic; the identity inside is another МО's host.
    let mismatched = {
        let json = a.probe_json(MO_B, "srv-b", &forged_ok);
        let t = dozor_proto::topic(&a.mo, &a.host, dozor_proto::Kind::Probe);
        (t.clone(), dozor_proto::auth::sign(&a.key(), &t, &json))
    };
    let mut k = connect(a.options(c.mqtt_port)).await;
    assert!(k.connected().await);
    k.publish(mismatched, false).await;
    wait_for(Duration::from_secs(15), || async {
        let v = c
            .metric("dozor_mqtt_gate_closed_total{reason=\"acl_publish\"}")
            .await;
        (v >= cuts + 2.0).then_some(())
    })
    .await
    .expect("two gateway cuts counted as acl_publish");
    wait_for(Duration::from_secs(15), || async {
        let v = c
            .metric("dozor_messages_rejected_total{reason=\"identity_mismatch\"}")
            .await;
        (v >= 1.0).then_some(())
    })
    .await
    .expect("the mismatched envelope counted as identity_mismatch");
    assert!(c.host("made-up-1").await.is_none());
    let hb = c.host("srv-b").await.unwrap();
    assert_eq!(hb["probes"]["lis"]["ok"], false, "{hb}");
    assert_eq!(hb["state"], "online", "{hb}");

    // Nothing the real agents sent is lost: stopped gracefully, every message they numbered
    // is stored, once, with no hole.
    for agent in [&mut b, &mut cc] {
        assert_eq!(agent.proc.terminate(), Some(0), "{} exits", agent.host_id);
        let (inst, produced, _, dropped) = spool_of(&agent.data_dir);
        assert_eq!(dropped, 0);
        let d = delivery_of(&c, &inst, produced).await;
        assert_eq!(
            d["contiguous"].as_u64(),
            Some(produced),
            "{}: {d}",
            agent.host_id
        );
        assert_eq!(
            d["stored"].as_u64(),
            Some(produced),
            "{}: {d}",
            agent.host_id
        );
        assert_eq!(d["refused"], 0, "{}: {d}", agent.host_id);
    }
}
