//! A real VictoriaMetrics (`victoria-metrics`, Debian's package; `tests/run` installs it) for
//! end-to-end tests: it takes the collector's InfluxDB v2 writes at `/api/v2/write`, can scrape
//! the collector's `/metrics`, and answers PromQL/MetricsQL at `/api/v1/query_range`.

use crate::{Proc, free_port, wait_port};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A VictoriaMetrics on a free port with its own data directory, killed on drop.
pub struct Victoria {
    pub port: u16,
    pub proc: Proc,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Victoria {
    /// Starts on `port` (0: a free one). `scrape_config`: a Prometheus-style `-promscrape.config`
    /// file to scrape targets from. Queries see points at once (no 30 s latency offset, no
    /// response cache), as a test needs.
    pub fn start(port: u16, scrape_config: Option<&Path>) -> Victoria {
        let port = if port == 0 { free_port() } else { port };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("victoria-metrics");
        cmd.arg(format!("-storageDataPath={}", dir.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=1s")
            .arg("-search.disableCache")
            .arg("-loggerLevel=ERROR");
        if let Some(c) = scrape_config {
            cmd.arg(format!("-promscrape.config={}", c.display()));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("victoria-metrics must be installed (tests/run installs it)");
        let vm = Victoria {
            port,
            proc: Proc {
                name: "victoria-metrics".into(),
                child: Some(child),
            },
            client: reqwest::Client::new(),
            _dir: dir,
        };
        wait_port(port, Duration::from_secs(20));
        vm
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET `path` with query parameters; the `data` of a `"status": "success"` answer, or the
    /// error VictoriaMetrics gave (status and body).
    pub async fn api(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url()), query)
            .map_err(|e| format!("GET {path}: {e}"))?;
        let r = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| format!("GET {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {body}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: not JSON: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("GET {path}: {body}"));
        }
        Ok(v["data"].clone())
    }
}
