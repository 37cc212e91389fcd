use super::*;
use crate::config::RawAlerts as RawAlertsOf;

type RawAlerts = RawAlertsOf<()>;
use crate::model::{Severity, SilenceMatch};
use dozor_live::state::{Host, ProbeView, Resources};
use dozor_proto::{Category, DiskUsage};

/// Tuesday 2024-01-09 11:00 MSK (08:00 UTC): working hours.
const TUE_11: i64 = 1_704_787_200_000;
/// Tuesday 2024-01-09 21:00 MSK: after hours.
const TUE_21: i64 = TUE_11 + 10 * 3_600_000;
const STEP: i64 = 5_000;

fn roster(n: usize) -> Roster {
    let mut text = String::new();
    for i in 1..=n {
        text.push_str(&format!(
            "[[mo]]\noid = \"mo{i}\"\nname = \"Поликлиника № {i}\"\ntz = \"Europe/Moscow\"\n"
        ));
    }
    Roster::from_toml(&text, "test").unwrap()
}

fn config(f: impl FnOnce(&mut RawAlerts)) -> AlertsConfig {
    let mut raw = RawAlerts {
        startup_grace_secs: 0,
        ..RawAlerts::default()
    };
    f(&mut raw);
    raw.validate().unwrap().0
}

/// A simulated region: hosts whose liveness and probe results the test sets, and a clock.
struct World {
    now: i64,
    hosts: Vec<Host>,
    roster: Roster,
    engine: Engine,
    /// Every change the engine produced.
    log: Vec<Change>,
}

/// A host as the live state makes it from a birth, then shaped by the test (fields are public).
fn mk_host(mo: &str, id: &str, role: Role, now: i64) -> Host {
    let birth = dozor_proto::Envelope {
        v: 1,
        mo: mo.into(),
        host: id.into(),
        inst: "i".into(),
        seq: 1,
        ts: now,
        replay: false,
        body: dozor_proto::Birth {
            agent_version: "t".into(),
            role,
            site: String::new(),
            hostname: id.into(),
            os_name: "Astra Linux".into(),
            os_version: "1.7".into(),
            cpu_model: String::new(),
            cpu_count: 1,
            mem_total_bytes: 1,
            disks: Vec::new(),
            boot_time: (now - 86_400_000) / 1000,
            boot_id: "b".into(),
            seq_base: 1,
            interval_secs: 30,
            keepalive_secs: 30,
            prev_end: None,
            will_seq: None,
            targets: Vec::new(),
        },
    };
    let mut live = dozor_live::state::LiveState::new(dozor_live::state::StateConfig::default());
    live.apply(&dozor_proto::Message::Birth(birth), now, false, true)
        .unwrap();
    let mut h = std::sync::Arc::unwrap_or_clone(live.snapshot(now).hosts.remove(0));
    h.state_since_ms = now - 3_600_000;
    h.clock_offset_ms = Some(0);
    h.uptime_secs = 86_400;
    h.boot_time = (now - 86_400_000) / 1000;
    h.probes = vec![ProbeView {
        target: "mis-main".into(),
        category: Category::Mis,
        ok: true,
        latency_ms: Some(20),
        error: None,
        status: Some(200),
        at_ms: now,
    }];
    h
}

