//! HTTP handlers of the reports, merged into the collector's API router:
//!
//! - `GET /api/v1/availability?from=&to=&by=host|mo|target[&format=csv|xlsx]`
//! - `GET /api/v1/counts?from=&to=[&format=csv|xlsx]`
//! - `GET /api/v1/indicators?period=2024-Q1` (or `from=&to=`) `[&format=csv|xlsx]`
//! - `GET /api/v1/offhours?period=…[&top=20][&mo=OID][&format=csv|xlsx]`: workstations most
//!   often switched off in working hours
//!
//! `from`/`to` accept RFC 3339 instants, Unix ms or dates (a date `to` is inclusive); `period`
//! accepts `2024`, `2024-Q1`, `2024-03`, `2024-W10`, `2024-03-05`. JSON by default; `format`
//! gives a file download with Russian headers.

use super::{Format, export};
use crate::api_error::{ApiError, Query};
use crate::availability::{AvailabilityBy, Ms, Period};
use crate::roster::Roster;
use crate::store::config::StoreConfig;
use crate::store::{Reader, StoreError};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// What the report handlers need.
#[derive(Clone)]
pub struct ReportState {
    /// The SQLite store (`data_dir/dozor.db`).
    pub db: PathBuf,
    pub roster: Arc<Roster>,
    pub cfg: Arc<StoreConfig>,
    /// Current time, Unix ms (injected for tests).
    pub clock: Arc<dyn Fn() -> Ms + Send + Sync>,
}

impl std::fmt::Debug for ReportState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportState")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl ReportState {
    pub fn new(db: PathBuf, roster: Arc<Roster>, cfg: StoreConfig) -> ReportState {
        ReportState {
            db,
            roster,
            cfg: Arc::new(cfg),
            clock: crate::clock::system_clock(),
        }
    }
}

/// Errors of the report endpoints.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A parameter is missing or malformed: the parameter and what is wrong (Russian).
    #[error("{0}: {1}")]
    BadRequest(&'static str, String),
    /// The store has not been created yet (no data).
    #[error("history store not available")]
    NoStore,
    /// Anything else: logged, answered without details.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ReportError {
    fn from(e: StoreError) -> ReportError {
        match e {
            StoreError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => ReportError::NoStore,
            e => ReportError::Internal(e.to_string()),
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e {
            ReportError::BadRequest(field, message) => ApiError::field(field, message),
            ReportError::NoStore => {
                ApiError::Unavailable("хранилище истории ещё не создано".into())
            }
            ReportError::Internal(e) => ApiError::Internal(format!("report: {e}")),
        }
    }
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Query parameters of the report endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    pub period: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: Option<String>,
    pub format: Option<String>,
    /// `offhours`: how many workstations to list.
    pub top: Option<String>,
    /// `offhours`: one МО only.
    pub mo: Option<String>,
}

impl ReportQuery {
    fn period(&self, cfg: &StoreConfig) -> Result<Period, ReportError> {
        // The availability crate's errors are English (it also serves the CLI): told in
        // Russian here, naming the parameter.
        match (&self.period, &self.from, &self.to) {
            (Some(p), None, None) => super::parse_period(p, cfg).map_err(|_| {
                ReportError::BadRequest(
                    "period",
                    format!("{p:?}: ожидается 2024, 2024-Q1, 2024-03, 2024-W10 или 2024-03-05"),
                )
            }),
            (None, Some(f), Some(t)) => Period::range(f, t, cfg.region_tz).map_err(|_| {
                ReportError::BadRequest(
                    "from",
                    format!(
                        "from {f:?}, to {t:?}: ожидаются момент RFC 3339, Unix ms или дата \
                         ГГГГ-ММ-ДД, from раньше to"
                    ),
                )
            }),
            (Some(_), _, _) => Err(ReportError::BadRequest(
                "period",
                "укажите либо period, либо from и to, не всё вместе".into(),
            )),
            _ => Err(ReportError::BadRequest(
                "period",
                "нужен period (2024-Q1, 2024-03, 2024-W10, 2024-03-05, 2024) или from и to".into(),
            )),
        }
    }

    fn format(&self) -> Result<Format, ReportError> {
        match self.format.as_deref() {
            None => Ok(Format::Json),
            Some(f) => Format::parse(f).ok_or_else(|| {
                ReportError::BadRequest("format", format!("{f:?}: ожидается json, csv или xlsx"))
            }),
        }
    }
}

/// The report routes; merge into the API router.
pub fn router(state: ReportState) -> Router {
    Router::new()
        .route("/api/v1/availability", get(availability))
        .route("/api/v1/counts", get(counts))
        .route("/api/v1/indicators", get(indicators))
        .route("/api/v1/offhours", get(offhours))
        .with_state(state)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReportError> + Send + 'static,
) -> Result<T, ReportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReportError::Internal(format!("report task: {e}")))?
}

