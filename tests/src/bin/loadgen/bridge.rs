//! A Mosquitto bridge tree with 30,000 enrolled agents (issue 15; `bench/bridge.sh`): edge
//! brokers each holding a share of the agents' connections, bridged to a core broker the
//! collector subscribes to (docs/scaling.md). Three roles of `dozor-loadgen`:
//!
//! - `--scenario provision`: enrolls the fleet the way `dozor-collector agent`/enrollment does
//!   (rows in the collector's `identity.db`, which the running collector reloads and provisions
//!   into the core broker's dynamic security), and provisions every edge broker's dynamic
//!   security with the collector's own commands (`identity::dynsec`), each edge with the agents
//!   of its МО; prints how long each took.
//! - `--scenario agents --slice I --slices N`: the agents of edge `I` (the МО whose index is
//!   `I` modulo `N`), one MQTT connection each under their own login (`restart::agent`):
//!   signed messages, a signed last will, the real agent's backoff. Every second it writes
//!   `agents.I` (counters) and `acked.I` (per host: messages the edge acknowledged) into
//!   `--status-dir`; once the file `quiet` appears there it publishes nothing new.
//! - `--scenario bridge`: the measuring side. It reads the agents' files and the collector's
//!   API (`/metrics`, `/api/v1/delivery`: per host, messages stored once) and runs the phases:
//!   connect, steady running, a graceful collector restart, a `kill -9` collector restart, an
//!   edge broker restart, then quiet; see [`run`].
//!
//! Secrets are derived from the run id and the host (`bench_secret`), so the three roles agree
//! without passing 30,000 secrets around.