impl World {
    fn new(mos: usize, per_mo: usize, start: i64, cfg: AlertsConfig) -> World {
        let mut hosts = Vec::new();
        for m in 1..=mos {
            for h in 1..=per_mo {
                hosts.push(mk_host(
                    &format!("mo{m}"),
                    &format!("pc-{m}-{h:02}"),
                    Role::Workstation,
                    start,
                ));
            }
        }
        World {
            now: start,
            hosts,
            roster: roster(mos),
            engine: Engine::new(cfg, start),
            log: Vec::new(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut hosts: Vec<_> = self
            .hosts
            .iter()
            .cloned()
            .map(std::sync::Arc::new)
            .collect();
        hosts.sort_by(|a, b| (&a.mo, &a.host_id).cmp(&(&b.mo, &b.host_id)));
        Snapshot {
            built_ms: self.now,
            hosts,
            ..Snapshot::default()
        }
    }

    /// Advances the clock by `secs` in 5 s steps: online hosts report fresh probes.
    fn run(&mut self, secs: i64) {
        let end = self.now + secs * 1000;
        while self.now < end {
            self.now += STEP;
            for h in self
                .hosts
                .iter_mut()
                .filter(|h| h.state == ConnState::Online)
            {
                h.last_seen_ms = self.now;
                for p in &mut h.probes {
                    p.at_ms = self.now;
                }
            }
            let snap = self.snapshot();
            let changes = self.engine.evaluate(self.now, &snap, &self.roster);
            self.log.extend(changes);
        }
    }

    fn host_mut(&mut self, id: &str) -> &mut Host {
        self.hosts.iter_mut().find(|h| h.host_id == id).unwrap()
    }

    fn set_target(&mut self, mo: &str, ok: bool) {
        for h in self.hosts.iter_mut().filter(|h| h.mo == mo) {
            for p in &mut h.probes {
                p.ok = ok;
                p.error = (!ok).then_some(dozor_proto::ErrorClass::Timeout);
            }
        }
    }

    fn set_state(&mut self, id: &str, state: ConnState) -> Transition {
        let now = self.now;
        let h = self.host_mut(id);
        let t = Transition {
            mo: h.mo.clone(),
            host_id: h.host_id.clone(),
            role: h.role,
            from: h.state,
            to: state,
            reason: (state == ConnState::Lost).then(|| "last_will".into()),
            at_ms: now,
        };
        h.state = state;
        h.state_since_ms = now;
        if state == ConnState::Online {
            h.last_seen_ms = now;
        }
        t
    }

    /// Notifications sent: (kind, rule, incident id).
    fn sent(&self) -> Vec<(ChangeKind, Rule, u64)> {
        self.log
            .iter()
            .filter(|c| c.notify)
            .map(|c| (c.kind, c.incident.rule, c.incident.id))
            .collect()
    }

    fn incidents(&self, rule: Rule) -> Vec<&Incident> {
        self.engine.incidents().filter(|i| i.rule == rule).collect()
    }
}

#[test]
fn mo_channel_cut_gives_one_incident_then_one_recovery() {
    let mut w = World::new(5, 4, TUE_11, config(|_| {}));
    w.run(60);
    w.set_target("mo2", false);
    w.run(600);
    w.set_target("mo2", true);
    w.run(600);
    let inc = w.incidents(Rule::MoChannel);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    let id = inc[0].id;
    assert_eq!(
        w.sent(),
        vec![
            (ChangeKind::Firing, Rule::MoChannel, id),
            (ChangeKind::Resolved, Rule::MoChannel, id)
        ]
    );
    let i = inc[0];
    assert_eq!(i.state, IncidentState::Resolved);
    assert_eq!(i.mos[0].oid, "mo2");
    assert_eq!(i.host_count, 4);
    assert_eq!(i.target.as_deref(), Some("mis-main"));
    assert_eq!(
        i.title,
        "МО «Поликлиника № 2» потеряла связь с МИС (mis-main)"
    );
    // Fired after for_secs (180 s), resolved when the channel came back.
    assert_eq!(i.fired_ms, Some(TUE_11 + 65_000 + 180_000));
    assert_eq!(i.resolved_ms, Some(TUE_11 + 665_000));
    assert_eq!(i.duration_ms(0), 600_000);
    let resolved = w
        .log
        .iter()
        .find(|c| c.notify && c.kind == ChangeKind::Resolved)
        .unwrap();
    let msg = text::render(resolved, chrono_tz::Europe::Moscow, None);
    assert!(msg.text.contains("Длительность: 10 мин"), "{}", msg.text);
    assert!(
        w.engine.incidents().all(|i| i.rule == Rule::MoChannel),
        "no other incidents"
    );
}

#[test]
fn target_down_everywhere_gives_one_central_incident_only() {
    let mut w = World::new(6, 4, TUE_11, config(|_| {}));
    w.run(30);
    for m in 1..=6 {
        w.set_target(&format!("mo{m}"), false);
    }
    w.run(600);
    for m in 1..=6 {
        w.set_target(&format!("mo{m}"), true);
    }
    w.run(600);
    let central = w.incidents(Rule::CentralOutage);
    assert_eq!(central.len(), 1);
    let c = central[0];
    assert_eq!(c.mo_count, 6);
    assert_eq!(c.host_count, 24);
    assert_eq!(
        c.title,
        "МИС (mis-main) недоступна для всего региона (не достигают МО: 6)"
    );
    assert!(w.incidents(Rule::MoChannel).is_empty());
    assert!(w.incidents(Rule::HostTarget).is_empty());
    assert_eq!(
        w.sent(),
        vec![
            (ChangeKind::Firing, Rule::CentralOutage, c.id),
            (ChangeKind::Resolved, Rule::CentralOutage, c.id)
        ]
    );
}

#[test]
fn central_outage_absorbs_per_mo_incidents_that_began_first() {
    let mut w = World::new(6, 4, TUE_11, config(|_| {}));
    w.run(30);
    // One МО fails first; the others follow 60 s later, before its for_secs.
    w.set_target("mo1", false);
    w.run(60);
    for m in 2..=6 {
        w.set_target(&format!("mo{m}"), false);
    }
    w.run(600);
    let central = w.incidents(Rule::CentralOutage);
    assert_eq!(central.len(), 1);
    let per_mo = w.incidents(Rule::MoChannel);
    assert_eq!(per_mo.len(), 1);
    assert_eq!(per_mo[0].merged_into, Some(central[0].id));
    assert_eq!(per_mo[0].fired_ms, None);
    assert_eq!(central[0].merged, vec![per_mo[0].id]);
    assert_eq!(
        w.sent(),
        vec![(ChangeKind::Firing, Rule::CentralOutage, central[0].id)]
    );
}

#[test]
fn lost_server_gives_one_incident() {
    let mut w = World::new(2, 3, TUE_21, config(|_| {}));
    w.hosts.push(mk_host("mo1", "srv-1", Role::Server, TUE_21));
    w.run(30);
    let t = w.set_state("srv-1", ConnState::Lost);
    // The transition opens the incident at once, before any snapshot shows it.
    let ch = w.engine.on_transition(&t, &w.roster);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].kind, ChangeKind::Opened);
    let stale = Snapshot {
        built_ms: w.now - 1000,
        ..Snapshot::default()
    };
    let now = w.now;
    assert!(
        w.engine.evaluate(now, &stale, &w.roster).is_empty(),
        "an older snapshot cancels nothing"
    );
    w.log.extend(ch);
    w.run(300);
    w.back_with_backlog("srv-1");
    w.run(300);
    let inc = w.incidents(Rule::ServerLost);
    assert_eq!(inc.len(), 1);
    assert_eq!(
        inc[0].title,
        "Сервер srv-1 (МО «Поликлиника № 1») не на связи"
    );
    assert_eq!(
        w.sent(),
        vec![
            (ChangeKind::Firing, Rule::ServerLost, inc[0].id),
            (ChangeKind::Resolved, Rule::ServerLost, inc[0].id)
        ]
    );
    // Down 300 s, seen back at the next evaluation.
    assert_eq!(inc[0].duration_ms(0), 305_000);
    // It came back without a reboot and replayed heartbeats from the outage: it was up but
    // cut off, told in the recovery message.
    assert_eq!(inc[0].cause, Cause::Channel);
    let resolved = w
        .log
        .iter()
        .find(|c| c.notify && c.kind == ChangeKind::Resolved)
        .unwrap();
    let msg = text::render(resolved, chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text.contains("Причина: обрыв канала связи"),
        "{}",
        msg.text
    );
}

