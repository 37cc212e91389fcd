//! `dozor-loadgen`: a simulated fleet publishing heartbeats of many hosts to an MQTT broker, to
//! measure the collector's ingest (see `bench/ingest.sh` and `docs/benchmarks.md`).
//!
//! The hosts of a [`Fleet`] are dealt over a few MQTT connections, like a region behind few
//! links; each connection publishes for its hosts round-robin, at an optional total rate. The
//! run ends when every message is acknowledged by the broker (QoS 1) or written (QoS 0); the
//! last line of stdout is machine-readable:
//! `dozor-loadgen published=N acked=N secs=S rate=R cpu_secs=C reconnects=K`.
//! With `--bench-decode` it does not connect and times `dozor_proto::decode` on the same
//! heartbeats instead.

#[path = "loadgen/bridge.rs"]
mod bridge;
#[path = "loadgen/fleet.rs"]
mod fleet;
#[path = "loadgen/region.rs"]
mod region;
#[path = "loadgen/restart.rs"]
mod restart;

use anyhow::{Context, bail};
use clap::Parser;
use dozor_tests::{self_cpu_secs, unix_ms as now_ms};
use fleet::{Fleet, FleetSpec, SimHost};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

#[derive(Parser, Debug)]
#[command(
    name = "dozor-loadgen",
    about = "Publishes heartbeats of a simulated fleet to an MQTT broker (ingest benchmark)"
)]
struct Args {
    /// Broker, `mqtt://host:port`.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,
    /// Simulated hosts.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// МО the hosts are spread over.
    #[arg(long, default_value_t = 100)]
    mo_count: usize,
    /// Heartbeats to publish in total.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// MQTT connections the hosts are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// QoS of the publishes: 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Total messages per second; 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Unacknowledged QoS 1 publishes per connection.
    #[arg(long, default_value_t = 1_000)]
    inflight: u16,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Do not connect: time `dozor_proto::decode` on `--messages` generated heartbeats (the
    /// collector's parse and validation cost per message, without I/O) and exit.
    #[arg(long)]
    bench_decode: bool,
    /// Run id in the instance ids (default: the current time), so that repeated runs against
    /// one collector are new data, not duplicates.
    #[arg(long)]
    run_id: Option<u64>,
    /// Instead of a fixed number of heartbeats, run a scenario of a region's day: `day`
    /// (morning switch-on, one МО's week-long backlog replayed, the report, evening shutdown;
    /// see `loadgen/region.rs` and `bench/region.sh`), or `restart` (one MQTT connection per
    /// agent, then a collector restart with every agent reconnecting; `loadgen/restart.rs`,
    /// `bench/region.sh`); or a Mosquitto bridge tree (`bench/bridge.sh`,
    /// `loadgen/bridge.rs`): `provision` (enroll the fleet, provision the edges' dynamic
    /// security), `agents` (one edge's enrolled agents), `bridge` (the measuring side). Needs
    /// `--api-url` (and `--api-token` unless the API is public to read) except `provision`
    /// and `agents`.
    #[arg(long, value_parser = ["day", "restart", "provision", "agents", "bridge"])]
    scenario: Option<String>,
    /// The collector's HTTP API (for `--scenario`), e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    api_url: Option<String>,
    /// A viewer API token for `--api-url` (none: `http.public_read`).
    #[arg(long, env = "DOZOR_API_TOKEN")]
    api_token: Option<String>,
    /// `--scenario day`: seconds over which the fleet switches on (and workstations off); 30 s
    /// is the 15 minutes of 08:00–08:15 at the scenario clock factor 30.
    #[arg(long, default_value_t = 30)]
    ramp_secs: u64,
    /// `--scenario day`: heartbeats in each replaying host's spool (30 s apart; 20,160 = 7 days).
    #[arg(long, default_value_t = 20_160)]
    backlog: u64,
    /// `--scenario day`: index of the МО whose channel was down (its hosts replay).
    #[arg(long, default_value_t = 0)]
    replay_mo: usize,
    /// `--scenario day`/`restart`: the collector's PID, to sample its CPU and RSS from /proc.
    #[arg(long)]
    collector_pid: Option<u32>,
    /// `--scenario day`: share of the workstations switched off over the lunch hour, percent.
    #[arg(long, default_value_t = 25)]
    lunch_off_pct: u32,
    /// `--scenario day`: kill one server's agent at noon (no `offline`, never back): the one
    /// incident the day then implies.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    noon_kill: bool,
    /// `--scenario day`: backlog messages per second over all replaying hosts (a real agent
    /// replays 5 msg/s); 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    replay_rate: u64,
    /// `--scenario day`: publish the backlog on the replay topics (`…/hb-replay`), as agents
    /// since the replay topics do; `false`: on the live topics, as older agents do (and as a
    /// collector before the replay topics needs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    replay_topics: bool,
    /// `--scenario restart`: the broker addresses the agents' connections are dealt over,
    /// comma-separated (default: the host of `--mqtt-url`).
    #[arg(long)]
    mqtt_hosts: Option<String>,
    /// `--scenario restart`: shell command that restarts the collector (same data directory
    /// and addresses) and prints the new collector's PID as its last stdout line.
    #[arg(long)]
    restart_cmd: Option<String>,
    /// `--scenario restart`: seconds of quiet running after every host is back, before the
    /// incidents are counted.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// `--scenario provision`: the collector's data directory (its `identity.db`).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// `--scenario provision`: the edge brokers, comma-separated `mqtt://host:port`.
    #[arg(long)]
    edges: Option<String>,
    /// `--scenario provision`: instead of `--edges`, the dynamic-security files of the edges
    /// (not running), comma-separated, written directly.
    #[arg(long)]
    edge_files: Option<String>,
    /// `--scenario provision`: the edges' dynamic-security admin, `user:password`.
    #[arg(long, env = "DOZOR_BENCH_EDGE_ADMIN")]
    edge_admin: Option<String>,
    /// `--scenario agents`: which edge's agents this process runs (0-based) …
    #[arg(long, default_value_t = 0)]
    slice: usize,
    /// … of how many edges (`--scenario agents` and `bridge`).
    #[arg(long, default_value_t = 1)]
    slices: usize,
    /// `--scenario agents`/`bridge`: directory of the agents' status files.
    #[arg(long)]
    status_dir: Option<std::path::PathBuf>,
    /// `--scenario bridge`: processes to sample, `name:pid,…`, the collector named `collector`
    /// and the first edge `edge1`.
    #[arg(long)]
    pids: Option<String>,
    /// `--scenario bridge`: shell command that restarts edge broker 1 and prints its new PID.
    #[arg(long)]
    edge_restart_cmd: Option<String>,
    /// `--scenario bridge`: seconds of steady running measured after every agent is online.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
}

/// Progress of one connection, shared between its publisher and its event loop.
#[derive(Debug, Default)]
struct Progress {
    /// Publishes written to the socket.
    written: AtomicU64,
    /// PubAcks received.
    acked: AtomicU64,
    reconnects: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dozor_tests::block_on_threads(args.threads, run(args)).context("starting the runtime")?
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (host, port) = parse_mqtt_url(&args.mqtt_url)?;
    let run_id = args.run_id.unwrap_or_else(|| now_ms() as u64 / 1000);
    let spec = FleetSpec {
        hosts: args.hosts.max(1),
        mo_count: args.mo_count.max(1),
        run_id,
    };
    match args.scenario.as_deref() {
        Some("provision") => {
            let (user, pass) = args
                .edge_admin
                .as_deref()
                .and_then(|a| a.split_once(':'))
                .unwrap_or_default();
            return bridge::provision(bridge::ProvisionArgs {
                data_dir: args
                    .data_dir
                    .context("--scenario provision needs --data-dir")?,
                spec,
                edges: args
                    .edges
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(parse_mqtt_url)
                    .collect::<anyhow::Result<_>>()?,
                edge_files: args
                    .edge_files
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(std::path::PathBuf::from)
                    .collect(),
                admin: (user.to_string(), pass.to_string()),
                timeout_secs: args.timeout_secs,
            })
            .await;
        }
        Some("agents") => {
            return bridge::agents(bridge::AgentsArgs {
                hosts_addrs: args
                    .mqtt_hosts
                    .as_deref()
                    .unwrap_or(&host)
                    .split(',')
                    .map(str::to_string)
                    .collect(),
                port,
                spec,
                slice: args.slice,
                slices: args.slices.max(1),
                ramp_secs: args.ramp_secs,
                status_dir: args
                    .status_dir
                    .context("--scenario agents needs --status-dir")?,
            })
            .await;
        }
        Some("bridge") => {
            let pids = args
                .pids
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (n, pid) = p.split_once(':').context("--pids: name:pid")?;
                    Ok((n.to_string(), pid.parse().context("--pids: a PID")?))
                })
                .collect::<anyhow::Result<_>>()?;
            return bridge::run(bridge::BridgeArgs {
                api: args.api_url.context("--scenario needs --api-url")?,
                token: args.api_token,
                hosts: args.hosts,
                slices: args.slices.max(1),
                status_dir: args
                    .status_dir
                    .context("--scenario bridge needs --status-dir")?,
                pids,
                restart_cmd: args
                    .restart_cmd
                    .context("--scenario bridge needs --restart-cmd")?,
                edge_restart_cmd: args
                    .edge_restart_cmd
                    .context("--scenario bridge needs --edge-restart-cmd")?,
                steady_secs: args.steady_secs,
                settle_secs: args.settle_secs,
                timeout_secs: args.timeout_secs,
            })
            .await;
        }
        _ => {}
    }
    if args.scenario.as_deref() == Some("restart") {
        return restart::run(restart::RestartArgs {
            hosts_addrs: args
                .mqtt_hosts
                .as_deref()
                .unwrap_or(&host)
                .split(',')
                .map(str::to_string)
                .collect(),
            port,
            api: args.api_url.context("--scenario needs --api-url")?,
            token: args.api_token,
            hosts: args.hosts,
            mo_count: args.mo_count,
            ramp_secs: args.ramp_secs,
            collector_pid: args.collector_pid,
            restart_cmd: args
                .restart_cmd
                .context("--scenario restart needs --restart-cmd")?,
            settle_secs: args.settle_secs,
            timeout_secs: args.timeout_secs,
            run_id: args.run_id.unwrap_or_else(|| now_ms() as u64 / 1000),
        })
        .await;
    }
    if args.scenario.is_some() {
        return region::run(region::DayArgs {
            host,
            port,
            api: args.api_url.context("--scenario needs --api-url")?,
            token: args.api_token,
            hosts: args.hosts,
            mo_count: args.mo_count,
            connections: args.connections,
            ramp_secs: args.ramp_secs,
            backlog: args.backlog,
            replay_mo: args.replay_mo,
            collector_pid: args.collector_pid,
            timeout_secs: args.timeout_secs,
            run_id: args.run_id.unwrap_or_else(|| now_ms() as u64 / 1000),
            lunch_off_pct: args.lunch_off_pct.min(100),
            noon_kill: args.noon_kill,
            replay_rate: args.replay_rate,
            replay_topics: args.replay_topics,
        })
        .await;
    }
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let spec = FleetSpec {
        hosts: args.hosts.max(1),
        mo_count: args.mo_count.max(1),
        run_id: args.run_id.unwrap_or_else(|| now_ms() as u64 / 1000),
    };
    let connections = args.connections.clamp(1, spec.hosts);
    eprintln!(
        "dozor-loadgen: {} hosts in {} МО (≤ {} per МО) over {connections} connections to {host}:{port}, {} heartbeats, QoS {}, rate {}",
        spec.hosts,
        spec.mo_count,
        Fleet::max_hosts_per_mo(&spec),
        args.messages,
        args.qos,
        if args.rate == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", args.rate)
        },
    );
    let fleet = Fleet::new(&spec);
    if let Err(e) = fleet.self_check(now_ms()) {
        bail!("self-check: {e}");
    }
    if args.bench_decode {
        bench_decode(fleet, args.messages);
        return Ok(());
    }
    let groups = fleet.split(connections);

    let (go_tx, go_rx) = watch::channel::<Option<Instant>>(None);
    let mut conns = Vec::new();
    for (c, hosts) in groups.into_iter().enumerate() {
        let share = share(args.messages, connections, c);
        let mut opts =
            MqttOptions::new(format!("dozor-loadgen-{:x}-{c}", spec.run_id), &host, port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_inflight(args.inflight.max(1))
            .set_max_packet_size(64 * 1024, 64 * 1024)
            .set_request_channel_capacity(4_096);
        let (client, eventloop) = AsyncClient::new(opts, 4_096);
        let progress = Arc::new(Progress::default());
        let (conn_tx, conn_rx) = oneshot::channel();
        let driver = tokio::spawn(drive(
            eventloop,
            client.clone(),
            qos,
            share,
            progress.clone(),
            conn_tx,
        ));
        let rate = (args.rate > 0).then(|| args.rate as f64 / connections as f64);
        let publisher = tokio::spawn(publish(client, hosts, qos, share, rate, go_rx.clone()));
        conns.push((conn_rx, driver, publisher, progress, share));
    }

    // Start the clock once every connection is up.
    for (conn_rx, ..) in &mut conns {
        tokio::time::timeout(Duration::from_secs(30), conn_rx)
            .await
            .context("connecting to the broker timed out")?
            .context("connection task ended")?;
    }
    let start = Instant::now();
    let cpu_start = self_cpu_secs();
    let _ = go_tx.send(Some(start));

    let deadline = Duration::from_secs(args.timeout_secs);
    let mut timed_out = false;
    // When the last connection had everything acknowledged (not counting the disconnect).
    let mut finished = start;
    for (_, driver, publisher, ..) in &mut conns {
        let left = deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, async {
            let _ = publisher.await;
            driver.await
        })
        .await
        {
            Ok(Ok(at)) => finished = finished.max(at),
            Ok(Err(_)) => finished = Instant::now(),
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        finished = Instant::now();
    }
    let secs = (finished - start).as_secs_f64();
    let cpu = self_cpu_secs() - cpu_start;
    let sum = |f: &dyn Fn(&Progress) -> u64| conns.iter().map(|c| f(&c.3)).sum::<u64>();
    let written = sum(&|p| p.written.load(Relaxed));
    let acked = sum(&|p| p.acked.load(Relaxed));
    let reconnects = sum(&|p| p.reconnects.load(Relaxed));
    let done = if qos == QoS::AtMostOnce {
        written
    } else {
        acked
    };
    let rate = done as f64 / secs.max(1e-9);
    eprintln!(
        "dozor-loadgen: {done} of {} heartbeats {} in {secs:.2} s: {rate:.0} msgs/s, own CPU {cpu:.2} s ({:.0} %)",
        args.messages,
        if qos == QoS::AtMostOnce {
            "written"
        } else {
            "acknowledged by the broker"
        },
        cpu / secs.max(1e-9) * 100.0,
    );
    println!(
        "dozor-loadgen published={written} acked={acked} secs={secs:.3} rate={rate:.0} cpu_secs={cpu:.2} reconnects={reconnects}"
    );
    if timed_out || done < args.messages {
        bail!(
            "only {done} of {} heartbeats completed{}",
            args.messages,
            if timed_out { " (timed out)" } else { "" }
        );
    }
    Ok(())
}

