//! The simulated fleet: МО with their hosts, each host an agent with a stable instance id, an
//! increasing sequence number and plausible resources.
//!
//! A heartbeat is made two ways that give the same bytes: [`SimHost::heartbeat`] builds the
//! real [`Envelope<Heartbeat>`] (the reference, as an agent does), and
//! [`SimHost::heartbeat_json`] writes the JSON from pre-serialized parts, so that the generator
//! is not the bottleneck of an ingest benchmark. The body changes every [`BODY_EPOCH`]
//! heartbeats; between changes only `seq` and `ts` differ.

use dozor_proto::{
    DiskUsage, Envelope, Heartbeat, Kind, Limits, SCHEMA_VERSION, SpoolStats, decode, topic,
};
use std::io::Write;

/// Heartbeats between two changes of a host's resource figures.
pub(crate) const BODY_EPOCH: u64 = 8;
/// Heartbeat interval every simulated agent announces, seconds.
pub(crate) const INTERVAL_SECS: u32 = 30;

const GIB: u64 = 1 << 30;

/// What fleet to simulate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetSpec {
    pub hosts: usize,
    pub mo_count: usize,
    /// Distinguishes the instance ids of different runs, so that a second run against the same
    /// collector is new data rather than duplicates.
    pub run_id: u64,
}

/// The region: every simulated host.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    pub hosts: Vec<SimHost>,
}

impl Fleet {
    /// Spreads `spec.hosts` hosts over `spec.mo_count` МО (host `i` belongs to МО `i % mo_count`).
    pub(crate) fn new(spec: &FleetSpec) -> Fleet {
        let mo_count = spec.mo_count.max(1);
        let hosts = (0..spec.hosts)
            .map(|i| SimHost::new(i, i % mo_count, spec.run_id))
            .collect();
        Fleet { hosts }
    }

    /// Largest number of hosts in one МО.
    pub(crate) fn max_hosts_per_mo(spec: &FleetSpec) -> usize {
        spec.hosts.div_ceil(spec.mo_count.max(1))
    }

    /// Checks on copies of a few hosts that the fast path gives the reference bytes and that
    /// the collector would accept them, so that a change of the wire contract fails the run
    /// loudly instead of producing rejects.
    pub(crate) fn self_check(&self, now_ms: i64) -> Result<(), String> {
        let mut buf = Vec::new();
        for h in self.hosts.iter().take(16) {
            let (mut reference, mut fast) = (h.clone(), h.clone());
            for i in 0..=BODY_EPOCH as i64 {
                let want = reference.heartbeat(now_ms + i).to_json();
                fast.heartbeat_json(now_ms + i, &mut buf);
                if buf != want {
                    return Err(format!(
                        "{}: fast heartbeat differs from the reference:\n{}\n{}",
                        h.host,
                        String::from_utf8_lossy(&buf),
                        String::from_utf8_lossy(&want)
                    ));
                }
                if let Err(r) = decode(&h.hb_topic, &buf, &Limits::DEFAULT) {
                    return Err(format!("{}: heartbeat rejected: {r}", h.host));
                }
            }
        }
        Ok(())
    }

    /// Deals the hosts round-robin into `n` groups, one per MQTT connection: a fleet behind
    /// few links (clinic gateways, NAT).
    pub(crate) fn split(self, n: usize) -> Vec<Vec<SimHost>> {
        let n = n.max(1);
        let mut groups: Vec<Vec<SimHost>> = (0..n).map(|_| Vec::new()).collect();
        for (i, h) in self.hosts.into_iter().enumerate() {
            groups[i % n].push(h);
        }
        groups
    }
}

/// ФРМО-like OID of the `m`-th МО.
pub(crate) fn mo_id(m: usize) -> String {
    format!("1.2.643.5.1.13.13.12.2.27.{}", 1000 + m)
}

