//! dozor agent: reports uptime, resources and МИС reachability of a clinic host over MQTT,
//! with a durable spool so that nothing it has measured is lost to an outage or a power cut.
//!
//! Tasks (see `docs/agent.md`): the sampler and the prober produce; the publisher owns the
//! spool and numbers, commits, sends and replays; the MQTT driver polls rumqttc's event loop.
//! **The agent never blocks collection on the network**: producers only hand messages to the
//! publisher, which commits them to disk whether or not the broker is reachable.
//!
//! Before any task starts, [`enroll`] settles who the agent is: the identity in
//! `identity.json`, or a new one obtained with the enrollment token (retried until it succeeds
//! or a stop is requested), or, with neither, the configured ids, unsigned. [`tls`] builds the
//! one TLS client configuration shared by `mqtts://` and enrollment.

pub mod alive;
pub mod central;
pub mod collect;
pub mod config;
pub mod enroll;
pub mod os;
pub mod probe;
pub mod publish;
pub mod spool;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::collect::{CollectError, Collector, Sample};
use crate::config::Config;
use crate::enroll::{Credentials, EnrollError, Obtained};
use crate::probe::{ProbeError, Prober};
use crate::publish::{Announce, Identity, Input, Publisher};
use crate::spool::{Spool, SpoolError};

pub use crate::config::{Cli, ConfigError};

/// Why the agent could not start. Nothing at run time is fatal: network and disk trouble is
/// logged and retried.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spool could not be opened (permissions, another agent holds it, disk failure).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// System information is unavailable.
    #[error(transparent)]
    Collect(#[from] CollectError),
    /// The prober could not be set up (CA file).
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The identity file is unusable, or enrollment could not be attempted or kept.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// Not enrolled and no МО configured (validation normally prevents this).
    #[error("mo: not configured and not enrolled")]
    NoMo,
    /// `mqtts://` without a TLS client (validation normally prevents this).
    #[error("mqtt.url: mqtts:// needs a TLS configuration (tls.ca_file)")]
    NoTls,
    /// A start-up step running on the blocking pool panicked.
    #[error("start-up task failed: {0}")]
    Task(String),
}

