//! The Grafana dashboards of `dashboards/`: their structural rules (fixed uids, no dashboard id,
//! data sources by uid, Russian titles, known variables, links to existing dashboards), and every
//! panel's query executed against a real VictoriaMetrics that takes a real collector's InfluxDB
//! v2 writes and scrapes its `/metrics`, while real agents report into the collector. Grafana
//! itself is not installed here: its variables are substituted the way Grafana does.

use dozor_tests::victoria::Victoria;
use dozor_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MO_A: &str = "1.2.643.5.1.13.13.12.2.27.3101";
const MO_B: &str = "1.2.643.5.1.13.13.12.2.27.3102";
/// Not in the roster: its series have no name, the dashboards name it by its OID.
const MO_C: &str = "1.2.643.5.1.13.13.12.2.27.3199";
const NAME_A: &str = "ГБУЗ «Тестовая больница № 1»";
/// The data source uid the dashboards default to and the provisioning defines.
const DS_UID: &str = "dozor-vm";
/// The dashboards every deployment gets.
const UIDS: [&str; 3] = ["dozor-region", "dozor-host", "dozor-collector"];
/// Grafana's built-in variables a query may use.
const BUILTINS: [&str; 9] = [
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
];

const ROSTER: &str = r#"
[[mo]]
oid = "1.2.643.5.1.13.13.12.2.27.3101"
name = "ГБУЗ «Тестовая больница № 1»"
[[mo.site]]
name = "Главный корпус"
planned_arm = 20
[[mo.site]]
name = "Поликлиника"
planned_arm = 10

[[mo]]
oid = "1.2.643.5.1.13.13.12.2.27.3102"
name = "ФАП «Тестовый»"
planned_arm = 2

# No agent reports from it: «МО без связи».
[[mo]]
oid = "1.2.643.5.1.13.13.12.2.27.3103"
name = "ФАП «Молчащий»"
planned_arm = 3
"#;

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// Every `dashboards/*.json`, parsed, in file name order.
fn dashboards() -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{file}: {e}"));
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            Dashboard { file, json }
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(ps: &'a Value, out: &mut Vec<&'a Value>) {
        for p in ps.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

fn variables(d: &Value) -> &[Value] {
    d["templating"]["list"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

fn has_cyrillic(s: &str) -> bool {
    s.chars().any(|c| ('\u{400}'..='\u{4ff}').contains(&c))
}

/// The variables `text` refers to: `$name`, `${name}`, `${name:format}`, `[[name]]`.
/// `$1` (a regex group in `label_replace`) is not a variable.
fn refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    substitute_with(text, &mut |name| {
        if !name.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(name.to_string());
        }
        None
    });
    out
}

/// `text` with each variable replaced by `values[name]` (unknown ones left as they are).
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    substitute_with(text, &mut |name| values.get(name).cloned())
}

fn substitute_with(text: &str, f: &mut dyn FnMut(&str) -> Option<String>) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (name, len) = if let Some(t) = tail.strip_prefix("${") {
            match t.find('}') {
                Some(end) => (t[..end].split(':').next().unwrap_or(""), end + 3),
                None => ("", 0),
            }
        } else if let Some(t) = tail.strip_prefix("[[") {
            match t.find("]]") {
                Some(end) if t[..end].chars().all(ident) => (&t[..end], end + 4),
                _ => ("", 0),
            }
        } else if let Some(t) = tail.strip_prefix('$') {
            let end = t.find(|c| !ident(c)).unwrap_or(t.len());
            (&t[..end], end + 1)
        } else {
            ("", 0)
        };
        if name.is_empty() {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        }
        match f(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&tail[..len]),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// `label_values(SELECTOR, LABEL)` or `label_values(LABEL)` → (selector, label).
fn label_values(query: &str) -> Option<(Option<&str>, &str)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((sel, label)) => Some((Some(sel.trim()), label.trim())),
        None => Some((None, inner.trim())),
    }
}

fn datasource_is_ds(v: &Value) -> bool {
    v["type"] == "prometheus" && v["uid"] == "${ds}"
}

