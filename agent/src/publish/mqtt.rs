//! The broker connection: rumqttc options (persistent session, last will) and the one task
//! that drives `EventLoop::poll`, reconnecting with capped, jittered exponential backoff.

use std::time::Duration;

use rand::Rng;
use rumqttc::{
    ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::tls::TlsClient;

/// First reconnect delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// TCP connect plus CONNACK must complete within this.
const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Packet size limit both ways: the protocol's 16 KiB payload plus topic and header.
const MAX_PACKET: usize = dozor_proto::MAX_PAYLOAD_BYTES + 1024;

/// What the driver reports to the publisher.
#[derive(Debug)]
pub enum Net {
    /// An event of the live connection (CONNACK, incoming publish, acks, outgoing packets).
    Event(Event),
    /// The connection failed or dropped; the driver retries after `retry_in`.
    Down { error: String, retry_in: Duration },
}

/// Client options: persistent session under a stable client id, keep-alive, packet limits,
/// the login (`(username, password)`) and, for `mqtts://`, TLS with the shared client
/// configuration. The last will is set by [`drive`] before each connection attempt.
pub fn options(
    cfg: &MqttConfig,
    client_id: &str,
    login: Option<(String, String)>,
    tls: Option<TlsClient>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    o.set_keep_alive(Duration::from_secs(u64::from(cfg.keepalive_secs)))
        // Invariant: the client id is never empty (`dozor-{mo}-{host}` with validated ids), so
        // rumqttc's assertion for clean_session=false holds.
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(64);
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    if let Some(tls) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.0)));
    }
    o
}

/// Exponential backoff with jitter: the n-th delay is uniform in [d/2, d] with
/// d = min(cap, base·2ⁿ).
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            attempt: 0,
            base,
            cap,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }
}

/// Drives the event loop until `stop` is cancelled or the publisher goes away. Never exits on
/// a connection error: reports it, sleeps the backoff, and polls again (which reconnects).
/// `will` is asked for a fresh last will before every connection attempt.
pub async fn drive(
    mut el: EventLoop,
    tx: mpsc::Sender<Net>,
    stop: CancellationToken,
    will: impl Fn() -> LastWill,
) {
    el.network_options
        .set_connection_timeout(CONNECT_TIMEOUT_SECS);
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let mut needs_connect = true;
    loop {
        if needs_connect {
            el.mqtt_options.set_last_will(will());
            needs_connect = false;
        }
        let polled = tokio::select! {
            _ = stop.cancelled() => return,
            r = el.poll() => r,
        };
        match polled {
            Ok(event) => {
                if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                    backoff.reset();
                }
                if tx.send(Net::Event(event)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                needs_connect = true;
                let retry_in = backoff.next_delay();
                let error = describe(&e);
                if tx.send(Net::Down { error, retry_in }).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry_in) => {}
                }
            }
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => format!("I/O: {io}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let expect = [1u64, 2, 4, 8, 16, 30, 30, 30];
        for full in expect {
            let d = b.next_delay();
            let full = Duration::from_secs(full);
            assert!(d >= full / 2 && d <= full, "{d:?} vs {full:?}");
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn options_keep_the_session() {
        let cfg = MqttConfig {
            host: "broker".into(),
            port: 1883,
            username: Some("u".into()),
            password: None,
            keepalive_secs: 2,
            tls: false,
        };
        let o = options(&cfg, "dozor-1.2-h", Some(("u".into(), "p".into())), None);
        assert!(!o.clean_session());
        assert_eq!(o.keep_alive(), Duration::from_secs(2));
        assert_eq!(o.client_id(), "dozor-1.2-h");
        assert_eq!(o.broker_address(), ("broker".to_owned(), 1883));
        assert!(matches!(o.transport(), Transport::Tcp));
        assert_eq!(
            o.credentials().map(|l| (l.username, l.password)),
            Some(("u".to_owned(), "p".to_owned()))
        );
    }

    #[test]
    fn mqtts_uses_the_shared_tls_client() {
        let cfg = MqttConfig {
            host: "broker".into(),
            port: 8883,
            username: None,
            password: None,
            keepalive_secs: 30,
            tls: true,
        };
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(vec!["broker".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let client = crate::tls::client_config(&[ca.der().clone()], None).expect("tls");
        let o = options(&cfg, "c", None, Some(TlsClient(client.clone())));
        match o.transport() {
            Transport::Tls(TlsConfiguration::Rustls(c)) => assert!(Arc::ptr_eq(&c, &client)),
            _ => panic!("expected rustls TLS"),
        }
        assert!(o.credentials().is_none());
    }
}
