//! Planned works at run time: the config's `[[planned_works]]` and those made over the API
//! (`/api/v1/planned-works`, kept in the store's `planned_works` table), shared through a
//! `watch` with the alert thread (works in force silence what they cover) and read by the web
//! UI. Reports read them from the store and the config themselves (`store::Reader`).

use crate::api_error::{ApiError, JsonBody, Path};
use crate::availability::planned::{RawPlannedWork, When};
use crate::clock::Clock;
use crate::roster::Roster;
use crate::store::planned::{self as stored, Entry, Source};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The longest one-off work accepted over the API, days: a "planned work" of months would
/// hide a real outage from every report.
const MAX_ONCE_DAYS: i64 = 31;
/// How far back an API work may start: announcing works after the fact would rewrite figures
/// already reported.
const MAX_BACKDATE_MS: i64 = 3_600_000;
/// The longest weekly window an API work may have: a longer one every week is not planned
/// works but a hole in the figures.
const MAX_WEEKLY_MIN: u16 = 12 * 60;

/// The planned works and where those made over the API are kept.
#[derive(Clone)]
pub(crate) struct PlannedState {
    db: PathBuf,
    config: Arc<Vec<Entry>>,
    roster: Arc<Roster>,
    tx: Arc<watch::Sender<Arc<Vec<Entry>>>>,
    clock: Clock,
}

impl std::fmt::Debug for PlannedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedState").finish_non_exhaustive()
    }
}

impl PlannedState {
    /// The config's works and those stored in the store at `db` (opened already).
    pub(crate) fn open(
        db: PathBuf,
        config: Vec<Entry>,
        roster: Arc<Roster>,
        clock: Clock,
    ) -> Result<PlannedState, crate::store::StoreError> {
        let mut all = config.clone();
        all.extend(stored::list(&stored::open_rw(&db)?)?);
        let (tx, _) = watch::channel(Arc::new(all));
        Ok(PlannedState {
            db,
            config: Arc::new(config),
            roster,
            tx: Arc::new(tx),
            clock,
        })
    }

