//! The sink against a real server: VictoriaMetrics (`/usr/bin/victoria-metrics`), which accepts
//! InfluxDB v2 writes at `/api/v2/write`. Points are read back with `/api/v1/export`.

use super::*;
use crate::record::Batch;
use crate::roster::Roster;
use crate::store::config::{RawStore, StoreConfig};
use crate::store::sim::Sim;
use crate::store::{SqliteStore, Store, db_path};
use dozor_proto::{Category, Role};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

const VM: &str = "/usr/bin/victoria-metrics";

/// Exported series: name with labels → (labels, points).
type Series = HashMap<String, (HashMap<String, String>, Vec<(i64, f64)>)>;

/// A VictoriaMetrics process on a port, killed on drop.
struct Victoria {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Victoria {
    fn start(port: u16) -> Victoria {
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(VM)
            .arg(format!("-storageDataPath={}", data.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {VM}: {e} (install victoria-metrics)"));
        Victoria {
            child,
            port,
            _data: data,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn ready(&self) {
        let c = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = c.get(format!("{}/health", self.url())).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("victoria-metrics did not start on port {}", self.port);
    }

    /// Every series matching `dozor_.*`: name and labels → (timestamp → value).
    async fn export(&self) -> Series {
        let c = reqwest::Client::new();
        c.get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .unwrap();
        let text = c
            .get(format!(
                "{}/api/v1/export?match%5B%5D=%7B__name__%3D~%22dozor_.%2A%22%7D",
                self.url()
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut out = HashMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let labels: HashMap<String, String> = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let mut key: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            key.sort();
            let name = format!("{}{{{}}}", labels["__name__"], key.join(","));
            let points: Vec<(i64, f64)> = v["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .zip(v["values"].as_array().unwrap())
                .map(|(t, x)| (t.as_i64().unwrap(), x.as_f64().unwrap()))
                .collect();
            out.insert(name, (labels, points));
        }
        out
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(url: &str) -> StoreConfig {
    let raw: RawStore = toml::from_str(&format!(
        "region_tz = \"UTC\"\n[influxdb]\nurl = \"{url}\"\norg = \"miac\"\nbucket = \"dozor\"\ntoken = \"secret\"\nmax_backoff_secs = 1\npoll_interval_ms = 50\nmax_request_bytes = 4096"
    ))
    .unwrap();
    raw.validate().unwrap()
}

/// Writes a few minutes of one server's history, ending a minute ago; returns its start.
fn write_history(store: &mut SqliteStore) -> i64 {
    let now = crate::clock::now_ms();
    let t0 = (now - 10 * 60_000) / 1000 * 1000;
    let mut s = Sim::new();
    s.start(t0);
    let boot = t0 - 3_600_000;
    s.birth("mo1", "srv", Role::Server, "Главный корпус", t0, boot);
    for i in 0..10 {
        let t = t0 + i * 60_000;
        s.hb("mo1", "srv", t, boot, false);
        s.probe(
            "mo1",
            "srv",
            t,
            &[("МИС", Category::Mis, i != 3), ("ЛИС", Category::Lis, true)],
            false,
        );
    }
    // Two batches, each applied from the journal before the next: two outbox rows.
    let mut recs = s.take();
    let second = recs.split_off(recs.len() / 2);
    for records in [recs, second] {
        store
            .write(&Batch {
                records,
                delivery: Vec::new(),
            })
            .unwrap();
        store.settle(true).unwrap();
    }
    t0
}

fn outbox_lines(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    c.query_row("SELECT coalesce(sum(lines), 0) FROM outbox", [], |r| {
        r.get(0)
    })
    .unwrap()
}

async fn wait_drained(db: &Path, stats: &SinkStats) {
    for _ in 0..400 {
        if outbox_lines(db) == 0 && stats.sent_lines.load(Ordering::Relaxed) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("outbox not drained: {} lines left", outbox_lines(db));
}

fn check_points(got: &Series, t0: i64) {
    let cpu =
        &got["dozor_hb_cpu_pct{host=srv,hostname=srv,mo=mo1,role=server,site=Главный корпус}"];
    assert_eq!(cpu.1.len(), 10);
    assert_eq!(cpu.1[0], (t0, 12.5));
    let up =
        &got["dozor_hb_uptime_secs{host=srv,hostname=srv,mo=mo1,role=server,site=Главный корпус}"];
    assert_eq!(up.1[1], (t0 + 60_000, 3660.0));
    let mem =
        &got["dozor_hb_mem_pct{host=srv,hostname=srv,mo=mo1,role=server,site=Главный корпус}"];
    assert_eq!(mem.1[0].1, 25.0);
    let ok = &got["dozor_probe_ok{category=mis,error=none,host=srv,mo=mo1,target=МИС}"];
    assert_eq!(ok.1.len(), 9);
    assert!(ok.1.iter().all(|p| p.1 == 1.0));
    let fail = &got["dozor_probe_ok{category=mis,error=timeout,host=srv,mo=mo1,target=МИС}"];
    assert_eq!(fail.1, vec![(t0 + 3 * 60_000, 0.0)]);
    let lat = &got["dozor_probe_latency_ms{category=mis,error=timeout,host=srv,mo=mo1,target=МИС}"];
    assert_eq!(lat.1[0].1, 3000.0);
    // A dozor_mo point per batch (at least a minute apart), at the batch's latest message.
    let online = &got["dozor_mo_hosts_online{mo=mo1}"];
    assert_eq!(online.1, vec![(t0 + 240_000, 1.0), (t0 + 540_000, 1.0)]);
    assert_eq!(got["dozor_mo_servers_online{mo=mo1}"].1[0].1, 1.0);
    assert_eq!(got["dozor_mo_workstations_online{mo=mo1}"].1[0].1, 0.0);
    // The first batch ends with the failed МИС round at t0 + 3 min.
    assert_eq!(
        got["dozor_mo_hosts_reaching_mis{mo=mo1}"].1,
        vec![(t0 + 240_000, 0.0), (t0 + 540_000, 1.0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_writes_to_a_real_server() {
    let vm = Victoria::start(free_port());
    vm.ready().await;
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(dir.path());
    let cfg = config(&vm.url());
    let mut store = SqliteStore::open(&db, &cfg, Arc::new(Roster::default())).unwrap();
    let t0 = write_history(&mut store);
    assert!(outbox_lines(&db) >= 31);
    let sink = InfluxSink::new(&db, cfg.influx.clone().unwrap());
    let stats = sink.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    wait_drained(&db, &stats).await;
    // Small requests (max_request_bytes = 4096): several of them.
    assert!(stats.sent_requests.load(Ordering::Relaxed) >= 2);
    let got = vm.export().await;
    check_points(&got, t0);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_wait_in_the_outbox_while_the_server_is_down() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(dir.path());
    let cfg = config(&url);
    let mut store = SqliteStore::open(&db, &cfg, Arc::new(Roster::default())).unwrap();
    let t0 = write_history(&mut store);
    let pending = outbox_lines(&db);
    let sink = InfluxSink::new(&db, cfg.influx.clone().unwrap());
    let stats = sink.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    // Nobody listens: requests fail, nothing is lost.
    for _ in 0..100 {
        if stats.failed_requests.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stats.failed_requests.load(Ordering::Relaxed) >= 2);
    assert_eq!(outbox_lines(&db), pending);
    assert_eq!(stats.pending_lines.load(Ordering::Relaxed), pending as u64);
    // The server comes up: the backlog arrives.
    let vm = Victoria::start(port);
    vm.ready().await;
    wait_drained(&db, &stats).await;
    check_points(&vm.export().await, t0);
    stop.cancel();
    task.await.unwrap();
}

#[test]
fn outbox_bound_drops_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("o.db")).unwrap();
    schema::migrate(&c).unwrap();
    for (i, created) in [100, 200, 300, 400].into_iter().enumerate() {
        c.execute(
            "INSERT INTO outbox(created_ms, lines, bytes, body) VALUES (?1, ?2, 1000, 'x')",
            params![created, i as i64 + 1],
        )
        .unwrap();
    }
    // Age: the row made at 100 is older than 150 ms at 260.
    assert_eq!(prune_outbox(&c, 260, 150, 1 << 30).unwrap(), 1);
    // Size: 3000 bytes left, bound 1500: the two oldest go.
    assert_eq!(prune_outbox(&c, 260, 1000, 1500).unwrap(), 2 + 3);
    let left: i64 = c
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
}

#[test]
fn line_protocol_escaping() {
    let mut out = String::new();
    let r = ProbeResult {
        target: "МИС, корп=1".into(),
        category: Category::Mis,
        ok: false,
        latency_ms: None,
        error: None,
        status: None,
    };
    probe_line(&mut out, "mo 1", "pc\n1", &r, 5);
    assert_eq!(
        out,
        "dozor_probe,category=mis,error=other,host=pc\\ 1,mo=mo\\ 1,target=МИС\\,\\ корп\\=1 ok=0i 5\n"
    );
}
