//! The enforcing middleware (Host and Origin allow-list, who is asking, the route's role, CSRF
//! for cookie sessions, audit of every change) and the routes of login, sessions, users, API
//! tokens, enrollment tokens and the audit log.

use super::db::{AuthDb, AuthDbError, LocalAuthenticator};
use super::{
    Authenticator, Decision, Need, Principal, Role, Via, changes, decide, host_checked, required,
};
use crate::api_error::ApiError;
use crate::clock::Clock;
use crate::identity::db::IdentityDb;
use crate::tls::PeerAddr;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The session cookie's name.
const COOKIE: &str = "dozor_session";
/// Failed logins allowed per user and address in [`FAILURE_WINDOW_MS`].
const MAX_LOGIN_FAILURES: u32 = 10;
const FAILURE_WINDOW_MS: i64 = 15 * 60_000;
/// (user, address) pairs tracked at once.
const MAX_TRACKED: usize = 10_000;

/// The HTTP side's settings (validated from `[http]`).
#[derive(Debug, Clone)]
pub(crate) struct HttpAuthConfig {
    /// GET/HEAD of the pages, the API and `/metrics` without login.
    pub public_read: bool,
    /// Host names (no port, lower case) the API answers to.
    pub allowed_hosts: Vec<String>,
    /// The listener is HTTPS: cookies get `Secure`, same-origin means `https://`.
    pub https: bool,
}

#[derive(Default)]
struct Counters {
    login_ok: AtomicU64,
    login_failed: AtomicU64,
    login_limited: AtomicU64,
    refused_host: AtomicU64,
    refused_origin: AtomicU64,
    refused_csrf: AtomicU64,
    unauthenticated: AtomicU64,
    forbidden: AtomicU64,
}

struct Inner {
    db: Arc<Mutex<AuthDb>>,
    ids: Mutex<IdentityDb>,
    authn: Box<dyn Authenticator>,
    cfg: HttpAuthConfig,
    clock: Clock,
    failures: Mutex<HashMap<(String, IpAddr), (i64, u32)>>,
    counters: Counters,
}

/// Shared state of the middleware and the auth routes.
#[derive(Clone)]
pub(crate) struct AuthState(Arc<Inner>);

impl AuthState {
    /// Opens `auth.db` (and a connection to `identity.db` for the enrollment-token routes).
    pub(crate) fn open(
        data_dir: &std::path::Path,
        cfg: HttpAuthConfig,
        clock: Clock,
    ) -> Result<AuthState, AuthDbError> {
        let db = Arc::new(Mutex::new(AuthDb::open(&super::db::path(data_dir))?));
        let ids = IdentityDb::open(&crate::identity::db::path(data_dir))
            .map_err(|e| AuthDbError::Invalid(format!("identity.db: {e}")))?;
        Ok(AuthState(Arc::new(Inner {
            authn: Box::new(LocalAuthenticator(db.clone())),
            db,
            ids: Mutex::new(ids),
            cfg,
            clock,
            failures: Mutex::default(),
            counters: Counters::default(),
        })))
    }

    fn now(&self) -> i64 {
        (self.0.clock)()
    }

