//! The web UI in a real headless Chromium (chromedriver, WebDriver) against the real collector
//! running its `--demo` region over the real MQTT path: log in, the region overview, search,
//! the host page's charts drawn with data, a demo incident arriving live, acknowledging it,
//! silencing an МО, downloading the indicator XLSX, announcing and deleting planned works.
//! Each test asserts what a person sees.
//!
//! `DOZOR_UI_SHOTS=docs/ui cargo test -p dozor-tests --test ui` also saves the screenshots of
//! docs/ui.md (1400 and 400 px wide).

use dozor_tests::browser::Browser;
use dozor_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const USER: &str = "operator";
const PW: &str = "пароль оператора 2026";
/// The demo МО whose channel to the МИС is down (the fourth of the demo roster).
const BROKEN_MO: usize = 3;
/// `for_secs` of the МО-channel rule in these tests.
const FOR_SECS: u64 = 15;

/// A demo collector with an operator (password from stdin) and the МО-channel rule held
/// `FOR_SECS` before firing.
fn start(dir: &Path, demo: bool) -> Collector {
    let data = dir.join("collector");
    collector_cli_stdin(
        &data,
        &["user", "add", USER, "--role", "operator"],
        &format!("{PW}\n"),
    );
    let cfg = dir.join("collector.toml");
    std::fs::write(
        &cfg,
        format!("[alerts.mo_channel]\nfor_secs = {FOR_SECS}\n"),
    )
    .unwrap();
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    if demo {
        args.push("--demo");
    }
    Collector::start(&Broker::Embedded(0), &data, &args)
}

fn site(c: &Collector) -> String {
    format!("http://{}", c.http)
}

/// Where screenshots go, if asked for.
fn shots() -> Option<PathBuf> {
    std::env::var_os("DOZOR_UI_SHOTS").map(|d| {
        let p = PathBuf::from(d);
        if p.is_absolute() {
            p
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
        }
    })
}

/// Screenshots of the current page at 1400 and 400 px, when asked for.
async fn shoot(b: &Browser, name: &str) {
    let Some(dir) = shots() else { return };
    for w in [1400u32, 400] {
        b.client.set_window_size(w, 1000).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.screenshot(&dir, &format!("{name}-{w}.png")).await;
    }
    b.client.set_window_size(1400, 900).await.unwrap();
}

