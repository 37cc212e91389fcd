//! `dozor-loadgen --scenario restart`: a collector restart with every agent reconnecting (issue
//! 15), one real MQTT connection per simulated agent.
//!
//! Each of `--hosts` simulated agents has its own rumqttc client under the agent's own client
//! id (`dozor-{mo}-{host}`, persistent session), keep-alive 30 s, and reconnects like the real
//! agent (`agent/src/publish/mqtt.rs`): after a failure it waits a jittered, capped exponential
//! backoff (the n-th delay uniform in [d/2, d], d = min(30 s, 1 s·2ⁿ)), reset by a CONNACK. On
//! every CONNACK it subscribes to its ack topic and publishes its birth (retained, QoS 1), as
//! the agent does; then a heartbeat every 30 s at its own phase while connected. What was not
//! acknowledged when a connection dropped is dropped, not resent (the real agent resends it
//! from its spool flagged `replay`, which `--scenario day` covers).
//!
//! The connections are dealt over the addresses of `--mqtt-hosts` (e.g. 127.0.0.1…127.0.0.4 to
//! a broker listening on 0.0.0.0): one source address reaches at most ~28,000 connections to
//! one destination (the ephemeral port range).
//!
//! Phases:
//! 1. **connect**: the agents switch on over `--ramp-secs`; measured: until the collector's
//!    `/metrics` counts every host online and every client holds a CONNACK;
//! 2. **restart**: `--restart-cmd` is run (`sh -c`; it stops the collector and starts it again
//!    on the same data directory and addresses, and prints the new collector's PID as its last
//!    stdout line); measured from the moment it is run: until every client is connected again
//!    and `/metrics` counts every host online; connection attempts, refusals by kind, the
//!    collector's CPU and RSS peaks;
//! 3. **settle**: `--settle-secs` more of quiet running, then the incidents opened since the
//!    restart are counted (a restart implies none).
//!
//! The last stdout line is machine-readable (`dozor-loadgen-restart key=value …`).

use crate::fleet::{Fleet, FleetSpec, SimHost};
use crate::region::{Api, Sampler};
use anyhow::{Context, bail};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// First reconnect delay of the real agent.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest reconnect delay of the real agent.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

pub(crate) struct RestartArgs {
    pub hosts_addrs: Vec<String>,
    pub port: u16,
    pub api: String,
    pub token: Option<String>,
    pub hosts: usize,
    pub mo_count: usize,
    pub ramp_secs: u64,
    pub collector_pid: Option<u32>,
    pub restart_cmd: String,
    pub settle_secs: u64,
    pub timeout_secs: u64,
    pub run_id: u64,
}

/// Counters shared by every simulated agent.
#[derive(Default)]
pub(crate) struct Counts {
    /// Clients holding a CONNACK now.
    pub connected: AtomicU64,
    /// Connection attempts (each poll after a failure, and the first).
    pub attempts: AtomicU64,
    pub connacks: AtomicU64,
    /// Failures by kind: the broker refused with a CONNACK code, the TCP connect was refused
    /// (nothing listening), the connection was reset or closed by the other side, timeouts,
    /// anything else.
    refused_connack: AtomicU64,
    refused_tcp: AtomicU64,
    closed: AtomicU64,
    timeout: AtomicU64,
    other: AtomicU64,
    pub published: AtomicU64,
    /// PUBACKs from the broker (births and heartbeats).
    pub acked: AtomicU64,
    /// No new heartbeats (connections kept): the end of a run that counts losses.
    pub quiet: AtomicBool,
    stop: AtomicBool,
}

impl Counts {
    pub(crate) fn snapshot(&self) -> [u64; 7] {
        [
            self.attempts.load(Relaxed),
            self.connacks.load(Relaxed),
            self.refused_connack.load(Relaxed),
            self.refused_tcp.load(Relaxed),
            self.closed.load(Relaxed),
            self.timeout.load(Relaxed),
            self.other.load(Relaxed),
        ]
    }

    fn classify(&self, e: &ConnectionError) {
        let c = match e {
            ConnectionError::ConnectionRefused(_) => &self.refused_connack,
            ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => &self.timeout,
            ConnectionError::Io(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => &self.refused_tcp,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe => &self.closed,
                std::io::ErrorKind::TimedOut => &self.timeout,
                _ => &self.other,
            },
            ConnectionError::MqttState(_) => &self.closed,
            _ => &self.other,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// The agent's backoff (`agent/src/publish/mqtt.rs`), with a per-agent random stream.
struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let d = BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_CAP);
        self.attempt = self.attempt.saturating_add(1);
        self.rng = crate::fleet::splitmix(self.rng);
        let half = d / 2;
        let half_ms = half.as_millis() as u64;
        half + Duration::from_millis(self.rng % (half_ms + 1))
    }
}

