//! The InfluxDB v2 sink: raw heartbeats, probe results and per-МО series, as line protocol.
//!
//! The SQLite store writes the lines of each batch to its `outbox` table in the same
//! transaction as the batch, so nothing is lost while InfluxDB is down (the outbox is bounded by
//! age and size; drops are counted). [`InfluxSink`] drains the outbox in order, in requests of
//! at most `max_request_bytes`, retrying with exponential backoff, and deletes what InfluxDB
//! accepted. Measurements, tags and fields: `docs/storage.md`.

use super::config::InfluxConfig;
use super::{StoreError, schema};
use crate::availability::Ms;
use dozor_proto::{Heartbeat, ProbeResult, Role};
use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::{DataPoint, WriteDataPoint};
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A tag value safe for line protocol: no control characters, no trailing backslash.
fn tag(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| if c.is_control() || c == '\\' { ' ' } else { c })
        .collect();
    s.trim().to_string()
}

fn push(out: &mut String, b: influxdb2::models::data_point::DataPointBuilder) {
    if let Ok(p) = b.build() {
        let mut buf = Vec::with_capacity(256);
        if p.write_data_point_to(&mut buf).is_ok()
            && let Ok(s) = String::from_utf8(buf)
        {
            out.push_str(&s);
        }
    }
}

fn base(
    measurement: &str,
    tags: &[(&str, &str)],
) -> influxdb2::models::data_point::DataPointBuilder {
    let mut b = DataPoint::builder(measurement);
    for (k, v) in tags {
        let v = tag(v);
        if !v.is_empty() {
            b = b.tag(*k, v);
        }
    }
    b
}

/// What the store knows of a host from its birth: tags of its heartbeat points.
#[derive(Debug, Clone, Copy)]
pub struct HostTags<'a> {
    pub role: Option<Role>,
    pub site: &'a str,
    /// The host's own name (dashboards show it beside the host id).
    pub hostname: &'a str,
}

/// `dozor_hb`: one heartbeat.
pub fn hb_line(
    out: &mut String,
    mo: &str,
    host: &str,
    tags: HostTags<'_>,
    hb: &Heartbeat,
    t_ms: Ms,
) {
    let role = tags.role.map_or("", Role::as_str);
    let mut b = base(
        "dozor_hb",
        &[
            ("mo", mo),
            ("host", host),
            ("role", role),
            ("site", tags.site),
            ("hostname", tags.hostname),
        ],
    )
    .field("uptime_secs", hb.uptime_secs.min(i64::MAX as u64) as i64)
    .field("cpu_pct", f64::from(hb.cpu_pct))
    .field(
        "mem_used_bytes",
        hb.mem_used_bytes.min(i64::MAX as u64) as i64,
    )
    .field(
        "mem_total_bytes",
        hb.mem_total_bytes.min(i64::MAX as u64) as i64,
    )
    .field("interval_secs", i64::from(hb.interval_secs));
    if hb.mem_total_bytes > 0 {
        b = b.field(
            "mem_pct",
            hb.mem_used_bytes as f64 / hb.mem_total_bytes as f64 * 100.0,
        );
    }
    let disk = hb
        .disks
        .iter()
        .filter(|d| d.total_bytes > 0)
        .map(|d| d.used_bytes as f64 / d.total_bytes as f64 * 100.0)
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    if let Some(d) = disk {
        b = b.field("disk_max_pct", d);
    }
    if let Some([l1, l5, l15]) = hb.load {
        b = b
            .field("load1", f64::from(l1))
            .field("load5", f64::from(l5))
            .field("load15", f64::from(l15));
    }
    if let Some(s) = &hb.spool {
        b = b
            .field("spool_pending", s.pending.min(i64::MAX as u64) as i64)
            .field("spool_bytes", s.bytes.min(i64::MAX as u64) as i64)
            .field("spool_dropped", s.dropped.min(i64::MAX as u64) as i64);
    }
    push(out, b.timestamp(t_ms));
}

/// `dozor_probe`: one target's result.
pub fn probe_line(out: &mut String, mo: &str, host: &str, r: &ProbeResult, t_ms: Ms) {
    let error = if r.ok {
        "none"
    } else {
        r.error.map_or("other", |e| e.as_str())
    };
    let mut b = base(
        "dozor_probe",
        &[
            ("mo", mo),
            ("host", host),
            ("target", &r.target),
            ("category", r.category.as_str()),
            ("error", error),
        ],
    )
    .field("ok", i64::from(r.ok));
    if let Some(l) = r.latency_ms {
        b = b.field("latency_ms", i64::from(l));
    }
    if let Some(s) = r.status {
        b = b.field("status", i64::from(s));
    }
    push(out, b.timestamp(t_ms));
}