/// A file of `tables`: the first as CSV, all as the sheets of an XLSX workbook.
fn file(format: Format, name: &str, tables: &[export::Table]) -> Result<Response, ReportError> {
    // JSON is answered by the handlers before a file is built.
    let (bytes, ctype) = if format == Format::Xlsx {
        (
            export::workbook(tables).map_err(|e| ReportError::Internal(format!("xlsx: {e}")))?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
    } else {
        (
            tables
                .first()
                .map(export::Table::to_csv)
                .unwrap_or_default(),
            "text/csv; charset=utf-8",
        )
    };
    let disposition = format!("attachment; filename=\"{name}.{}\"", format.extension());
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// A file name from a period spec: ASCII letters, digits, `-`.
fn safe(spec: &str) -> String {
    spec.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect()
}

async fn availability(
    State(s): State<ReportState>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ReportError> {
    let period = q.period(&s.cfg)?;
    let format = q.format()?;
    let by = match q.by.as_deref() {
        None => AvailabilityBy::Mo,
        Some(b) => AvailabilityBy::parse(b).ok_or_else(|| {
            ReportError::BadRequest("by", format!("{b:?}: ожидается host, mo или target"))
        })?,
    };
    let now = (s.clock)();
    let st = s.clone();
    let (from, to) = (period.from_ms, period.to_ms);
    let a = blocking(move || {
        let r = Reader::open(&st.db, &st.cfg)?;
        Ok(super::availability(&r, &st.roster, from, to, by, now)?)
    })
    .await?;
    if format == Format::Json {
        return Ok(axum::Json(a).into_response());
    }
    let t = export::availability_table(&a, s.cfg.region_tz);
    file(
        format,
        &format!("dozor-availability-{}", safe(&period.spec)),
        &[t],
    )
}

async fn counts(
    State(s): State<ReportState>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ReportError> {
    let period = q.period(&s.cfg)?;
    let format = q.format()?;
    let now = (s.clock)();
    let st = s.clone();
    let (from, to) = (period.from_ms, period.to_ms);
    let c = blocking(move || {
        let r = Reader::open(&st.db, &st.cfg)?;
        Ok(super::counts(&r, &st.roster, from, to, now)?)
    })
    .await?;
    if format == Format::Json {
        return Ok(axum::Json(c).into_response());
    }
    let t = export::counts_table(&c, s.cfg.region_tz);
    file(
        format,
        &format!("dozor-counts-{}", safe(&period.spec)),
        &[t],
    )
}

async fn indicators(
    State(s): State<ReportState>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ReportError> {
    let period = q.period(&s.cfg)?;
    let format = q.format()?;
    let now = (s.clock)();
    let st = s.clone();
    let p = period.clone();
    let t = blocking(move || {
        let r = Reader::open(&st.db, &st.cfg)?;
        Ok(super::indicators(&r, &st.roster, &st.cfg, &p, now)?)
    })
    .await?;
    if format == Format::Json {
        return Ok(axum::Json(t).into_response());
    }
    file(
        format,
        &format!("dozor-indicators-{}", safe(&period.spec)),
        &export::indicators_workbook(&t),
    )
}

async fn offhours(
    State(s): State<ReportState>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ReportError> {
    let period = q.period(&s.cfg)?;
    let format = q.format()?;
    let top = match q.top.as_deref() {
        None => super::DEFAULT_TOP,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=super::MAX_TOP).contains(n))
            .ok_or_else(|| {
                ReportError::BadRequest(
                    "top",
                    format!("{t:?}: ожидается целое число от 1 до {}", super::MAX_TOP),
                )
            })?,
    };
    let mo = q.mo.clone().filter(|m| !m.is_empty());
    let now = (s.clock)();
    let st = s.clone();
    let (from, to) = (period.from_ms, period.to_ms);
    let o = blocking(move || {
        let r = Reader::open(&st.db, &st.cfg)?;
        Ok(super::offhours(
            &r,
            &st.roster,
            from,
            to,
            top,
            mo.as_deref(),
            now,
        )?)
    })
    .await?;
    if format == Format::Json {
        return Ok(axum::Json(o).into_response());
    }
    file(
        format,
        &format!("dozor-offhours-{}", safe(&period.spec)),
        &export::offhours_tables(&o, s.cfg.region_tz),
    )
}
