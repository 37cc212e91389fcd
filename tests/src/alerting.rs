//! The real receivers alert tests send to: an SMTP server (Debian's `python3-aiosmtpd`) that
//! keeps each message as JSON, and a Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`) with a black-hole receiver; `tests/run` installs both.

use crate::{Proc, free_port, wait_for, wait_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SMTP_HANDLER: &str = r#"
import email, email.policy, json, os, uuid

class Capture:
    def __init__(self, outdir):
        self.outdir = outdir

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",)).get_content()
        rec = {"from": envelope.mail_from, "to": envelope.rcpt_tos,
               "subject": str(msg["subject"]), "body": body}
        tmp = os.path.join(self.outdir, "." + uuid.uuid4().hex)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rec, f, ensure_ascii=False)
        os.rename(tmp, os.path.join(self.outdir, uuid.uuid4().hex + ".json"))
        return "250 OK"
"#;

/// A real SMTP server (aiosmtpd) storing each message as JSON (`from`, `to`, `subject`,
/// `body`) in `mail`.
pub struct Smtp {
    pub port: u16,
    pub mail: PathBuf,
    _proc: Proc,
}

impl Smtp {
    /// Starts it on a free port with its files under `dir`.
    pub fn start(dir: &Path) -> Smtp {
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).expect("mail dir");
        std::fs::write(dir.join("dozor_capture.py"), SMTP_HANDLER).expect("SMTP handler");
        // Debian's interpreter has python3-aiosmtpd; a pyenv shim first on PATH may not.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "dozor_capture.Capture"])
            .arg(&mail)
            .env("PYTHONPATH", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (Debian python3-aiosmtpd; tests/run installs it)");
        let proc = Proc {
            name: "aiosmtpd".into(),
            child: Some(child),
        };
        wait_port(port, Duration::from_secs(30));
        Smtp {
            port,
            mail,
            _proc: proc,
        }
    }

    /// Every message received so far.
    pub fn mails(&self) -> Vec<Value> {
        let Ok(rd) = std::fs::read_dir(&self.mail) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    }

    /// The subjects of every message received so far.
    pub fn subjects(&self) -> Vec<String> {
        self.mails()
            .iter()
            .filter_map(|m| m["subject"].as_str().map(str::to_string))
            .collect()
    }
}

/// A real Prometheus Alertmanager (no cluster, a black-hole receiver).
pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    client: reqwest::Client,
    _proc: Proc,
}

impl Alertmanager {
    /// Starts it on a free port with its files under `dir/am`; waits until it is ready.
    pub async fn start(dir: &Path) -> Alertmanager {
        let am_dir = dir.join("am");
        std::fs::create_dir_all(&am_dir).expect("alertmanager dir");
        std::fs::write(
            am_dir.join("am.yml"),
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .expect("am.yml");
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", am_dir.join("am.yml").display()))
            .arg(format!("--storage.path={}", am_dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package; tests/run installs it)");
        let am = Alertmanager {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _proc: Proc {
                name: "alertmanager".into(),
                child: Some(child),
            },
        };
        let ready = wait_for(Duration::from_secs(40), || async {
            let r = am
                .client
                .get(format!("{}/-/ready", am.base))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        assert!(ready.is_some(), "alertmanager did not get ready in 40 s");
        am
    }

    /// Active alerts with `alertname` (nothing silences or inhibits them in Alertmanager: the
    /// collector silences its own).
    pub async fn active(&self, alertname: &str) -> Vec<Value> {
        let Ok(r) = self
            .client
            .get(format!(
                "{}/api/v2/alerts?active=true&silenced=false&inhibited=false",
                self.base
            ))
            .send()
            .await
        else {
            return Vec::new();
        };
        let v: Value = r.json().await.unwrap_or(Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["labels"]["alertname"] == alertname)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `host` labels of the active alerts with `alertname`.
    pub async fn active_hosts(&self, alertname: &str) -> Vec<String> {
        self.active(alertname)
            .await
            .iter()
            .filter_map(|x| x["labels"]["host"].as_str().map(str::to_string))
            .collect()
    }
}

/// The collector's `[[alerts.channel]]` sections for an [`Smtp`] on `smtp_port` (to
/// `it-duty@miac.local`) and an [`Alertmanager`] at `am` (its `base`), with the short retries
/// and the 5 s resend the tests wait on.
pub fn channels_toml(smtp_port: u16, am: &str) -> String {
    format!(
        r#"
[[alerts.channel]]
type = "email"
name = "mail"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "dozor <dozor@miac.local>"
to = ["it-duty@miac.local"]
retry_initial_ms = 200
retry_max_ms = 1000
timeout_secs = 10

[[alerts.channel]]
type = "alertmanager"
name = "am"
url = "{am}"
resend_secs = 5
retry_initial_ms = 200
retry_max_ms = 1000
timeout_secs = 5
"#
    )
}
