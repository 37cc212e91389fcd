//! `dozor-loadgen --scenario day`: a region's day in a box (issue 15), against a running
//! collector and its broker, measured through the collector's own API.
//!
//! The fleet of [`Fleet`] (70 % Windows workstations, 30 % Linux servers by the host's seed) is
//! put through the shapes of a day, one after another:
//! 1. **morning**: every host switches on (birth, then a heartbeat every 30 s) spread evenly
//!    over `--ramp-secs` (default 30 s: the 15 minutes 08:00–08:15 compressed 30×, so the
//!    storm is 30× denser than the real one); measured: until the API shows every host online;
//! 2. **replay**: the hosts of one МО (`--replay-mo`, default the first) carry a spool backlog
//!    of `--backlog` heartbeats 30 s apart (default 20,160 = 7 days) made before they
//!    connected — a channel down for 7 days. They replay it at once (`replay: true`, original
//!    `ts`, oldest first) while sending live heartbeats. Measured: until the collector has
//!    committed every backlog message to its store (`committed` in `/api/v1/delivery`), and every second
//!    meanwhile whether any of those hosts reads anything but `online` (freshness);
//! 3. **report**: `/api/v1/availability?by=host` over the backlog's days for the replayed
//!    hosts: expected no down time at all (they were up and reporting the whole week);
//! 4. **evening**: every workstation shuts down gracefully (`offline`), spread over
//!    `--ramp-secs`; servers stay up; measured: until the API shows them offline.
//!
//! Alert noise: the scenario implies no incident at all (nothing failed: the channel outage
//! ended before the collector heard of the МО, shutdowns are orderly, and the simulated disks
//! stay below 85 %); every incident the collector opens during the run is counted and printed.
//! Every heartbeat's uptime is exact for the host's boot, so the history sees one boot per host.
//!
//! With `--collector-pid` the collector's CPU (from `/proc/PID/stat`, peak over 1 s windows
//! and the average per phase) and RSS (peak `VmRSS` per phase, `VmHWM` at the end) are sampled.
//! The last stdout line is machine-readable (`dozor-loadgen-day key=value …`).

use crate::fleet::{Fleet, FleetSpec, SimHost};
use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Scenario time per real second in the morning and evening ramps (15 min in 30 s).
pub(crate) const CLOCK_FACTOR: u32 = 30;
/// Heartbeat interval of the simulated agents, real seconds (not compressed: the collector's
/// liveness rules run on its own clock).
const HB_EVERY: Duration = Duration::from_secs(crate::fleet::INTERVAL_SECS as u64);
/// Backlog messages each connection publishes per loop turn.
const BACKLOG_BURST: u64 = 512;
/// Lunch: workstations go off over one ramp from 13:00 and come back over one ramp from
/// 14:00, four ramps later (at the default 30 s ramp and clock factor 30).
const LUNCH_RAMPS: u32 = 4;

pub(crate) struct DayArgs {
    pub host: String,
    pub port: u16,
    pub api: String,
    /// A viewer token; none when the collector's API is public to read.
    pub token: Option<String>,
    pub hosts: usize,
    pub mo_count: usize,
    pub connections: usize,
    pub ramp_secs: u64,
    pub backlog: u64,
    pub replay_mo: usize,
    pub collector_pid: Option<u32>,
    pub timeout_secs: u64,
    pub run_id: u64,
    /// Share of the workstations switched off over the lunch hour, percent.
    pub lunch_off_pct: u32,
    /// Kill one server's agent at noon (the day's one implied incident).
    pub noon_kill: bool,
    /// Backlog messages per second over all replaying hosts; 0: as fast as the broker takes.
    pub replay_rate: u64,
    /// Backlog on the replay topics (`…/hb-replay`, agents since the replay topics); false:
    /// on the live topics, as older agents send it.
    pub replay_topics: bool,
}

/// Phase switches shared by the connections.
#[derive(Default)]
struct Plan {
    replay: AtomicBool,
    /// Milliseconds after the start at which the evening began (0: not yet).
    evening_ms: AtomicU64,
    /// Milliseconds after the start at which lunch began (0: not yet).
    lunch_ms: AtomicU64,
    /// The victim's agent is killed: it publishes nothing more.
    noon_kill: AtomicBool,
    stop: AtomicBool,
    backlog_sent: AtomicU64,
    live_sent: AtomicU64,
    acked: AtomicU64,
    published: AtomicU64,
}