/// Every `/d/UID` link target in the dashboard's strings.
fn link_uids(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("/d/") {
                let t = &rest[i + 3..];
                let end = t.find(['/', '?', '"']).unwrap_or(t.len());
                out.insert(t[..end].to_string());
                rest = &t[end..];
            }
        }
        Value::Array(a) => a.iter().for_each(|x| link_uids(x, out)),
        Value::Object(o) => o.values().for_each(|x| link_uids(x, out)),
        _ => {}
    }
}

/// The rules every dashboard must keep; returns the breaches, each naming file and place.
fn rule_breaches(all: &[Dashboard]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut uids = HashSet::new();
    for d in all {
        let (f, j) = (&d.file, &d.json);
        let uid = j["uid"].as_str().unwrap_or("");
        if uid.is_empty()
            || uid.len() > 40
            || !uid
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bad.push(format!("{f}: uid {uid:?} is not a fixed short uid"));
        }
        if !uids.insert(uid.to_string()) {
            bad.push(format!("{f}: uid {uid} used twice"));
        }
        if j.get("id").is_some() {
            bad.push(format!("{f}: has a dashboard id (import would clash)"));
        }
        if !j["title"].as_str().is_some_and(has_cyrillic) {
            bad.push(format!("{f}: title not Russian"));
        }
        if !j["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "dozor"))
        {
            bad.push(format!(
                "{f}: no tag dozor (the dashboards' links list by it)"
            ));
        }
        let mut names: BTreeSet<String> = BUILTINS.iter().map(|b| b.to_string()).collect();
        let ds: Vec<&Value> = variables(j)
            .iter()
            .filter(|v| v["type"] == "datasource")
            .collect();
        if ds.len() != 1
            || ds[0]["name"] != "ds"
            || ds[0]["query"] != "prometheus"
            || ds[0]["current"]["value"] != DS_UID
        {
            bad.push(format!(
                "{f}: needs one data source variable `ds` of type prometheus defaulting to {DS_UID}"
            ));
        }
        for v in variables(j) {
            let name = v["name"].as_str().unwrap_or("");
            if v["type"] == "query" {
                let q = v["query"]["query"].as_str().unwrap_or("");
                if !datasource_is_ds(&v["datasource"]) {
                    bad.push(format!(
                        "{f}: variable {name}: data source not by uid ${{ds}}"
                    ));
                }
                if label_values(q).is_none() {
                    bad.push(format!("{f}: variable {name}: not label_values(...): {q}"));
                }
                for r in refs(q) {
                    if !names.contains(&r) {
                        bad.push(format!(
                            "{f}: variable {name} uses ${r} before it is defined"
                        ));
                    }
                }
                if v["refresh"].as_u64().unwrap_or(0) == 0 {
                    bad.push(format!("{f}: variable {name} never refreshed"));
                }
                if !v["label"].as_str().is_some_and(has_cyrillic) {
                    bad.push(format!("{f}: variable {name}: label not Russian"));
                }
            }
            names.insert(name.to_string());
        }
        let mut ids = HashSet::new();
        for p in panels(j) {
            let title = p["title"].as_str().unwrap_or("");
            let at = format!("{f}: panel {title:?}");
            if !p["id"].as_u64().is_some_and(|id| ids.insert(id)) {
                bad.push(format!("{at}: panel id missing or repeated"));
            }
            let g = &p["gridPos"];
            let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
            if !matches!((x, w, h), (Some(x), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24) {
                bad.push(format!("{at}: gridPos outside the 24 columns"));
            }
            if !has_cyrillic(title) {
                bad.push(format!("{at}: title not Russian"));
            }
            for r in refs(title) {
                if !names.contains(&r) {
                    bad.push(format!("{at}: title uses unknown ${r}"));
                }
            }
            if p["type"] == "row" {
                continue;
            }
            if !p["description"].as_str().is_some_and(has_cyrillic) {
                bad.push(format!("{at}: no Russian description"));
            }
            if !datasource_is_ds(&p["datasource"]) {
                bad.push(format!("{at}: data source not by uid ${{ds}}"));
            }
            let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
            if targets.is_empty() {
                bad.push(format!("{at}: no queries"));
            }
            let mut refids = HashSet::new();
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or("");
                if expr.trim().is_empty() {
                    bad.push(format!("{at}: empty query"));
                }
                if !datasource_is_ds(&t["datasource"]) {
                    bad.push(format!("{at}: query's data source not by uid ${{ds}}"));
                }
                if !t["refId"]
                    .as_str()
                    .is_some_and(|r| refids.insert(r.to_string()))
                {
                    bad.push(format!("{at}: refId missing or repeated"));
                }
                for r in refs(expr) {
                    if !names.contains(&r) {
                        bad.push(format!("{at}: query uses unknown ${r}"));
                    }
                }
            }
        }
    }
    for u in UIDS {
        if !uids.contains(u) {
            bad.push(format!("no dashboard with uid {u}"));
        }
    }
    for d in all {
        let mut linked = BTreeSet::new();
        link_uids(&d.json, &mut linked);
        for u in linked.difference(&uids.iter().cloned().collect()) {
            bad.push(format!(
                "{}: links to /d/{u}, which no dashboard has",
                d.file
            ));
        }
    }
    bad
}

