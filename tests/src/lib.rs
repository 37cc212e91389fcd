//! Harness for end-to-end tests: starts the real dozor binaries and real servers (Mosquitto)
//! on free ports, and kills them on `Drop`.
//!
//! The binaries are taken from the cargo target directory the tests run from; `tests/run`
//! builds them before running the tests.

pub mod alerting;
pub mod browser;
pub mod enrolled;
pub mod victoria;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 for a server a test starts (Mosquitto, a collector to be
/// restarted on the same port).
///
/// Drawn below the kernel's ephemeral range (32768–60999 here): a port the kernel handed out
/// for `bind(0)` and released could be given to any outgoing connection before the server binds
/// it, while a port outside that range is only ever taken by a server asked for it. Each port is
/// handed out once per test process.
pub fn free_port() -> u16 {
    use rand::Rng;
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000 after 1000 tries");
}

/// The directory holding the built binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("DOZOR_BIN_DIR") {
        return PathBuf::from(d);
    }
    // current_exe = target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a dozor binary; panics with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (tests/run does)",
        p.display()
    );
    p
}

/// Waits until `f` returns Some, polling every 50 ms, up to `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (SIGKILL) on drop unless stopped before.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, like a power cut of the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit (up to 10 s); returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Mosquitto broker on a free port, without persistence, logging to a file in its dir.
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub proc: Proc,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    /// Starts on a given port (to restart on the same port after `stop`).
    pub fn start_on(port: u16) -> Mosquitto {
        Mosquitto::start_with(port, "max_packet_size 1048576\n")
    }

    /// A broker with no packet limit of its own (MQTT's 256 MB), as a careless region runs it.
    pub fn start_without_packet_limit() -> Mosquitto {
        Mosquitto::start_with(free_port(), "")
    }

    /// Mosquitto as a region should run it (deploy/mosquitto-secure.conf): TLS only, no
    /// anonymous clients, Mosquitto's dynamic-security plugin with `admin_user` as the admin
    /// (the collector logs in as it and provisions every enrolled agent). The self-signed
    /// certificate for 127.0.0.1 is written to `dir/ca.pem`.
    pub fn start_secure(admin_user: &str, admin_password: &str) -> Mosquitto {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("self-signed certificate");
        let p = dir.path();
        std::fs::write(p.join("ca.pem"), cert.cert.pem()).expect("write ca.pem");
        std::fs::write(p.join("key.pem"), cert.signing_key.serialize_pem()).expect("write key.pem");
        let dynsec = p.join("dynsec.json");
        let out = Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&dynsec)
            .args([admin_user, admin_password])
            .stdout(Stdio::null())
            .status()
            .expect("mosquitto_ctrl (mosquitto-clients) must be installed");
        assert!(out.success(), "mosquitto_ctrl dynsec init failed");
        // Mosquitto drops to its own user: it must read the TLS files and rewrite dynsec.json.
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["ca.pem", "key.pem", "dynsec.json"] {
                let _ = std::fs::set_permissions(p.join(f), std::fs::Permissions::from_mode(0o666));
            }
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777));
        }
        let conf = p.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous false\n\
                 plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
                 plugin_opt_config_file {}\n\
                 listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n\
                 persistence false\nlog_dest stderr\nlog_type error\n\
                 max_inflight_messages 20000\nmax_queued_messages 1000000\nmax_packet_size 1048576\n\
                 max_connections 20000\n",
                dynsec.display(),
                p.join("ca.pem").display(),
                p.join("key.pem").display(),
            ),
        )
        .expect("write mosquitto.conf");
        Mosquitto::spawn(port, dir, &conf)
    }

    fn start_with(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n\
                 max_inflight_messages 20000\nmax_queued_messages 1000000\n{extra}"
            ),
        )
        .expect("write mosquitto.conf");
        Mosquitto::spawn(port, dir, &conf)
    }

    fn spawn(port: u16, dir: tempfile::TempDir, conf: &Path) -> Mosquitto {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (tests/run installs it)");
        let m = Mosquitto {
            port,
            dir,
            proc: Proc {
                name: "mosquitto".into(),
                child: Some(child),
            },
        };
        wait_port(port, Duration::from_secs(10));
        m
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's CA file (secure brokers only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// Blocks until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listens on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which broker a collector uses.
#[derive(Debug, Clone)]
pub enum Broker {
    /// The collector's embedded broker on this port (0: any).
    Embedded(u16),
    /// An external broker URL.
    External(String),
}

/// Runs a `dozor-collector` subcommand on `data_dir`; returns its stdout.
pub fn collector_cli(data_dir: &Path, args: &[&str]) -> String {
    collector_cli_stdin(data_dir, args, "")
}

/// Runs a `dozor-collector` subcommand on `data_dir` with `stdin`; returns its stdout.
pub fn collector_cli_stdin(data_dir: &Path, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(bin("dozor-collector"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run dozor-collector");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("dozor-collector output");
    assert!(out.status.success(), "dozor-collector {args:?} failed");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// An HTTP client that sends `Authorization: Bearer TOKEN` with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("token header"),
    );
    reqwest::Client::builder()
        .default_headers(h)
        // The collector closes a kept-alive connection idle for `http.header_read_timeout_secs`
        // (10 s): a request reusing one at that moment fails ("error sending request"; seen in
        // drill 4, which reads /metrics 10 s apart). Never keep one idle that long.
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// A running collector.
pub struct Collector {
    pub http: SocketAddr,
    /// host:port of the MQTT broker the collector uses.
    pub mqtt_port: u16,
    pub data_dir: PathBuf,
    pub proc: Proc,
    pub client: reqwest::Client,
}

impl Collector {
    /// Starts `dozor-collector` with `broker`, a data dir and extra args; waits until it listens.
    /// `client` carries an admin API token (created with the CLI before the start), so tests
    /// of other things read and write the API as an admin; `anonymous` is a client without it.
    pub fn start(broker: &Broker, data_dir: &Path, extra: &[&str]) -> Collector {
        Collector::start_env(broker, data_dir, extra, &[])
    }

    /// [`Collector::start`] with extra environment variables.
    pub fn start_env(
        broker: &Broker,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Collector {
        let token = collector_cli(
            data_dir,
            &["api-token", "create", "--name", "e2e", "--role", "admin"],
        );
        let mut cmd = Command::new(bin("dozor-collector"));
        cmd.arg("--http-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir);
        match broker {
            Broker::Embedded(port) => cmd.arg("--mqtt-listen").arg(format!("127.0.0.1:{port}")),
            Broker::External(url) => cmd.arg("--mqtt-url").arg(url),
        };
        // Tests of the data path publish unsigned messages as anonymous clients: they run the
        // collector open unless they choose a mode (tests/tests/security.rs runs it enrolled).
        if !extra.iter().any(|a| a.starts_with("--security-mode")) {
            cmd.arg("--security-mode").arg("open");
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd.env(
            "RUST_LOG",
            std::env::var("DOZOR_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("start dozor-collector");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if line.starts_with("dozor-collector listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("collector did not start within 30 s");
        // dozor-collector listening http=127.0.0.1:PORT mqtt=IP:PORT
        let mut http = None;
        let mut mqtt_port = 0;
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("http=") {
                http = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("mqtt=") {
                mqtt_port = v
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
            }
        }
        Collector {
            http: http.expect("http address in the listening line"),
            mqtt_port,
            data_dir: data_dir.to_path_buf(),
            proc: Proc {
                name: "dozor-collector".into(),
                child: Some(child),
            },
            client: client_with_token(token.trim()),
        }
    }

    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }

    /// GET a JSON document from the API.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("http://{}{}", self.http, path);
        let r = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        r.json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    /// GET a text document.
    pub async fn text(&self, path: &str) -> String {
        let url = format!("http://{}{}", self.http, path);
        self.client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    /// The live record of one host, if known.
    pub async fn host(&self, id: &str) -> Option<serde_json::Value> {
        let hosts = self.get("/api/v1/hosts").await;
        hosts
            .as_array()?
            .iter()
            .find(|h| h["host_id"] == id)
            .cloned()
    }

    /// A counter or gauge from `/metrics` (exact series name including labels).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// A running agent.
pub struct Agent {
    pub host_id: String,
    pub data_dir: PathBuf,
    pub proc: Proc,
}

impl Agent {
    /// Starts `dozor-agent` against `mqtt_url` with a 1 s interval.
    pub fn start(
        mqtt_url: &str,
        mo: &str,
        host_id: &str,
        data_dir: &Path,
        extra: &[&str],
    ) -> Agent {
        Agent::start_logged(mqtt_url, mo, host_id, data_dir, extra, None)
    }

    /// As [`Agent::start`]; with `log = Some((file, filter))` the agent logs with `RUST_LOG =
    /// filter`, appending its stderr to `file` (drills read the `issued seq=N` trace lines:
    /// what an agent killed with `kill -9` had numbered).
    pub fn start_logged(
        mqtt_url: &str,
        mo: &str,
        host_id: &str,
        data_dir: &Path,
        extra: &[&str],
        log: Option<(&Path, &str)>,
    ) -> Agent {
        let (filter, stderr) = match log {
            Some((file, filter)) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .expect("agent log file");
                (filter.to_owned(), Stdio::from(f))
            }
            None => (
                std::env::var("DOZOR_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                Stdio::inherit(),
            ),
        };
        let child = Command::new(bin("dozor-agent"))
            .arg("--mqtt-url")
            .arg(mqtt_url)
            .arg("--mo")
            .arg(mo)
            .arg("--host-id")
            .arg(host_id)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start dozor-agent");
        Agent {
            host_id: host_id.into(),
            data_dir: data_dir.to_path_buf(),
            proc: Proc {
                name: format!("agent {host_id}"),
                child: Some(child),
            },
        }
    }
}

/// A tiny HTTP server standing in for the МИС: answers 200 on every request while `up`, 503
/// when set to fail, and stops accepting connections when stopped.
pub struct FakeMis {
    pub port: u16,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

/// Modes of [`FakeMis`].
pub const MIS_OK: u8 = 0;
pub const MIS_500: u8 = 1;
/// Accept connections but never answer.
pub const MIS_HANG: u8 = 2;
/// Refuse connections (listener closed).
pub const MIS_DOWN: u8 = 3;

impl FakeMis {
    pub async fn start() -> FakeMis {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(MIS_OK));
        let m = mode.clone();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let current = m.load(std::sync::atomic::Ordering::SeqCst);
                if current == MIS_DOWN {
                    listener = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if listener.is_none() {
                    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => listener = Some(l),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let Some(l) = listener.as_ref() else { continue };
                let accept = tokio::time::timeout(Duration::from_millis(100), l.accept()).await;
                let Ok(Ok((mut sock, _))) = accept else {
                    continue;
                };
                let m2 = m.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 2048];
                    let _ = sock.read(&mut buf).await;
                    match m2.load(std::sync::atomic::Ordering::SeqCst) {
                        MIS_OK => {
                            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                        }
                        MIS_500 => {
                            let _ = sock.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                        }
                        _ => tokio::time::sleep(Duration::from_secs(120)).await,
                    }
                });
            }
        });
        FakeMis { port, mode }
    }

    pub fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }
}

/// A TCP relay standing in for one МО's channel to the МИС: forwards 127.0.0.1:`port` to
/// 127.0.0.1:`upstream` while on. [`Relay::set`]`(false)` cuts the channel: the listener is
/// closed (new connections are refused) and connections in flight are dropped; `set(true)`
/// listens again on the same port.
pub struct Relay {
    pub port: u16,
    pub upstream: u16,
    on: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start(upstream: u16) -> Relay {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let port = first.local_addr().expect("relay addr").port();
        let (on, mut rx) = tokio::sync::watch::channel(true);
        let conn_rx = on.subscribe();
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                // Off (or just turned on): wait for "on", then listen again on the same port.
                if rx.wait_for(|on| *on).await.is_err() {
                    return;
                }
                let l = match listener.take() {
                    Some(l) => l,
                    None => match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => l,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                loop {
                    tokio::select! {
                        r = rx.wait_for(|on| !*on) => {
                            if r.is_err() {
                                return;
                            }
                            break; // drops the listener: refused from now on
                        }
                        a = l.accept() => {
                            if let Ok((sock, _)) = a {
                                tokio::spawn(relay_conn(sock, upstream, conn_rx.clone()));
                            }
                        }
                    }
                }
            }
        });
        Relay { port, upstream, on }
    }

    /// On: forward; off: refuse and drop connections in flight.
    pub fn set(&self, on: bool) {
        self.on.send_replace(on);
    }

    pub fn is_on(&self) -> bool {
        *self.on.borrow()
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

async fn relay_conn(
    mut down: tokio::net::TcpStream,
    upstream: u16,
    mut on: tokio::sync::watch::Receiver<bool>,
) {
    // Upstream refused: dropping `down` closes the client's connection.
    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
        _ = on.wait_for(|on| !*on) => {}
    }
}

/// Unix time now, ms.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// CPU time (user + system) this process has used, seconds; 0 where /proc is unavailable.
/// For the benchmark binaries (`dozor-loadgen`, `dozor-pipeline-bench`).
pub fn self_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14/15 are at 11/12 after the state field (3); Linux uses 100 ticks per second
    // on every architecture we run on (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f` to completion on a multi-thread runtime with `threads` workers (benchmark binaries).
pub fn block_on_threads<F: std::future::Future>(
    threads: usize,
    f: F,
) -> std::io::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// What a stopped agent's spool says it produced: (inst, messages numbered, sequence numbers
/// still spooled, messages dropped by the spool's caps).
pub fn spool_of(dir: &Path) -> (String, u64, Vec<u64>, u64) {
    let conn = rusqlite::Connection::open(dir.join("spool.db")).expect("spool.db");
    let meta = |k: &str| -> String {
        conn.query_row(
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1",
            [k],
            |r| r.get(0),
        )
        .unwrap_or_default()
    };
    let inst = meta("inst");
    let next: u64 = meta("next_seq").parse().unwrap_or(1);
    let dropped: u64 = meta("dropped").parse().unwrap_or(0);
    // Numbers reserved by a run that was killed before writing them: never durable; after a
    // kill with the link down none of them was issued.
    let skipped: u64 = meta("skipped").parse().unwrap_or(0);
    let mut st = conn
        .prepare("SELECT seq FROM msg ORDER BY seq")
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let seqs: Vec<u64> = st
        .query_map([], |r| r.get::<_, i64>(0))
        .expect("spool rows")
        .map(|r| r.expect("spool seq") as u64)
        .collect();
    (inst, next.saturating_sub(1 + skipped), seqs, dropped)
}

/// The collector's delivery row (`GET /api/v1/delivery`) of instance `inst`, once its
/// contiguous mark reaches `produced` (or after 20 s, as it then stands).
pub async fn delivery_of(c: &Collector, inst: &str, produced: u64) -> serde_json::Value {
    let row = || async {
        let d = c.get("/api/v1/delivery").await;
        d.as_array()?.iter().find(|v| v["inst"] == inst).cloned()
    };
    let done = wait_for(Duration::from_secs(20), || async {
        row()
            .await
            .filter(|v| v["contiguous"].as_u64().unwrap_or(0) >= produced)
    })
    .await;
    match done {
        Some(v) => v,
        None => row().await.unwrap_or_default(),
    }
}

/// A TCP "МИС" that accepts every connection and says nothing (what `tcp://` probes need to
/// read `ok`), running until the test's runtime ends; returns its port.
pub async fn tcp_mis() -> u16 {
    let mis = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a TCP МИС");
    let port = mis.local_addr().expect("its address").port();
    tokio::spawn(async move {
        loop {
            let _ = mis.accept().await;
        }
    });
    port
}

/// The agent flags of the reliability drills (drills, powercut, region): `role` at site
/// «Корпус 1», heartbeats and probes every second, keep-alive 5 s, a resend after 5 s, replay
/// at `replay_rate` msg/s, probing the МИС at `tcp://127.0.0.1:mis_port`.
pub fn drill_agent_args(role: &str, replay_rate: u32, mis_port: u16) -> Vec<String> {
    let replay_rate = replay_rate.to_string();
    [
        "--role",
        role,
        "--site",
        "Корпус 1",
        "--interval-secs",
        "1",
        "--probe-interval-secs",
        "1",
        "--keepalive-secs",
        "5",
        "--spool-resend-after-secs",
        "5",
        "--spool-replay-rate-per-sec",
        &replay_rate,
        "--probe",
        &format!("mis=tcp://127.0.0.1:{mis_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Sequence numbers an agent logged as issued (the `issued seq=N` trace lines of
/// [`Agent::start_logged`] with `dozor_agent::spool=trace`), in order.
pub fn issued_seqs(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" issued "))
        .filter_map(|l| {
            let rest = &l[l.find("seq=")? + 4..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}