/// The roster's МО as the API lists them: (oid, name).
async fn roster_mos(c: &Collector) -> Vec<(String, String)> {
    let mos = c.get("/api/v1/mos").await;
    mos.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["in_roster"] == true)
        .map(|m| {
            (
                m["oid"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_search_and_host_page_with_charts() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), true);
    let site = site(&c);
    let mos = roster_mos(&c).await;
    let b = Browser::start(1400, None).await;
    b.login(&site, USER, PW, "/").await;
    assert!(
        b.text(".who").await.contains(USER),
        "the header names who is logged in"
    );

    // Every МО of the roster by name (never by OID), with its plan.
    let rows = b.texts("#mo-table tbody tr").await;
    assert_eq!(rows.len(), mos.len(), "{rows:?}");
    for (_, name) in &mos {
        assert!(
            rows.iter().any(|r| r.contains(name.as_str())),
            "{name} in {rows:?}"
        );
    }
    assert!(
        b.text("#updated").await.len() == 8,
        "«обновлено в HH:MM:SS»"
    );
    // Reachability shares appear once probes arrive; the broken МО is not green.
    let broken = &mos[BROKEN_MO].1;
    let cell = wait_for(Duration::from_secs(30), || async {
        b.go(&format!("{site}/")).await;
        let class = b
            .run(&format!(
                "const r = Array.from(document.querySelectorAll('#mo-table tbody tr'))
                   .find(r => r.textContent.includes({broken:?}));
                 const th = Array.from(document.querySelectorAll('#mo-table thead th'))
                   .findIndex(h => h.textContent === 'МИС');
                 done(r && th >= 0 ? r.cells[th].className + ' ' + r.cells[th].textContent : '')"
            ))
            .await;
        let s = class.as_str().unwrap_or_default().to_string();
        s.contains(" из ").then_some(s)
    })
    .await
    .expect("the МИС column fills in");
    assert!(cell.starts_with("s-none"), "{cell}");
    shoot(&b, "overview").await;

    // Find a host by search and open its page.
    b.type_into("#q", "arm-1-1-001").await;
    b.click("form.search button").await;
    b.wait_text("#found-h", "Найдено хостов: 1", 10)
        .await
        .expect("one host found");
    // Until its birth message is in, a host is known by its id only: the search finds it
    // either way; the hostname shows once the inventory arrived.
    let found = wait_for(Duration::from_secs(20), || async {
        let t = b.text("table.found tbody tr").await;
        if t.contains("ARM-1-1-001") {
            return Some(t);
        }
        b.client.refresh().await.unwrap();
        None
    })
    .await
    .expect("the host with its hostname");
    assert!(
        found.contains(&mos[0].1) && found.contains("АРМ"),
        "{found}"
    );
    b.click("table.found tbody a").await;
    assert_eq!(
        b.url().await,
        format!("{site}/host/{}/arm-1-1-001", mos[0].0)
    );
    let h1 = b.text("h1").await;
    assert!(h1.contains("ARM-1-1-001") && h1.contains("в сети"), "{h1}");
    let facts = b.text("dl.facts").await;
    assert!(facts.contains("Главный корпус"), "site: {facts}");
    assert!(facts.contains("Время работы"), "{facts}");
    let probes = b.text("table.probes").await;
    assert!(probes.contains("МИС") && probes.contains(" мс"), "{probes}");

    // The charts are drawn with data once the store has the first heartbeats and probes.
    let drawn = wait_for(Duration::from_secs(30), || async {
        b.client.refresh().await.unwrap();
        let n = (
            b.count("#chart-availability rect.tl-up").await,
            b.count("#chart-cpu path").await,
            b.count("#chart-mem path").await,
            b.count("#chart-disk path").await,
            b.count("#chart-latency path").await,
        );
        (n.0 >= 1 && n.1 >= 2 && n.2 >= 2 && n.3 >= 1 && n.4 >= 3).then_some(n)
    })
    .await;
    assert!(
        drawn.is_some(),
        "charts with data: {}",
        b.text(".charts").await
    );
    // Each drawn line has points, not just an empty path.
    let d = b
        .run("done(document.querySelector('#chart-cpu path').getAttribute('d'))")
        .await;
    assert!(d.as_str().unwrap_or_default().starts_with('M'), "{d}");
    // The last hour shows a young demo's few points best.
    b.click(".ranges a[href$='range=hour']").await;
    assert_eq!(b.text("#hist-h").await, "История: час");
    assert!(b.count("#chart-cpu path").await >= 2);
    shoot(&b, "host").await;

    // The МО page lists the host under its site.
    b.click(".crumbs a[href^='/mo/']").await;
    let sites = b.text("#sites-h + h3").await;
    assert!(sites.contains("Главный корпус"), "{sites}");
    assert!(b.count("table.hosts a[href$='/arm-1-1-001']").await == 1);
    shoot(&b, "mo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_incident_appears_live_on_the_overview() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), true);
    let site = site(&c);
    let mos = roster_mos(&c).await;
    let b = Browser::start(1400, None).await;
    b.login(&site, USER, PW, "/").await;
    // The page is not reloaded from here on: the incident must arrive over the live stream.
    let firing_row = wait_for(Duration::from_secs(FOR_SECS + 60), || async {
        b.texts("section.incidents-now tbody tr")
            .await
            .into_iter()
            .find(|r| r.contains("потеряла связь с МИС") && r.contains("идёт"))
    })
    .await;
    let seen =
        firing_row.unwrap_or_else(|| panic!("no firing МО-channel incident on the overview"));
    let seen_ms = unix_ms();
    let incidents = c.get("/api/v1/incidents?rule=mo_channel").await;
    let inc = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["state"] == "firing")
        .cloned()
        .unwrap_or_else(|| panic!("{incidents}"));
    let started = inc["episode_started_ms"].as_i64().unwrap();
    let fired = inc["fired_ms"].as_i64().unwrap();
    assert!(
        seen_ms - started <= ((FOR_SECS + 10) * 1000) as i64,
        "shown {} ms after the condition began (for {FOR_SECS} s + 10 s allowed); it fired \
         {} ms after it began",
        seen_ms - started,
        fired - started
    );
    // Russian typography: no nested «…«…»».
    assert!(!seen.contains("««") && !seen.contains("»»"), "{seen}");
    shoot(&b, "overview-incident").await;

    // Its page: cause, scope, the МО linked.
    let id = inc["id"].as_u64().unwrap();
    b.click(&format!("section.incidents-now a[href='/incidents/{id}']"))
        .await;
    let facts = b.text("dl.facts").await;
    assert!(facts.contains("МО: канал к сервису"), "{facts}");
    assert!(facts.contains("МИС"), "{facts}");
    assert!(
        b.count(&format!("a[href='/mo/{}']", mos[BROKEN_MO].0))
            .await
            >= 1,
        "the МО is linked"
    );
    assert!(b.text("ol.timeline").await.contains("подтверждено"));
    shoot(&b, "incident").await;
}

/// Needs the acknowledge route (`POST /api/v1/incidents/{id}/ack`, issue 11's alerts part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_acknowledges_an_incident_from_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), true);
    let site = site(&c);
    let b = Browser::start(1400, None).await;
    b.login(&site, USER, PW, "/").await;
    let id = wait_for(Duration::from_secs(FOR_SECS + 60), || async {
        c.get("/api/v1/incidents?rule=mo_channel&state=firing")
            .await[0]["id"]
            .as_u64()
    })
    .await
    .expect("the demo's МО-channel incident fires");
    b.go(&format!("{site}/incidents/{id}")).await;
    b.type_into("#ack-comment", "выехал связист").await;
    b.click("#ack-form button").await;
    let acked = b
        .wait_text("#ack-state", USER, 10)
        .await
        .unwrap_or_else(|t| {
            panic!(
                "acknowledged on the page: {t:?}; the form says {:?}",
                ack_form_text(&b)
            )
        });
    assert!(acked.contains("выехал связист"), "{acked}");
    assert!(b.text("ol.timeline").await.contains("принято в работу"));
    let inc = c.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["ack"]["by"], USER, "{inc}");
}