#[test]
fn workstations_going_silent_one_by_one_raise_nothing() {
    // In working hours, one every 10 minutes.
    let mut w = World::new(1, 10, TUE_11, config(|_| {}));
    w.run(30);
    for i in 1..=10 {
        w.set_state(&format!("pc-1-{i:02}"), ConnState::Lost);
        w.run(600);
    }
    assert_eq!(w.engine.incidents().count(), 0);
    // After hours, all at once (switched off at the wall).
    let mut w = World::new(1, 10, TUE_21, config(|_| {}));
    w.run(30);
    for i in 1..=10 {
        w.set_state(&format!("pc-1-{i:02}"), ConnState::Lost);
    }
    w.run(3600);
    assert_eq!(w.engine.incidents().count(), 0);
    // Graceful shutdowns in working hours are no outage either.
    let mut w = World::new(1, 10, TUE_11, config(|_| {}));
    w.run(30);
    for i in 1..=10 {
        w.set_state(&format!("pc-1-{i:02}"), ConnState::Offline);
    }
    w.run(600);
    assert_eq!(w.engine.incidents().count(), 0);
}

/// An МО goes dark at 11:00 on a Tuesday: one incident; how it is relabelled depends on what the
/// hosts show when they come back.
fn mo_goes_dark(w: &mut World) -> u64 {
    w.run(30);
    for i in 1..=8 {
        w.set_state(&format!("pc-1-{i:02}"), ConnState::Lost);
        w.run(5);
    }
    w.run(300);
    let inc = w.incidents(Rule::MoUnreachable);
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0].state, IncidentState::Firing);
    assert_eq!(inc[0].cause, Cause::Unknown);
    assert_eq!(inc[0].host_count, 8);
    assert_eq!(
        inc[0].title,
        "МО «Поликлиника № 1» недоступна (не на связи хостов: 8)"
    );
    inc[0].id
}

#[test]
fn unreachable_mo_relabelled_as_channel_from_replayed_backlog() {
    let mut w = World::new(2, 10, TUE_11, config(|_| {}));
    let id = mo_goes_dark(&mut w);
    let start = w.engine.incident(id).unwrap().episode_started_ms;
    // Replayed data never opens incidents.
    let now = w.now;
    assert!(
        w.engine
            .on_replay(now, "mo2", "pc-2-01", start..=now, ReplayKind::Heartbeat)
            .is_empty()
    );
    // The channel comes back; these agents do not tell their boot time.
    for i in 1..=8 {
        let h = format!("pc-1-{i:02}");
        w.host_mut(&h).boot_time = 0;
        w.set_state(&h, ConnState::Online);
    }
    w.run(180);
    assert_eq!(
        w.engine.incident(id).unwrap().state,
        IncidentState::Resolved
    );
    // Their backlogs arrive: heartbeats made while they were cut off.
    for i in 1..=8 {
        let now = w.now;
        let ch = w.engine.on_replay(
            now,
            "mo1",
            &format!("pc-1-{i:02}"),
            start + 10_000..=start + 60_000,
            ReplayKind::Heartbeat,
        );
        w.log.extend(ch);
    }
    w.run(600);
    let inc = w.engine.incident(id).unwrap();
    assert_eq!(inc.cause, Cause::Channel);
    assert_eq!(inc.evidence, Some(Evidence { up: 8, down: 0 }));
    assert_eq!(
        w.sent(),
        vec![
            (ChangeKind::Firing, Rule::MoUnreachable, id),
            (ChangeKind::Resolved, Rule::MoUnreachable, id),
            (ChangeKind::Relabelled, Rule::MoUnreachable, id)
        ]
    );
    let relabel = w
        .log
        .iter()
        .find(|c| c.notify && c.kind == ChangeKind::Relabelled)
        .unwrap();
    let msg = text::render(relabel, chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text.contains("Причина: обрыв канала связи"),
        "{}",
        msg.text
    );
    assert!(
        msg.subject
            .starts_with("[dozor] УТОЧНЕНА ПРИЧИНА: МО «Поликлиника № 1»"),
        "{}",
        msg.subject
    );
}

#[test]
fn unreachable_mo_relabelled_as_power_when_hosts_rebooted() {
    let mut w = World::new(2, 10, TUE_11, config(|_| {}));
    let id = mo_goes_dark(&mut w);
    w.run(600);
    // Power returns: hosts boot and report, with no backlog from the gap.
    for i in 1..=8 {
        let now = w.now;
        let h = w.host_mut(&format!("pc-1-{i:02}"));
        h.boot_time = (now - 60_000) / 1000;
        w.set_state(&format!("pc-1-{i:02}"), ConnState::Online);
    }
    w.run(600);
    let inc = w.engine.incident(id).unwrap();
    assert_eq!(inc.cause, Cause::Power);
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.evidence, Some(Evidence { up: 0, down: 8 }));
    // The hosts came back rebooted while it was recovering: the recovery message tells why.
    let kinds: Vec<ChangeKind> = w.sent().into_iter().map(|s| s.0).collect();
    assert_eq!(kinds, vec![ChangeKind::Firing, ChangeKind::Resolved]);
    let resolved = w
        .log
        .iter()
        .find(|c| c.notify && c.kind == ChangeKind::Resolved)
        .unwrap();
    assert_eq!(resolved.incident.cause, Cause::Power);
    let msg = text::render(resolved, chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text.contains("Причина: отключение электропитания"),
        "{}",
        msg.text
    );
}