/// `dozor_mo`: hosts online, workstations online, servers online, hosts reaching the МИС;
/// the МО's name (tag) and planned АРМ (field) when the roster lists it, so that dashboards
/// show names, not OIDs, and the plan beside the fact.
pub fn mo_line(out: &mut String, mo: &str, roster: Option<(&str, u32)>, v: [i64; 4], t_ms: Ms) {
    let name = roster.map_or("", |(n, _)| n);
    let mut b = base("dozor_mo", &[("mo", mo), ("name", name)])
        .field("hosts_online", v[0])
        .field("workstations_online", v[1])
        .field("servers_online", v[2])
        .field("hosts_reaching_mis", v[3]);
    if let Some((_, planned)) = roster {
        b = b.field("planned_arm", i64::from(planned));
    }
    push(out, b.timestamp(t_ms));
}

/// Counters of the sink, for metrics.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Lines InfluxDB accepted.
    pub sent_lines: AtomicU64,
    pub sent_requests: AtomicU64,
    /// Requests that failed and will be retried.
    pub failed_requests: AtomicU64,
    /// Lines InfluxDB refused as malformed (HTTP 400/422); dropped.
    pub rejected_lines: AtomicU64,
    /// Lines waiting in the outbox at the last look.
    pub pending_lines: AtomicU64,
}

/// Drains the store's outbox to InfluxDB. Start it as a task with [`InfluxSink::run`].
pub struct InfluxSink {
    db: PathBuf,
    cfg: InfluxConfig,
    stats: Arc<SinkStats>,
}

type Chunk = Vec<(i64, i64, String)>;