/// What the acknowledge form reported (for a failure message).
fn ack_form_text(b: &Browser) -> String {
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| rt.block_on(b.text("#ack-form .result")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_silences_an_mo_from_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), true);
    let site = site(&c);
    let mos = roster_mos(&c).await;
    let (oid, name) = &mos[BROKEN_MO];
    let b = Browser::start(1400, None).await;
    b.go(&format!("{site}/login")).await;
    b.login(&site, USER, PW, "/").await;
    b.go(&format!("{site}/mo/{oid}")).await;
    assert_eq!(b.text("h1").await, *name);
    b.run("document.querySelector('form.api[data-kind=silence] select').value = '14400'; done(1)")
        .await;
    b.type_into(
        "form.api[data-kind=silence] input[name=comment]",
        "замена коммутатора",
    )
    .await;
    b.click("form.api[data-kind=silence] button").await;
    b.wait_text("form.api[data-kind=silence] .result", "Тишина включена", 10)
        .await
        .unwrap_or_else(|t| panic!("the form reports the silence: {t}"));
    let silences = c.get("/api/v1/silences").await;
    let s = silences
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["mo"] == oid.as_str() || s["matcher"]["mo"] == oid.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{silences}"));
    assert_eq!(s["created_by"], USER, "{s}");
    assert_eq!(s["comment"], "замена коммутатора");
    assert_eq!(s["active"], true);
    let len = s["ends_ms"].as_i64().unwrap() - s["starts_ms"].as_i64().unwrap();
    assert!((len - 14_400_000).abs() < 5_000, "four hours: {len}");
}