    /// Runs `f` on `auth.db` on a blocking thread (SQLite and Argon2 never run on the runtime).
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AuthDb) -> Result<T, AuthDbError> + Send + 'static,
    ) -> Result<T, Response> {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || {
            let db = me.0.db.lock().unwrap_or_else(|p| p.into_inner());
            f(&db)
        })
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(db_error(e)),
            Err(e) => {
                tracing::error!(error = %e, "auth.db task failed");
                Err(internal())
            }
        }
    }

    /// Writes the login and refusal counters.
    pub(crate) fn write_metrics(&self, out: &mut String) {
        let c = &self.0.counters;
        let mut f = crate::metrics::Families::default();
        let logins = f.counter("dozor_http_logins_total", "HTTP logins, by outcome.");
        for (k, v) in [
            ("ok", &c.login_ok),
            ("bad_credentials", &c.login_failed),
            ("rate_limited", &c.login_limited),
        ] {
            logins.sample(&[("outcome", k)], v.load(Relaxed));
        }
        let refused = f.counter(
            "dozor_http_refused_total",
            "HTTP requests refused by authentication and the allow-lists, by reason.",
        );
        for (k, v) in [
            ("host", &c.refused_host),
            ("origin", &c.refused_origin),
            ("csrf", &c.refused_csrf),
            ("unauthenticated", &c.unauthenticated),
            ("forbidden", &c.forbidden),
        ] {
            refused.sample(&[("reason", k)], v.load(Relaxed));
        }
        f.write(out);
    }

    fn limited(&self, key: &(String, IpAddr), now: i64) -> bool {
        let f = self.0.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(key)
            .is_some_and(|(start, n)| now - start < FAILURE_WINDOW_MS && *n >= MAX_LOGIN_FAILURES)
    }

    fn failed(&self, key: (String, IpAddr), now: i64) {
        let mut f = self.0.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() >= MAX_TRACKED && !f.contains_key(&key) {
            f.retain(|_, (start, _)| now - *start < FAILURE_WINDOW_MS);
            if f.len() >= MAX_TRACKED {
                return;
            }
        }
        let e = f.entry(key).or_insert((now, 0));
        if now - e.0 >= FAILURE_WINDOW_MS {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    /// Appends an audit entry before the response goes out (a failed write is logged).
    async fn audit(&self, who: String, ip: String, action: String, status: u16, detail: String) {
        let now = self.now();
        // `db` has logged the error already.
        let _ = self
            .db(move |db| db.audit(now, &who, &ip, &action, status, &detail))
            .await;
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

fn internal() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "внутренняя ошибка сервера",
    )
}

fn db_error(e: AuthDbError) -> Response {
    match e {
        AuthDbError::NotFound(what) => ApiError::NotFound(what).into_response(),
        AuthDbError::Exists(what) => {
            ApiError::BadRequest(format!("пользователь {what} уже есть")).into_response()
        }
        AuthDbError::Invalid(why) => ApiError::BadRequest(why).into_response(),
        e => {
            tracing::error!(error = %e, "auth.db");
            internal()
        }
    }
}

fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "требуется вход: войдите или передайте токен API",
    )
}

fn forbidden(message: &str) -> Response {
    error(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The host name of a `Host` header, without the port, lower case.
fn host_name(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.to_ascii_lowercase()
}

/// The value of cookie `name`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip())
}

/// Who is asking: a bearer token, else a session cookie, else nobody.
async fn principal(
    st: &AuthState,
    headers: &HeaderMap,
) -> Result<Option<(Principal, Option<String>)>, Response> {
    let now = st.now();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let Some(token) = auth
            .to_str()
            .ok()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
        else {
            return Ok(None);
        };
        let found = st.db(move |db| db.check_api_token(&token, now)).await?;
        return Ok(found.map(|(name, role)| {
            (
                Principal {
                    name: format!("token:{name}"),
                    role,
                    via: Via::Bearer,
                },
                None,
            )
        }));
    }
    let Some(c) = cookie(headers, COOKIE).map(str::to_string) else {
        return Ok(None);
    };
    let found = st.db(move |db| db.session(&c, now)).await?;
    Ok(found.map(|s| {
        (
            Principal {
                name: s.user,
                role: s.role,
                via: Via::Session,
            },
            Some(s.csrf),
        )
    }))
}

