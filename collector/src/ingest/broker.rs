//! The embedded MQTT broker (rumqttd), so that a single collector binary needs nothing else.

use dozor_proto::MAX_PAYLOAD_BYTES;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address cannot be bound.
    #[error("embedded MQTT broker cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The broker thread could not be started.
    #[error("embedded MQTT broker: {0}")]
    Start(String),
}

fn config(listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        // Four times the protocol limit: oversized messages still reach the collector to be
        // counted, while truly huge ones are cut off by the broker.
        max_payload_size: MAX_PAYLOAD_BYTES * 4,
        max_inflight_count: 10_000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "dozor-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 100_000,
            max_outgoing_packet_count: 10_000,
            max_segment_size: 8 * 1024 * 1024,
            max_segment_count: 8,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Starts rumqttd on `listen` in its own threads. It lives as long as the process.
/// Returns once the port accepts connections.
pub fn start(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    // Probe the address first: rumqttd reports bind errors only in its own thread.
    let probe = std::net::TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    let bound = probe.local_addr().map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    drop(probe);
    let mut broker = Broker::new(config(bound));
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let connect_to = if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    };
    // Wait until rumqttd holds the port: binding it ourselves then fails. (Connecting to test
    // readiness would make rumqttd log an aborted connection as an error.)
    for _ in 0..500 {
        if std::net::TcpListener::bind(bound).is_err() {
            return Ok(connect_to);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(BrokerError::Start(format!(
        "not accepting connections on {connect_to}"
    )))
}
