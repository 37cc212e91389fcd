//! Alert scenarios end to end (issue: one incident per outage, not one per PC). A region of four
//! МО with three or four agents each reports to a real collector; each МО reaches the МИС (a local HTTP
//! server) through a TCP relay of its own, so the test can cut one МО's channel, take the МИС
//! down for everyone, flap one МО's channel, or kill hosts. Notifications go to a webhook and a
//! Telegram Bot API stand-in (an HTTP server of the test's own that records requests), to a
//! real SMTP server (aiosmtpd) and to a real Prometheus Alertmanager; the test asserts what
//! arrived there and measures the time from the injected fault to the first webhook request.
//!
//! | scenario | fault | expected |
//! |---|---|---|
//! | 1 | МО А's relay stopped | one `mo_channel` firing, one recovery after the relay is back |
//! | 2 | the МИС stopped | one `central_outage` firing and recovery, no per-МО message |
//! | 3 | МО Б's server `kill -9`, then restarted | one `server_lost` within 1.5 × keep-alive + for + margin, one recovery |
//! | 3b | МО Г's server frozen (SIGSTOP), then resumed | the same, through the broker's keep-alive, outside working hours |
//! | 4 | МО Г's workstations killed one by one, outside its working hours | nothing sent |
//! | 4b | all of МО А killed in its working hours (control for 4) | one `mo_unreachable`, the server's loss merged into it |
//! | 5 | МО В's relay toggled off 7 s / on 4 s for 44 s | at most `flap_max_notifications` messages |
//!
//! Each scenario is a test of its own with a region of its own (collector, 13 agents, МИС,
//! relays, SMTP server, Alertmanager), so a failure early hides nothing and the tests run in
//! parallel (as many at once as `cargo test` runs threads: two on a 2-core machine). Each test
//! ends by checking that every channel got every message and none failed or was dropped.

use dozor_tests::alerting::{Alertmanager, Smtp, channels_toml};
use dozor_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TARGET: &str = "mis-main";
const KEEPALIVE_SECS: u64 = 2;

// Rule timings of the collector under test (seconds).
const SERVER_LOST_FOR: u64 = 2;
const UNREACHABLE_FOR: u64 = 2;
/// Longer than the central outage's `for` plus a probe interval or two: when the МИС fails for
/// everyone the central incident must absorb the per-МО ones before they fire.
const CHANNEL_FOR: u64 = 4;
const CHANNEL_RESOLVE: u64 = 1;
const CENTRAL_FOR: u64 = 1;
const CENTRAL_RESOLVE: u64 = 2;
const FLAP_MAX: usize = 4;
/// `http.public_url` of the collector under test: messages link to its incident pages.
const PUBLIC_URL: &str = "https://dozor.miac.local";
/// Allowance for a loaded 2-core machine on top of the rule timings: probe interval (1 s),
/// evaluation tick (1 s), delivery, and scheduling delays.
const MARGIN: Duration = Duration::from_secs(6);

struct MoSpec {
    oid: &'static str,
    name: &'static str,
    tz: &'static str,
    /// false: working hours chosen to exclude the time of the test.
    in_hours: bool,
    hosts: &'static [(&'static str, &'static str)],
}

/// А (index `A`): channel cut (1) and the in-hours control (4b); Б (`B`): server killed (3);
/// В (`C`): flapping (5); Г (`D`): outside working hours (3b, 4).
const MOS: [MoSpec; 4] = [
    MoSpec {
        oid: "1.2.643.5.1.13.13.12.2.27.5001",
        name: "Городская поликлиника № 1",
        tz: "Asia/Vladivostok",
        in_hours: true,
        hosts: &[
            ("srv-a1", "server"),
            ("pc-a1", "workstation"),
            ("pc-a2", "workstation"),
        ],
    },
    MoSpec {
        oid: "1.2.643.5.1.13.13.12.2.27.5002",
        name: "Районная больница",
        tz: "Asia/Vladivostok",
        in_hours: true,
        hosts: &[
            ("srv-b1", "server"),
            ("pc-b1", "workstation"),
            ("pc-b2", "workstation"),
        ],
    },
    MoSpec {
        oid: "1.2.643.5.1.13.13.12.2.27.5003",
        name: "Детская поликлиника № 3",
        tz: "Europe/Moscow",
        in_hours: true,
        hosts: &[
            ("pc-c1", "workstation"),
            ("pc-c2", "workstation"),
            ("pc-c3", "workstation"),
        ],
    },
    MoSpec {
        oid: "1.2.643.5.1.13.13.12.2.27.5004",
        name: "ФАП Вознесенское",
        tz: "Asia/Vladivostok",
        in_hours: false,
        hosts: &[
            ("srv-d1", "server"),
            ("pc-d1", "workstation"),
            ("pc-d2", "workstation"),
            ("pc-d3", "workstation"),
        ],
    },
];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Working hours of an МО in `Asia/Vladivostok` (UTC+10, no DST) that exclude now by 12 hours:
/// one hour, every day.
fn hours_excluding_now() -> (String, String) {
    let local_hour = (now_ms() / 3_600_000 + 10) % 24;
    let start = (local_hour + 12) % 24;
    (format!("{start:02}:00"), format!("{:02}:00", start + 1))
}

