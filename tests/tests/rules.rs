//! Issue 13's availability rules with real agents and a real collector (docs/indicators.md).
//!
//! A collector restart never produces down: after the collector starts, a host not heard since
//! before the start is `unknown` until it had a fair chance to reconnect (the agents' backoff
//! cap + connect timeout + the host's tolerance), and then the stored history decides.
//!
//! A graceful shutdown while the channel is down reads as a shutdown at its instant once the
//! agent runs again (item 8), and an unclean end is dated by the agent's "last alive" stamp
//! (item 9): both travel in the next run's `birth` (`prev_end`).

use dozor_tests::*;
use std::time::Duration;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.3101";

/// (host, up, down, unknown) ms of every host over `[from, now)`.
async fn by_host(c: &Collector, from: i64) -> Vec<(String, i64, i64, i64)> {
    let to = unix_ms();
    let v = c
        .get(&format!("/api/v1/availability?by=host&from={from}&to={to}"))
        .await;
    v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {v}"))
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or_default().to_string(),
                r["up_ms"].as_i64().unwrap_or(-1),
                r["down_ms"].as_i64().unwrap_or(-1),
                r["unknown_ms"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The store's runs, segments and markers relative to `t0`, for a failure message.
fn dump(c: &Collector, t0: i64) -> String {
    let db = c.data_dir.join("dozor.db");
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("dozor.db");
    let mut out = String::new();
    let q = |sql: &str| -> Vec<String> {
        let mut st = conn.prepare(sql).expect(sql);
        let n = st.column_count();
        st.query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get::<_, Option<i64>>(i) {
                    Ok(Some(v)) if v > 1_000_000_000_000 => format!("{:+}", v - t0),
                    Ok(Some(v)) => v.to_string(),
                    Ok(None) => "-".into(),
                    Err(_) => r.get::<_, String>(i).unwrap_or_default(),
                })
                .collect::<Vec<_>>()
                .join(" "))
        })
        .expect(sql)
        .map(Result::unwrap)
        .collect()
    };
    out.push_str(&format!(
        "runs: {:?}\n",
        q("SELECT start_ms, end_ms, stopped FROM runs")
    ));
    for l in q(
        "SELECT h.host, s.start_ms, s.end_ms, s.cause, s.next_ms, s.boot_id FROM segs s JOIN hosts h ON h.id = s.host_id ORDER BY h.host, s.start_ms",
    ) {
        out.push_str(&format!("seg {l}\n"));
    }
    for l in q(
        "SELECT h.host, m.at_ms, m.kind FROM markers m JOIN hosts h ON h.id = m.host_id ORDER BY m.at_ms",
    ) {
        out.push_str(&format!("marker {l}\n"));
    }
    out
}

