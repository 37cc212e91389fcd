//! The HTTP API (axum): live hosts and МО, health and Prometheus metrics (the web UI is `ui`).

use crate::api_error::{ApiError, Path, Query};
use crate::metrics::Metrics;
use crate::roster::Roster;
use crate::state::{Host, Snapshot};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dozor_proto::{Category, ConnState, ErrorClass, Role};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub roster: Arc<Roster>,
    /// Extra Prometheus text from other components (alerts, sinks), appended to `/metrics`.
    pub extra_metrics: Arc<dyn Fn(&mut String) + Send + Sync>,
    /// Names of the alert channels whose last notification was given up on (`/readyz`).
    pub failing_channels: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
}

/// The router of the live API; other components' routers are merged in by `lib.rs`.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/hosts/{id}", get(host))
        .route("/api/v1/mos", get(mos))
        .route("/api/v1/delivery", get(delivery))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when every check passes, else 503; the checks with their reasons.
async fn readyz(State(s): State<ApiState>) -> Response {
    let checks = crate::health::checks(&s.metrics, &(s.failing_channels)(), crate::clock::now_ms());
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": checks,
        })),
    )
        .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let mut out = String::with_capacity(4096);
    s.metrics.render(&mut out);
    crate::health::write_metrics(
        &s.metrics,
        &(s.failing_channels)(),
        crate::clock::now_ms(),
        &mut out,
    );
    let snap = s.snapshot.borrow().clone();
    let mut by_state: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for h in &snap.hosts {
        let role = h.role.map_or("unknown", Role::as_str);
        *by_state.entry((h.state.as_str(), role)).or_default() += 1;
    }
    let mut f = crate::metrics::Families::default();
    let hosts = f.gauge("dozor_hosts", "Hosts by live state and role.");
    for st in [ConnState::Online, ConnState::Offline, ConnState::Lost] {
        for role in ["workstation", "server", "unknown"] {
            let n = by_state.get(&(st.as_str(), role)).copied().unwrap_or(0);
            hosts.sample(&[("state", st.as_str()), ("role", role)], n);
        }
    }
    f.write(&mut out);
    (s.extra_metrics)(&mut out);
    out.push_str(crate::metrics::EOF);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// A probe result in the host list.
#[derive(Debug, Serialize)]
pub(crate) struct ProbeJson {
    pub category: Category,
    pub ok: bool,
    pub latency_ms: Option<u32>,
    pub error: Option<ErrorClass>,
}

/// A host in the host list.
#[derive(Debug, Serialize)]
pub(crate) struct HostJson<'a> {
    pub host_id: &'a str,
    pub mo: &'a str,
    pub role: Option<Role>,
    pub site: &'a str,
    pub hostname: &'a str,
    pub state: ConnState,
    pub reason: Option<&'a str>,
    pub uptime_secs: u64,
    /// RFC 3339, UTC; null if never heard live.
    pub last_seen: Option<String>,
    pub last_seen_ms: i64,
    pub clock_offset_ms: Option<i64>,
    pub in_roster: bool,
    pub probes: BTreeMap<&'a str, ProbeJson>,
    /// Warnings for people, Russian (a cloned machine id, …); omitted when none.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
}

fn rfc3339(ms: i64) -> Option<String> {
    (ms > 0)
        .then(|| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
        .flatten()
}

fn host_json(h: &Host) -> HostJson<'_> {
    HostJson {
        host_id: &h.host_id,
        mo: &h.mo,
        role: h.role,
        site: &h.site,
        hostname: &h.hostname,
        state: h.state,
        reason: h.reason.as_deref(),
        uptime_secs: h.uptime_secs,
        last_seen: rfc3339(h.last_seen_ms),
        last_seen_ms: h.last_seen_ms,
        clock_offset_ms: h.clock_offset_ms,
        in_roster: h.in_roster,
        warnings: &h.warnings,
        probes: h
            .probes
            .iter()
            .map(|p| {
                (
                    p.target.as_str(),
                    ProbeJson {
                        category: p.category,
                        ok: p.ok,
                        latency_ms: p.latency_ms,
                        error: p.error,
                    },
                )
            })
            .collect(),
    }
}

/// Filters of `GET /api/v1/hosts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostsQuery {
    pub mo: Option<String>,
    pub state: Option<String>,
    pub role: Option<String>,
}

