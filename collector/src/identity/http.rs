//! `POST /api/v1/enroll`: an agent trades its МО's enrollment token for its own identity.
//! Failures are counted and limited per source address, so a token cannot be guessed by
//! hammering the endpoint; the agent only ever learns `token_invalid`, never which check failed.

use super::db::{DbError, EnrollRequest};
use super::service::Identities;
use crate::clock::now_ms;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

/// Failed attempts allowed per source address per minute.
const MAX_FAILURES_PER_MIN: u32 = 20;
/// Addresses tracked at once (the oldest window is forgotten past it).
const MAX_TRACKED: usize = 10_000;

#[derive(Clone)]
struct EnrollState {
    ids: Arc<Identities>,
    failures: Arc<Mutex<HashMap<IpAddr, (i64, u32)>>>,
}

/// The enrollment route.
pub fn router(ids: Arc<Identities>) -> Router {
    Router::new()
        .route("/api/v1/enroll", post(enroll))
        .with_state(EnrollState {
            ids,
            failures: Arc::default(),
        })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

impl EnrollState {
    fn limited(&self, ip: IpAddr, now: i64) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&ip)
            .is_some_and(|(start, n)| now - start < 60_000 && *n >= MAX_FAILURES_PER_MIN)
    }

    fn failed(&self, ip: IpAddr, now: i64) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() >= MAX_TRACKED && !f.contains_key(&ip) {
            f.retain(|_, (start, _)| now - *start < 60_000);
            if f.len() >= MAX_TRACKED {
                return;
            }
        }
        let e = f.entry(ip).or_insert((now, 0));
        if now - e.0 >= 60_000 {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

async fn enroll(
    State(s): State<EnrollState>,
    ConnectInfo(crate::tls::PeerAddr(peer)): ConnectInfo<crate::tls::PeerAddr>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        // Over the API's body limit (64 KiB): the same JSON shape as every other error.
        s.ids.stats.bad_request.fetch_add(1, Relaxed);
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "Тело запроса слишком велико.",
        );
    };
    let now = now_ms();
    let ip = peer.ip();
    if s.limited(ip, now) {
        s.ids.stats.rate_limited.fetch_add(1, Relaxed);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Слишком много неудачных попыток регистрации с этого адреса; повторите через минуту.",
        );
    }
    let req: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) if body.len() <= 4096 => r,
        _ => {
            s.ids.stats.bad_request.fetch_add(1, Relaxed);
            s.failed(ip, now);
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Неверный запрос регистрации агента.",
            );
        }
    };
    match s.ids.enroll(req, now).await {
        Ok(issued) => {
            s.ids.stats.ok.fetch_add(1, Relaxed);
            tracing::info!(mo = %issued.mo, host = %issued.host, %ip, "agent enrolled");
            Json(serde_json::json!({
                "mo": issued.mo,
                "host": issued.host,
                "secret": issued.secret.to_hex(),
                "mqtt_username": dozor_proto::username(&issued.mo, &issued.host),
            }))
            .into_response()
        }
        Err(DbError::Token(why)) => {
            s.ids.stats.token_invalid.fetch_add(1, Relaxed);
            s.failed(ip, now);
            tracing::info!(%ip, reason = why.as_str(), "enrollment refused");
            error(
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "Токен регистрации недействителен: неизвестен, отозван, истёк или исчерпан. Запросите новый у администратора региона.",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "enrollment failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Внутренняя ошибка сборщика; повторите позже.",
            )
        }
    }
}
