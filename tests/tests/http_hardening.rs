//! The HTTP side under abuse (issue 10): idle and slow-header floods, the connection cap, body
//! and input limits, the one JSON error shape, and `/readyz` against a real broker. Each test
//! starts its own collector (run open, on port 0).

use dozor_tests::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A collector whose HTTP listener has these limits.
fn collector(dir: &std::path::Path, header_timeout_secs: u64, max_connections: usize) -> Collector {
    let cfg = dir.join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\nheader_read_timeout_secs = {header_timeout_secs}\nmax_connections = {max_connections}\n"
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