impl HostsQuery {
    /// Refuses a `state` or `role` no host can have (it would answer an empty list).
    fn check(&self) -> Result<(), ApiError> {
        if let Some(st) = self.state.as_deref()
            && ![ConnState::Online, ConnState::Offline, ConnState::Lost]
                .iter()
                .any(|c| c.as_str() == st)
        {
            return Err(ApiError::field(
                "state",
                format!("{st:?}: ожидается online, offline или lost"),
            ));
        }
        if let Some(r) = self.role.as_deref()
            && ![Role::Workstation.as_str(), Role::Server.as_str(), "unknown"].contains(&r)
        {
            return Err(ApiError::field(
                "role",
                format!("{r:?}: ожидается workstation, server или unknown"),
            ));
        }
        Ok(())
    }
}

async fn hosts(
    State(s): State<ApiState>,
    Query(q): Query<HostsQuery>,
) -> Result<Response, ApiError> {
    q.check()?;
    let snap = s.snapshot.borrow().clone();
    let list: Vec<HostJson<'_>> = snap
        .hosts
        .iter()
        .filter(|h| q.mo.as_deref().is_none_or(|m| h.mo == m))
        .filter(|h| q.state.as_deref().is_none_or(|st| h.state.as_str() == st))
        .filter(|h| {
            q.role
                .as_deref()
                .is_none_or(|r| h.role.map_or("unknown", Role::as_str) == r)
        })
        .map(|h| host_json(h))
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /api/v1/hosts/{id}`: the full live record, `?mo=` to disambiguate.
async fn host(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HostsQuery>,
) -> Result<Response, ApiError> {
    let snap = s.snapshot.borrow().clone();
    let h = snap
        .hosts
        .iter()
        .find(|h| h.host_id == id && q.mo.as_deref().is_none_or(|m| h.mo == m))
        .ok_or_else(|| ApiError::NotFound(format!("хост {id}")))?;
    Ok(Json(h).into_response())
}

/// Live figures of one МО.
#[derive(Debug, Default, Serialize)]
pub(crate) struct MoJson {
    pub oid: String,
    pub name: Option<String>,
    pub in_roster: bool,
    pub planned_arm: Option<u32>,
    pub hosts: u32,
    /// Workstations ever seen (registered).
    pub workstations_seen: u32,
    pub workstations_online: u32,
    pub servers: u32,
    pub servers_online: u32,
    /// Online hosts whose latest МИС probe succeeded.
    pub hosts_reaching_mis: u32,
    /// Online hosts that probe the МИС at all.
    pub hosts_probing_mis: u32,
}

/// Computes the per-МО live table: every roster МО, plus МО seen but not in the roster.
pub(crate) fn mo_table(snap: &Snapshot, roster: &Roster) -> Vec<MoJson> {
    let mut out: BTreeMap<&str, MoJson> = BTreeMap::new();
    for m in &roster.mos {
        out.insert(
            &m.oid,
            MoJson {
                oid: m.oid.clone(),
                name: Some(m.name.clone()),
                in_roster: true,
                planned_arm: Some(m.planned_arm),
                ..Default::default()
            },
        );
    }
    for h in &snap.hosts {
        let e = out.entry(&h.mo).or_insert_with(|| MoJson {
            oid: h.mo.clone(),
            ..Default::default()
        });
        e.hosts += 1;
        let online = h.state == ConnState::Online;
        match h.role {
            Some(Role::Workstation) => {
                e.workstations_seen += 1;
                e.workstations_online += u32::from(online);
            }
            Some(Role::Server) => {
                e.servers += 1;
                e.servers_online += u32::from(online);
            }
            None => {}
        }
        if online && let Some(ok) = h.reaches(Category::Mis) {
            e.hosts_probing_mis += 1;
            e.hosts_reaching_mis += u32::from(ok);
        }
    }
    out.into_values().collect()
}

async fn mos(State(s): State<ApiState>) -> Json<Vec<MoJson>> {
    let snap = s.snapshot.borrow().clone();
    Json(mo_table(&snap, &s.roster))
}

/// `GET /api/v1/delivery`: per agent instance, what is stored (contiguous mark, out-of-order
/// numbers waiting, messages stored, numbers refused by policy).
async fn delivery(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    // The pipeline does not sort (it rebuilds the list twice a second); the reader does.
    let mut list: Vec<_> = snap.delivery.iter().collect();
    list.sort_unstable_by(|a, b| (&a.mo, &a.host, &a.inst).cmp(&(&b.mo, &b.host, &b.inst)));
    Json(list).into_response()
}
