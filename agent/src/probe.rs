//! Reachability probes of the МИС and the region's subsystems as seen from this host: HTTP(S),
//! TCP connect and DNS, all targets in parallel each round, each with its own timeout.

use std::error::Error as StdError;
use std::io;
use std::path::Path;
use std::time::Duration;

use dozor_proto::{Category, ErrorClass, Probe, ProbeResult, TargetInfo};
use reqwest::Url;
use tokio::net::{TcpStream, lookup_host};
use tokio::time::{Instant, timeout};

/// A configured probe target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub category: Category,
    pub kind: TargetKind,
    pub timeout: Duration,
}

/// What is probed and how.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    /// GET the URL; ok if the status is 2xx or 3xx (redirects are not followed).
    Http(Url),
    /// Open a TCP connection.
    Tcp { host: String, port: u16 },
    /// Resolve the name through the OS resolver.
    Dns { name: String },
}

/// Why the prober could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The CA file for HTTPS probes could not be read.
    #[error("probe_ca_file: cannot read {path}: {source}")]
    CaFile { path: String, source: io::Error },
    /// The CA file holds no usable PEM certificate.
    #[error("probe_ca_file: {path}: {source}")]
    CaPem {
        path: String,
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (TLS backend initialization).
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Runs probe rounds over a fixed set of targets.
pub struct Prober {
    client: reqwest::Client,
    targets: Vec<Target>,
}

/// Extra time the outer guard gives a probe beyond its own timeout before declaring a timeout.
const GUARD: Duration = Duration::from_millis(250);

impl Prober {
    pub fn new(targets: Vec<Target>, ca_file: Option<&Path>) -> Result<Prober, ProbeError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection every round: the probe measures reachability, not a pooled socket.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .user_agent(concat!("dozor-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| ProbeError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                ProbeError::CaPem {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            b = b.tls_certs_merge(certs);
        }
        let client = b.build().map_err(ProbeError::Client)?;
        Ok(Prober { client, targets })
    }

    /// The targets as announced in `birth`.
    pub fn target_infos(&self) -> Vec<TargetInfo> {
        self.targets
            .iter()
            .map(|t| TargetInfo {
                name: t.name.clone(),
                category: t.category,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Replaces the targets (a new central configuration); the next round probes these.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        self.targets = targets;
    }

    /// Probes every target in parallel; returns when the slowest has answered or timed out.
    pub async fn round(&self) -> Probe {
        let results =
            futures::future::join_all(self.targets.iter().map(|t| probe_one(&self.client, t)))
                .await;
        Probe { results }
    }
}

/// Probes one target; never fails, failures are results.
pub async fn probe_one(client: &reqwest::Client, t: &Target) -> ProbeResult {
    let start = Instant::now();
    let outcome = match timeout(t.timeout + GUARD, attempt(client, t)).await {
        Ok(o) => o,
        Err(_) => Outcome::fail(ErrorClass::Timeout),
    };
    let elapsed = start.elapsed().as_millis();
    let latency_ms = u32::try_from(elapsed).unwrap_or(u32::MAX).min(3_600_000);
    ProbeResult {
        target: t.name.clone(),
        category: t.category,
        ok: outcome.error.is_none(),
        latency_ms: Some(latency_ms),
        error: outcome.error,
        status: outcome.status,
    }
}

struct Outcome {
    error: Option<ErrorClass>,
    status: Option<u16>,
}

impl Outcome {
    fn ok() -> Outcome {
        Outcome {
            error: None,
            status: None,
        }
    }
    fn fail(class: ErrorClass) -> Outcome {
        Outcome {
            error: Some(class),
            status: None,
        }
    }
}

async fn attempt(client: &reqwest::Client, t: &Target) -> Outcome {
    match &t.kind {
        TargetKind::Http(url) => match client.get(url.clone()).timeout(t.timeout).send().await {
            Ok(resp) => {
                let status = resp.status();
                let ok = status.is_success() || status.is_redirection();
                Outcome {
                    error: (!ok).then_some(ErrorClass::HttpStatus),
                    status: Some(status.as_u16()),
                }
            }
            Err(e) => Outcome::fail(classify_http(&e)),
        },
        TargetKind::Tcp { host, port } => {
            match timeout(t.timeout, tcp_connect(host, *port)).await {
                Ok(Ok(())) => Outcome::ok(),
                Ok(Err(class)) => Outcome::fail(class),
                Err(_) => Outcome::fail(ErrorClass::Timeout),
            }
        }
        TargetKind::Dns { name } => match timeout(t.timeout, lookup_host((name.as_str(), 0))).await
        {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(_) => Outcome::ok(),
                None => Outcome::fail(ErrorClass::Dns),
            },
            Ok(Err(_)) => Outcome::fail(ErrorClass::Dns),
            Err(_) => Outcome::fail(ErrorClass::Timeout),
        },
    }
}

async fn tcp_connect(host: &str, port: u16) -> Result<(), ErrorClass> {
    let addrs = lookup_host((host, port))
        .await
        .map_err(|_| ErrorClass::Dns)?;
    let mut last = ErrorClass::Dns;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => last = ErrorClass::Timeout,
            Err(_) => last = ErrorClass::Connect,
        }
    }
    Err(last)
}