/// One simulated host's schedule.
struct Sched {
    h: SimHost,
    /// Offset of its switch-on (and of its shutdown in the evening) within the ramp.
    at: Duration,
    born: bool,
    /// Its boot, set at the switch-on (a replaying host booted before its backlog began).
    boot_ms: i64,
    off: bool,
    next_hb: Instant,
    /// Backlog sequence numbers still to replay: `next..=last`.
    backlog: Option<(u64, u64)>,
    /// A workstation switched off over lunch, and where it is in that.
    lunch: Lunch,
    /// The server whose agent is killed at noon.
    victim: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lunch {
    /// Stays on over lunch.
    Stays,
    /// Will be switched off at lunch.
    Due,
    /// Switched off, to be switched on again after lunch.
    Off,
    /// Back on after lunch.
    Back,
}

pub(crate) async fn run(a: DayArgs) -> anyhow::Result<()> {
    let spec = FleetSpec {
        hosts: a.hosts.max(1),
        mo_count: a.mo_count.max(1),
        run_id: a.run_id,
    };
    let fleet = Fleet::new(&spec);
    let n = fleet.hosts.len();
    let ramp = Duration::from_secs(a.ramp_secs.max(1));
    let replay_mo = crate::fleet::mo_id(a.replay_mo % spec.mo_count);
    let mut scheds: Vec<Sched> = Vec::with_capacity(n);
    let mut replay_hosts = HashMap::new();
    let now = Instant::now();
    for (i, mut h) in fleet.hosts.into_iter().enumerate() {
        let backlog = (h.mo == replay_mo && a.backlog > 0).then(|| {
            let first = h.reserve(a.backlog);
            (first, first + a.backlog - 1)
        });
        if let Some((_, last)) = backlog {
            replay_hosts.insert(h.host.clone(), last);
        }
        scheds.push(Sched {
            at: ramp.mul_f64(i as f64 / n as f64),
            born: false,
            boot_ms: 0,
            off: false,
            next_hb: now,
            backlog,
            lunch: Lunch::Stays,
            victim: false,
            h,
        });
    }
    let workstations = scheds.iter().filter(|s| s.h.is_workstation()).count();
    // Every k-th workstation goes off over lunch (spread over the МО and the ramp).
    let mut lunch_n = 0usize;
    if a.lunch_off_pct > 0 {
        let mut acc = 0u32;
        for s in scheds.iter_mut().filter(|s| s.h.is_workstation()) {
            acc += a.lunch_off_pct;
            if acc >= 100 {
                acc -= 100;
                s.lunch = Lunch::Due;
                lunch_n += 1;
            }
        }
    }
    // The noon victim: the first server outside the replaying МО.
    let victim = if a.noon_kill {
        scheds
            .iter_mut()
            .find(|s| !s.h.is_workstation() && s.h.mo != replay_mo)
            .map(|s| {
                s.victim = true;
                (s.h.mo.clone(), s.h.host.clone())
            })
    } else {
        None
    };
    eprintln!(
        "dozor-loadgen day: {n} hosts ({workstations} workstations) in {} МО, ramps of {} s (×{CLOCK_FACTOR}: {} min of the day), МО {replay_mo} replays {} heartbeats per host ({} hosts, {} messages)",
        spec.mo_count,
        ramp.as_secs(),
        ramp.as_secs() * u64::from(CLOCK_FACTOR) / 60,
        a.backlog,
        replay_hosts.len(),
        a.backlog * replay_hosts.len() as u64,
    );

    let http = match &a.token {
        Some(t) => dozor_tests::client_with_token(t),
        None => reqwest::Client::new(),
    };
    let api = Api {
        http,
        base: a.api.trim_end_matches('/').to_string(),
    };
    let incidents_before = api.incident_ids().await?;

    let plan = Arc::new(Plan::default());
    let conns = a.connections.clamp(1, n);
    let mut groups: Vec<Vec<Sched>> = (0..conns).map(|_| Vec::new()).collect();
    for (i, s) in scheds.into_iter().enumerate() {
        groups[i % conns].push(s);
    }
    let mut ready = Vec::new();
    let mut tasks = Vec::new();
    let start = Instant::now();
    for (c, group) in groups.into_iter().enumerate() {
        let mut opts = MqttOptions::new(format!("dozor-day-{:x}-{c}", a.run_id), &a.host, a.port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_inflight(1_000)
            .set_max_packet_size(64 * 1024, 64 * 1024)
            .set_request_channel_capacity(4_096);
        let (client, mut eventloop) = AsyncClient::new(opts, 4_096);
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        let p = plan.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while !p.stop.load(Relaxed) {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(t) = tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        p.acked.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("dozor-loadgen day: connection {c}: {e}; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        tasks.push(tokio::spawn(drive(
            client,
            group,
            plan.clone(),
            start,
            ramp,
            a.replay_rate as f64 / conns as f64,
            a.replay_topics,
        )));
    }
    for r in ready {
        tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .context("connecting to the broker timed out")?
            .context("connection task ended")?;
    }
    let deadline = Duration::from_secs(a.timeout_secs);
    let mut sampler = Sampler::new(a.collector_pid);
    let mut out: Vec<String> = Vec::new();

    // 1. Morning.
    let t = Instant::now();
    sampler.phase();
    let mut all_on = None;
    while t.elapsed() < deadline {
        sampler.tick().await;
        if api.count("/api/v1/hosts?state=online").await? >= n {
            all_on = Some(t.elapsed());
            break;
        }
    }
    let Some(all_on) = all_on else {
        bail!("morning: not every host online within {deadline:?}")
    };
    let (cpu_peak, cpu_avg, rss_peak) = sampler.phase();
    eprintln!(
        "dozor-loadgen day: morning: {n} hosts switched on over {:.0} s; all online after {:.1} s (storm drained {:.1} s after the last switch-on); collector CPU peak {cpu_peak:.0} %, avg {cpu_avg:.0} %, RSS peak {rss_peak} MiB",
        ramp.as_secs_f64(),
        all_on.as_secs_f64(),
        (all_on.as_secs_f64() - ramp.as_secs_f64()).max(0.0),
    );
    out.push(format!(
        "morning_all_online_s={:.1} morning_cpu_peak_pct={cpu_peak:.0} morning_cpu_avg_pct={cpu_avg:.0} morning_rss_peak_mib={rss_peak}",
        all_on.as_secs_f64()
    ));

    // 2. Replay storm of one МО.
    let t = Instant::now();
    let replay_msgs = a.backlog * replay_hosts.len() as u64;
    plan.replay.store(true, Relaxed);
    let mut worst_not_online = 0usize;
    let mut fewest_online = n;
    let mut not_online_seen: HashSet<String> = HashSet::new();
    let mut drained = None;
    let mut refused = 0u64;
    while t.elapsed() < deadline && !replay_hosts.is_empty() {
        sampler.tick().await;
        let hosts = api.get(&format!("/api/v1/hosts?mo={replay_mo}")).await?;
        let bad: Vec<String> = hosts
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["state"] != "online")
            .map(|h| format!("{}={}", h["host_id"], h["state"]))
            .collect();
        worst_not_online = worst_not_online.max(bad.len());
        not_online_seen.extend(bad);
        // The rest of the fleet must stay fresh too: its live heartbeats share the broker's
        // queue to the collector with the backlog.
        fewest_online = fewest_online.min(api.online().await?);
        let delivery = api.get("/api/v1/delivery").await?;
        let done = delivery
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["mo"] == replay_mo.as_str())
            .filter(|d| {
                let host = d["host"].as_str().unwrap_or("");
                replay_hosts
                    .get(host)
                    .is_some_and(|last| d["committed"].as_u64().unwrap_or(0) >= *last)
            })
            .count();
        if done == replay_hosts.len() {
            drained = Some(t.elapsed());
            refused = delivery
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["mo"] == replay_mo.as_str())
                .map(|d| d["refused"].as_u64().unwrap_or(0))
                .sum();
            break;
        }
    }
    let fresh_ok = not_online_seen.is_empty() && fewest_online >= n;
    eprintln!(
        "dozor-loadgen day: replay: the fewest hosts of the fleet online at any second: {fewest_online} of {n} (expected all)"
    );
    out.push(format!("replay_fewest_online={fewest_online}"));
    let (cpu_peak, cpu_avg, rss_peak) = sampler.phase();
    if let Some(d) = drained {
        eprintln!(
            "dozor-loadgen day: replay: {replay_msgs} backlog messages of {} hosts settled in {:.1} s ({:.0} msgs/s; {refused} of the МО's messages refused) beside the live fleet; replaying hosts not online: at most {worst_not_online} at a time ({:?}); collector CPU peak {cpu_peak:.0} %, avg {cpu_avg:.0} %, RSS peak {rss_peak} MiB",
            replay_hosts.len(),
            d.as_secs_f64(),
            replay_msgs as f64 / d.as_secs_f64().max(1e-9),
            not_online_seen,
        );
        out.push(format!(
            "replay_msgs={replay_msgs} replay_refused={refused} replay_drain_s={:.1} replay_not_online_max={worst_not_online} replay_cpu_peak_pct={cpu_peak:.0} replay_cpu_avg_pct={cpu_avg:.0} replay_rss_peak_mib={rss_peak}",
            d.as_secs_f64()
        ));
    } else if !replay_hosts.is_empty() {
        bail!("replay: the backlog was not stored within {deadline:?}");
    }

    // 3. The report over the replayed week: no down time for the replayed hosts.
    if !replay_hosts.is_empty() {
        let days = (a.backlog * 30).div_ceil(86_400) + 1;
        let today = chrono_date(crate::now_ms());
        let from = chrono_date(crate::now_ms() - days as i64 * 86_400_000);
        let v = api
            .get(&format!(
                "/api/v1/availability?by=host&from={from}&to={today}"
            ))
            .await?;
        let rows: Vec<&Value> = v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["host"]
                    .as_str()
                    .or(r["host_id"].as_str())
                    .is_some_and(|h| replay_hosts.contains_key(h))
            })
            .collect();
        let sum = |k: &str, server: bool| {
            rows.iter()
                .filter(|r| (r["role"] == "server") == server)
                .map(|r| r[k].as_i64().unwrap_or(0))
                .sum::<i64>()
        };
        let servers = rows.iter().filter(|r| r["role"] == "server").count();
        let h = |ms: i64| ms as f64 / 3.6e6;
        let (up, down, unknown) = (
            sum("up_ms", true),
            sum("down_ms", true),
            sum("unknown_ms", true),
        );
        let down_w = sum("down_ms", false);
        // Each replaying server reported for the whole backlog (and since its switch-on).
        let expected_up = servers as f64 * (a.backlog * 30) as f64 / 3600.0;
        eprintln!(
            "dozor-loadgen day: report {from}..{today} for the {} replayed hosts ({} rows): {servers} servers up {:.1} h (expected ≥ {expected_up:.1} h), down {:.3} h, unknown {:.1} h; workstations down {:.3} h in working hours (expected: no down at all){}",
            replay_hosts.len(),
            rows.len(),
            h(up),
            h(down),
            h(unknown),
            h(down_w),
            rows.iter()
                .find(|r| r["role"] == "server")
                .map(|r| format!("; a server's row: {r}"))
                .unwrap_or_default(),
        );
        // Where the time of one replayed server went, from its timeline.
        if let Some(host) = rows
            .iter()
            .find(|r| r["role"] == "server")
            .and_then(|r| r["host"].as_str())
        {
            let now = crate::now_ms();
            let span = (a.backlog as i64 + 10) * i64::from(crate::fleet::INTERVAL_SECS) * 1000;
            let v = api
                .get(&format!(
                    "/api/v1/hosts/{replay_mo}/{host}/history?from={}&to={now}",
                    now - span
                ))
                .await?;
            let pieces: Vec<String> = v["availability"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{} {:.2} h from -{:.2} h",
                        p["state"].as_str().unwrap_or("?"),
                        (p["to_ms"].as_i64().unwrap_or(0) - p["from_ms"].as_i64().unwrap_or(0))
                            as f64
                            / 3.6e6,
                        (now - p["from_ms"].as_i64().unwrap_or(0)) as f64 / 3.6e6
                    )
                })
                .collect();
            eprintln!(
                "dozor-loadgen day: timeline of {host} over its backlog: {}",
                pieces.join(", ")
            );
        }
        out.push(format!(
            "report_rows={} report_servers_up_h={:.1} report_servers_expected_up_h={expected_up:.1} report_servers_down_h={:.3} report_servers_unknown_h={:.1} report_workstations_down_h={:.3}",
            rows.len(),
            h(up),
            h(down),
            h(unknown),
            h(down_w)
        ));
    }

    // 4. Noon: one server's agent is killed (never back); then lunch.
    let killed_at = Instant::now();
    if victim.is_some() {
        plan.noon_kill.store(true, Relaxed);
    }
    let alive = n - usize::from(victim.is_some());
    let t = Instant::now();
    sampler.phase();
    plan.lunch_ms
        .store(start.elapsed().as_millis().max(1) as u64, Relaxed);
    let offline_before = api.count("/api/v1/hosts?state=offline").await?;
    let mut lunch_off = None;
    let mut lunch_back = None;
    while t.elapsed() < deadline + LUNCH_RAMPS * ramp {
        sampler.tick().await;
        if lunch_off.is_none() {
            if api.count("/api/v1/hosts?state=offline").await? >= offline_before + lunch_n {
                lunch_off = Some(t.elapsed());
            }
        } else if api.count("/api/v1/hosts?state=offline").await? <= offline_before
            && api.count("/api/v1/hosts?state=online").await? >= alive
        {
            lunch_back = Some(t.elapsed());
            break;
        }
    }
    let (cpu_peak, cpu_avg, rss_peak) = sampler.phase();
    let (Some(lunch_off), Some(lunch_back)) = (lunch_off, lunch_back) else {
        bail!("lunch: {lunch_n} workstations not off and back within {deadline:?}")
    };
    eprintln!(
        "dozor-loadgen day: lunch: {lunch_n} workstations ({} %) switched off over {:.0} s from 13:00: all offline after {:.1} s; switched on again over {:.0} s from 14:00 ({:.0} s after lunch began): all {alive} hosts online again {:.1} s after lunch began ({:.1} s after the last switch-on); collector CPU peak {cpu_peak:.0} %, avg {cpu_avg:.0} %, RSS peak {rss_peak} MiB",
        a.lunch_off_pct,
        ramp.as_secs_f64(),
        lunch_off.as_secs_f64(),
        ramp.as_secs_f64(),
        (LUNCH_RAMPS * ramp).as_secs_f64(),
        lunch_back.as_secs_f64(),
        (lunch_back.as_secs_f64() - ((LUNCH_RAMPS + 1) * ramp).as_secs_f64()).max(0.0),
    );
    out.push(format!(
        "lunch_hosts={lunch_n} lunch_all_offline_s={:.1} lunch_all_back_s={:.1} lunch_cpu_peak_pct={cpu_peak:.0} lunch_rss_peak_mib={rss_peak}",
        lunch_off.as_secs_f64(),
        lunch_back.as_secs_f64()
    ));
    // The implied incident: the victim's.
    let mut alert_after = None;
    if let Some((_, vhost)) = &victim {
        while killed_at.elapsed() < deadline {
            let open = api.incidents_since(&incidents_before).await?;
            if open.iter().any(|i| names(i, vhost)) {
                alert_after = Some(killed_at.elapsed());
                break;
            }
            sampler.tick().await;
        }
        eprintln!(
            "dozor-loadgen day: noon: the agent of server {vhost} killed; its incident opened {} after",
            alert_after.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
        out.push(format!(
            "noon_alert_s={:.1}",
            alert_after.map_or(-1.0, |d| d.as_secs_f64())
        ));
    }

    // 5. Evening: workstations shut down.
    let t = Instant::now();
    plan.evening_ms
        .store(start.elapsed().as_millis().max(1) as u64, Relaxed);
    let mut all_off = None;
    while t.elapsed() < deadline {
        sampler.tick().await;
        if api.count("/api/v1/hosts?state=offline").await? >= workstations {
            all_off = Some(t.elapsed());
            break;
        }
    }
    let (cpu_peak, cpu_avg, rss_peak) = sampler.phase();
    let Some(all_off) = all_off else {
        bail!("evening: not every workstation offline within {deadline:?}")
    };
    let servers_online = api.count("/api/v1/hosts?state=online").await?;
    eprintln!(
        "dozor-loadgen day: evening: {workstations} workstations offline after {:.1} s, {servers_online} servers online (expected {}); collector CPU peak {cpu_peak:.0} %, avg {cpu_avg:.0} %, RSS peak {rss_peak} MiB",
        all_off.as_secs_f64(),
        alive - workstations,
    );
    out.push(format!(
        "evening_all_offline_s={:.1} evening_servers_online={servers_online} evening_cpu_peak_pct={cpu_peak:.0}",
        all_off.as_secs_f64()
    ));

    // Alert noise: exactly the incidents the day implies — one, for the killed server.
    let new = api.incidents_since(&incidents_before).await?;
    let implied = usize::from(victim.is_some());
    let victims_own = victim.as_ref().is_some_and(|(_, vhost)| {
        new.iter()
            .any(|i| i.starts_with("\"server_lost\"") && names(i, vhost))
    });
    let noise_ok = new.len() == implied && (victim.is_none() || victims_own);
    eprintln!(
        "dozor-loadgen day: incidents opened during the run: {} (implied {implied}{}){}",
        new.len(),
        victim
            .as_ref()
            .map(|(_, h)| format!(": «сервер не на связи» for {h}"))
            .unwrap_or_default(),
        new.iter()
            .take(10)
            .map(|s| format!("\n  {s}"))
            .collect::<String>()
    );
    // Today's report: down time for the killed server only.
    let today = chrono_date(crate::now_ms());
    let v = api
        .get(&format!(
            "/api/v1/availability?by=host&from={today}&to={today}"
        ))
        .await?;
    let mut down_hosts: Vec<String> = Vec::new();
    let mut victim_down_s = 0.0;
    for r in v["rows"].as_array().into_iter().flatten() {
        let host = r["host"].as_str().or(r["host_id"].as_str()).unwrap_or("?");
        let down = r["down_ms"].as_i64().unwrap_or(0);
        if victim.as_ref().is_some_and(|(_, vh)| vh == host) {
            victim_down_s = down as f64 / 1000.0;
        } else if down > 0 {
            down_hosts.push(format!("{host}={down}ms"));
        }
    }
    let report_ok = down_hosts.is_empty() && (victim.is_none() || victim_down_s > 0.0);
    eprintln!(
        "dozor-loadgen day: report for {today}: the killed server down {victim_down_s:.1} s (since it read lost); other hosts with down time: {} {}",
        down_hosts.len(),
        down_hosts
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push(format!(
        "incidents={} implied={implied} noise_ok={noise_ok} today_victim_down_s={victim_down_s:.1} today_other_down_hosts={} published={} acked={} backlog_sent={} live_sent={} collector_hwm_mib={}",
        new.len(),
        down_hosts.len(),
        plan.published.load(Relaxed),
        plan.acked.load(Relaxed),
        plan.backlog_sent.load(Relaxed),
        plan.live_sent.load(Relaxed),
        sampler.hwm_mib(),
    ));
    plan.stop.store(true, Relaxed);
    for t in tasks {
        t.abort();
    }
    println!("dozor-loadgen-day {}", out.join(" "));
    if !noise_ok || !report_ok || !fresh_ok {
        bail!(
            "the incidents, the day's report or the replaying hosts' state differ from what the scenario implies"
        );
    }
    Ok(())
}

/// Whether an incident's line names the host (its title carries the host name, upper case).
fn names(incident: &str, host: &str) -> bool {
    incident.to_lowercase().contains(&host.to_lowercase())
}

/// Publishes what the schedule says is due, every 50 ms, until told to stop.
/// Publishes a retained message (birth, `offline`) and counts it; false when the client is gone.
async fn retained(client: &AsyncClient, plan: &Plan, topic: String, json: Vec<u8>) -> bool {
    if client
        .publish(topic, QoS::AtLeastOnce, true, json)
        .await
        .is_err()
    {
        return false;
    }
    plan.published.fetch_add(1, Relaxed);
    true
}

async fn drive(
    client: AsyncClient,
    mut hosts: Vec<Sched>,
    plan: Arc<Plan>,
    start: Instant,
    ramp: Duration,
    replay_rate: f64,
    replay_topics: bool,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut cursor = 0usize;
    // Paced replay: this connection's share of `--replay-rate` since the replay began.
    let mut replay_began: Option<Instant> = None;
    let mut replayed = 0u64;
    while !plan.stop.load(Relaxed) {
        let now = Instant::now();
        let elapsed = now - start;
        let evening = plan.evening_ms.load(Relaxed);
        let lunch = plan.lunch_ms.load(Relaxed);
        let killed = plan.noon_kill.load(Relaxed);
        for s in hosts.iter_mut() {
            if s.off {
                continue;
            }
            if s.victim && killed {
                // kill -9 of the agent: no `offline`, nothing more, ever.
                s.off = true;
                continue;
            }
            if lunch > 0 && s.born {
                let l = Duration::from_millis(lunch);
                match s.lunch {
                    Lunch::Due if elapsed >= l + s.at => {
                        let (topic, json) = s.h.offline_json(crate::now_ms());
                        if !retained(&client, &plan, topic, json).await {
                            return;
                        }
                        s.lunch = Lunch::Off;
                        continue;
                    }
                    Lunch::Off if elapsed >= l + LUNCH_RAMPS * ramp + s.at => {
                        // Switched on again: a new boot.
                        let ts = crate::now_ms();
                        s.boot_ms = ts - 60_000;
                        let (topic, json) = s.h.birth_json(ts, s.boot_ms);
                        if !retained(&client, &plan, topic, json).await {
                            return;
                        }
                        s.lunch = Lunch::Back;
                        s.next_hb = now;
                    }
                    Lunch::Off => continue,
                    _ => {}
                }
            }
            if !s.born {
                if elapsed < s.at {
                    continue;
                }
                let ts = crate::now_ms();
                let span = s.backlog.map_or(0, |(first, last)| {
                    (last - first + 1) as i64 * i64::from(crate::fleet::INTERVAL_SECS) * 1000
                });
                s.boot_ms = ts - 60_000 - span;
                let (topic, json) = s.h.birth_json(ts, s.boot_ms);
                if !retained(&client, &plan, topic, json).await {
                    return;
                }
                s.born = true;
                s.next_hb = now;
            }
            if evening > 0
                && s.h.is_workstation()
                && elapsed >= Duration::from_millis(evening) + s.at
            {
                let (topic, json) = s.h.offline_json(crate::now_ms());
                if !retained(&client, &plan, topic, json).await {
                    return;
                }
                s.off = true;
                continue;
            }
            if now >= s.next_hb {
                let seq = s.h.reserve(1);
                s.h.heartbeat_json_as(seq, crate::now_ms(), false, s.boot_ms, &mut buf);
                if client
                    .publish(
                        s.h.hb_topic.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        buf.as_slice(),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
                plan.published.fetch_add(1, Relaxed);
                plan.live_sent.fetch_add(1, Relaxed);
                s.next_hb += HB_EVERY;
            }
        }
        // The backlog, oldest first per host, hosts in turn: as fast as the broker takes it.
        if plan.replay.load(Relaxed) {
            let began = *replay_began.get_or_insert(now);
            let mut budget = if replay_rate > 0.0 {
                let due = (replay_rate * (now - began).as_secs_f64()) as u64;
                due.saturating_sub(replayed).min(BACKLOG_BURST)
            } else {
                BACKLOG_BURST
            };
            let full = budget;
            let n = hosts.len();
            let mut idle = 0;
            while budget > 0 && idle < n {
                cursor = (cursor + 1) % n;
                let s = &mut hosts[cursor];
                let Some((next, last)) = s.backlog.filter(|_| s.born) else {
                    idle += 1;
                    continue;
                };
                idle = 0;
                // Made 30 s apart, the newest 30 s before the host switched on today.
                let age = (last - next + 1) as i64 * i64::from(crate::fleet::INTERVAL_SECS) * 1000;
                let ts =
                    crate::now_ms() - elapsed.as_millis() as i64 + s.at.as_millis() as i64 - age;
                s.h.heartbeat_json_as(next, ts, true, s.boot_ms, &mut buf);
                let topic = if replay_topics {
                    s.h.hb_replay_topic.as_str()
                } else {
                    s.h.hb_topic.as_str()
                };
                if client
                    .publish(topic, QoS::AtLeastOnce, false, buf.as_slice())
                    .await
                    .is_err()
                {
                    return;
                }
                plan.published.fetch_add(1, Relaxed);
                plan.backlog_sent.fetch_add(1, Relaxed);
                s.backlog = (next < last).then_some((next + 1, last));
                budget -= 1;
                replayed += 1;
            }
            if replay_rate == 0.0 && budget < full {
                tokio::task::yield_now().await;
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = r.status();
        let v: Value = r
            .json()
            .await
            .with_context(|| format!("GET {path}: JSON"))?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {v}");
        }
        Ok(v)
    }

    async fn count(&self, path: &str) -> anyhow::Result<usize> {
        Ok(self.get(path).await?.as_array().map_or(0, Vec::len))
    }

    pub(crate) async fn incident_ids(&self) -> anyhow::Result<HashSet<i64>> {
        Ok(self
            .get("/api/v1/incidents?limit=10000")
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["id"].as_i64())
            .collect())
    }

    /// Incidents not in `before`, as `rule [state] title`.
    pub(crate) async fn incidents_since(
        &self,
        before: &HashSet<i64>,
    ) -> anyhow::Result<Vec<String>> {
        Ok(self
            .get("/api/v1/incidents?limit=10000")
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| !before.contains(&i["id"].as_i64().unwrap_or(-1)))
            .map(|i| format!("{} [{}] {}", i["rule"], i["state"], i["title"]))
            .collect())
    }

    /// `/metrics` as text.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .context("GET /metrics")?;
        if !r.status().is_success() {
            bail!("GET /metrics: {}", r.status());
        }
        Ok(r.text().await?)
    }

    /// Hosts the collector knows, by live state (`online`, `offline`, `lost`), from its
    /// `dozor_hosts` gauges: a host not heard since the collector started is in none.
    pub(crate) async fn by_state(&self) -> anyhow::Result<[usize; 3]> {
        let text = self.metrics().await?;
        let mut out = [0; 3];
        for (i, st) in ["online", "offline", "lost"].iter().enumerate() {
            let label = format!("state=\"{st}\"");
            out[i] = text
                .lines()
                .filter(|l| l.starts_with("dozor_hosts{") && l.contains(&label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as usize;
        }
        Ok(out)
    }

    /// Hosts online by the collector's `dozor_hosts{state="online"}` gauges (cheaper than
    /// listing them).
    pub(crate) async fn online(&self) -> anyhow::Result<usize> {
        Ok(self
            .metrics()
            .await?
            .lines()
            .filter(|l| l.starts_with("dozor_hosts{") && l.contains("state=\"online\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize)
    }

    /// The gate's non-zero `dozor_mqtt_gate_closed_total` counters, `reason=N,…`.
    pub(crate) async fn gate_refusals(&self) -> anyhow::Result<String> {
        let m = self.metrics().await?;
        let v: Vec<String> = m
            .lines()
            .filter(|l| l.starts_with("dozor_mqtt_gate_closed_total{"))
            .filter_map(|l| {
                let reason = l.split('"').nth(1)?;
                let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
                (n > 0.0).then(|| format!("{reason}={n}"))
            })
            .collect();
        Ok(if v.is_empty() {
            "nothing".into()
        } else {
            v.join(",")
        })
    }
}

/// `YYYY-MM-DD` of a Unix ms instant (UTC; the collector's region time zone may differ by a
/// day at the edges, which the one-day margin of the report covers).
fn chrono_date(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{m:02}-{d:02}", if m <= 2 { y + 1 } else { y })
}

/// Samples a process's CPU and RSS from `/proc` once a second, per phase.
pub(crate) struct Sampler {
    pid: Option<u32>,
    hz: f64,
    last: Option<(Instant, f64)>,
    phase_start: Option<(Instant, f64)>,
    cpu_peak: f64,
    rss_peak: u64,
}

impl Sampler {
    pub(crate) fn new(pid: Option<u32>) -> Sampler {
        Sampler {
            pid,
            hz: 100.0,
            last: None,
            phase_start: None,
            cpu_peak: 0.0,
            rss_peak: 0,
        }
    }

    fn ticks(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid?)).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
    }

    fn status_kib(&self, key: &str) -> u64 {
        let Some(pid) = self.pid else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    pub(crate) fn hwm_mib(&self) -> u64 {
        self.status_kib("VmHWM:") / 1024
    }

    /// Waits a second and samples.
    pub(crate) async fn tick(&mut self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.sample();
    }

    /// Samples now (one of several processes sampled together after one sleep).
    pub(crate) fn sample(&mut self) {
        let (Some(t), now) = (self.ticks(), Instant::now()) else {
            return;
        };
        if let Some((at, prev)) = self.last {
            let secs = (now - at).as_secs_f64().max(1e-3);
            self.cpu_peak = self.cpu_peak.max((t - prev) / self.hz / secs * 100.0);
        }
        self.last = Some((now, t));
        self.rss_peak = self.rss_peak.max(self.status_kib("VmRSS:") / 1024);
    }

    /// Ends the current phase: (CPU peak %, CPU average %, RSS peak MiB); starts the next.
    pub(crate) fn phase(&mut self) -> (f64, f64, u64) {
        let now = Instant::now();
        let t = self.ticks().unwrap_or(0.0);
        let avg = self.phase_start.map_or(0.0, |(at, t0)| {
            (t - t0) / self.hz / (now - at).as_secs_f64().max(1e-3) * 100.0
        });
        let r = (self.cpu_peak, avg, self.rss_peak);
        self.phase_start = Some((now, t));
        self.last = Some((now, t));
        self.cpu_peak = 0.0;
        self.rss_peak = self.status_kib("VmRSS:") / 1024;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(chrono_date(0), "1970-01-01");
        assert_eq!(chrono_date(951_782_400_000), "2000-02-29");
        assert_eq!(chrono_date(1_796_083_200_000), "2026-12-01");
    }
}
