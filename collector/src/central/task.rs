//! The task that delivers the central probe configuration: hands every agent the current
//! version as a retained `cfg` (paced, never awaiting the MQTT client), re-sends everything
//! after a broker reconnect, and reloads `[probes]` when the configuration file changes (checked
//! every `probes.watch_secs`, or at once on SIGHUP). A file that does not validate is refused
//! with the field named, and the targets in force stay.

use super::config::ProbesConfig;
use super::{Outbox, ProbeSet, Versioned, message};
use crate::clock::now_ms;
use crate::config::RawConfig;
use crate::identity::Registry;
use crate::metrics::{Families, Metrics};
use crate::state::Snapshot;
use rumqttc::{AsyncClient, QoS};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// File in the data dir holding the version in force.
const VERSION_FILE: &str = "central-probes.json";
/// Publishing ticks per second.
const TICKS_PER_SEC: u32 = 10;

/// Where the agents to configure come from.
pub(crate) enum Hosts {
    /// Enrolled mode: every active identity (known before it ever connects), and its key.
    Registry(watch::Receiver<Arc<Registry>>),
    /// Open mode: the hosts the collector has heard from; messages go unsigned.
    Seen(watch::Receiver<Arc<Snapshot>>),
}

/// Counters on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct CentralStats {
    sent: AtomicU64,
    queue_full: AtomicU64,
    reload_applied: AtomicU64,
    reload_unchanged: AtomicU64,
    reload_invalid: AtomicU64,
    version: AtomicU64,
    region_targets: AtomicU64,
}

impl CentralStats {
    pub(crate) fn write_metrics(&self, out: &mut String) {
        let mut f = Families::default();
        f.counter(
            "dozor_cfg_sent_total",
            "Central probe configurations handed to the broker (one per agent and version).",
        )
        .sample(&[], self.sent.load(Relaxed));
        f.counter(
            "dozor_cfg_send_deferred_total",
            "cfg messages put off because the MQTT client's queue was full (retried).",
        )
        .sample(&[], self.queue_full.load(Relaxed));
        f.counter(
            "dozor_cfg_reloads_total",
            "Checks of a changed configuration file for [probes], by outcome.",
        )
        .sample(&[("outcome", "applied")], self.reload_applied.load(Relaxed))
        .sample(
            &[("outcome", "unchanged")],
            self.reload_unchanged.load(Relaxed),
        )
        .sample(&[("outcome", "invalid")], self.reload_invalid.load(Relaxed));
        f.gauge(
            "dozor_cfg_version",
            "Version of the central probe configuration in force.",
        )
        .sample(&[], self.version.load(Relaxed));
        f.gauge(
            "dozor_cfg_region_targets",
            "Targets of the region's list in the central probe configuration.",
        )
        .sample(&[], self.region_targets.load(Relaxed));
        f.write(out);
    }
}

