//! An MQTT 3.1.1 gateway in front of the embedded broker (rumqttd, which has no topic ACLs and
//! no hooks): it authenticates each CONNECT through an [`Authorizer`], enforces the identity's
//! topic [`Grant`] on every client packet and bounds connections, pending handshakes and packet
//! sizes, then forwards allowed traffic to the broker over one connection per client: a TCP
//! connection ([`Upstream::Tcp`]), or an in-memory pipe to a broker in the same process
//! ([`Upstream::InProcess`]: no socket, so one descriptor per client instead of three).
//! Broker→client bytes pass through untouched.

mod backlog;
mod conn;
mod grant;
mod rules;
mod stats;
mod upstream;

pub use backlog::{Backlog, Busy, Drained, ReplayWindow};
pub use grant::{Authorizer, Grant, Refusal};
pub use stats::{GateStats, Reason};
pub use upstream::{HandOver, InProcess, Upstream};

use conn::Shared;
use stats::Slot;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the gate listens, where it forwards, and its limits.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// The broker (rumqttd) to forward to: on TCP, normally loopback, or in this process.
    pub upstream: Upstream,
    /// TLS for clients; `None` for plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections open at once, authenticated and pending; more are closed on accept.
    pub max_connections: usize,
    /// Connections that have not completed CONNECT; more are closed on accept.
    pub max_pending: usize,
    /// The TLS handshake and the CONNECT must both arrive within this time of accept.
    pub connect_timeout: Duration,
    /// Largest client→broker packet, counted as its remaining length (variable header and
    /// payload). A larger one closes the connection before its body is read.
    pub max_packet_size: usize,
    /// Backpressure: while this window is full, connections stop reading their clients (see
    /// [`Backlog`]). `None`: forward as fast as clients send.
    pub backlog: Option<Arc<Backlog>>,
    /// A window of its own for publishes on replay topics (re-sent backlog), so that a replay
    /// the subscriber drains slowly never holds back live publishes (see [`ReplayWindow`]).
    /// `None`: replays count against `backlog` like any publish.
    pub replay: Option<ReplayWindow>,
}

impl GateConfig {
    /// A plain-TCP gate from `listen` to `upstream` (an address, or [`Upstream::InProcess`])
    /// with the default limits: 20 000 connections, 512 pending, 5 s to CONNECT, 64 KiB packets.
    pub fn new(listen: SocketAddr, upstream: impl Into<Upstream>) -> GateConfig {
        GateConfig {
            listen,
            upstream: upstream.into(),
            tls: None,
            max_connections: 20_000,
            max_pending: 512,
            connect_timeout: Duration::from_secs(5),
            max_packet_size: 64 * 1024,
            backlog: None,
            replay: None,
        }
    }

    fn validate(&self) -> Result<(), GateError> {
        let bad = |field: &'static str, why: &'static str| Err(GateError::Config { field, why });
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.max_pending == 0 {
            return bad("max_pending", "must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be more than zero");
        }
        // The smallest useful CONNECT is 12 remaining bytes; a few hundred leaves room for
        // credentials and a will.
        if self.max_packet_size < 256 {
            return bad("max_packet_size", "must be at least 256 bytes");
        }
        if let Upstream::InProcess(p) = &self.upstream
            && p.buffer < upstream::MIN_PIPE_BUFFER
        {
            return bad("upstream.buffer", "must be at least 1024 bytes");
        }
        Ok(())
    }
}

/// Errors starting the gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A configuration value is out of range.
    #[error("MQTT gate: {field} {why}")]
    Config {
        /// The offending `GateConfig` field.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The listen address cannot be bound.
    #[error("MQTT gate cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
}

/// A running gate: its counters, revocation, and the wait for it to stop.
#[derive(Debug, Clone)]
pub struct GateHandle {
    stats: Arc<GateStats>,
    generation: Arc<watch::Sender<u64>>,
    tracker: TaskTracker,
}

impl GateHandle {
    /// The gate's counters and gauges.
    pub fn stats(&self) -> Arc<GateStats> {
        self.stats.clone()
    }