/// The Roman quarter label the reports use for `now`: «IV квартал 2026 г.».
fn quarter_label(now_ms: i64) -> String {
    let days = now_ms / 86_400_000;
    // Civil date from days since 1970 (Howard Hinnant's algorithm), in UTC: the test runs far
    // from a quarter's edge in Moscow time except for three hours a quarter.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let q = ["I", "II", "III", "IV"][((m - 1) / 3) as usize];
    format!("{q} квартал {y} г.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indicator_table_downloads_as_xlsx() {
    let dir = tempfile::tempdir().unwrap();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let c = start(dir.path(), true);
    let site = site(&c);
    let mos = roster_mos(&c).await;
    let b = Browser::start(1400, Some(&downloads)).await;
    b.login(&site, USER, PW, "/").await;
    // The store exists once the first batch is written.
    wait_for(Duration::from_secs(20), || async {
        c.client
            .get(format!("{site}/api/v1/indicators?period=2026-Q1"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await
    .expect("the store exists");
    b.go(&format!("{site}/indicators")).await;
    let label = quarter_label(unix_ms());
    assert_eq!(b.text("h1").await, format!("Показатели за {label}"));
    let rows = b.texts("table.indicators tbody tr").await;
    assert!(rows.len() >= 3, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.contains("автоматизированных рабочих мест")),
        "{rows:?}"
    );
    // Facts per МО, each linked to its page (the МО's channels to each resource link there
    // too).
    for (oid, _) in &mos {
        let facts = format!("table.sortable:not(#channels) a[href='/mo/{oid}']");
        assert_eq!(b.count(&facts).await, 1, "{oid}");
    }
    shoot(&b, "indicators").await;
    b.click("#xlsx").await;
    let file = wait_for(Duration::from_secs(20), || async {
        std::fs::read_dir(&downloads)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "xlsx"))
    })
    .await
    .expect("an .xlsx in the download directory");
    use calamine::{Reader, Xlsx, open_workbook};
    // The file may still be flushing right after it appears.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut wb: Xlsx<_> = open_workbook(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
    let sheet = wb.worksheet_range("Показатели").expect("sheet Показатели");
    let cells: Vec<String> = sheet.cells().map(|(_, _, v)| v.to_string()).collect();
    assert!(cells.iter().any(|v| v.contains(&label)), "{cells:?}");
    assert!(cells.iter().any(|v| v == "Показатель"), "{cells:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_sends_to_the_login_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), false);
    let site = site(&c);
    let b = Browser::start(400, None).await;
    b.go(&format!("{site}/incidents")).await;
    assert_eq!(b.url().await, format!("{site}/login?next=%2Fincidents"));
    b.login(&site, USER, PW, "/incidents").await;
    assert_eq!(b.text("h1").await, "Инциденты");
    assert_eq!(b.text("#open-h").await, "Открытые: 0");
    // At phone width the page fits: nothing wider than the window.
    let w: Value = b
        .run("done(document.documentElement.scrollWidth <= window.innerWidth)")
        .await;
    assert_eq!(w, true);
}

/// The «Плановые работы» page: an admin announces a work through the form and sees it listed
/// with Russian wording and the МО's name (not its OID); a POST without the session's CSRF
/// token, sent from the same page with the same cookie, is refused; the admin deletes the work
/// with its button; a viewer sees the works but neither the form nor a delete button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_announces_and_deletes_a_planned_work_a_viewer_only_reads() {
    const MO: &str = "1.2.643.5.1.13.13.12.2.27.9201";
    const MO_NAME: &str = "Городская поликлиника № 3";
    const ADMIN_PW: &str = "пароль администратора 2026";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    collector_cli_stdin(
        &data,
        &["user", "add", "admin", "--role", "admin"],
        &format!("{ADMIN_PW}\n"),
    );
    collector_cli_stdin(
        &data,
        &["user", "add", "ivanova", "--role", "viewer"],
        &format!("{PW}\n"),
    );
    let roster = dir.path().join("roster.toml");
    std::fs::write(
        &roster,
        format!("[[mo]]\noid = \"{MO}\"\nname = \"{MO_NAME}\"\n"),
    )
    .unwrap();
    let c = Collector::start(
        &Broker::Embedded(0),
        &data,
        &["--roster", roster.to_str().unwrap()],
    );
    let site = site(&c);
    let b = Browser::start(1400, None).await;
    b.go(&format!("{site}/planned")).await;
    b.login(&site, "admin", ADMIN_PW, "/planned").await;
    assert_eq!(b.text("h1").await, "Плановые работы");
    assert!(b.text("#cur-h + p").await.contains("Плановых работ нет"));

    // The form: a title, the МО from its list (by name), one-off from +1 h to +3 h in the
    // browser's local time (datetime-local fields are set as a person's picker would).
    b.type_into("form.planned-form input[name=title]", "Замена коммутатора")
        .await;
    let picked: Value = b
        .run(&format!(
            "const f = document.querySelector('form.planned-form');\
             const mo = f.querySelector('select[name=mo]');\
             mo.value = '{MO}';\
             const local = (ms) => {{ const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);\
               return d.toISOString().slice(0, 16); }};\
             f.querySelector('input[name=from]').value = local(Date.now() + 3600e3);\
             f.querySelector('input[name=to]').value = local(Date.now() + 3 * 3600e3);\
             done(mo.options[mo.selectedIndex].text)"
        ))
        .await;
    assert_eq!(picked, MO_NAME, "the МО list shows names");
    b.click("form.planned-form button").await;
    b.wait_text("form.planned-form .result", "Плановые работы объявлены", 10)
        .await
        .unwrap_or_else(|t| panic!("the form reports the work: {t:?}"));
    // The page reloads with the work listed.
    let row = b
        .wait_text("table.planned tbody tr", "Замена коммутатора", 10)
        .await
        .unwrap_or_else(|t| panic!("the work is listed: {t:?}"));
    assert!(row.contains(&format!("МО «{MO_NAME}»")), "{row}");
    assert!(row.contains("разово:"), "{row}");
    assert!(row.contains("admin"), "who announced it: {row}");
    assert!(!row.contains(MO), "an OID on the page: {row}");
    let works = c.get("/api/v1/planned-works").await;
    let works = works.as_array().unwrap();
    assert_eq!(works.len(), 1, "{works:?}");
    assert_eq!(works[0]["mo"], MO);
    assert_eq!(works[0]["created_by"], "admin");
    let id = works[0]["id"].as_str().unwrap().to_string();
    b.run("window.scrollTo(0, 0); done(1)").await;
    shoot(&b, "planned").await;

    // The same page, the same session cookie, no CSRF header: refused.
    let status: Value = b
        .run(
            "fetch('/api/v1/planned-works', {method: 'POST', headers: {'Content-Type': 'application/json'},\
               body: JSON.stringify({title: 'Подделка', from: new Date(Date.now() + 3600e3).toISOString(),\
               to: new Date(Date.now() + 7200e3).toISOString()})}).then(r => done(r.status))",
        )
        .await;
    assert_eq!(status, 403, "a POST without the CSRF token");
    assert_eq!(
        c.get("/api/v1/planned-works")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Deleting: the confirmation dialog is answered "yes".
    b.run("window.confirm = () => true; done(1)").await;
    b.click("form[data-kind=planned-delete] button").await;
    b.wait_text("#cur-h + p", "Плановых работ нет", 10)
        .await
        .unwrap_or_else(|t| panic!("the list is empty after deleting: {t:?}"));
    let gone = c
        .client
        .get(format!("{site}/api/v1/planned-works/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    // A weekly work for the whole region, days typed in Russian.
    b.type_into("form.planned-form input[name=title]", "Обновление МИС")
        .await;
    b.type_into("form.planned-form input[name=days]", "вс")
        .await;
    b.type_into("form.planned-form input[name=start]", "02:00")
        .await;
    b.type_into("form.planned-form input[name=end]", "04:00")
        .await;
    b.click("form.planned-form button").await;
    b.wait_text("form.planned-form .result", "Плановые работы объявлены", 10)
        .await
        .unwrap_or_else(|t| panic!("the form reports the weekly work: {t:?}"));
    let works = c.get("/api/v1/planned-works").await;
    // Listed with the API's day names, however typed.
    assert_eq!(works[0]["days"], serde_json::json!(["sun"]), "{works}");

    // A viewer reads the works but gets no form and no button.
    b.client.delete_all_cookies().await.unwrap();
    b.go(&format!("{site}/planned")).await;
    b.login(&site, "ivanova", PW, "/planned").await;
    let row = b
        .wait_text("table.planned tbody tr", "Обновление МИС", 10)
        .await
        .unwrap_or_else(|t| panic!("the viewer sees the work: {t:?}"));
    assert!(row.contains("еженедельно: вс 02:00–04:00"), "{row}");
    assert!(row.contains("весь регион"), "{row}");
    assert_eq!(b.count("form.planned-form").await, 0, "a form for a viewer");
    assert_eq!(b.count("form[data-kind=planned-delete]").await, 0);
    assert_eq!(b.count("#add-h").await, 0);
}
