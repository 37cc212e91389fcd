//! Enrollment tests against a small in-process HTTP endpoint that answers from a script and
//! records what it was sent.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::config::RawConfig;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.1234";
const TOKEN: &str = "tok-0123456789abcdef";

#[derive(Default)]
struct Script {
    /// Answers, first to last; the last one repeats.
    answers: Vec<(StatusCode, Value)>,
    requests: Vec<Value>,
}

type Shared = Arc<Mutex<Script>>;

async fn handler(State(s): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let mut s = s.lock().expect("lock");
    s.requests.push(body);
    let i = (s.requests.len() - 1).min(s.answers.len() - 1);
    let (status, v) = s.answers[i].clone();
    (status, Json(v))
}

fn app(answers: Vec<(StatusCode, Value)>) -> (axum::Router, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Script {
        answers,
        requests: Vec::new(),
    }));
    let app = axum::Router::new()
        .route("/prefix/api/v1/enroll", axum::routing::post(handler))
        .with_state(shared.clone());
    (app, shared)
}

/// Starts the endpoint on port 0; returns its base URL and the shared script.
async fn server(answers: Vec<(StatusCode, Value)>) -> (String, Shared) {
    let (app, shared) = app(answers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/prefix/"), shared)
}

/// A TLS listener for axum: failed handshakes are dropped and accepting goes on.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A certificate for 127.0.0.1 and its key.
fn server_cert() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (cert, key)
}

/// Starts the endpoint over TLS with `cert`; returns its https base URL.
async fn tls_server(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    answers: Vec<(StatusCode, Value)>,
) -> (String, Shared) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let (app, shared) = app(answers);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("https://{addr}/prefix"), shared)
}

/// A configuration enrolling over HTTPS, trusting `ca` and pinning `pin`.
fn tls_config(dir: &Path, url: &str, ca: &rcgen::Certificate, pin: [u8; 32]) -> Config {
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write");
    let mut raw = RawConfig::default();
    raw.mqtt.url = Some("mqtts://127.0.0.1".into());
    raw.data_dir = Some(dir.to_owned());
    raw.enroll.token = Some(TOKEN.into());
    raw.enroll.url = Some(url.into());
    raw.tls.ca_file = Some(ca_path);
    raw.tls.pin_sha256 = Some(hex::encode(pin));
    raw.validate().expect("valid test config")
}

fn issued(host: &str) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({
            "mo": MO,
            "host": host,
            "secret": "ab".repeat(32),
            "mqtt_username": format!("{MO}/{host}"),
        }),
    )
}

fn token_invalid() -> (StatusCode, Value) {
    (
        StatusCode::UNAUTHORIZED,
        json!({"error": "token_invalid", "message": "Токен недействителен или исчерпан"}),
    )
}

fn config(dir: &Path, url: &str, token: Option<&str>) -> Config {
    let mut raw = RawConfig::default();
    raw.mqtt.url = Some("mqtt://127.0.0.1:1883".into());
    raw.host_id = Some("pc-hint".into());
    raw.role = "server".into();
    raw.data_dir = Some(dir.to_owned());
    raw.enroll.token = token.map(str::to_owned);
    raw.enroll.url = Some(url.into());
    raw.enroll.allow_plain_http = true;
    raw.validate().expect("valid test config")
}

fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(20))
}

fn requests(s: &Shared) -> Vec<Value> {
    s.lock().expect("lock").requests.clone()
}

#[tokio::test]
async fn success_writes_the_identity_and_sends_the_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, script) = server(vec![issued("h-777")]).await;
    let cfg = config(dir.path(), &url, Some(TOKEN));
    assert_eq!(cfg.mo, None, "a token makes mo optional");
    let got = obtain(&cfg, fast(), &CancellationToken::new())
        .await
        .expect("enrolls");
    let Obtained::Enrolled(c) = got else {
        panic!("expected Enrolled, got {got:?}");
    };
    assert_eq!((c.mo.as_str(), c.host.as_str()), (MO, "h-777"));
    assert_eq!(c.secret, Secret([0xab; 32]));
    assert_eq!(identity::load(dir.path()).expect("load"), Some(c));

    let sent = requests(&script);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["token"], TOKEN);
    assert_eq!(sent[0]["host_hint"], "pc-hint");
    assert_eq!(sent[0]["role"], "server");
    assert!(sent[0]["hostname"].is_string());
    assert!(sent[0].get("machine_id").is_some());
}

#[tokio::test]
async fn token_invalid_is_retried_until_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, script) = server(vec![token_invalid(), token_invalid(), issued("h-1")]).await;
    let cfg = config(dir.path(), &url, Some(TOKEN));
    let got = obtain(&cfg, fast(), &CancellationToken::new())
        .await
        .expect("enrolls");
    assert!(
        matches!(got, Obtained::Enrolled(ref c) if c.host == "h-1"),
        "{got:?}"
    );
    assert_eq!(requests(&script).len(), 3);
}