/// The middleware: every request of the HTTP listener goes through it.
pub(crate) async fn enforce(State(st): State<AuthState>, mut req: Request, next: Next) -> Response {
    let c = &st.0.counters;
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    if host_checked(req.method(), req.uri().path())
        && !st.0.cfg.allowed_hosts.contains(&host_name(&host))
    {
        c.refused_host.fetch_add(1, Relaxed);
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            "имя сервера в запросе (Host) не разрешено: http.allowed_hosts",
        );
    }
    let method = req.method().clone();
    if changes(&method)
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let scheme = if st.0.cfg.https { "https" } else { "http" };
        if origin.to_str().ok() != Some(format!("{scheme}://{host}").as_str()) {
            c.refused_origin.fetch_add(1, Relaxed);
            return forbidden("запрос с другого сайта (Origin) отклонён");
        }
    }
    let path = req.uri().path().to_string();
    let need = required(&method, &path, st.0.cfg.public_read);
    // Open routes (health probes, agents enrolling, the login) cost no database lookup; pages
    // readable without login still learn who is logged in (the header, the operator's forms).
    let lookup = need != Need::Public || (st.0.cfg.public_read && super::is_page(&path));
    let who = if !lookup {
        None
    } else {
        match principal(&st, req.headers()).await {
            Ok(w) => w,
            Err(resp) => return resp,
        }
    };
    match decide(need, who.as_ref().map(|(p, _)| p.role)) {
        Decision::Allow => {}
        Decision::Unauthenticated => {
            c.unauthenticated.fetch_add(1, Relaxed);
            // A person opening a page gets the login form (and comes back after it), not JSON.
            if method == axum::http::Method::GET && super::is_page(&path) {
                let to = match req.uri().path_and_query().map(|p| p.as_str()) {
                    Some("/") | None => "/login".to_string(),
                    Some(back) => format!("/login?next={}", urlencode(back)),
                };
                let to = HeaderValue::from_str(&to).unwrap_or(HeaderValue::from_static("/login"));
                return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
            }
            return unauthenticated();
        }
        Decision::Forbidden => {
            c.forbidden.fetch_add(1, Relaxed);
            return forbidden("недостаточно прав для этого действия");
        }
    }
    if changes(&method)
        && need != Need::Public
        && let Some((_, Some(csrf))) = &who
    {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !constant_time_eq(sent, csrf.as_bytes()) {
            c.refused_csrf.fetch_add(1, Relaxed);
            return forbidden("нет или неверен заголовок X-CSRF-Token");
        }
    }
    let ip = peer_ip(&req).map(|i| i.to_string()).unwrap_or_default();
    let name = who.as_ref().map(|(p, _)| p.name.clone());
    if let Some((p, _)) = who {
        req.extensions_mut().insert(p);
    }
    let resp = next.run(req).await;
    // Login audits itself (it knows the user); enrollment is the agents' (counted on /metrics).
    if changes(&method) && need != Need::Public {
        st.audit(
            name.unwrap_or_default(),
            ip,
            format!("{method} {path}"),
            resp.status().as_u16(),
            String::new(),
        )
        .await;
    }
    resp
}