pub(crate) async fn run(a: RestartArgs) -> anyhow::Result<()> {
    let spec = FleetSpec {
        hosts: a.hosts.max(1),
        mo_count: a.mo_count.max(1),
        run_id: a.run_id,
    };
    let fleet = Fleet::new(&spec);
    let n = fleet.hosts.len();
    let ramp = Duration::from_secs(a.ramp_secs);
    eprintln!(
        "dozor-loadgen restart: {n} agents in {} МО, one MQTT connection each, over {} to port {}, switched on over {} s",
        spec.mo_count,
        a.hosts_addrs.join(","),
        a.port,
        ramp.as_secs()
    );
    let http = match &a.token {
        Some(t) => dozor_tests::client_with_token(t),
        None => reqwest::Client::new(),
    };
    let api = Api {
        http,
        base: a.api.trim_end_matches('/').to_string(),
    };
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, h) in fleet.hosts.into_iter().enumerate() {
        let addr = a.hosts_addrs[i % a.hosts_addrs.len()].clone();
        tasks.push(tokio::spawn(agent(
            h,
            addr,
            a.port,
            ramp.mul_f64(i as f64 / n as f64),
            counts.clone(),
            AgentOpts::default(),
        )));
    }
    let deadline = Duration::from_secs(a.timeout_secs);
    let mut sampler = Sampler::new(a.collector_pid);
    let mut out = Vec::new();

    // 1. Every agent connects and is online.
    sampler.phase();
    let mut all_on = None;
    while start.elapsed() < deadline {
        sampler.tick().await;
        let connected = counts.connected.load(Relaxed) as usize;
        if connected >= n && api.online().await.unwrap_or(0) >= n {
            all_on = Some(start.elapsed());
            break;
        }
    }
    let (cpu_peak, cpu_avg, rss_peak) = sampler.phase();
    let Some(all_on) = all_on else {
        bail!(
            "connect: {} of {n} connected, {} online within {deadline:?}",
            counts.connected.load(Relaxed),
            api.online().await.unwrap_or(0)
        )
    };
    let before = counts.snapshot();
    eprintln!(
        "dozor-loadgen restart: connect: {n} agents online {:.1} s after the start ({} attempts, {} CONNACKs); collector CPU peak {cpu_peak:.0} %, avg {cpu_avg:.0} %, RSS peak {rss_peak} MiB",
        all_on.as_secs_f64(),
        before[0],
        before[1],
    );
    out.push(format!(
        "connect_all_online_s={:.1} connect_cpu_peak_pct={cpu_peak:.0} connect_rss_peak_mib={rss_peak}",
        all_on.as_secs_f64()
    ));
    let fds = a
        .collector_pid
        .and_then(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
        .map_or(0, |d| d.count());
    eprintln!(
        "dozor-loadgen restart: the collector holds {fds} open files for {n} agents ({:.2} per agent)",
        fds as f64 / n as f64
    );
    out.push(format!("collector_fds={fds}"));
    let incidents_before = api.incident_ids().await?;
    // A few heartbeats on the steady fleet, so that the store has heard every host.
    for _ in 0..5 {
        sampler.tick().await;
    }
    sampler.phase();

    // 2. The restart.
    let t = Instant::now();
    let o = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&a.restart_cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("running --restart-cmd")?;
    if !o.status.success() {
        bail!("--restart-cmd failed: {}", o.status);
    }
    let restarted = t.elapsed();
    let pid: u32 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .context("--restart-cmd did not print the new collector's PID")?;
    sampler = Sampler::new(Some(pid));
    sampler.phase();
    let mut all_back = None;
    let mut all_connected = None;
    let mut online_trace = Vec::new();
    while t.elapsed() < deadline {
        sampler.tick().await;
        let connected = counts.connected.load(Relaxed) as usize;
        if connected >= n && all_connected.is_none() {
            all_connected = Some(t.elapsed());
        }
        let online = api.online().await.unwrap_or(0);
        online_trace.push(format!("{:.0}s:{online}", t.elapsed().as_secs_f64()));
        if connected >= n && online >= n {
            all_back = Some(t.elapsed());
            break;
        }
    }
    let (cpu_peak, cpu_avg, rss_peak) = sampler.phase();
    let after = counts.snapshot();
    let d: Vec<u64> = after.iter().zip(before).map(|(x, y)| x - y).collect();
    let gate = api.gate_refusals().await.unwrap_or_default();
    eprintln!(
        "dozor-loadgen restart: online per second after the restart: {}",
        online_trace.join(" ")
    );
    let Some(all_back) = all_back else {
        bail!(
            "restart: {} of {n} connected, {} online within {deadline:?}",
            counts.connected.load(Relaxed),
            api.online().await.unwrap_or(0)
        )
    };
    eprintln!(
        "dozor-loadgen restart: the collector stopped and started again in {:.1} s; every agent connected {:.1} s and every host online {:.1} s after the restart began; {} connection attempts ({} CONNACKs; refused: {} by CONNACK, {} TCP refused, {} closed or reset, {} timeouts, {} other); the gate closed: {gate}; collector CPU peak {cpu_peak:.0} %, avg {cpu_avg:.0} %, RSS peak {rss_peak} MiB",
        restarted.as_secs_f64(),
        all_connected.unwrap_or(all_back).as_secs_f64(),
        all_back.as_secs_f64(),
        d[0],
        d[1],
        d[2],
        d[3],
        d[4],
        d[5],
        d[6],
    );
    out.push(format!(
        "restart_cmd_s={:.1} restart_all_connected_s={:.1} restart_all_online_s={:.1} attempts={} connacks={} refused_connack={} refused_tcp={} closed={} timeouts={} other={} restart_cpu_peak_pct={cpu_peak:.0} restart_cpu_avg_pct={cpu_avg:.0} restart_rss_peak_mib={rss_peak}",
        restarted.as_secs_f64(),
        all_connected.unwrap_or(all_back).as_secs_f64(),
        all_back.as_secs_f64(),
        d[0],
        d[1],
        d[2],
        d[3],
        d[4],
        d[5],
        d[6],
    ));

    // 3. Settle, then alert noise.
    let t = Instant::now();
    let mut min_online = n;
    while t.elapsed() < Duration::from_secs(a.settle_secs) {
        sampler.tick().await;
        min_online = min_online.min(api.online().await.unwrap_or(0));
    }
    let (_, settle_cpu_avg, settle_rss) = sampler.phase();
    let new = api.incidents_since(&incidents_before).await?;
    eprintln!(
        "dozor-loadgen restart: {} s after: fewest online {min_online} of {n}; collector CPU avg {settle_cpu_avg:.0} %, RSS {settle_rss} MiB, VmHWM {} MiB; incidents opened since the restart: {} (expected 0){}",
        a.settle_secs,
        sampler.hwm_mib(),
        new.len(),
        new.iter()
            .take(10)
            .map(|s| format!("\n  {s}"))
            .collect::<String>()
    );
    out.push(format!(
        "settle_min_online={min_online} settle_cpu_avg_pct={settle_cpu_avg:.0} collector_hwm_mib={} incidents={} published={} loadgen_cpu_s={:.1}",
        sampler.hwm_mib(),
        new.len(),
        counts.published.load(Relaxed),
        dozor_tests::self_cpu_secs(),
    ));
    counts.stop.store(true, Relaxed);
    for t in tasks {
        t.abort();
    }
    println!("dozor-loadgen-restart {}", out.join(" "));
    if !new.is_empty() || min_online < n {
        bail!("a restart implies no incident and no host lost");
    }
    Ok(())
}