/// One simulated agent.
#[derive(Debug, Clone)]
pub(crate) struct SimHost {
    pub mo: String,
    pub host: String,
    pub inst: String,
    /// Topic of its heartbeats.
    pub hb_topic: String,
    /// Topic of its replayed heartbeats (`…/hb-replay`).
    pub hb_replay_topic: String,
    /// Last sequence number issued (0: none yet).
    seq: u64,
    /// The `seq` of the last will made ([`SimHost::will_json`]), announced in the next birth.
    will_seq: Option<u64>,
    /// Stable per-host randomness.
    seed: u64,
    /// Windows workstation (no load averages, drive letters) or Linux server.
    windows: bool,
    mem_total_bytes: u64,
    disk_totals: Vec<(String, u64)>,
    uptime_at_start: u64,
    /// `{"v":1,"mo":…,"host":…,"inst":…,"seq":`
    prefix: Vec<u8>,
    /// The serialized body of epoch `body_epoch`.
    body: Vec<u8>,
    body_epoch: Option<u64>,
}

impl SimHost {
    fn new(index: usize, mo: usize, run_id: u64) -> SimHost {
        let seed = splitmix(index as u64 ^ 0x5eed_0000_0000);
        let mo = mo_id(mo);
        let windows = seed % 10 < 7;
        let host = if windows {
            format!("arm-{index:06}")
        } else {
            format!("srv-{index:06}")
        };
        let inst = format!("lg{run_id:x}-{index:06}");
        let mem_total_bytes = [4, 8, 8, 16, 32][(seed >> 8) as usize % 5] * GIB;
        let disk_totals = if windows {
            let mut d = vec![(
                "C:".to_string(),
                [120, 240, 500][(seed >> 16) as usize % 3] * GIB,
            )];
            if seed & (1 << 20) != 0 {
                d.push(("D:".to_string(), 1000 * GIB));
            }
            d
        } else {
            vec![
                ("/".to_string(), 50 * GIB),
                (
                    "/var".to_string(),
                    [200, 500, 2000][(seed >> 16) as usize % 3] * GIB,
                ),
            ]
        };
        let mut prefix = Vec::with_capacity(128);
        // Field order of `Envelope`: v, mo, host, inst, seq, ts, (replay), body. Ids are plain
        // ASCII without quotes or backslashes (see `valid_id`), so they need no escaping.
        let _ = write!(
            prefix,
            r#"{{"v":{SCHEMA_VERSION},"mo":"{mo}","host":"{host}","inst":"{inst}","seq":"#
        );
        SimHost {
            hb_topic: topic(&mo, &host, Kind::Hb),
            hb_replay_topic: topic(&mo, &host, Kind::HbReplay),
            mo,
            host,
            inst,
            seq: 0,
            will_seq: None,
            seed,
            windows,
            mem_total_bytes,
            disk_totals,
            uptime_at_start: 3_600 + (seed >> 24) % (30 * 86_400),
            prefix,
            body: Vec::new(),
            body_epoch: None,
        }
    }

    /// Resource figures for the heartbeat numbered `seq`: they change every [`BODY_EPOCH`].
    fn body_for(&self, seq: u64) -> Heartbeat {
        let epoch = seq.saturating_sub(1) / BODY_EPOCH;
        let r = splitmix(self.seed ^ epoch.wrapping_mul(0x9e37_79b9));
        let pct = |shift: u32, max: u64| ((r >> shift) % (max * 10)) as f32 / 10.0;
        let cpu_pct = pct(0, 100);
        let mem_used_bytes = self.mem_total_bytes / 100 * (20 + (r >> 12) % 70);
        let load = (!self.windows).then(|| [pct(20, 4), pct(28, 3), pct(36, 2)]);
        let disks = self
            .disk_totals
            .iter()
            .enumerate()
            .map(|(i, (mount, total))| DiskUsage {
                mount: mount.clone(),
                total_bytes: *total,
                used_bytes: total / 100 * (10 + (r >> (44 + 4 * i)) % 85),
            })
            .collect();
        Heartbeat {
            uptime_secs: self.uptime_at_start + epoch * BODY_EPOCH * u64::from(INTERVAL_SECS),
            cpu_pct,
            mem_used_bytes,
            mem_total_bytes: self.mem_total_bytes,
            load,
            disks,
            interval_secs: INTERVAL_SECS,
            spool: Some(SpoolStats::default()),
        }
    }

