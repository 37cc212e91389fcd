//! Live state of every host: connection state, last seen, resources, latest probes, inventory.
//!
//! Pure logic with the clock passed in: the pipeline task owns one [`LiveState`], feeds it
//! accepted messages and ticks, and publishes [`Snapshot`]s for readers (API, alerts).

use crate::record::Transition;
use dozor_proto::{Birth, Category, ConnState, ErrorClass, Heartbeat, Message, Probe, Role};
use serde::Serialize;
use std::collections::HashMap;

/// Maps keyed by ids from the wire: foldhash is several times faster than SipHash on short
/// strings and, randomly seeded per map, still resists crafted collisions.
type IdMap<V> = HashMap<String, V, foldhash::fast::RandomState>;
use std::sync::Arc;

/// Latest resources of a host, from its last live heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resources {
    pub cpu_pct: f32,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<[f32; 3]>,
    pub disks: Vec<dozor_proto::DiskUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<dozor_proto::SpoolStats>,
}

/// Latest result of one probe target as seen from a host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeView {
    pub target: String,
    pub category: Category,
    pub ok: bool,
    pub latency_ms: Option<u32>,
    pub error: Option<ErrorClass>,
    pub status: Option<u16>,
    /// Agent time of the result, corrected by the host's clock offset, Unix ms.
    pub at_ms: i64,
}

/// Everything the collector knows now about one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    pub host_id: String,
    pub mo: String,
    /// Unknown until the first birth message.
    pub role: Option<Role>,
    pub site: String,
    pub hostname: String,
    pub state: ConnState,
    /// Why the host is in `state` (`shutdown`, `last_will`, `heartbeat_timeout`).
    pub reason: Option<String>,
    /// Collector time the state was entered, Unix ms.
    pub state_since_ms: i64,
    /// Collector time of the last live message, Unix ms (0: never heard live).
    pub last_seen_ms: i64,
    /// Agent time of the last live message, Unix ms.
    pub last_agent_ts_ms: i64,
    /// Estimated agent clock offset: receive time − agent time, ms (smoothed).
    pub clock_offset_ms: Option<i64>,
    pub interval_secs: u32,
    pub keepalive_secs: u32,
    pub uptime_secs: u64,
    /// Boot time, Unix seconds (agent clock corrected by the offset when known).
    pub boot_time: i64,
    pub resources: Option<Resources>,
    pub probes: Vec<ProbeView>,
    /// Shared (`Arc`): copying a host that a snapshot holds does not copy its inventory.
    pub inventory: Option<Arc<Birth>>,
    /// False when the host's МО is not in the roster.
    pub in_roster: bool,
    /// Warnings about the host for people, Russian (e.g. a cloned machine id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Flood control: start of the current one-minute window (collector ms) and its count.
    #[serde(skip)]
    window_start_ms: i64,
    #[serde(skip)]
    window_count: u32,
    /// What the host's births said of their connections' last wills ([`WillFloor`]).
    #[serde(skip)]
    will_floor: WillFloor,
}

/// The highest `will_seq` the host's births announced, and the agent install (`inst`) they
/// were of: tells a late last will of an older connection from the current connection's.
///
/// A will (`state` `lost`) carries the latest `seq` the agent had issued at CONNECT, and the
/// birth of that connection announces it as `will_seq`. Numbers only grow within an `inst`,
/// so every later connection's will carries at least that much: a `lost` of the same `inst`
/// below a `will_seq` some birth announced was made on an older connection, which a newer one
/// has replaced at the broker. Through a bridge of brokers (an edge's restart) or any
/// reconnect race such a will can reach the collector after the new birth; taken as it
/// comes, it would turn a connected host `lost` until its next heartbeat, write a false
/// `lost` marker and open a `server_lost`. The current connection's own will carries exactly
/// its birth's `will_seq` and is never below it. Agents without `will_seq`: 0, nothing is
/// ever below it (docs/reliability.md, "Late last wills").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WillFloor {
    /// Hash of the `inst` of the births below ([`inst_hash`], never 0); 0: no birth yet.
    inst: u64,
    /// The highest `will_seq` those births announced; 0 if none did.
    seq: u64,
}

impl WillFloor {
    /// A birth of `inst` announcing `will_seq`; `live`: received live (a retained birth
    /// redelivered may be older than one already seen, and a replayed one never comes here).
    /// Another install's live birth starts over (a reinstalled agent numbers from the start);
    /// a retained one of another install is not known to be newer and changes nothing.
    fn birth(&mut self, inst: u64, will_seq: Option<u64>, live: bool) {
        let w = will_seq.unwrap_or(0);
        if inst == self.inst {
            self.seq = self.seq.max(w);
        } else if live || self.inst == 0 {
            *self = WillFloor { inst, seq: w };
        }
    }