/// What an agent does beyond the open-mode default.
#[derive(Default)]
pub(crate) struct AgentOpts {
    /// Enrolled: logs in as its identity (username `{mo}/{host}`, the password derived from
    /// the secret), signs every message and leaves a signed last will (`lost`, retained), as
    /// the real agent does.
    pub secret: Option<dozor_proto::auth::Secret>,
    /// This agent's messages acknowledged by the broker.
    pub acked: Option<Arc<AtomicU64>>,
}

/// One simulated agent: its own connection, reconnecting with the agent's backoff.
pub(crate) async fn agent(
    h: SimHost,
    addr: String,
    port: u16,
    at: Duration,
    c: Arc<Counts>,
    o: AgentOpts,
) {
    tokio::time::sleep(at).await;
    let client_id = dozor_proto::client_id(&h.mo, &h.host);
    let mut opts = MqttOptions::new(client_id, addr, port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_inflight(16)
        .set_max_packet_size(dozor_proto::MAX_PAYLOAD_BYTES + 1024, 64 * 1024);
    let key = o.secret.as_ref().map(|s| s.mac_key());
    let seal = move |topic: &str, json: Vec<u8>| match &key {
        Some(k) => dozor_proto::auth::sign(k, topic, &json),
        None => json,
    };
    if let Some(s) = &o.secret {
        opts.set_credentials(dozor_proto::username(&h.mo, &h.host), s.mqtt_password());
    }
    let enrolled = o.secret.is_some();
    let (client, mut el) = AsyncClient::new(opts, 16);
    el.network_options.set_connection_timeout(10);
    let ack_topic = dozor_proto::topic(&h.mo, &h.host, dozor_proto::Kind::Ack);
    let boot_ms = crate::now_ms() - 3_600_000;
    let mut backoff = Backoff {
        attempt: 0,
        rng: crate::fleet::splitmix(h.host.len() as u64 ^ at.as_nanos() as u64),
    };
    let phase = Duration::from_millis(backoff.rng % 30_000);
    let mut hb = tokio::time::interval_at(
        tokio::time::Instant::now() + phase,
        Duration::from_secs(u64::from(crate::fleet::INTERVAL_SECS)),
    );
    let seal = Arc::new(seal);
    let h = Arc::new(std::sync::Mutex::new(h));
    let up = Arc::new(AtomicBool::new(false));
    // Heartbeats in their own task: a select! beside `poll` would cancel it mid-packet.
    let beat = {
        let (h, up, c, client, seal) = (
            h.clone(),
            up.clone(),
            c.clone(),
            client.clone(),
            seal.clone(),
        );
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            loop {
                hb.tick().await;
                if !up.load(Relaxed) || c.quiet.load(Relaxed) {
                    continue;
                }
                let topic = {
                    let mut h = h.lock().expect("host lock");
                    let seq = h.reserve(1);
                    h.heartbeat_json_as(seq, crate::now_ms(), false, boot_ms, &mut buf);
                    h.hb_topic.clone()
                };
                let payload = seal(&topic, buf.clone());
                if client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
                    .is_ok()
                {
                    c.published.fetch_add(1, Relaxed);
                }
            }
        })
    };
    let set_will = |el: &mut rumqttc::EventLoop| {
        if enrolled {
            let (topic, json) = h.lock().expect("host lock").will_json(crate::now_ms());
            let payload = seal(&topic, json);
            el.mqtt_options.set_last_will(rumqttc::LastWill::new(
                topic,
                payload,
                QoS::AtLeastOnce,
                true,
            ));
        }
    };
    set_will(&mut el);
    c.attempts.fetch_add(1, Relaxed);
    while !c.stop.load(Relaxed) {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                c.acked.fetch_add(1, Relaxed);
                if let Some(a) = &o.acked {
                    a.fetch_add(1, Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.attempt = 0;
                up.store(true, Relaxed);
                c.connected.fetch_add(1, Relaxed);
                c.connacks.fetch_add(1, Relaxed);
                let _ = client.try_subscribe(ack_topic.clone(), QoS::AtLeastOnce);
                let (topic, json) = h
                    .lock()
                    .expect("host lock")
                    .birth_json(crate::now_ms(), boot_ms);
                if client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, true, seal(&topic, json))
                    .is_ok()
                {
                    c.published.fetch_add(1, Relaxed);
                }
                if enrolled {
                    // As the agent does: a retained `online` replaces the will's `lost`, which
                    // a broker would otherwise hand the collector again at its next subscribe.
                    // QoS 0 here (the agent uses 1) so that every PUBACK counted in `acked` is
                    // a sequenced message's, comparable with what the collector stored.
                    let (topic, json) = h.lock().expect("host lock").online_json(crate::now_ms());
                    let _ = client.try_publish(
                        topic.clone(),
                        QoS::AtMostOnce,
                        true,
                        seal(&topic, json),
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                if up.swap(false, Relaxed) {
                    c.connected.fetch_sub(1, Relaxed);
                }
                c.classify(&e);
                // What rumqttc would resend under the old timestamps is dropped: the real
                // agent resends it from its spool flagged `replay` (the day scenario's
                // subject), and stale live messages would read as a skewed clock.
                el.clean();
                el.pending.clear();
                tokio::time::sleep(backoff.next_delay()).await;
                set_will(&mut el);
                c.attempts.fetch_add(1, Relaxed);
            }
        }
    }
    beat.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_the_agents() {
        let mut b = Backoff { attempt: 0, rng: 1 };
        let caps = [1, 2, 4, 8, 16, 30, 30, 30];
        for cap in caps {
            let d = b.next_delay();
            let cap = Duration::from_secs(cap);
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.attempt = 0;
        assert!(b.next_delay() <= BACKOFF_BASE);
    }
}
