//! A real rumqttd for the gate's tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Starts rumqttd on a free loopback port in its own thread (it lives until the test process
/// exits) and returns its address once it holds the port, and its in-process way in.
pub(crate) fn start_broker() -> (SocketAddr, rumqttd::Connector) {
    use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let addr = probe.local_addr().expect("bound");
    drop(probe);
    let server = ServerSettings {
        name: "test-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    let connector = broker.connector(addr);
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("rumqttd stopped: {e}");
        }
    });
    for _ in 0..500 {
        if std::net::TcpListener::bind(addr).is_err() {
            return (addr, connector);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("rumqttd did not take {addr}");
}
