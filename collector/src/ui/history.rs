//! `GET /api/v1/hosts/{mo}/{host}/history?from=&to=`: one host's stored history (resource
//! rollups, availability timeline, boots, probe reachability and latency) as JSON.

use super::UiState;
use crate::api_error::{ApiError, Path, Query};
use crate::store::history::MAX_WINDOW_MS;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Query of the history route: `from` and `to` as RFC 3339 or Unix ms (default: the last 24 h).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
}

/// An instant as RFC 3339 or Unix ms.
fn instant(field: &'static str, v: &str) -> Result<i64, ApiError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .or_else(|| crate::alerts::config::parse_time(v.trim()))
        .ok_or_else(|| {
            ApiError::field(
                field,
                format!("{v:?}: ожидается момент RFC 3339 или Unix ms"),
            )
        })
}

/// The window `[from, to)` of a request at `now`.
pub(super) fn window(q: &HistoryQuery, now: i64) -> Result<(i64, i64), ApiError> {
    let to =
        q.to.as_deref()
            .map(|v| instant("to", v))
            .transpose()?
            .unwrap_or(now);
    let from = q
        .from
        .as_deref()
        .map(|v| instant("from", v))
        .transpose()?
        .unwrap_or(to - 86_400_000);
    if from >= to {
        return Err(ApiError::field("from", "from должен быть раньше to"));
    }
    if to - from > MAX_WINDOW_MS {
        return Err(ApiError::field(
            "from",
            format!("окно не длиннее {} дней", MAX_WINDOW_MS / 86_400_000),
        ));
    }
    Ok((from, to))
}

pub(super) async fn api(
    State(s): State<UiState>,
    Path((mo, host)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = window(&q, s.now())?;
    let h = super::pages::load_history(&s, &mo, &host, from, to)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("хост {host} в МО {mo}")))?;
    Ok(Json(h).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>) -> HistoryQuery {
        HistoryQuery {
            from: from.map(str::to_string),
            to: to.map(str::to_string),
        }
    }

    #[test]
    fn windows_default_to_a_day_and_refuse_nonsense() {
        assert_eq!(
            window(&q(None, None), 100_000_000).unwrap(),
            (13_600_000, 100_000_000)
        );
        assert_eq!(
            window(&q(Some("2026-12-01T00:00:00Z"), Some("1796169600000")), 0).unwrap(),
            (1_796_083_200_000, 1_796_169_600_000)
        );
        let e = format!("{:?}", window(&q(Some("вчера"), None), 0).unwrap_err());
        assert!(e.contains("from"), "{e}");
        assert!(window(&q(Some("10"), Some("5")), 0).is_err());
        assert!(window(&q(Some("0"), Some(&(MAX_WINDOW_MS + 1).to_string())), 0).is_err());
    }
}