    /// The next heartbeat as the real type (the reference path).
    pub(crate) fn heartbeat(&mut self, ts_ms: i64) -> Envelope<Heartbeat> {
        self.seq += 1;
        Envelope {
            v: SCHEMA_VERSION,
            mo: self.mo.clone(),
            host: self.host.clone(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: ts_ms,
            replay: false,
            body: self.body_for(self.seq),
        }
    }

    /// Writes the next heartbeat's JSON to `out` (cleared first): the same bytes as
    /// `heartbeat(ts_ms).to_json()`, without serializing the body again within an epoch.
    pub(crate) fn heartbeat_json(&mut self, ts_ms: i64, out: &mut Vec<u8>) {
        self.seq += 1;
        let epoch = (self.seq - 1) / BODY_EPOCH;
        if self.body_epoch != Some(epoch) {
            let body = self.body_for(self.seq);
            self.body.clear();
            // Serializing plain structs into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.body, &body);
            self.body_epoch = Some(epoch);
        }
        out.clear();
        out.extend_from_slice(&self.prefix);
        let _ = write!(out, "{},\"ts\":{ts_ms},\"body\":", self.seq);
        out.extend_from_slice(&self.body);
        out.push(b'}');
    }
}

impl SimHost {
    /// Windows workstation (true) or Linux server.
    pub(crate) fn is_workstation(&self) -> bool {
        self.windows
    }

    /// Reserves `n` sequence numbers (a spool backlog made earlier); returns the first.
    pub(crate) fn reserve(&mut self, n: u64) -> u64 {
        let first = self.seq + 1;
        self.seq += n;
        first
    }

    /// Writes heartbeat `seq` (from [`SimHost::reserve`]) made at `ts_ms`, flagged `replay`, of
    /// a boot at `boot_ms`: its uptime is exact (`ts_ms − boot_ms`), so every heartbeat of the
    /// boot names the same boot; disks stay below 85 % (a healthy fleet: no `disk_full`).
    pub(crate) fn heartbeat_json_as(
        &mut self,
        seq: u64,
        ts_ms: i64,
        replay: bool,
        boot_ms: i64,
        out: &mut Vec<u8>,
    ) {
        let mut body = self.body_for(seq);
        body.uptime_secs = u64::try_from((ts_ms - boot_ms) / 1000).unwrap_or(0);
        for d in &mut body.disks {
            d.used_bytes = d.used_bytes.min(d.total_bytes / 100 * 85);
        }
        out.clear();
        out.extend_from_slice(&self.prefix);
        let _ = write!(out, "{seq},\"ts\":{ts_ms},");
        if replay {
            out.extend_from_slice(b"\"replay\":true,");
        }
        out.extend_from_slice(b"\"body\":");
        let _ = serde_json::to_writer(&mut *out, &body);
        out.push(b'}');
    }

