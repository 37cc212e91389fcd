//! The worked example of docs/indicators.md ("A worked example: one МО, one day"): builds that
//! day from stored-interval rows with the real maths and compares every figure with the doc's
//! table, which this test parses, so the doc cannot drift. A new state (planned works, "off in
//! working hours") is a new row in the doc's table plus a new host in `day()`.

use dozor_availability::{
    ChannelAgg, GapCause, HostAgg, MoSpans, Ms, Outages, SegRow, WorkCal, host_agg, resource,
    timeline::host_agg_planned,
};
use std::collections::BTreeMap;

const DOC: &str = include_str!("../../docs/indicators.md");
const S: Ms = 1000;
const M: Ms = 60 * S;
const H: Ms = 60 * M;
/// 2024-03-05 00:00 Europe/Moscow (a Tuesday), Unix ms.
const DAY: Ms = 1_709_586_000_000;
/// Heartbeat interval 30 s: a host is overdue after 2.5 intervals.
const TOL: Ms = 75 * S;

fn at(h: i64, m: i64) -> Ms {
    DAY + h * H + m * M
}

fn seg(start: Ms, end: Ms, cause: GapCause, next: Option<Ms>) -> SegRow {
    SegRow {
        start,
        end,
        cause,
        next,
    }
}

/// `h:mm:ss`.
fn hms(ms: Ms) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn pct(up: Ms, down: Ms) -> String {
    if up + down == 0 {
        return "—".into();
    }
    format!("{:.2} %", up as f64 / (up + down) as f64 * 100.0)
}