fn load_version(dir: &Path) -> Option<Versioned> {
    let bytes = std::fs::read(dir.join(VERSION_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn store_version(dir: &Path, v: &Versioned) -> std::io::Result<()> {
    let tmp = dir.join(format!("{VERSION_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(v).unwrap_or_default())?;
    std::fs::rename(tmp, dir.join(VERSION_FILE))
}

/// Re-reads `[probes]` from the configuration file and the environment, as at start.
fn reload(path: &Path) -> Result<ProbesConfig, crate::config::ConfigError> {
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    RawConfig::load_env(Some(path), vars)?.probes.validate()
}

/// The version in force for `set`, persisted when it changed.
async fn settle(dir: &Path, prev: Option<&Versioned>, set: &ProbeSet) -> Versioned {
    let v = Versioned::next(prev, &set.digest(), now_ms());
    if prev != Some(&v) {
        let dir = dir.to_path_buf();
        let keep = v.clone();
        match tokio::task::spawn_blocking(move || store_version(&dir, &keep)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot keep the probe configuration version"),
            Err(e) => tracing::warn!(error = %e, "probe configuration version task failed"),
        }
    }
    v
}

/// Runs until cancelled. `config_path`: the file to watch (none: `[probes]` is fixed).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    mut cfg: ProbesConfig,
    config_path: Option<PathBuf>,
    data_dir: PathBuf,
    client: AsyncClient,
    mut hosts: Hosts,
    metrics: Arc<Metrics>,
    stats: Arc<CentralStats>,
    cancel: CancellationToken,
) {
    let prev = {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || load_version(&dir))
            .await
            .ok()
            .flatten()
    };
    let mut current = settle(&data_dir, prev.as_ref(), &cfg.set).await;
    stats.version.store(current.version, Relaxed);
    stats
        .region_targets
        .store(cfg.set.region.len() as u64, Relaxed);
    tracing::info!(
        version = current.version,
        region_targets = cfg.set.region.len(),
        mo_overrides = cfg.set.mo.len(),
        "central probe configuration in force"
    );
    let mut file = match &config_path {
        Some(p) => tokio::fs::read(p).await.ok(),
        None => None,
    };
    let mut outbox = Outbox::default();
    let mut dirty = true;
    let mut was_connected = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / TICKS_PER_SEC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = tokio::time::interval(cfg.watch);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = Hangup::new();
    loop {
        let check = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => false,
            _ = watch.tick() => true,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: checking the configuration file for [probes]");
                true
            }
        };
        if check && let Some(path) = &config_path {
            let now = tokio::fs::read(path).await.ok();
            if now.is_some() && now != file {
                file = now;
                let p = path.clone();
                match tokio::task::spawn_blocking(move || reload(&p)).await {
                    Ok(Ok(new)) => {
                        let v = settle(&data_dir, Some(&current), &new.set).await;
                        if v == current {
                            stats.reload_unchanged.fetch_add(1, Relaxed);
                        } else {
                            stats.reload_applied.fetch_add(1, Relaxed);
                            tracing::info!(
                                version = v.version,
                                region_targets = new.set.region.len(),
                                mo_overrides = new.set.mo.len(),
                                "probe targets changed; sending them to every agent"
                            );
                            current = v;
                            dirty = true;
                        }
                        if new.watch != cfg.watch {
                            watch = tokio::time::interval(new.watch);
                            watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            watch.reset();
                        }
                        cfg = new;
                        stats.version.store(current.version, Relaxed);
                        stats
                            .region_targets
                            .store(cfg.set.region.len() as u64, Relaxed);
                    }
                    Ok(Err(e)) => {
                        stats.reload_invalid.fetch_add(1, Relaxed);
                        tracing::error!(
                            error = %e,
                            "the configuration file's [probes] is invalid; the targets in force stay"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "probe configuration reload task failed"),
                }
            }
            continue;
        }
        let connected = metrics.readiness_inputs().0;
        if connected && !was_connected {
            // A new connection may be to a broker that lost its retained messages.
            outbox.forget_all();
            dirty = true;
        }
        was_connected = connected;
        if !connected {
            continue;
        }
        match &mut hosts {
            Hosts::Registry(r) => dirty |= r.has_changed().unwrap_or(false),
            Hosts::Seen(s) => dirty |= s.has_changed().unwrap_or(false),
        }
        if !dirty {
            continue;
        }
        let budget = (cfg.send_rate_per_sec / TICKS_PER_SEC).max(1) as usize;
        let now = now_ms();
        let (sent, more) = match &mut hosts {
            Hosts::Registry(r) => {
                let reg = r.borrow_and_update().clone();
                let due = outbox.due(
                    reg.agents()
                        .filter(|a| !a.revoked)
                        .map(|a| (a.mo.as_str(), a.host.as_str())),
                    current.version,
                    budget,
                );
                send(
                    &client,
                    &cfg.set,
                    &mut outbox,
                    &current,
                    now,
                    &due,
                    |mo, host| reg.key_for(mo, host).ok().cloned(),
                    &stats,
                )
            }
            Hosts::Seen(s) => {
                let snap = s.borrow_and_update().clone();
                // The live state never forgets a host, and only its hosts are handed a
                // version here: as many handed as there are hosts means all were.
                if outbox.sent_count(current.version) >= snap.hosts.len() {
                    dirty = false;
                    continue;
                }
                let due = outbox.due(
                    snap.hosts
                        .iter()
                        .map(|h| (h.mo.as_str(), h.host_id.as_str())),
                    current.version,
                    budget,
                );
                send(
                    &client,
                    &cfg.set,
                    &mut outbox,
                    &current,
                    now,
                    &due,
                    |_, _| None,
                    &stats,
                )
            }
        };
        // All handed over (or the queue is full: try again next tick).
        dirty = more || sent == budget;
    }
}

/// Publishes `due`; returns how many went out and whether the client's queue was full.
#[allow(clippy::too_many_arguments)]
fn send(
    client: &AsyncClient,
    set: &ProbeSet,
    outbox: &mut Outbox,
    current: &Versioned,
    now: i64,
    due: &[(String, String)],
    key: impl Fn(&str, &str) -> Option<dozor_proto::auth::MacKey>,
    stats: &CentralStats,
) -> (usize, bool) {
    let mut sent = 0;
    for (mo, host) in due {
        let k = key(mo, host);
        let (t, body) = message(mo, host, current.version, now, set.for_mo(mo), k.as_ref());
        // QoS 0 retained, never awaited, like `ack`: a QoS 1 publish would share rumqttc's
        // outgoing window with the PUBACKs of received messages (the deadlock in
        // docs/benchmarks.md). The broker keeps it retained; a lost one is sent again after
        // the next reconnect, and the agent applies a version only once.
        if client.try_publish(t, QoS::AtMostOnce, true, body).is_err() {
            stats.queue_full.fetch_add(1, Relaxed);
            return (sent, true);
        }
        outbox.mark_sent(mo, host, current.version);
        stats.sent.fetch_add(1, Relaxed);
        sent += 1;
    }
    (sent, false)
}

/// SIGHUP on Unix; never fires elsewhere.
struct Hangup {
    #[cfg(unix)]
    sig: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let sig = signal(SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
                .ok();
            Hangup { sig }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.sig {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}
