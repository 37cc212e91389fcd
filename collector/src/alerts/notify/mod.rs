//! Delivery of notifications: one tokio task per channel with a bounded queue (full: the
//! oldest is dropped and counted), retries with exponential backoff, and counters for
//! `/metrics`. **A failing channel never slows ingest or the other channels**: the engine's
//! task only pushes into queues.

mod alertmanager;
mod email;
mod telegram;
mod webhook;

use super::config::{ChannelConfig, ChannelKind, Delivery};
use super::model::{Change, ChangeKind, Incident};
use super::text::Rendered;
use crate::clock::Clock;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A message about one incident change, rendered once and shared by every channel.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Notification {
    /// `firing`, `resolved` or `relabelled`.
    pub event: ChangeKind,
    /// When it was decided, Unix ms.
    pub at_ms: i64,
    pub subject: String,
    /// The Russian message.
    pub text: String,
    /// The incident's page in the web UI (`http.public_url` + `/incidents/{id}`); absent
    /// without a public URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub incident: Incident,
}

impl Notification {
    /// `public_url`: the web UI's base, as the text's link was rendered with.
    pub(crate) fn new(
        change: &Change,
        rendered: Rendered,
        public_url: Option<&str>,
    ) -> Notification {
        Notification {
            event: change.kind,
            at_ms: change.at_ms,
            subject: rendered.subject,
            text: rendered.text,
            url: public_url.map(|u| super::text::incident_url(u, change.incident.id)),
            incident: change.incident.clone(),
        }
    }
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Worth retrying: network errors, timeouts, 5xx, 429.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: the request is refused (4xx, bad address, permanent SMTP reply).
    #[error("{0}")]
    Permanent(String),
}

/// Counters of one channel.
#[derive(Debug, Default)]
pub(crate) struct ChannelStats {
    pub name: String,
    pub kind: &'static str,
    /// Notifications delivered.
    pub sent: AtomicU64,
    /// Notifications given up on (retries exhausted or a permanent error).
    pub failed: AtomicU64,
    /// Notifications dropped from a full queue (the oldest first).
    pub dropped: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Notifications waiting now.
    pub queued: AtomicU64,
    /// The last notification was given up on (set) or delivered (cleared): `/readyz`.
    pub failing: std::sync::atomic::AtomicBool,
}

/// Appends the channels' metric families (see [`crate::metrics::Families`]).
pub(crate) fn write_metrics(stats: &[Arc<ChannelStats>], out: &mut String) {
    let mut f = crate::metrics::Families::default();
    let notifications = f.counter(
        "dozor_alert_notifications_total",
        "Alert notifications by channel and outcome.",
    );
    for s in stats {
        for (result, v) in [
            ("sent", &s.sent),
            ("failed", &s.failed),
            ("dropped", &s.dropped),
        ] {
            let labels = [
                ("channel", s.name.as_str()),
                ("type", s.kind),
                ("result", result),
            ];
            notifications.sample(&labels, v.load(Ordering::Relaxed));
        }
    }
    let retries = f.counter(
        "dozor_alert_notification_retries_total",
        "Failed delivery attempts that were retried.",
    );
    for s in stats {
        let labels = [("channel", s.name.as_str()), ("type", s.kind)];
        retries.sample(&labels, s.retries.load(Ordering::Relaxed));
    }
    let queue = f.gauge(
        "dozor_alert_notification_queue",
        "Notifications waiting per channel.",
    );
    for s in stats {
        let labels = [("channel", s.name.as_str()), ("type", s.kind)];
        queue.sample(&labels, s.queued.load(Ordering::Relaxed));
    }
    f.write(out);
}

/// A bounded queue that drops its oldest entry when full.
#[derive(Debug)]
struct Queue {
    items: Mutex<VecDeque<Arc<Notification>>>,
    cap: usize,
    wake: tokio::sync::Notify,
    stats: Arc<ChannelStats>,
}

