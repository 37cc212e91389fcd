//! Collector memory per host at country scale: the live state (one birth, one heartbeat, one
//! probe round per host, as after a morning's switch-on), the delivery tracker (one agent
//! instance per host) and a snapshot, for N hosts (default 1,000,000) in МО of 300 hosts.
//! Prints resident memory (VmRSS) after each stage and per host.
//!
//! `cargo run --release -p dozor-live --example mem_per_host [-- HOSTS]`

use dozor_live::delivery::Tracker;
use dozor_live::state::{LiveState, StateConfig};
use dozor_proto::{
    Birth, Category, DiskInfo, DiskUsage, Envelope, Heartbeat, Message, Probe, ProbeResult, Role,
    SCHEMA_VERSION, SpoolStats, TargetInfo,
};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn env<B>(mo: &str, host: &str, seq: u64, ts: i64, body: B) -> Envelope<B> {
    Envelope {
        v: SCHEMA_VERSION,
        mo: mo.to_string(),
        host: host.to_string(),
        inst: format!("{host}-inst-7f3a9c2e"),
        seq,
        ts,
        replay: false,
        body,
    }
}

const TARGETS: [(&str, Category); 5] = [
    ("mis", Category::Mis),
    ("iemk", Category::Iemk),
    ("lis", Category::Lis),
    ("pacs", Category::Pacs),
    ("erecipe", Category::Erecipe),
];

fn birth(mo: &str, host: &str, ts: i64) -> Message {
    Message::Birth(env(
        mo,
        host,
        1,
        ts,
        Birth {
            agent_version: "0.1.0".into(),
            role: Role::Workstation,
            site: "Поликлиника № 2".into(),
            hostname: format!("arm-{host}"),
            os_name: "Astra Linux".into(),
            os_version: "1.7.5".into(),
            cpu_model: "Intel(R) Core(TM) i3-10100 CPU @ 3.60GHz".into(),
            cpu_count: 4,
            mem_total_bytes: 8 << 30,
            disks: vec![DiskInfo {
                mount: "/".into(),
                fs: "ext4".into(),
                total_bytes: 256 << 30,
            }],
            boot_time: ts / 1000 - 3600,
            boot_id: "5b0f0c7e-4d1a-4a53-9a57-2f6c1d0e9b11".into(),
            seq_base: 1,
            interval_secs: 30,
            keepalive_secs: 60,
            prev_end: None,
            will_seq: None,
            targets: TARGETS
                .iter()
                .map(|(n, c)| TargetInfo {
                    name: (*n).into(),
                    category: *c,
                })
                .collect(),
        },
    ))
}

fn hb(mo: &str, host: &str, ts: i64) -> Message {
    Message::Hb(env(
        mo,
        host,
        2,
        ts,
        Heartbeat {
            uptime_secs: 3600,
            cpu_pct: 7.5,
            mem_used_bytes: 3 << 30,
            mem_total_bytes: 8 << 30,
            load: Some([0.3, 0.2, 0.1]),
            disks: vec![DiskUsage {
                mount: "/".into(),
                total_bytes: 256 << 30,
                used_bytes: 100 << 30,
            }],
            interval_secs: 30,
            spool: Some(SpoolStats::default()),
        },
    ))
}

fn probe(mo: &str, host: &str, ts: i64) -> Message {
    Message::Probe(env(
        mo,
        host,
        3,
        ts,
        Probe {
            results: TARGETS
                .iter()
                .map(|(n, c)| ProbeResult {
                    target: (*n).into(),
                    category: *c,
                    ok: true,
                    latency_ms: Some(42),
                    error: None,
                    status: Some(200),
                })
                .collect(),
        },
    ))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let per_mo = 300;
    let base = rss_bytes();
    let mut live = LiveState::new(StateConfig {
        max_hosts: n,
        max_hosts_per_mo: per_mo,
        ..StateConfig::default()
    });
    let mut tracker = Tracker::new(n, Vec::new());
    let now = 1_790_000_000_000_i64;
    let ids: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!(
                    "1.2.643.5.1.13.13.12.2.{}.{}",
                    10 + i / per_mo / 100,
                    i / per_mo
                ),
                format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            )
        })
        .collect();
    let after_ids = rss_bytes();
    let report = |stage: &str, prev: u64| -> u64 {
        let now_rss = rss_bytes();
        println!(
            "{stage:<34} RSS {:>8.1} MiB  (+{:>7.1} MiB, {:>5} bytes/host)",
            now_rss as f64 / 1048576.0,
            now_rss.saturating_sub(prev) as f64 / 1048576.0,
            now_rss.saturating_sub(prev) / n as u64
        );
        now_rss
    };
    println!("hosts: {n}, МО: {}", n.div_ceil(per_mo));
    let mut prev = report("baseline + id strings (test input)", base);
    prev = prev.max(after_ids);
    for (mo, host) in &ids {
        for m in [
            birth(mo, host, now),
            hb(mo, host, now),
            probe(mo, host, now),
        ] {
            live.admit(mo, host, now, true).expect("within caps");
            live.apply(&m, now, false, true).expect("within caps");
        }
    }
    prev = report("live state (birth+hb+probe)", prev);
    for (mo, host) in &ids {
        let inst = format!("{host}-inst-7f3a9c2e");
        tracker.record(&inst, mo, host, 3);
    }
    prev = report("delivery tracker (1 inst/host)", prev);
    let t = std::time::Instant::now();
    let snap = live.snapshot(now + 1000);
    let took = t.elapsed();
    prev = report("snapshot (shares hosts)", prev);
    println!("snapshot of {} hosts built in {took:?}", snap.hosts.len());
    drop(snap);
    let t = std::time::Instant::now();
    let snap = live.snapshot(now + 2000);
    println!("steady-state snapshot (no newcomers) in {:?}", t.elapsed());
    drop(snap);
    let total = prev.saturating_sub(after_ids);
    println!(
        "total collector-side state: {:.1} MiB, {} bytes/host",
        total as f64 / 1048576.0,
        total / n as u64
    );
    assert_eq!(live.len(), n);
    assert_eq!(tracker.len(), n);
}
