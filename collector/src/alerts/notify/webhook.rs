//! Generic JSON webhook: `POST {url}` with the incident, the event and the Russian text.

use super::{Notification, SendError, http_client, http_status, transient};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

pub(super) struct Webhook {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
}

/// The body posted: a version, the event, the rendered text and the incident as the API shows it.
#[derive(serde::Serialize)]
struct Body<'a> {
    version: u32,
    #[serde(flatten)]
    n: &'a Notification,
}

impl Webhook {
    pub(super) fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Webhook, String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("bad header name {k:?}"))?;
            let value = HeaderValue::from_str(v).map_err(|_| format!("bad value of header {k}"))?;
            map.insert(name, value);
        }
        Ok(Webhook {
            client: http_client(timeout)?,
            url: url.to_string(),
            headers: map,
        })
    }

    pub(super) async fn send(&mut self, n: &Notification) -> Result<(), SendError> {
        let r = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .json(&Body { version: 1, n })
            .send()
            .await
            .map_err(|e| transient(&self.url, e))?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        http_status(status, &body)
    }
}
