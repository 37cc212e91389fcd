//! The incident engine: turns detected conditions into incidents with a lifecycle
//! (pending → firing → resolved, hysteresis, reopening, merging), keeps the causes of outages
//! up to date from replayed backlogs, and decides what people are told (silences, flap limits).
//!
//! No I/O and no clock of its own: every entry point takes `now_ms`. The owner persists what
//! [`Engine::take_dirty`] returns and sends the changes with `notify = true`.

use crate::config::AlertsConfig;
use crate::model::{
    Ack, Cause, Change, ChangeKind, Evidence, Incident, IncidentState, Rule, Silence,
};
use crate::rules::{self, Cond, OpenUnreachable};
use crate::text;
use dozor_availability::roster::Roster;
use dozor_live::record::Transition;
use dozor_live::state::Snapshot;
use dozor_proto::{ConnState, Role};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::RangeInclusive;

/// What a replayed message shows about its host at its (corrected) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayKind {
    /// A heartbeat: the host was up.
    Heartbeat,
    /// A probe round: the host was up.
    Probe,
    /// A birth: the agent (and probably the machine) started then, so it had been down.
    Birth,
}

/// An incident with the bookkeeping the engine needs; persisted whole by the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub inc: Incident,
    /// The state people were last told about (`None`: told nothing).
    pub notified: Option<IncidentState>,
    /// The cause people were last told about.
    pub notified_cause: Cause,
    /// Times of notifications sent, within the flap window.
    pub sends: Vec<i64>,
    /// Since when the condition has been absent.
    pub clear_since: Option<i64>,
    /// "МО unreachable"/"server lost": every affected host (the incident lists a bounded few).
    pub affected: BTreeSet<String>,
    /// Per affected host: true = shown up during the outage, false = shown down.
    pub evidence: BTreeMap<String, bool>,
    /// Affected hosts whose agent was shown running during the outage (its spooled heartbeats
    /// or probes replayed into it): the channel, not the agent, was down.
    #[serde(default)]
    pub alive: BTreeSet<String>,
    /// Absence of the condition is not judged on snapshots built before this (an incident
    /// opened from a transition must not be cancelled by an older snapshot).
    #[serde(default)]
    pub guard_ms: i64,
    /// Firing messages sent for this incident (episodes people were told about).
    #[serde(default)]
    pub notified_firings: u32,
    /// Since when the current episode has been firing.
    #[serde(default)]
    pub firing_since_ms: Option<i64>,
}

/// A replayed message counts as "the agent ran during the outage" only when made this long
/// after the outage began and this long before it arrived: a heartbeat queued just before a
/// `kill -9` and re-sent by the next agent, or one the next agent made before its connection
/// was up (spooled, so sent as a replay), must not pass for one. A channel break that fires
/// lasts far longer than the margins and the agent spools a heartbeat every interval.
const ALIVE_MARGIN_MS: i64 = 5_000;

/// Most incidents merged into one that are listed by id.
const MAX_MERGED_LISTED: usize = 100;

/// The incident engine.
#[derive(Debug)]
pub struct Engine {
    cfg: AlertsConfig,
    tracks: BTreeMap<u64, Track>,
    open_by_key: HashMap<String, u64>,
    resolved_by_key: HashMap<String, u64>,
    next_id: u64,
    api_silences: Vec<Silence>,
    /// Planned works, and the silences made of them at the last evaluation.
    planned: Vec<crate::planned::Planned>,
    planned_silences: Vec<Silence>,
    /// Tracks whose notified state may differ from their state.
    unsynced: BTreeSet<u64>,
    /// Tracks whose cause is still being established from evidence.
    watch: BTreeSet<u64>,
    dirty: BTreeSet<u64>,
    removed: Vec<u64>,
    resolve_not_before_ms: i64,
    last_prune_ms: i64,
}