#[test]
fn unreachable_only_in_working_hours_and_with_enough_hosts() {
    // Two of three hosts lost: below min_hosts = 3.
    let mut w = World::new(1, 3, TUE_11, config(|_| {}));
    w.run(30);
    w.set_state("pc-1-01", ConnState::Lost);
    w.set_state("pc-1-02", ConnState::Lost);
    w.run(600);
    assert_eq!(w.engine.incidents().count(), 0);
    // Working hours can be ignored (tests, 24/7 hospitals).
    let mut w = World::new(
        1,
        3,
        TUE_21,
        config(|r| r.mo_unreachable.working_hours_only = false),
    );
    w.run(30);
    for i in 1..=3 {
        w.set_state(&format!("pc-1-{i:02}"), ConnState::Lost);
    }
    w.run(600);
    assert_eq!(w.incidents(Rule::MoUnreachable).len(), 1);
}

#[test]
fn unreachable_mo_absorbs_its_lost_server() {
    let mut w = World::new(1, 6, TUE_11, config(|_| {}));
    w.hosts.push(mk_host("mo1", "srv-1", Role::Server, TUE_11));
    w.run(30);
    let mut ts = Vec::new();
    for h in [
        "srv-1", "pc-1-01", "pc-1-02", "pc-1-03", "pc-1-04", "pc-1-05",
    ] {
        ts.push(w.set_state(h, ConnState::Lost));
    }
    for t in &ts {
        let ch = w.engine.on_transition(t, &w.roster);
        w.log.extend(ch);
    }
    w.run(600);
    let sent = w.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1, Rule::MoUnreachable);
    assert!(
        w.incidents(Rule::ServerLost)
            .iter()
            .all(|i| i.fired_ms.is_none())
    );
}

#[test]
fn flapping_target_gives_bounded_notifications_on_one_incident() {
    let mut w = World::new(
        1,
        4,
        TUE_11,
        config(|r| {
            r.mo_channel.for_secs = 30;
            r.mo_channel.resolve_after_secs = 30;
        }),
    );
    w.run(30);
    // Down 2 minutes, up 2 minutes, for two hours.
    for _ in 0..30 {
        w.set_target("mo1", false);
        w.run(120);
        w.set_target("mo1", true);
        w.run(120);
    }
    let inc = w.incidents(Rule::MoChannel);
    assert_eq!(inc.len(), 1, "reopened, not new");
    assert!(inc[0].reopened >= 29);
    let sent = w.sent();
    // At most 4 per hour (flap_max_notifications per flap_window_secs).
    assert!(sent.len() <= 8, "{} notifications: {sent:?}", sent.len());
    // The last thing people were told is the truth: it recovered.
    w.run(3600);
    assert_eq!(w.sent().last().map(|s| s.0), Some(ChangeKind::Resolved));
}

#[test]
fn silenced_incidents_are_recorded_not_notified() {
    let silence = |mo: &str, ends_ms: i64| Silence {
        id: "s-1".into(),
        matcher: SilenceMatch {
            mo: Some(mo.into()),
            ..SilenceMatch::default()
        },
        starts_ms: 0,
        ends_ms,
        comment: "работы на канале".into(),
        created_by: "test".into(),
        created_ms: 0,
    };
    let mut w = World::new(3, 4, TUE_11, config(|_| {}));
    w.engine
        .set_api_silences(vec![silence("mo1", TUE_11 + 1_800_000)]);
    w.run(30);
    w.set_target("mo1", false);
    w.run(600);
    let inc = w.incidents(Rule::MoChannel);
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0].state, IncidentState::Firing);
    assert_eq!(inc[0].silenced_by.as_deref(), Some("s-1"));
    assert!(w.sent().is_empty());
    // The silence expires while it still fires: now people are told.
    w.run(1_800);
    assert_eq!(
        w.sent(),
        vec![(ChangeKind::Firing, Rule::MoChannel, inc_id(&w))]
    );
    // A configured silence by rule covers another МО.
    let mut w = World::new(
        3,
        4,
        TUE_11,
        config(|r| {
            r.silence.push(crate::config::RawSilence {
                mo: None,
                target: Some("mis-main".into()),
                host: None,
                rule: Some("mo_channel".into()),
                from: None,
                until: "2030-01-01T00:00:00+03:00".into(),
                comment: String::new(),
            });
        }),
    );
    w.run(30);
    w.set_target("mo3", false);
    w.run(600);
    w.set_target("mo3", true);
    w.run(600);
    assert_eq!(w.incidents(Rule::MoChannel).len(), 1);
    assert!(w.sent().is_empty());
}

fn inc_id(w: &World) -> u64 {
    w.incidents(Rule::MoChannel)[0].id
}

#[test]
fn single_host_failure_is_recorded_not_paged() {
    let mut w = World::new(2, 4, TUE_11, config(|_| {}));
    w.run(30);
    for p in &mut w.host_mut("pc-1-03").probes {
        p.ok = false;
    }
    w.run(600);
    let inc = w.incidents(Rule::HostTarget);
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0].state, IncidentState::Firing);
    assert_eq!(inc[0].severity, Severity::Info);
    assert_eq!(
        inc[0].title,
        "Хост pc-1-03 (МО «Поликлиника № 1») не достигает МИС (mis-main)"
    );
    assert!(w.sent().is_empty());
    assert_eq!(w.engine.incidents().count(), 1);
}