/// Concatenated `dashboards/provisioning/{sub}/*.yaml`.
fn provisioning(sub: &str) -> String {
    let dir = dashboards_dir().join("provisioning").join(sub);
    let mut text = String::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    text
}

#[test]
fn dashboards_follow_the_rules() {
    let all = dashboards();
    assert!(all.len() >= UIDS.len(), "dashboards missing");
    let bad = rule_breaches(&all);
    assert!(bad.is_empty(), "rules broken:\n{}", bad.join("\n"));
    // The provisioned data source is the one the dashboards default to.
    let ds = provisioning("datasources");
    let lines: Vec<&str> = ds.lines().map(str::trim).collect();
    assert!(lines.contains(&"apiVersion: 1"), "{ds}");
    assert!(lines.contains(&format!("uid: {DS_UID}").as_str()), "{ds}");
    assert!(lines.contains(&"type: prometheus"), "{ds}");
    let dash = provisioning("dashboards");
    assert!(dash.lines().any(|l| l.trim() == "type: file"), "{dash}");
    assert!(
        dash.lines().any(|l| l.trim().starts_with("path: ")),
        "{dash}"
    );
}

#[test]
fn the_rules_catch_breaches() {
    let mut all = dashboards();
    let d = &mut all[0].json;
    d["id"] = 7.into();
    d["panels"][1]["datasource"] =
        serde_json::json!({"type": "prometheus", "uid": "P1809F7CD0C75ACF3"});
    d["panels"][1]["targets"][0]["expr"] = "up{x=\"$nope\"}".into();
    d["panels"][1]["title"] = "CPU".into();
    let other = all[1].json["uid"].clone();
    all[0].json["uid"] = other;
    let bad = rule_breaches(&all).join("\n");
    for want in [
        "has a dashboard id",
        "data source not by uid",
        "unknown $nope",
        "title not Russian",
        "used twice",
    ] {
        assert!(bad.contains(want), "{want} not caught in:\n{bad}");
    }
    assert_eq!(
        substitute(
            "a{h=\"$host\",n=\"$hostname\"}[$__rate_interval] ${mo:regex} [[mo]] $5",
            &BTreeMap::from([
                ("host".into(), "H".into()),
                ("hostname".into(), "N".into()),
                ("mo".into(), "M".into()),
                ("__rate_interval".into(), "20s".into()),
            ])
        ),
        "a{h=\"H\",n=\"N\"}[20s] M M $5"
    );
}

/// One evaluation window of the dashboards (Grafana's built-in variables for it).
struct Window {
    start: i64,
    end: i64,
    step: i64,
}

impl Window {
    fn builtins(&self) -> BTreeMap<String, String> {
        let range = self.end - self.start;
        BTreeMap::from([
            ("__interval".into(), format!("{}s", self.step)),
            ("__interval_ms".into(), (self.step * 1000).to_string()),
            // Grafana: max(4 × scrape interval, interval + scrape interval); scrape every 1 s.
            ("__rate_interval".into(), "20s".into()),
            ("__rate_interval_ms".into(), "20000".into()),
            ("__range".into(), format!("{range}s")),
            ("__range_s".into(), range.to_string()),
            ("__range_ms".into(), (range * 1000).to_string()),
            ("__from".into(), (self.start * 1000).to_string()),
            ("__to".into(), (self.end * 1000).to_string()),
        ])
    }
}

