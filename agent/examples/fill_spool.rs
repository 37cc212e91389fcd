//! Fills a spool to its size bound with realistic heartbeats, then opens it the way the agent
//! does and reports the time and the process RSS; also measures what one committed append
//! costs with `synchronous = full` and `= normal`.
//!
//! ```text
//! cargo run --release -p dozor-agent --example fill_spool -- [DIR] [MAX_BYTES]
//! ```
//! DIR defaults to a temporary directory, MAX_BYTES to 64 MiB (the default bound). The filled
//! spool is left in DIR, so the real agent can be started on it (`--data-dir DIR`).

use std::path::PathBuf;
use std::time::{Duration, Instant as StdInstant};

use dozor_agent::config::{SpoolConfig, Synchronous};
use dozor_agent::spool::{FILE_NAME, Replay, Row, Spool};
use dozor_agent::wall_ms;
use dozor_proto::{DiskUsage, Envelope, Heartbeat, Kind, SCHEMA_VERSION, SpoolStats};
use tokio::time::Instant;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn heartbeat(seq: u64, ts: i64) -> Vec<u8> {
    Envelope {
        v: SCHEMA_VERSION,
        mo: "1.2.643.5.1.13.13.12.2.27.1234".into(),
        host: "3f9c2b7e51a04d7e9a1c0b2d4e6f8a10".into(),
        inst: "7f3a9c0e12ab4c5d".into(),
        seq,
        ts,
        replay: false,
        body: Heartbeat {
            uptime_secs: 123_456,
            cpu_pct: 12.5,
            mem_used_bytes: 3_221_225_472,
            mem_total_bytes: 8_589_934_592,
            load: Some([0.52, 0.41, 0.33]),
            disks: vec![
                DiskUsage {
                    mount: "/".into(),
                    total_bytes: 107_374_182_400,
                    used_bytes: 53_687_091_200,
                },
                DiskUsage {
                    mount: "/home".into(),
                    total_bytes: 429_496_729_600,
                    used_bytes: 107_374_182_400,
                },
            ],
            interval_secs: 30,
            spool: Some(SpoolStats {
                pending: seq,
                bytes: seq * 600,
                dropped: 0,
                oldest_seq: Some(1),
            }),
        },
    }
    .to_json()
}

fn config(max_bytes: u64, synchronous: Synchronous) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        max_age: Duration::from_secs(14 * 86_400),
        resend_after: Duration::from_secs(60),
        replay_rate_per_sec: 5,
        // Write-through: every append is a commit, as while the link is down.
        flush_after: Duration::ZERO,
        synchronous,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench_appends(dir: &std::path::Path, max_bytes: u64, sync: Synchronous, n: usize) -> String {
    let mut spool = Spool::open(dir, &config(max_bytes, sync), Instant::now(), wall_ms())
        .expect("open for the append benchmark");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let now = wall_ms();
        let t = StdInstant::now();
        let r = spool.append(Kind::Hb, now, now, Instant::now(), |seq, _| {
            heartbeat(seq, now)
        });
        times.push(t.elapsed());
        assert!(r.error.is_none(), "append failed: {:?}", r.error);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / n as u32;
    format!(
        "{sync:?}: {n} appends, mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        mean.as_secs_f64() * 1e3,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times[n - 1].as_secs_f64() * 1e3,
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tmp;
    let dir: PathBuf = match args.next() {
        Some(d) => d.into(),
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_owned()
        }
    };
    let max_bytes: u64 = args
        .next()
        .map(|s| s.parse().expect("MAX_BYTES is a number"))
        .unwrap_or(64 << 20);
    std::fs::create_dir_all(&dir).expect("create DIR");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("{FILE_NAME}{ext}")));
    }
    println!("spool: {}", dir.join(FILE_NAME).display());
    println!("RSS at start: {} KiB", rss_kib("VmRSS:"));

    // Fill in large transactions (the agent commits one message at a time; that is measured
    // below). Messages get timestamps spread over the last 13 days so the age bound keeps them.
    let t = StdInstant::now();
    let sample_len = heartbeat(1, wall_ms()).len() as u64;
    let count = max_bytes / sample_len;
    {
        let mut spool = Spool::open(
            &dir,
            &config(max_bytes, Synchronous::Normal),
            Instant::now(),
            wall_ms(),
        )
        .expect("open to fill");
        let start_ts = wall_ms() - 13 * 86_400_000;
        let step = (13 * 86_400_000) / count.max(1) as i64;
        let mut seq = spool.index().next_seq();
        while seq <= count {
            let bodies: Vec<(u64, i64, Vec<u8>)> = (seq..=(seq + 4999).min(count))
                .map(|s| {
                    let ts = start_ts + s as i64 * step;
                    (s, ts, heartbeat(s, ts))
                })
                .collect();
            let rows: Vec<Row<'_>> = bodies
                .iter()
                .map(|(s, ts, b)| Row {
                    seq: *s,
                    kind: Kind::Hb,
                    ts_ms: *ts,
                    body: b,
                })
                .collect();
            seq += rows.len() as u64;
            spool
                .store_mut()
                .append_batch(&rows, seq)
                .expect("batch insert");
        }
    }
    let file_len = std::fs::metadata(dir.join(FILE_NAME))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "filled {count} messages of {sample_len} B ({:.1} MiB payload, file {:.1} MiB) in {:.1} s",
        (count * sample_len) as f64 / 1048576.0,
        file_len as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    println!("RSS after fill (spool closed): {} KiB", rss_kib("VmRSS:"));

    // Open it the way the agent does.
    let t = StdInstant::now();
    let mut spool = Spool::open(
        &dir,
        &config(max_bytes, Synchronous::Full),
        Instant::now(),
        wall_ms(),
    )
    .expect("open like the agent");
    let stats = spool.stats();
    println!(
        "opened: {} pending, {:.1} MiB, dropped {} in {:.0} ms; RSS {} KiB (peak {} KiB)",
        stats.pending,
        stats.bytes as f64 / 1048576.0,
        stats.dropped,
        t.elapsed().as_secs_f64() * 1e3,
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:"),
    );

    // Replay a few thousand messages as the replayer would (without the pacing).
    let now = Instant::now();
    spool.index_mut().connected(now - Duration::from_secs(1));
    let t = StdInstant::now();
    let mut replayed = 0;
    let mut later = now;
    while replayed < 5000 {
        match spool.index_mut().poll_replay(later) {
            Replay::Send(seq) => {
                let body = spool.body(seq).expect("read").expect("present");
                assert!(!body.is_empty());
                spool.index_mut().mark_sent(seq, later);
                replayed += 1;
            }
            Replay::WaitUntil(t) => later = t,
            Replay::Idle => break,
        }
    }
    println!(
        "replayed {replayed} from the full spool in {:.0} ms; RSS {} KiB",
        t.elapsed().as_secs_f64() * 1e3,
        rss_kib("VmRSS:")
    );
    drop(spool);

    // One message per commit, as the agent writes, on the full spool (each append also drops
    // the oldest message to stay within the bound).
    for sync in [Synchronous::Full, Synchronous::Normal] {
        println!("full spool:  {}", bench_appends(&dir, max_bytes, sync, 200));
    }
    // And on an empty spool next to it (same file system), the everyday case.
    let fresh = dir.join("fresh");
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let _ = std::fs::remove_dir_all(&fresh);
        println!(
            "empty spool: {}",
            bench_appends(&fresh, max_bytes, sync, 200)
        );
    }
    let _ = std::fs::remove_dir_all(&fresh);
    println!(
        "RSS at end: {} KiB (peak {} KiB)",
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:")
    );
}