fn roster_toml() -> String {
    let mut r = String::new();
    for m in &MOS {
        let (start, end) = if m.in_hours {
            ("00:00".to_string(), "24:00".to_string())
        } else {
            assert_eq!(
                m.tz, "Asia/Vladivostok",
                "hours_excluding_now assumes UTC+10"
            );
            hours_excluding_now()
        };
        r.push_str(&format!(
            "[[mo]]\noid = \"{}\"\nname = \"{}\"\ntz = \"{}\"\nwork_days = [1, 2, 3, 4, 5, 6, 7]\n\
             work_start = \"{start}\"\nwork_end = \"{end}\"\n[[mo.site]]\nname = \"Главный корпус\"\nplanned_arm = {}\n\n",
            m.oid,
            m.name,
            m.tz,
            m.hosts.len()
        ));
    }
    r
}

fn collector_toml(hook: &str, smtp_port: u16, am: &str) -> String {
    format!(
        r#"[http]
public_url = "{PUBLIC_URL}/"

[alerts]
time_zone = "Europe/Moscow"
startup_grace_secs = 0
flap_window_secs = 900
flap_max_notifications = {FLAP_MAX}
probe_fresh_secs = 10

[alerts.server_lost]
for_secs = {SERVER_LOST_FOR}
resolve_after_secs = 2

[alerts.mo_unreachable]
for_secs = {UNREACHABLE_FOR}
resolve_after_secs = 2
window_secs = 60
working_hours_only = true
relabel_settle_secs = 5

[alerts.mo_channel]
for_secs = {CHANNEL_FOR}
resolve_after_secs = {CHANNEL_RESOLVE}

[alerts.central_outage]
for_secs = {CENTRAL_FOR}
resolve_after_secs = {CENTRAL_RESOLVE}

[alerts.host_target]
for_secs = 2
resolve_after_secs = 2

# The disks of this machine are not the scenarios' business.
[alerts.disk_full]
enabled = false

[[alerts.channel]]
type = "webhook"
name = "hook"
url = "{hook}/hooks/dozor"
headers = {{ Authorization = "Bearer e2e" }}
retry_initial_ms = 200
retry_max_ms = 1000
timeout_secs = 5

[[alerts.channel]]
type = "telegram"
name = "tg"
bot_token = "123456:E2E"
chat_id = "-1001234"
api_base = "{hook}"
retry_initial_ms = 200
retry_max_ms = 1000
timeout_secs = 5
"#
    ) + &channels_toml(smtp_port, am)
}

/// A request received by the capture server.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    path: String,
    auth: String,
    json: Value,
}

impl Hit {
    fn event(&self) -> &str {
        self.json["event"].as_str().unwrap_or("")
    }
    fn rule(&self) -> &str {
        self.json["incident"]["rule"].as_str().unwrap_or("")
    }
    fn id(&self) -> u64 {
        self.json["incident"]["id"].as_u64().unwrap_or(0)
    }
    fn mo(&self) -> &str {
        self.json["incident"]["mos"][0]["oid"]
            .as_str()
            .unwrap_or("")
    }
    fn is(&self, event: &str, rule: &str) -> bool {
        self.event() == event && self.rule() == rule
    }
    fn line(&self) -> String {
        format!(
            "{} {} #{} {}",
            self.event(),
            self.rule(),
            self.id(),
            self.json["subject"].as_str().unwrap_or("")
        )
    }
}

fn lines(hits: &[Hit]) -> String {
    let v: Vec<String> = hits.iter().map(Hit::line).collect();
    format!("[{}]", v.join("; "))
}