/// Classifies a failed HTTP request by walking its error source chain. `io::Error` hides the
/// error it wraps from `source()`, so the walk looks inside it with `get_ref()`.
///
/// Order matters: a TLS failure happens inside the connect step, and a connection reset after
/// the connection was made is `other` (the service is reachable but misbehaves), not `connect`.
/// An `https` peer that accepts TCP and then hangs up during the handshake (no TLS alert) is
/// `tls` too: the port is open, TLS is what failed.
pub fn classify_http(err: &reqwest::Error) -> ErrorClass {
    use io::ErrorKind as K;
    if err.is_timeout() {
        return ErrorClass::Timeout;
    }
    if err.is_dns() {
        return ErrorClass::Dns;
    }
    let mut io_kind = None;
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return ErrorClass::Tls;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            // The innermost definite kind is the cause (outer layers wrap it as `Other`).
            if io.kind() != K::Other {
                io_kind = Some(io.kind());
            }
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    if !err.is_connect() {
        return ErrorClass::Other;
    }
    let https = err.url().is_some_and(|u| u.scheme() == "https");
    match io_kind {
        Some(K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe)
            if https =>
        {
            ErrorClass::Tls
        }
        _ => ErrorClass::Connect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A tiny HTTP/1.1 responder: answers every request with `status` and closes.
    async fn http_server(status: u16) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        port
    }

    /// Accepts connections and never says a word.
    async fn silent_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        port
    }

    /// Answers anything with a line of plain text, as a non-TLS service would.
    async fn garbage_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut chunk = [0u8; 1024];
                    let _ = s.read(&mut chunk).await;
                    let _ = s.write_all(b"220 hello, this is not TLS\r\n").await;
                    let _ = s.shutdown().await;
                });
            }
        });
        port
    }

    /// Reads the request, then closes the connection without a word.
    async fn hangup_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut chunk = [0u8; 1024];
                let _ = s.read(&mut chunk).await;
                drop(s);
            }
        });
        port
    }

    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        port
    }

    fn target(url: &str, timeout_ms: u64) -> Target {
        let raw = crate::config::RawProbe {
            name: "t".into(),
            category: None,
            url: url.into(),
            timeout_ms: None,
        };
        let mut cfg = crate::config::RawConfig {
            mo: Some("1.2".into()),
            host_id: Some("h".into()),
            probe: vec![raw],
            ..Default::default()
        };
        cfg.mqtt.url = Some("mqtt://127.0.0.1".into());
        cfg.probe_timeout_ms = u32::try_from(timeout_ms).expect("small");
        let mut c = cfg.validate().expect("valid target");
        c.probes.remove(0)
    }

    async fn check(
        url: &str,
        timeout_ms: u64,
        ok: bool,
        error: Option<ErrorClass>,
        status: Option<u16>,
    ) {
        let prober = Prober::new(vec![], None).expect("client");
        let r = probe_one(&prober.client, &target(url, timeout_ms)).await;
        assert_eq!(
            (r.ok, r.error, r.status),
            (ok, error, status),
            "{url}: {r:?}"
        );
        assert!(r.latency_ms.is_some());
    }

    #[tokio::test]
    async fn http_ok_and_redirect() {
        let p = http_server(200).await;
        check(
            &format!("http://127.0.0.1:{p}/health"),
            2000,
            true,
            None,
            Some(200),
        )
        .await;
        let p = http_server(302).await;
        check(
            &format!("http://127.0.0.1:{p}/"),
            2000,
            true,
            None,
            Some(302),
        )
        .await;
    }

    #[tokio::test]
    async fn http_500_is_http_status() {
        let p = http_server(500).await;
        check(
            &format!("http://127.0.0.1:{p}/"),
            2000,
            false,
            Some(ErrorClass::HttpStatus),
            Some(500),
        )
        .await;
    }

    #[tokio::test]
    async fn closed_port_is_connect() {
        let p = closed_port().await;
        check(
            &format!("http://127.0.0.1:{p}/"),
            2000,
            false,
            Some(ErrorClass::Connect),
            None,
        )
        .await;
        check(
            &format!("tcp://127.0.0.1:{p}"),
            2000,
            false,
            Some(ErrorClass::Connect),
            None,
        )
        .await;
    }

    #[tokio::test]
    async fn silent_server_is_timeout() {
        let p = silent_server().await;
        let start = Instant::now();
        check(
            &format!("http://127.0.0.1:{p}/"),
            300,
            false,
            Some(ErrorClass::Timeout),
            None,
        )
        .await;
        check(
            &format!("https://127.0.0.1:{p}/"),
            300,
            false,
            Some(ErrorClass::Timeout),
            None,
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn unresolvable_is_dns() {
        check(
            "http://nonexistent.invalid/",
            5000,
            false,
            Some(ErrorClass::Dns),
            None,
        )
        .await;
        check(
            "tcp://nonexistent.invalid:443",
            5000,
            false,
            Some(ErrorClass::Dns),
            None,
        )
        .await;
        check(
            "dns://nonexistent.invalid",
            5000,
            false,
            Some(ErrorClass::Dns),
            None,
        )
        .await;
        check("dns://localhost", 5000, true, None, None).await;
    }

    #[tokio::test]
    async fn https_to_plain_tcp_is_tls() {
        let p = garbage_server().await;
        check(
            &format!("https://127.0.0.1:{p}/"),
            2000,
            false,
            Some(ErrorClass::Tls),
            None,
        )
        .await;
    }

    #[tokio::test]
    async fn reachable_but_hanging_up_is_other_or_tls() {
        let p = hangup_server().await;
        check(
            &format!("http://127.0.0.1:{p}/"),
            2000,
            false,
            Some(ErrorClass::Other),
            None,
        )
        .await;
        // Over https the hang-up happens in the handshake.
        check(
            &format!("https://127.0.0.1:{p}/"),
            2000,
            false,
            Some(ErrorClass::Tls),
            None,
        )
        .await;
    }

    #[tokio::test]
    async fn tcp_ok() {
        let p = silent_server().await;
        check(&format!("tcp://127.0.0.1:{p}"), 2000, true, None, None).await;
    }

    #[tokio::test]
    async fn round_runs_targets_in_parallel() {
        let slow = silent_server().await;
        let fast = http_server(204).await;
        let mut targets: Vec<Target> = (0..4)
            .map(|_| target(&format!("http://127.0.0.1:{slow}/"), 500))
            .collect();
        targets.push(target(&format!("http://127.0.0.1:{fast}/"), 500));
        let prober = Prober::new(targets, None).expect("client");
        let start = Instant::now();
        let round = prober.round().await;
        assert_eq!(round.results.len(), 5);
        assert!(round.results[4].ok);
        assert!(
            round.results[..4]
                .iter()
                .all(|r| r.error == Some(ErrorClass::Timeout))
        );
        // Sequential would take at least 2 s.
        assert!(
            start.elapsed() < Duration::from_millis(1800),
            "{:?}",
            start.elapsed()
        );
    }
}
