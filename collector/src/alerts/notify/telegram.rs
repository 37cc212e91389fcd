//! Telegram Bot API: `POST {api_base}/bot{token}/sendMessage` with `chat_id` and the text.
//! `api_base` may point at a local Bot API server in closed networks.

use super::{Notification, SendError, http_client, http_status, transient};
use std::time::Duration;

pub(super) struct Telegram {
    client: reqwest::Client,
    url: String,
    chat_id: String,
}

/// Telegram refuses messages longer than this many characters.
const MAX_TEXT_CHARS: usize = 4096;

impl Telegram {
    pub(super) fn new(
        api_base: &str,
        token: &str,
        chat_id: &str,
        timeout: Duration,
    ) -> Result<Telegram, String> {
        Ok(Telegram {
            client: http_client(timeout)?,
            url: format!("{api_base}/bot{token}/sendMessage"),
            chat_id: chat_id.to_string(),
        })
    }

    pub(super) async fn send(&mut self, n: &Notification) -> Result<(), SendError> {
        let text: String = n.text.chars().take(MAX_TEXT_CHARS).collect();
        let r = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({
                "chat_id": self.chat_id,
                "text": text,
                "disable_web_page_preview": true,
            }))
            .send()
            .await
            // The URL holds the token: `transient` logs only its scheme and host.
            .map_err(|e| transient(&self.url, e))?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        http_status(status, &body)
    }
}