#[test]
fn disk_full_and_clock_skew() {
    let mut w = World::new(1, 3, TUE_11, config(|_| {}));
    let mut srv = mk_host("mo1", "srv-1", Role::Server, TUE_11);
    srv.resources = Some(Resources {
        cpu_pct: 1.0,
        mem_used_bytes: 1,
        mem_total_bytes: 2,
        load: None,
        disks: vec![
            DiskUsage {
                mount: "/".into(),
                total_bytes: 100,
                used_bytes: 50,
            },
            DiskUsage {
                mount: "/var".into(),
                total_bytes: 1000,
                used_bytes: 955,
            },
        ],
        spool: None,
    });
    w.hosts.push(srv);
    w.host_mut("pc-1-01").clock_offset_ms = Some(-600_000);
    w.host_mut("pc-1-02").clock_offset_ms = Some(30_000);
    w.run(900);
    let disk = w.incidents(Rule::DiskFull);
    assert_eq!(disk.len(), 1);
    assert_eq!(
        disk[0].title,
        "На сервере srv-1 (МО «Поликлиника № 1») заканчивается место: /var заполнен на 96 %"
    );
    let skew = w.incidents(Rule::ClockSkew);
    assert_eq!(skew.len(), 1);
    assert_eq!(skew[0].hosts, vec!["pc-1-01".to_string()]);
    assert_eq!(
        skew[0].title,
        "Расхождение часов в МО «Поликлиника № 1» (хостов: 1, до 600 с)"
    );
    assert_eq!(w.sent().len(), 2);
}

#[test]
fn restored_incidents_do_not_page_again_nor_resolve_during_grace() {
    let mut w = World::new(3, 4, TUE_11, config(|_| {}));
    w.run(30);
    w.set_target("mo1", false);
    w.run(600);
    assert_eq!(w.sent().len(), 1);
    let tracks: Vec<Track> = w.engine.tracks.values().cloned().collect();
    let next = w.engine.next_id();
    // Restart: a new engine with the journal's tracks and an empty live state at first.
    let mut e = Engine::new(config(|r| r.startup_grace_secs = 120), w.now);
    e.restore(tracks, next, w.now);
    w.engine = e;
    w.log.clear();
    let saved = std::mem::take(&mut w.hosts);
    w.run(60);
    w.hosts = saved;
    w.run(600);
    assert!(w.sent().is_empty(), "{:?}", w.sent());
    assert_eq!(w.incidents(Rule::MoChannel)[0].state, IncidentState::Firing);
}

impl World {
    /// A server goes lost: the pipeline's transition opens the incident at once.
    fn lose(&mut self, id: &str) {
        let t = self.set_state(id, ConnState::Lost);
        let ch = self.engine.on_transition(&t, &self.roster);
        self.log.extend(ch);
    }

    /// A host comes back and replays its backlog (heartbeats from the outage) before the next
    /// evaluation notices it is back, as the pipeline does on reconnect.
    fn back_with_backlog(&mut self, id: &str) {
        self.set_state(id, ConnState::Online);
        let (now, mo) = (self.now, self.host_mut(id).mo.clone());
        let ch = self.engine.on_replay(
            now,
            &mo,
            id,
            now - 20_000..=now - 10_000,
            ReplayKind::Heartbeat,
        );
        self.log.extend(ch);
    }

    /// Heads of the messages sent (`АВАРИЯ`, `АВАРИЯ (повторно: 1)`, `ВОССТАНОВЛЕНО`, …).
    fn heads(&self) -> Vec<String> {
        self.log
            .iter()
            .filter(|c| c.notify)
            .map(|c| {
                let r = text::render(c, chrono_tz::Europe::Moscow, None);
                let s = r.subject.strip_prefix("[dozor] ").unwrap_or(&r.subject);
                let title = format!(": {}", c.incident.title);
                s.strip_suffix(&title).unwrap_or(s).to_string()
            })
            .collect()
    }
}

/// A world with one server `srv-1` in МО 1 (server_lost: for 60 s, resolve 60 s).
fn server_world(f: impl FnOnce(&mut RawAlerts)) -> World {
    let mut w = World::new(1, 3, TUE_21, config(f));
    w.hosts.push(mk_host("mo1", "srv-1", Role::Server, TUE_21));
    w.run(30);
    w
}

fn server_lost_id(w: &World) -> u64 {
    let inc = w.incidents(Rule::ServerLost);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    inc[0].id
}

#[test]
fn same_server_lost_twice_within_flap_window_gives_two_firings_and_two_recoveries() {
    let mut w = server_world(|_| {});
    // First outage, told; it comes back with its backlog: cause "channel".
    w.lose("srv-1");
    w.run(120);
    w.back_with_backlog("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    assert_eq!(w.engine.incident(id).unwrap().cause, Cause::Channel);
    // The same server again within the flap window: the incident reopens.
    w.lose("srv-1");
    w.run(120);
    w.back_with_backlog("srv-1");
    w.run(120);
    use ChangeKind::*;
    assert_eq!(
        w.sent(),
        vec![
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id),
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id),
        ]
    );
    assert_eq!(
        w.heads(),
        vec![
            "АВАРИЯ",
            "ВОССТАНОВЛЕНО",
            "АВАРИЯ (повторно: 1)",
            "ВОССТАНОВЛЕНО"
        ]
    );
    let inc = w.engine.incident(id).unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.reopened, 1);
    // Both recoveries say why.
    for c in w.log.iter().filter(|c| c.notify && c.kind == Resolved) {
        assert_eq!(c.incident.cause, Cause::Channel);
        let msg = text::render(c, chrono_tz::Europe::Moscow, None);
        assert!(
            msg.text.contains("Причина: обрыв канала связи"),
            "{}",
            msg.text
        );
    }
}

