//! dozor collector: receives agent messages over MQTT, keeps live state, stores history,
//! derives availability and indicators, raises alerts and serves the HTTP API.
//!
//! `run` wires the tasks: ingest (MQTT event loop) → pipeline (live state, dedupe, batches)
//! → store thread; the HTTP API reads snapshots. Shutdown order: stop ingest, flush the
//! pipeline and the store, then stop HTTP.

mod alerts;
mod api;
mod api_error;
pub mod auth;
mod backoff;
mod central;
pub mod clock;
pub mod config;
mod config_error;
pub mod demo;
mod fsperm;
mod health;
mod http_server;
/// The roster and the I/O-free maths live in their own crate (`availability/`).
pub use dozor_availability as availability;
/// Live state, delivery tracking and pipeline records live in their own crate (`live/`).
pub use dozor_live::{delivery, record, state};
pub mod identity;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
mod planned;
pub mod report;
pub use dozor_availability::roster;
pub mod roster_file;
pub mod store;
mod tls;
mod ui;
/// The web UI's rendering for the benchmark (feature `sim`).
#[cfg(feature = "sim")]
pub use ui::bench as ui_bench;

use anyhow::Context;
use config::{Config, MqttMode};
use metrics::Metrics;
use pipeline::{Pipeline, PipelineConfig};
use roster::Roster;
use state::{LiveState, Snapshot, StateConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Addresses the collector actually listens on (ports may have been 0 in the config).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    /// The MQTT broker the collector uses (embedded or external).
    pub mqtt: (std::net::IpAddr, u16),
}

/// Opens the embedded SQLite history store in the data dir.
fn open_store(cfg: &Config, roster: Arc<Roster>) -> anyhow::Result<Box<dyn store::Store>> {
    let path = store::db_path(&cfg.data_dir);
    let s = store::SqliteStore::open(&path, &cfg.store, roster)
        .with_context(|| format!("opening the store {}", path.display()))?;
    Ok(Box::new(s))
}