/// An HTTP server of the test's own: the webhook receiver and the Telegram Bot API.
#[derive(Clone, Default)]
struct Capture {
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Capture {
    async fn start() -> (Capture, String) {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Uri};
        let cap = Capture::default();
        let c = cap.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let c = c.clone();
            async move {
                let hit = Hit {
                    at: Instant::now(),
                    path: uri.path().to_string(),
                    auth: headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    json: serde_json::from_slice(&body).unwrap_or(Value::Null),
                };
                c.hits.lock().unwrap().push(hit);
                "{\"ok\":true}"
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (cap, url)
    }

    fn webhook(&self) -> Vec<Hit> {
        let hits = self.hits.lock().unwrap();
        hits.iter()
            .filter(|h| h.path == "/hooks/dozor")
            .cloned()
            .collect()
    }

    fn telegram(&self) -> Vec<Hit> {
        let hits = self.hits.lock().unwrap();
        hits.iter()
            .filter(|h| h.path.ends_with("/sendMessage"))
            .cloned()
            .collect()
    }
}

struct Region {
    dir: tempfile::TempDir,
    collector: Collector,
    mis: FakeMis,
    relays: Vec<Relay>,
    agents: BTreeMap<String, Agent>,
    cap: Capture,
    smtp: Smtp,
    am: Alertmanager,
}

fn agent_args(role: &str, relay: &Relay) -> Vec<String> {
    let ka = KEEPALIVE_SECS.to_string();
    let probe = format!("{TARGET}:mis={}", relay.url("/health"));
    [
        "--role",
        role,
        "--site",
        "Главный корпус",
        "--interval-secs",
        "1",
        "--probe-interval-secs",
        "1",
        "--keepalive-secs",
        &ka,
        "--probe-timeout-ms",
        "500",
        "--probe",
        &probe,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Region {
    async fn start() -> Region {
        let dir = tempfile::tempdir().unwrap();
        let (cap, hook) = Capture::start().await;
        let smtp = Smtp::start(dir.path());
        let am = Alertmanager::start(dir.path()).await;
        let roster = dir.path().join("roster.toml");
        std::fs::write(&roster, roster_toml()).unwrap();
        let cfg = dir.path().join("collector.toml");
        std::fs::write(&cfg, collector_toml(&hook, smtp.port, &am.base)).unwrap();
        let collector = Collector::start(
            &Broker::Embedded(0),
            &dir.path().join("collector"),
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--roster",
                roster.to_str().unwrap(),
            ],
        );
        let mis = FakeMis::start().await;
        let mut relays = Vec::new();
        for _ in &MOS {
            relays.push(Relay::start(mis.port).await);
        }
        let mut r = Region {
            dir,
            collector,
            mis,
            relays,
            agents: BTreeMap::new(),
            cap,
            smtp,
            am,
        };
        for (i, m) in MOS.iter().enumerate() {
            for &(host, _) in m.hosts {
                r.start_agent(i, host);
            }
        }
        r
    }

    fn start_agent(&mut self, mo: usize, host: &str) {
        let role = MOS[mo]
            .hosts
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, r)| *r)
            .expect("host of the МО");
        let args = agent_args(role, &self.relays[mo]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let a = Agent::start(
            &self.collector.mqtt_url(),
            MOS[mo].oid,
            host,
            &self.dir.path().join("agents").join(host),
            &args,
        );
        self.agents.insert(host.to_string(), a);
    }

    fn kill9(&mut self, host: &str) {
        self.agents
            .get_mut(host)
            .expect("running agent")
            .proc
            .kill9();
    }

    /// Hosts whose live record satisfies `pred`.
    async fn hosts_where(&self, pred: impl Fn(&Value) -> bool) -> Vec<String> {
        let hosts = self.collector.get("/api/v1/hosts").await;
        hosts
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|h| pred(h))
                    .filter_map(|h| h["host_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn incidents(&self, query: &str) -> Vec<Value> {
        let v = self
            .collector
            .get(&format!("/api/v1/incidents{query}"))
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    fn hooks_since(&self, mark: usize) -> Vec<Hit> {
        self.cap.webhook().split_off(mark)
    }

    /// The first webhook request after `mark` matching `pred`, waiting up to `timeout`.
    async fn next_hook(
        &self,
        mark: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Hit) -> bool,
    ) -> Hit {
        let found = wait_for(timeout, || {
            let f = self.hooks_since(mark).into_iter().find(|h| pred(h));
            async move { f }
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "{what}: no such webhook request within {timeout:?}; since the fault: {}",
                lines(&self.hooks_since(mark))
            )
        })
    }

    async fn wait_mail(&self, subject: &str, timeout: Duration) {
        let ok = wait_for(timeout, || {
            let s = self.smtp.subjects();
            async move { s.iter().any(|x| x == subject).then_some(()) }
        })
        .await;
        assert!(
            ok.is_some(),
            "no e-mail with subject {subject:?} within {timeout:?}; got {:?}",
            self.smtp.subjects()
        );
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Sleeps until `t0 + d`.
async fn sleep_until(t0: Instant, d: Duration) {
    let end = t0 + d;
    let now = Instant::now();
    if end > now {
        tokio::time::sleep(end - now).await;
    }
}

impl Region {
    /// A started region with every host online and reaching the МИС, which has sent nothing.
    async fn ready() -> Region {
        let test_start = Instant::now();
        let r = Region::start().await;
        let all: usize = MOS.iter().map(|m| m.hosts.len()).sum();
        let ready = wait_for(Duration::from_secs(40), || async {
            let n = r
                .hosts_where(|h| h["state"] == "online" && h["probes"][TARGET]["ok"] == true)
                .await
                .len();
            (n == all).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "not all {all} hosts online and reaching the МИС within 40 s"
        );
        println!("region ready after {:.1}s", secs(test_start.elapsed()));
        // A healthy region sends nothing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            r.cap.hits.lock().unwrap().is_empty(),
            "a healthy region sent: {}",
            lines(&r.cap.webhook())
        );
        r
    }

    /// Every channel got every message; nothing failed or was dropped.
    async fn every_channel_got_every_message(&self) {
        let hooks = self.cap.webhook();
        let n = hooks.len();
        assert!(hooks.iter().all(|h| h.auth == "Bearer e2e"));
        let tg = self.cap.telegram();
        assert_eq!(
            tg.len(),
            n,
            "telegram {} vs webhook {}: {}",
            tg.len(),
            n,
            lines(&hooks)
        );
        assert!(
            tg.iter()
                .all(|h| h.path == "/bot123456:E2E/sendMessage" && h.json["chat_id"] == "-1001234")
        );
        let mails = wait_for(Duration::from_secs(20), || {
            let m = self.smtp.mails().len();
            async move { (m == n).then_some(m) }
        })
        .await;
        assert_eq!(
            mails,
            Some(n),
            "e-mails vs webhook: {:?}",
            self.smtp.subjects()
        );
        // The series exist (a missing one would read as 0 below).
        for ch in ["hook\",type=\"webhook", "tg\",type=\"telegram"] {
            let series =
                format!("dozor_alert_notifications_total{{channel=\"{ch}\",result=\"sent\"}}");
            assert_eq!(self.collector.metric(&series).await, n as f64, "{series}");
        }
        for ch in [
            "channel=\"hook\",type=\"webhook\"",
            "channel=\"tg\",type=\"telegram\"",
            "channel=\"mail\",type=\"email\"",
            "channel=\"am\",type=\"alertmanager\"",
        ] {
            for result in ["failed", "dropped"] {
                let series = format!("dozor_alert_notifications_total{{{ch},result=\"{result}\"}}");
                assert_eq!(self.collector.metric(&series).await, 0.0, "{series}");
            }
        }
        println!("ALERT: {n} notifications per channel");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_cut_pages_once_per_mo() {
    let r = Region::ready().await;
    scenario_1_channel_cut(&r).await;
    r.every_channel_got_every_message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_outage_pages_once_for_the_region() {
    let r = Region::ready().await;
    scenario_2_central_outage(&r).await;
    r.every_channel_got_every_message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_pages_once() {
    let mut r = Region::ready().await;
    scenario_3_server_killed(&mut r).await;
    r.every_channel_got_every_message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_pages_once_after_hours() {
    let mut r = Region::ready().await;
    scenario_3b_server_frozen(&mut r).await;
    r.every_channel_got_every_message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workstations_off_after_hours_page_nobody() {
    let mut r = Region::ready().await;
    scenario_4_workstations_after_hours(&mut r).await;
    r.every_channel_got_every_message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_mo_down_in_hours_pages_once() {
    let mut r = Region::ready().await;
    scenario_4b_whole_mo_in_hours(&mut r).await;
    r.every_channel_got_every_message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_channel_is_bounded() {
    let r = Region::ready().await;
    scenario_5_flapping(&r).await;
    r.every_channel_got_every_message().await;
}

/// Scenario 1: one МО's channel to the МИС is cut: its agents still report to the collector, but
/// none of them reaches the МИС → exactly one `mo_channel` incident, then one recovery.
async fn scenario_1_channel_cut(r: &Region) {
    let mo = &MOS[A];
    let mark = r.cap.webhook().len();
    let t0 = Instant::now();
    r.relays[A].set(false);
    let limit = Duration::from_secs(CHANNEL_FOR) + MARGIN;
    let fired = r
        .next_hook(mark, limit, "scenario 1 firing", |h| {
            h.is("firing", "mo_channel")
        })
        .await;
    let took = fired.at - t0;
    println!(
        "ALERT scenario 1: cause→notification {:.1}s (mo_channel for_secs {CHANNEL_FOR})",
        secs(took)
    );
    assert!(
        took >= Duration::from_secs(CHANNEL_FOR),
        "fired before for_secs: {took:?}"
    );
    assert_eq!(fired.mo(), mo.oid);
    let text = fired.json["text"].as_str().unwrap();
    let title = format!("МО «{}» потеряла связь с МИС ({TARGET})", mo.name);
    assert!(text.starts_with(&format!("АВАРИЯ: {title}\n")), "{text}");
    assert!(
        text.contains(&format!("МО (1): {} ({})", mo.name, mo.oid)),
        "{text}"
    );
    assert!(text.contains("Хосты (3): "), "{text}");
    assert_eq!(fired.json["incident"]["target"], TARGET);
    assert_eq!(fired.json["incident"]["category"], "mis");
    let id = fired.id();

    // The other channels: Telegram, the e-mail's Russian subject, Alertmanager's labels.
    r.wait_mail(&format!("[dozor] АВАРИЯ: {title}"), Duration::from_secs(15))
        .await;
    let am = wait_for(Duration::from_secs(15), || async {
        r.am.active("mo_channel").await.into_iter().next()
    })
    .await
    .expect("mo_channel alert active in Alertmanager");
    let l = &am["labels"];
    assert_eq!(l["mo"], mo.oid);
    assert_eq!(l["target"], TARGET);
    assert_eq!(l["category"], "mis");
    assert_eq!(l["severity"], "critical");
    assert_eq!(l["incident_id"], id.to_string());
    assert!(l.get("host").is_none(), "three hosts: no host label");
    assert_eq!(am["annotations"]["summary"], title.as_str());
    assert_eq!(am["annotations"]["mo_name"], mo.name);
    let tg = r.cap.telegram();
    assert!(
        tg.iter().any(|h| h.json["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("АВАРИЯ: {title}")))),
        "telegram: {tg:?}"
    );

    // Exactly one incident, one message: nothing per PC, nothing central.
    let hits = r.hooks_since(mark);
    assert_eq!(hits.len(), 1, "scenario 1: {}", lines(&hits));
    let open: Vec<Value> = r
        .incidents("")
        .await
        .into_iter()
        .filter(|i| i["state"] != "resolved" && i["notify"] == true)
        .collect();
    assert_eq!(open.len(), 1, "open notifying incidents: {open:?}");
    assert_eq!(open[0]["rule"], "mo_channel");
    assert_eq!(open[0]["state"], "firing");
    assert_eq!(open[0]["id"], id);
    assert_eq!(open[0]["host_count"], 3);

    // Restore: one recovery.
    let t1 = Instant::now();
    r.relays[A].set(true);
    let limit = Duration::from_secs(CHANNEL_RESOLVE) + MARGIN;
    let rec = r
        .next_hook(mark, limit, "scenario 1 recovery", |h| {
            h.is("resolved", "mo_channel")
        })
        .await;
    println!(
        "ALERT scenario 1: restore→recovery {:.1}s (resolve_after_secs {CHANNEL_RESOLVE})",
        secs(rec.at - t1)
    );
    assert_eq!(rec.id(), id);
    let text = rec.json["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("ВОССТАНОВЛЕНО: {title}\n")),
        "{text}"
    );
    assert!(text.contains("Длительность: "), "{text}");
    r.wait_mail(
        &format!("[dozor] ВОССТАНОВЛЕНО: {title}"),
        Duration::from_secs(15),
    )
    .await;
    let gone = wait_for(Duration::from_secs(15), || async {
        r.am.active("mo_channel").await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "Alertmanager still has the alert active");
    let hits = r.hooks_since(mark);
    assert_eq!(hits.len(), 2, "scenario 1: {}", lines(&hits));
    let inc = r.collector.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["state"], "resolved");
}

/// Scenario 2: the МИС is down for everyone: every МО fails it → one central incident; the per-МО
/// conditions are absorbed before their longer `for_secs` elapses, so none is sent.
async fn scenario_2_central_outage(r: &Region) {
    let mark = r.cap.webhook().len();
    let t0 = Instant::now();
    let t0_ms = now_ms();
    r.mis.set(MIS_DOWN);
    let limit = Duration::from_secs(CENTRAL_FOR) + MARGIN;
    let fired = r
        .next_hook(mark, limit, "scenario 2 firing", |h| {
            h.is("firing", "central_outage")
        })
        .await;
    let took = fired.at - t0;
    println!(
        "ALERT scenario 2: cause→notification {:.1}s (central_outage for_secs {CENTRAL_FOR})",
        secs(took)
    );
    let id = fired.id();
    let text = fired.json["text"].as_str().unwrap();
    assert!(
        text.starts_with("АВАРИЯ: МИС (mis-main) недоступна для всего региона (не достигают МО: "),
        "{text}"
    );
    let am = wait_for(Duration::from_secs(15), || async {
        r.am.active("central_outage").await.into_iter().next()
    })
    .await
    .expect("central_outage alert active in Alertmanager");
    assert_eq!(am["labels"]["target"], TARGET);
    assert!(am["labels"].get("mo").is_none(), "several МО: no mo label");

    // Hold past the per-МО rule's for_secs: still only the central message.
    sleep_until(t0, Duration::from_secs(CHANNEL_FOR + 3)).await;
    let hits = r.hooks_since(mark);
    assert_eq!(hits.len(), 1, "scenario 2: {}", lines(&hits));
    let inc = r.collector.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["state"], "firing");
    assert_eq!(inc["mo_count"], MOS.len(), "{inc}");
    let per_mo = r.incidents("?rule=mo_channel").await;
    assert!(
        per_mo.iter().all(|i| i["state"] == "resolved"),
        "per-МО incidents open during a central outage: {per_mo:?}"
    );
    let merged: Vec<&Value> = per_mo
        .iter()
        .filter(|i| i["merged_into"] == id && i["episode_started_ms"].as_i64() >= Some(t0_ms))
        .collect();
    println!(
        "scenario 2: per-МО incidents opened and merged into #{id}: {}",
        merged.len()
    );

    // Back: one recovery, and no per-МО message while the МО recover one by one.
    let t1 = Instant::now();
    r.mis.set(MIS_OK);
    let limit = Duration::from_secs(CENTRAL_RESOLVE) + MARGIN;
    let rec = r
        .next_hook(mark, limit, "scenario 2 recovery", |h| {
            h.is("resolved", "central_outage")
        })
        .await;
    println!(
        "ALERT scenario 2: restore→recovery {:.1}s (resolve_after_secs {CENTRAL_RESOLVE})",
        secs(rec.at - t1)
    );
    assert_eq!(rec.id(), id);
    sleep_until(t1, Duration::from_secs(CHANNEL_FOR + 2)).await;
    let hits = r.hooks_since(mark);
    assert_eq!(hits.len(), 2, "scenario 2: {}", lines(&hits));
    let ok = r
        .hosts_where(|h| h["probes"][TARGET]["ok"] == true)
        .await
        .len();
    assert_eq!(ok, MOS.iter().map(|m| m.hosts.len()).sum::<usize>());
}

/// How a server goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerFault {
    /// `kill -9`: the socket closes, the broker publishes the last will at once.
    Kill9,
    /// SIGSTOP: the socket stays open and nothing is sent (a power cut behind a NAT, a hung
    /// machine): only the broker's keep-alive (1.5 × keep-alive) can tell.
    Freeze,
}

/// Scenario 3: a server is killed → the broker's last will (at the latest 1.5 × keep-alive) makes
/// it lost → one `server_lost` after its `for_secs`; back → one recovery.
async fn scenario_3_server_killed(r: &mut Region) {
    server_outage(r, B, "srv-b1", ServerFault::Kill9, "3").await;
}

/// Scenario 3b: a server of the МО outside its working hours is frozen: servers page at any hour,
/// and the keep-alive path is as fast as promised.
async fn scenario_3b_server_frozen(r: &mut Region) {
    server_outage(r, D, "srv-d1", ServerFault::Freeze, "3b").await;
}

async fn server_outage(r: &mut Region, mo: usize, host: &str, fault: ServerFault, label: &str) {
    let m = &MOS[mo];
    let mark = r.cap.webhook().len();
    let pid = r.agents[host].proc.pid().to_string();
    // The name the agent reported (the machine's), as messages must show it.
    let hostname = r.collector.host(host).await.unwrap()["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!hostname.is_empty());
    let t0 = Instant::now();
    match fault {
        ServerFault::Kill9 => r.kill9(host),
        ServerFault::Freeze => {
            let st = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
            assert!(st.success());
        }
    }
    let limit = Duration::from_millis(KEEPALIVE_SECS * 1500)
        + Duration::from_secs(SERVER_LOST_FOR)
        + MARGIN;
    let fired = r
        .next_hook(mark, limit, &format!("scenario {label} firing"), |h| {
            h.is("firing", "server_lost")
        })
        .await;
    let took = fired.at - t0;
    println!(
        "ALERT scenario {label}: cause→notification {:.1}s ({fault:?}; limit {:.1}s = 1.5 × keep-alive {KEEPALIVE_SECS} s + for_secs {SERVER_LOST_FOR} + margin {} s)",
        secs(took),
        secs(limit),
        MARGIN.as_secs()
    );
    // Never before `for_secs`; a frozen host not before a keep-alive without packets (the
    // last heartbeat may precede the freeze by up to one interval).
    let earliest = match fault {
        ServerFault::Kill9 => Duration::from_secs(SERVER_LOST_FOR),
        ServerFault::Freeze => {
            Duration::from_millis(KEEPALIVE_SECS * 1000 - 200)
                + Duration::from_secs(SERVER_LOST_FOR)
        }
    };
    assert!(took >= earliest, "fired too early: {took:?} < {earliest:?}");
    assert_eq!(fired.mo(), m.oid);
    assert_eq!(fired.json["incident"]["hosts"], serde_json::json!([host]));
    let text = fired.json["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "АВАРИЯ: Сервер {hostname} (подразделение «Главный корпус», МО «{}») не на связи\n",
            m.name
        )),
        "{text}"
    );
    // Linked to the incident's page of the web UI, in the text and in the webhook's JSON.
    let page = format!("{PUBLIC_URL}/incidents/{}", fired.id());
    assert!(text.ends_with(&format!("\nПодробнее: {page}")), "{text}");
    assert_eq!(fired.json["url"], page);
    assert_eq!(
        fired.json["incident"]["host_refs"][0]["site"],
        "Главный корпус"
    );
    let h = r.collector.host(host).await.unwrap();
    assert_eq!(h["state"], "lost");
    assert_eq!(h["reason"], "last_will");
    if fault == ServerFault::Kill9 {
        // Someone takes it: acknowledged through the real auth middleware (the harness's API
        // token), shown at once, and named in the recovery.
        let url = format!(
            "http://{}/api/v1/incidents/{}/ack",
            r.collector.http,
            fired.id()
        );
        let ack = r
            .collector
            .client
            .post(&url)
            .json(&serde_json::json!({"comment": "выезжаем"}))
            .send()
            .await
            .unwrap();
        assert_eq!(ack.status(), 200);
        let inc: Value = ack.json().await.unwrap();
        let by = inc["ack"]["by"].as_str().unwrap().to_string();
        assert!(by.starts_with("token:"), "{inc}");
        let listed = r
            .collector
            .get(&format!("/api/v1/incidents/{}", fired.id()))
            .await;
        assert_eq!(listed["ack"]["comment"], "выезжаем", "{listed}");
        let anonymous = reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({}))
            .send();
        assert_eq!(anonymous.await.unwrap().status(), 401);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits = r.hooks_since(mark);
    assert_eq!(hits.len(), 1, "scenario {label}: {}", lines(&hits));

    // Back: the agent restarted (same spool) or resumed.
    let t1 = Instant::now();
    match fault {
        ServerFault::Kill9 => r.start_agent(mo, host),
        ServerFault::Freeze => {
            let st = Command::new("kill").args(["-CONT", &pid]).status().unwrap();
            assert!(st.success());
        }
    }
    let rec = r
        .next_hook(
            mark,
            Duration::from_secs(15),
            &format!("scenario {label} recovery"),
            |h| h.is("resolved", "server_lost"),
        )
        .await;
    assert_eq!(rec.id(), fired.id());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hits = r.hooks_since(mark);
    let relabels = hits.iter().filter(|h| h.event() == "relabelled").count();
    println!(
        "ALERT scenario {label}: back→recovery {:.1}s (resolve_after_secs 2); {}; separate «УТОЧНЕНА ПРИЧИНА» messages: {relabels}",
        secs(rec.at - t1),
        rec.json["text"]
            .as_str()
            .unwrap_or("")
            .lines()
            .find(|l| l.starts_with("Причина"))
            .unwrap_or("no cause line")
    );
    // One firing, one recovery. The cause ("the host was up": its boot time precedes the
    // outage, or its backlog replays into it) may be told in a message of its own just before
    // the recovery when the replay reaches the engine before the next evaluation notices that
    // the host is back; the recovery states it again.
    assert!(
        hits.iter().all(|h| h.id() == fired.id()),
        "scenario {label}: {}",
        lines(&hits)
    );
    let firing = hits.iter().filter(|h| h.event() == "firing").count();
    let resolved = hits.iter().filter(|h| h.event() == "resolved").count();
    assert_eq!(
        (firing, resolved),
        (1, 1),
        "scenario {label}: {}",
        lines(&hits)
    );
    assert!(relabels <= 1, "scenario {label}: {}", lines(&hits));
    if fault == ServerFault::Kill9 {
        // kill -9 of the agent, machine and link fine, a new agent on the same boot and nothing
        // spooled from the silence: the agent's own cause, not a channel break, not power.
        assert_eq!(
            rec.json["incident"]["cause"],
            "agent_down",
            "scenario {label}: {}",
            lines(&hits)
        );
        let text = rec.json["text"].as_str().unwrap();
        assert!(
            text.contains(
                "Причина: агент не работал (служба агента остановлена или зависла), компьютер не перезагружался\n"
            ),
            "{text}"
        );
        assert!(!text.contains("канал"), "{text}");
        assert!(
            text.contains("\nПринято в работу: token:") && text.contains(" — «выезжаем»\n"),
            "{text}"
        );
        let listed = r
            .incidents(&format!("?rule=server_lost&mo={}", m.oid))
            .await;
        assert_eq!(listed[0]["cause"], "agent_down", "{listed:?}");
    }
    let online = wait_for(Duration::from_secs(10), || async {
        let h = r.collector.host(host).await?;
        (h["state"] == "online").then_some(())
    })
    .await;
    assert!(online.is_some(), "{host} not back online");
}

/// Scenario 4: workstations of an МО go silent one by one outside its working hours (PCs switched
/// off in the evening; killed, so the broker reports them lost, not shut down) → nothing is sent.
/// Its server stays up.
async fn scenario_4_workstations_after_hours(r: &mut Region) {
    let mo = &MOS[D];
    let pcs: Vec<&str> = mo
        .hosts
        .iter()
        .filter(|(_, role)| *role == "workstation")
        .map(|(h, _)| *h)
        .collect();
    let mark = r.cap.webhook().len();
    let t0 = Instant::now();
    let t0_ms = now_ms();
    for (i, host) in pcs.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        r.kill9(host);
    }
    let last = Instant::now();
    let lost = wait_for(Duration::from_secs(10), || async {
        let l = r
            .hosts_where(|h| h["mo"] == mo.oid && h["state"] == "lost")
            .await;
        (l.len() == pcs.len()).then_some(l)
    })
    .await;
    assert!(
        lost.is_some(),
        "the collector did not see all of МО Г's workstations lost"
    );
    // In working hours this burst (3 of 4 active hosts lost within window_secs: ≥ min_hosts 3
    // and ≥ min_share 0.6) opens "МО unreachable" (compare 4b); here nothing may be sent for
    // as long as that would have taken and more.
    sleep_until(
        last,
        Duration::from_millis(KEEPALIVE_SECS * 1500)
            + Duration::from_secs(UNREACHABLE_FOR)
            + MARGIN,
    )
    .await;
    let hits = r.hooks_since(mark);
    assert!(hits.is_empty(), "scenario 4 paged: {}", lines(&hits));
    let about_pcs: Vec<Value> = r
        .incidents(&format!("?mo={}", mo.oid))
        .await
        .into_iter()
        .filter(|i| {
            // Not even a pending "МО unreachable"; nothing else about them changed since the
            // first loss.
            i["rule"] == "mo_unreachable"
                || (i["notify"] == true
                    && i["updated_ms"].as_i64() >= Some(t0_ms)
                    && i["hosts"]
                        .as_array()
                        .is_some_and(|h| h.iter().any(|h| pcs.iter().any(|p| h == p))))
        })
        .collect();
    assert!(
        about_pcs.is_empty(),
        "incidents for workstations outside working hours: {about_pcs:?}"
    );
    println!(
        "ALERT scenario 4: no notification ({} workstations lost 2 s apart, watched {:.1}s from the first loss)",
        pcs.len(),
        secs(t0.elapsed())
    );
}

/// Scenario 4b: control for 4: the whole of an МО goes silent in its working hours → one
/// `mo_unreachable`, which absorbs its server's `server_lost`.
async fn scenario_4b_whole_mo_in_hours(r: &mut Region) {
    let mo = &MOS[A];
    let mark = r.cap.webhook().len();
    let t0 = Instant::now();
    for &(host, _) in mo.hosts {
        r.kill9(host);
    }
    let limit = Duration::from_millis(KEEPALIVE_SECS * 1500)
        + Duration::from_secs(UNREACHABLE_FOR)
        + MARGIN;
    let fired = r
        .next_hook(mark, limit, "scenario 4b firing", |h| {
            h.is("firing", "mo_unreachable")
        })
        .await;
    println!(
        "ALERT scenario 4b: cause→notification {:.1}s (mo_unreachable for_secs {UNREACHABLE_FOR})",
        secs(fired.at - t0)
    );
    assert_eq!(fired.mo(), mo.oid);
    let text = fired.json["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "АВАРИЯ: МО «{}» недоступна (не на связи хостов: 3)\n",
            mo.name
        )),
        "{text}"
    );
    sleep_until(
        t0,
        Duration::from_secs(SERVER_LOST_FOR.max(UNREACHABLE_FOR) + 3),
    )
    .await;
    let hits = r.hooks_since(mark);
    assert_eq!(hits.len(), 1, "scenario 4b: {}", lines(&hits));
    for i in r.incidents("?rule=server_lost").await {
        if i["hosts"][0] == "srv-a1" {
            assert_eq!(i["state"], "resolved", "{i}");
            assert_eq!(i["merged_into"], fired.id(), "{i}");
            assert!(i["fired_ms"].is_null(), "{i}");
        }
    }
}

/// Scenario 5: one МО's channel flaps: off 7 s, on 4 s, for 44 s. Each cycle is long enough to fire
/// (`for_secs` 4) and to resolve (`resolve_after_secs` 1), so without a limit it would send two
/// messages per cycle; the flap limit bounds it to `flap_max_notifications`.
async fn scenario_5_flapping(r: &Region) {
    let mo = &MOS[C];
    let mark = r.cap.webhook().len();
    let t0 = Instant::now();
    const CYCLES: u32 = 4;
    for c in 0..CYCLES {
        let start = t0 + Duration::from_secs(11 * u64::from(c));
        sleep_until(start, Duration::ZERO).await;
        r.relays[C].set(false);
        sleep_until(start, Duration::from_secs(7)).await;
        r.relays[C].set(true);
    }
    sleep_until(t0, Duration::from_secs(11 * u64::from(CYCLES))).await;
    // Settle: the last recovery (if it were sent) would come within resolve_after + margin.
    tokio::time::sleep(Duration::from_secs(CHANNEL_RESOLVE) + MARGIN).await;
    let hits = r.hooks_since(mark);
    let first = hits
        .first()
        .unwrap_or_else(|| panic!("scenario 5: the flapping channel was never reported"));
    println!(
        "ALERT scenario 5: cause→notification {:.1}s; {} notifications in {:.0}s of flapping: {}",
        secs(first.at - t0),
        hits.len(),
        secs(Duration::from_secs(11 * u64::from(CYCLES))),
        lines(&hits)
    );
    assert!(
        first.at - t0 >= Duration::from_secs(CHANNEL_FOR),
        "fired before for_secs"
    );
    assert!(
        hits.iter()
            .all(|h| h.rule() == "mo_channel" && h.mo() == mo.oid && h.id() == first.id()),
        "scenario 5: {}",
        lines(&hits)
    );
    assert!(
        (2..=FLAP_MAX).contains(&hits.len()),
        "scenario 5: {} notifications (limit {FLAP_MAX}): {}",
        hits.len(),
        lines(&hits)
    );
    assert_eq!(hits[0].event(), "firing");
    assert_eq!(hits[1].event(), "resolved");
    // It did flap: the same incident reopened at every cycle (more episodes than messages).
    let inc = r
        .collector
        .get(&format!("/api/v1/incidents/{}", first.id()))
        .await;
    let reopened = inc["reopened"].as_u64().unwrap_or(0);
    println!(
        "scenario 5: incident #{} reopened {reopened} times, state {}",
        first.id(),
        inc["state"]
    );
    assert!(
        reopened >= u64::from(CYCLES) - 1,
        "the channel flapped {CYCLES} times but the incident reopened {reopened} times: {inc}"
    );
}
