//! Channel tests against real servers the tests start themselves: an HTTP server of their own
//! (webhook, Telegram), aiosmtpd (e-mail) and Prometheus Alertmanager.

use super::*;
use crate::alerts::config::{
    RawAlertmanager, RawAlerts, RawChannel, RawChannelKind, RawEmail, RawTelegram, RawWebhook,
};
use crate::alerts::model::{Cause, IncidentState, MoRef, Rule, Severity};
use crate::alerts::text;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

fn incident(state: IncidentState) -> Incident {
    let mut inc = Incident {
        id: 42,
        key: "mo_channel/1.2.643.5.1.13.13.12.2.27.1001/mis-main".into(),
        rule: Rule::MoChannel,
        severity: Severity::Critical,
        state,
        cause: Cause::Channel,
        title: String::new(),
        mos: vec![MoRef {
            oid: "1.2.643.5.1.13.13.12.2.27.1001".into(),
            name: "Городская поликлиника № 1".into(),
        }],
        mo_count: 1,
        hosts: vec!["pc-01".into(), "pc-02".into()],
        host_count: 2,
        host_refs: Vec::new(),
        target: Some("mis-main".into()),
        category: Some(dozor_proto::Category::Mis),
        value: Some(1.0),
        started_ms: 1_704_787_200_000,
        episode_started_ms: 1_704_787_200_000,
        fired_ms: Some(1_704_787_380_000),
        resolved_ms: None,
        updated_ms: 1_704_787_380_000,
        reopened: 0,
        repeat: 0,
        silenced_by: None,
        planned_over: None,
        merged_into: None,
        merged: Vec::new(),
        evidence: None,
        notify: true,
        ack: None,
    };
    if state == IncidentState::Resolved {
        inc.resolved_ms = Some(1_704_791_520_000);
    }
    inc.title = text::title(&inc);
    inc
}

fn notification(kind: ChangeKind) -> Arc<Notification> {
    let state = if kind == ChangeKind::Resolved {
        IncidentState::Resolved
    } else {
        IncidentState::Firing
    };
    let c = Change {
        kind,
        at_ms: chrono::Utc::now().timestamp_millis(),
        notify: true,
        incident: incident(state),
    };
    Arc::new(Notification::new(
        &c,
        text::render(&c, chrono_tz::Europe::Moscow, None),
        None,
    ))
}

fn channels(raw: Vec<RawChannel>) -> Vec<ChannelConfig> {
    crate::alerts::config::validate(RawAlerts {
        channel: raw,
        ..RawAlerts::default()
    })
    .unwrap()
    .channels
}

fn quick(kind: RawChannelKind) -> RawChannel {
    RawChannel {
        kind,
        retry_initial_ms: 20,
        retry_max_ms: 100,
        timeout_secs: 2,
        ..RawChannel::default()
    }
}

fn webhook(url: String) -> RawChannelKind {
    RawChannelKind::Webhook(RawWebhook {
        url: Some(url),
        ..RawWebhook::default()
    })
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request the capture server received.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    headers: HeaderMap,
    json: serde_json::Value,
}

/// An HTTP server of the test's own that records requests and answers with the next queued
/// status (200 when none is queued).
#[derive(Clone, Default)]
struct Capture {
    reqs: Arc<Mutex<Vec<Req>>>,
    statuses: Arc<Mutex<VecDeque<StatusCode>>>,
}