    /// True if a `lost` of `inst` carrying `seq` was made on an older connection than one a
    /// birth announced.
    fn is_late(&self, inst: u64, seq: u64) -> bool {
        inst == self.inst && seq < self.seq
    }
}

/// FNV-1a of an install id (never 0): 8 bytes per host instead of the string.
fn inst_hash(inst: &str) -> u64 {
    let h = inst.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h.max(1)
}

/// A late last will of `msg`'s host ([`LiveState::late_will`]): the will's `seq` and the
/// `will_seq` of the host's birth it is below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateWill {
    pub seq: u64,
    pub will_seq: u64,
}

impl Host {
    fn new(mo: &str, host: &str, now_ms: i64, in_roster: bool) -> Host {
        Host {
            host_id: host.to_string(),
            mo: mo.to_string(),
            role: None,
            site: String::new(),
            hostname: String::new(),
            state: ConnState::Online,
            reason: None,
            state_since_ms: now_ms,
            last_seen_ms: 0,
            last_agent_ts_ms: 0,
            clock_offset_ms: None,
            interval_secs: 30,
            keepalive_secs: 30,
            uptime_secs: 0,
            boot_time: 0,
            resources: None,
            probes: Vec::new(),
            inventory: None,
            in_roster,
            warnings: Vec::new(),
            window_start_ms: now_ms,
            window_count: 0,
            will_floor: WillFloor::default(),
        }
    }

    /// True if the host reaches a target of `category` by its latest result.
    pub fn reaches(&self, category: Category) -> Option<bool> {
        let mut any = None;
        for p in self.probes.iter().filter(|p| p.category == category) {
            if p.ok {
                return Some(true);
            }
            any = Some(false);
        }
        any
    }
}

/// Why a message could not be applied to the live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Tracking the host would exceed `max_hosts`.
    #[error("too many hosts")]
    TooManyHosts,
    /// Tracking the host would exceed `max_hosts_per_mo`.
    #[error("too many hosts in the МО")]
    TooManyHostsInMo,
    /// The host sent more than `max_msgs_per_min` in the current minute.
    #[error("host is flooding")]
    Flood,
}

/// Limits and timing of the live state.
#[derive(Debug, Clone, Copy)]
pub struct StateConfig {
    pub max_hosts: usize,
    pub max_hosts_per_mo: usize,
    /// A host is `lost` after this many missed heartbeat intervals (plus a 5 s grace).
    pub lost_after_intervals: u32,
    /// Messages per host per minute above which the excess is refused.
    pub max_msgs_per_min: u32,
}

impl Default for StateConfig {
    /// The defaults of `[limits]` (written once, here; the collector's config reads them).
    fn default() -> Self {
        StateConfig {
            max_hosts: 200_000,
            max_hosts_per_mo: 5_000,
            lost_after_intervals: 3,
            max_msgs_per_min: 600,
        }
    }
}

/// The live state of all hosts, indexed by МО then host id (lookups never allocate).
///
/// Hosts are shared with snapshots (`Arc`): a snapshot copies pointers, and a host is copied
/// only when it changes while a snapshot still holds it (`Arc::make_mut`), at most once per
/// host per snapshot. They are kept sorted by (МО, host id) so that a snapshot needs no sort;
/// hosts seen for the first time wait at the end until the next snapshot merges them in.
#[derive(Debug, Default)]
pub struct LiveState {
    cfg: StateConfig,
    /// МО → host id → position in `hosts`.
    mos: IdMap<IdMap<usize>>,
    /// `hosts[..sorted]` is sorted by (МО, host id); the rest are new since the last snapshot.
    hosts: Vec<Arc<Host>>,
    sorted: usize,
}

/// A host admitted by [`LiveState::admit_slot`], for the calls about the same message that
/// follow ([`LiveState::apply_slot`], [`LiveState::clock_offset_at`]) without looking it up
/// again. Valid until the next [`LiveState::snapshot`] (which may reorder hosts): use it for
/// one message only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

/// Smoothing of the clock offset estimate: new = old + (sample − old) / 8.
const OFFSET_SMOOTHING: i64 = 8;

