//! The region overview (with its live updates), the МО page and the host page.

use super::fmt::{self, Share, share};
use super::overview::{self, IncidentLine, Overview};
use super::svg::{self, Chart};
use super::{UiState, Viewer};
use crate::api_error::{ApiError, Path, Query};
use crate::auth::Principal;
use crate::state::Host;
use crate::store::history::{self, HostHistory};
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use dozor_proto::{Birth, Category, ConnState, Role};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Most hosts a search lists.
const MAX_FOUND: usize = 50;
/// How often the overview's live stream sends an update.
const LIVE_EVERY: Duration = Duration::from_secs(5);

pub(super) fn render(t: &impl Template) -> Result<Response, ApiError> {
    t.render()
        .map(|h| Html(h).into_response())
        .map_err(|e| ApiError::Internal(format!("template: {e}")))
}

/// A host found by the overview's search.
pub(crate) struct Found {
    pub href: String,
    pub hostname: String,
    pub host: String,
    pub mo: String,
    pub site: String,
    pub role: &'static str,
    pub state: &'static str,
    pub state_class: &'static str,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub(crate) struct OverviewPage {
    pub v: Viewer,
    pub o: Overview,
    pub q: String,
    pub found: Vec<Found>,
    pub searched: bool,
}

/// The live part of the overview, re-rendered for each update.
#[derive(Template)]
#[template(path = "overview_live.html")]
pub(crate) struct OverviewLive<'a> {
    pub o: &'a Overview,
}

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    q: Option<String>,
}

fn state_class(h: &Host) -> &'static str {
    match h.state {
        ConnState::Online => "st-on",
        ConnState::Offline => "st-off",
        ConnState::Lost => "st-lost",
    }
}

/// Hosts whose hostname, id, site or МО name contains every word of `q` (case-insensitive).
pub(crate) fn search(s: &UiState, hosts: &[Arc<Host>], q: &str) -> Vec<Found> {
    let words: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return Vec::new();
    }
    hosts
        .iter()
        .filter(|h| {
            let hay = format!(
                "{} {} {} {}",
                h.hostname.to_lowercase(),
                h.host_id.to_lowercase(),
                h.site.to_lowercase(),
                s.mo_name(&h.mo).to_lowercase()
            );
            words.iter().all(|w| hay.contains(w.as_str()))
        })
        .take(MAX_FOUND)
        .map(|h| Found {
            href: format!("/host/{}/{}", h.mo, h.host_id),
            hostname: display_name(h),
            host: h.host_id.clone(),
            mo: s.mo_name(&h.mo),
            site: h.site.clone(),
            role: fmt::role(h.role),
            state: fmt::conn_state(h.state),
            state_class: state_class(h),
        })
        .collect()
}

fn display_name(h: &Host) -> String {
    if h.hostname.is_empty() {
        h.host_id.clone()
    } else {
        h.hostname.clone()
    }
}

pub(crate) fn build_overview(s: &UiState) -> Overview {
    let snap = s.snapshot.borrow().clone();
    let incidents = s.incidents();
    overview::build(&snap, &s.roster, &incidents, &s.trends, s.tz(), s.now())
}

/// `GET /`: the region overview (`?q=` searches hosts).
pub(super) async fn overview(
    State(s): State<UiState>,
    who: Option<Extension<Principal>>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    let o = build_overview(&s);
    let q = q.q.unwrap_or_default();
    let found = if q.trim().is_empty() {
        Vec::new()
    } else {
        let snap = s.snapshot.borrow().clone();
        search(&s, &snap.hosts, &q)
    };
    render(&OverviewPage {
        v: Viewer::of(who.as_deref()),
        o,
        searched: !q.trim().is_empty(),
        q,
        found,
    })
}