#[tokio::test]
async fn one_attempt_reports_the_code_and_message() {
    let (url, _script) = server(vec![token_invalid()]).await;
    let base = Url::parse(&url).expect("url");
    let request = Request {
        token: TOKEN.into(),
        host_hint: "h".into(),
        hostname: "h".into(),
        machine_id: None,
        role: Role::Workstation,
    };
    let e = Enroller::new(&base, None, request)
        .expect("client")
        .attempt()
        .await
        .expect_err("refused");
    assert_eq!(
        e,
        AttemptError::Refused {
            status: 401,
            code: "token_invalid".into(),
            message: "Токен недействителен или исчерпан".into(),
        }
    );
    assert!(!e.to_string().contains(TOKEN), "never echoes the token");
}

#[tokio::test]
async fn malformed_success_is_not_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wrong_user = issued("h-1");
    wrong_user.1["mqtt_username"] = json!("other/h-1");
    let (url, script) = server(vec![
        (StatusCode::OK, json!({"mo": MO})),
        wrong_user,
        (StatusCode::BAD_GATEWAY, json!("proxy")),
        issued("h-2"),
    ])
    .await;
    let cfg = config(dir.path(), &url, Some(TOKEN));
    let got = obtain(&cfg, fast(), &CancellationToken::new())
        .await
        .expect("enrolls");
    assert!(
        matches!(got, Obtained::Enrolled(ref c) if c.host == "h-2"),
        "{got:?}"
    );
    assert_eq!(requests(&script).len(), 4);
}

#[tokio::test]
async fn an_existing_identity_skips_the_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, script) = server(vec![issued("new")]).await;
    let old = Credentials {
        mo: MO.into(),
        host: "old".into(),
        secret: Secret([1; 32]),
        enrolled_at_ms: 1,
    };
    identity::save(dir.path(), &old).expect("save");
    let cfg = config(dir.path(), &url, Some(TOKEN));
    for _ in 0..2 {
        let got = obtain(&cfg, fast(), &CancellationToken::new())
            .await
            .expect("loads");
        assert!(
            matches!(got, Obtained::Enrolled(ref c) if *c == old),
            "{got:?}"
        );
    }
    assert!(requests(&script).is_empty(), "no HTTP call when enrolled");
}

#[tokio::test]
async fn no_identity_and_no_token_is_not_enrolled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut raw = RawConfig::default();
    raw.mqtt.url = Some("mqtt://127.0.0.1:1883".into());
    raw.mo = Some(MO.into());
    raw.data_dir = Some(dir.path().to_owned());
    let cfg = raw.validate().expect("valid");
    let got = obtain(&cfg, fast(), &CancellationToken::new())
        .await
        .expect("ok");
    assert!(matches!(got, Obtained::NotEnrolled), "{got:?}");
}

#[tokio::test]
async fn stop_ends_the_retries_without_an_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, script) = server(vec![token_invalid()]).await;
    let cfg = config(dir.path(), &url, Some(TOKEN));
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.cancel();
    });
    let got = tokio::time::timeout(Duration::from_secs(5), obtain(&cfg, fast(), &stop))
        .await
        .expect("stops in time")
        .expect("ok");
    assert!(matches!(got, Obtained::Stopped), "{got:?}");
    assert!(requests(&script).len() >= 2, "retried meanwhile");
    assert_eq!(identity::load(dir.path()).expect("load"), None);
}

#[tokio::test]
async fn unreachable_endpoint_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on: bind, note it, close.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    let cfg = config(dir.path(), &url, Some(TOKEN));
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.cancel();
    });
    let got = obtain(&cfg, fast(), &stop).await.expect("ok");
    assert!(matches!(got, Obtained::Stopped), "{got:?}");
}

#[test]
fn endpoint_keeps_a_prefix() {
    let e = |s: &str| {
        endpoint(&Url::parse(s).expect("url"))
            .expect("endpoint")
            .to_string()
    };
    assert_eq!(e("https://c:8443"), "https://c:8443/api/v1/enroll");
    assert_eq!(e("https://c/dozor/"), "https://c/dozor/api/v1/enroll");
}

#[tokio::test]
async fn enrolls_over_https_with_the_ca_file_and_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = server_cert();
    let (url, script) = tls_server(&cert, &key, vec![issued("h-tls")]).await;
    let cfg = tls_config(dir.path(), &url, &cert, crate::tls::cert_sha256(cert.der()));
    let got = obtain(&cfg, fast(), &CancellationToken::new())
        .await
        .expect("enrolls");
    assert!(
        matches!(got, Obtained::Enrolled(ref c) if c.host == "h-tls"),
        "{got:?}"
    );
    assert_eq!(requests(&script).len(), 1);
}

#[tokio::test]
async fn a_wrong_pin_never_sends_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = server_cert();
    let (other, _) = server_cert();
    let (url, script) = tls_server(&cert, &key, vec![issued("h-tls")]).await;
    // The CA file trusts the server, but the pin names another certificate.
    let cfg = tls_config(
        dir.path(),
        &url,
        &cert,
        crate::tls::cert_sha256(other.der()),
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.cancel();
    });
    let got = obtain(&cfg, fast(), &stop).await.expect("ok");
    assert!(matches!(got, Obtained::Stopped), "{got:?}");
    assert!(requests(&script).is_empty(), "no request got through");
    assert_eq!(identity::load(dir.path()).expect("load"), None);
}