impl LiveState {
    pub fn new(cfg: StateConfig) -> LiveState {
        LiveState {
            cfg,
            mos: IdMap::default(),
            hosts: Vec::new(),
            sorted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn get(&self, mo: &str, host: &str) -> Option<&Host> {
        let i = *self.mos.get(mo)?.get(host)?;
        self.hosts.get(i).map(|h| &**h)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().map(|h| &**h)
    }

    /// Current clock offset estimate of a host, ms (receive − agent time).
    pub fn clock_offset(&self, mo: &str, host: &str) -> Option<i64> {
        self.get(mo, host)?.clock_offset_ms
    }

    /// Admits one message of a host before it is processed: creates the host within the caps
    /// and applies flood control. Call once per message, before [`LiveState::apply`].
    pub fn admit(
        &mut self,
        mo: &str,
        host: &str,
        now_ms: i64,
        in_roster: bool,
    ) -> Result<(), StateError> {
        self.admit_slot(mo, host, now_ms, in_roster).map(drop)
    }

    /// [`LiveState::admit`], returning where the host is for the rest of this message's work.
    pub fn admit_slot(
        &mut self,
        mo: &str,
        host: &str,
        now_ms: i64,
        in_roster: bool,
    ) -> Result<Slot, StateError> {
        let max = self.cfg.max_msgs_per_min;
        let i = self.index(mo, host, now_ms, in_roster)?;
        // `index` returns a position in `hosts`.
        let h = Arc::make_mut(&mut self.hosts[i]);
        if now_ms - h.window_start_ms >= 60_000 || now_ms < h.window_start_ms {
            h.window_start_ms = now_ms;
            h.window_count = 0;
        }
        h.window_count += 1;
        if h.window_count > max {
            return Err(StateError::Flood);
        }
        Ok(Slot(i))
    }

    /// The clock offset estimate of an admitted host ([`LiveState::clock_offset`]).
    pub fn clock_offset_at(&self, slot: Slot) -> Option<i64> {
        self.hosts.get(slot.0)?.clock_offset_ms
    }

    /// The collector lost and regained its broker: hosts could not be heard meanwhile, so give
    /// every online host a fresh grace period instead of declaring them lost.
    pub fn regained_broker(&mut self, now_ms: i64) {
        for host in &mut self.hosts {
            if host.state == ConnState::Online && host.last_seen_ms < now_ms {
                Arc::make_mut(host).last_seen_ms = now_ms;
            }
        }
    }

    /// Applies an accepted message received at `now_ms`. `retained` is the MQTT retain flag on
    /// delivery: a retained message is old news, not a sign of life. Replayed messages describe
    /// the past and do not change the live state (they only feed history).
    pub fn apply(
        &mut self,
        msg: &Message,
        now_ms: i64,
        retained: bool,
        in_roster: bool,
    ) -> Result<Option<Transition>, StateError> {
        let h = msg.header();
        let i = self.index(h.mo, h.host, now_ms, in_roster)?;
        Ok(self.apply_slot(Slot(i), msg, now_ms, retained))
    }

    /// [`LiveState::apply`] to the host [`LiveState::admit_slot`] admitted for this message
    /// (its `mo`/`host`); `None` also for a slot that is no longer valid.
    pub fn apply_slot(
        &mut self,
        slot: Slot,
        msg: &Message,
        now_ms: i64,
        retained: bool,
    ) -> Option<Transition> {
        let h = msg.header();
        if h.replay {
            return None;
        }
        let host = Arc::make_mut(self.hosts.get_mut(slot.0)?);
        if let Message::State(e) = msg
            && e.body.state == ConnState::Lost
            && host.will_floor.is_late(inst_hash(h.inst), h.seq)
        {
            // A will of an older connection than a birth announced: old news, changes nothing.
            return None;
        }
        let live = !retained;
        if live {
            let sample = now_ms - h.ts;
            host.clock_offset_ms = Some(match host.clock_offset_ms {
                Some(o) if (sample - o).abs() < 60_000 => o + (sample - o) / OFFSET_SMOOTHING,
                _ => sample,
            });
            host.last_seen_ms = now_ms;
            host.last_agent_ts_ms = h.ts;
        }
        let offset = host.clock_offset_ms.unwrap_or(0);
        let prev = host.state;
        let mut next = (prev, host.reason.clone());
        match msg {
            Message::Birth(e) => {
                host.will_floor
                    .birth(inst_hash(h.inst), e.body.will_seq, live);
                apply_birth(host, &e.body, offset);
                if live {
                    next = (ConnState::Online, None);
                }
            }
            Message::State(e) => {
                let reason =
                    e.body.reason.clone().or_else(|| {
                        (e.body.state == ConnState::Lost).then(|| "last_will".to_string())
                    });
                // A retained `online` from before we started proves nothing: keep the host
                // online only until heartbeats lapse (tick handles it).
                next = (e.body.state, reason);
            }
            Message::Hb(e) => {
                apply_hb(host, &e.body);
                if live {
                    next = (ConnState::Online, None);
                }
            }
            Message::Probe(e) => {
                apply_probe(host, &e.body, h.ts + offset);
                if live {
                    next = (ConnState::Online, None);
                }
            }
        }
        set_state(host, next.0, next.1, now_ms, prev)
    }

    /// Takes the inventory of a birth already stored (a retained birth redelivered after a
    /// restart) when the live state has none yet, and the `will_seq` it announced (of agent
    /// install `inst`): no state change, no sign of life.
    pub fn restore_birth(
        &mut self,
        (mo, host, inst): (&str, &str, &str),
        b: &Birth,
        replay: bool,
        now_ms: i64,
        in_roster: bool,
    ) {
        if let Ok(h) = self.entry(mo, host, now_ms, in_roster) {
            // A replayed birth is old news: only a retained one redelivered at subscribe moves
            // the floor ([`WillFloor`]).
            if !replay {
                h.will_floor.birth(inst_hash(inst), b.will_seq, false);
            }
            if h.role.is_none() {
                let offset = h.clock_offset_ms.unwrap_or(0);
                apply_birth(h, b, offset);
            }
        }
    }

    /// `Some` if `msg` is a live or retained `state` `lost` of the admitted host made on an
    /// older connection than one its births announced ([`WillFloor`]): it must change
    /// nothing, neither the live state nor the history.
    pub fn late_will(&self, slot: Slot, msg: &Message) -> Option<LateWill> {
        let (Message::State(e), Some(host)) = (msg, self.hosts.get(slot.0)) else {
            return None;
        };
        let late = !e.replay
            && e.body.state == ConnState::Lost
            && host.will_floor.is_late(inst_hash(&e.inst), e.seq);
        late.then_some(LateWill {
            seq: e.seq,
            will_seq: host.will_floor.seq,
        })
    }

    /// Marks hosts whose heartbeats lapsed as `lost`. Call every second or so.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Transition>) {
        let k = i64::from(self.cfg.lost_after_intervals);
        for host in &mut self.hosts {
            if host.state != ConnState::Online {
                continue;
            }
            let since = host.last_seen_ms.max(host.state_since_ms);
            let lapse = k * i64::from(host.interval_secs) * 1000 + 5_000;
            if now_ms - since > lapse {
                let prev = host.state;
                if let Some(t) = set_state(
                    Arc::make_mut(host),
                    ConnState::Lost,
                    Some("heartbeat_timeout".into()),
                    now_ms,
                    prev,
                ) {
                    out.push(t);
                }
            }
        }
    }

    fn entry(
        &mut self,
        mo: &str,
        host: &str,
        now_ms: i64,
        in_roster: bool,
    ) -> Result<&mut Host, StateError> {
        let i = self.index(mo, host, now_ms, in_roster)?;
        Ok(Arc::make_mut(&mut self.hosts[i]))
    }

    /// The position of the host in `hosts`, created within the caps if missing.
    fn index(
        &mut self,
        mo: &str,
        host: &str,
        now_ms: i64,
        in_roster: bool,
    ) -> Result<usize, StateError> {
        if let Some(&i) = self.mos.get(mo).and_then(|m| m.get(host))
            && i < self.hosts.len()
        {
            return Ok(i);
        }
        if self.hosts.len() >= self.cfg.max_hosts {
            return Err(StateError::TooManyHosts);
        }
        if self.mos.get(mo).map_or(0, HashMap::len) >= self.cfg.max_hosts_per_mo {
            return Err(StateError::TooManyHostsInMo);
        }
        let i = self.hosts.len();
        self.mos
            .entry(mo.to_string())
            .or_default()
            .insert(host.to_string(), i);
        self.hosts
            .push(Arc::new(Host::new(mo, host, now_ms, in_roster)));
        Ok(i)
    }

    /// Sets the host's warning that starts like `text` up to its first `:` (replacing an
    /// older one of the same kind); unknown hosts are ignored.
    pub fn warn(&mut self, mo: &str, host: &str, text: String) {
        let Some(i) = self.mos.get(mo).and_then(|m| m.get(host)).copied() else {
            return;
        };
        let Some(h) = self.hosts.get_mut(i) else {
            return;
        };
        let h = Arc::make_mut(h);
        let kind = text.split(':').next().unwrap_or_default().to_string();
        h.warnings.retain(|w| !w.starts_with(&kind));
        h.warnings.push(text);
    }

    /// Removes the host's warning of `kind` (its text up to the first `:`); unknown hosts and
    /// hosts without such a warning are left alone.
    pub fn unwarn(&mut self, mo: &str, host: &str, kind: &str) {
        let Some(i) = self.mos.get(mo).and_then(|m| m.get(host)).copied() else {
            return;
        };
        let Some(h) = self.hosts.get_mut(i) else {
            return;
        };
        let of_kind = |w: &String| w.split(':').next() == Some(kind);
        if h.warnings.iter().any(of_kind) {
            Arc::make_mut(h).warnings.retain(|w| !of_kind(w));
        }
    }

    /// Builds a snapshot for readers, sorted by (МО, host id). Copies one pointer per host;
    /// only when hosts were added since the last one are they merged into order (the sorted
    /// prefix and the sorted newcomers are two runs: a linear merge) and re-indexed.
    pub fn snapshot(&mut self, now_ms: i64) -> Snapshot {
        if self.sorted < self.hosts.len() {
            self.hosts[self.sorted..]
                .sort_unstable_by(|a, b| (&a.mo, &a.host_id).cmp(&(&b.mo, &b.host_id)));
            self.hosts
                .sort_by(|a, b| (&a.mo, &a.host_id).cmp(&(&b.mo, &b.host_id)));
            for (i, h) in self.hosts.iter().enumerate() {
                if let Some(slot) = self.mos.get_mut(&h.mo).and_then(|m| m.get_mut(&h.host_id)) {
                    *slot = i;
                }
            }
            self.sorted = self.hosts.len();
        }
        Snapshot {
            built_ms: now_ms,
            hosts: self.hosts.clone(),
            delivery: Vec::new(),
        }
    }
}

fn set_state(
    host: &mut Host,
    to: ConnState,
    reason: Option<String>,
    now_ms: i64,
    prev: ConnState,
) -> Option<Transition> {
    if to == prev && reason == host.reason {
        return None;
    }
    host.reason = reason.clone();
    if to == prev {
        return None;
    }
    host.state = to;
    host.state_since_ms = now_ms;
    Some(Transition {
        mo: host.mo.clone(),
        host_id: host.host_id.clone(),
        role: host.role,
        from: prev,
        to,
        reason,
        at_ms: now_ms,
    })
}

fn apply_birth(host: &mut Host, b: &Birth, offset_ms: i64) {
    host.role = Some(b.role);
    host.site.clone_from(&b.site);
    host.hostname.clone_from(&b.hostname);
    host.interval_secs = b.interval_secs;
    host.keepalive_secs = b.keepalive_secs;
    host.boot_time = b.boot_time + offset_ms / 1000;
    host.inventory = Some(Arc::new(b.clone()));
}

fn apply_hb(host: &mut Host, hb: &Heartbeat) {
    host.uptime_secs = hb.uptime_secs;
    host.interval_secs = hb.interval_secs;
    let r = host.resources.get_or_insert_with(|| Resources {
        cpu_pct: 0.0,
        mem_used_bytes: 0,
        mem_total_bytes: 0,
        load: None,
        disks: Vec::new(),
        spool: None,
    });
    r.cpu_pct = hb.cpu_pct;
    r.mem_used_bytes = hb.mem_used_bytes;
    r.mem_total_bytes = hb.mem_total_bytes;
    r.load = hb.load;
    r.disks.clone_from(&hb.disks);
    r.spool.clone_from(&hb.spool);
}

fn apply_probe(host: &mut Host, p: &Probe, at_ms: i64) {
    for r in &p.results {
        let view = ProbeView {
            target: r.target.clone(),
            category: r.category,
            ok: r.ok,
            latency_ms: r.latency_ms,
            error: r.error,
            status: r.status,
            at_ms,
        };
        match host.probes.iter_mut().find(|p| p.target == r.target) {
            Some(slot) => *slot = view,
            None => host.probes.push(view),
        }
    }
}

/// A consistent copy of the live state for readers, rebuilt by the pipeline a few times a second.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub built_ms: i64,
    /// Sorted by (mo, host_id); shared with the live state until a host changes.
    pub hosts: Vec<Arc<Host>>,
    /// Delivery progress per agent instance, in no particular order.
    pub delivery: Vec<crate::delivery::DeliveryView>,
}

/// Shared handle to the latest snapshot.
pub type SharedSnapshot = Arc<Snapshot>;

#[cfg(test)]
mod tests;
