//! Fills an embedded store with a region's synthetic history and times the indicator table.
//!
//! ```text
//! CARGO_TARGET_DIR=… cargo run --release -p dozor-collector --example gen_history -- \
//!     --hosts 30000 --mo 300 --days 91 --interval 1800 --dir /tmp/dozor-bench
//! ```
//!
//! The history goes through `SqliteStore::write` exactly as the pipeline hands it over
//! (births, heartbeats, probe rounds, graceful offlines, collector "lost" transitions, channel
//! failures whose backlog is replayed later, one collector crash), day by day from
//! 2024-01-01 (Europe/Moscow). Workstations work on weekdays (start 08:00–09:30, end
//! 17:00–19:00, 15 % switched off at the wall, 3 % of days lost for 1–3 h, 4 % rebooted, 2 %
//! absent); servers run around the clock with rare 1–4 h outages; 5 % of МО see the МИС fail
//! for two hours on some mornings; 1 % of МО-days lose their channel for two hours and replay
//! the backlog afterwards. `--interval` is the heartbeat/probe period: the stored intervals and
//! aggregates do not depend on it (only the rollup rows and the generation time do).

use chrono::{Datelike, NaiveDate, TimeZone};
use dozor_collector::availability::Period;
use dozor_collector::record::{Batch, Record};
use dozor_collector::report;
use dozor_collector::roster::Roster;
use dozor_collector::store::config::RawStore;
use dozor_collector::store::sim::Sim;
use dozor_collector::store::{Reader, SqliteStore, Store, db_path};
use dozor_proto::{Category, Role};
use std::sync::Arc;
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

struct Args {
    hosts: usize,
    mos: usize,
    days: u32,
    interval: i64,
    dir: std::path::PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        hosts: 30_000,
        mos: 300,
        days: 91,
        interval: 1800,
        dir: std::env::temp_dir().join("dozor-bench"),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let x = &v[i + 1];
        match v[i].as_str() {
            "--hosts" => a.hosts = x.parse().expect("--hosts N"),
            "--mo" => a.mos = x.parse().expect("--mo N"),
            "--days" => a.days = x.parse().expect("--days N"),
            "--interval" => a.interval = x.parse().expect("--interval SECS"),
            "--dir" => a.dir = x.into(),
            o => panic!("unknown option {o}"),
        }
        i += 2;
    }
    a
}

struct Host {
    mo: usize,
    id: String,
    server: bool,
    site: String,
    /// Boot instant of the current boot.
    boot: i64,
}

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;