/// The day's rows, as the doc's table shows them: key → (up, down, unknown, planned, off in
/// working hours, availability).
fn day() -> BTreeMap<String, [String; 6]> {
    let (a, b) = (DAY, DAY + 24 * H);
    // The collector was stopped 13:00–13:10 (runs before and after).
    let outages = Outages::from_runs(&[(a - 24 * H, at(13, 0)), (at(13, 10), b + 24 * H)], b);
    let work = WorkCal::default().windows(a, b);
    // Planned works on `srv-mis-02` 02:00–04:00 (announced: an update with a reboot), and on
    // `arm-04`'s site 14:00–16:00.
    let planned = [(at(2, 0), at(4, 0))];
    let planned_arm = [(at(14, 0), at(16, 0))];
    let hosts: Vec<(&str, bool, Vec<SegRow>)> = vec![
        // Server: stopped for its planned update at 02:10 (lost: the update killed the agent
        // first), back at 02:40, inside the announced window: planned, not down.
        (
            "srv-mis-02",
            true,
            vec![
                seg(a - H, at(2, 10), GapCause::Lost, Some(at(2, 40))),
                seg(at(2, 40), b + H, GapCause::Pending, None),
            ],
        ),
        // Server: crashed at 03:00 (last will: lost), back at 03:30; its spool filled the
        // collector's stop, so it is up through it.
        (
            "srv-lis-01",
            true,
            vec![
                seg(a - H, at(3, 0), GapCause::Lost, Some(at(3, 30))),
                seg(at(3, 30), b + H, GapCause::Pending, None),
            ],
        ),
        // Workstation switched off for lunch 12:00–13:30 and in the evening at 18:00.
        (
            "arm-01",
            false,
            vec![
                seg(at(8, 0), at(12, 0), GapCause::Shutdown, Some(at(13, 30))),
                seg(at(13, 30), at(18, 0), GapCause::Shutdown, Some(b + 10 * H)),
            ],
        ),
        // Workstation without power 11:00–14:00 (lost); the collector's stop 13:00–13:10 and
        // the reconnect allowance after it are unknown; switched off at 20:00.
        (
            "arm-02",
            false,
            vec![
                seg(at(8, 0), at(11, 0), GapCause::Lost, Some(at(14, 0))),
                seg(at(14, 0), at(20, 0), GapCause::Shutdown, Some(b + 10 * H)),
            ],
        ),
        // Workstation switched off at 14:00 for the МО's planned works 14:00–16:00 (its
        // network was being rewired), on again at 16:00, off at 20:00.
        (
            "arm-04",
            false,
            vec![
                seg(at(8, 0), at(14, 0), GapCause::Shutdown, Some(at(16, 0))),
                seg(at(16, 0), at(20, 0), GapCause::Shutdown, Some(b + 10 * H)),
            ],
        ),
        // Workstation that crashed and rebooted at 10:00 (back at 10:03).
        (
            "arm-03",
            false,
            vec![
                seg(at(8, 0), at(10, 0), GapCause::Reboot, Some(at(10, 3))),
                seg(at(10, 3), at(19, 0), GapCause::Shutdown, Some(b + 10 * H)),
            ],
        ),
    ];
    let mut out = BTreeMap::new();
    let mut ws = HostAgg::default();
    let mut srv = HostAgg::default();
    let (mut ws_planned, mut srv_planned) = (0, 0);
    let dash = || "—".to_string();
    for (name, server, segs) in &hosts {
        let mut g = host_agg(segs, &[], TOL, &outages, &work, a, b);
        // As the store's reader does: the down time inside the host's planned windows leaves
        // `down` for `planned`.
        let windows: &[(Ms, Ms)] = match *name {
            "srv-mis-02" => &planned,
            "arm-04" => &planned_arm,
            _ => &[],
        };
        let (_, pl) = host_agg_planned(segs, &[], TOL, &outages, &work, windows, a, b);
        g.down_ms -= pl.planned_ms;
        g.down_w_ms -= pl.planned_w_ms;
        g.off_w_ms -= pl.off_w_ms;
        g.off_w_days -= pl.off_w_days;
        let (up, down, unk) = g.for_role(*server);
        let pl_ms = if *server {
            pl.planned_ms
        } else {
            pl.planned_w_ms
        };
        let off = if *server { dash() } else { hms(g.off_w_ms) };
        out.insert(
            name.to_string(),
            [hms(up), hms(down), hms(unk), hms(pl_ms), off, pct(up, down)],
        );
        if *server {
            srv.add(&g);
            srv_planned += pl_ms;
        } else {
            ws.add(&g);
            ws_planned += pl_ms;
        }
    }
    let (up, down, unk) = ws.for_role(false);
    out.insert(
        "МО: АРМ".into(),
        [
            hms(up),
            hms(down),
            hms(unk),
            hms(ws_planned),
            hms(ws.off_w_ms),
            pct(up, down),
        ],
    );
    let (up, down, unk) = srv.for_role(true);
    out.insert(
        "МО: серверы".into(),
        [
            hms(up),
            hms(down),
            hms(unk),
            hms(srv_planned),
            dash(),
            pct(up, down),
        ],
    );

    // The ЛИС seen from this МО (ЦРБ) and from another (Поликлиника), both observing it
    // 08:00–20:00: ЦРБ's channel broken 10:00–11:00 (it reaches nothing), the ЛИС down for
    // everyone 15:00–15:30.
    const LIS: usize = 2;
    const MIS: usize = 0;
    let obs = [(at(8, 0), at(20, 0))];
    let mut crb = MoSpans::default();
    crb.seen[LIS] = obs.to_vec();
    crb.ok[LIS] = vec![
        (at(8, 0), at(10, 0)),
        (at(11, 0), at(15, 0)),
        (at(15, 30), at(20, 0)),
    ];
    crb.seen[MIS] = obs.to_vec();
    crb.ok[MIS] = vec![(at(8, 0), at(10, 0)), (at(11, 0), at(20, 0))];
    let mut poli = MoSpans::default();
    poli.seen[LIS] = obs.to_vec();
    poli.ok[LIS] = vec![(at(8, 0), at(15, 0)), (at(15, 30), at(20, 0))];
    let r = resource(
        &[("ЦРБ".into(), crb), ("Поликлиника".into(), poli)],
        LIS,
        a,
        b,
    );
    out.insert(
        "ЛИС: ресурс".into(),
        [
            hms(r.resource_up_ms),
            hms(r.resource_down_ms),
            hms(r.resource_unknown_ms),
            dash(),
            dash(),
            pct(r.resource_up_ms, r.resource_down_ms),
        ],
    );
    for (mo, ch) in &r.channels {
        let ChannelAgg {
            channel_ok_ms,
            channel_fail_ms,
        } = *ch;
        out.insert(
            format!("ЛИС: канал {mo}"),
            [
                hms(channel_ok_ms),
                hms(channel_fail_ms),
                dash(),
                dash(),
                dash(),
                pct(channel_ok_ms, channel_fail_ms),
            ],
        );
    }
    out
}

/// The doc's table: rows between the `worked-example` markers, `| key | … | up | down |
/// unknown | planned | off in working hours | availability |`.
fn doc_table() -> BTreeMap<String, [String; 6]> {
    let start = DOC
        .find("<!-- worked-example:start -->")
        .expect("the worked example's start marker");
    let end = DOC
        .find("<!-- worked-example:end -->")
        .expect("the worked example's end marker");
    let mut out = BTreeMap::new();
    for line in DOC[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        if cells.len() < 8 || cells[0] == "row" || cells[0].starts_with("---") {
            continue;
        }
        let n = cells.len();
        let v: [String; 6] = std::array::from_fn(|i| cells[n - 6 + i].clone());
        out.insert(cells[0].clone(), v);
    }
    out
}

#[test]
fn worked_example_matches_the_doc() {
    let got = day();
    let doc = doc_table();
    let mut table = String::new();
    for (k, v) in &got {
        table.push_str(&format!("| `{k}` | {} |\n", v.join(" | ")));
    }
    assert_eq!(
        doc, got,
        "docs/indicators.md's worked example differs from the maths; computed:\n{table}"
    );
}
