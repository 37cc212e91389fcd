//! HTTP API of alerting: incidents and silences (maintenance windows), JSON.
//!
//! - `GET /api/v1/incidents?state=pending|firing|resolved&rule=…&mo=…&limit=N` (newest first)
//! - `GET /api/v1/incidents/{id}`
//! - `POST /api/v1/incidents/{id}/ack` with `{"comment": "…"}` (operator): acknowledge
//! - `GET /api/v1/silences`, `POST /api/v1/silences`, `DELETE /api/v1/silences/{id}`

use super::config::{MAX_SILENCE_TEXT, matcher_problem, parse_time};
use super::model::{Ack, IncidentState, Rule, Silence, SilenceMatch};
use super::service::AlertHandle;
use crate::api_error::{ApiError, JsonBody, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// The routes, to be merged into the collector's router.
pub(crate) fn router(handle: AlertHandle) -> Router {
    Router::new()
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/incidents/{id}/ack", post(acknowledge))
        .route("/api/v1/silences", get(silences).post(create_silence))
        .route("/api/v1/silences/{id}", get(silence).delete(delete_silence))
        .with_state(handle)
}

#[derive(Debug, Deserialize)]
struct IncidentQuery {
    state: Option<String>,
    rule: Option<String>,
    mo: Option<String>,
    limit: Option<usize>,
}

async fn incidents(
    State(h): State<AlertHandle>,
    Query(q): Query<IncidentQuery>,
) -> Result<Response, ApiError> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(IncidentState::parse(s).ok_or_else(|| {
            ApiError::field(
                "state",
                format!("{s:?}: ожидается pending, firing или resolved"),
            )
        })?),
    };
    let rule = match q.rule.as_deref() {
        None | Some("") => None,
        Some(r) => Some(
            Rule::parse(r)
                .ok_or_else(|| ApiError::field("rule", format!("неизвестное правило {r:?}")))?,
        ),
    };
    let all = h.incidents();
    let list: Vec<_> = all
        .iter()
        .rev()
        .filter(|i| state.is_none_or(|s| i.state == s))
        .filter(|i| rule.is_none_or(|r| i.rule == r))
        .filter(|i| {
            q.mo.as_deref()
                .is_none_or(|m| i.mos.iter().any(|x| x.oid == m))
        })
        .take(q.limit.unwrap_or(1000).min(10_000))
        .collect();
    Ok(Json(list).into_response())
}

async fn incident(State(h): State<AlertHandle>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let all = h.incidents();
    let i = all
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("инцидент {id}")))?;
    Ok(Json(i).into_response())
}

/// Body of `POST /api/v1/incidents/{id}/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAck {
    #[serde(default)]
    comment: String,
}

/// Acknowledges an incident: who is the authenticated caller (never the body), stored in
/// `incidents.db`; from now on its firings are not notified again (its recovery still is).
/// Answers the incident as listed, with its `ack`.
async fn acknowledge(
    State(h): State<AlertHandle>,
    who: Option<axum::Extension<crate::auth::Principal>>,
    Path(id): Path<u64>,
    JsonBody(b): JsonBody<NewAck>,
) -> Result<Response, ApiError> {
    if !dozor_proto::valid_text(&b.comment, MAX_SILENCE_TEXT) {
        return Err(ApiError::field(
            "comment",
            format!("не длиннее {MAX_SILENCE_TEXT} байт, без управляющих символов"),
        ));
    }
    let ack = Ack {
        by: who.map(|w| w.0.name).unwrap_or_default(),
        at_ms: h.now_ms(),
        comment: b.comment,
    };
    let inc = h
        .acknowledge(id, ack)
        .ok_or_else(|| ApiError::NotFound(format!("инцидент {id}")))?;
    Ok(Json(inc).into_response())
}

/// A silence as listed, with whether it is in force now.
#[derive(Serialize)]
struct SilenceView {
    #[serde(flatten)]
    silence: Silence,
    active: bool,
}

async fn silences(State(h): State<AlertHandle>) -> Json<Vec<SilenceView>> {
    let now = h.now_ms();
    Json(
        h.silences()
            .into_iter()
            .map(|s| SilenceView {
                active: s.active(now),
                silence: s,
            })
            .collect(),
    )
}

async fn silence(
    State(h): State<AlertHandle>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = h.now_ms();
    let s = h
        .silences()
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("тишина {id}")))?;
    Ok(Json(SilenceView {
        active: s.active(now),
        silence: s,
    })
    .into_response())
}

/// Body of `POST /api/v1/silences`: matchers, and an end as `until` (RFC 3339), `ends_ms` or
/// `duration_secs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    mo: Option<String>,
    target: Option<String>,
    host: Option<String>,
    rule: Option<String>,
    from: Option<String>,
    until: Option<String>,
    ends_ms: Option<i64>,
    duration_secs: Option<u64>,
    #[serde(default)]
    comment: String,
    /// Ignored (accepted so older clients keep working): the author is the authenticated caller.
    #[serde(default, rename = "created_by")]
    _created_by: serde::de::IgnoredAny,
}