    /// Every work, the config's first.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Vec<Entry>>> {
        self.tx.subscribe()
    }

    pub(crate) fn list(&self) -> Arc<Vec<Entry>> {
        self.tx.borrow().clone()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Re-reads the stored works after a change and tells the followers.
    fn reload(&self) -> Result<(), ApiError> {
        let conn = stored::open_rw(&self.db).map_err(internal)?;
        let mut all = Vec::clone(&self.config);
        all.extend(stored::list(&conn).map_err(internal)?);
        self.tx.send_replace(Arc::new(all));
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A planned work as listed: as given, with its id, where it comes from and its current or
/// next window.
#[derive(Debug, Serialize)]
pub(crate) struct WorkView {
    pub id: String,
    pub source: Source,
    #[serde(flatten)]
    pub raw: RawPlannedWork,
    /// The МО's name from the roster, for an МО, site or host scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mo_name: Option<String>,
    /// In force now.
    pub active: bool,
    /// The window in force now, or the next one within a week (`None`: over, or none soon).
    pub next_from_ms: Option<i64>,
    pub next_to_ms: Option<i64>,
    /// Weekly (`true`) or once.
    pub weekly: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub created_ms: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One entry as listed at `now`.
pub(crate) fn view(e: &Entry, roster: &Roster, now: i64) -> WorkView {
    let next = e
        .work
        .windows(now, now.saturating_add(7 * 86_400_000))
        .into_iter()
        .find(|&(_, to)| to > now);
    WorkView {
        id: e.id.clone(),
        source: e.source,
        raw: e.raw.clone(),
        mo_name: e
            .raw
            .mo
            .as_deref()
            .and_then(|m| roster.get(m))
            .map(|m| m.name.clone()),
        active: next.is_some_and(|(f, t)| f <= now && now < t),
        next_from_ms: next.map(|w| w.0),
        next_to_ms: next.map(|w| w.1),
        weekly: matches!(e.work.when, When::Weekly { .. }),
        created_by: e.created_by.clone(),
        created_ms: e.created_ms,
    }
}

/// The routes, to be merged into the collector's router.
pub(crate) fn router(state: PlannedState) -> Router {
    Router::new()
        .route("/api/v1/planned-works", get(list).post(create))
        .route("/api/v1/planned-works/{id}", get(one).delete(remove))
        .with_state(state)
}

async fn list(State(s): State<PlannedState>) -> Json<Vec<WorkView>> {
    let now = s.now_ms();
    Json(s.list().iter().map(|e| view(e, &s.roster, now)).collect())
}

async fn one(State(s): State<PlannedState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let now = s.now_ms();
    let list = s.list();
    let e = list
        .iter()
        .find(|e| e.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("плановые работы {id}")))?;
    Ok(Json(view(e, &s.roster, now)).into_response())
}

/// Checks a work given over the API: everything the config checks, plus an МО that the
/// roster knows and, for a one-off work, an end in the future and at most
/// [`MAX_ONCE_DAYS`] long. Errors are Russian and name the field.
pub(crate) fn check(
    raw: &RawPlannedWork,
    roster: &Roster,
    now: i64,
) -> Result<crate::availability::planned::PlannedWork, ApiError> {
    let work = raw.validate(0).map_err(|e| {
        let field = e.field.rsplit('.').next().unwrap_or("");
        let (field, hint): (&'static str, &str) = match field {
            "title" => ("title", "название обязательно, не длиннее 256 байт, без управляющих символов"),
            "mo" => ("mo", "укажите область: mo, mo + site, mo + host или target (без всего — весь регион)"),
            "site" => ("site", "название подразделения, не длиннее 256 байт"),
            "host" => ("host", "идентификатор хоста"),
            "target" => ("target", "категория ресурса (mis, iemk, lis, …) — и ничего больше из области"),
            "from" => ("from", "укажите from и to (разовые работы) или days, start, end, tz (еженедельные), но не то и другое"),
            "to" => ("to", "окончание — время RFC 3339 позже начала"),
            "days" => ("days", "дни недели: пн, вт, ср, чт, пт, сб, вс (или mon … sun)"),
            "start" => ("start", "время начала ЧЧ:ММ"),
            "end" => ("end", "время окончания ЧЧ:ММ"),
            "tz" => ("tz", "часовой пояс IANA, например \"Asia/Vladivostok\""),
            _ => ("body", "неверные плановые работы"),
        };
        ApiError::field(field, format!("{hint} ({})", e.message))
    })?;
    if let Some(mo) = &raw.mo
        && roster.get(mo).is_none()
    {
        return Err(ApiError::field("mo", format!("МО {mo:?} нет в реестре")));
    }
    if let When::Once { from, to } = work.when {
        if to <= now {
            return Err(ApiError::field("to", "окончание работ уже прошло"));
        }
        if from < now - MAX_BACKDATE_MS {
            return Err(ApiError::field(
                "from",
                "работы нельзя объявить задним числом: начало не раньше чем час назад",
            ));
        }
        if to - from > MAX_ONCE_DAYS * 86_400_000 {
            return Err(ApiError::field(
                "to",
                format!("разовые работы не дольше {MAX_ONCE_DAYS} дней"),
            ));
        }
    }
    if let When::Weekly {
        start_min, end_min, ..
    } = work.when
    {
        let len = if end_min > start_min {
            end_min - start_min
        } else {
            end_min + 24 * 60 - start_min
        };
        if len > MAX_WEEKLY_MIN {
            return Err(ApiError::field(
                "end",
                format!("еженедельное окно не длиннее {} ч", MAX_WEEKLY_MIN / 60),
            ));
        }
    }
    Ok(work)
}

async fn create(
    State(s): State<PlannedState>,
    who: Option<axum::Extension<crate::auth::Principal>>,
    JsonBody(mut raw): JsonBody<RawPlannedWork>,
) -> Result<Response, ApiError> {
    let now = s.now_ms();
    raw.title = raw.title.trim().to_string();
    // Listed as the config writes them, however they were typed (`Вс`, `SUN` → `sun`).
    for d in &mut raw.days {
        if let Some(c) = crate::availability::planned::canonical_day(d) {
            *d = c.to_string();
        }
    }
    check(&raw, &s.roster, now)?;
    let by = who.map(|w| w.0.name).unwrap_or_default();
    let s2 = s.clone();
    let id = tokio::task::spawn_blocking(move || -> Result<i64, ApiError> {
        let conn = stored::open_rw(&s2.db).map_err(internal)?;
        let id = stored::insert(&conn, &raw, &by, now)
            .map_err(internal)?
            .ok_or_else(|| {
                ApiError::LimitReached(format!(
                    "плановых работ уже {} — больше нельзя; удалите прошедшие",
                    stored::MAX_STORED
                ))
            })?;
        s2.reload()?;
        Ok(id)
    })
    .await
    .map_err(internal)??;
    let list = s.list();
    let e = list
        .iter()
        .find(|e| e.id == format!("p-{id}"))
        .ok_or_else(|| internal("the new planned work is not listed"))?;
    Ok((StatusCode::CREATED, Json(view(e, &s.roster, now))).into_response())
}

async fn remove(
    State(s): State<PlannedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.starts_with("config-") {
        return Err(ApiError::BadRequest(
            "плановые работы из конфигурации удаляются только в конфигурации".into(),
        ));
    }
    let n: i64 = id
        .strip_prefix("p-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::NotFound(format!("плановые работы {id}")))?;
    let s2 = s.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<bool, ApiError> {
        let conn = stored::open_rw(&s2.db).map_err(internal)?;
        let found = stored::delete(&conn, n).map_err(internal)?;
        s2.reload()?;
        Ok(found)
    })
    .await
    .map_err(internal)??;
    if !found {
        return Err(ApiError::NotFound(format!("плановые работы {id}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests;