use crate::fleet::{Fleet, FleetSpec, SimHost, splitmix};
use crate::region::{Api, Sampler};
use crate::restart::{AgentOpts, Counts, agent};
use anyhow::{Context, bail};
use dozor_collector::identity::{Agent, Registry, dynsec};
use dozor_proto::auth::Secret;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The bench identity of a host: the same in every process of one run.
pub(crate) fn bench_secret(run_id: u64, h: &SimHost) -> Secret {
    let fnv = |s: &str| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |a, b| {
            (a ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let mut x = splitmix(run_id ^ fnv(&h.mo) ^ fnv(&h.host).rotate_left(17));
    let mut b = [0u8; 32];
    for chunk in b.chunks_mut(8) {
        x = splitmix(x);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    Secret(b)
}

/// The edge of the `i`-th host of a fleet: edges hold whole МО (host `i` is in МО
/// `i % mo_count`).
fn edge_of(i: usize, mo_count: usize, edges: usize) -> usize {
    (i % mo_count.max(1)) % edges.max(1)
}

fn key(mo: &str, host: &str) -> String {
    format!("{mo}/{host}")
}

pub(crate) struct ProvisionArgs {
    pub data_dir: PathBuf,
    pub spec: FleetSpec,
    /// Edge brokers, `(host, port)`, provisioned with dynsec commands.
    pub edges: Vec<(String, u16)>,
    /// Or the dynamic-security files of stopped edge brokers (made by `mosquitto_ctrl dynsec
    /// init`), written directly: what the commands would make, without the plugin rewriting its
    /// whole file after every command.
    pub edge_files: Vec<PathBuf>,
    pub admin: (String, String),
    pub timeout_secs: u64,
}

/// Enrolls the fleet into `identity.db` and provisions each edge's dynamic security.
pub(crate) async fn provision(a: ProvisionArgs) -> anyhow::Result<()> {
    let fleet = Fleet::new(&a.spec);
    let n = fleet.hosts.len();
    let t = Instant::now();
    let path = dozor_collector::identity::db::path(&a.data_dir);
    let mut db = rusqlite::Connection::open(&path).with_context(|| format!("{path:?}"))?;
    db.busy_timeout(Duration::from_secs(30))?;
    let tx = db.transaction()?;
    {
        let mut st = tx.prepare(
            "INSERT OR REPLACE INTO agents(mo, host, secret, token_id, hostname, machine_id, enrolled_ms)
             VALUES (?1, ?2, ?3, 'bench', ?4, '', ?5)",
        )?;
        let now = crate::now_ms();
        for h in &fleet.hosts {
            st.execute(rusqlite::params![
                h.mo,
                h.host,
                bench_secret(a.spec.run_id, h).to_hex(),
                h.host.to_uppercase(),
                now
            ])?;
        }
    }
    tx.commit()?;
    let enrolled = t.elapsed();
    let mut out = vec![format!("identities_s={:.1}", enrolled.as_secs_f64())];
    eprintln!(
        "dozor-loadgen provision: {n} identities written to identity.db in {:.1} s",
        enrolled.as_secs_f64()
    );
    for (e, file) in a.edge_files.iter().enumerate() {
        let mut reg = Registry::default();
        for (i, h) in fleet.hosts.iter().enumerate() {
            if edge_of(i, a.spec.mo_count, a.edge_files.len()) == e {
                reg.insert(Agent::new(&h.mo, &h.host, &bench_secret(a.spec.run_id, h)));
            }
        }
        let t = Instant::now();
        write_dynsec_file(file, &reg, a.spec.run_id)?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "dozor-loadgen provision: edge {}: {} agents' dynsec clients and roles written to {file:?} in {secs:.1} s",
            e + 1,
            reg.len()
        );
        out.push(format!(
            "edge{}_agents={} edge{}_dynsec_file_s={secs:.1}",
            e + 1,
            reg.len(),
            e + 1
        ));
    }
    for (e, (host, port)) in a.edges.iter().enumerate() {
        let mut reg = Registry::default();
        for (i, h) in fleet.hosts.iter().enumerate() {
            if edge_of(i, a.spec.mo_count, a.edges.len()) == e {
                reg.insert(Agent::new(&h.mo, &h.host, &bench_secret(a.spec.run_id, h)));
            }
        }
        let agents = reg.len();
        let payloads = dynsec::payloads(dynsec::diff(None, &reg));
        let t = Instant::now();
        let (responses, errors) = send_dynsec(host, *port, &a.admin, payloads, a.timeout_secs)
            .await
            .with_context(|| format!("provisioning edge {} ({host}:{port})", e + 1))?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "dozor-loadgen provision: edge {} ({host}:{port}): {agents} agents' dynsec clients and roles in {secs:.1} s ({responses} command batches answered, {errors} commands refused)",
            e + 1
        );
        out.push(format!(
            "edge{}_agents={agents} edge{}_dynsec_s={secs:.1} edge{}_dynsec_errors={errors}",
            e + 1,
            e + 1,
            e + 1
        ));
    }
    println!("dozor-loadgen-provision {}", out.join(" "));
    Ok(())
}

/// Iterations of Mosquitto 2.0's dynsec password hash.
const DYNSEC_ITERATIONS: u32 = 101;

/// PBKDF2-HMAC-SHA512, one 64-byte block: how Mosquitto's dynamic-security plugin stores a
/// password (base64 of the hash and of a 12-byte salt, with the iterations).
fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    use hmac::{Hmac, Mac};
    let mac =
        Hmac::<sha2::Sha512>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut m = mac.clone();
    m.update(salt);
    m.update(&1u32.to_be_bytes());
    let mut u: [u8; 64] = m.finalize().into_bytes().into();
    let mut t = u;
    for _ in 1..iterations {
        let mut m = mac.clone();
        m.update(&u);
        u = m.finalize().into_bytes().into();
        for (a, b) in t.iter_mut().zip(u) {
            *a ^= b;
        }
    }
    t
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Adds the registry's agents to a dynamic-security file, as the collector's commands
/// (`identity::dynsec::create_agent`) would: one role with the agent's topics, one client
/// bound to its client id, the password hashed as the plugin hashes it.
fn write_dynsec_file(path: &Path, reg: &Registry, run_id: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{path:?}"))?;
    let mut doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{path:?}: JSON"))?;
    let mut clients = Vec::with_capacity(reg.len());
    let mut roles = Vec::with_capacity(reg.len());
    let mut rng = splitmix(run_id ^ 0x5a17);
    for a in reg.agents() {
        // createRole and createClient; the rest (addRoleACL of the replay topics for a role
        // made before them) is already in the role's ACLs.
        let mut commands = dynsec::create_agent(a).into_iter();
        let (Some(mut role), Some(mut client)) = (commands.next(), commands.next()) else {
            anyhow::bail!("dynsec::create_agent made fewer than two commands");
        };
        if let Some(r) = role.as_object_mut() {
            r.remove("command");
        }
        let mut salt = [0u8; 12];
        for c in salt.chunks_mut(4) {
            rng = splitmix(rng);
            c.copy_from_slice(&rng.to_le_bytes()[..4]);
        }
        let hash = pbkdf2_sha512(
            a.secret.mqtt_password().as_bytes(),
            &salt,
            DYNSEC_ITERATIONS,
        );
        if let Some(c) = client.as_object_mut() {
            c.remove("command");
            c.insert("password".into(), base64(&hash).into());
            c.insert("salt".into(), base64(&salt).into());
            c.insert("iterations".into(), DYNSEC_ITERATIONS.into());
        }
        roles.push(role);
        clients.push(client);
    }
    for (k, v) in [("clients", clients), ("roles", roles)] {
        match doc[k].as_array_mut() {
            Some(list) => list.extend(v),
            None => doc[k] = v.into(),
        }
    }
    write_atomic(path, &serde_json::to_vec(&doc)?)
}

/// Publishes dynsec command batches as the plugin's admin and waits for every answer;
/// returns (answers, refused commands).
async fn send_dynsec(
    host: &str,
    port: u16,
    admin: &(String, String),
    mut payloads: Vec<Vec<u8>>,
    timeout_secs: u64,
) -> anyhow::Result<(usize, usize)> {
    let mut opts = MqttOptions::new(format!("dozor-bench-provision-{port}"), host, port);
    opts.set_credentials(admin.0.clone(), admin.1.clone())
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(16 << 20, 1 << 20)
        .set_inflight(64);
    let (client, mut el) = AsyncClient::new(opts, 64);
    let want = payloads.len();
    let response = format!("{}/response", dynsec::CONTROL_TOPIC);
    client.subscribe(response.clone(), QoS::AtLeastOnce).await?;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let (mut answers, mut errors) = (0, 0);
    let mut publisher = None;
    while answers < want {
        let ev = tokio::time::timeout_at(deadline.into(), el.poll())
            .await
            .context("no answer from the broker in time")??;
        match ev {
            Event::Incoming(Packet::SubAck(_)) if publisher.is_none() => {
                let c = client.clone();
                let batches = std::mem::take(&mut payloads);
                publisher = Some(tokio::spawn(async move {
                    for b in batches {
                        if c.publish(dynsec::CONTROL_TOPIC, QoS::AtLeastOnce, false, b)
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }));
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == response => {
                answers += 1;
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                errors += v["responses"].as_array().map_or(0, |r| {
                    r.iter()
                        .filter(|x| x.get("error").is_some_and(|e| !e.is_null()))
                        .count()
                });
            }
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    Ok((answers, errors))
}

pub(crate) struct AgentsArgs {
    pub hosts_addrs: Vec<String>,
    pub port: u16,
    pub spec: FleetSpec,
    pub slice: usize,
    pub slices: usize,
    pub ramp_secs: u64,
    pub status_dir: PathBuf,
}

/// Runs the agents of one edge until killed, writing their counters every second.
pub(crate) async fn agents(a: AgentsArgs) -> anyhow::Result<()> {
    let fleet = Fleet::new(&a.spec);
    let mine: Vec<SimHost> = fleet
        .hosts
        .into_iter()
        .enumerate()
        .filter(|(i, _)| edge_of(*i, a.spec.mo_count, a.slices) == a.slice)
        .map(|(_, h)| h)
        .collect();
    let n = mine.len();
    eprintln!(
        "dozor-loadgen agents: slice {} of {}: {n} enrolled agents over {} to port {}, switched on over {} s",
        a.slice + 1,
        a.slices,
        a.hosts_addrs.join(","),
        a.port,
        a.ramp_secs
    );
    let counts = Arc::new(Counts::default());
    let ramp = Duration::from_secs(a.ramp_secs);
    let mut acked = Vec::with_capacity(n);
    for (i, h) in mine.into_iter().enumerate() {
        let c = Arc::new(AtomicU64::new(0));
        acked.push((key(&h.mo, &h.host), c.clone()));
        let opts = AgentOpts {
            secret: Some(bench_secret(a.spec.run_id, &h)),
            acked: Some(c),
        };
        tokio::spawn(agent(
            h,
            a.hosts_addrs[i % a.hosts_addrs.len()].clone(),
            a.port,
            ramp.mul_f64(i as f64 / n.max(1) as f64),
            counts.clone(),
            opts,
        ));
    }
    let status = a.status_dir.join(format!("agents.{}", a.slice));
    let acked_file = a.status_dir.join(format!("acked.{}", a.slice));
    let mut text = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !counts.quiet.load(Relaxed) && a.status_dir.join("quiet").exists() {
            counts.quiet.store(true, Relaxed);
        }
        let s = counts.snapshot();
        let line = format!(
            "agents={n} connected={} attempts={} connacks={} refused_connack={} refused_tcp={} closed={} timeouts={} other={} published={} acked={} pid={}\n",
            counts.connected.load(Relaxed),
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            s[5],
            s[6],
            counts.published.load(Relaxed),
            counts.acked.load(Relaxed),
            std::process::id()
        );
        if let Err(e) = write_atomic(&status, line.as_bytes()) {
            eprintln!("dozor-loadgen agents: {e:#}");
        }
        text.clear();
        for (k, c) in &acked {
            text.push_str(k);
            text.push('\t');
            text.push_str(&c.load(Relaxed).to_string());
            text.push('\n');
        }
        if let Err(e) = write_atomic(&acked_file, text.as_bytes()) {
            eprintln!("dozor-loadgen agents: {e:#}");
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    // Beside the file, under its own name: `with_extension` would give every `acked.N` one.
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, data).with_context(|| format!("{tmp:?}"))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{path:?}"))?;
    Ok(())
}

pub(crate) struct BridgeArgs {
    pub api: String,
    pub token: Option<String>,
    pub hosts: usize,
    pub slices: usize,
    pub status_dir: PathBuf,
    /// Processes to sample: `name:pid`, the collector first.
    pub pids: Vec<(String, u32)>,
    /// Restarts the collector: run with the signal name appended (`TERM`, `KILL`); prints the
    /// new collector's PID as its last line.
    pub restart_cmd: String,
    /// Restarts edge broker 1; prints its new PID as its last line.
    pub edge_restart_cmd: String,
    pub steady_secs: u64,
    pub settle_secs: u64,
    pub timeout_secs: u64,
}

/// Several processes' CPU and RSS, sampled together once a second.
struct Procs(Vec<(String, Sampler)>);

impl Procs {
    async fn tick(&mut self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (_, s) in &mut self.0 {
            s.sample();
        }
    }

    fn replace(&mut self, name: &str, pid: u32) {
        for (n, s) in &mut self.0 {
            if n == name {
                *s = Sampler::new(Some(pid));
                s.phase();
            }
        }
    }

    /// Ends a phase: `name CPU peak/avg %, RSS peak MiB` for each, and key=value pairs.
    fn phase(&mut self, tag: &str) -> (String, String) {
        let mut human = Vec::new();
        let mut kv = Vec::new();
        for (n, s) in &mut self.0 {
            let (peak, avg, rss) = s.phase();
            human.push(format!(
                "{n} CPU peak {peak:.0} % avg {avg:.1} % RSS {rss} MiB"
            ));
            kv.push(format!(
                "{tag}_{n}_cpu_peak_pct={peak:.0} {tag}_{n}_cpu_avg_pct={avg:.1} {tag}_{n}_rss_mib={rss}"
            ));
        }
        (human.join("; "), kv.join(" "))
    }
}

/// Incidents by `rule [state]`, with their count.
fn by_rule(list: &[String]) -> String {
    let mut m: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for i in list {
        let rule_state = i.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ");
        *m.entry(rule_state).or_insert(0) += 1;
    }
    m.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sums of the agents' status files.
fn status(dir: &Path, slices: usize) -> Vec<HashMap<String, u64>> {
    (0..slices)
        .map(|i| {
            std::fs::read_to_string(dir.join(format!("agents.{i}")))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect()
        })
        .collect()
}

fn sum(st: &[HashMap<String, u64>], k: &str) -> u64 {
    st.iter().map(|m| m.get(k).copied().unwrap_or(0)).sum()
}

/// Per host, messages the edges acknowledged (as of the agents' last write, ≤ 1 s old).
fn acked(dir: &Path, slices: usize) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for i in 0..slices {
        let text = std::fs::read_to_string(dir.join(format!("acked.{i}"))).unwrap_or_default();
        for l in text.lines() {
            if let Some((k, v)) = l.split_once('\t') {
                out.insert(k.to_string(), v.parse().unwrap_or(0));
            }
        }
    }
    out
}

/// Per host, messages the collector stored (each counted once), from `/api/v1/delivery`.
async fn stored(api: &Api) -> anyhow::Result<HashMap<String, u64>> {
    let v = api.get("/api/v1/delivery").await?;
    let mut out = HashMap::new();
    for d in v.as_array().into_iter().flatten() {
        let (Some(mo), Some(host)) = (d["mo"].as_str(), d["host"].as_str()) else {
            continue;
        };
        *out.entry(key(mo, host)).or_insert(0) += d["stored"].as_u64().unwrap_or(0);
    }
    Ok(out)
}

/// Hosts whose stored count has reached `target`.
fn caught_up(target: &HashMap<String, u64>, stored: &HashMap<String, u64>) -> usize {
    target
        .iter()
        .filter(|(k, t)| stored.get(*k).copied().unwrap_or(0) >= **t)
        .count()
}

/// Last wills the collector ignored as made on an older connection than the host's birth.
const STALE: &str = "dozor_states_stale_total";

/// A named counter of the collector's `/metrics` (summed over labels).
async fn metric(api: &Api, name: &str) -> f64 {
    api.metrics()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn run_cmd(cmd: &str) -> anyhow::Result<u32> {
    let o = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {cmd}"))?;
    if !o.status.success() {
        bail!("{cmd} failed: {}", o.status);
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("{cmd} did not print a PID"))
}

/// The measuring side; see the module doc. Phases and what each prints:
/// 1. **connect**: until every agent holds a CONNACK and the collector counts every host online;
/// 2. **steady**: `--steady-secs` of running: CPU and RSS of the collector, every broker and
///    the agents' processes; messages per second;
/// 3. **collector restart**, graceful then `kill -9`: the time until every host has stored
///    every message the edges had acknowledged when the new collector was up (the backlog the
///    core broker queued for the collector's persistent session), CPU/RSS peaks, duplicates;
///    after `--settle-secs` the incidents opened (a restart implies none);
/// 4. **edge restart**: edge 1 is stopped and started again; its agents reconnect with their
///    real backoff: the time until all are connected, all online, and all they had acknowledged
///    is stored; the fewest hosts online meanwhile, peaks, and the texts of the incidents opened
///    by the end of the settle time;
/// 5. **quiet**: no new heartbeats, 15 s to drain, then per host the messages acknowledged by
///    an edge but never stored (lost; expected 0) and the duplicates the collectors counted.
pub(crate) async fn run(a: BridgeArgs) -> anyhow::Result<()> {
    let http = match &a.token {
        Some(t) => dozor_tests::client_with_token(t),
        None => reqwest::Client::new(),
    };
    let api = Api {
        http,
        base: a.api.trim_end_matches('/').to_string(),
    };
    let n = a.hosts;
    let deadline = Duration::from_secs(a.timeout_secs);
    let mut procs = Procs(
        a.pids
            .iter()
            .map(|(n, p)| (n.clone(), Sampler::new(Some(*p))))
            .collect(),
    );
    let mut out: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();

    // 1. Connect.
    let start = Instant::now();
    procs.phase("x");
    let mut workers_added = false;
    loop {
        procs.tick().await;
        let st = status(&a.status_dir, a.slices);
        if !workers_added && st.iter().all(|m| m.contains_key("pid")) {
            for (i, m) in st.iter().enumerate() {
                let mut s = Sampler::new(Some(m["pid"] as u32));
                s.sample();
                procs.0.push((format!("agents{}", i + 1), s));
            }
            workers_added = true;
        }
        let connected = sum(&st, "connected") as usize;
        if connected >= n && api.online().await.unwrap_or(0) >= n {
            break;
        }
        if start.elapsed() > deadline {
            bail!(
                "connect: {connected} of {n} connected, {} online within {deadline:?}",
                api.online().await.unwrap_or(0)
            );
        }
    }
    let t_connect = start.elapsed().as_secs_f64();
    let st = status(&a.status_dir, a.slices);
    let (h, kv) = procs.phase("connect");
    eprintln!(
        "dozor-loadgen bridge: connect: {n} agents connected and online {t_connect:.1} s after the first began ({} attempts, {} CONNACKs, {} refused by CONNACK); {h}",
        sum(&st, "attempts"),
        sum(&st, "connacks"),
        sum(&st, "refused_connack")
    );
    out.push(format!("connect_all_online_s={t_connect:.1} {kv}"));

    // 2. Steady running.
    let acked0 = sum(&st, "acked");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(a.steady_secs) {
        procs.tick().await;
    }
    let rate = (sum(&status(&a.status_dir, a.slices), "acked") - acked0) as f64
        / t.elapsed().as_secs_f64();
    let (h, kv) = procs.phase("steady");
    eprintln!(
        "dozor-loadgen bridge: steady, {} s: {rate:.0} msg/s acknowledged by the edges; {h}",
        a.steady_secs
    );
    out.push(format!("steady_msg_per_s={rate:.0} {kv}"));

    // 3. Collector restarts.
    let mut duplicates = 0.0;
    let mut rejected = 0.0;
    for sig in ["TERM", "KILL"] {
        let tag = sig.to_lowercase();
        let before = api.incident_ids().await?;
        duplicates += metric(&api, "dozor_messages_duplicate_total").await;
        rejected += metric(&api, "dozor_messages_rejected_total").await;
        procs.phase("x");
        let t0 = Instant::now();
        let pid = run_cmd(&format!("{} {sig}", a.restart_cmd)).await?;
        let up = t0.elapsed().as_secs_f64();
        procs.replace("collector", pid);
        let target = acked(&a.status_dir, a.slices);
        let mut trace = Vec::new();
        let mut done = None;
        while t0.elapsed() < deadline {
            procs.tick().await;
            let Ok(s) = stored(&api).await else { continue };
            let c = caught_up(&target, &s);
            trace.push(format!("{:.0}s:{c}", t0.elapsed().as_secs_f64()));
            if c >= target.len() {
                done = Some(t0.elapsed().as_secs_f64());
                break;
            }
        }
        let (h, kv) = procs.phase(&format!("restart_{tag}"));
        eprintln!(
            "dozor-loadgen bridge: collector SIG{sig}: hosts caught up per second: {}",
            trace.join(" ")
        );
        let Some(done) = done else {
            bail!(
                "collector SIG{sig}: not every host's acknowledged messages stored within {deadline:?}"
            )
        };
        let t = Instant::now();
        let mut min_online = n;
        // Per second: online / lost / offline / not heard since the restart.
        let mut states = Vec::new();
        while t.elapsed() < Duration::from_secs(a.settle_secs) {
            procs.tick().await;
            let [on, off, lost] = api.by_state().await.unwrap_or_default();
            min_online = min_online.min(on);
            states.push(format!(
                "{:.0}s:{on}/{lost}/{off}/{}",
                t0.elapsed().as_secs_f64(),
                n.saturating_sub(on + off + lost)
            ));
        }
        eprintln!(
            "dozor-loadgen bridge: collector SIG{sig}: hosts online/lost/offline/unheard per second after the stop: {}; late wills ignored since the start: {}",
            states.join(" "),
            metric(&api, STALE).await
        );
        procs.phase("x");
        let new = api.incidents_since(&before).await?;
        eprintln!(
            "dozor-loadgen bridge: collector SIG{sig}: up again after {up:.1} s; every host's messages acknowledged by then stored {done:.1} s after the stop began; {h}; then {} s: fewest online {min_online} of {n}; incidents opened: {} (expected 0){}",
            a.settle_secs,
            new.len(),
            new.iter()
                .take(10)
                .map(|s| format!("\n  {s}"))
                .collect::<String>()
        );
        out.push(format!(
            "restart_{tag}_up_s={up:.1} restart_{tag}_all_stored_s={done:.1} restart_{tag}_min_online={min_online} restart_{tag}_incidents={} {kv}",
            new.len()
        ));
        if !new.is_empty() || min_online < n {
            failed.push(format!("collector SIG{sig}: incidents or hosts not online"));
        }
    }

    // 4. Edge 1 restart.
    let before = api.incident_ids().await?;
    let edge_agents = status(&a.status_dir, a.slices)[0]
        .get("agents")
        .copied()
        .unwrap_or(0);
    let st0 = status(&a.status_dir, a.slices);
    let stale0 = metric(&api, STALE).await;
    procs.phase("x");
    let t0 = Instant::now();
    let pid = run_cmd(&a.edge_restart_cmd).await?;
    let up = t0.elapsed().as_secs_f64();
    procs.replace("edge1", pid);
    let (mut t_conn, mut t_online, mut t_stored) = (None, None, None);
    let mut target = HashMap::new();
    let mut min_online = n;
    let mut trace = Vec::new();
    while t0.elapsed() < deadline && t_stored.is_none() {
        procs.tick().await;
        let st = status(&a.status_dir, a.slices);
        let conn = st[0].get("connected").copied().unwrap_or(0);
        let [online, _, lost] = api.by_state().await.unwrap_or_default();
        min_online = min_online.min(online);
        trace.push(format!(
            "{:.0}s:{conn}/{online}/{lost}",
            t0.elapsed().as_secs_f64()
        ));
        let el = t0.elapsed().as_secs_f64();
        if t_conn.is_none() && conn >= edge_agents {
            t_conn = Some(el);
            target = acked(&a.status_dir, a.slices);
        }
        if t_online.is_none() && t_conn.is_some() && online >= n {
            t_online = Some(el);
        }
        if t_conn.is_some()
            && t_online.is_some()
            && let Ok(s) = stored(&api).await
            && caught_up(&target, &s) >= target.len()
        {
            t_stored = Some(el);
        }
    }
    let (h, kv) = procs.phase("edge");
    let st = status(&a.status_dir, a.slices);
    eprintln!(
        "dozor-loadgen bridge: edge 1 restart: edge agents connected / hosts online / hosts lost per second: {}",
        trace.join(" ")
    );
    let (Some(t_conn), Some(t_online), Some(t_stored)) = (t_conn, t_online, t_stored) else {
        bail!("edge restart: not every agent back, online and stored within {deadline:?}")
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(a.settle_secs) {
        procs.tick().await;
        min_online = min_online.min(api.online().await.unwrap_or(0));
    }
    procs.phase("x");
    let new = api.incidents_since(&before).await?;
    eprintln!(
        "dozor-loadgen bridge: edge 1 restart: late wills ignored: {}",
        metric(&api, STALE).await - stale0
    );
    let d = |k: &str| sum(&st[..1], k) - sum(&st0[..1], k);
    eprintln!(
        "dozor-loadgen bridge: edge 1 restart ({edge_agents} agents): the broker up again after {up:.1} s; every agent connected {t_conn:.1} s, every host online {t_online:.1} s, everything acknowledged stored {t_stored:.1} s after the stop began; {} connection attempts ({} CONNACKs; refused: {} by CONNACK, {} TCP, {} closed, {} timeouts, {} other); fewest online {min_online} of {n}; {h}; incidents opened by {} s later: {} ({}){}",
        d("attempts"),
        d("connacks"),
        d("refused_connack"),
        d("refused_tcp"),
        d("closed"),
        d("timeouts"),
        d("other"),
        a.settle_secs,
        new.len(),
        by_rule(&new),
        new.iter()
            .take(20)
            .map(|s| format!("\n  {s}"))
            .collect::<String>()
    );
    out.push(format!(
        "edge_up_s={up:.1} edge_all_connected_s={t_conn:.1} edge_all_online_s={t_online:.1} edge_all_stored_s={t_stored:.1} edge_attempts={} edge_min_online={min_online} edge_incidents={} {kv}",
        d("attempts"),
        new.len()
    ));

    // 5. Quiet: what was acknowledged and never stored.
    std::fs::write(a.status_dir.join("quiet"), b"")?;
    for _ in 0..15 {
        procs.tick().await;
    }
    let ack = acked(&a.status_dir, a.slices);
    let s = stored(&api).await?;
    let (mut lost, mut extra, mut lost_hosts) = (0u64, 0u64, 0usize);
    for (k, a) in &ack {
        let st = s.get(k).copied().unwrap_or(0);
        if *a > st {
            lost += a - st;
            lost_hosts += 1;
        } else {
            extra += st - a;
        }
    }
    let unknown: HashSet<&String> = s.keys().filter(|k| !ack.contains_key(*k)).collect();
    duplicates += metric(&api, "dozor_messages_duplicate_total").await;
    rejected += metric(&api, "dozor_messages_rejected_total").await;
    let acked_total: u64 = ack.values().sum();
    eprintln!(
        "dozor-loadgen bridge: end: {acked_total} messages acknowledged by the edges, {} stored; lost (acknowledged, never stored) {lost} on {lost_hosts} hosts; stored without an acknowledgement reaching the agent {extra}; duplicates counted by the collectors {duplicates}; rejected {rejected}; hosts stored but not in the fleet {}",
        s.values().sum::<u64>(),
        unknown.len()
    );
    out.push(format!(
        "acked={acked_total} lost={lost} unacked_stored={extra} duplicates={duplicates} rejected={rejected} loadgen_cpu_s={:.1}",
        dozor_tests::self_cpu_secs()
    ));
    println!("dozor-loadgen-bridge {}", out.join(" "));
    if lost > 0 {
        failed.push(format!("{lost} acknowledged messages never stored"));
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_as_mosquitto_does() {
        // hashlib.pbkdf2_hmac('sha512', b'password', b'salt', n)
        assert_eq!(
            hex(&pbkdf2_sha512(b"password", b"salt", 1)),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
        assert!(
            hex(&pbkdf2_sha512(b"password", b"salt", 101))
                .starts_with("0899b1f8f12cd157a81fc4cc1f8f046f")
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abcd"), "YWJjZA==");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn edges_hold_whole_mo_and_secrets_are_per_host() {
        let spec = FleetSpec {
            hosts: 40,
            mo_count: 10,
            run_id: 7,
        };
        let f = Fleet::new(&spec);
        let mut edge_of_mo = HashMap::new();
        for (i, h) in f.hosts.iter().enumerate() {
            let e = edge_of(i, 10, 3);
            assert_eq!(*edge_of_mo.entry(h.mo.clone()).or_insert(e), e, "{}", h.mo);
        }
        assert_eq!(
            edge_of_mo.values().collect::<HashSet<_>>().len(),
            3,
            "every edge gets МО"
        );
        let s: HashSet<String> = f
            .hosts
            .iter()
            .map(|h| bench_secret(7, h).to_hex())
            .collect();
        assert_eq!(s.len(), 40);
        assert_eq!(
            bench_secret(7, &f.hosts[0]).to_hex(),
            bench_secret(7, &f.hosts[0]).to_hex()
        );
        assert_ne!(
            bench_secret(7, &f.hosts[0]).to_hex(),
            bench_secret(8, &f.hosts[0]).to_hex()
        );
    }
}
