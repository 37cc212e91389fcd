//! [`AlertService`]: the engine with its journal and notifier, owned by the alert task
//! (`task`), and
//! [`AlertHandle`], the cheap shared view the HTTP API and `/metrics` read.

use super::config::AlertsConfig;
use super::engine::{Engine, ReplayKind};
use super::journal::{Journal, JournalError};
use super::model::{Ack, Change, Incident, Silence};
use super::notify::{ChannelStats, Notification, Notifier, NotifyError};
use super::text;
use crate::clock::{Clock, system_clock};
use crate::record::Transition;
use crate::roster::Roster;
use crate::state::Snapshot;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors starting the alert service.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AlertsError {
    /// The incident journal could not be opened or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A notification channel could not be set up.
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// Counters of inputs the alert task never saw (kept by the pipeline's `task::AlertSender`).
#[derive(Debug, Default)]
pub struct InputStats {
    /// Transitions and replays dropped past the backlog bound.
    pub dropped: AtomicU64,
    /// Evaluation ticks skipped because the channel was full.
    pub ticks_skipped: AtomicU64,
}

/// Silences made over the API, shared with the engine's owner.
#[derive(Debug, Default)]
pub(crate) struct SilenceBook {
    pub list: Vec<Silence>,
    pub version: u64,
    pub next: u64,
}

pub(crate) struct Shared {
    pub incidents: RwLock<Arc<Vec<Incident>>>,
    /// Acknowledgements made over the API, waiting for the alert thread (lock before
    /// `incidents`).
    pub acks: Mutex<Vec<(u64, Ack)>>,
    pub silences: Mutex<SilenceBook>,
    pub config_silences: Vec<Silence>,
    pub stats: Vec<Arc<ChannelStats>>,
    pub clock: Clock,
    pub journal_errors: AtomicU64,
    pub inputs: Arc<InputStats>,
}

/// What the HTTP API and `/metrics` use. Cheap to clone; never blocks the engine for long
/// (locks are held only to copy or swap an `Arc`).
#[derive(Clone)]
pub(crate) struct AlertHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for AlertHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertHandle").finish_non_exhaustive()
    }
}

impl AlertHandle {
    /// Incidents as of the latest evaluation (open and recently resolved), by id.
    pub(crate) fn incidents(&self) -> Arc<Vec<Incident>> {
        self.shared
            .incidents
            .read()
            .map_or_else(|e| e.into_inner().clone(), |g| g.clone())
    }

    /// Configured and API silences.
    pub(crate) fn silences(&self) -> Vec<Silence> {
        let mut all = self.shared.config_silences.clone();
        all.extend(self.book().list.iter().cloned());
        all
    }

    /// Records an acknowledgement of incident `id` and shows it at once in the published list;
    /// the alert thread applies it to the engine (and `incidents.db`) at its next input, at
    /// most a second later. `None` when no such incident is listed.
    pub(crate) fn acknowledge(&self, id: u64, ack: Ack) -> Option<Incident> {
        let mut acks = self.acks();
        let mut g = self
            .shared
            .incidents
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let pos = g.iter().position(|i| i.id == id)?;
        let mut list = Vec::clone(&g);
        list[pos].ack = Some(ack.clone());
        let inc = list[pos].clone();
        *g = Arc::new(list);
        acks.push((id, ack));
        Some(inc)
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Ack)>> {
        // A poisoned list is still a list of acknowledgements.
        self.shared.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, SilenceBook> {
        // A poisoned book is still a consistent list of silences.
        self.shared
            .silences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now_ms(&self) -> i64 {
        (self.shared.clock)()
    }

    /// Appends the alerting metrics in Prometheus text format (for `/metrics`).
    /// Names of the channels whose last notification was given up on.
    pub(crate) fn failing_channels(&self) -> Vec<String> {
        self.shared
            .stats
            .iter()
            .filter(|s| s.failing.load(std::sync::atomic::Ordering::Relaxed))
            .map(|s| s.name.clone())
            .collect()
    }

    pub(crate) fn write_metrics(&self, out: &mut String) {
        super::notify::write_metrics(&self.shared.stats, out);
        let inc = self.incidents();
        let mut f = crate::metrics::Families::default();
        let g = f.gauge("dozor_alert_incidents", "Incidents by state.");
        for st in ["pending", "firing", "resolved"] {
            let count = inc.iter().filter(|i| i.state.as_str() == st).count();
            g.sample(&[("state", st)], count as u64);
        }
        f.counter(
            "dozor_alert_journal_errors_total",
            "Failed writes of the incident journal.",
        )
        .sample(&[], self.shared.journal_errors.load(Ordering::Relaxed));
        let inputs = &self.shared.inputs;
        f.counter(
            "dozor_alert_inputs_dropped_total",
            "Transitions and replays the alert task never saw (its queue was full).",
        )
        .sample(&[], inputs.dropped.load(Ordering::Relaxed));
        f.counter(
            "dozor_alert_ticks_skipped_total",
            "Evaluations left out while the alert task was behind.",
        )
        .sample(&[], inputs.ticks_skipped.load(Ordering::Relaxed));
        f.write(out);
    }

    /// Prometheus text of the alerting metrics.
    #[cfg(test)]
    pub(crate) fn metrics_text(&self) -> String {
        let mut s = String::new();
        self.write_metrics(&mut s);
        s
    }
}

/// The alerting component: call [`AlertService::evaluate`] about once a second,
/// [`AlertService::on_transition`] and [`AlertService::on_replay`] as things happen.
pub(crate) struct AlertService {
    engine: Engine,
    journal: Journal,
    notifier: Notifier,
    roster: Arc<Roster>,
    handle: AlertHandle,
    /// The web UI's base URL for links in messages (`http.public_url`).
    public_url: Option<String>,
    silences_seen: u64,
    /// Planned works (the API and the config), turned into silences by the engine.
    planned: Option<tokio::sync::watch::Receiver<Arc<Vec<crate::store::planned::Entry>>>>,
    last_now: i64,
    last_publish: i64,
    /// Inside [`AlertService::begin_batch`] … [`AlertService::end_batch`]: the latest time
    /// and whether anything changed, persisted once at the end (`None`: not batching).
    batch: Option<(i64, bool)>,
}

impl std::fmt::Debug for AlertService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertService").finish_non_exhaustive()
    }
}

