//! The planned-works API: create, list, delete; hostile input refused with the field named.

use super::*;
use serde_json::{Value, json};

/// 2024-01-09 12:00 UTC.
const NOW: i64 = 1_704_801_600_000;

fn roster() -> Arc<Roster> {
    Arc::new(
        Roster::from_toml(
            "[[mo]]\noid = \"mo1\"\nname = \"ЦРБ\"\ntz = \"Asia/Vladivostok\"\n",
            "test",
        )
        .unwrap(),
    )
}

async fn serve(config: Vec<Entry>) -> (String, PlannedState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dozor.db");
    let st = PlannedState::open(db, config, roster(), Arc::new(|| NOW)).unwrap();
    let app = router(st.clone()).layer(axum::extract::DefaultBodyLimit::max(
        crate::api_error::BODY_LIMIT_KIB * 1024,
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/planned-works", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, st, dir)
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn create_list_delete_and_followers_see_it() {
    let cfg_raw = RawPlannedWork {
        title: "Обновление МИС".into(),
        days: vec!["sun".into()],
        start: Some("02:00".into()),
        end: Some("04:00".into()),
        tz: Some("Asia/Vladivostok".into()),
        ..RawPlannedWork::default()
    };
    let cfg = stored::config_entries(
        std::slice::from_ref(&cfg_raw),
        &[cfg_raw.validate(0).unwrap()],
    );
    let (url, st, _dir) = serve(cfg).await;
    let mut rx = st.subscribe();
    let (code, v) = post(
        &url,
        json!({"title": " Замена ИБП ", "mo": "mo1", "host": "srv-1",
               "from": "2024-01-09T23:00:00+10:00", "to": "2024-01-10T01:00:00+10:00"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["id"], "p-1");
    assert_eq!(v["title"], "Замена ИБП");
    assert_eq!(v["mo_name"], "ЦРБ");
    assert_eq!(v["source"], "api");
    assert_eq!(v["active"], false);
    assert_eq!(v["next_from_ms"], NOW + 3_600_000);
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().len(), 2);

    let list: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["config-1", "p-1"]);
    assert_eq!(list[0]["source"], "config");
    assert_eq!(list[0]["weekly"], true);

    let http = reqwest::Client::new();
    let r = http.delete(format!("{url}/config-1")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.delete(format!("{url}/p-1")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = http.delete(format!("{url}/p-1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(st.list().len(), 1);
}

#[tokio::test]
async fn hostile_input_is_refused_naming_the_field() {
    let (url, st, _dir) = serve(Vec::new()).await;
    let once = |f: &str, t: &str| json!({"title": "Работы", "mo": "mo1", "from": f, "to": t});
    let cases: Vec<(Value, &str)> = vec![
        (once("вчера", "2024-01-10T00:00:00Z"), "from"),
        (once("2024-01-09T13:00:00Z", "2024-01-09T12:59:00Z"), "to"),
        // Over already.
        (once("2024-01-08T00:00:00Z", "2024-01-09T11:00:00Z"), "to"),
        // Announced after the fact (more than an hour back).
        (once("2024-01-08T00:00:00Z", "2024-01-09T14:00:00Z"), "from"),
        // Every day, all day: not planned works.
        (
            json!({"title": "Работы", "days": ["mon", "tue"], "start": "00:00", "end": "00:00",
                "tz": "UTC"}),
            "end",
        ),
        (
            json!({"title": "Работы", "days": ["sat"], "start": "08:00", "end": "20:01",
                "tz": "UTC"}),
            "end",
        ),
        // A "planned work" of a year.
        (once("2024-01-09T13:00:00Z", "2025-01-09T13:00:00Z"), "to"),
        (
            json!({"title": "Работы", "mo": "1.2.3.nope", "from": "2024-01-09T13:00:00Z",
                "to": "2024-01-09T14:00:00Z"}),
            "mo",
        ),
        (
            json!({"title": "", "mo": "mo1", "from": "2024-01-09T13:00:00Z",
                "to": "2024-01-09T14:00:00Z"}),
            "title",
        ),
        (
            json!({"title": "x\u{7}", "from": "2024-01-09T13:00:00Z",
                "to": "2024-01-09T14:00:00Z"}),
            "title",
        ),
        (
            json!({"title": "x".repeat(300), "from": "2024-01-09T13:00:00Z",
                "to": "2024-01-09T14:00:00Z"}),
            "title",
        ),
        (
            json!({"title": "Работы", "days": ["mon"], "start": "25:00", "end": "04:00",
                "tz": "UTC"}),
            "start",
        ),
        (
            json!({"title": "Работы", "days": ["понедельник"], "start": "02:00", "end": "04:00",
                "tz": "UTC"}),
            "days",
        ),
        (
            json!({"title": "Работы", "days": ["mon"], "start": "02:00", "end": "04:00",
                "tz": "Mars/Olympus"}),
            "tz",
        ),
        (
            json!({"title": "Работы", "target": "mainframe", "from": "2024-01-09T13:00:00Z",
                "to": "2024-01-09T14:00:00Z"}),
            "target",
        ),
        (
            json!({"title": "Работы", "host": "srv-1", "from": "2024-01-09T13:00:00Z",
                "to": "2024-01-09T14:00:00Z"}),
            "mo",
        ),
        (
            json!({"title": "Работы", "mo": "mo1", "from": "2024-01-09T13:00:00Z",
                "to": "2024-01-09T14:00:00Z", "days": ["mon"]}),
            "from",
        ),
    ];
    for (body, field) in cases {
        let (code, v) = post(&url, body.clone()).await;
        assert_eq!(code, 400, "{body} → {v}");
        assert_eq!(v["field"], field, "{body} → {v}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    // Unknown fields and huge bodies: refused before any check.
    let (code, v) = post(&url, json!({"title": "Работы", "everything": true})).await;
    assert_eq!(code, 400, "{v}");
    let (code, _) = post(&url, json!({"title": "x".repeat(100_000)})).await;
    assert_eq!(code, 413);
    // Nothing was stored.
    assert!(st.list().is_empty());
    let r = reqwest::Client::new()
        .delete(format!("{url}/p-x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