/// Percent-encodes everything but unreserved characters (a path and query as a parameter).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The auth routes (the middleware is layered over the whole router by `lib.rs`).
pub(crate) fn router(st: AuthState) -> Router {
    Router::new()
        .route("/login", get(login_page))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/session", get(session))
        .route("/api/v1/users", get(users).post(add_user))
        .route("/api/v1/users/{name}", delete(remove_user).patch(set_role))
        .route("/api/v1/api-tokens", get(api_tokens).post(create_api_token))
        .route("/api/v1/api-tokens/{id}", delete(revoke_api_token))
        .route("/api/v1/enrollment-tokens", get(etokens).post(new_etoken))
        .route("/api/v1/enrollment-tokens/{id}", delete(revoke_etoken))
        .route("/api/v1/audit", get(audit))
        .with_state(st)
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: JsonBody<T>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn login_page() -> Html<&'static str> {
    Html(include_str!("login.html"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

fn session_cookie(st: &AuthState, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if st.0.cfg.https { "; Secure" } else { "" };
    let v = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
    );
    // Hex and fixed text only: always a valid header value.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn login(
    State(st): State<AuthState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    b: JsonBody<LoginBody>,
) -> Response {
    let b = match body(b) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let c = &st.0.counters;
    let ip = peer.0.ip();
    let now = st.now();
    let key = (b.user.chars().take(64).collect::<String>(), ip);
    if st.limited(&key, now) {
        c.login_limited.fetch_add(1, Relaxed);
        st.audit(
            key.0,
            ip.to_string(),
            "login".into(),
            429,
            "rate limited".into(),
        )
        .await;
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "слишком много неудачных попыток входа; повторите через 15 минут",
        );
    }
    let me = st.clone();
    let (user, password) = (b.user.clone(), b.password);
    let checked =
        tokio::task::spawn_blocking(move || me.0.authn.authenticate(&user, &password)).await;
    let role = match checked {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return db_error(e),
        Err(_) => return internal(),
    };
    let Some(role) = role else {
        c.login_failed.fetch_add(1, Relaxed);
        st.failed(key.clone(), now);
        st.audit(key.0, ip.to_string(), "login".into(), 401, String::new())
            .await;
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "неверное имя пользователя или пароль",
        );
    };
    let user = b.user;
    let u = user.clone();
    let (cookie, csrf) = match st.db(move |db| db.create_session(&u, now)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    c.login_ok.fetch_add(1, Relaxed);
    st.audit(
        user.clone(),
        ip.to_string(),
        "login".into(),
        200,
        String::new(),
    )
    .await;
    let max_age = super::SESSION_ABSOLUTE_MS / 1000;
    (
        [(header::SET_COOKIE, session_cookie(&st, &cookie, max_age))],
        Json(serde_json::json!({ "user": user, "role": role, "csrf_token": csrf })),
    )
        .into_response()
}

async fn logout(State(st): State<AuthState>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie(&headers, COOKIE).map(str::to_string)
        && let Err(r) = st.db(move |db| db.end_session(&c)).await
    {
        return r;
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session_cookie(&st, "", 0))],
    )
        .into_response()
}

async fn session(
    State(st): State<AuthState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    let csrf = match (&p.via, cookie(&headers, COOKIE).map(str::to_string)) {
        (Via::Session, Some(c)) => {
            let now = st.now();
            match st.db(move |db| db.session(&c, now)).await {
                Ok(s) => s.map(|s| s.csrf),
                Err(r) => return r,
            }
        }
        _ => None,
    };
    Json(serde_json::json!({
        "user": p.name,
        "role": p.role,
        "via": if p.via == Via::Session { "session" } else { "bearer" },
        "csrf_token": csrf,
    }))
    .into_response()
}

