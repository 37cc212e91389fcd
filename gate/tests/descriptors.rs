//! Descriptors stay bounded under a flood of idle connections. A test binary of its own, so no
//! other test's sockets are counted.

use dozor_gate::{Authorizer, GateConfig, Grant, Reason, Refusal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Refuses everyone; never asked here, since no client sends CONNECT.
struct Nobody;

impl Authorizer for Nobody {
    fn connect(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> Result<Grant, Refusal> {
        Err(Refusal::NotAuthorized)
    }
    fn still_valid(&self, _: &Grant) -> bool {
        false
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("Linux /proc")
        .count()
}

#[tokio::test]
async fn a_thousand_idle_connections_hold_at_most_max_pending_descriptors() {
    const IDLE: usize = 1_000;
    const MAX_PENDING: usize = 100;
    let mut cfg = GateConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        // Never dialled: no connection gets past CONNECT.
        SocketAddr::from(([127, 0, 0, 1], 9)),
    );
    cfg.max_pending = MAX_PENDING;
    cfg.connect_timeout = Duration::from_secs(60);
    let cancel = CancellationToken::new();
    let (addr, handle) = dozor_gate::start(cfg, Arc::new(Nobody), cancel.clone())
        .await
        .expect("gate starts");
    let stats = handle.stats();

    let before = open_descriptors();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.expect("connects"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.count(Reason::OverPending) < (IDLE - MAX_PENDING) as u64 {
        assert!(Instant::now() < deadline, "only {:?}", stats.counters());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gate_side = open_descriptors() - before - IDLE;
    assert!(
        gate_side <= MAX_PENDING + 10,
        "the gate holds {gate_side} descriptors for {IDLE} idle clients"
    );
    assert_eq!(stats.connections_pending(), MAX_PENDING as u64);
    cancel.cancel();
    handle.stopped().await;
    assert_eq!(stats.connections_open(), 0);
}