#[test]
fn relabel_not_sent_while_pending() {
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    w.run(120);
    w.back_with_backlog("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    let told = w.sent().len();
    assert_eq!(told, 2);
    // Lost again: the reopened incident is pending with cause "host silent"; people were last
    // told "channel", but nothing is sent before it fires.
    w.lose("srv-1");
    let inc = w.engine.incident(id).unwrap();
    assert_eq!(inc.state, IncidentState::Pending);
    assert_eq!(inc.cause, Cause::HostSilent);
    w.run(30);
    assert_eq!(w.sent().len(), told, "{:?}", w.sent());
    // It is back before for_secs: a blip, resolved unsent, even though its cause is labelled.
    w.back_with_backlog("srv-1");
    w.run(300);
    let inc = w.engine.incident(id).unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.cause, Cause::Channel);
    assert_eq!(w.sent().len(), told, "{:?}", w.sent());
}

#[test]
fn recovery_carries_the_cause_instead_of_a_separate_relabel() {
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    // The backlog arrives before the next evaluation has seen the server back.
    let before = w.log.len();
    w.back_with_backlog("srv-1");
    assert!(
        w.log[before..].iter().all(|c| !c.notify),
        "{:?}",
        &w.log[before..]
    );
    assert_eq!(w.engine.incident(id).unwrap().cause, Cause::Channel);
    w.run(120);
    use ChangeKind::*;
    assert_eq!(
        w.sent(),
        vec![
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id)
        ]
    );
    let resolved = w.log.iter().rfind(|c| c.notify).unwrap();
    assert_eq!(resolved.incident.cause, Cause::Channel);
    let msg = text::render(resolved, chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text.contains("Причина: обрыв канала связи"),
        "{}",
        msg.text
    );
}

#[test]
fn relabel_of_a_firing_incident_is_sent_once_the_outage_goes_on() {
    // Evidence while the outage still holds (the host replayed, yet stays lost): once an
    // evaluation sees the condition still present, the relabel goes out.
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    let now = w.now;
    let ch = w.engine.on_replay(
        now,
        "mo1",
        "srv-1",
        now - 20_000..=now - 10_000,
        ReplayKind::Heartbeat,
    );
    assert!(ch.iter().all(|c| !c.notify), "{ch:?}");
    w.log.extend(ch);
    w.run(5);
    use ChangeKind::*;
    assert_eq!(
        w.sent(),
        vec![
            (Firing, Rule::ServerLost, id),
            (Relabelled, Rule::ServerLost, id)
        ]
    );
}

#[test]
fn sustained_outage_after_flap_budget_is_sent_after_flap_hold_secs() {
    let mut w = server_world(|r| r.flap_hold_secs = 120);
    // Two told episodes use the budget of 4.
    for _ in 0..2 {
        w.lose("srv-1");
        w.run(120);
        w.back_with_backlog("srv-1");
        w.run(120);
    }
    let id = server_lost_id(&w);
    assert_eq!(w.sent().len(), 4);
    // A short episode over the budget: fires, but is not told, nor is its recovery.
    w.lose("srv-1");
    w.run(90);
    assert_eq!(w.engine.incident(id).unwrap().state, IncidentState::Firing);
    w.back_with_backlog("srv-1");
    w.run(120);
    assert_eq!(w.sent().len(), 4, "{:?}", w.sent());
    // Then a real outage: held back at first, sent once it has fired for flap_hold_secs.
    w.lose("srv-1");
    w.run(100);
    assert_eq!(w.engine.incident(id).unwrap().state, IncidentState::Firing);
    assert_eq!(w.sent().len(), 4, "{:?}", w.sent());
    let fired_at = w.now - 40_000;
    w.run(120);
    assert_eq!(w.sent().len(), 5, "{:?}", w.sent());
    let firing = w.log.iter().rfind(|c| c.notify).unwrap();
    assert_eq!(firing.kind, ChangeKind::Firing);
    assert_eq!(firing.at_ms, fired_at + 120_000);
    // Its recovery is always sent, over the budget too.
    w.back_with_backlog("srv-1");
    w.run(120);
    use ChangeKind::*;
    assert_eq!(
        w.sent(),
        vec![
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id),
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id),
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id),
        ]
    );
    assert_eq!(
        w.heads(),
        vec![
            "АВАРИЯ",
            "ВОССТАНОВЛЕНО",
            "АВАРИЯ (повторно: 1)",
            "ВОССТАНОВЛЕНО",
            "АВАРИЯ (повторно: 2)",
            "ВОССТАНОВЛЕНО"
        ]
    );
    assert_eq!(w.engine.incident(id).unwrap().reopened, 3);
}