/// Longest maintenance window accepted over the API, days.
const MAX_SILENCE_DAYS: i64 = 90;
/// Most silences kept at once (expired ones are dropped by the alert service). With every
/// field bounded (ids 64 bytes, texts 256) the book stays under ~1 MB however it is used: one
/// 1.9 MB matcher once took the collector from 64 to 316 MB (issue 10).
const MAX_SILENCES: usize = 1_000;

async fn create_silence(
    State(h): State<AlertHandle>,
    who: Option<axum::Extension<crate::auth::Principal>>,
    JsonBody(b): JsonBody<NewSilence>,
) -> Result<Response, ApiError> {
    let now = h.now_ms();
    let rule = match b.rule.as_deref() {
        Some(r) => Some(
            Rule::parse(r)
                .ok_or_else(|| ApiError::field("rule", format!("неизвестное правило {r:?}")))?,
        ),
        None => None,
    };
    let matcher = SilenceMatch {
        mo: b.mo,
        target: b.target,
        host: b.host,
        rule,
    };
    if matcher.is_empty() {
        return Err(ApiError::BadRequest(
            "укажите хотя бы одно из: mo, target, host, rule".into(),
        ));
    }
    if let Some((field, message)) = matcher_problem(&matcher) {
        return Err(ApiError::field(field, message));
    }
    for (field, v) in [("comment", &b.comment)] {
        if !dozor_proto::valid_text(v, MAX_SILENCE_TEXT) {
            return Err(ApiError::field(
                field,
                format!("не длиннее {MAX_SILENCE_TEXT} байт, без управляющих символов"),
            ));
        }
    }
    let starts_ms = match &b.from {
        Some(f) => parse_time(f)
            .ok_or_else(|| ApiError::field("from", format!("{f:?}: ожидается время RFC 3339")))?,
        None => now,
    };
    let end_field = match (&b.until, b.ends_ms) {
        (Some(_), _) => "until",
        (None, Some(_)) => "ends_ms",
        _ => "duration_secs",
    };
    let ends_ms = match (&b.until, b.ends_ms, b.duration_secs) {
        (Some(u), None, None) => parse_time(u)
            .ok_or_else(|| ApiError::field("until", format!("{u:?}: ожидается время RFC 3339")))?,
        (None, Some(e), None) => e,
        (None, None, Some(d)) => {
            starts_ms.saturating_add(i64::try_from(d.saturating_mul(1000)).unwrap_or(i64::MAX))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "укажите ровно одно из: until, ends_ms, duration_secs".into(),
            ));
        }
    };
    if ends_ms <= starts_ms.max(now) {
        return Err(ApiError::field(
            end_field,
            "окончание должно быть в будущем и после начала",
        ));
    }
    if ends_ms - starts_ms.max(now) > MAX_SILENCE_DAYS * 86_400_000 {
        return Err(ApiError::field(
            end_field,
            format!("тишина не дольше {MAX_SILENCE_DAYS} дней"),
        ));
    }
    // A start far ahead would let a window outlive the bound in the book.
    if starts_ms > now + MAX_SILENCE_DAYS * 86_400_000 {
        return Err(ApiError::field(
            "from",
            format!("начало не позже чем через {MAX_SILENCE_DAYS} дней"),
        ));
    }
    let mut book = h.book();
    if book.list.len() >= MAX_SILENCES {
        return Err(ApiError::LimitReached(format!(
            "тишин уже {MAX_SILENCES} — больше нельзя; удалите ненужные"
        )));
    }
    let id = format!("s-{}", book.next);
    book.next += 1;
    let s = Silence {
        id,
        matcher,
        starts_ms,
        ends_ms,
        comment: b.comment,
        // Who is asking, as authenticated (the body's `created_by` is ignored).
        created_by: who.map(|w| w.0.name).unwrap_or_default(),
        created_ms: now,
    };
    book.list.push(s.clone());
    book.version += 1;
    drop(book);
    Ok((
        StatusCode::CREATED,
        Json(SilenceView {
            active: s.active(now),
            silence: s,
        }),
    )
        .into_response())
}

async fn delete_silence(
    State(h): State<AlertHandle>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.starts_with("config-") {
        return Err(ApiError::BadRequest(
            "тишина из конфигурации удаляется только в конфигурации".into(),
        ));
    }
    let mut book = h.book();
    let before = book.list.len();
    book.list.retain(|s| s.id != id);
    if book.list.len() == before {
        return Err(ApiError::NotFound(format!("тишина {id}")));
    }
    book.version += 1;
    Ok(StatusCode::NO_CONTENT.into_response())
}