/// Runs every variable query and every panel query of `d` in `w`; returns what failed.
///
/// Panels are run as Grafana opens the dashboard (`default`: variables with «Все» take it, the
/// others their first value), where every query must return series; and, when that differs,
/// with each variable on its first value (`one`), where every query must be answered without an
/// error (one МО can rightly have nothing to show, e.g. in «МО без связи»).
async fn run_dashboard(vm: &Victoria, d: &Dashboard, w: &Window) -> Vec<String> {
    let f = &d.file;
    let mut bad = Vec::new();
    let mut one = w.builtins();
    let mut default = w.builtins();
    for v in variables(&d.json) {
        let name = v["name"].as_str().unwrap_or("").to_string();
        if v["type"] == "datasource" {
            one.insert(name.clone(), DS_UID.into());
            default.insert(name, DS_UID.into());
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap_or("");
        let mut values: Vec<String> = Vec::new();
        for assignment in [&one, &default] {
            let q = substitute(q, assignment);
            let Some((sel, label)) = label_values(&q) else {
                bad.push(format!("{f}: variable {name}: {q}"));
                return bad;
            };
            let mut params = vec![("start", w.start.to_string()), ("end", w.end.to_string())];
            if let Some(sel) = sel {
                params.push(("match[]", sel.to_string()));
            }
            match vm
                .api(&format!("/api/v1/label/{label}/values"), &params)
                .await
            {
                Ok(Value::Array(a)) if !a.is_empty() => {
                    if values.is_empty() {
                        values = a
                            .iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect();
                    }
                }
                Ok(_) => {
                    bad.push(format!("{f}: variable {name} has no values: {q}"));
                    return bad;
                }
                Err(e) => {
                    bad.push(format!("{f}: variable {name}: {e}"));
                    return bad;
                }
            }
        }
        let all_value = match v["allValue"].as_str() {
            Some(a) if v["includeAll"] == true => a.to_string(),
            _ if v["includeAll"] == true => format!("({})", values.join("|")),
            _ => values[0].clone(),
        };
        one.insert(name.clone(), values[0].clone());
        default.insert(name, all_value);
    }
    let mut assignments = vec![(&default, true)];
    if one != default {
        assignments.push((&one, false));
    }
    for p in panels(&d.json) {
        let title = p["title"].as_str().unwrap_or("");
        for t in p["targets"].as_array().into_iter().flatten() {
            for &(vars, need_series) in &assignments {
                let expr = substitute(t["expr"].as_str().unwrap_or(""), vars);
                let at = format!("{f}: {title:?} {}: {expr}", t["refId"]);
                let legend = t["legendFormat"].as_str().unwrap_or("");
                let range = vm
                    .api(
                        "/api/v1/query_range",
                        &[
                            ("query", expr.clone()),
                            ("start", w.start.to_string()),
                            ("end", w.end.to_string()),
                            ("step", format!("{}s", w.step)),
                        ],
                    )
                    .await;
                if let Some(why) = series_problem(range, "values", legend, need_series) {
                    bad.push(format!("{at}: {why}"));
                }
                if t["instant"] == true {
                    let instant = vm
                        .api(
                            "/api/v1/query",
                            &[("query", expr.clone()), ("time", w.end.to_string())],
                        )
                        .await;
                    if let Some(why) = series_problem(instant, "value", "", need_series) {
                        bad.push(format!("{at} (instant): {why}"));
                    }
                }
            }
        }
    }
    bad
}

/// Why a query's answer is not good enough for a panel: an error, no series (when `need_series`),
/// no finite value, or a series lacking a label the legend shows.
fn series_problem(
    answer: Result<Value, String>,
    values_key: &str,
    legend: &str,
    need_series: bool,
) -> Option<String> {
    let data = match answer {
        Ok(d) => d,
        Err(e) => return Some(e),
    };
    let result = data["result"].as_array().map_or(&[][..], Vec::as_slice);
    if result.is_empty() {
        return need_series.then(|| "no series".into());
    }
    let finite = |p: &Value| {
        p[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    let any_finite = result.iter().any(|s| match &s[values_key] {
        Value::Array(a) if values_key == "values" => a.iter().any(finite),
        v => finite(v),
    });
    if !any_finite {
        return Some("no finite value".into());
    }
    let mut rest = legend;
    while let Some(i) = rest.find("{{") {
        let t = &rest[i + 2..];
        let Some(end) = t.find("}}") else { break };
        let label = t[..end].trim();
        if let Some(s) = result
            .iter()
            .find(|s| s["metric"][label].as_str().unwrap_or("").is_empty())
        {
            return Some(format!(
                "legend shows {{{{{label}}}}}, series {} lacks it",
                s["metric"]
            ));
        }
        rest = &t[end + 2..];
    }
    None
}

fn agent(
    collector: &Collector,
    dir: &Path,
    mo: &str,
    host: &str,
    role: &str,
    site: &str,
    probes: &[String],
) -> Agent {
    let mut args = vec![
        "--role",
        role,
        "--site",
        site,
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "5",
        "--probe-timeout-ms",
        "1000",
    ];
    for p in probes {
        args.push("--probe");
        args.push(p);
    }
    Agent::start(&collector.mqtt_url(), mo, host, &dir.join(host), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_series_from_a_real_collector() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("roster.toml"), ROSTER).unwrap();
    let vm_port = free_port();
    // The collector writes its series to VictoriaMetrics through the InfluxDB v2 sink (the
    // outbox holds them until VictoriaMetrics is up); МО series every 10 s, not every minute.
    let config = p.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[roster]\npath = \"{}\"\n\n[store.influxdb]\nurl = \"http://127.0.0.1:{vm_port}\"\n\
             org = \"miac\"\nbucket = \"dozor\"\ntoken = \"unused\"\npoll_interval_ms = 200\n\
             max_backoff_secs = 1\nmo_interval_secs = 10\n",
            p.join("roster.toml").display()
        ),
    )
    .unwrap();
    let data = p.join("collector");
    let collector = Collector::start(
        &Broker::Embedded(0),
        &data,
        &["--config", config.to_str().unwrap()],
    );
    // /metrics needs a login: VictoriaMetrics scrapes it with a viewer's API token.
    let token = collector_cli(
        &data,
        &[
            "api-token",
            "create",
            "--name",
            "victoriametrics",
            "--role",
            "viewer",
        ],
    );
    let scrape = p.join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dozor-collector\n    \
             bearer_token: \"{}\"\n    static_configs:\n      - targets: [\"{}\"]\n",
            token.trim(),
            collector.http
        ),
    )
    .unwrap();
    let vm = Victoria::start(vm_port, Some(&scrape));
    let start = unix_ms() / 1000 - 5;

    // Four real agents in three МО (one missing from the roster): the МИС answers, the ЛИС accepts TCP, the ЦАМИ refuses
    // (so the panels of failed probes have something to show).
    let mis = FakeMis::start().await;
    let lis = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lis_port = lis.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let _ = lis.accept().await;
        }
    });
    let probes = [
        format!("mis={}", mis.url()),
        format!("lis=tcp://127.0.0.1:{lis_port}"),
        format!("pacs:pacs=tcp://127.0.0.1:{}", free_port()),
    ];
    let _agents = [
        agent(
            &collector,
            p,
            MO_A,
            "srv-a",
            "server",
            "Главный корпус",
            &probes,
        ),
        agent(
            &collector,
            p,
            MO_A,
            "arm-a",
            "workstation",
            "Поликлиника",
            &probes,
        ),
        agent(&collector, p, MO_B, "arm-b", "workstation", "ФАП", &probes),
        agent(&collector, p, MO_C, "arm-c", "workstation", "ФАП", &probes),
    ];

    // A message that is not JSON: the rejections panel has a reason with a count above zero.
    let mut o = rumqttc::MqttOptions::new("dashboards-test", "127.0.0.1", collector.mqtt_port);
    o.set_keep_alive(Duration::from_secs(5));
    let (mqtt, mut events) = rumqttc::AsyncClient::new(o, 10);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    mqtt.publish(
        format!("dozor/v1/{MO_A}/bad-host/hb"),
        rumqttc::QoS::AtLeastOnce,
        false,
        "{not json",
    )
    .await
    .unwrap();

    let all = dashboards();
    let began = Instant::now();
    let mut last = Vec::new();
    while began.elapsed() < Duration::from_secs(90) {
        let w = Window {
            start,
            end: unix_ms() / 1000,
            step: 2,
        };
        last.clear();
        for d in &all {
            last.extend(run_dashboard(&vm, d, &w).await);
        }
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        last.is_empty(),
        "{} dashboard queries failed after {:?}:\n{}",
        last.len(),
        began.elapsed(),
        last.join("\n")
    );
    let queries: usize = all
        .iter()
        .flat_map(|d| panels(&d.json))
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .sum();
    println!(
        "all {queries} panel queries of {} dashboards returned series after {:?}",
        all.len(),
        began.elapsed()
    );

    // The check is not vacuous: a query of a series nobody writes, a legend naming a label the
    // series lack, and a variable without values are each reported.
    let w = Window {
        start,
        end: unix_ms() / 1000,
        step: 2,
    };
    let mut broken = Dashboard {
        file: "broken.json".into(),
        json: all
            .iter()
            .find(|d| d.json["uid"] == "dozor-host")
            .unwrap()
            .json
            .clone(),
    };
    let stats: Vec<usize> = (0..broken.json["panels"].as_array().unwrap().len())
        .filter(|&i| broken.json["panels"][i]["type"] == "stat")
        .collect();
    let ps = &mut broken.json["panels"];
    ps[stats[0]]["targets"][0]["expr"] = "dozor_hb_nonexistent{host=\"$host\"}".into();
    ps[stats[1]]["targets"][0]["legendFormat"] = "{{target}}".into();
    let bad = run_dashboard(&vm, &broken, &w).await;
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].contains("dozor_hb_nonexistent") && bad[0].ends_with("no series"),
        "{bad:#?}"
    );
    assert!(bad[1].contains("lacks it"), "{bad:#?}");
    broken.json["templating"]["list"][1]["query"]["query"] =
        "label_values(dozor_nothing, mo)".into();
    let bad = run_dashboard(&vm, &broken, &w).await;
    assert!(
        bad.len() == 1 && bad[0].contains("has no values"),
        "{bad:#?}"
    );

    // The scraped counters move: the rejected message shows under its reason.
    let rejected = wait_for(Duration::from_secs(20), || async {
        let r = vm
            .api(
                "/api/v1/query",
                &[(
                    "query",
                    "dozor_messages_rejected_total{reason=\"bad_json\"} > 0".into(),
                )],
            )
            .await
            .ok()?;
        (!r["result"].as_array()?.is_empty()).then_some(r)
    })
    .await;
    assert!(
        rejected.is_some(),
        "the rejected message never reached VictoriaMetrics"
    );

    // The МО series carry the roster's name and plan, heartbeats the host's name.
    let plan = vm
        .api(
            "/api/v1/query",
            &[("query", format!("dozor_mo_planned_arm{{mo=\"{MO_A}\"}}"))],
        )
        .await
        .unwrap();
    let s = &plan["result"][0];
    assert_eq!(s["metric"]["name"], NAME_A, "{plan}");
    assert_eq!(s["value"][1], "30", "{plan}");
    // An МО missing from the roster is named by its OID in the region's legends.
    let region = all
        .iter()
        .find(|d| d.json["uid"] == "dozor-region")
        .unwrap();
    let per_mo = panels(&region.json)
        .into_iter()
        .find(|p| p["title"] == "АРМ в сети по МО")
        .expect("panel АРМ в сети по МО");
    let expr = per_mo["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("$mo", ".*");
    let unlisted = format!("ОИД {MO_C}");
    let names = wait_for(Duration::from_secs(30), || async {
        let r = vm
            .api("/api/v1/query", &[("query", expr.clone())])
            .await
            .ok()?;
        let names: BTreeSet<String> = r["result"]
            .as_array()?
            .iter()
            .filter_map(|s| s["metric"]["name"].as_str().map(String::from))
            .collect();
        (names.contains(NAME_A) && names.contains(&unlisted)).then_some(names)
    })
    .await;
    assert!(names.is_some(), "no series named {NAME_A} and {unlisted}");

    let hb = vm
        .api(
            "/api/v1/query",
            &[("query", "dozor_hb_uptime_secs{host=\"arm-b\"}".into())],
        )
        .await
        .unwrap();
    let name = hb["result"][0]["metric"]["hostname"].as_str().unwrap_or("");
    assert!(!name.is_empty(), "no hostname tag: {hb}");
    assert_eq!(hb["result"][0]["metric"]["site"], "ФАП", "{hb}");
}