    /// The next message as a `birth` of a boot at `boot_ms` (a workstation switched on).
    pub(crate) fn birth_json(&mut self, ts_ms: i64, boot_ms: i64) -> (String, Vec<u8>) {
        self.seq += 1;
        let env = Envelope {
            v: SCHEMA_VERSION,
            mo: self.mo.clone(),
            host: self.host.clone(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: ts_ms,
            replay: false,
            body: dozor_proto::Birth {
                agent_version: "loadgen".into(),
                role: if self.windows {
                    dozor_proto::Role::Workstation
                } else {
                    dozor_proto::Role::Server
                },
                site: "Корпус 1".into(),
                hostname: self.host.to_uppercase(),
                os_name: if self.windows { "Windows" } else { "Linux" }.into(),
                os_version: "10".into(),
                cpu_model: "sim".into(),
                cpu_count: 4,
                mem_total_bytes: self.mem_total_bytes,
                disks: self
                    .disk_totals
                    .iter()
                    .map(|(m, t)| dozor_proto::DiskInfo {
                        mount: m.clone(),
                        fs: String::new(),
                        total_bytes: *t,
                    })
                    .collect(),
                boot_time: boot_ms / 1000,
                boot_id: format!("{:016x}", splitmix(self.seed ^ (boot_ms / 1000) as u64)),
                seq_base: self.seq,
                prev_end: None,
                will_seq: self.will_seq,
                interval_secs: INTERVAL_SECS,
                keepalive_secs: 60,
                targets: Vec::new(),
            },
        };
        (topic(&self.mo, &self.host, Kind::Birth), env.to_json())
    }

    /// A graceful `offline` (`shutdown`) made at `ts_ms`: retained state carrying the last
    /// sequence number, not sequenced itself.
    pub(crate) fn offline_json(&self, ts_ms: i64) -> (String, Vec<u8>) {
        self.state_json(ts_ms, dozor_proto::ConnState::Offline, Some("shutdown"))
    }

    /// The agent's last will (`agent/src/publish/mod.rs`): retained `lost` state carrying the
    /// last sequence number, made at `ts_ms`.
    /// The next birth announces its `seq` as `will_seq`, as the agent's does.
    pub(crate) fn will_json(&mut self, ts_ms: i64) -> (String, Vec<u8>) {
        self.will_seq = Some(self.seq);
        self.state_json(ts_ms, dozor_proto::ConnState::Lost, None)
    }

    /// The retained `online` state the agent publishes after each birth, replacing its last
    /// will's `lost` (`agent/src/publish/mod.rs`).
    pub(crate) fn online_json(&self, ts_ms: i64) -> (String, Vec<u8>) {
        self.state_json(ts_ms, dozor_proto::ConnState::Online, None)
    }

    fn state_json(
        &self,
        ts_ms: i64,
        state: dozor_proto::ConnState,
        reason: Option<&str>,
    ) -> (String, Vec<u8>) {
        let env = Envelope {
            v: SCHEMA_VERSION,
            mo: self.mo.clone(),
            host: self.host.clone(),
            inst: self.inst.clone(),
            seq: self.seq,
            ts: ts_ms,
            replay: false,
            body: dozor_proto::State {
                state,
                reason: reason.map(str::to_string),
            },
        };
        (topic(&self.mo, &self.host, Kind::State), env.to_json())
    }
}

/// SplitMix64: a stateless mixer, good enough for plausible figures.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dozor_proto::Message;

    const NOW: i64 = 1_760_000_000_000;

    fn spec(hosts: usize, mo_count: usize) -> FleetSpec {
        FleetSpec {
            hosts,
            mo_count,
            run_id: 0xabc,
        }
    }

    #[test]
    fn fast_path_equals_reference_and_decodes() {
        let fleet = Fleet::new(&spec(50, 7));
        for h in fleet.hosts {
            let mut reference = h.clone();
            let mut fast = h;
            let mut buf = Vec::new();
            for i in 0..3 * BODY_EPOCH as i64 {
                let env = reference.heartbeat(NOW + i);
                fast.heartbeat_json(NOW + i, &mut buf);
                assert_eq!(
                    String::from_utf8_lossy(&buf),
                    String::from_utf8_lossy(&env.to_json())
                );
                match decode(&fast.hb_topic, &buf, &Limits::DEFAULT) {
                    Ok(Message::Hb(e)) => assert_eq!(e, env),
                    other => panic!("{}: {other:?}", fast.hb_topic),
                }
            }
            assert_eq!(fast.seq, 3 * BODY_EPOCH);
        }
    }

    #[test]
    fn self_check_passes() {
        assert_eq!(Fleet::new(&spec(20, 3)).self_check(NOW), Ok(()));
    }

    #[test]
    fn hosts_spread_over_mo_and_connections() {
        let s = spec(1001, 10);
        let fleet = Fleet::new(&s);
        assert_eq!(Fleet::max_hosts_per_mo(&s), 101);
        let mut per_mo = std::collections::HashMap::new();
        for h in &fleet.hosts {
            *per_mo.entry(h.mo.clone()).or_insert(0) += 1;
        }
        assert_eq!(per_mo.len(), 10);
        assert!(per_mo.values().all(|n| *n == 100 || *n == 101));
        let insts: std::collections::HashSet<_> = fleet.hosts.iter().map(|h| &h.inst).collect();
        assert_eq!(insts.len(), 1001);
        let groups = fleet.split(8);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 1001);
        assert!(groups.iter().all(|g| g.len() == 125 || g.len() == 126));
    }
}