fn main() {
    let a = args();
    let tz = chrono_tz::Europe::Moscow;
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).expect("creating --dir");
    let path = db_path(&a.dir);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // The region: МО with 1–4 sites, servers ≈ 5 % of hosts.
    let n_servers = (a.hosts / 20).max(a.mos);
    let mut hosts = Vec::with_capacity(a.hosts);
    let mo_oid = |m: usize| format!("1.2.643.5.1.13.13.12.2.27.{}", 1000 + m);
    let mut sites: Vec<Vec<String>> = Vec::new();
    for _ in 0..a.mos {
        let n = 1 + rng.below(4) as usize;
        sites.push((0..n).map(|s| format!("Подразделение {}", s + 1)).collect());
    }
    for i in 0..a.hosts {
        let mo = i % a.mos;
        let server = i < n_servers;
        let site = sites[mo][rng.below(sites[mo].len() as u64) as usize].clone();
        hosts.push(Host {
            mo,
            id: format!("{}-{i}", if server { "srv" } else { "pc" }),
            server,
            site,
            boot: 0,
        });
    }
    let mut toml = String::new();
    let mut planned: Vec<Vec<u32>> = sites.iter().map(|s| vec![0; s.len()]).collect();
    for h in hosts.iter().filter(|h| !h.server) {
        let s = sites[h.mo].iter().position(|x| *x == h.site).unwrap_or(0);
        planned[h.mo][s] += 1;
    }
    for m in 0..a.mos {
        toml.push_str(&format!(
            "[[mo]]\noid = \"{}\"\nname = \"МО {}\"\n",
            mo_oid(m),
            m + 1
        ));
        for (s, name) in sites[m].iter().enumerate() {
            // Plans a little above what is installed.
            let p = planned[m][s] + u32::from(rng.chance(0.3));
            toml.push_str(&format!(
                "[[mo.site]]\nname = \"{name}\"\nplanned_arm = {p}\n"
            ));
        }
    }
    let roster = Arc::new(Roster::from_toml(&toml, "generated").expect("roster"));
    let cfg = RawStore::default().validate().expect("config");
    let mut store = SqliteStore::open(&path, &cfg, roster.clone()).expect("store");
    let mis_trouble: Vec<bool> = (0..a.mos).map(|_| rng.chance(0.05)).collect();

    let first = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let local = |d: NaiveDate, min: i64| -> i64 {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .single()
            .unwrap()
            .timestamp_millis()
            + min * MIN
    };
    let iv = a.interval * 1000;
    let mut written = 0u64;
    let mut write_time = std::time::Duration::ZERO;
    let crash_day = a.days / 2;
    let start = Instant::now();
    for day in 0..a.days {
        let d = first + chrono::Days::new(u64::from(day));
        let weekday = d.weekday().num_days_from_monday() < 5;
        let d0 = local(d, 0);
        let mut s = Sim::new();
        s.interval_secs = a.interval as u32;
        if day == 0 {
            s.start(d0 - H);
        }
        // МО whose channel fails 10:00–12:00 today (backlog replayed at 12:05).
        let channel_down: Vec<bool> = (0..a.mos).map(|_| rng.chance(0.01)).collect();
        let mis_down_today: Vec<bool> = (0..a.mos)
            .map(|m| mis_trouble[m] && weekday && rng.chance(0.3))
            .collect();
        for h in hosts.iter_mut() {
            let mo = mo_oid(h.mo);
            let role = if h.server {
                Role::Server
            } else {
                Role::Workstation
            };
            let (from, to, graceful) = if h.server {
                (d0, d0 + 24 * H - 1, false)
            } else {
                if !weekday || rng.chance(0.02) {
                    continue;
                }
                let st = local(d, 8 * 60 + rng.below(90) as i64);
                let en = local(d, 17 * 60 + rng.below(120) as i64);
                (st, en, !rng.chance(0.15))
            };
            // A workstation boots every morning; a server keeps its boot.
            if !h.server || h.boot == 0 {
                h.boot = from - 2 * MIN;
                s.birth(&mo, &h.id, role, &h.site, from, h.boot);
            }
            let loss = if h.server {
                rng.chance(0.005).then(|| {
                    (
                        from + rng.below(20) as i64 * H,
                        (1 + rng.below(4) as i64) * H,
                    )
                })
            } else {
                rng.chance(0.03).then(|| {
                    (
                        from + rng.below(6) as i64 * H,
                        (1 + rng.below(3) as i64) * H,
                    )
                })
            };
            let reboot =
                (!h.server && rng.chance(0.04)).then(|| from + (1 + rng.below(6) as i64) * H);
            let (cd0, cd1) = (local(d, 10 * 60), local(d, 12 * 60));
            let (md0, md1) = (local(d, 9 * 60), local(d, 11 * 60));
            let mut t = from + rng.below(iv as u64) as i64;
            let mut lost_marked = false;
            let mut rebooted = false;
            while t <= to {
                if let Some((l0, len)) = loss
                    && t >= l0
                    && t < l0 + len
                {
                    if !lost_marked {
                        s.lost(&mo, &h.id, l0 + 3 * iv + 5_000);
                        lost_marked = true;
                    }
                    t += iv;
                    if t >= l0 + len {
                        // Back after a crash: a new boot.
                        h.boot = t - MIN;
                        s.birth(&mo, &h.id, role, &h.site, t, h.boot);
                    }
                    continue;
                }
                if let Some(r) = reboot
                    && !rebooted
                    && t >= r
                {
                    rebooted = true;
                    s.offline(&mo, &h.id, r);
                    h.boot = r + MIN;
                    s.birth(&mo, &h.id, role, &h.site, r + 90_000, h.boot);
                    t = t.max(r + 90_000 + iv / 2);
                }
                let replay = channel_down[h.mo] && t >= cd0 && t < cd1;
                s.replay_recv_ms = Some(cd1 + 5 * MIN);
                s.hb(&mo, &h.id, t, h.boot, replay);
                let mis_ok = !(mis_down_today[h.mo] && t >= md0 && t < md1);
                s.probe(
                    &mo,
                    &h.id,
                    t,
                    &[
                        ("МИС", Category::Mis, mis_ok),
                        ("ИЭМК", Category::Iemk, true),
                        ("ЛИС", Category::Lis, true),
                    ],
                    replay,
                );
                t += iv;
            }
            if channel_down[h.mo] && from < cd0 && to > cd0 {
                s.lost(&mo, &h.id, cd0 + 3 * iv + 5_000);
            }
            if !h.server {
                if graceful {
                    s.offline(&mo, &h.id, to + 10_000);
                } else {
                    s.lost(&mo, &h.id, to + 3 * iv + 5_000);
                }
            }
        }
        if day == crash_day {
            // The collector crashes at 03:00 and is back at 04:00.
            s.start(local(d, 4 * 60));
        }
        let mut recs = s.take();
        recs.sort_by_key(record_time);
        if day == crash_day {
            // Nothing is received while the collector is down.
            let (c0, c1) = (local(d, 3 * 60), local(d, 4 * 60));
            recs.retain(|r| {
                let t = record_time(r);
                !(t >= c0 && t < c1) || matches!(r, Record::CollectorStart { .. })
            });
        }
        let t0 = Instant::now();
        for chunk in recs.chunks(50_000) {
            store
                .write(&Batch {
                    records: chunk.to_vec(),
                    delivery: Vec::new(),
                })
                .expect("write");
        }
        write_time += t0.elapsed();
        written += recs.len() as u64;
        if day % 10 == 9 || day + 1 == a.days {
            eprintln!(
                "day {:>3}: {written} records, {:.0} records/s",
                day + 1,
                written as f64 / write_time.as_secs_f64()
            );
        }
    }
    let last = first + chrono::Days::new(u64::from(a.days));
    let now = local(last, 12 * 60);
    let t0 = Instant::now();
    let rep = store.maintain_now(now).expect("maintain");
    eprintln!("final maintenance: {rep:?} in {:.1?}", t0.elapsed());
    eprintln!(
        "generated in {:.0?}; store writes {:.0?} for {written} records ({:.0} records/s), stats {:?}",
        start.elapsed(),
        write_time,
        written as f64 / write_time.as_secs_f64(),
        store.stats()
    );
    drop(store);
    {
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
        for t in [
            "hosts",
            "segs",
            "markers",
            "probes",
            "rollups",
            "host_day",
            "host_month",
            "mo_day",
            "mo_month",
            "dirty_host",
            "dirty_mo",
            "res_day",
            "res_chan",
            "dirty_res",
        ] {
            let n: i64 = c
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                .expect("count");
            let bytes: Option<i64> = c
                .query_row(
                    &format!("SELECT sum(pgsize) FROM dbstat WHERE name = '{t}' OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = '{t}' AND type = 'index')"),
                    [],
                    |r| r.get(0),
                )
                .ok()
                .flatten();
            eprintln!(
                "  {t:<11} {n:>12} rows{}",
                bytes.map_or(String::new(), |b| format!(
                    ", {:.1} MiB",
                    b as f64 / 1048576.0
                ))
            );
        }
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "store size: {:.1} MiB ({})",
        size as f64 / 1048576.0,
        path.display()
    );

    let reader = Reader::open(&path, &cfg).expect("reader");
    let year = first.year();
    let q = if a.days >= 90 {
        format!("{year}-Q1")
    } else {
        format!("{year}-01")
    };
    for spec in [q.as_str(), "2024-02", "2024-W10", "2024-03-05"] {
        let p = Period::parse(spec, tz).expect("period");
        let mut times = Vec::new();
        let mut table = None;
        for _ in 0..5 {
            let t0 = Instant::now();
            table = Some(report::indicators(&reader, &roster, &cfg, &p, now).expect("indicators"));
            times.push(t0.elapsed());
        }
        times.sort();
        eprintln!(
            "indicators {spec:<10}: median {:.0?} (min {:.0?}, max {:.0?})",
            times[2], times[0], times[4]
        );
        if spec == q {
            for r in &table.expect("table").rows {
                eprintln!(
                    "    {:<90} plan {:>8} fact {:>8} {:>6}",
                    r.name.chars().take(90).collect::<String>(),
                    r.plan.map_or("-".into(), |v| format!("{v:.1}")),
                    r.fact.map_or("-".into(), |v| format!("{v:.2}")),
                    r.pct_of_plan.map_or("-".into(), |v| format!("{v:.1}%"))
                );
            }
        }
    }
    // The same table with the resources' own figures read from the raw intervals of every day
    // (as before they were materialized, schema 2): every day marked dirty for them.
    {
        let p = Period::parse(&q, tz).expect("period");
        let want = report::indicators(&reader, &roster, &cfg, &p, now).expect("indicators");
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch("INSERT OR IGNORE INTO dirty_res(day) SELECT day FROM host_day")
            .expect("marking days");
        let mut times = Vec::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            let got = report::indicators(&reader, &roster, &cfg, &p, now).expect("indicators");
            times.push(t0.elapsed());
            assert_eq!(
                format!("{:?}", got.rows),
                format!("{:?}", want.rows),
                "raw and materialized resources differ"
            );
        }
        times.sort();
        eprintln!(
            "indicators {q:<10} with resources raw: median {:.0?} (min {:.0?}, max {:.0?})",
            times[2], times[0], times[4]
        );
        c.execute_batch("DELETE FROM dirty_res")
            .expect("unmarking days");
    }
    // A period that ends "now", mid-day: today's part comes from the raw intervals.
    let mid = local(last - chrono::Days::new(1), 15 * 60);
    let p = Period::parse("2024-03", tz).expect("period");
    let t0 = Instant::now();
    report::indicators(&reader, &roster, &cfg, &p, mid).expect("indicators");
    eprintln!(
        "indicators 2024-03 at 15:00 on its last day (today raw): {:.0?}",
        t0.elapsed()
    );
}

fn record_time(r: &Record) -> i64 {
    match r {
        Record::Msg(a) => a.recv_ms,
        Record::Transition(t) => t.at_ms,
        Record::CollectorStart { at_ms } | Record::CollectorStop { at_ms } => *at_ms,
    }
}
