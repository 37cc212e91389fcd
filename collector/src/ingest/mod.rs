//! MQTT ingest: one task drives rumqttc's event loop, decodes each publish against the wire
//! contract and hands it to the pipeline. Errors mean back off and reconnect, never exit.

pub mod broker;

use crate::config::MqttConfig;
use crate::metrics::Metrics;
use dozor_proto::{Kind, Limits, Message, Reject, upstream_filter};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the ingest task hands to the pipeline.
// `Msg` is nearly every value sent; boxing it would add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    /// A publish and its decoding. The publish is kept to acknowledge it once its effect is
    /// durable (manual acks).
    Msg {
        publish: Publish,
        recv_ms: i64,
        decoded: Result<Message, Reject>,
    },
    /// Connected to the broker (after start or a reconnect).
    Connected,
    /// Lost the broker: nothing is observed until `Connected`.
    Disconnected,
}

/// Upstream kinds the collector subscribes to.
pub const SUBSCRIBED: [Kind; 4] = [Kind::Birth, Kind::State, Kind::Hb, Kind::Probe];

/// Largest packet accepted from the broker; bigger payloads are refused by rumqttc itself.
const MAX_PACKET: usize = 256 * 1024;

/// Whether publishes are acknowledged to the broker only once their effect is durable.
///
/// True for an external broker: it holds what the collector has not acknowledged, so a
/// collector `kill -9` loses nothing the broker had. False for the embedded broker: its log is
/// in this process's memory and dies with it whatever was acknowledged, so holding the PUBACK
/// until the commit protects nothing and only throttles delivery (rumqttd allows 100
/// unacknowledged deliveries per connection). End to end, agents keep every message in their
/// spool until the collector confirms it stored on the `ack` topic, in both modes.
pub fn acks_after_commit(cfg: &MqttConfig) -> bool {
    matches!(cfg.mode, crate::config::MqttMode::External { .. })
}

/// Builds the client options: persistent session, wide inflight window, manual acks for an
/// external broker (see [`acks_after_commit`]).
pub fn options(cfg: &MqttConfig, host: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), host, port);
    o.set_keep_alive(cfg.keepalive)
        .set_clean_session(false)
        .set_manual_acks(acks_after_commit(cfg))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(1000)
        .set_request_channel_capacity(200_000);
    o
}

/// Creates the client and its event loop.
pub fn client(cfg: &MqttConfig, host: &str, port: u16) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options(cfg, host, port), 200_000)
}

/// Unix time now, ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Drives the event loop until cancelled: decodes publishes and sends them to the pipeline.
pub async fn run(
    client: AsyncClient,
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Inbound>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let limits = Limits::DEFAULT;
    let mut backoff = Duration::from_millis(200);
    let mut connected = false;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                metrics.received();
                let decoded = dozor_proto::decode(&p.topic, &p.payload, &limits);
                let msg = Inbound::Msg {
                    publish: p,
                    recv_ms: now_ms(),
                    decoded,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to MQTT broker"
                );
                backoff = Duration::from_millis(200);
                connected = true;
                for kind in SUBSCRIBED {
                    if let Err(e) = client
                        .subscribe(upstream_filter(kind), QoS::AtLeastOnce)
                        .await
                    {
                        tracing::warn!(error = %e, "subscribe failed");
                    }
                }
                if tx.send(Inbound::Connected).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    connected = false;
                    metrics.mqtt_reconnect();
                    tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                    if tx.send(Inbound::Disconnected).await.is_err() {
                        break;
                    }
                } else {
                    tracing::debug!(error = %e, "MQTT connect failed; retrying");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = client.disconnect().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttMode;

    fn cfg(mode: MqttMode) -> MqttConfig {
        MqttConfig {
            mode,
            client_id: "c".into(),
            keepalive: Duration::from_secs(30),
            ack_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn external_broker_is_acknowledged_after_commit_embedded_on_receipt() {
        let external = cfg(MqttMode::External {
            host: "mq".into(),
            port: 1883,
        });
        assert!(acks_after_commit(&external));
        assert!(options(&external, "mq", 1883).manual_acks());
        let embedded = cfg(MqttMode::Embedded {
            listen: "127.0.0.1:1883".parse().unwrap(),
        });
        assert!(!acks_after_commit(&embedded));
        assert!(!options(&embedded, "127.0.0.1", 1883).manual_acks());
    }
}
