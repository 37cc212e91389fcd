//! Readiness: whether the collector is doing its job now, told per check (`/readyz`, and the
//! `dozor_ready{check=…}` gauges). `/healthz` only says the process answers.
//!
//! Checks, each with an English code and a Russian reason:
//! - `broker`: the ingest client holds a connection to the MQTT broker (embedded or external);
//! - `store`: no batch has been waiting on the store longer than [`STORE_STUCK_MS`] (a write
//!   failing or hanging: the disk full, the database locked);
//! - `ingest`: the pipeline ticked within [`INGEST_LAG_MS`] (it stalls when the store holds it
//!   back, so messages wait unread in the broker).

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

/// The checks at `now_ms`.
pub(crate) fn checks(m: &Metrics, now_ms: i64) -> Vec<Check> {
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
    ]
}

/// Appends `dozor_ready{check=…}` (1 ready, 0 not).
pub(crate) fn write_metrics(m: &Metrics, now_ms: i64, out: &mut String) {
    let mut f = crate::metrics::Families::default();
    let g = f.gauge(
        "dozor_ready",
        "Readiness per check (1 ready, 0 not): broker, store, ingest; see /readyz.",
    );
    for c in checks(m, now_ms) {
        g.sample(&[("check", c.check)], u64::from(c.ok));
    }
    f.write(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(m: &Metrics, now: i64) -> Vec<&'static str> {
        checks(m, now).into_iter().map(|c| c.code).collect()
    }

    #[test]
    fn each_check_fails_on_its_own() {
        let now = crate::clock::now_ms();
        let m = Metrics::default();
        m.pipeline_tick(now);
        assert_eq!(codes(&m, now), ["broker_disconnected", "ok", "ok"]);
        m.set_broker_connected(true);
        assert_eq!(codes(&m, now), ["ok", "ok", "ok"]);
        m.set_store_busy_since(now - STORE_STUCK_MS - 1);
        assert_eq!(codes(&m, now), ["ok", "store_stuck", "ok"]);
        m.set_store_busy_since(0);
        assert_eq!(
            codes(&m, now + INGEST_LAG_MS + 1),
            ["ok", "ok", "ingest_lagging"]
        );
        let mut out = String::new();
        write_metrics(&m, now, &mut out);
        assert!(out.contains("dozor_ready{check=\"broker\"} 1"), "{out}");
    }
}