/// Wall-clock time, Unix milliseconds (0 if the clock is before 1970).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Longest a resource sample may take before the heartbeat goes out with the previous one.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of the producer → publisher channel.
const INPUT_QUEUE: usize = 32;
/// Capacity of the driver → publisher channel.
const NET_QUEUE: usize = 64;
/// Capacity of rumqttc's request queue; a full queue leaves messages to the replayer.
const MQTT_QUEUE: usize = 64;
/// Capacity of the publisher → central configuration channel (a flood of `cfg` messages is
/// dropped beyond it; the retained one comes again on the next reconnect).
const CFG_QUEUE: usize = 4;
/// How long the tasks get to stop after the publisher is done.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs the agent until `shutdown` is cancelled. Returns after the `offline` state has been
/// confirmed by the broker (or its timeout) and every task has stopped.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let backoff = publish::mqtt::Backoff::new(enroll::BACKOFF_BASE, enroll::BACKOFF_CAP);
    let creds = match enroll::obtain(&config, backoff, &shutdown).await? {
        Obtained::Enrolled(c) => Some(c),
        Obtained::NotEnrolled => None,
        Obtained::Stopped => {
            tracing::info!("stopped before enrollment completed");
            return Ok(());
        }
    };
    let (mo, host) = wire_identity(&config, creds.as_ref())?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        mo = %mo,
        host = %host,
        enrolled = creds.is_some(),
        tls = config.mqtt.tls,
        broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
        interval_secs = config.interval_secs,
        probes = config.probes.len(),
        data_dir = %config.data_dir.display(),
        "starting dozor-agent"
    );

    let dir = config.data_dir.clone();
    let spool_cfg = config.spool.clone();
    let spool =
        blocking(move || Spool::open(&dir, &spool_cfg, Instant::now(), wall_ms())).await??;
    let stats = spool.stats();
    tracing::info!(
        inst = spool.inst(),
        last_seq = spool.index().last_seq(),
        pending = stats.pending,
        bytes = stats.bytes,
        dropped = stats.dropped,
        "spool opened"
    );
    let id = Identity {
        mo,
        host,
        inst: spool.inst().to_owned(),
        mac: creds.as_ref().map(|c| c.secret.mac_key()),
    };
    let last_seq = Arc::new(AtomicU64::new(spool.index().last_seq()));
    let spool = Arc::new(Mutex::new(spool));

    let dir = config.data_dir.clone();
    let (collector, first) = blocking(move || {
        Collector::new(&dir).map(|mut c| {
            let s = c.sample();
            (c, s)
        })
    })
    .await??;
    // The central probe configuration applied before (central.json), with the local targets.
    let dir = config.data_dir.clone();
    let timeout_ms = config.probe_timeout_ms;
    let (central_version, central_targets) =
        blocking(move || central::load_applied(&dir, timeout_ms)).await?;
    let probe_targets = central::effective(&config.probes, &central_targets);
    let prober = Prober::new(probe_targets.clone(), config.probe_ca_file.as_deref())?;
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(probe_targets);
    let (cfg_tx, cfg_rx) = mpsc::channel(CFG_QUEUE);
    let central = central::Central::new(
        id.topic(dozor_proto::Kind::Cfg),
        id.mac.clone(),
        config.probe_timeout_ms,
        central_version,
    );

    let announce = Announce {
        role: config.role,
        site: config.site.clone(),
        interval_secs: config.interval_secs,
        keepalive_secs: config.mqtt.keepalive_secs,
        targets: prober.target_infos(),
    };
    let login = match &creds {
        Some(c) => {
            if config.mqtt.username.is_some() {
                tracing::warn!("enrolled: mqtt.username/password are ignored");
            }
            Some((
                dozor_proto::username(&c.mo, &c.host),
                c.secret.mqtt_password(),
            ))
        }
        None => config
            .mqtt
            .username
            .clone()
            .map(|u| (u, config.mqtt.password.clone().unwrap_or_default())),
    };
    // Never a plain fallback for mqtts:// (validation builds the client; this is the guard).
    let tls = match (config.mqtt.tls, &config.tls) {
        (true, Some(t)) => Some(t.clone()),
        (true, None) => return Err(RunError::NoTls),
        (false, _) => None,
    };
    let (client, eventloop) = rumqttc::AsyncClient::new(
        publish::mqtt::options(&config.mqtt, &id.client_id(), login, tls),
        MQTT_QUEUE,
    );
    let (net_tx, net_rx) = mpsc::channel(NET_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(INPUT_QUEUE);

    let tracker = TaskTracker::new();
    let stop_net = CancellationToken::new();
    let will_id = id.clone();
    let will_seq = last_seq.clone();
    // The `seq` the latest will holds, announced in the birth of its connection.
    let will_made = Arc::new(AtomicU64::new(last_seq.load(Ordering::Relaxed)));
    let made = will_made.clone();
    tracker.spawn(publish::mqtt::drive(
        eventloop,
        net_tx,
        stop_net.clone(),
        move || {
            let seq = will_seq.load(Ordering::Relaxed);
            made.store(seq, Ordering::Relaxed);
            will_id.last_will(seq)
        },
    ));
    let inventory = first.inventory.clone();
    tracker.spawn(sample_loop(
        Arc::new(Mutex::new(collector)),
        first,
        in_tx.clone(),
        config.interval(),
        shutdown.clone(),
    ));
    tracker.spawn(central::run(
        central,
        config.probes.clone(),
        cfg_rx,
        targets_tx,
        config.data_dir.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(probe_loop(
        prober,
        targets_rx,
        in_tx,
        config.probe_interval,
        shutdown.clone(),
    ));

    let stamp = alive::Stamp::new(&config.data_dir);
    let prev_end = stamp.read();
    if let Some(p) = prev_end {
        tracing::info!(
            at_ms = p.at,
            shutdown = p.shutdown,
            "previous run's end (sent in every birth)"
        );
    }
    Publisher::new(id, announce, client, spool, last_seq, inventory)
        .with_cfg(cfg_tx)
        .with_alive(stamp, prev_end)
        .with_will_seq(will_made)
        .run(in_rx, net_rx, shutdown.clone())
        .await;

    shutdown.cancel();
    stop_net.cancel();
    tracker.close();
    if timeout(STOP_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The МО and host id on the wire: the identity's when enrolled (warning once if the
/// configuration says otherwise), else the configuration's, with a loud warning.
fn wire_identity(
    config: &Config,
    creds: Option<&Credentials>,
) -> Result<(String, String), RunError> {
    match creds {
        Some(c) => {
            if config.mo.as_ref().is_some_and(|m| *m != c.mo) {
                tracing::warn!(
                    configured = config.mo.as_deref().unwrap_or_default(),
                    enrolled = %c.mo,
                    "mo differs from the enrolled identity; using the identity's"
                );
            }
            if config.host_id_configured && config.host_id != c.host {
                tracing::warn!(
                    configured = %config.host_id,
                    enrolled = %c.host,
                    "host_id differs from the enrolled identity; using the identity's"
                );
            }
            Ok((c.mo.clone(), c.host.clone()))
        }
        None => {
            tracing::warn!(
                "NOT ENROLLED: messages are unsigned; a secure collector refuses them \
                 (set enroll.token or enroll.token_file)"
            );
            let mo = config.mo.clone().ok_or(RunError::NoMo)?;
            Ok((mo, config.host_id.clone()))
        }
    }
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, RunError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RunError::Task(e.to_string()))
}

/// Samples resources every `interval` (the first after at most a second) and hands each
/// sample to the publisher. Sampling runs on the blocking pool under a timeout: a hung
/// `statvfs` delays nothing, the heartbeat then goes out with the previous figures.
async fn sample_loop(
    collector: Arc<Mutex<Collector>>,
    first: Sample,
    tx: mpsc::Sender<Input>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut last = first;
    let start = Instant::now() + interval.min(Duration::from_secs(1));
    let mut tick = interval_at(start, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = collector.clone();
        let fresh = timeout(
            SAMPLE_TIMEOUT,
            tokio::task::spawn_blocking(move || match c.try_lock() {
                Ok(mut g) => Some(g.sample()),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner().sample()),
                // The previous sample is still stuck: do not pile up threads behind it.
                Err(TryLockError::WouldBlock) => None,
            }),
        )
        .await;
        let sample = match fresh {
            Ok(Ok(Some(s))) => {
                last = s.clone();
                s
            }
            _ => {
                tracing::warn!("resource sampling is stalled; heartbeat with the last figures");
                let mut s = last.clone();
                let now_secs = wall_ms() / 1000;
                s.uptime_secs = u64::try_from(now_secs - s.inventory.boot_time).unwrap_or(0);
                s
            }
        };
        let input = Input::Sample {
            ts_ms: wall_ms(),
            sample: Box::new(sample),
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = tx.send(input) => if r.is_err() { return },
        }
    }
}

/// Runs a probe round every `interval` (the first at once); a slow round delays the next one,
/// never a heartbeat. A new target list (central configuration) is probed at once.
async fn probe_loop(
    mut prober: Prober,
    mut targets: tokio::sync::watch::Receiver<Vec<probe::Target>>,
    tx: mpsc::Sender<Input>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // False once the central task is gone (stopping): keep probing what we have.
    let mut central = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = targets.changed(), if central => {
                if changed.is_err() {
                    central = false;
                    continue;
                }
                prober.set_targets(targets.borrow_and_update().clone());
                tick.reset_immediately();
                continue;
            }
            _ = tick.tick(), if !prober.is_empty() => {}
        }
        let ts_ms = wall_ms();
        let probe = tokio::select! {
            _ = stop.cancelled() => return,
            p = prober.round() => p,
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = tx.send(Input::Probe { ts_ms, probe }) => if r.is_err() { return },
        }
    }
}
