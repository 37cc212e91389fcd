//! A headless Chromium driven over the W3C WebDriver protocol: Debian's `chromedriver`
//! (package `chromium-driver`, installed by `tests/run`) started on a free port and killed on
//! `Drop`, spoken to with the `fantoccini` client.

use crate::{Proc, free_port, wait_for, wait_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// A browser session (one Chromium) and its chromedriver.
pub struct Browser {
    pub client: Client,
    _driver: Proc,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium `width` px wide; downloads go to
    /// `downloads` (when given).
    pub async fn start(width: u32, downloads: Option<&Path>) -> Browser {
        let port = free_port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; tests/run installs it)");
        let driver = Proc {
            name: "chromedriver".into(),
            child: Some(child),
        };
        wait_port(port, Duration::from_secs(20));
        let mut opts = json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            format!("--window-size={width},900"), "--lang=ru-RU"
        ]});
        if let Some(d) = downloads {
            opts["prefs"] = json!({
                "download.default_directory": d.to_string_lossy(),
                "download.prompt_for_download": false,
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), opts);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        client
            .set_window_size(width, 900)
            .await
            .expect("window size");
        Browser {
            client,
            _driver: driver,
        }
    }

    pub async fn go(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The text of the first element matching `css` (panics when there is none).
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    /// Texts of all elements matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
        {
            out.push(e.text().await.unwrap_or_default());
        }
        out
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Runs an async script; `done` (the last argument) receives its result.
    pub async fn run(&self, script: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1]; {script}");
        self.client
            .execute_async(&script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script: {e}"))
    }

    /// Waits up to `secs` for the elements matching `css` to have text containing `want`:
    /// Ok with their text, or Err with the last text seen.
    pub async fn wait_text(&self, css: &str, want: &str, secs: u64) -> Result<String, String> {
        let start = std::time::Instant::now();
        loop {
            let t = self.texts(css).await.join("\n");
            if t.contains(want) {
                return Ok(t);
            }
            if start.elapsed() > Duration::from_secs(secs) {
                return Err(t);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Logs in through the login form at `site` and waits to land on `expect_path`.
    pub async fn login(&self, site: &str, user: &str, password: &str, expect_path: &str) {
        if !self.url().await.contains("/login") {
            self.go(&format!("{site}/login")).await;
        }
        self.type_into("#user", user).await;
        self.type_into("#password", password).await;
        self.click("#submit").await;
        let want = format!("{site}{expect_path}");
        let landed = wait_for(Duration::from_secs(10), || async {
            (self.url().await == want).then_some(())
        })
        .await;
        assert!(
            landed.is_some(),
            "after login at {}, not {want}",
            self.url().await
        );
    }

    /// Saves a PNG of the window into `dir/name` (the docs' screenshots).
    pub async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; chromedriver itself is killed by its Proc.
        let c = self.client.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = c.close().await;
            });
        })
        .join();
    }
}
