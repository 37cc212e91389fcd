//! Readiness: whether the collector is doing its job now, told per check (`/readyz`, and the
//! `dozor_ready{check=…}` gauges). `/healthz` only says the process answers.
//!
//! Checks, each with an English code and a Russian reason:
//! - `broker`: the ingest client holds a connection to the MQTT broker (embedded or external);
//! - `store`: no batch has been waiting on the store longer than [`STORE_STUCK_MS`] (a write
//!   failing or hanging: the disk full, the database locked);
//! - `ingest`: the pipeline ticked within [`INGEST_LAG_MS`] (it stalls when the store holds it
//!   back, so messages wait unread in the broker);
//! - `alerts`: no notification channel's last notification was given up on (retries exhausted
//!   or refused): the collector observes, but nobody would be told.

use crate::metrics::Metrics;
use serde::Serialize;

/// A batch waiting on the store longer than this makes the collector not ready.
pub(crate) const STORE_STUCK_MS: i64 = 30_000;
/// A pipeline silent for longer than this makes the collector not ready.
pub(crate) const INGEST_LAG_MS: i64 = 10_000;

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) check: &'static str,
    pub(crate) ok: bool,
    /// English code of the reason (`ok` when it passes).
    pub(crate) code: &'static str,
    /// The reason, in Russian.
    pub(crate) message: String,
}

/// The checks at `now_ms`; `failing_channels` names the alert channels whose last
/// notification was given up on.
pub(crate) fn checks(m: &Metrics, failing_channels: &[String], now_ms: i64) -> Vec<Check> {
    let (broker, busy_since, tick) = m.readiness_inputs();
    let ok = |check, message: &str| Check {
        check,
        ok: true,
        code: "ok",
        message: message.to_string(),
    };
    vec![
        if broker {
            ok("broker", "связь с MQTT-брокером есть")
        } else {
            Check {
                check: "broker",
                ok: false,
                code: "broker_disconnected",
                message: "нет связи с MQTT-брокером: данные агентов не принимаются".into(),
            }
        },
        if busy_since == 0 || now_ms - busy_since <= STORE_STUCK_MS {
            ok("store", "хранилище записывает данные")
        } else {
            Check {
                check: "store",
                ok: false,
                code: "store_stuck",
                message: format!(
                    "запись в хранилище не удаётся {} с",
                    (now_ms - busy_since) / 1000
                ),
            }
        },
        if now_ms - tick <= INGEST_LAG_MS {
            ok("ingest", "приём сообщений идёт без задержки")
        } else {
            Check {
                check: "ingest",
                ok: false,
                code: "ingest_lagging",
                message: format!("приём сообщений стоит {} с", (now_ms - tick) / 1000),
            }
        },
        if failing_channels.is_empty() {
            ok("alerts", "каналы оповещений доставляют")
        } else {
            Check {
                check: "alerts",
                ok: false,
                code: "alert_channel_failing",
                message: format!(
                    "оповещения не доставлены, каналы: {}",
                    failing_channels.join(", ")
                ),
            }
        },
    ]
}

/// Appends `dozor_ready{check=…}` (1 ready, 0 not).
pub(crate) fn write_metrics(
    m: &Metrics,
    failing_channels: &[String],
    now_ms: i64,
    out: &mut String,
) {
    let mut f = crate::metrics::Families::default();
    let g = f.gauge(
        "dozor_ready",
        "Readiness per check (1 ready, 0 not): broker, store, ingest, alerts; see /readyz.",
    );
    for c in checks(m, failing_channels, now_ms) {
        g.sample(&[("check", c.check)], u64::from(c.ok));
    }
    f.write(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(m: &Metrics, now: i64) -> Vec<&'static str> {
        checks(m, &[], now).into_iter().map(|c| c.code).collect()
    }

    #[test]
    fn each_check_fails_on_its_own() {
        let now = crate::clock::now_ms();
        let m = Metrics::default();
        m.pipeline_tick(now);
        assert_eq!(codes(&m, now), ["broker_disconnected", "ok", "ok", "ok"]);
        m.set_broker_connected(true);
        assert_eq!(codes(&m, now), ["ok", "ok", "ok", "ok"]);
        m.set_store_busy_since(now - STORE_STUCK_MS - 1);
        assert_eq!(codes(&m, now), ["ok", "store_stuck", "ok", "ok"]);
        m.set_store_busy_since(0);
        assert_eq!(
            codes(&m, now + INGEST_LAG_MS + 1),
            ["ok", "ok", "ingest_lagging", "ok"]
        );
        let failing = checks(&m, &["helpdesk".to_string()], now);
        assert_eq!(failing[3].code, "alert_channel_failing");
        assert!(failing[3].message.contains("helpdesk"));
        let mut out = String::new();
        write_metrics(&m, &["helpdesk".to_string()], now, &mut out);
        assert!(out.contains("dozor_ready{check=\"broker\"} 1"), "{out}");
        assert!(out.contains("dozor_ready{check=\"alerts\"} 0"), "{out}");
    }
}
