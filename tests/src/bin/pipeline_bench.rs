//! `dozor-pipeline-bench`: the collector's ingest path without a broker, to measure what the
//! collector itself can take (see `bench/ingest.sh`, `docs/benchmarks.md`).
//!
//! The heartbeats of a simulated [`Fleet`] (the same as `dozor-loadgen` publishes) are
//! generated up front; then one task does what the collector's ingest task does for each —
//! `dozor_proto::decode`, an `Inbound::Msg` with its `Publish` — and feeds the real
//! `pipeline::run` (admission, deduplication, live state, batches) with the real SQLite store
//! on its own thread, in a temp dir, `synchronous=FULL`. The run ends when the pipeline has
//! taken every message and committed the last batch. With `--alerts` the alert service runs on its
//! own thread fed by the pipeline, as in the collector (its CPU counts); without, none. The
//! confirmations to agents are queued to an MQTT client that is never connected (serialized,
//! not sent). The last line of stdout is machine-readable:
//! `dozor-pipeline-bench messages=N accepted=N secs=S rate=R cpu_secs=C us_per_msg=U`.

// Shared with `dozor-loadgen`, which uses the parts this benchmark does not.
#[allow(dead_code)]
#[path = "loadgen/fleet.rs"]
mod fleet;

use anyhow::Context;
use clap::Parser;
use dozor_collector::identity::{Agent, Registry};
use dozor_collector::ingest::Inbound;
use dozor_collector::metrics::Metrics;
use dozor_collector::pipeline::{self, Pipeline, PipelineConfig};
use dozor_collector::roster::Roster;
use dozor_collector::state::{LiveState, Snapshot, StateConfig};
use dozor_collector::store::config::RawStore;
use dozor_collector::store::{SqliteStore, Store};
use dozor_proto::auth::{MacKey, Secret};
use dozor_tests::{self_cpu_secs, unix_ms as now_ms};
use fleet::{Fleet, FleetSpec};
use rumqttc::{AsyncClient, MqttOptions, Publish, QoS};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The collector's allocator (see `collector/src/main.rs`), so that the figures match.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "dozor-pipeline-bench",
    about = "Times the collector's ingest pipeline and store without a broker"
)]
struct Args {
    /// Simulated hosts.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// МО the hosts are spread over.
    #[arg(long, default_value_t = 100)]
    mo_count: usize,
    /// Heartbeats in total.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Runtime worker threads (the collector uses one per core).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where the store goes (a temp dir inside it); default: the system temp dir.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Run the alert service on its own thread, fed by the pipeline as in the collector.
    #[arg(long)]
    alerts: bool,
    /// Enrolled mode: every host gets an identity, every heartbeat is signed and verified at
    /// ingest (`authenticate_decode` with the registry), every ack is signed.
    #[arg(long)]
    signed: bool,
    /// `store.journal_apply_ms`: the store applies its journal this long after the oldest
    /// unapplied batch (default: the collector's).
    #[arg(long)]
    journal_apply_ms: Option<u64>,
    /// `store.journal_apply_batches`: … or once this many batches wait.
    #[arg(long)]
    journal_apply_batches: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dozor_tests::block_on_threads(args.threads, run(args)).context("starting the runtime")?
}