impl Engine {
    /// A new engine started at `now_ms`.
    pub fn new(cfg: AlertsConfig, now_ms: i64) -> Engine {
        Engine {
            cfg,
            tracks: BTreeMap::new(),
            open_by_key: HashMap::new(),
            resolved_by_key: HashMap::new(),
            next_id: 1,
            api_silences: Vec::new(),
            planned: Vec::new(),
            planned_silences: Vec::new(),
            unsynced: BTreeSet::new(),
            watch: BTreeSet::new(),
            dirty: BTreeSet::new(),
            removed: Vec::new(),
            resolve_not_before_ms: now_ms,
            last_prune_ms: now_ms,
        }
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.cfg
    }

    /// Restores incidents from the journal. Open incidents are not resolved during the startup
    /// grace, so that the live state can fill up first.
    pub fn restore(&mut self, tracks: Vec<Track>, next_id: u64, now_ms: i64) {
        let mut any_open = false;
        for t in tracks {
            let id = t.inc.id;
            self.next_id = self.next_id.max(id + 1);
            if t.inc.state == IncidentState::Resolved {
                let newer = self
                    .resolved_by_key
                    .get(&t.inc.key)
                    .is_some_and(|&o| o > id);
                if !newer {
                    self.resolved_by_key.insert(t.inc.key.clone(), id);
                }
            } else {
                any_open = true;
                self.open_by_key.insert(t.inc.key.clone(), id);
            }
            if matches!(t.inc.rule, Rule::MoUnreachable | Rule::ServerLost) {
                self.watch.insert(id);
            }
            self.unsynced.insert(id);
            self.tracks.insert(id, t);
        }
        self.next_id = self.next_id.max(next_id);
        if any_open {
            self.resolve_not_before_ms = now_ms + self.cfg.startup_grace_ms;
        }
    }