async fn online(c: &Collector) -> Vec<String> {
    let hosts = c.get(&format!("/api/v1/hosts?mo={MO}&state=online")).await;
    hosts
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["host_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Two servers (availability around the clock, so any down second shows) report at a 1 s
/// interval through the collector's embedded broker, one of them through a relay standing in
/// for a slow channel. The collector is stopped (`kill9`: hard, else SIGTERM) for 10 s; after
/// its start the relay stays cut for 15 s more, so that agent cannot reconnect. Throughout,
/// and after it reconnected and replayed, no host has any down.
async fn restart(kill9: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    let port = free_port();
    let broker = Broker::Embedded(port);
    let mut c = Collector::start(&broker, &cdir, &[]);
    let relay = Relay::start(port).await;
    let args = [
        "--role",
        "server",
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "5",
        "--spool-resend-after-secs",
        "5",
    ];
    let direct = format!("mqtt://127.0.0.1:{port}");
    let slow = format!("mqtt://127.0.0.1:{}", relay.port);
    let mut agents = [
        Agent::start_logged(
            &direct,
            MO,
            "srv-direct",
            &dir.path().join("a"),
            &args,
            Some((&dir.path().join("a.log"), "dozor_agent=trace")),
        ),
        Agent::start(&slow, MO, "srv-slow", &dir.path().join("b"), &args),
    ];
    let t0 = unix_ms();
    let up = wait_for(Duration::from_secs(20), || async {
        (online(&c).await.len() == 2).then_some(())
    })
    .await;
    assert!(up.is_some(), "both agents online");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Stop first, then cut: a channel cut while the collector still runs is observed (the
    // agent's last will marks it lost), which is not what this test is about.
    if kill9 {
        c.proc.kill9();
    } else {
        assert_eq!(c.proc.terminate(), Some(0), "collector stops cleanly");
    }
    relay.set(false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let c = Collector::start(&broker, &cdir, &[]);
    let started = unix_ms();
    // 15 s with the slow agent's channel cut: reports taken meanwhile show no down.
    let mut samples = 0;
    while unix_ms() - started < 15_000 {
        for (host, _, down, _) in by_host(&c, t0).await {
            assert_eq!(
                down,
                0,
                "{host}: down {down} ms at {} ms after the start (start at {:+} ms)\n{}",
                { unix_ms() - started },
                started - t0,
                dump(&c, t0)
                    + &std::fs::read_to_string(dir.path().join("a.log")).unwrap_or_default()
            );
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(samples >= 10, "sampled the window ({samples} reports)");
    // The window was really exercised: the slow agent could not have reconnected (well past
    // its 2.5 s tolerance, where it used to count as down).
    assert!(
        !online(&c).await.contains(&"srv-slow".to_string()),
        "srv-slow is still cut off"
    );
    let rows = by_host(&c, t0).await;
    let slow_row = rows.iter().find(|r| r.0 == "srv-slow").expect("srv-slow");
    assert!(
        slow_row.3 >= 20_000,
        "srv-slow is unknown through the outage and since the start: {slow_row:?}"
    );

    // The channel comes back: the agent reconnects, replays, and the history decides (it was
    // up all along).
    relay.set(true);
    let back = wait_for(Duration::from_secs(60), || async {
        (online(&c).await.len() == 2).then_some(())
    })
    .await;
    assert!(back.is_some(), "srv-slow reconnected");
    let replayed = wait_for(Duration::from_secs(60), || async {
        let rows = by_host(&c, t0).await;
        rows.iter().all(|r| r.3 < 5_000 && r.2 == 0).then_some(rows)
    })
    .await;
    let rows = by_host(&c, t0).await;
    assert!(
        replayed.is_some(),
        "after the replay the outage is filled and nothing is down: {rows:?}"
    );
    for (host, up, down, unknown) in &rows {
        println!("RESTART kill9={kill9} {host}: up {up} ms, down {down} ms, unknown {unknown} ms");
        assert_eq!(*down, 0, "{host}");
    }
    for a in &mut agents {
        a.proc.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_sigterm_restart_produces_no_down() {
    restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_kill9_restart_produces_no_down() {
    restart(true).await;
}

/// The host's stored segments `(start, end, cause, next)`, ascending.
fn segs(c: &Collector, host: &str) -> Vec<(i64, i64, i64, Option<i64>)> {
    let db = c.data_dir.join("dozor.db");
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("dozor.db");
    let mut st = conn
        .prepare(
            "SELECT s.start_ms, s.end_ms, s.cause, s.next_ms FROM segs s
             JOIN hosts h ON h.id = s.host_id WHERE h.host = ?1 ORDER BY s.start_ms",
        )
        .expect("segs query");
    st.query_map([host], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("segs")
        .map(Result::unwrap)
        .collect()
}

/// The `prev_end` of the host's last stored birth (`hosts.inventory`).
async fn prev_end(c: &Collector, host: &str) -> Option<serde_json::Value> {
    let db = c.data_dir.join("dozor.db");
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let inv: Option<String> = conn
        .query_row("SELECT inventory FROM hosts WHERE host = ?1", [host], |r| {
            r.get(0)
        })
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&inv?).ok()?;
    let p = v["prev_end"].clone();
    (!p.is_null()).then_some(p)
}

/// Issue 13, item 8: a server (1 s interval) talks to the collector through a relay standing
/// in for its channel. The channel is cut (the broker publishes the agent's will: lost), and 4 s
/// later, with the channel still down, the agent is stopped gracefully (SIGTERM): it cannot say
/// `offline`. The channel comes back and the agent starts again: its spool replays the 4 s of
/// heartbeats made during the cut and its birth carries the stop. The timeline then shows the
/// host up until the stop and shut down (`shutdown`, not `lost`) from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_channel_is_down_reads_as_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    let port = free_port();
    let c = Collector::start(&Broker::Embedded(port), &cdir, &[]);
    let relay = Relay::start(port).await;
    let args = [
        "--role",
        "server",
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "5",
    ];
    let url = format!("mqtt://127.0.0.1:{}", relay.port);
    let adir = dir.path().join("a");
    let mut agent = Agent::start(&url, MO, "srv-off", &adir, &args);
    let up = wait_for(Duration::from_secs(20), || async {
        online(&c)
            .await
            .contains(&"srv-off".to_string())
            .then_some(())
    })
    .await;
    assert!(up.is_some(), "agent online");
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.set(false);
    let cut = unix_ms();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stop = unix_ms();
    assert_eq!(agent.proc.terminate(), Some(0), "agent stops cleanly");
    let stopped = unix_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Before the agent is back the collector knows only the cut: lost, from before the stop.
    let before = segs(&c, "srv-off");
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        before[0].1 < cut + 1_000,
        "nothing after the cut yet: {before:?}"
    );
    assert_eq!(before[0].2, 3, "the cut reads as lost for now: {before:?}");

    relay.set(true);
    let back = unix_ms();
    let _agent = Agent::start(&url, MO, "srv-off", &adir, &args);
    let settled = wait_for(Duration::from_secs(60), || async {
        let s = segs(&c, "srv-off");
        (s.len() == 2 && s[0].1 > cut + 2_000 && prev_end(&c, "srv-off").await.is_some())
            .then_some(s)
    })
    .await;
    let s = segs(&c, "srv-off");
    assert!(settled.is_some(), "replayed and restarted: {s:?}");
    let pe = prev_end(&c, "srv-off").await.expect("prev_end");
    println!("SHUTDOWN cut {cut} stop {stop}..{stopped} back {back}: segs {s:?} prev_end {pe}");
    assert_eq!(pe["shutdown"], true, "{pe}");
    let at = pe["at"].as_i64().expect("prev_end.at");
    assert!(
        (stop..=stopped).contains(&at),
        "the stop's instant as the agent saw it: {at} not in [{stop}, {stopped}]"
    );
    // Up through the cut until the stop (the replayed heartbeats and the stamp, to the ms,
    // same machine clock), then a shutdown gap until the new run.
    // The collector corrects agent times by its estimate of the agent's clock offset (here
    // the delivery delay, a few ms, smoothed), so "exactly" is to within 200 ms.
    let (first, second) = (s[0], s[1]);
    assert!(
        (first.1 - at).abs() <= 200,
        "the segment ends at the stop: {s:?}"
    );
    assert_eq!(first.2, 1, "the gap's cause is shutdown, not lost: {s:?}");
    assert!(second.0 >= back, "{s:?}");
    // The history reads it as `off` from the stop on, and nothing as down.
    let h = c
        .get(&format!(
            "/api/v1/hosts/{MO}/srv-off/history?from={}&to={}",
            first.0,
            unix_ms()
        ))
        .await;
    let states: Vec<&str> = h["availability"]
        .as_array()
        .unwrap_or_else(|| panic!("history: {h}"))
        .iter()
        .filter_map(|p| p["state"].as_str())
        .collect();
    assert!(states.contains(&"off"), "{h}");
    assert!(!states.contains(&"down"), "{h}");
}

/// Issue 13, item 9 (with issue 15's rare stamp): an agent killed with `kill -9` with the link
/// up starts again; its birth carries the last instant its stamp recorded — the run's first
/// heartbeat, since the stamp is rewritten only every 5 minutes — which is older than the last
/// heartbeat the collector stored live, so the failure is dated by that heartbeat: the
/// segment ends within one interval of the kill and the silence after it is down (a server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_end_is_dated_by_the_last_message() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    let port = free_port();
    let c = Collector::start(&Broker::Embedded(port), &cdir, &[]);
    let started = unix_ms();
    let args = [
        "--role",
        "server",
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "5",
    ];
    let url = format!("mqtt://127.0.0.1:{port}");
    let adir = dir.path().join("a");
    let agent_started = unix_ms();
    let mut agent = Agent::start(&url, MO, "srv-crash", &adir, &args);
    let up = wait_for(Duration::from_secs(20), || async {
        online(&c)
            .await
            .contains(&"srv-crash".to_string())
            .then_some(())
    })
    .await;
    assert!(up.is_some(), "agent online");
    // Past the collector's own start window (40 s + 2.5 intervals), where a silence closed by
    // later messages is unknown (it may be backlog): this one must read as down.
    let wait = (started + 44_000 - unix_ms()).max(3_000);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let killed = unix_ms();
    agent.proc.kill9();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _agent = Agent::start(&url, MO, "srv-crash", &adir, &args);
    let pe = wait_for(Duration::from_secs(30), || async {
        prev_end(&c, "srv-crash").await
    })
    .await
    .expect("the new run's birth carries prev_end");
    assert_eq!(pe["shutdown"], false, "{pe}");
    let at = pe["at"].as_i64().expect("prev_end.at");
    assert!(
        (agent_started..killed - 2_000).contains(&at),
        "the run's first heartbeat, not rewritten since: {at}, started {agent_started}, killed at {killed}"
    );
    let s = wait_for(Duration::from_secs(30), || async {
        let s = segs(&c, "srv-crash");
        (s.len() == 2).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("two segments: {:?}", segs(&c, "srv-crash")));
    println!("CRASH killed {killed}: segs {s:?} prev_end {pe}");
    assert!(
        (killed - 1_500..=killed + 200).contains(&s[0].1),
        "the run's segment ends at the last heartbeat stored before the kill (1 s interval, \
         to the clock-offset estimate), not at the older stamp: {s:?}, killed at {killed}"
    );
    // Same boot: not a reboot, an unexplained silence (lost by the will) from the stamp on.
    assert!(matches!(s[0].2, 3 | 4), "lost or silent: {s:?}");
    let rows = by_host(&c, s[0].0).await;
    let row = rows.iter().find(|r| r.0 == "srv-crash").expect("row");
    let gap = s[1].0 - s[0].1;
    assert_eq!(
        row.2, gap,
        "down exactly from the last heartbeat to the new run: {row:?} {s:?}"
    );
}
