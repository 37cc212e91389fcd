//! Benchmark of the web UI's server-side rendering (`dozor-ui-bench`):
//!
//! - the region overview (`GET /`) for `--hosts` hosts in `--mo` МО (default 30,000 in 300),
//!   from a live-state snapshot built through `LiveState` as the pipeline builds it;
//! - the host page with `--days` (default 90) of history of one host, read from a SQLite store
//!   filled through `SqliteStore::write` with heartbeats every 5 minutes, probe rounds and
//!   nightly shutdowns for `--store-hosts` hosts (default 50; the history query is indexed per
//!   host, so other hosts only add rows it does not read).
//!
//! ```text
//! cargo run --release -p dozor-tests --bin dozor-ui-bench
//! ```
//!
//! Prints the median and the slowest of `--runs` renders of each.

use dozor_collector::record::{Batch, Record};
use dozor_collector::roster::Roster;
use dozor_collector::state::{LiveState, StateConfig};
use dozor_collector::store::config::RawStore;
use dozor_collector::store::sim::Sim;
use dozor_collector::store::{SqliteStore, Store, db_path};
use dozor_proto::{Category, Envelope, Message, Probe, ProbeResult, Role};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Parser)]
struct Args {
    #[arg(long, default_value_t = 30_000)]
    hosts: usize,
    #[arg(long, default_value_t = 300)]
    mo: usize,
    #[arg(long, default_value_t = 90)]
    days: i64,
    #[arg(long, default_value_t = 50)]
    store_hosts: usize,
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

fn oid(i: usize) -> String {
    format!("1.2.643.5.1.13.13.12.2.27.{}", 1000 + i)
}

fn roster(mos: usize, per_mo: usize) -> Roster {
    let mut t = String::new();
    for i in 0..mos {
        t.push_str(&format!(
            "[[mo]]\noid = \"{}\"\nname = \"КГБУЗ «Больница № {}»\"\nplanned_arm = {}\n",
            oid(i),
            i + 1,
            per_mo
        ));
    }
    Roster::from_toml(&t, "bench").expect("roster")
}

fn timed(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let t = Instant::now();
        size = f();
        times.push(t.elapsed());
    }
    times.sort();
    (times[runs / 2], times[runs - 1], size)
}

fn env<B>(mo: &str, host: &str, seq: u64, ts: i64, body: B) -> Envelope<B> {
    Envelope {
        v: 1,
        mo: mo.into(),
        host: host.into(),
        inst: format!("i-{host}"),
        seq,
        ts,
        replay: false,
        body,
    }
}

fn main() -> anyhow::Result<()> {
    let a: Args = clap::Parser::parse();
    let now = dozor_collector::clock::now_ms();
    let per_mo = a.hosts / a.mo.max(1);
    let roster = Arc::new(roster(a.mo, per_mo));

    // The live state of the whole region: births and a probe round per host.
    let mut live = LiveState::new(StateConfig {
        max_hosts: a.hosts + 10,
        max_hosts_per_mo: per_mo + 10,
        ..StateConfig::default()
    });
    let mut sim = Sim::new();
    for i in 0..a.hosts {
        let (mo, host) = (oid(i % a.mo), format!("arm-{i:05}"));
        let role = if i % 50 == 0 {
            Role::Server
        } else {
            Role::Workstation
        };
        sim.birth(
            &mo,
            &host,
            role,
            "Главный корпус",
            now - 60_000,
            now - 3_600_000,
        );
    }
    for r in sim.take() {
        if let Record::Msg(m) = r {
            live.apply(&m.msg, now - 60_000, false, true)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    for i in 0..a.hosts {
        let (mo, host) = (oid(i % a.mo), format!("arm-{i:05}"));
        let results = [Category::Mis, Category::Iemk, Category::Lis]
            .iter()
            .map(|c| ProbeResult {
                target: c.as_str().into(),
                category: *c,
                ok: !(i % a.mo == 3 && *c == Category::Mis),
                latency_ms: Some(40),
                error: None,
                status: Some(200),
            })
            .collect();
        let m = Message::Probe(env(&mo, &host, 2, now - 30_000, Probe { results }));
        live.apply(&m, now - 30_000, false, true)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let snap = Arc::new(live.snapshot(now));
    let (med, max, size) = timed(a.runs, || {
        dozor_collector::ui_bench::overview_html(snap.clone(), roster.clone(), now).len()
    });
    println!(
        "overview: {} hosts in {} МО: median {:.1} ms, max {:.1} ms, {} KiB of HTML ({} runs)",
        snap.hosts.len(),
        a.mo,
        med.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        size / 1024,
        a.runs
    );

    // A store with `days` of history: heartbeats every 5 min, probes every 5 min, off 22–06.
    let dir = tempfile::tempdir()?;
    let cfg = RawStore {
        region_tz: "UTC".into(),
        ..RawStore::default()
    }
    .validate()?;
    let path = db_path(dir.path());
    let mut store = SqliteStore::open(&path, &cfg, roster.clone())?;
    let t_fill = Instant::now();
    let day = 86_400_000;
    let start = (now - a.days * day).div_euclid(day) * day;
    let mut written = 0usize;
    for d in 0..=a.days {
        let mut sim = Sim::new();
        sim.interval_secs = 300;
        let d0 = start + d * day;
        for h in 0..a.store_hosts {
            let (mo, host) = (oid(h % a.mo), format!("arm-{h:05}"));
            let (on, off) = (d0 + 6 * 3_600_000, (d0 + 22 * 3_600_000).min(now));
            if on >= now {
                continue;
            }
            sim.birth(
                &mo,
                &host,
                Role::Workstation,
                "Главный корпус",
                on,
                on - 60_000,
            );
            sim.hbs(&mo, &host, on, off, 300_000, on - 60_000, false);
            sim.probes(
                &mo,
                &host,
                on,
                off,
                300_000,
                &[
                    ("mis", Category::Mis, d % 7 != 3),
                    ("lis", Category::Lis, true),
                ],
                false,
            );
            if off < now {
                sim.offline(&mo, &host, off);
            }
        }
        let recs: Vec<Record> = sim.take();
        written += recs.len();
        for chunk in recs.chunks(5_000) {
            store.write(&Batch {
                records: chunk.to_vec(),
                delivery: Vec::new(),
            })?;
        }
        store.maintain(d0 + day)?;
    }
    drop(store);
    println!(
        "store: {} days of {} hosts, {written} records in {:.0?}",
        a.days,
        a.store_hosts,
        t_fill.elapsed()
    );
    let (mo, host) = (oid(0), "arm-00000".to_string());
    let mut points = 0;
    let (med, max, size) = timed(a.runs, || {
        let (html, p) = dozor_collector::ui_bench::host_page_html(
            &path,
            roster.clone(),
            &mo,
            &host,
            a.days,
            now,
        )
        .expect("host page");
        points = p;
        html.len()
    });
    println!(
        "host page: {} days of history ({points} points): median {:.1} ms, max {:.1} ms, {} KiB of HTML ({} runs)",
        a.days,
        med.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        size / 1024,
        a.runs
    );
    Ok(())
}