/// Runs the collector until `shutdown` is cancelled. `ready` receives the bound addresses once
/// everything listens.
pub async fn run(
    cfg: Config,
    roster: Roster,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> anyhow::Result<()> {
    // Before anything is served: reports by this process know a crashed earlier run from this
    // one (`store::load::outages`). The pipeline's own run starts later, so it counts as ours.
    store::load::set_this_run_start(clock::now_ms());
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data_dir {}", cfg.data_dir.display()))?;
    let roster = Arc::new(roster);
    let metrics = Arc::new(Metrics::default());
    restrict_dir(&cfg.data_dir);
    let mut store = open_store(&cfg, roster.clone())?;
    let marks = store.load_delivery().context("loading delivery marks")?;
    let ids =
        identity::service::Identities::open(&cfg.data_dir, cfg.security).context("identity.db")?;
    if cfg.security == identity::SecurityMode::Open {
        tracing::warn!(
            "security.mode = \"open\": ANY client may publish as ANY host and МО, messages are not \
             authenticated, acks are unsigned. For labs only; never run a region like this."
        );
    }
    let tasks = TaskTracker::new();
    let ids_cancel = CancellationToken::new();
    tasks.spawn(
        ids.clone()
            .watch(Duration::from_secs(1), ids_cancel.clone()),
    );

    // The collector's own client connects to the broker itself; agents connect to `public`.
    let (mqtt_host, mqtt_port, public, gate_stats) = match &cfg.mqtt.mode {
        MqttMode::Embedded {
            listen,
            tls,
            max_connections,
            backlog_bytes,
        } => {
            let e = ingest::broker::start_secured(
                *listen,
                tls.as_ref(),
                *max_connections,
                *backlog_bytes,
                cfg.mqtt.replay_session,
                metrics.clone(),
                ids.clone(),
                &tasks,
                ids_cancel.clone(),
            )
            .await?;
            (
                e.internal.ip().to_string(),
                e.internal.port(),
                Some(e.public),
                Some(e.stats),
            )
        }
        MqttMode::External { host, port } => (host.clone(), *port, None, None),
    };
    let mqtt_ip: std::net::IpAddr = tokio::net::lookup_host((mqtt_host.as_str(), mqtt_port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    // What agents are told: the gateway of the embedded broker, or the external broker.
    let agents_mqtt = match public {
        Some(p) if p.ip().is_unspecified() => (std::net::IpAddr::from([127, 0, 0, 1]), p.port()),
        Some(p) => (p.ip(), p.port()),
        None => (mqtt_ip, mqtt_port),
    };

    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("http.listen {}", cfg.http_listen))?;
    let http_addr = http.local_addr()?;

    let ingest_cancel = CancellationToken::new();
    let live = ingest::Session::Live;
    let (client, eventloop) = ingest::client(&cfg.mqtt, live, &mqtt_host, mqtt_port);
    let (in_tx, in_rx) = ingest::queue(&cfg.mqtt);
    metrics.set_ingest_queue(in_tx.probe());
    // With Mosquitto's dynamic security, the collector gives itself its role before it
    // subscribes, then keeps the broker's clients in step with the identities.
    let provision = match (&cfg.mqtt.mode, cfg.mqtt.dynsec, &cfg.mqtt.credentials) {
        (MqttMode::External { .. }, true, Some((user, _))) => {
            tasks.spawn(identity::dynsec::run(
                client.clone(),
                identity::dynsec::listing_options(&cfg.mqtt, &mqtt_host, mqtt_port),
                ids.receiver(),
                metrics.clone(),
                ids_cancel.clone(),
            ));
            Some(serde_json::to_vec(&identity::dynsec::collector_commands(
                user,
            ))?)
        }
        _ => None,
    };
    let outbox = ingest::Outbox::default();
    tasks.spawn(ingest::run(
        live,
        live.filters(&cfg.mqtt),
        client.clone(),
        eventloop,
        in_tx,
        metrics.clone(),
        ids.subscribe(),
        provision,
        outbox.clone(),
        ingest::subscription_qos(&cfg.mqtt),
        ingest_cancel.clone(),
    ));
    // Replayed backlog on a session and queue of its own, taken only when no live message
    // waits (docs/reliability.md, "Live and replayed traffic").
    let replay_rx = cfg.mqtt.replay_session.then(|| {
        let replay = ingest::Session::Replay;
        let (replay_client, replay_loop) = ingest::client(&cfg.mqtt, replay, &mqtt_host, mqtt_port);
        let (replay_tx, replay_rx) = ingest::queue(&cfg.mqtt);
        metrics.set_replay_queue(replay_tx.probe());
        tasks.spawn(ingest::run(
            replay,
            replay.filters(&cfg.mqtt),
            replay_client,
            replay_loop,
            replay_tx,
            metrics.clone(),
            ids.subscribe(),
            None,
            outbox.clone(),
            ingest::subscription_qos(&cfg.mqtt),
            ingest_cancel.clone(),
        ));
        replay_rx
    });

    let state = LiveState::new(StateConfig {
        max_hosts: cfg.limits.max_hosts,
        max_hosts_per_mo: cfg.limits.max_hosts_per_mo,
        lost_after_intervals: cfg.limits.lost_after_intervals,
        max_msgs_per_min: cfg.limits.max_msgs_per_host_per_min,
    });
    let pcfg = PipelineConfig {
        roster_strict: cfg.roster_strict,
        max_future_ms: cfg.limits.max_future.as_millis() as i64,
        max_age_ms: cfg.limits.max_age.as_millis() as i64,
        ack_interval: cfg.mqtt.ack_interval,
        ack_host_gap: cfg.mqtt.ack_host_gap,
        max_insts: cfg.limits.max_hosts.saturating_mul(2),
        acks_after_commit: ingest::acks_after_commit(&cfg.mqtt),
        judge_late_wills: cfg.security != identity::SecurityMode::Open,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::new(pcfg, state, marks, roster.clone(), metrics.clone())
        .with_registry(ids.subscribe());
    if cfg.mqtt.batched_writes {
        pipeline = pipeline.with_outbox(outbox);
    }
    let central_stats = Arc::new(central::CentralStats::default());
    let mut alerts = alerts::AlertService::new(cfg.alerts.clone(), &cfg.data_dir, roster.clone())
        .context("alerts")?;
    let planned = planned::PlannedState::open(
        store::db_path(&cfg.data_dir),
        cfg.planned_works.clone(),
        roster.clone(),
        clock::system_clock(),
    )
    .context("planned works")?;
    alerts.follow_planned(planned.subscribe());
    let alert_handle = alerts.handle();
    // Notifiers outlive the pipeline so that the last incident changes are still delivered.
    let notify_cancel = CancellationToken::new();
    alerts.spawn_notifiers(&tasks, notify_cancel.clone());
    // Alerts run on a thread of their own (blocking SQLite of incidents.db, evaluation over the
    // whole snapshot), fed by the pipeline over a bounded channel it never waits on.
    let (alert_tx, alert_thread) = alerts::task::spawn(alerts).context("alerts thread")?;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    // The central probe configuration: to every identity in enrolled mode (signed with its
    // key), to every host heard from in open mode (unsigned).
    let central_hosts = match ids.subscribe() {
        Some(reg) => central::Hosts::Registry(reg),
        None => central::Hosts::Seen(snap_rx.clone()),
    };
    tasks.spawn(central::run(
        cfg.probes.clone(),
        cfg.config_path.clone(),
        cfg.data_dir.clone(),
        client.clone(),
        central_hosts,
        metrics.clone(),
        central_stats.clone(),
        ids_cancel.clone(),
    ));
    let pipeline_done = CancellationToken::new();
    {
        let done = pipeline_done.clone();
        let client = client.clone();
        let cancel = ingest_cancel.clone();
        tasks.spawn(async move {
            pipeline::run(
                pipeline,
                store,
                client,
                ingest::Inlet::new(in_rx, replay_rx),
                snap_tx,
                Some(alert_tx),
                cancel,
            )
            .await;
            done.cancel();
        });
    }

    // The InfluxDB sink drains the store's durable outbox; it stops after the pipeline.
    let sink_cancel = CancellationToken::new();
    let sink_stats = cfg.store.influx.clone().map(|icfg| {
        let sink = store::InfluxSink::new(&store::db_path(&cfg.data_dir), icfg);
        let stats = sink.stats();
        tasks.spawn(sink.run(sink_cancel.clone()));
        stats
    });

    let http_stats = Arc::new(http_server::HttpStats::default());
    let failing_channels = {
        let h = alert_handle.clone();
        Arc::new(move || h.failing_channels())
    };
    if cfg.demo && !cfg.http_public_read {
        tracing::info!("demo: the status page and the API are readable without login");
    }
    let auth = auth::http::AuthState::open(
        &cfg.data_dir,
        auth::http::HttpAuthConfig {
            // The demo runs on a laptop for a look around: reading needs no login there.
            public_read: cfg.http_public_read || cfg.demo,
            allowed_hosts: cfg.http_allowed_hosts.clone(),
            https: cfg.http_tls.is_some(),
        },
        clock::system_clock(),
    )
    .context("auth.db")?;
    let api_state = api::ApiState {
        failing_channels,
        snapshot: snap_rx,
        metrics: metrics.clone(),
        roster: roster.clone(),
        extra_metrics: {
            let h = alert_handle.clone();
            let sink = sink_stats.clone();
            let ids = ids.clone();
            let http = http_stats.clone();
            let auth = auth.clone();
            let central = central_stats.clone();
            Arc::new(move |out: &mut String| {
                h.write_metrics(out);
                central.write_metrics(out);
                http.write_metrics(out);
                ids.write_metrics(out);
                auth.write_metrics(out);
                if let Some(g) = &gate_stats {
                    ingest::broker::write_metrics(g, out);
                }
                if let Some(s) = &sink {
                    write_sink_metrics(s, out);
                }
            })
        },
    };
    let trends = Arc::new(ui::trends::Trends::default());
    let ui_state = ui::UiState {
        snapshot: api_state.snapshot.clone(),
        roster: roster.clone(),
        incidents: {
            let h = alert_handle.clone();
            Arc::new(move || h.incidents())
        },
        db: store::db_path(&cfg.data_dir),
        store: Arc::new(cfg.store.clone()),
        trends: trends.clone(),
        shutdown: shutdown.clone(),
        clock: clock::system_clock(),
        planned: {
            let p = planned.clone();
            Arc::new(move || p.list())
        },
    };
    tasks.spawn(ui::trends::run(
        trends,
        api_state.snapshot.clone(),
        shutdown.clone(),
    ));
    let reports = report::http::ReportState::new(
        store::db_path(&cfg.data_dir),
        roster.clone(),
        cfg.store.clone(),
    );
    let app = api::router(api_state)
        .merge(ui::router(ui_state))
        .merge(alerts::router(alert_handle))
        .merge(report::http::router(reports))
        .merge(planned::router(planned.clone()))
        .merge(identity::http::router(ids.clone()))
        .merge(auth::http::router(auth.clone()));
    // 64 KiB is far above any JSON body the API takes (a silence, an enrollment). Unknown
    // routes and methods answer in the API's one error shape. Authentication wraps it all.
    let app = app
        .fallback(api_error::no_route)
        .method_not_allowed_fallback(api_error::no_method)
        .layer(axum::extract::DefaultBodyLimit::max(
            api_error::BODY_LIMIT_KIB * 1024,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::http::enforce,
        ));
    let http_stop = CancellationToken::new();
    {
        let stop = http_stop.clone();
        let limits = cfg.http_limits;
        let stats = http_stats.clone();
        match &cfg.http_tls {
            Some(files) => {
                let tls = tls::server_config(files).context("http.tls_cert_file")?;
                let listener = tls::TlsListener::new(
                    http,
                    tls,
                    limits.header_read_timeout,
                    limits.max_connections.min(512),
                )?;
                tasks.spawn(http_server::serve(listener, app, limits, stats, stop));
            }
            None => {
                tasks.spawn(http_server::serve(http, app, limits, stats, stop));
            }
        }
    }

    if cfg.demo {
        demo::spawn(
            &tasks,
            &roster,
            (mqtt_ip, mqtt_port),
            agents_mqtt,
            http_addr,
            &ids,
            &cfg.data_dir,
            shutdown.clone(),
        );
    }

    tracing::info!(http = %http_addr, mqtt = %format!("{}:{}", agents_mqtt.0, agents_mqtt.1), "dozor-collector running");
    if let Some(r) = ready {
        let _ = r.send(Bound {
            http: http_addr,
            mqtt: agents_mqtt,
        });
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping ingest, flushing the store");
    ingest_cancel.cancel();
    if tokio::time::timeout(Duration::from_secs(20), pipeline_done.cancelled())
        .await
        .is_err()
    {
        tracing::warn!("pipeline did not flush within 20 s");
    }
    // The pipeline has dropped its sender: the alert thread drains what it holds and ends, so
    // the notifiers still get the last changes.
    let alerts_done = tokio::task::spawn_blocking(move || alert_thread.join());
    if tokio::time::timeout(Duration::from_secs(5), alerts_done)
        .await
        .is_err()
    {
        tracing::warn!("alerts did not finish within 5 s");
    }
    http_stop.cancel();
    ids_cancel.cancel();
    notify_cancel.cancel();
    sink_cancel.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 5 s");
    }
    Ok(())
}

/// The data dir holds every identity's secret and the region's history: owner only.
fn restrict_dir(dir: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot restrict the data dir to its owner");
        }
    }
}

/// The alert service on its own thread, for the pipeline benchmark (feature `sim`): the same
/// `AlertService` and channel `run` wires, with the configuration's rules and no channels.
#[cfg(feature = "sim")]
pub fn spawn_alerts_for_bench(
    data_dir: &std::path::Path,
    roster: Arc<Roster>,
) -> anyhow::Result<(alerts::task::AlertSender, std::thread::JoinHandle<()>)> {
    let cfg = config::RawConfig::default().validate()?;
    let svc = alerts::AlertService::new(cfg.alerts, data_dir, roster).context("alerts")?;
    Ok(alerts::task::spawn(svc)?)
}

fn write_sink_metrics(s: &store::SinkStats, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut f = metrics::Families::default();
    f.counter(
        "dozor_influx_lines_total",
        "Lines handled by the InfluxDB sink, by outcome.",
    )
    .sample(&[("outcome", "sent")], s.sent_lines.load(Relaxed))
    .sample(&[("outcome", "rejected")], s.rejected_lines.load(Relaxed));
    f.counter(
        "dozor_influx_requests_total",
        "Write requests of the InfluxDB sink, by outcome.",
    )
    .sample(&[("outcome", "sent")], s.sent_requests.load(Relaxed))
    .sample(&[("outcome", "failed")], s.failed_requests.load(Relaxed));
    f.gauge(
        "dozor_influx_pending_lines",
        "Lines waiting in the outbox for InfluxDB.",
    )
    .sample(&[], s.pending_lines.load(Relaxed));
    f.write(out);
}

/// ARCHITECTURE.md's code map names every top-level module of this crate and every crate of
/// the workspace (docs that drift are caught here).
#[cfg(test)]
mod code_map {
    use std::path::Path;

    fn code_map() -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
        let start = text.find("## Code map").expect("a `## Code map` section");
        let rest = &text[start + 2..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    }

    #[test]
    fn names_every_top_level_module() {
        let map = code_map();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut missing = Vec::new();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let named = if e.file_type().unwrap().is_dir() {
                if e.path().with_extension("rs").exists() {
                    continue; // `x/` holds the children (tests) of `x.rs`
                }
                format!("{name}/")
            } else if name == "lib.rs" || name == "main.rs" || !name.ends_with(".rs") {
                continue;
            } else {
                name
            };
            if !map.contains(&format!("{named}`")) {
                missing.push(named);
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "not in ARCHITECTURE's code map: {missing:?}"
        );
    }

    #[test]
    fn names_every_workspace_crate() {
        let map = code_map();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
        let members = manifest["workspace"]["members"].as_array().unwrap();
        let missing: Vec<_> = members
            .iter()
            .filter_map(|m| m.as_str())
            .filter(|m| !map.contains(&format!("`{m}/`")))
            .collect();
        assert!(
            missing.is_empty(),
            "not in ARCHITECTURE's code map: {missing:?}"
        );
    }
}