/// How often the shared incident list is refreshed when nothing changed state (values such
/// as disk use or host counts still move).
const PUBLISH_EVERY_MS: i64 = 5_000;

impl AlertService {
    /// Opens the journal in `data_dir` (`incidents.db`), restores incidents and silences, and
    /// builds the channels. Uses the system clock.
    pub(crate) fn new(
        cfg: AlertsConfig,
        data_dir: &Path,
        roster: Arc<Roster>,
    ) -> Result<AlertService, AlertsError> {
        AlertService::with_clock(cfg, data_dir, roster, system_clock())
    }

    /// As [`AlertService::new`] with an injected clock (used by the API for silences and by
    /// `on_replay` from the pipeline's observer).
    pub(crate) fn with_clock(
        cfg: AlertsConfig,
        data_dir: &Path,
        roster: Arc<Roster>,
        clock: Clock,
    ) -> Result<AlertService, AlertsError> {
        let now = clock();
        let journal = Journal::open(data_dir)?;
        let restored = journal.load()?;
        let notifier = Notifier::new(&cfg.channels, clock.clone())?;
        let config_silences = cfg.engine.silences.clone();
        let public_url = cfg.public_url;
        let mut engine = Engine::new(cfg.engine, now);
        let next_api = restored
            .silences
            .iter()
            .filter_map(|s| s.id.strip_prefix("s-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        engine.set_api_silences(restored.silences.clone());
        engine.restore(restored.tracks, restored.next_id, now);
        let incidents: Vec<Incident> = engine.incidents().cloned().collect();
        let handle = AlertHandle {
            shared: Arc::new(Shared {
                incidents: RwLock::new(Arc::new(incidents)),
                acks: Mutex::new(Vec::new()),
                silences: Mutex::new(SilenceBook {
                    list: restored.silences,
                    version: 0,
                    next: next_api,
                }),
                config_silences,
                stats: notifier.stats(),
                clock,
                journal_errors: AtomicU64::new(0),
                inputs: Arc::default(),
            }),
        };
        Ok(AlertService {
            engine,
            journal,
            notifier,
            roster,
            handle,
            public_url,
            silences_seen: 0,
            planned: None,
            last_now: now,
            last_publish: now,
            batch: None,
        })
    }

    /// Follows the planned works: those in force silence what they cover.
    pub(crate) fn follow_planned(
        &mut self,
        mut rx: tokio::sync::watch::Receiver<Arc<Vec<crate::store::planned::Entry>>>,
    ) {
        rx.mark_changed();
        self.planned = Some(rx);
    }

    fn sync_planned(&mut self) {
        let Some(rx) = self.planned.as_mut() else {
            return;
        };
        if !rx.has_changed().unwrap_or(false) {
            return;
        }
        let list = rx.borrow_and_update().clone();
        self.engine.set_planned(
            list.iter()
                .map(|e| dozor_alerts_core::planned::Planned {
                    id: e.id.clone(),
                    work: e.work.clone(),
                })
                .collect(),
        );
    }

    /// The counters the pipeline's [`super::task::AlertSender`] keeps.
    pub(crate) fn input_stats(&self) -> Arc<InputStats> {
        self.handle.shared.inputs.clone()
    }

    /// The shared view for the API router and `/metrics`.
    pub(crate) fn handle(&self) -> AlertHandle {
        self.handle.clone()
    }

    /// Starts the notification channels, one task each, on `tracker`.
    pub(crate) fn spawn_notifiers(&mut self, tracker: &TaskTracker, cancel: CancellationToken) {
        self.notifier.spawn(tracker, cancel);
    }

    /// The engine, for inspection.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Evaluates every rule over the latest snapshot. O(hosts); call about once a second.
    pub(crate) fn evaluate(&mut self, now_ms: i64, snap: &Snapshot) -> Vec<Change> {
        self.last_now = now_ms;
        self.sync_silences(now_ms);
        self.sync_planned();
        let changes = self.engine.evaluate(now_ms, snap, &self.roster);
        self.after(now_ms, &changes);
        changes
    }

    /// A host changed connection state (opens "server lost" at once).
    pub(crate) fn on_transition(&mut self, t: &Transition) -> Vec<Change> {
        let changes = self.engine.on_transition(t, &self.roster);
        self.after(t.at_ms.max(self.last_now), &changes);
        changes
    }

    /// A replayed (past) message of `host` in `mo` was accepted; `ts` is its corrected time
    /// range. Updates the cause of outages it was part of; never opens incidents.
    pub(crate) fn on_replay(
        &mut self,
        mo: &str,
        host: &str,
        ts: RangeInclusive<i64>,
        kind: ReplayKind,
    ) -> Vec<Change> {
        let now = self.last_now;
        let changes = self.engine.on_replay(now, mo, host, ts, kind);
        self.after(now, &changes);
        changes
    }

    fn sync_silences(&mut self, now: i64) {
        let mut book = self.handle.book();
        let before = book.list.len();
        book.list.retain(|s| s.ends_ms > now);
        if book.list.len() != before {
            book.version += 1;
        }
        if book.version == self.silences_seen {
            return;
        }
        self.silences_seen = book.version;
        let list = book.list.clone();
        drop(book);
        if let Err(e) = self.journal.save_silences(&list) {
            self.journal_error(&e);
        }
        self.engine.set_api_silences(list);
    }

    fn after(&mut self, now: i64, changes: &[Change]) {
        self.dispatch(changes);
        match &mut self.batch {
            Some((at, changed)) => {
                *at = (*at).max(now);
                *changed |= !changes.is_empty();
            }
            None => self.persist(now, !changes.is_empty()),
        }
    }

    /// From here until [`AlertService::end_batch`], inputs tell the notifiers of their changes
    /// at once but write the journal and publish the incident list only at the end: the
    /// alert task applies what waits in its channel as one batch.
    pub(crate) fn begin_batch(&mut self) {
        self.batch.get_or_insert((i64::MIN, false));
    }

    /// Ends a batch: the journal write and the publication of everything it changed.
    pub(crate) fn end_batch(&mut self) {
        if let Some((at, changed)) = self.batch.take()
            && at != i64::MIN
        {
            self.persist(at, changed);
        }
    }

    /// Hands the changes people are told of to the notifiers.
    fn dispatch(&mut self, changes: &[Change]) {
        let tz = self.engine.config().tz;
        let url = self.public_url.as_deref();
        for c in changes.iter().filter(|c| c.notify) {
            let n = Notification::new(c, text::render(c, tz, url), url);
            self.notifier.dispatch(Arc::new(n));
        }
    }

    /// Applies the API's acknowledgements, writes what changed to the journal and publishes
    /// the incident list (when something `changed`, an acknowledgement came, or every
    /// `PUBLISH_EVERY_MS`). Once per input, or once per batch of inputs
    /// ([`AlertService::begin_batch`]): both cost O(incidents), and once per input a storm's
    /// thousands of transitions made them quadratic.
    fn persist(&mut self, now: i64, changed: bool) {
        // Acknowledgements from the API are applied and published under their lock, so an
        // answered `POST …/ack` is never undone by a publish racing it.
        let mut acks = self.handle.acks();
        let acked = !acks.is_empty();
        for (id, ack) in acks.drain(..) {
            // An incident pruned meanwhile is simply gone.
            let _ = self.engine.acknowledge(id, ack, now);
        }
        let next = self.engine.next_id();
        let (dirty, removed) = self.engine.take_dirty();
        if (!dirty.is_empty() || !removed.is_empty())
            && let Err(e) = self.journal.save(&dirty, &removed, next)
        {
            self.handle
                .shared
                .journal_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "incident journal write failed");
        }
        if acked || changed || now - self.last_publish >= PUBLISH_EVERY_MS {
            self.last_publish = now;
            let list: Vec<Incident> = self.engine.incidents().cloned().collect();
            let mut g = self
                .handle
                .shared
                .incidents
                .write()
                .unwrap_or_else(|e| e.into_inner());
            *g = Arc::new(list);
        }
        drop(acks);
    }

    fn journal_error(&self, e: &JournalError) {
        self.handle
            .shared
            .journal_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "incident journal write failed");
    }
}

#[cfg(test)]
mod tests;