#[test]
fn recovery_of_a_told_firing_is_never_held_by_the_flap_limit() {
    // flap_max_notifications = 2: a firing sent after the window freed one slot still gets its
    // recovery although that makes three in the window.
    let mut w = server_world(|r| {
        r.flap_max_notifications = 2;
        r.flap_window_secs = 600;
    });
    w.lose("srv-1");
    w.run(120);
    w.back_with_backlog("srv-1");
    w.run(120);
    // Firing at +60 s and recovery at +180 s are in the window; a second outage at +240 s
    // fires at +300 s (held), and is sent at +660 s when the first firing left the window.
    w.lose("srv-1");
    w.run(480);
    assert_eq!(w.sent().len(), 3, "{:?}", w.sent());
    w.back_with_backlog("srv-1");
    w.run(120);
    let kinds: Vec<ChangeKind> = w.sent().into_iter().map(|s| s.0).collect();
    use ChangeKind::*;
    assert_eq!(kinds, vec![Firing, Resolved, Firing, Resolved]);
}

#[test]
fn first_notified_firing_says_no_repeat() {
    let mut w = server_world(|_| {});
    // A blip: pending, back before for_secs; nobody is told.
    w.lose("srv-1");
    w.run(30);
    w.back_with_backlog("srv-1");
    w.run(120);
    assert!(w.sent().is_empty(), "{:?}", w.sent());
    // A real outage within the flap window reopens the same incident.
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    assert_eq!(w.engine.incident(id).unwrap().reopened, 1);
    assert_eq!(w.heads(), vec!["АВАРИЯ"]);
    let firing = w.log.iter().find(|c| c.notify).unwrap();
    assert_eq!(firing.incident.repeat, 0);
}

#[test]
fn per_mo_incident_merged_before_firing_is_no_repeat_later() {
    let mut w = World::new(6, 4, TUE_11, config(|_| {}));
    w.run(30);
    // МО 1 fails first; its pending incident is absorbed by the central outage.
    w.set_target("mo1", false);
    w.run(60);
    for m in 2..=6 {
        w.set_target(&format!("mo{m}"), false);
    }
    w.run(300);
    for m in 1..=6 {
        w.set_target(&format!("mo{m}"), true);
    }
    w.run(300);
    // Later only МО 1 loses the МИС: the same per-МО incident reopens and is told first time.
    w.set_target("mo1", false);
    w.run(300);
    let per_mo = w.incidents(Rule::MoChannel);
    assert_eq!(per_mo.len(), 1);
    assert!(per_mo[0].reopened >= 1);
    assert_eq!(per_mo[0].state, IncidentState::Firing);
    assert_eq!(w.heads(), vec!["АВАРИЯ", "ВОССТАНОВЛЕНО", "АВАРИЯ"]);
}

/// A server comes back on the same boot of its machine without replaying anything from the
/// outage (the agent was killed and a new one started): «агент не работал».
fn back_without_backlog(w: &mut World, id: &str) {
    w.set_state(id, ConnState::Online);
}

#[test]
fn killed_agent_is_told_apart_from_a_channel_break_and_from_power() {
    // Agent killed, machine and link fine: a new agent on the same boot, nothing replayed.
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    back_without_backlog(&mut w, "srv-1");
    w.run(120);
    let inc = w.engine.incident(id).unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.cause, Cause::AgentDown);
    use ChangeKind::*;
    assert_eq!(
        w.sent(),
        vec![
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id)
        ]
    );
    let resolved = w.log.iter().rfind(|c| c.notify).unwrap();
    assert_eq!(resolved.incident.cause, Cause::AgentDown);
    let msg = text::render(resolved, chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text
            .contains("Причина: агент не работал (служба агента остановлена или зависла)"),
        "{}",
        msg.text
    );
    assert!(!msg.text.contains("канала"), "{}", msg.text);

    // A channel break: the same agent kept running and replays its heartbeats from inside
    // the outage (here after the evaluation saw it back: the replay corrects the cause).
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    back_without_backlog(&mut w, "srv-1");
    w.run(10);
    assert_eq!(w.engine.incident(id).unwrap().cause, Cause::AgentDown);
    let now = w.now;
    let ch = w.engine.on_replay(
        now,
        "mo1",
        "srv-1",
        now - 60_000..=now - 60_000,
        ReplayKind::Heartbeat,
    );
    w.log.extend(ch);
    w.run(120);
    let resolved = w.log.iter().rfind(|c| c.notify).unwrap();
    assert_eq!(resolved.kind, Resolved);
    assert_eq!(resolved.incident.cause, Cause::Channel);

    // A heartbeat queued just before the kill and re-sent by the next agent is no sign of life.
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    let lost_at = w.now;
    w.run(120);
    back_without_backlog(&mut w, "srv-1");
    let now = w.now;
    let ch = w.engine.on_replay(
        now,
        "mo1",
        "srv-1",
        lost_at - 100..=lost_at + 200,
        ReplayKind::Heartbeat,
    );
    w.log.extend(ch);
    // Nor one the new agent made before its connection was up (spooled, so replayed).
    let ch = w.engine.on_replay(
        now,
        "mo1",
        "srv-1",
        now - 700..=now - 700,
        ReplayKind::Heartbeat,
    );
    w.log.extend(ch);
    w.run(120);
    assert_eq!(
        w.log.iter().rfind(|c| c.notify).unwrap().incident.cause,
        Cause::AgentDown
    );

    // Power: the machine rebooted during the outage.
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    w.run(120);
    let now = w.now;
    w.host_mut("srv-1").boot_time = (now - 30_000) / 1000;
    back_without_backlog(&mut w, "srv-1");
    w.run(120);
    assert_eq!(
        w.log.iter().rfind(|c| c.notify).unwrap().incident.cause,
        Cause::Power
    );
}