    /// The id the next incident will get (persisted so ids are never reused).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Every incident kept: open ones and recently resolved ones, by id.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.tracks.values().map(|t| &t.inc)
    }

    /// One kept incident by id.
    pub fn incident(&self, id: u64) -> Option<&Incident> {
        self.tracks.get(&id).map(|t| &t.inc)
    }

    /// Replaces the silences made over the API (configured ones stay).
    pub fn set_api_silences(&mut self, silences: Vec<Silence>) {
        self.api_silences = silences;
    }

    /// Replaces the planned works; each evaluation turns those in force into silences
    /// ([`crate::planned::silences`]).
    pub fn set_planned(&mut self, works: Vec<crate::planned::Planned>) {
        self.planned = works;
    }

    /// The silences made of planned works at the last evaluation.
    pub fn planned_silences(&self) -> &[Silence] {
        &self.planned_silences
    }

    /// Tracks changed since the last call (to persist) and ids removed (to delete).
    pub fn take_dirty(&mut self) -> (Vec<&Track>, Vec<u64>) {
        let dirty = std::mem::take(&mut self.dirty);
        let removed = std::mem::take(&mut self.removed);
        (
            dirty.iter().filter_map(|id| self.tracks.get(id)).collect(),
            removed,
        )
    }

    /// Evaluates every rule over the snapshot and advances every incident.
    pub fn evaluate(&mut self, now: i64, snap: &Snapshot, roster: &Roster) -> Vec<Change> {
        let mut out = Vec::new();
        if !self.cfg.enabled {
            return out;
        }
        self.planned_silences = crate::planned::silences(&self.planned, now, snap);
        let detected = {
            let mut open_u: HashMap<&str, OpenUnreachable<'_>> = HashMap::new();
            let mut watch: HashMap<&str, Vec<(i64, &BTreeSet<String>)>> = HashMap::new();
            for &id in self.open_by_key.values() {
                let t = &self.tracks[&id];
                if t.inc.rule == Rule::MoUnreachable
                    && let Some(mo) = t.inc.mos.first()
                {
                    open_u.insert(
                        &mo.oid,
                        OpenUnreachable {
                            key: &t.inc.key,
                            affected: &t.affected,
                            pending: t.inc.state == IncidentState::Pending,
                            started_ms: t.inc.started_ms,
                        },
                    );
                }
            }
            for id in &self.watch {
                let t = &self.tracks[id];
                if let Some(mo) = t.inc.mos.first() {
                    watch
                        .entry(mo.oid.as_str())
                        .or_default()
                        .push((t.inc.episode_started_ms, &t.affected));
                }
            }
            rules::detect(&self.cfg, now, snap, roster, &open_u, &watch)
        };

        // Conditions: absorbers first, then the absorbed.
        let mut seen: HashSet<String> = HashSet::with_capacity(detected.conds.len());
        let (absorbed, plain): (Vec<Cond>, Vec<Cond>) = detected
            .conds
            .into_iter()
            .partition(|c| c.absorbed_by.is_some());
        for c in plain {
            seen.insert(c.key.clone());
            self.upsert(c, now, &mut out);
        }
        for c in absorbed {
            self.absorb(c, now, &mut out);
        }

        // Absent conditions: hysteresis, then resolve.
        let absent: Vec<u64> = self
            .open_by_key
            .iter()
            .filter(|(k, _)| !seen.contains(*k))
            .map(|(_, &id)| id)
            .collect();
        for id in absent {
            self.absent(id, now, snap.built_ms, &mut out);
        }

        // Evidence for causes. The watched outages by МО, once: scanning the whole watch for
        // each observation was O(observations × outages), ~21 million scans an evaluation
        // after an edge restart's 4,585 (docs/benchmarks.md). Nothing below changes the watch.
        if !detected.observations.is_empty() {
            let mut by_mo: HashMap<String, Vec<u64>> = HashMap::new();
            for &id in &self.watch {
                if let Some(mo) = self.tracks.get(&id).and_then(|t| t.inc.mos.first()) {
                    by_mo.entry(mo.oid.clone()).or_default().push(id);
                }
            }
            for o in detected.observations {
                if let Some(ids) = by_mo.get(&o.mo) {
                    self.observe(ids, &o.host, o.up, now, &mut out);
                }
            }
        }
        self.settle_watch(now, &mut out);
        self.apply_silences(now, &mut out);
        self.sync_all(now, true, &mut out);
        if now - self.last_prune_ms >= 60_000 {
            self.prune(now);
        }
        out
    }

    /// A host changed connection state. Opens a "server lost" incident at once instead of at
    /// the next evaluation.
    pub fn on_transition(&mut self, t: &Transition, roster: &Roster) -> Vec<Change> {
        let mut out = Vec::new();
        if !self.cfg.enabled
            || !self.cfg.server_lost.enabled
            || t.to != ConnState::Lost
            || t.role != Some(Role::Server)
        {
            return out;
        }
        let unreachable = rules::key(&[Rule::MoUnreachable.as_str(), &t.mo]);
        if self.open_by_key.contains_key(&unreachable) {
            return out;
        }
        let mo = rules::mo_ref(roster, &t.mo);
        let mut c = Cond {
            key: rules::key(&[Rule::ServerLost.as_str(), &t.mo, &t.host_id]),
            rule: Rule::ServerLost,
            started_ms: t.at_ms,
            mos: vec![mo],
            mo_count: 1,
            hosts: vec![t.host_id.clone()],
            host_count: 1,
            host_refs: Vec::new(),
            target: None,
            category: None,
            value: None,
            cause: Cause::HostSilent,
            absorbed_by: None,
            affected: Vec::new(),
        };
        c.affected.push(t.host_id.clone());
        let key = c.key.clone();
        self.upsert(c, t.at_ms, &mut out);
        if let Some(&id) = self.open_by_key.get(&key)
            && let Some(tr) = self.tracks.get_mut(&id)
        {
            tr.guard_ms = tr.guard_ms.max(t.at_ms);
        }
        // A server switched off inside a planned work or a silence is never told, not even
        // before the next evaluation. Only this incident: the others were judged when they
        // changed, and the next evaluation judges all.
        let ids: Vec<u64> = self
            .open_by_key
            .get(&key)
            .copied()
            .into_iter()
            .chain(self.unsynced.iter().copied())
            .collect();
        self.apply_silences_to(t.at_ms, ids, &mut out);
        self.sync_all(t.at_ms, false, &mut out);
        out
    }

    /// Replayed data of `host` covering agent times `ts` (corrected to collector time) arrived.
    /// Never opens incidents; updates the cause of outages the host was part of.
    pub fn on_replay(
        &mut self,
        now: i64,
        mo: &str,
        host: &str,
        ts: RangeInclusive<i64>,
        kind: ReplayKind,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        let hits: Vec<u64> = self
            .watch
            .iter()
            .copied()
            .filter(|id| {
                let t = &self.tracks[id];
                let end = t.inc.resolved_ms.unwrap_or(i64::MAX);
                t.inc.mos.first().is_some_and(|m| m.oid == mo)
                    && t.affected.contains(host)
                    && *ts.start() < end
                    && *ts.end() > t.inc.episode_started_ms
            })
            .collect();
        for id in hits {
            let alive = kind != ReplayKind::Birth
                && *ts.end() > self.tracks[&id].inc.episode_started_ms + ALIVE_MARGIN_MS
                && *ts.start() < now - ALIVE_MARGIN_MS;
            self.record_evidence(id, host, kind != ReplayKind::Birth, alive, now, &mut out);
        }
        // A relabel of a firing incident waits for the next evaluation: a host replaying its
        // backlog is back, and the evaluation that notices it holds the relabel for the
        // recovery message.
        self.sync_all(now, false, &mut out);
        out
    }

    /// An operator acknowledged incident `id`: recorded (a later acknowledgement replaces it)
    /// and from now on its firings are not notified; a recovery of a firing people were told
    /// about still is. `None` when no such incident is kept.
    pub fn acknowledge(&mut self, id: u64, ack: Ack, now: i64) -> Option<Change> {
        let t = self.tracks.get_mut(&id)?;
        t.inc.ack = Some(ack);
        t.inc.updated_ms = now;
        self.dirty.insert(id);
        Some(change(ChangeKind::Acknowledged, now, &t.inc))
    }

    fn rule_cfg(&self, rule: Rule) -> crate::config::RuleConfig {
        self.cfg.rule(rule)
    }

    fn new_incident(&mut self, c: &Cond, now: i64) -> Track {
        let rc = self.rule_cfg(c.rule);
        let id = self.next_id;
        self.next_id += 1;
        let mut inc = Incident {
            id,
            key: c.key.clone(),
            rule: c.rule,
            severity: rc.severity,
            state: IncidentState::Pending,
            cause: c.cause,
            title: String::new(),
            mos: c.mos.clone(),
            mo_count: c.mo_count,
            hosts: c.hosts.clone(),
            host_count: c.host_count,
            host_refs: c.host_refs.clone(),
            target: c.target.clone(),
            category: c.category,
            value: c.value,
            started_ms: c.started_ms,
            episode_started_ms: c.started_ms,
            fired_ms: None,
            resolved_ms: None,
            updated_ms: now,
            reopened: 0,
            repeat: 0,
            silenced_by: None,
            planned_over: None,
            merged_into: None,
            merged: Vec::new(),
            evidence: None,
            notify: rc.notify,
            ack: None,
        };
        inc.title = text::title(&inc);
        Track {
            inc,
            notified: None,
            notified_cause: c.cause,
            sends: Vec::new(),
            clear_since: None,
            affected: c.affected.iter().cloned().collect(),
            evidence: BTreeMap::new(),
            alive: BTreeSet::new(),
            guard_ms: 0,
            notified_firings: 0,
            firing_since_ms: None,
        }
    }

    fn upsert(&mut self, c: Cond, now: i64, out: &mut Vec<Change>) {
        let rc = self.rule_cfg(c.rule);
        let id = match self.open_by_key.get(&c.key) {
            Some(&id) => id,
            None => {
                let reopen = self.resolved_by_key.get(&c.key).copied().filter(|id| {
                    self.tracks[id]
                        .inc
                        .resolved_ms
                        .is_some_and(|r| now - r < self.cfg.flap_window_ms)
                });
                let id = match reopen {
                    Some(id) => {
                        self.resolved_by_key.remove(&c.key);
                        let t = self.tracks.get_mut(&id).unwrap_or_else(|| unreachable!());
                        t.inc.reopened += 1;
                        t.inc.state = IncidentState::Pending;
                        t.inc.episode_started_ms =
                            c.started_ms.max(t.inc.resolved_ms.unwrap_or(c.started_ms));
                        t.inc.resolved_ms = None;
                        t.inc.merged_into = None;
                        t.inc.cause = c.cause;
                        // A new episode: nobody has been told about it (nor its cause) yet.
                        // Only a firing still believed (its recovery never went out) stays.
                        t.notified_cause = c.cause;
                        if t.notified != Some(IncidentState::Firing) {
                            t.notified = None;
                        }
                        t.firing_since_ms = None;
                        t.clear_since = None;
                        t.evidence.clear();
                        t.alive.clear();
                        t.inc.evidence = None;
                        t.affected = c.affected.iter().cloned().collect();
                        id
                    }
                    None => {
                        let t = self.new_incident(&c, now);
                        let id = t.inc.id;
                        self.tracks.insert(id, t);
                        id
                    }
                };
                self.open_by_key.insert(c.key.clone(), id);
                if matches!(c.rule, Rule::MoUnreachable | Rule::ServerLost) {
                    self.watch.insert(id);
                }
                let t = &mut self.tracks.get_mut(&id).unwrap_or_else(|| unreachable!());
                t.inc.updated_ms = now;
                self.dirty.insert(id);
                self.unsynced.insert(id);
                out.push(change(ChangeKind::Opened, now, &t.inc));
                id
            }
        };
        // Invariant: ids in `open_by_key` are in `tracks`.
        let t = self.tracks.get_mut(&id).unwrap_or_else(|| unreachable!());
        t.clear_since = None;
        let inc = &mut t.inc;
        if inc.host_count != c.host_count
            || inc.mo_count != c.mo_count
            || inc.hosts != c.hosts
            || inc.mos != c.mos
            || (inc.host_refs != c.host_refs && !c.host_refs.is_empty())
        {
            if !c.host_refs.is_empty() || inc.hosts != c.hosts {
                inc.host_refs = c.host_refs;
            }
            inc.hosts = c.hosts;
            inc.host_count = c.host_count;
            inc.mos = c.mos;
            inc.mo_count = c.mo_count;
            inc.value = c.value;
            inc.title = text::title(inc);
            self.dirty.insert(id);
        } else if inc.value != c.value {
            inc.value = c.value;
            if inc.rule == Rule::DiskFull || inc.rule == Rule::ClockSkew {
                inc.title = text::title(inc);
            }
        }
        if inc.state == IncidentState::Pending {
            t.affected.extend(c.affected);
            if now - inc.episode_started_ms >= rc.for_ms {
                inc.state = IncidentState::Firing;
                inc.fired_ms.get_or_insert(now);
                inc.updated_ms = now;
                t.firing_since_ms = Some(now);
                self.dirty.insert(id);
                self.unsynced.insert(id);
                out.push(change(ChangeKind::Firing, now, inc));
            }
        }
    }

    /// A condition absorbed by another: an open incident for it is merged and closed.
    fn absorb(&mut self, c: Cond, now: i64, out: &mut Vec<Change>) {
        let Some(&id) = self.open_by_key.get(&c.key) else {
            return;
        };
        let Some(into) = c
            .absorbed_by
            .as_ref()
            .and_then(|k| self.open_by_key.get(k))
            .copied()
        else {
            // The absorber is not open (disabled rule): treat as a plain condition.
            self.upsert(c, now, out);
            return;
        };
        if let Some(t) = self.tracks.get_mut(&id) {
            t.inc.merged_into = Some(into);
            if t.notified == Some(IncidentState::Firing) {
                // The absorbing incident's message lists it; no recovery of its own.
                t.notified = Some(IncidentState::Resolved);
            }
        }
        self.resolve(id, now, now, ChangeKind::Resolved, out);
        if let Some(a) = self.tracks.get_mut(&into)
            && a.inc.merged.len() < MAX_MERGED_LISTED
            && !a.inc.merged.contains(&id)
        {
            a.inc.merged.push(id);
            self.dirty.insert(into);
        }
    }

    fn absent(&mut self, id: u64, now: i64, built_ms: i64, out: &mut Vec<Change>) {
        let Some(t) = self.tracks.get_mut(&id) else {
            return;
        };
        if built_ms < t.guard_ms {
            return;
        }
        let since = *t.clear_since.get_or_insert(now);
        let rc = self.cfg.rule(t.inc.rule);
        if now - since >= rc.resolve_after_ms && now >= self.resolve_not_before_ms {
            self.resolve(id, since, now, ChangeKind::Resolved, out);
        }
    }

    fn resolve(&mut self, id: u64, at: i64, now: i64, kind: ChangeKind, out: &mut Vec<Change>) {
        let Some(t) = self.tracks.get_mut(&id) else {
            return;
        };
        if t.inc.state == IncidentState::Resolved {
            return;
        }
        t.inc.state = IncidentState::Resolved;
        t.inc.resolved_ms = Some(at.max(t.inc.episode_started_ms));
        t.inc.updated_ms = now;
        t.clear_since = None;
        self.open_by_key.remove(&t.inc.key);
        self.resolved_by_key.insert(t.inc.key.clone(), id);
        self.dirty.insert(id);
        self.unsynced.insert(id);
        out.push(change(kind, now, &t.inc));
    }

    /// `host` (of the МО whose watched outages are `ids`) was seen up (`up`: same boot).
    fn observe(&mut self, ids: &[u64], host: &str, up: bool, now: i64, out: &mut Vec<Change>) {
        let hits: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| {
                self.tracks
                    .get(id)
                    .is_some_and(|t| t.affected.contains(host))
            })
            .collect();
        for id in hits {
            self.record_evidence(id, host, up, false, now, out);
        }
    }

    /// `up`: the machine was up during the outage (same boot); `alive`: and its agent ran
    /// (replayed data from inside the outage).
    fn record_evidence(
        &mut self,
        id: u64,
        host: &str,
        up: bool,
        alive: bool,
        now: i64,
        out: &mut Vec<Change>,
    ) {
        let Some(t) = self.tracks.get_mut(&id) else {
            return;
        };
        let new_alive = up && alive && !t.alive.contains(host);
        match t.evidence.get(host) {
            // "Down" is sticky: a host that rebooted during the outage lost power.
            Some(false) => return,
            Some(true) if up && !new_alive => return,
            _ => {}
        }
        if new_alive {
            t.alive.insert(host.to_string());
        }
        t.evidence.insert(host.to_string(), up);
        self.dirty.insert(id);
        self.decide_cause(id, false, now, out);
    }

    /// Labels the cause from the evidence once enough hosts gave some (or, with `settle`, from
    /// whatever there is).
    fn decide_cause(&mut self, id: u64, settle: bool, now: i64, out: &mut Vec<Change>) {
        let min_share = self.cfg.mo_unreachable.relabel_min_share;
        let Some(t) = self.tracks.get_mut(&id) else {
            return;
        };
        let up = t.evidence.values().filter(|&&u| u).count();
        let down = t.evidence.len() - up;
        t.inc.evidence = Some(Evidence { up, down });
        let n = t.affected.len().max(1);
        let enough = (up + down) as f64 / n as f64 >= min_share || (settle && up + down > 0);
        if !enough {
            return;
        }
        let cause = if up < down {
            Cause::Power
        } else if t.inc.rule == Rule::ServerLost && t.alive.is_empty() {
            // The machine kept its boot and its agent left nothing from inside the silence: the
            // agent itself was not running (killed, crashed, stopped, hung).
            Cause::AgentDown
        } else {
            Cause::Channel
        };
        if cause != t.inc.cause {
            t.inc.cause = cause;
            t.inc.updated_ms = now;
            self.dirty.insert(id);
            self.unsynced.insert(id);
            out.push(change(ChangeKind::Relabelled, now, &t.inc));
        }
    }

    /// Stops watching for evidence once the settle time after resolution has passed.
    fn settle_watch(&mut self, now: i64, out: &mut Vec<Change>) {
        let settle = self.cfg.mo_unreachable.relabel_settle_ms;
        let done: Vec<u64> = self
            .watch
            .iter()
            .copied()
            .filter(|id| {
                self.tracks
                    .get(id)
                    .is_none_or(|t| t.inc.resolved_ms.is_some_and(|r| now - r >= settle))
            })
            .collect();
        for id in done {
            self.watch.remove(&id);
            self.decide_cause(id, true, now, out);
        }
    }

    fn apply_silences(&mut self, now: i64, out: &mut Vec<Change>) {
        let ids: Vec<u64> = self
            .open_by_key
            .values()
            .chain(self.unsynced.iter())
            .copied()
            .collect();
        self.apply_silences_to(now, ids, out);
    }

    /// [`Engine::apply_silences`] for the incidents `ids` only: a transition touches one
    /// incident, and walking every open one for each of a storm's thousands of transitions
    /// made the storm quadratic (docs/benchmarks.md, the bridge tree's edge restart).
    fn apply_silences_to(&mut self, now: i64, ids: Vec<u64>, out: &mut Vec<Change>) {
        let silences: Vec<&Silence> = self
            .cfg
            .silences
            .iter()
            .chain(&self.api_silences)
            .chain(&self.planned_silences)
            .filter(|s| s.active(now))
            .collect();
        for id in ids {
            let Some(t) = self.tracks.get_mut(&id) else {
                continue;
            };
            let by = silences
                .iter()
                .find(|s| s.matcher.matches(&t.inc))
                .map(|s| s.id.clone());
            if by != t.inc.silenced_by {
                // A planned work ended with the trouble still there: say so when it fires.
                if by.is_none()
                    && let Some(id) = t
                        .inc
                        .silenced_by
                        .as_deref()
                        .and_then(|s| s.strip_prefix(crate::planned::SILENCE_PREFIX))
                {
                    t.inc.planned_over = Some(
                        self.planned
                            .iter()
                            .find(|p| p.id == id)
                            .map_or_else(String::new, |p| p.work.title.clone()),
                    );
                }
                t.inc.silenced_by = by;
                self.dirty.insert(id);
                self.unsynced.insert(id);
                out.push(change(ChangeKind::Silenced, now, &t.inc));
            }
        }
    }

    /// Tells people what changed, within the silences and the per-incident rate limit.
    /// `evaluated`: called from an evaluation, which has just judged whether every open
    /// condition is still present (only then may a firing incident be relabelled).
    fn sync_all(&mut self, now: i64, evaluated: bool, out: &mut Vec<Change>) {
        let ids: Vec<u64> = self.unsynced.iter().copied().collect();
        for id in ids {
            if self.sync(id, now, evaluated, out) {
                self.unsynced.remove(&id);
            }
        }
    }

    /// Returns true when the track needs no more attention.
    ///
    /// - A firing is sent within the flap limit, or regardless of it once the episode has been
    ///   firing for `flap_hold_secs` (a sustained outage is never hidden).
    /// - The recovery of a firing that was sent is always sent (not counted against the limit
    ///   when it is reached: nobody must be left believing something is down).
    /// - A relabel is sent only when people know the current state (a firing or its recovery
    ///   was sent) and were told another cause; never while pending, and not while recovering
    ///   (the recovery carries the cause). Relabels do not count against the limit.
    fn sync(&mut self, id: u64, now: i64, evaluated: bool, out: &mut Vec<Change>) -> bool {
        let window = self.cfg.flap_window_ms;
        let max = self.cfg.flap_max_notifications as usize;
        let hold = self.cfg.flap_hold_ms;
        let Some(t) = self.tracks.get_mut(&id) else {
            return true;
        };
        if !t.inc.notify {
            return true;
        }
        let kind = match (t.inc.state, t.notified) {
            // Acknowledged: someone is on it; its firings are not told again.
            (IncidentState::Firing, n)
                if n != Some(IncidentState::Firing) && t.inc.ack.is_some() =>
            {
                return true;
            }
            (IncidentState::Firing, n) if n != Some(IncidentState::Firing) => ChangeKind::Firing,
            (IncidentState::Resolved, Some(IncidentState::Firing)) => {
                if t.inc.merged_into.is_some() || t.inc.silenced_by.is_some() {
                    t.notified = Some(IncidentState::Resolved);
                    self.dirty.insert(id);
                    return true;
                }
                ChangeKind::Resolved
            }
            (s, Some(n))
                if s == n && s != IncidentState::Pending && t.notified_cause != t.inc.cause =>
            {
                ChangeKind::Relabelled
            }
            _ => return true,
        };
        if t.inc.silenced_by.is_some() {
            return false;
        }
        if kind == ChangeKind::Relabelled
            && t.inc.state == IncidentState::Firing
            && (t.clear_since.is_some() || !evaluated)
        {
            // Recovering (or maybe: not judged yet): the recovery message will carry the cause.
            return false;
        }
        t.sends.retain(|&s| now - s < window);
        match kind {
            ChangeKind::Firing => {
                let since = t.firing_since_ms.unwrap_or(t.inc.episode_started_ms);
                if t.sends.len() >= max && now - since < hold {
                    return false;
                }
                t.sends.push(now);
                t.inc.repeat = t.notified_firings;
                t.notified_firings += 1;
            }
            ChangeKind::Resolved => t.sends.push(now),
            _ => {}
        }
        t.notified_cause = t.inc.cause;
        if kind != ChangeKind::Relabelled {
            t.notified = Some(t.inc.state);
        }
        self.dirty.insert(id);
        match out
            .iter_mut()
            .rev()
            .find(|c| c.incident.id == id && c.kind == kind && !c.notify)
        {
            Some(c) => {
                c.notify = true;
                c.incident = t.inc.clone();
            }
            None => {
                let mut c = change(kind, now, &t.inc);
                c.notify = true;
                out.push(c);
            }
        }
        // A firing that was sent may still leave a relabel to tell, and vice versa.
        t.notified == Some(t.inc.state) && t.notified_cause == t.inc.cause
    }

    fn prune(&mut self, now: i64) {
        self.last_prune_ms = now;
        let retention = self.cfg.resolved_retention_ms;
        let mut resolved: Vec<u64> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.inc.state == IncidentState::Resolved)
            .map(|(&id, _)| id)
            .collect();
        let excess = resolved.len().saturating_sub(self.cfg.max_resolved);
        let mut drop: Vec<u64> = resolved.drain(..excess).collect();
        drop.extend(resolved.into_iter().filter(|id| {
            self.tracks[id]
                .inc
                .resolved_ms
                .is_some_and(|r| now - r > retention)
        }));
        for id in drop {
            if self.watch.contains(&id) || self.unsynced.contains(&id) {
                continue;
            }
            if let Some(t) = self.tracks.remove(&id) {
                if self.resolved_by_key.get(&t.inc.key) == Some(&id) {
                    self.resolved_by_key.remove(&t.inc.key);
                }
                self.dirty.remove(&id);
                self.removed.push(id);
            }
        }
    }
}

fn change(kind: ChangeKind, at_ms: i64, inc: &Incident) -> Change {
    Change {
        kind,
        at_ms,
        notify: false,
        incident: inc.clone(),
    }
}

#[cfg(test)]
mod tests;
