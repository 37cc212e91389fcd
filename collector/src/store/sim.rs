//! Synthetic records for tests, examples and benchmarks: builds the [`Record`]s the pipeline
//! would hand to a store for hosts that boot, send heartbeats and probe results, shut down,
//! get lost and replay their spool.

use crate::record::{Accepted, Record, Transition};
use dozor_proto::{
    Birth, Category, ConnState, Envelope, ErrorClass, Heartbeat, Message, Probe, ProbeResult, Role,
    State,
};
use std::sync::Arc;

/// Accumulates records in order.
#[derive(Debug, Default)]
pub struct Sim {
    pub records: Vec<Record>,
    seq: u64,
    /// Agent clock error added to header timestamps (the store must use `ts_ms`).
    pub skew_ms: i64,
    /// Receipt time of replayed messages (default: the message time).
    pub replay_recv_ms: Option<i64>,
    /// Heartbeat interval announced.
    pub interval_secs: u32,
    /// How the previous run ended, by the agent's clock, announced in the births
    /// (`birth.prev_end`); `None`: an agent that does not say (before issue 13 items 8/9).
    pub prev_end: Option<dozor_proto::PrevEnd>,
}

fn env<B>(mo: &str, host: &str, seq: u64, ts: i64, replay: bool, body: B) -> Envelope<B> {
    Envelope {
        v: 1,
        mo: mo.into(),
        host: host.into(),
        inst: format!("i-{mo}-{host}"),
        seq,
        ts,
        replay,
        body,
    }
}

impl Sim {
    pub fn new() -> Sim {
        Sim {
            interval_secs: 30,
            ..Sim::default()
        }
    }

    fn push(&mut self, msg: Message, t: i64, replay: bool) {
        let recv_ms = if replay {
            self.replay_recv_ms.unwrap_or(t)
        } else {
            t
        };
        self.records.push(Record::Msg(Arc::new(Accepted {
            msg,
            recv_ms,
            ts_ms: t,
        })));
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A birth at `t` of a host booted at `boot_ms` (its boot id derives from it).
    #[allow(clippy::too_many_arguments)]
    pub fn birth(&mut self, mo: &str, host: &str, role: Role, site: &str, t: i64, boot_ms: i64) {
        let seq = self.next_seq();
        let body = Birth {
            agent_version: "0.1.0".into(),
            role,
            site: site.into(),
            hostname: host.into(),
            os_name: "Astra Linux".into(),
            os_version: "1.7".into(),
            cpu_model: "x86".into(),
            cpu_count: 4,
            mem_total_bytes: 8 << 30,
            disks: Vec::new(),
            boot_time: (boot_ms + self.skew_ms).div_euclid(1000),
            boot_id: format!("{host}-{boot_ms}"),
            seq_base: seq,
            interval_secs: self.interval_secs,
            keepalive_secs: 30,
            prev_end: self.prev_end.map(|p| dozor_proto::PrevEnd {
                at: p.at + self.skew_ms,
                ..p
            }),
            will_seq: None,
            targets: Vec::new(),
        };
        let m = Message::Birth(env(mo, host, seq, t + self.skew_ms, false, body));
        self.push(m, t, false);
    }

    /// A heartbeat at `t` of a host booted at `boot_ms`.
    pub fn hb(&mut self, mo: &str, host: &str, t: i64, boot_ms: i64, replay: bool) {
        let seq = self.next_seq();
        let body = Heartbeat {
            uptime_secs: ((t - boot_ms).max(0) / 1000) as u64,
            cpu_pct: 12.5,
            mem_used_bytes: 2 << 30,
            mem_total_bytes: 8 << 30,
            load: None,
            disks: vec![dozor_proto::DiskUsage {
                mount: "/".into(),
                total_bytes: 100,
                used_bytes: 40,
            }],
            interval_secs: self.interval_secs,
            spool: None,
        };
        let m = Message::Hb(env(mo, host, seq, t + self.skew_ms, replay, body));
        self.push(m, t, replay);
    }

    /// Heartbeats every `step` ms over `[from, to]`.
    #[allow(clippy::too_many_arguments)]
    pub fn hbs(
        &mut self,
        mo: &str,
        host: &str,
        from: i64,
        to: i64,
        step: i64,
        boot_ms: i64,
        replay: bool,
    ) {
        let mut t = from;
        while t <= to {
            self.hb(mo, host, t, boot_ms, replay);
            t += step;
        }
    }

    /// A probe round at `t`: `(target, category, ok)`.
    pub fn probe(
        &mut self,
        mo: &str,
        host: &str,
        t: i64,
        results: &[(&str, Category, bool)],
        replay: bool,
    ) {
        let seq = self.next_seq();
        let body = Probe {
            results: results
                .iter()
                .map(|(name, cat, ok)| ProbeResult {
                    target: (*name).into(),
                    category: *cat,
                    ok: *ok,
                    latency_ms: Some(if *ok { 40 } else { 3000 }),
                    error: (!*ok).then_some(ErrorClass::Timeout),
                    status: ok.then_some(200),
                })
                .collect(),
        };
        let m = Message::Probe(env(mo, host, seq, t + self.skew_ms, replay, body));
        self.push(m, t, replay);
    }

    /// Probe rounds every `step` ms over `[from, to]`.
    #[allow(clippy::too_many_arguments)]
    pub fn probes(
        &mut self,
        mo: &str,
        host: &str,
        from: i64,
        to: i64,
        step: i64,
        results: &[(&str, Category, bool)],
        replay: bool,
    ) {
        let mut t = from;
        while t <= to {
            self.probe(mo, host, t, results, replay);
            t += step;
        }
    }

    /// A graceful `offline` from the agent at `t` and the collector's transition.
    pub fn offline(&mut self, mo: &str, host: &str, t: i64) {
        let seq = self.seq;
        let m = Message::State(env(
            mo,
            host,
            seq,
            t + self.skew_ms,
            false,
            State {
                state: ConnState::Offline,
                reason: Some("shutdown".into()),
            },
        ));
        self.push(m, t, false);
        self.transition(mo, host, t, ConnState::Offline, "shutdown");
    }

    /// The collector declares the host lost at `t` (lapsed heartbeats).
    pub fn lost(&mut self, mo: &str, host: &str, t: i64) {
        self.transition(mo, host, t, ConnState::Lost, "heartbeat_timeout");
    }

    fn transition(&mut self, mo: &str, host: &str, t: i64, to: ConnState, reason: &str) {
        self.records.push(Record::Transition(Transition {
            mo: mo.into(),
            host_id: host.into(),
            role: None,
            from: ConnState::Online,
            to,
            reason: Some(reason.into()),
            at_ms: t,
        }));
    }

    pub fn start(&mut self, t: i64) {
        self.records.push(Record::CollectorStart { at_ms: t });
    }

    pub fn stop(&mut self, t: i64) {
        self.records.push(Record::CollectorStop { at_ms: t });
    }

    /// Takes the records accumulated so far.
    pub fn take(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }
}