#[test]
fn an_acknowledged_incident_stops_repeating_but_its_recovery_is_sent() {
    let mut w = server_world(|_| {});
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    let ack = crate::model::Ack {
        by: "ivanov".into(),
        at_ms: w.now,
        comment: "выехали на место".into(),
    };
    let c = w.engine.acknowledge(id, ack.clone(), w.now).unwrap();
    assert_eq!(c.kind, ChangeKind::Acknowledged);
    assert!(!c.notify);
    assert!(w.engine.acknowledge(999, ack.clone(), w.now).is_none());
    assert_eq!(
        w.engine
            .take_dirty()
            .0
            .iter()
            .map(|t| t.inc.id)
            .collect::<Vec<_>>(),
        vec![id],
        "the acknowledgement is persisted"
    );
    // The recovery of the told firing is sent, and says who took it.
    w.back_with_backlog("srv-1");
    w.run(120);
    // Flapping afterwards: the reopened episodes fire, but nobody is told again.
    for _ in 0..3 {
        w.lose("srv-1");
        w.run(120);
        assert_eq!(w.engine.incident(id).unwrap().state, IncidentState::Firing);
        w.back_with_backlog("srv-1");
        w.run(120);
    }
    use ChangeKind::*;
    assert_eq!(
        w.sent(),
        vec![
            (Firing, Rule::ServerLost, id),
            (Resolved, Rule::ServerLost, id)
        ]
    );
    let inc = w.engine.incident(id).unwrap();
    assert_eq!(inc.reopened, 3);
    assert_eq!(inc.ack.as_ref(), Some(&ack));
    let resolved = w
        .log
        .iter()
        .find(|c| c.notify && c.kind == Resolved)
        .unwrap();
    let msg = text::render(resolved, chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text
            .contains("Принято в работу: ivanov, 09.01.2024 21:02:30 MSK — «выехали на место»"),
        "{}",
        msg.text
    );
}

#[test]
fn texts_name_hosts_and_sites_and_link_to_the_incident() {
    let mut w = server_world(|_| {});
    {
        let h = w.host_mut("srv-1");
        h.hostname = "srv-mis-01".into();
        h.site = "Стационар".into();
    }
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    let firing = w.log.iter().find(|c| c.notify).unwrap();
    assert_eq!(
        firing.incident.title,
        "Сервер srv-mis-01 (подразделение «Стационар», МО «Поликлиника № 1») не на связи"
    );
    let msg = text::render(
        firing,
        chrono_tz::Europe::Moscow,
        Some("https://dozor.miac.local/"),
    );
    assert!(
        msg.text
            .contains("Хосты (1): srv-mis-01 (подразделение «Стационар»)\n"),
        "{}",
        msg.text
    );
    assert!(
        msg.text.ends_with(&format!(
            "Инцидент №{id}\nПодробнее: https://dozor.miac.local/incidents/{id}"
        )),
        "{}",
        msg.text
    );
    // Without a public URL, no link.
    let msg = text::render(firing, chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text.ends_with(&format!("Инцидент №{id}")),
        "{}",
        msg.text
    );
}

/// A server switched off inside a planned work of its host: recorded, never told, not even
/// by the instant path (`on_transition`); the same server lost after the window is told.
#[test]
fn planned_work_silences_its_server_and_only_while_in_force() {
    let mut w = server_world(|_| {});
    let raw = dozor_availability::planned::RawPlannedWork {
        title: "Замена ИБП".into(),
        mo: Some("mo1".into()),
        host: Some("srv-1".into()),
        from: Some("2024-01-09T21:00:00+03:00".into()),
        to: Some("2024-01-09T21:10:00+03:00".into()),
        ..Default::default()
    };
    w.engine.set_planned(vec![crate::planned::Planned {
        id: "p-1".into(),
        work: raw.validate(0).unwrap(),
    }]);
    w.run(5);
    w.lose("srv-1");
    w.run(120);
    let id = server_lost_id(&w);
    assert_eq!(
        w.engine.incident(id).unwrap().silenced_by.as_deref(),
        Some("planned-p-1")
    );
    w.back_with_backlog("srv-1");
    w.run(120);
    assert!(w.sent().is_empty(), "{:?}", w.sent());
    // After the window (21:10): the same server lost is told.
    w.run(600);
    w.lose("srv-1");
    w.run(120);
    assert_eq!(
        w.sent().iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![ChangeKind::Firing]
    );
}

/// A server still lost when its planned work ends is told then, and the message says the works
/// are over and the trouble is not.
#[test]
fn a_planned_work_that_ends_with_the_server_still_lost_is_told_so() {
    let mut w = server_world(|_| {});
    let raw = dozor_availability::planned::RawPlannedWork {
        title: "Замена ИБП".into(),
        mo: Some("mo1".into()),
        host: Some("srv-1".into()),
        from: Some("2024-01-09T21:00:00+03:00".into()),
        to: Some("2024-01-09T21:05:00+03:00".into()),
        ..Default::default()
    };
    w.engine.set_planned(vec![crate::planned::Planned {
        id: "p-7".into(),
        work: raw.validate(0).unwrap(),
    }]);
    w.run(5);
    w.lose("srv-1");
    w.run(120);
    assert!(w.sent().is_empty(), "{:?}", w.sent());
    // 21:05 passes; the server is still lost.
    w.run(240);
    let firing: Vec<&Change> = w.log.iter().filter(|c| c.notify).collect();
    assert_eq!(firing.len(), 1, "{:?}", w.sent());
    assert_eq!(firing[0].kind, ChangeKind::Firing);
    let msg = text::render(firing[0], chrono_tz::Europe::Moscow, None);
    assert!(
        msg.text
            .contains("Плановые работы «Замена ИБП» закончились, а неисправность осталась\n"),
        "{}",
        msg.text
    );
}
