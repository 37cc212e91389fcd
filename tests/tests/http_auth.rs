//! The HTTP API's authentication end to end, with the real collector binary and a real HTTP
//! client: the first admin from the CLI, roles, bearer tokens, browser sessions with CSRF,
//! the Origin and Host allow-lists, the audit log, failed logins limited and counted.

use dozor_tests::browser::Browser;
use dozor_tests::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

const ADMIN_PW: &str = "админ-пароль-2026";
const VIEWER_PW: &str = "viewer password";

/// A collector with an admin (password from stdin) and a viewer (password from a file).
fn start(dir: &Path) -> Collector {
    let data = dir.join("collector");
    collector_cli_stdin(
        &data,
        &["user", "add", "admin", "--role", "admin"],
        &format!("{ADMIN_PW}\n"),
    );
    let pw = dir.join("viewer-password");
    std::fs::write(&pw, format!("{VIEWER_PW}\n")).unwrap();
    collector_cli(
        &data,
        &[
            "user",
            "add",
            "ivanova",
            "--role",
            "viewer",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    let users = collector_cli(&data, &["user", "list"]);
    assert!(
        users.contains("\"name\":\"admin\",\"role\":\"admin\""),
        "{users}"
    );
    assert!(
        !users.contains(ADMIN_PW) && !users.contains("argon2"),
        "{users}"
    );
    Collector::start(&Broker::Embedded(0), &data, &[])
}

/// A bearer-token client with `role`, the token created by the CLI.
fn token_client(c: &Collector, name: &str, role: &str) -> reqwest::Client {
    let token = collector_cli(
        &c.data_dir,
        &["api-token", "create", "--name", name, "--role", role],
    );
    assert!(token.starts_with("dzt_"), "{token}");
    client_with_token(token.trim())
}

fn url(c: &Collector, path: &str) -> String {
    format!("http://{}{path}", c.http)
}

fn silence() -> Value {
    json!({"rule": "central_outage", "duration_secs": 600, "created_by": "mallory"})
}

/// The status and JSON body of a response.
async fn parts(r: reqwest::Response) -> (StatusCode, Value) {
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_wrong_role_writes_are_refused_and_tokens_work() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let anon = reqwest::Client::new();

    // Liveness and enrollment stay open; reading and writing need someone.
    assert_eq!(
        anon.get(url(&c, "/healthz")).send().await.unwrap().status(),
        200
    );
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(url(&c, "/")).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "the status page sends a person to the login form"
    );
    assert_eq!(r.headers()["location"], "/login");
    for path in ["/metrics", "/api/v1/hosts", "/api/v1/silences"] {
        let (s, body) = parts(anon.get(url(&c, path)).send().await.unwrap()).await;
        assert_eq!(s, 401, "GET {path}");
        assert_eq!(body["error"], "unauthenticated", "GET {path}: {body}");
        assert!(body["message"].as_str().unwrap().contains("вход"), "{body}");
    }
    let (s, body) = parts(
        anon.post(url(&c, "/api/v1/silences"))
            .json(&silence())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (s, _) = parts(
        anon.post(url(&c, "/api/v1/silences"))
            .bearer_auth("dzt_00000000_forged")
            .json(&silence())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401, "a forged token is nobody");

    // A viewer reads but may not silence or manage.
    let viewer = token_client(&c, "grafana", "viewer");
    assert_eq!(
        viewer
            .get(url(&c, "/api/v1/hosts"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        viewer
            .get(url(&c, "/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (s, body) = parts(
        viewer
            .post(url(&c, "/api/v1/silences"))
            .json(&silence())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(
        viewer
            .get(url(&c, "/api/v1/users"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // An operator silences; the author is the token, not the body's `created_by`.
    let ops = token_client(&c, "ops", "operator");
    let (s, body) = parts(
        ops.post(url(&c, "/api/v1/silences"))
            .json(&silence())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["created_by"], "token:ops", "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let r = ops
        .delete(url(&c, &format!("/api/v1/silences/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        ops.get(url(&c, "/api/v1/enrollment-tokens"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // The admin manages enrollment tokens, users and API tokens over the API.
    let (s, body) = parts(
        c.client
            .post(url(&c, "/api/v1/enrollment-tokens"))
            .json(&json!({"mo": "1.2.643.5.1.13.13.12.2.77.1", "max_uses": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let etok = body["id"].as_str().unwrap().to_string();
    let list: Value = c.get("/api/v1/enrollment-tokens").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == etok.as_str()),
        "{list}"
    );
    let r = c
        .client
        .delete(url(&c, &format!("/api/v1/enrollment-tokens/{etok}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .client
        .post(url(&c, "/api/v1/users"))
        .json(&json!({"name": "petrov", "role": "operator", "password": "petrov password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .client
        .patch(url(&c, "/api/v1/users/admin"))
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the last admin cannot be demoted");

    // Every change is in the audit log, with who did it.
    let audit = c.get("/api/v1/audit").await;
    let entries = audit.as_array().unwrap();
    let has = |who: &str, action: &str| {
        entries
            .iter()
            .any(|e| e["who"] == who && e["action"].as_str().unwrap().starts_with(action))
    };
    assert!(has("token:ops", "POST /api/v1/silences"), "{audit}");
    assert!(has("token:ops", "DELETE /api/v1/silences/"), "{audit}");
    assert!(
        has("token:e2e", "POST /api/v1/enrollment-tokens"),
        "{audit}"
    );
    assert!(has("token:e2e", "POST /api/v1/users"), "{audit}");
}

/// Logs in; returns (cookie pair `dozor_session=…`, CSRF token).
async fn login(c: &Collector, user: &str, password: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .post(url(c, "/api/v1/login"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    (cookie, body["csrf_token"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_needs_its_csrf_token_and_the_same_origin() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let web = reqwest::Client::new();

    let r = web
        .post(url(&c, "/api/v1/login"))
        .json(&json!({"user": "admin", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    let (s, body) = parts(r).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );

    let (cookie, csrf) = login(&c, "admin", ADMIN_PW).await;
    let session: Value = web
        .get(url(&c, "/api/v1/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["user"], "admin");
    assert_eq!(session["csrf_token"], csrf.as_str());

    let post = |csrf: Option<&str>, origin: Option<&str>| {
        let mut b = web
            .post(url(&c, "/api/v1/silences"))
            .header("cookie", &cookie)
            .json(&silence());
        if let Some(t) = csrf {
            b = b.header("x-csrf-token", t);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.send()
    };
    let (s, body) = parts(post(None, None).await.unwrap()).await;
    assert_eq!(s, 403, "cookie without CSRF header: {body}");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(post(Some("0000"), None).await.unwrap().status(), 403);
    let same = format!("http://{}", c.http);
    let (s, body) = parts(post(Some(&csrf), Some(&same)).await.unwrap()).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["created_by"], "admin", "{body}");
    // Cross-origin: refused even with the right cookie and token.
    let (s, body) = parts(
        post(Some(&csrf), Some("http://evil.example"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(post(Some(&csrf), Some("null")).await.unwrap().status(), 403);

    // A viewer's session reads but cannot silence, CSRF token or not.
    let (vcookie, vcsrf) = login(&c, "ivanova", VIEWER_PW).await;
    let r = web
        .post(url(&c, "/api/v1/silences"))
        .header("cookie", &vcookie)
        .header("x-csrf-token", &vcsrf)
        .json(&silence())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Promoted with the CLI: the same session may silence at its next request; removed: gone.
    collector_cli(&c.data_dir, &["user", "set-role", "ivanova", "operator"]);
    let r = web
        .post(url(&c, "/api/v1/silences"))
        .header("cookie", &vcookie)
        .header("x-csrf-token", &vcsrf)
        .json(&silence())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    collector_cli(&c.data_dir, &["user", "remove", "ivanova"]);
    let r = web
        .get(url(&c, "/api/v1/hosts"))
        .header("cookie", &vcookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Logout ends the session.
    let r = web
        .post(url(&c, "/api/v1/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = web
        .get(url(&c, "/api/v1/hosts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let audit = c.get("/api/v1/audit").await;
    let entries = audit.as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["who"] == "admin" && e["action"] == "login" && e["status"] == 401),
        "the failed login is audited: {audit}"
    );
    assert!(
        entries.iter().any(|e| e["who"] == "admin"
            && e["action"] == "POST /api/v1/silences"
            && e["status"] == 201),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_is_refused_and_failed_logins_are_limited_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());

    // DNS rebinding: the page reached under another name answers nothing, even to an admin.
    let r = c
        .client
        .get(url(&c, "/api/v1/hosts"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    let r = c
        .client
        .get(url(&c, "/api/v1/hosts"))
        .header("host", format!("localhost:{}", c.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "localhost is allowed by default");
    // Agents and health probes may use any name (no cookies, nothing to rebind).
    let r = c
        .client
        .get(url(&c, "/healthz"))
        .header("host", "collector.region.local")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let web = reqwest::Client::new();
    for _ in 0..10 {
        let r = web
            .post(url(&c, "/api/v1/login"))
            .json(&json!({"user": "admin", "password": "guess"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Limited now, even with the right password.
    let (s, body) = parts(
        web.post(url(&c, "/api/v1/login"))
            .json(&json!({"user": "admin", "password": ADMIN_PW}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    // Other users are not locked out by it.
    login(&c, "ivanova", VIEWER_PW).await;
    assert_eq!(
        c.metric("dozor_http_logins_total{outcome=\"bad_credentials\"}")
            .await,
        10.0
    );
    assert_eq!(
        c.metric("dozor_http_logins_total{outcome=\"rate_limited\"}")
            .await,
        1.0
    );
    assert_eq!(
        c.metric("dozor_http_refused_total{reason=\"host\"}").await,
        1.0
    );

    // The login page is there without login, in Russian.
    let page = web.get(url(&c, "/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Вход"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_cookie_is_secure_and_the_origin_must_be_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            ca.display(),
            key.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("collector");
    collector_cli_stdin(
        &data,
        &["user", "add", "admin", "--role", "admin"],
        &format!("{ADMIN_PW}\n"),
    );
    let c = Collector::start(
        &Broker::Embedded(0),
        &data,
        &["--config", cfg.to_str().unwrap()],
    );
    let web = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let site = format!("https://{}", c.http);
    let r = web
        .post(format!("{site}/api/v1/login"))
        .json(&json!({"user": "admin", "password": ADMIN_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("; Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |origin: String| {
        web.post(format!("{site}/api/v1/silences"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("origin", origin)
            .json(&silence())
            .send()
    };
    // The plain-HTTP origin of the same host is another origin.
    assert_eq!(
        post(format!("http://{}", c.http)).await.unwrap().status(),
        403
    );
    assert_eq!(post(site.clone()).await.unwrap().status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_logs_in_and_csrf_guards_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let b = Browser::start(1280, None).await;
    let site = format!("http://{}", c.http);

    // The status page sends the browser to the login form.
    b.go(&format!("{site}/")).await;
    assert_eq!(b.url().await, format!("{site}/login"));
    b.type_into("#user", "admin").await;
    b.type_into("#password", "wrong password").await;
    b.click("#submit").await;
    let error = wait_for(std::time::Duration::from_secs(10), || async {
        let t = b.text("#error").await;
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(
        error.as_deref(),
        Some("неверное имя пользователя или пароль")
    );

    b.type_into("#password", ADMIN_PW).await;
    b.click("#submit").await;
    let home = wait_for(std::time::Duration::from_secs(10), || async {
        (b.url().await == format!("{site}/")).then_some(())
    })
    .await;
    assert!(
        home.is_some(),
        "logged in, the form goes to the status page"
    );
    // The cookie is HttpOnly: the page's scripts cannot read it.
    assert_eq!(b.run("done(document.cookie)").await, "");

    // The page's own scripts: without the CSRF header refused, with it accepted.
    let post = |csrf: bool| {
        format!(
            "fetch('/api/v1/silences', {{method: 'POST', headers: Object.assign(
               {{'Content-Type': 'application/json'}},
               {csrf} ? {{'X-CSRF-Token': sessionStorage.getItem('dozor_csrf')}} : {{}}),
               body: JSON.stringify({{rule: 'central_outage', duration_secs: 600}})}})
             .then(r => done(r.status), e => done(String(e)))"
        )
    };
    assert_eq!(b.run(&post(false)).await, 403);
    assert_eq!(b.run(&post(true)).await, 201);
    let silences = c.get("/api/v1/silences").await;
    assert!(
        silences
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["created_by"] == "admin"),
        "{silences}"
    );
}