impl Capture {
    async fn start() -> (Capture, String, CancellationToken) {
        let cap = Capture::default();
        let c = cap.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let c = c.clone();
            async move {
                let status = c
                    .statuses
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(StatusCode::OK);
                c.reqs.lock().unwrap().push(Req {
                    path: uri.path().to_string(),
                    headers,
                    json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
                (status, "{\"ok\":true}")
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
                .unwrap();
        });
        (cap, url, stop)
    }

    fn reqs(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

fn start(cfgs: &[ChannelConfig]) -> (Notifier, TaskTracker, CancellationToken) {
    let mut n = Notifier::new(cfgs, crate::clock::system_clock()).unwrap();
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    n.spawn(&tracker, cancel.clone());
    (n, tracker, cancel)
}

fn count(s: &ChannelStats) -> (u64, u64, u64, u64) {
    (
        s.sent.load(Ordering::Relaxed),
        s.failed.load(Ordering::Relaxed),
        s.dropped.load(Ordering::Relaxed),
        s.retries.load(Ordering::Relaxed),
    )
}

#[tokio::test]
async fn webhook_posts_incident_json_with_russian_text() {
    let (cap, url, _stop) = Capture::start().await;
    let raw = quick(RawChannelKind::Webhook(RawWebhook {
        url: Some(format!("{url}/hooks/dozor")),
        headers: [("Authorization".to_string(), "Bearer t0ken".to_string())].into(),
        ..RawWebhook::default()
    }));
    let (n, _t, cancel) = start(&channels(vec![raw]));
    n.dispatch(notification(ChangeKind::Firing));
    let reqs = eventually("webhook", 10, || Some(cap.reqs()).filter(|r| !r.is_empty())).await;
    let r = &reqs[0];
    assert_eq!(r.path, "/hooks/dozor");
    assert_eq!(r.headers["authorization"], "Bearer t0ken");
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["event"], "firing");
    assert_eq!(r.json["incident"]["id"], 42);
    assert_eq!(r.json["incident"]["rule"], "mo_channel");
    assert_eq!(r.json["incident"]["state"], "firing");
    assert_eq!(
        r.json["incident"]["mos"][0]["oid"],
        "1.2.643.5.1.13.13.12.2.27.1001"
    );
    let text = r.json["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "АВАРИЯ: МО «Городская поликлиника № 1» потеряла связь с МИС (mis-main)\n"
        ),
        "{text}"
    );
    assert!(text.contains("Инцидент №42"), "{text}");
    assert_eq!(count(&n.stats()[0]), (1, 0, 0, 0));
    cancel.cancel();
}

#[tokio::test]
async fn webhook_retries_with_backoff_then_succeeds() {
    let (cap, url, _stop) = Capture::start().await;
    cap.statuses.lock().unwrap().extend([
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ]);
    let mut raw = quick(webhook(url.clone()));
    raw.name = Some("miac-hook".into());
    let (n, _t, cancel) = start(&channels(vec![raw]));
    n.dispatch(notification(ChangeKind::Resolved));
    let stats = n.stats();
    eventually("delivery", 10, || {
        (stats[0].sent.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    assert_eq!(count(&stats[0]), (1, 0, 0, 2));
    assert_eq!(cap.reqs().len(), 3);
    assert_eq!(cap.reqs()[2].json["event"], "resolved");
    assert!(
        cap.reqs()[2].json["text"]
            .as_str()
            .unwrap()
            .contains("Длительность: 1 ч 12 мин")
    );
    // A 4xx is not retried.
    cap.statuses
        .lock()
        .unwrap()
        .push_back(StatusCode::BAD_REQUEST);
    n.dispatch(notification(ChangeKind::Firing));
    eventually("failure", 10, || {
        (stats[0].failed.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    assert_eq!(count(&stats[0]), (1, 1, 0, 2));
    let mut m = String::new();
    write_metrics(&stats, &mut m);
    assert!(m.contains("dozor_alert_notifications_total{channel=\"miac-hook\",type=\"webhook\",result=\"sent\"} 1\n"), "{m}");
    assert!(m.contains("dozor_alert_notifications_total{channel=\"miac-hook\",type=\"webhook\",result=\"failed\"} 1\n"), "{m}");
    assert!(
        m.contains(
            "dozor_alert_notification_retries_total{channel=\"miac-hook\",type=\"webhook\"} 2\n"
        ),
        "{m}"
    );
    cancel.cancel();
}

/// The retry schedule, in paused time (tokio's test clock jumps to the next timer whenever every
/// task waits): a channel whose server refuses every connection retries `max_retries` times,
/// waiting 1, 2, 3, 3 s (doubling, capped at `retry_max_ms`), then gives up: 9 s of test time,
/// none of it waited for.
#[tokio::test(start_paused = true)]
async fn retries_follow_the_backoff_schedule_in_paused_time() {
    let port = free_port(); // nothing listens there: every attempt is refused at once
    let mut raw = quick(webhook(format!("http://127.0.0.1:{port}/hook")));
    raw.max_retries = 4;
    raw.retry_initial_ms = 1_000;
    raw.retry_max_ms = 3_000;
    let (n, _t, cancel) = start(&channels(vec![raw]));
    let t0 = tokio::time::Instant::now();
    let real = Instant::now();
    n.dispatch(notification(ChangeKind::Firing));
    let stats = n.stats();
    eventually("given up", 10, || {
        (stats[0].failed.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(count(&stats[0]), (0, 1, 0, 4));
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_millis(9_500),
        "gave up after {took:?} of test time"
    );
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "the backoff was slept for real"
    );
    cancel.cancel();
}

#[tokio::test]
async fn a_stuck_channel_drops_its_oldest_and_never_delays_the_others() {
    // A server that accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = format!("http://{}", black_hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            held.push(s);
        }
    });
    let (cap, url, _stop) = Capture::start().await;
    let mut stuck = quick(webhook(hole));
    stuck.name = Some("stuck".into());
    stuck.queue_len = 2;
    stuck.timeout_secs = 30;
    let mut good = quick(webhook(url));
    good.name = Some("good".into());
    let (n, _t, cancel) = start(&channels(vec![stuck, good]));
    let t0 = Instant::now();
    for _ in 0..5 {
        n.dispatch(notification(ChangeKind::Firing));
    }
    // The stuck channel's request waits 30 s for an answer: a dispatch that waited for it
    // would take that long. 2 s leaves room for a loaded machine's scheduling.
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "dispatch never blocks"
    );
    eventually("good channel", 5, || (cap.reqs().len() == 5).then_some(())).await;
    let stats = n.stats();
    let (sent, failed, dropped, _) = count(&stats[0]);
    assert_eq!((sent, failed), (0, 0));
    assert!((2..=3).contains(&dropped), "dropped {dropped}");
    assert_eq!(count(&stats[1]).0, 5);
    cancel.cancel();
}

#[tokio::test]
async fn telegram_sends_to_the_bot_api() {
    let (cap, url, _stop) = Capture::start().await;
    let raw = quick(RawChannelKind::Telegram(RawTelegram {
        api_base: url,
        bot_token: Some("123456:ABC-def".into()),
        chat_id: Some("-1001234".into()),
        ..RawTelegram::default()
    }));
    let (n, _t, cancel) = start(&channels(vec![raw]));
    n.dispatch(notification(ChangeKind::Firing));
    let reqs = eventually("telegram", 10, || {
        Some(cap.reqs()).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(reqs[0].path, "/bot123456:ABC-def/sendMessage");
    assert_eq!(reqs[0].json["chat_id"], "-1001234");
    let text = reqs[0].json["text"].as_str().unwrap();
    assert!(text.contains("потеряла связь с МИС (mis-main)"), "{text}");
    assert!(text.contains("Хосты (2): pc-01, pc-02"), "{text}");
    cancel.cancel();
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SMTP_HANDLER: &str = r#"
import email, email.policy, json, os, uuid

class Capture:
    def __init__(self, outdir):
        self.outdir = outdir

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",)).get_content()
        rec = {"from": envelope.mail_from, "to": envelope.rcpt_tos,
               "subject": str(msg["subject"]), "body": body}
        tmp = os.path.join(self.outdir, "." + uuid.uuid4().hex)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rec, f, ensure_ascii=False)
        os.rename(tmp, os.path.join(self.outdir, uuid.uuid4().hex + ".json"))
        return "250 OK"
"#;

fn python() -> &'static str {
    // Debian's interpreter has python3-aiosmtpd; a pyenv shim on PATH may not.
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn wait_port(port: u16, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "server on port {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn email_arrives_at_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    std::fs::write(dir.path().join("dozor_capture.py"), SMTP_HANDLER).unwrap();
    let port = free_port();
    let _smtp = Proc(
        Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "dozor_capture.Capture"])
            .arg(&mail)
            .env("PYTHONPATH", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (Debian python3-aiosmtpd)"),
    );
    wait_port(port, 20);
    let mut raw = quick(RawChannelKind::Email(RawEmail {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        tls: "none".into(),
        from: Some("dozor <dozor@miac.local>".into()),
        to: vec!["it@miac.local".into(), "duty@miac.local".into()],
        ..RawEmail::default()
    }));
    raw.timeout_secs = 10;
    let (n, _t, cancel) = start(&channels(vec![raw]));
    n.dispatch(notification(ChangeKind::Resolved));
    let files: Vec<PathBuf> = eventually("mail", 20, || {
        let f: Vec<PathBuf> = std::fs::read_dir(&mail)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        (!f.is_empty()).then_some(f)
    })
    .await;
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(rec["from"], "dozor@miac.local");
    assert_eq!(
        rec["to"],
        serde_json::json!(["it@miac.local", "duty@miac.local"])
    );
    assert_eq!(
        rec["subject"],
        "[dozor] ВОССТАНОВЛЕНО: МО «Городская поликлиника № 1» потеряла связь с МИС (mis-main)"
    );
    let body = rec["body"].as_str().unwrap();
    assert!(
        body.contains(
            "Длительность: 1 ч 12 мин (с 09.01.2024 11:00:00 MSK по 09.01.2024 12:12:00 MSK)"
        ),
        "{body}"
    );
    // The server stores the message before it answers: the count follows shortly.
    let stats = n.stats();
    eventually("sent count", 10, || {
        (stats[0].sent.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    assert_eq!(count(&stats[0]), (1, 0, 0, 0));
    cancel.cancel();
}

#[tokio::test]
async fn alertmanager_receives_labels_resends_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("am.yml"),
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = free_port();
    let _am = Proc(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package)"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < end, "alertmanager did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw = quick(RawChannelKind::Alertmanager(RawAlertmanager {
        url: Some(base.clone()),
        resend_secs: 1,
    }));
    let (n, _t, cancel) = start(&channels(vec![raw]));
    let active = || async {
        let v: serde_json::Value = client
            .get(format!(
                "{base}/api/v2/alerts?active=true&silenced=false&inhibited=false"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["incident_id"] == "42")
            .cloned()
            .collect::<Vec<_>>()
    };
    n.dispatch(notification(ChangeKind::Firing));
    let end = Instant::now() + Duration::from_secs(10);
    let alert = loop {
        if let Some(a) = active().await.into_iter().next() {
            break a;
        }
        assert!(Instant::now() < end, "alert did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let l = &alert["labels"];
    assert_eq!(l["alertname"], "mo_channel");
    assert_eq!(l["mo"], "1.2.643.5.1.13.13.12.2.27.1001");
    assert_eq!(l["target"], "mis-main");
    assert_eq!(l["severity"], "critical");
    assert_eq!(l["category"], "mis");
    assert!(l.get("host").is_none(), "two hosts: no host label");
    assert_eq!(
        alert["annotations"]["summary"],
        "МО «Городская поликлиника № 1» потеряла связь с МИС (mis-main)"
    );
    // Firing alerts expire 4 resends ahead unless resent: still active well after that.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(active().await.len(), 1, "kept alive by resends");
    n.dispatch(notification(ChangeKind::Resolved));
    let end = Instant::now() + Duration::from_secs(10);
    while !active().await.is_empty() {
        assert!(Instant::now() < end, "alert not resolved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&n.stats()[0]).0, 2);
    cancel.cancel();
}

/// Regression (issue 10): webhook and Alertmanager errors logged the full URL with its token.
/// A failed request's error names only the scheme and host.
#[tokio::test]
async fn request_errors_never_carry_the_url_secrets() {
    let port = free_port();
    for url in [
        format!("http://user:pw-SECRET@127.0.0.1:{port}/hooks/SECRET?token=SECRET"),
        format!("http://127.0.0.1:{port}/botSECRET:AAE/sendMessage"),
        format!("http://127.0.0.1:{port}/api/v2/alerts#SECRET"),
    ] {
        let e = reqwest::Client::new().post(&url).send().await.unwrap_err();
        let SendError::Transient(msg) = super::transient(&url, e) else {
            panic!("not transient");
        };
        assert!(!msg.contains("SECRET"), "{msg}");
        assert!(!msg.contains("pw"), "{msg}");
        assert!(
            msg.starts_with(&format!("http://127.0.0.1:{port}/…: ")),
            "{msg}"
        );
    }
    assert_eq!(super::redact_url("not a url"), "<неверный URL>");
}