/// Decodes `count` heartbeats of the fleet (up to 100,000 distinct ones, cycled) on one thread
/// and reports the time per message.
fn bench_decode(fleet: Fleet, count: u64) {
    use dozor_collector::identity::{Agent, Registry};
    use dozor_collector::ingest::authenticate_decode;
    let mut hosts = fleet.hosts;
    let ts = now_ms();
    let n = hosts.len();
    let mut registry = Registry::default();
    let keys: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let secret = dozor_proto::auth::Secret(b);
            registry.insert(Agent::new(&h.mo, &h.host, &secret));
            secret.mac_key()
        })
        .collect();
    let samples: Vec<(String, Vec<u8>, Vec<u8>)> = (0..count.clamp(1, 100_000) as usize)
        .map(|i| {
            let h = &mut hosts[i % n];
            let mut buf = Vec::new();
            h.heartbeat_json(ts, &mut buf);
            let signed = dozor_proto::auth::sign(&keys[i % n], &h.hb_topic, &buf);
            (h.hb_topic.clone(), buf, signed)
        })
        .collect();
    let bytes: usize = samples.iter().map(|(_, p, _)| p.len()).sum();
    let limits = dozor_proto::Limits::DEFAULT;
    // The decoder alone, then the ingest task's whole step unsigned (open mode) and signed
    // (enrolled mode: identity lookup, MAC check, decode).
    let mut results = Vec::new();
    for mode in ["decode", "ingest_open", "ingest_enrolled"] {
        let start = Instant::now();
        let mut ok = 0u64;
        for i in 0..count {
            let (topic, payload, signed) = &samples[(i % samples.len() as u64) as usize];
            let r = match mode {
                "decode" => dozor_proto::decode(topic, payload, &limits).map_err(|_| ()),
                "ingest_open" => authenticate_decode(topic, payload, None, &limits).map_err(|_| ()),
                _ => authenticate_decode(topic, signed, Some(&registry), &limits).map_err(|_| ()),
            };
            if let Ok(m) = r {
                ok += 1;
                std::hint::black_box(m);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "dozor-loadgen: {mode}: {ok} of {count} heartbeats (avg {} bytes) in {secs:.3} s: {:.0} ns per message, {:.0} msgs/s on one core",
            bytes / samples.len(),
            secs * 1e9 / count.max(1) as f64,
            count as f64 / secs.max(1e-9),
        );
        results.push(format!(
            "{mode}_ns_per_msg={:.0}",
            secs * 1e9 / count.max(1) as f64
        ));
        if mode == "decode" {
            println!(
                "dozor-loadgen decoded={ok} secs={secs:.3} ns_per_msg={:.0}",
                secs * 1e9 / count.max(1) as f64
            );
        }
    }
    println!("dozor-loadgen {}", results.join(" "));
}

