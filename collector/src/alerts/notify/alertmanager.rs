//! Prometheus Alertmanager: `POST {url}/api/v2/alerts`. Firing incidents are re-posted every
//! `resend_secs` (Alertmanager resolves alerts that are not resent); a recovery is posted with
//! `endsAt` set to the time it ended.

use super::{Notification, SendError, http_client, http_status, transient};
use crate::alerts::model::{ChangeKind, IncidentState};
use crate::clock::Clock;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) struct Alertmanager {
    client: reqwest::Client,
    url: String,
    resend: Duration,
    /// Firing alerts by incident id, re-posted periodically.
    firing: BTreeMap<u64, Alert>,
    /// The alert service's clock (injected in tests).
    clock: Clock,
}

#[derive(Debug, Clone, Serialize)]
struct Alert {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    /// The incident's page in the web UI (with `http.public_url`).
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Alertmanager {
    pub(super) fn new(
        url: &str,
        resend: Duration,
        timeout: Duration,
        clock: Clock,
    ) -> Result<Alertmanager, String> {
        Ok(Alertmanager {
            client: http_client(timeout)?,
            url: format!("{url}/api/v2/alerts"),
            resend,
            firing: BTreeMap::new(),
            clock,
        })
    }

    pub(super) fn resend_every(&self) -> Duration {
        self.resend
    }

    /// Firing alerts stay active this long without a resend.
    fn ends_at_while_firing(&self) -> String {
        let ahead =
            i64::try_from(self.resend.as_millis().saturating_mul(4)).unwrap_or(i64::MAX / 2);
        rfc3339((self.clock)().saturating_add(ahead))
    }

    fn alert(&self, n: &Notification) -> Alert {
        let inc = &n.incident;
        let mut labels = BTreeMap::new();
        labels.insert("alertname", inc.rule.as_str().to_string());
        labels.insert("severity", inc.severity.as_str().to_string());
        labels.insert("incident_id", inc.id.to_string());
        if let Some(mo) = inc.mo() {
            labels.insert("mo", mo.oid.clone());
        }
        if let Some(t) = &inc.target {
            labels.insert("target", t.clone());
        }
        if let Some(c) = inc.category {
            labels.insert("category", c.as_str().to_string());
        }
        if let Some(h) = inc.host() {
            labels.insert("host", h.to_string());
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary", inc.title.clone());
        annotations.insert("description", n.text.clone());
        annotations.insert("cause", inc.cause.title_ru().to_string());
        if let Some(mo) = inc.mo() {
            annotations.insert("mo_name", mo.name.clone());
        }
        if let Some(a) = &inc.ack {
            annotations.insert("acknowledged_by", a.by.clone());
        }
        let ends_at = match inc.state {
            IncidentState::Resolved => rfc3339(inc.resolved_ms.unwrap_or(n.at_ms)),
            _ => self.ends_at_while_firing(),
        };
        Alert {
            labels,
            annotations,
            starts_at: rfc3339(inc.episode_started_ms),
            ends_at,
            generator_url: n.url.clone(),
        }
    }

    async fn post(&self, alerts: &[&Alert]) -> Result<(), SendError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let r = self
            .client
            .post(&self.url)
            .json(alerts)
            .send()
            .await
            .map_err(|e| transient(&self.url, e))?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        http_status(status, &body)
    }

    pub(super) async fn send(&mut self, n: &Notification) -> Result<(), SendError> {
        let a = self.alert(n);
        let firing = n.incident.state != IncidentState::Resolved && n.event != ChangeKind::Resolved;
        self.post(&[&a]).await?;
        if firing {
            self.firing.insert(n.incident.id, a);
        } else {
            self.firing.remove(&n.incident.id);
        }
        Ok(())
    }

    pub(super) async fn resend(&mut self) -> Result<(), SendError> {
        let ends = self.ends_at_while_firing();
        for a in self.firing.values_mut() {
            a.ends_at.clone_from(&ends);
        }
        let all: Vec<&Alert> = self.firing.values().collect();
        self.post(&all).await
    }
}