    /// Makes every live connection ask `Authorizer::still_valid` again; those no longer valid
    /// are closed (counted as `revoked`). Returns at once; the checks run on the connections'
    /// tasks.
    pub fn recheck(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Waits until the gate has stopped (after its cancellation token fired) and every
    /// connection is closed.
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

/// Binds `cfg.listen` and serves until `cancel` fires; then stops accepting and closes every
/// connection. Returns the bound address (useful with port 0) and the handle.
pub async fn start(
    cfg: GateConfig,
    auth: Arc<dyn Authorizer>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, GateHandle), GateError> {
    cfg.validate()?;
    let bind_error = |source| GateError::Bind {
        addr: cfg.listen,
        source,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;

    let stats = Arc::new(GateStats::default());
    let (generation, generation_rx) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        upstream: cfg.upstream.clone(),
        tls: cfg.tls.clone().map(TlsAcceptor::from),
        connect_timeout: cfg.connect_timeout,
        max_packet_size: cfg.max_packet_size,
        backlog: cfg.backlog.clone(),
        replay: cfg.replay.clone(),
        auth,
        stats: stats.clone(),
        generation: generation_rx,
    });
    let tracker = TaskTracker::new();
    if let Some(backlog) = &cfg.backlog {
        tracker.spawn(backlog.clone().run(cancel.child_token()));
    }
    if let Some(replay) = &cfg.replay {
        tracker.spawn(replay.backlog.clone().run(cancel.child_token()));
    }
    tracker.spawn(accept_loop(listener, cfg, shared, tracker.clone(), cancel));
    tracker.close();
    Ok((
        bound,
        GateHandle {
            stats,
            generation: Arc::new(generation),
            tracker,
        },
    ))
}

/// Accepts until cancelled. Over a limit, a connection is accepted and closed at once, so the
/// listen backlog never fills and descriptors stay bounded by the limits.
async fn accept_loop(
    listener: TcpListener,
    cfg: GateConfig,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let stats = &shared.stats;
    let mut last_accept_warning: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning, warn once in 10 s.
                let now = tokio::time::Instant::now();
                if last_accept_warning.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                    last_accept_warning = Some(now);
                    tracing::warn!(error = %e, "MQTT gate: accept failed");
                } else {
                    tracing::debug!(error = %e, "MQTT gate: accept failed");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // Only this task increments the gauges, so reading then adding does not race past a limit.
        if stats.connections_open() >= cfg.max_connections as u64 {
            drop(tcp);
            stats.record(Reason::OverCapacity);
            continue;
        }
        if stats.connections_pending() >= cfg.max_pending as u64 {
            drop(tcp);
            stats.record(Reason::OverPending);
            continue;
        }
        let slot = Slot::new(stats.clone());
        tracker.spawn(conn::serve(tcp, shared.clone(), slot, cancel.child_token()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(adjust: impl FnOnce(&mut GateConfig), field: Option<&str>) {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1883));
        let mut cfg = GateConfig::new(addr, addr);
        adjust(&mut cfg);
        match (cfg.validate(), field) {
            (Ok(()), None) => {}
            (Err(GateError::Config { field: got, .. }), Some(want)) => assert_eq!(got, want),
            (other, want) => panic!("{other:?}, wanted an error on {want:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        check(|_| {}, None);
        check(|c| c.max_connections = 0, Some("max_connections"));
        check(|c| c.max_pending = 0, Some("max_pending"));
        check(
            |c| c.connect_timeout = Duration::ZERO,
            Some("connect_timeout"),
        );
        check(|c| c.max_packet_size = 100, Some("max_packet_size"));
        let in_process = |buffer| {
            Upstream::InProcess(InProcess {
                buffer,
                hand_over: std::sync::Arc::new(|_| Ok(())),
            })
        };
        check(|c| c.upstream = in_process(64 * 1024), None);
        check(|c| c.upstream = in_process(100), Some("upstream.buffer"));
        let message = GateError::Config {
            field: "max_pending",
            why: "must be at least 1",
        }
        .to_string();
        assert!(message.contains("max_pending"), "{message}");
    }
}