/// Messages connection `c` of `n` publishes out of `total`.
fn share(total: u64, n: usize, c: usize) -> u64 {
    total / n as u64 + u64::from((c as u64) < total % n as u64)
}

/// Publishes `count` heartbeats of `hosts` round-robin once the go signal is given, at
/// `rate` messages per second if set.
async fn publish(
    client: AsyncClient,
    mut hosts: Vec<SimHost>,
    qos: QoS,
    count: u64,
    rate: Option<f64>,
    mut go: watch::Receiver<Option<Instant>>,
) {
    let Ok(start) = go
        .wait_for(Option::is_some)
        .await
        .map(|s| s.unwrap_or_else(Instant::now))
    else {
        return;
    };
    let mut buf = Vec::with_capacity(1024);
    let mut ts = now_ms();
    for i in 0..count {
        if i % 64 == 0 {
            ts = now_ms();
            if let Some(r) = rate {
                let due = start + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let n = hosts.len();
        let h = &mut hosts[(i % n as u64) as usize];
        h.heartbeat_json(ts, &mut buf);
        // The topic and payload are moved into the request: one copy each, no serialization.
        if client
            .publish(h.hb_topic.as_str(), qos, false, buf.as_slice())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Drives the event loop of one connection until `count` publishes are acknowledged (QoS 1)
/// or written (QoS 0), then disconnects. Reports the first ConnAck on `connected`; returns
/// when the last message was done.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    qos: QoS,
    count: u64,
    progress: Arc<Progress>,
    connected: oneshot::Sender<()>,
) -> Instant {
    let mut connected = Some(connected);
    let finished = |p: &Progress| {
        let done = if qos == QoS::AtMostOnce {
            &p.written
        } else {
            &p.acked
        };
        done.load(Relaxed) >= count
    };
    while !finished(&progress) {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                progress.acked.fetch_add(1, Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                progress.written.fetch_add(1, Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                // A clean session loses its in-flight messages on reconnect: the run then
                // times out short, which the summary reports.
                progress.reconnects.fetch_add(1, Relaxed);
                eprintln!("dozor-loadgen: connection error: {e}; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let finished_at = Instant::now();
    // Let the broker see a clean DISCONNECT rather than a dropped socket.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    finished_at
}

/// Parses `mqtt://host:port` (port 1883 if absent).
fn parse_mqtt_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .with_context(|| format!("--mqtt-url {url}: expected mqtt://host:port"))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.trim_matches(['[', ']']).to_string(),
            p.parse()
                .with_context(|| format!("--mqtt-url {url}: bad port"))?,
        )),
        None => Ok((rest.to_string(), 1883)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, n) in [(1_000_000, 8), (7, 3), (5, 8), (0, 2)] {
            let s: Vec<u64> = (0..n).map(|c| share(total, n, c)).collect();
            assert_eq!(s.iter().sum::<u64>(), total);
            assert!(s.iter().max().unwrap_or(&0) - s.iter().min().unwrap_or(&0) <= 1);
        }
    }

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1884").ok(),
            Some(("127.0.0.1".into(), 1884))
        );
        assert_eq!(
            parse_mqtt_url("mqtt://broker").ok(),
            Some(("broker".into(), 1883))
        );
        assert!(parse_mqtt_url("http://x:1").is_err());
        assert!(parse_mqtt_url("mqtt://x:notaport").is_err());
    }
}