/// `GET /ui/events`: server-sent events, one `overview` event every few seconds with the
/// re-rendered live part of the overview and the time of the update.
pub(super) async fn events(State(s): State<UiState>) -> Response {
    let stop = s.shutdown.clone();
    let stream = futures::stream::unfold((s, true), move |(s, first)| {
        let stop = stop.clone();
        async move {
            if !first {
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(LIVE_EVERY) => {}
                }
            }
            let o = build_overview(&s);
            let html = OverviewLive { o: &o }.render().unwrap_or_default();
            let ev = Event::default()
                .event("overview")
                .json_data(serde_json::json!({
                    "updated": o.updated,
                    "html": html,
                    "incidents": o.incidents.len(),
                }))
                .unwrap_or_default();
            Some((Ok::<_, std::convert::Infallible>(ev), (s, false)))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// МО page

/// A host line of the МО page.
pub(crate) struct HostLine {
    pub href: String,
    pub name: String,
    pub host: String,
    pub role: &'static str,
    pub state: &'static str,
    pub state_class: &'static str,
    pub mis: Share,
    pub failing: String,
    pub last_seen: String,
}

/// A site of the МО page with its hosts.
pub(crate) struct SiteBlock {
    pub name: String,
    pub plan: Option<u32>,
    pub ws_online: Share,
    pub hosts: Vec<HostLine>,
}

#[derive(Template)]
#[template(path = "mo.html")]
pub(crate) struct MoPage {
    pub v: Viewer,
    pub oid: String,
    pub name: String,
    pub in_roster: bool,
    pub row: Option<overview::MoRow>,
    pub columns: Vec<&'static str>,
    pub sites: Vec<SiteBlock>,
    pub incidents: Vec<IncidentLine>,
    pub period: String,
    /// The period's spec (`2026-Q4`) for download links.
    pub period_spec: String,
    pub facts: Vec<(String, String)>,
    pub facts_note: String,
    /// «АРМ, чаще всего выключенные в рабочее время» of the period.
    pub off: Vec<OffLine>,
    pub planned: Vec<super::planned::PlannedLine>,
}

/// A workstation switched off in working hours (МО page).
pub(crate) struct OffLine {
    pub href: String,
    pub name: String,
    pub site: String,
    pub hours: String,
    pub hours_v: i64,
    pub days: i64,
}

/// How many workstations the МО page lists as most often switched off in working hours.
const MO_PAGE_OFF_TOP: usize = 10;

fn host_line(s: &UiState, h: &Host) -> HostLine {
    let mis = match h.reaches(Category::Mis) {
        Some(ok) if h.state == ConnState::Online => share(u32::from(ok), 1),
        _ => share(0, 0),
    };
    let failing: Vec<String> = h
        .probes
        .iter()
        .filter(|p| !p.ok)
        .map(|p| {
            format!(
                "{}: {}",
                p.category.title_ru(),
                fmt::probe_error(p.error, p.status)
            )
        })
        .collect();
    HostLine {
        href: format!("/host/{}/{}", h.mo, h.host_id),
        name: display_name(h),
        host: h.host_id.clone(),
        role: fmt::role(h.role),
        state: fmt::conn_state(h.state),
        state_class: state_class(h),
        mis: Share {
            text: match mis.total {
                0 => "—".into(),
                _ if mis.ok == 1 => "доступна".into(),
                _ => "недоступна".into(),
            },
            ..mis
        },
        failing: failing.join("; "),
        last_seen: fmt::datetime(s.tz(), h.last_seen_ms),
    }
}

/// `GET /mo/{mo}`: sites, hosts by site, incidents, the period's figures of the МО.
pub(super) async fn mo(
    State(s): State<UiState>,
    who: Option<Extension<Principal>>,
    Path(oid): Path<String>,
) -> Result<Response, ApiError> {
    let snap = s.snapshot.borrow().clone();
    let m = s.roster.get(&oid);
    let hosts: Vec<&Arc<Host>> = snap.hosts.iter().filter(|h| h.mo == oid).collect();
    if m.is_none() && hosts.is_empty() {
        return Err(ApiError::NotFound(format!("МО {oid}")));
    }
    let o = build_overview(&s);
    let row = o.rows.iter().find(|r| r.oid == oid).cloned();
    // Sites: the roster's, then any named by hosts only.
    let mut names: Vec<(String, Option<u32>)> = m
        .map(|m| {
            m.sites
                .iter()
                .map(|x| (x.name.clone(), Some(x.planned_arm)))
                .collect()
        })
        .unwrap_or_default();
    for h in &hosts {
        if !names.iter().any(|(n, _)| n == &h.site) {
            names.push((h.site.clone(), None));
        }
    }
    let sites = names
        .into_iter()
        .map(|(name, plan)| {
            let mut hs: Vec<&Arc<Host>> =
                hosts.iter().copied().filter(|h| h.site == name).collect();
            // Servers first, then hosts with trouble, then by name.
            hs.sort_by_key(|h| {
                (
                    h.role != Some(Role::Server),
                    h.state == ConnState::Online && h.probes.iter().all(|p| p.ok),
                    display_name(h),
                )
            });
            let online = hs
                .iter()
                .filter(|h| h.role == Some(Role::Workstation) && h.state == ConnState::Online)
                .count() as u32;
            let seen = hs
                .iter()
                .filter(|h| h.role == Some(Role::Workstation))
                .count() as u32;
            SiteBlock {
                name: if name.is_empty() {
                    "Подразделение не указано".into()
                } else {
                    name
                },
                plan,
                ws_online: share(online, plan.filter(|p| *p > 0).unwrap_or(seen).max(online)),
                hosts: hs.iter().map(|h| host_line(&s, h)).collect(),
            }
        })
        .collect();
    let now = s.now();
    let incidents: Vec<IncidentLine> = s
        .incidents()
        .iter()
        .rev()
        .filter(|i| i.mos.iter().any(|m| m.oid == oid))
        .take(30)
        .map(|i| overview::incident_line(i, s.tz(), now))
        .collect();
    let (period, facts, facts_note, off) = mo_facts(&s, &oid).await;
    let planned = super::planned::for_mo(&s, &oid, now);
    render(&MoPage {
        planned,
        v: Viewer::of(who.as_deref()),
        name: s.mo_name(&oid),
        in_roster: m.is_some(),
        oid,
        row,
        columns: o.columns,
        sites,
        incidents,
        period,
        period_spec: current_quarter(&s),
        facts,
        facts_note,
        off,
    })
}

/// The current quarter in the region's time zone: `2026-Q4`.
fn current_quarter(s: &UiState) -> String {
    use chrono::{Datelike, TimeZone};
    let t = s.tz().timestamp_millis_opt(s.now()).single();
    t.map_or_else(String::new, |t| {
        format!("{}-Q{}", t.year(), (t.month() - 1) / 3 + 1)
    })
}

/// The МО's share of the indicator table for the current quarter: counts and availability.
async fn mo_facts(s: &UiState, oid: &str) -> (String, Vec<(String, String)>, String, Vec<OffLine>) {
    let now = s.now();
    let spec = current_quarter(s);
    let Ok(period) = crate::report::parse_period(&spec, &s.store) else {
        return (spec, Vec::new(), "период не распознан".into(), Vec::new());
    };
    let (st, oid_s, p) = (s.clone(), oid.to_string(), period.clone());
    let r = tokio::task::spawn_blocking(move || {
        let r = crate::store::Reader::open(&st.db, &st.store)?;
        let data = r.period_data(&st.roster, p.from_ms, p.to_ms, now)?;
        let counts = crate::availability::counts(&data, &st.roster);
        let avail = crate::availability::availability(
            &data,
            &st.roster,
            crate::availability::AvailabilityBy::Mo,
        );
        let reach = crate::availability::availability(
            &data,
            &st.roster,
            crate::availability::AvailabilityBy::Target,
        );
        let off = crate::availability::offhours(&data, &st.roster, MO_PAGE_OFF_TOP, Some(&oid_s));
        let ind = crate::availability::indicators(&data, &st.roster, &st.store.indicators, &p);
        Ok::<_, crate::store::StoreError>((
            counts.mos.into_iter().find(|m| m.mo == oid_s),
            avail,
            reach,
            off,
            ind.mos.into_iter().find(|m| m.mo == oid_s),
            oid_s,
        ))
    })
    .await;
    let Ok(Ok((counts, avail, reach, off, ind, oid))) = r else {
        return (
            period.label,
            Vec::new(),
            "данных за период пока нет".into(),
            Vec::new(),
        );
    };
    let mut facts = Vec::new();
    if let Some(c) = counts {
        let c = c.counts;
        facts.push((
            "АРМ, работавшие в периоде".into(),
            format!("{} из {} по плану", c.workstations_active, c.planned_arm),
        ));
        facts.push((
            "АРМ с доступом к МИС".into(),
            format!(
                "{} из {}",
                c.workstations_reaching_mis, c.workstations_active
            ),
        ));
        facts.push((
            "Серверы, работавшие в периоде".into(),
            format!("{} из {}", c.servers_active, c.servers_registered),
        ));
    }
    if let Some(i) = &ind {
        let rule = &s.store.indicators.mis_use;
        facts.push((
            "Дней с обращениями АРМ к МИС".into(),
            format!(
                "{} из {} рабочих — {} (нужно не менее {} % рабочих дней)",
                i.mis_days,
                i.working_days,
                if i.uses_mis {
                    "использует МИС"
                } else {
                    "не использует МИС"
                },
                fmt::num(rule.min_working_days_pct)
            ),
        ));
    }
    let off_sum = off.mos.first().map(|m| m.sum.clone()).unwrap_or_default();
    facts.push((
        "АРМ выключали в рабочее время".into(),
        format!(
            "{} из {} АРМ, всего {} ч, {} АРМ-дней",
            off_sum.hosts_off,
            off_sum.hosts,
            fmt::hours(off_sum.off_w_ms),
            off_sum.off_days
        ),
    ));
    let off_lines: Vec<OffLine> = off
        .mos
        .first()
        .map(|m| m.top.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|h| OffLine {
            href: format!("/host/{}/{}", h.mo, h.host),
            name: if h.hostname.is_empty() {
                h.host.clone()
            } else {
                h.hostname.clone()
            },
            site: h.site.clone(),
            hours: fmt::hours(h.off_w_ms),
            hours_v: h.off_w_ms,
            days: h.off_days,
        })
        .collect();
    if let crate::availability::Availability::Mo { rows, .. } = avail
        && let Some(r) = rows.iter().find(|r| r.mo == oid)
    {
        facts.push((
            "Доступность серверов (круглосуточно)".into(),
            fmt::pct(r.servers.availability_pct),
        ));
        facts.push((
            "Доступность АРМ (в рабочие часы)".into(),
            fmt::pct(r.workstations.availability_pct),
        ));
    }
    if let crate::availability::Availability::Target { rows, .. } = reach {
        for t in rows {
            if let Some(m) = t.mos.iter().find(|m| m.mo == oid) {
                facts.push((
                    format!("Доступность из МО: {}", t.category.title_ru()),
                    fmt::pct(m.reachability_pct),
                ));
                facts.push((
                    format!("Качество канала МО к ресурсу «{}»", t.category.title_ru()),
                    fmt::pct(m.channel_quality_pct),
                ));
            }
        }
    }
    (period.label, facts, String::new(), off_lines)
}

// ---------------------------------------------------------------------------------------------
// Host page

/// A probe target of the host page.
pub(crate) struct ProbeLine {
    pub target: String,
    pub category: &'static str,
    pub ok: bool,
    pub result: String,
    pub latency: String,
    pub at: String,
}

/// A choice of the history window.
pub(crate) struct RangeLink {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "host.html")]
pub(crate) struct HostPage {
    pub v: Viewer,
    pub mo_name: String,
    pub mo_href: String,
    pub host: String,
    pub name: String,
    pub site: String,
    pub role: &'static str,
    pub state: &'static str,
    pub state_class: &'static str,
    pub ip: String,
    pub os: String,
    pub inventory: Vec<(&'static str, String)>,
    pub uptime: String,
    pub boot: String,
    pub last_seen: String,
    pub probes: Vec<ProbeLine>,
    pub ranges: Vec<RangeLink>,
    pub range_label: &'static str,
    pub charts: Vec<Chart>,
    pub boots: Vec<String>,
    pub incidents: Vec<IncidentLine>,
    pub history_note: String,
    pub planned: Vec<super::planned::PlannedLine>,
    /// The live record's warnings (a cloned machine id, …).
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RangeQuery {
    range: Option<String>,
}

/// History windows of the host page: (key, label, length).
const RANGES: [(&str, &str, i64); 5] = [
    ("hour", "час", 3_600_000),
    ("day", "сутки", 86_400_000),
    ("week", "неделя", 7 * 86_400_000),
    ("month", "30 дней", 30 * 86_400_000),
    ("90d", "90 дней", 90 * 86_400_000),
];

/// `GET /host/{mo}/{host}`: the host's live record, inventory, probes, history charts and
/// incidents (`?range=day|week|month|90d`).
pub(super) async fn host(
    State(s): State<UiState>,
    who: Option<Extension<Principal>>,
    Path((mo, host)): Path<(String, String)>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let range = q.range.as_deref().unwrap_or("day");
    let &(key, label, len) = RANGES.iter().find(|r| r.0 == range).ok_or_else(|| {
        ApiError::field(
            "range",
            format!("{range:?}: ожидается hour, day, week, month или 90d"),
        )
    })?;
    let now = s.now();
    let live = s
        .snapshot
        .borrow()
        .hosts
        .iter()
        .find(|h| h.mo == mo && h.host_id == host)
        .cloned();
    let hist = load_history(&s, &mo, &host, now - len, now).await;
    let hist = match hist {
        Ok(h) => h,
        Err(e) if live.is_some() => {
            tracing::debug!(error = ?e, "host page without history");
            None
        }
        Err(e) => return Err(e),
    };
    if live.is_none() && hist.is_none() {
        return Err(ApiError::NotFound(format!("хост {host} в МО {mo}")));
    }
    let page = host_page(
        &s,
        Viewer::of(who.as_deref()),
        &mo,
        &host,
        live.as_deref(),
        hist.as_ref(),
        key,
        label,
        now,
    );
    render(&page)
}

pub(super) async fn load_history(
    s: &UiState,
    mo: &str,
    host: &str,
    from: i64,
    to: i64,
) -> Result<Option<HostHistory>, ApiError> {
    let (db, mo, host, gap) = (
        s.db.clone(),
        mo.to_string(),
        host.to_string(),
        s.store.gap_factor,
    );
    let now = s.now();
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let c = history::open(&db)?;
        history::load(&c, &mo, &host, from, to, now, gap, &store.planned_works)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("history task: {e}")))?
    .map_err(|e| match e {
        crate::store::StoreError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            ApiError::Unavailable("хранилище истории ещё не создано".into())
        }
        e => ApiError::Internal(format!("history: {e}")),
    })
}

/// Builds the host page (also used by the benchmark).
#[allow(clippy::too_many_arguments)]
pub(crate) fn host_page(
    s: &UiState,
    v: Viewer,
    mo: &str,
    host: &str,
    live: Option<&Host>,
    hist: Option<&HostHistory>,
    key: &str,
    label: &'static str,
    now: i64,
) -> HostPage {
    let tz = s.tz();
    let stored_inv: Option<Birth> = hist
        .and_then(|h| h.inventory.as_deref())
        .and_then(|j| serde_json::from_str(j).ok());
    let inv: Option<&Birth> = live
        .and_then(|h| h.inventory.as_deref())
        .or(stored_inv.as_ref());
    let name = live
        .map(display_name)
        .filter(|n| !n.is_empty())
        .or_else(|| hist.map(|h| h.hostname.clone()).filter(|n| !n.is_empty()))
        .unwrap_or_else(|| host.to_string());
    let site = live
        .map(|h| h.site.clone())
        .or_else(|| hist.map(|h| h.site.clone()))
        .unwrap_or_default();
    let role = live
        .and_then(|h| h.role)
        .or_else(|| hist.and_then(|h| h.role));
    let mut inventory = Vec::new();
    if let Some(b) = inv {
        inventory.push((
            "Процессор",
            format!("{} ({} ядер)", b.cpu_model, b.cpu_count),
        ));
        inventory.push(("Память", fmt::gib(b.mem_total_bytes)));
        for d in &b.disks {
            inventory.push(("Диск", format!("{} — {}", d.mount, fmt::gib(d.total_bytes))));
        }
        inventory.push(("Версия агента", b.agent_version.clone()));
        inventory.push((
            "Проверяемые сервисы",
            b.targets
                .iter()
                .map(|t| format!("{} ({})", t.name, t.category.title_ru()))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    let probes = live
        .map(|h| {
            h.probes
                .iter()
                .map(|p| ProbeLine {
                    target: p.target.clone(),
                    category: p.category.title_ru(),
                    ok: p.ok,
                    result: if p.ok {
                        "доступен".into()
                    } else {
                        fmt::probe_error(p.error, p.status)
                    },
                    latency: p.latency_ms.map_or("—".into(), |l| format!("{l} мс")),
                    at: fmt::datetime(tz, p.at_ms),
                })
                .collect()
        })
        .unwrap_or_default();
    let (from, to) = hist.map_or((now - 86_400_000, now), |h| (h.from_ms, h.to_ms));
    let mut charts = Vec::new();
    let mut boots = Vec::new();
    if let Some(h) = hist {
        let ftime = |t: i64| fmt::datetime(tz, t);
        charts.push(svg::timeline(
            from,
            to,
            &h.availability,
            &h.boots,
            tz,
            ftime,
        ));
        let series = |f: fn(&history::ResPoint) -> f64| -> Vec<(i64, f64)> {
            h.resources.iter().map(|p| (p.t, f(p))).collect()
        };
        charts.push(svg::line_chart(
            "chart-cpu",
            "Загрузка процессора",
            " %",
            from,
            to,
            h.step_ms,
            100.0,
            &[
                ("l-avg", "средняя".into(), series(|p| p.cpu_avg)),
                ("l-max", "максимум".into(), series(|p| p.cpu_max)),
            ],
            tz,
        ));
        charts.push(svg::line_chart(
            "chart-mem",
            "Занятая память",
            " %",
            from,
            to,
            h.step_ms,
            100.0,
            &[
                ("l-avg", "средняя".into(), series(|p| p.mem_avg)),
                ("l-max", "максимум".into(), series(|p| p.mem_max)),
            ],
            tz,
        ));
        charts.push(svg::line_chart(
            "chart-disk",
            "Заполнение самого занятого диска",
            " %",
            from,
            to,
            h.step_ms,
            100.0,
            &[("l-max", "максимум".into(), series(|p| p.disk_max))],
            tz,
        ));
        const CLASSES: [&str; 6] = ["l-s1", "l-s2", "l-s3", "l-s4", "l-s5", "l-s6"];
        let lat: Vec<svg::Series> = h
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    CLASSES[i % CLASSES.len()],
                    format!("{} ({})", p.category.title_ru(), p.target),
                    p.points
                        .iter()
                        .filter_map(|x| x.latency_ms.map(|l| (x.t, l)))
                        .collect(),
                )
            })
            .collect();
        let lat_max = lat
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        charts.push(svg::line_chart(
            "chart-latency",
            "Время ответа сервисов",
            " мс",
            from,
            to,
            h.step_ms,
            nice_max(lat_max),
            &lat,
            tz,
        ));
        boots = h
            .boots
            .iter()
            .rev()
            .take(20)
            .map(|b| fmt::datetime(tz, *b))
            .collect();
    }
    let incidents = s
        .incidents()
        .iter()
        .rev()
        .filter(|i| i.hosts.iter().any(|x| x == host) && i.mos.iter().any(|m| m.oid == mo))
        .take(30)
        .map(|i| overview::incident_line(i, tz, now))
        .collect();
    HostPage {
        planned: super::planned::for_host(s, mo, &site, host, now),
        v,
        mo_name: s.mo_name(mo),
        mo_href: format!("/mo/{mo}"),
        host: host.to_string(),
        name,
        site: if site.is_empty() {
            "не указано".into()
        } else {
            site
        },
        role: fmt::role(role),
        state: live.map_or("нет в текущем состоянии", |h| {
            fmt::conn_state(h.state)
        }),
        state_class: live.map_or("st-off", state_class),
        // The agent's birth message carries no address (protocol v1).
        ip: "агент не сообщает".into(),
        os: inv.map_or_else(|| "—".into(), |b| format!("{} {}", b.os_name, b.os_version)),
        inventory,
        uptime: live.filter(|h| h.state == ConnState::Online).map_or_else(
            || "—".into(),
            |h| fmt::duration(h.uptime_secs as i64 * 1000),
        ),
        boot: live
            .filter(|h| h.boot_time > 0)
            .map_or_else(|| "—".into(), |h| fmt::datetime(tz, h.boot_time * 1000)),
        last_seen: live.map_or_else(|| "—".into(), |h| fmt::datetime(tz, h.last_seen_ms)),
        probes,
        ranges: RANGES
            .iter()
            .map(|r| RangeLink {
                href: format!("/host/{mo}/{host}?range={}", r.0),
                label: r.1,
                current: r.0 == key,
            })
            .collect(),
        range_label: label,
        charts,
        boots,
        incidents,
        warnings: live.map(|h| h.warnings.clone()).unwrap_or_default(),
        history_note: if hist.is_none() {
            "История ещё не записана в хранилище.".into()
        } else {
            String::new()
        },
    }
}

/// A round upper bound for a chart's axis (1, 2, 5 × 10ⁿ).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 100.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|k| k * p)
        .find(|x| *x >= v)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::nice_max;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 100.0);
        assert_eq!(nice_max(37.0), 50.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(5000.0), 5000.0);
    }
}
