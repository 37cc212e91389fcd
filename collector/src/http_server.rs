//! The HTTP(S) accept loop, with the limits `axum::serve` lacks: a header-read timeout that
//! also closes idle keep-alive connections, a cap on open connections, and warnings that are
//! rate-limited and counted on `/metrics` instead of one log line per refused client.
//!
//! Why not `axum::serve`: it gives hyper no timer, so a client that never finishes its request
//! head (or an idle keep-alive connection) is held forever; issue 10 kept 200 idle and 200
//! slow-header connections open past 60 s and 1,100 connections wrote 2.7 GB of log in 25 s.

use crate::tls::PeerAddr;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// Time a client has to send a whole request head, counted from the connection's start or,
    /// on a kept-alive connection, from the end of the previous response: the idle timeout too.
    pub header_read_timeout: Duration,
    /// Connections open at once; beyond it new ones are closed at accept (counted).
    pub max_connections: usize,
    /// Time from a request's head to its response: bounds a client that sends its body slowly
    /// (the header timeout stops once the head is in). Answered 408.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Counters of the listener, shown on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct HttpStats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Connections that ended with an error: header timeout (slow or idle client), bad request
    /// head, reset by the peer.
    errors: AtomicU64,
    /// Unix seconds of the last warning written (warnings at most once per 10 s).
    last_warn_s: AtomicU64,
    warn_suppressed: AtomicU64,
}

impl HttpStats {
    /// Writes the listener's families.
    pub(crate) fn write_metrics(&self, out: &mut String) {
        let mut f = crate::metrics::Families::default();
        f.gauge("dozor_http_connections_open", "HTTP connections open now.")
            .sample(&[], self.open.load(Relaxed));
        f.counter(
            "dozor_http_connections_total",
            "HTTP connections, by outcome at accept: served, or refused over http.max_connections.",
        )
        .sample(&[("outcome", "served")], self.accepted.load(Relaxed))
        .sample(&[("outcome", "refused")], self.refused.load(Relaxed));
        f.counter(
            "dozor_http_connection_errors_total",
            "HTTP connections closed on an error: header-read or idle timeout, malformed request, reset.",
        )
        .sample(&[], self.errors.load(Relaxed));
        f.write(out);
    }

    /// True when a warning may be logged now (one per 10 s); otherwise counts it as suppressed.
    fn may_warn(&self) -> Option<u64> {
        let now = crate::clock::now_ms().max(0) as u64 / 1000;
        let last = self.last_warn_s.load(Relaxed);
        if now >= last + 10
            && self
                .last_warn_s
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.warn_suppressed.swap(0, Relaxed))
        } else {
            self.warn_suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Decrements the open-connections gauge when a connection's task ends.
struct Open(Arc<HttpStats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// The answer to a request that took longer than `http.request_timeout_secs`; the connection
/// is closed after it.
fn timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [(axum::http::header::CONNECTION, "close")],
        axum::Json(serde_json::json!({
            "error": "request_timeout",
            "message": "запрос не получен целиком вовремя",
        })),
    )
        .into_response()
}

/// Serves `app` on `listener` (plain TCP or [`crate::tls::TlsListener`]) until `stop`.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    stop: CancellationToken,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (io, addr) = tokio::select! {
            () = stop.cancelled() => break,
            v = listener.accept() => v,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closing at once keeps the kernel's backlog moving: a client that comes after the
            // flood passes (or the flood times out) gets in.
            drop(io);
            stats.refused.fetch_add(1, Relaxed);
            if let Some(suppressed) = stats.may_warn() {
                tracing::warn!(
                    max = limits.max_connections,
                    suppressed,
                    "HTTP connection refused: too many open connections"
                );
            }
            continue;
        };
        stats.accepted.fetch_add(1, Relaxed);
        stats.open.fetch_add(1, Relaxed);
        let open = Open(stats.clone());
        let app = app.clone();
        let stop = stop.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(PeerAddr(addr)));
                let call = app.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    match tokio::time::timeout(limits.request_timeout, call).await {
                        Ok(r) => r,
                        Err(_) => Ok(timed_out()),
                    }
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                // Counted, never logged above trace: a flood of slow clients must not flood the log.
                stats.errors.fetch_add(1, Relaxed);
                tracing::trace!(error = %e, %addr, "HTTP connection closed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! The listener's timers in paused time (tokio's test clock jumps to the next timer when
    //! every task waits): each limit is checked to the millisecond without being waited for.
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    async fn start(limits: HttpLimits) -> (SocketAddr, Arc<HttpStats>, CancellationToken) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Echoes the body (a fallback: the route table in docs/api.md is for real routes).
        let app = Router::new().fallback(|body: String| async move { body });
        let (stats, stop) = (Arc::new(HttpStats::default()), CancellationToken::new());
        tokio::spawn(serve(l, app, limits, stats.clone(), stop.clone()));
        (addr, stats, stop)
    }

    const LIMITS: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_secs(10),
        max_connections: 8,
        request_timeout: Duration::from_secs(120),
    };

    /// Reads until the server closes; returns what it sent.
    async fn until_closed(tcp: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_slow_header_connections_close_at_the_header_read_timeout() {
        let (addr, stats, stop) = start(LIMITS).await;
        for head in ["", "POST / HTTP/1.1\r\nHost: x\r\n"] {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(head.as_bytes()).await.unwrap();
            let t0 = Instant::now();
            until_closed(&mut tcp).await;
            let took = t0.elapsed();
            assert!(
                took >= LIMITS.header_read_timeout
                    && took < LIMITS.header_read_timeout + Duration::from_millis(100),
                "{head:?}: closed after {took:?} of test time"
            );
        }
        assert_eq!(stats.errors.load(Relaxed), 2);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slowly_sent_body_is_answered_408_at_the_request_timeout() {
        let (addr, stats, stop) = start(LIMITS).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
            .await
            .unwrap();
        let t0 = Instant::now();
        let answer = until_closed(&mut tcp).await;
        let took = t0.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
        assert!(
            took >= LIMITS.request_timeout
                && took < LIMITS.request_timeout + Duration::from_millis(100),
            "answered after {took:?} of test time"
        );
        assert_eq!(stats.accepted.load(Relaxed), 1);
        stop.cancel();
    }
}