impl InfluxSink {
    /// A sink for the store at `db` (see [`crate::store::sqlite::db_path`]).
    pub fn new(db: &Path, cfg: InfluxConfig) -> InfluxSink {
        InfluxSink {
            db: db.to_path_buf(),
            cfg,
            stats: Arc::new(SinkStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown`: sends the outbox in order, deletes what was accepted. Never
    /// returns early on errors (they are logged and retried).
    pub async fn run(self, shutdown: CancellationToken) {
        let client = influxdb2::Client::new(&self.cfg.url, &self.cfg.org, &self.cfg.token);
        let mut conn: Option<Arc<Mutex<Connection>>> = None;
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_secs(1), self.cfg.max_backoff);
        let mut logged_at: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let c = match &conn {
                Some(c) => c.clone(),
                None => match open(&self.db).await {
                    Ok(c) => {
                        let c = Arc::new(Mutex::new(c));
                        conn = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "influx sink: cannot open the store");
                        if sleep(&shutdown, backoff.next_delay()).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let max = self.cfg.max_request_bytes;
            let chunk = blocking(c.clone(), move |c| read_chunk(c, max)).await;
            let (chunk, pending) = match chunk {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "influx sink: reading the outbox failed");
                    conn = None;
                    if sleep(&shutdown, backoff.peek()).await {
                        return;
                    }
                    continue;
                }
            };
            self.stats.pending_lines.store(pending, Ordering::Relaxed);
            if chunk.is_empty() {
                if sleep(&shutdown, self.cfg.poll_interval).await {
                    return;
                }
                continue;
            }
            let last_id = chunk.iter().map(|r| r.0).max().unwrap_or(0);
            let lines: i64 = chunk.iter().map(|r| r.1).sum();
            let body: String = chunk.into_iter().map(|r| r.2).collect();
            let res = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(
                    self.cfg.timeout,
                    client.write_line_protocol_with_precision(
                        &self.cfg.org,
                        &self.cfg.bucket,
                        body,
                        TimestampPrecision::Milliseconds,
                    ),
                ) => r,
            };
            let outcome = match res {
                Ok(Ok(())) => Outcome::Sent,
                Ok(Err(influxdb2::RequestError::Http { status, text }))
                    if matches!(status.as_u16(), 400 | 413 | 422) =>
                {
                    tracing::error!(%status, response = %text.chars().take(300).collect::<String>(),
                        lines, "influx sink: points refused as malformed, dropped");
                    Outcome::Rejected
                }
                Ok(Err(e)) => Outcome::Retry(e.to_string()),
                Err(_) => Outcome::Retry(format!("no answer within {:?}", self.cfg.timeout)),
            };
            match outcome {
                Outcome::Sent | Outcome::Rejected => {
                    if matches!(outcome, Outcome::Sent) {
                        self.stats
                            .sent_lines
                            .fetch_add(lines as u64, Ordering::Relaxed);
                        self.stats.sent_requests.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats
                            .rejected_lines
                            .fetch_add(lines as u64, Ordering::Relaxed);
                    }
                    backoff.reset();
                    logged_at = None;
                    if let Err(e) = blocking(c, move |c| {
                        c.prepare_cached("DELETE FROM outbox WHERE id <= ?1")?
                            .execute([last_id])?;
                        Ok(())
                    })
                    .await
                    {
                        tracing::warn!(error = %e, "influx sink: deleting sent points failed");
                        conn = None;
                    }
                }
                Outcome::Retry(e) => {
                    self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                    // One warning per minute while InfluxDB stays unreachable.
                    let delay = backoff.next_delay();
                    if logged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(error = %e, pending_lines = pending, retry_in = ?delay,
                            "influx sink: write failed; points stay in the outbox");
                        logged_at = Some(tokio::time::Instant::now());
                    }
                    if sleep(&shutdown, delay).await {
                        return;
                    }
                }
            }
        }
    }
}

enum Outcome {
    Sent,
    Rejected,
    Retry(String),
}

/// Sleeps; true when cancelled.
async fn sleep(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn open(db: &Path) -> Result<Connection, StoreError> {
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let c = Connection::open(&db)?;
        schema::configure(&c, false)?;
        schema::migrate(&c)?;
        Ok(c)
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("sink task: {e}")))?
}

async fn blocking<T: Send + 'static>(
    c: Arc<Mutex<Connection>>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || {
        let guard = c
            .lock()
            .map_err(|_| StoreError::Corrupt("sink connection poisoned".into()))?;
        f(&guard)
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("sink task: {e}")))?
}

/// The oldest outbox rows up to `max_bytes` (at least one row), and the lines pending in all.
fn read_chunk(c: &Connection, max_bytes: usize) -> Result<(Chunk, u64), StoreError> {
    let pending: i64 = c.query_row("SELECT coalesce(sum(lines), 0) FROM outbox", [], |r| {
        r.get(0)
    })?;
    let mut st = c.prepare_cached("SELECT id, lines, body FROM outbox ORDER BY id LIMIT 1000")?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let body: String = r.get(2)?;
        if !out.is_empty() && bytes + body.len() > max_bytes {
            break;
        }
        bytes += body.len();
        out.push((r.get(0)?, r.get(1)?, body));
    }
    Ok((out, pending.max(0) as u64))
}

/// Bounds the outbox: drops rows older than `max_age_ms` or beyond `max_bytes` (oldest first).
/// Returns the lines dropped.
pub fn prune_outbox(
    c: &Connection,
    now: Ms,
    max_age_ms: Ms,
    max_bytes: u64,
) -> Result<u64, StoreError> {
    let mut dropped: i64 = c.query_row(
        "SELECT coalesce(sum(lines), 0) FROM outbox WHERE created_ms < ?1",
        [now - max_age_ms],
        |r| r.get(0),
    )?;
    c.execute(
        "DELETE FROM outbox WHERE created_ms < ?1",
        [now - max_age_ms],
    )?;
    let total: i64 = c.query_row("SELECT coalesce(sum(bytes), 0) FROM outbox", [], |r| {
        r.get(0)
    })?;
    if total as u64 > max_bytes {
        let excess = total - max_bytes as i64;
        let mut st = c.prepare("SELECT id, bytes, lines FROM outbox ORDER BY id")?;
        let mut rows = st.query([])?;
        let (mut freed, mut last) = (0i64, None);
        while let Some(r) = rows.next()? {
            if freed >= excess {
                break;
            }
            freed += r.get::<_, i64>(1)?;
            dropped += r.get::<_, i64>(2)?;
            last = Some(r.get::<_, i64>(0)?);
        }
        drop(rows);
        if let Some(id) = last {
            c.execute("DELETE FROM outbox WHERE id <= ?1", params![id])?;
        }
    }
    Ok(dropped.max(0) as u64)
}

#[cfg(test)]
mod tests;