impl Queue {
    fn push(&self, n: Arc<Notification>) {
        {
            // A poisoned lock means a panic elsewhere while pushing/popping; the deque itself
            // is still consistent, so keep using it.
            let mut q = self.items.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.cap {
                q.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(n);
            self.stats.queued.store(q.len() as u64, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    fn try_pop(&self) -> Option<Arc<Notification>> {
        let mut q = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.pop_front();
        self.stats.queued.store(q.len() as u64, Ordering::Relaxed);
        n
    }

    async fn pop(&self) -> Arc<Notification> {
        loop {
            let woken = self.wake.notified();
            if let Some(n) = self.try_pop() {
                return n;
            }
            woken.await;
        }
    }
}

/// A channel's transport.
enum Transport {
    Webhook(webhook::Webhook),
    Telegram(telegram::Telegram),
    Email(email::Email),
    Alertmanager(alertmanager::Alertmanager),
}

impl Transport {
    fn new(kind: &ChannelKind, d: &Delivery, clock: &Clock) -> Result<Transport, String> {
        Ok(match kind {
            ChannelKind::Webhook { url, headers } => {
                Transport::Webhook(webhook::Webhook::new(url, headers, d.timeout)?)
            }
            ChannelKind::Telegram {
                api_base,
                bot_token,
                chat_id,
            } => Transport::Telegram(telegram::Telegram::new(
                api_base, bot_token, chat_id, d.timeout,
            )?),
            ChannelKind::Email {
                host,
                port,
                tls,
                from,
                to,
                credentials,
            } => Transport::Email(email::Email::new(
                host,
                *port,
                *tls,
                from,
                to,
                credentials.clone(),
                d.timeout,
            )?),
            ChannelKind::Alertmanager { url, resend } => Transport::Alertmanager(
                alertmanager::Alertmanager::new(url, *resend, d.timeout, clock.clone())?,
            ),
        })
    }

    async fn send(&mut self, n: &Notification) -> Result<(), SendError> {
        match self {
            Transport::Webhook(t) => t.send(n).await,
            Transport::Telegram(t) => t.send(n).await,
            Transport::Email(t) => t.send(n).await,
            Transport::Alertmanager(t) => t.send(n).await,
        }
    }

    fn resend_every(&self) -> Option<Duration> {
        match self {
            Transport::Alertmanager(t) => Some(t.resend_every()),
            _ => None,
        }
    }

    async fn resend(&mut self) -> Result<(), SendError> {
        match self {
            Transport::Alertmanager(t) => t.resend().await,
            _ => Ok(()),
        }
    }
}

/// Errors setting up channels.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    /// A channel's client could not be built (TLS setup, bad address).
    #[error("alerts channel {name}: {message}")]
    Setup { name: String, message: String },
}

struct Slot {
    delivery: Delivery,
    queue: Arc<Queue>,
    transport: Option<Transport>,
}

/// The channels: queues filled by the engine's owner, drained by one task each.
pub(crate) struct Notifier {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.slots.len())
            .finish()
    }
}

impl Notifier {
    /// Builds every channel's client. Nothing is sent until [`Notifier::spawn`]. `clock` stamps
    /// what a channel dates itself (Alertmanager's `endsAt`).
    pub(crate) fn new(channels: &[ChannelConfig], clock: Clock) -> Result<Notifier, NotifyError> {
        let mut slots = Vec::with_capacity(channels.len());
        for c in channels {
            let transport = Transport::new(&c.kind, &c.delivery, &clock).map_err(|message| {
                NotifyError::Setup {
                    name: c.delivery.name.clone(),
                    message,
                }
            })?;
            let stats = Arc::new(ChannelStats {
                name: c.delivery.name.clone(),
                kind: c.kind.type_name(),
                ..ChannelStats::default()
            });
            slots.push(Slot {
                delivery: c.delivery.clone(),
                queue: Arc::new(Queue {
                    items: Mutex::new(VecDeque::new()),
                    cap: c.delivery.queue_len,
                    wake: tokio::sync::Notify::new(),
                    stats,
                }),
                transport: Some(transport),
            });
        }
        Ok(Notifier { slots })
    }

    /// Queues a notification on every channel whose `min_severity` it meets. Never blocks.
    pub(crate) fn dispatch(&self, n: Arc<Notification>) {
        for s in &self.slots {
            if n.incident.severity >= s.delivery.min_severity {
                s.queue.push(n.clone());
            }
        }
    }

    pub(crate) fn stats(&self) -> Vec<Arc<ChannelStats>> {
        self.slots.iter().map(|s| s.queue.stats.clone()).collect()
    }

    /// Starts one task per channel on `tracker`; they stop when `cancel` is cancelled.
    /// Calling it again does nothing.
    pub(crate) fn spawn(&mut self, tracker: &TaskTracker, cancel: CancellationToken) {
        for s in &mut self.slots {
            if let Some(t) = s.transport.take() {
                tracker.spawn(run_channel(
                    t,
                    s.queue.clone(),
                    s.delivery.clone(),
                    cancel.clone(),
                ));
            }
        }
    }
}

async fn run_channel(mut t: Transport, q: Arc<Queue>, d: Delivery, cancel: CancellationToken) {
    let stats = q.stats.clone();
    let mut resend = t.resend_every().map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let n = tokio::select! {
            () = cancel.cancelled() => return,
            n = q.pop() => n,
            _ = async {
                match resend.as_mut() {
                    Some(i) => i.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = tokio::time::timeout(d.timeout, t.resend()).await.unwrap_or_else(|_| Err(SendError::Transient("timeout".into()))) {
                    tracing::warn!(channel = %d.name, error = %e, "alert resend failed");
                }
                continue;
            }
        };
        let mut backoff = crate::backoff::Backoff::new(d.retry_initial, d.retry_max);
        let mut attempt = 0u32;
        loop {
            let r = match tokio::time::timeout(d.timeout, t.send(&n)).await {
                Ok(r) => r,
                Err(_) => Err(SendError::Transient(format!(
                    "no answer within {} s",
                    d.timeout.as_secs()
                ))),
            };
            match r {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    stats.failing.store(false, Ordering::Relaxed);
                    tracing::info!(channel = %d.name, incident = n.incident.id, event = n.event.as_str(), "alert notification sent");
                    break;
                }
                Err(SendError::Transient(e)) if attempt < d.max_retries => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(channel = %d.name, incident = n.incident.id, attempt, error = %e, "alert notification failed, retrying");
                    attempt += 1;
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.failing.store(true, Ordering::Relaxed);
                    tracing::error!(channel = %d.name, incident = n.incident.id, error = %e, "alert notification given up");
                    break;
                }
            }
        }
    }
}

/// Classifies an HTTP status: 2xx ok, 429 and 5xx transient, other permanent.
fn http_status(status: reqwest::StatusCode, body: &str) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let body: String = body.chars().take(200).collect();
    let msg = format!("HTTP {status}: {body}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(SendError::Transient(msg))
    } else {
        Err(SendError::Permanent(msg))
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("dozor-collector/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// A request error as logged: where it went as `scheme://host[:port]/…` and what failed, never
/// reqwest's own text with the full URL (a webhook's or Alertmanager's path or query may hold a
/// token, a Telegram URL always does: `/bot<token>/`).
fn transient(url: &str, e: reqwest::Error) -> SendError {
    SendError::Transient(format!("{}: {}", redact_url(url), e.without_url()))
}

/// `scheme://host[:port]/…`: no userinfo, path or query.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            }
        }
        Err(_) => "<неверный URL>".to_string(),
    }
}

#[cfg(test)]
mod tests;