async fn run(args: Args) -> anyhow::Result<()> {
    let spec = FleetSpec {
        hosts: args.hosts.max(1),
        mo_count: args.mo_count.max(1),
        run_id: now_ms() as u64 / 1000,
    };
    let mut fleet = Fleet::new(&spec);
    fleet
        .self_check(now_ms())
        .map_err(anyhow::Error::msg)
        .context("generated heartbeats")?;
    let n = fleet.hosts.len();
    let ts = now_ms();
    let mut registry = Registry::default();
    let keys: Vec<MacKey> = fleet
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let secret = Secret(b);
            registry.insert(Agent::new(&h.mo, &h.host, &secret));
            secret.mac_key()
        })
        .collect();
    let samples: Vec<(String, bytes::Bytes)> = (0..args.messages as usize)
        .map(|i| {
            let h = &mut fleet.hosts[i % n];
            let mut buf = Vec::new();
            h.heartbeat_json(ts, &mut buf);
            if args.signed {
                buf = dozor_proto::auth::sign(&keys[i % n], &h.hb_topic, &buf);
            }
            (h.hb_topic.clone(), bytes::Bytes::from(buf))
        })
        .collect();
    let (_reg_tx, reg_rx) = watch::channel(Arc::new(registry));
    let reg_rx = args.signed.then_some(reg_rx);
    let bytes: usize = samples.iter().map(|(_, p)| p.len()).sum();

    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("temp dir")?;
    let roster = Arc::new(Roster::default());
    let mut raw = RawStore::default();
    if let Some(v) = args.journal_apply_ms {
        raw.journal_apply_ms = v;
    }
    if let Some(v) = args.journal_apply_batches {
        raw.journal_apply_batches = v;
    }
    let store_cfg = raw.validate().context("store settings")?;
    let store = SqliteStore::open(&tmp.path().join("dozor.db"), &store_cfg, roster.clone())
        .context("opening the store")?;
    let metrics = Arc::new(Metrics::default());
    let state = LiveState::new(StateConfig {
        max_hosts: 200_000,
        max_hosts_per_mo: 5_000,
        lost_after_intervals: 3,
        max_msgs_per_min: u32::MAX,
    });
    let pcfg = PipelineConfig {
        acks_after_commit: false,
        ..PipelineConfig::default()
    };
    let p = Pipeline::new(pcfg, state, Vec::new(), roster, metrics.clone())
        .with_registry(reg_rx.clone());
    // Never connected: the `ack` publishes are serialized and queued, as far as they fit.
    let (client, _eventloop) = AsyncClient::new(MqttOptions::new("bench", "127.0.0.1", 1), 200_000);
    let (tx, rx) = mpsc::channel(16_384);
    let (snap_tx, _snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let cancel = CancellationToken::new();

    eprintln!(
        "dozor-pipeline-bench: {} heartbeats (avg {} bytes) of {} hosts in {} МО, store in {}",
        samples.len(),
        bytes / samples.len().max(1),
        spec.hosts,
        spec.mo_count,
        tmp.path().display()
    );
    let (alerts, alert_thread) = if args.alerts {
        let (tx, thread) =
            dozor_collector::spawn_alerts_for_bench(tmp.path(), Arc::new(Roster::default()))?;
        (Some(tx), Some(thread))
    } else {
        (None, None)
    };
    let cpu0 = self_cpu_secs();
    let start = Instant::now();
    let pipeline_task = tokio::spawn(pipeline::run(
        p,
        Box::new(store) as Box<dyn Store>,
        client,
        rx,
        snap_tx,
        alerts,
        cancel.clone(),
    ));
    // The ingest task's share: decode and hand over, in order.
    let feeder = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let limits = dozor_proto::Limits::DEFAULT;
            let _ = tx.send(Inbound::Connected).await;
            for (topic, payload) in samples {
                metrics.received();
                let reg = reg_rx.as_ref().map(|r| r.borrow().clone());
                let decoded = dozor_collector::ingest::authenticate_decode(
                    &topic,
                    &payload,
                    reg.as_deref(),
                    &limits,
                );
                let mut publish = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
                publish.pkid = 1;
                let msg = Inbound::Msg {
                    publish,
                    // The first connection (`Inbound::Connected` above).
                    generation: 1,
                    recv_ms: now_ms(),
                    decoded,
                    held: Default::default(),
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = metrics.accepted_total() + metrics.duplicates_total();
        if done >= args.messages || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let taken = start.elapsed().as_secs_f64();
    // Stop: the pipeline commits its last batch and joins the store thread.
    cancel.cancel();
    feeder.await.context("feeder")?;
    pipeline_task.await.context("pipeline")?;
    if let Some(t) = alert_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = self_cpu_secs() - cpu0;
    let accepted = metrics.accepted_total();
    let mut text = String::new();
    metrics.render(&mut text);
    let rejected: u64 = text
        .lines()
        .filter(|l| l.starts_with("dozor_messages_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let db = std::fs::metadata(tmp.path().join("dozor.db")).map_or(0, |m| m.len());
    eprintln!(
        "dozor-pipeline-bench: accepted {accepted} of {} (rejected {rejected}) in {secs:.3} s \
         ({taken:.3} s until the last was taken): {:.0} msgs/s; CPU {cpu:.2} s = {:.2} µs per \
         message ({:.0} % of one core); store {:.1} MB",
        args.messages,
        accepted as f64 / secs.max(1e-9),
        cpu * 1e6 / accepted.max(1) as f64,
        cpu / secs.max(1e-9) * 100.0,
        db as f64 / 1e6
    );
    println!(
        "dozor-pipeline-bench alerts={} signed={} messages={} accepted={accepted} secs={secs:.3} rate={:.0} cpu_secs={cpu:.2} us_per_msg={:.2}",
        args.alerts,
        args.signed,
        args.messages,
        accepted as f64 / secs.max(1e-9),
        cpu * 1e6 / accepted.max(1) as f64
    );
    anyhow::ensure!(
        accepted == args.messages,
        "only {accepted} of {} accepted",
        args.messages
    );
    Ok(())
}