async fn users(State(st): State<AuthState>) -> Response {
    st.db(|db| db.users())
        .await
        .map_or_else(|r| r, |u| Json(u).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: Role,
    password: String,
}

async fn add_user(State(st): State<AuthState>, b: JsonBody<NewUser>) -> Response {
    let b = match body(b) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let now = st.now();
    match st
        .db(move |db| db.add_user(&b.name, b.role, &b.password, now))
        .await
    {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(r) => r,
    }
}

/// Refuses a change that would leave no admin (nobody could manage users from then on).
fn keeps_an_admin(db: &AuthDb, name: &str, new_role: Option<Role>) -> Result<(), AuthDbError> {
    let users = db.users()?;
    let admins_after = users
        .iter()
        .filter(|u| {
            if u.name == name {
                new_role == Some(Role::Admin)
            } else {
                u.role == Role::Admin
            }
        })
        .count();
    if admins_after == 0
        && users
            .iter()
            .any(|u| u.name == name && u.role == Role::Admin)
    {
        return Err(AuthDbError::Invalid(
            "нельзя оставить систему без администратора".into(),
        ));
    }
    Ok(())
}

async fn remove_user(State(st): State<AuthState>, Path(name): Path<String>) -> Response {
    match st
        .db(move |db| {
            keeps_an_admin(db, &name, None)?;
            db.remove_user(&name)
        })
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
}

async fn set_role(
    State(st): State<AuthState>,
    Path(name): Path<String>,
    b: JsonBody<RoleBody>,
) -> Response {
    let b = match body(b) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match st
        .db(move |db| {
            keeps_an_admin(db, &name, Some(b.role))?;
            db.set_role(&name, b.role)
        })
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn api_tokens(State(st): State<AuthState>) -> Response {
    st.db(|db| db.api_tokens())
        .await
        .map_or_else(|r| r, |t| Json(t).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApiToken {
    name: String,
    role: Role,
    expires_days: Option<u32>,
}

async fn create_api_token(
    State(st): State<AuthState>,
    Extension(p): Extension<Principal>,
    b: JsonBody<NewApiToken>,
) -> Response {
    let b = match body(b) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let now = st.now();
    let expires = b.expires_days.map(|d| now + i64::from(d) * 86_400_000);
    token_created(
        st.db(move |db| db.create_api_token(&b.name, b.role, expires, &p.name, now))
            .await,
    )
}

/// 201 with a new token's id and text (shown once), or the error already answered.
fn token_created(r: Result<(String, String), Response>) -> Response {
    match r {
        Ok((id, token)) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": id, "token": token })),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn revoke_api_token(State(st): State<AuthState>, Path(id): Path<String>) -> Response {
    let now = st.now();
    match st.db(move |db| db.revoke_api_token(&id, now)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// Runs `f` on `identity.db` on a blocking thread.
async fn ids<T: Send + 'static>(
    st: &AuthState,
    f: impl FnOnce(&IdentityDb) -> Result<T, crate::identity::db::DbError> + Send + 'static,
) -> Result<T, Response> {
    let me = st.clone();
    match tokio::task::spawn_blocking(move || {
        let db = me.0.ids.lock().unwrap_or_else(|p| p.into_inner());
        f(&db)
    })
    .await
    {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(crate::identity::db::DbError::NotFound(what))) => {
            Err(ApiError::NotFound(what).into_response())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "identity.db");
            Err(internal())
        }
        Err(_) => Err(internal()),
    }
}

async fn etokens(State(st): State<AuthState>) -> Response {
    ids(&st, |db| db.tokens())
        .await
        .map_or_else(|r| r, |t| Json(t).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnrollmentToken {
    mo: String,
    max_uses: Option<u32>,
    expires_days: Option<u32>,
    #[serde(default)]
    note: String,
}

async fn new_etoken(
    State(st): State<AuthState>,
    Extension(p): Extension<Principal>,
    b: JsonBody<NewEnrollmentToken>,
) -> Response {
    let b = match body(b) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if !dozor_proto::valid_id(&b.mo) {
        return ApiError::BadRequest(format!("mo: {:?} не является идентификатором МО", b.mo))
            .into_response();
    }
    if b.note.chars().count() > 200 {
        return ApiError::BadRequest("note: не длиннее 200 символов".into()).into_response();
    }
    let now = st.now();
    let expires = b.expires_days.map(|d| now + i64::from(d) * 86_400_000);
    let note = if b.note.is_empty() {
        format!("by {}", p.name)
    } else {
        b.note
    };
    token_created(
        ids(&st, move |db| {
            db.create_token(&b.mo, b.max_uses, expires, &note, now)
        })
        .await,
    )
}

async fn revoke_etoken(State(st): State<AuthState>, Path(id): Path<String>) -> Response {
    let now = st.now();
    match ids(&st, move |db| db.revoke_token(&id, now)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit(State(st): State<AuthState>, Query(q): Query<AuditQuery>) -> Response {
    let limit = q.limit.unwrap_or(200).min(10_000);
    st.db(move |db| db.audit_log(limit))
        .await
        .map_or_else(|r| r, |a| Json(a).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_drop_the_port() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name(""), "");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; dozor_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
