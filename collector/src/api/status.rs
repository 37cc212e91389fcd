//! `GET /`: a plain Russian status page of МО and hosts (the full dashboard comes later).

use super::{ApiState, mo_table};
use axum::extract::State;
use axum::response::Html;
use dozor_proto::{ConnState, Role};
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn state_ru(s: ConnState) -> &'static str {
    match s {
        ConnState::Online => "в сети",
        ConnState::Offline => "выключен",
        ConnState::Lost => "потерян",
    }
}

/// Renders the page from the latest snapshot.
pub(super) async fn page(State(s): State<ApiState>) -> Html<String> {
    let snap = s.snapshot.borrow().clone();
    let table = mo_table(&snap, &s.roster);
    let mut h = String::with_capacity(64 * 1024);
    let quarter = {
        use chrono::Datelike;
        let now = chrono::Utc::now();
        format!("{}-Q{}", now.year(), (now.month() - 1) / 3 + 1)
    };
    let online = snap
        .hosts
        .iter()
        .filter(|h| h.state == ConnState::Online)
        .count();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"ru\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
         <title>dozor — состояние</title><style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:2em}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}th{{background:#eee}}.bad{{color:#b00}}.ok{{color:#070}}</style></head><body>\
         <h1>dozor — мониторинг АРМ и серверов</h1><p>Хостов: {} · в сети: {} · \
         <a href=\"/api/v1/indicators?period={q}\">показатели за {q}</a> · \
         <a href=\"/api/v1/indicators?period={q}&amp;format=xlsx\">выгрузка XLSX</a> · \
         <a href=\"/api/v1/mos\">API</a> · <a href=\"/metrics\">метрики</a></p>",
        snap.hosts.len(),
        online,
        q = quarter
    );
    h.push_str("<h2>Медицинские организации</h2><table><tr><th>МО</th><th>OID</th><th>План АРМ</th><th>АРМ учтено</th><th>АРМ в сети</th><th>Серверов в сети</th><th>Доступ к МИС сейчас</th></tr>");
    for m in &table {
        let mis = if m.hosts_probing_mis == 0 {
            "—".to_string()
        } else {
            let cls = if m.hosts_reaching_mis == 0 {
                "bad"
            } else {
                "ok"
            };
            format!(
                "<span class=\"{cls}\">{} из {}</span>",
                m.hosts_reaching_mis, m.hosts_probing_mis
            )
        };
        let name = m
            .name
            .as_deref()
            .map_or_else(|| "<i>нет в реестре</i>".to_string(), esc);
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} из {}</td><td>{mis}</td></tr>",
            esc(&m.oid),
            m.planned_arm.map_or("—".into(), |p| p.to_string()),
            m.workstations_seen,
            m.workstations_online,
            m.servers_online,
            m.servers
        );
    }
    h.push_str("</table><h2>Хосты, требующие внимания</h2><table><tr><th>Хост</th><th>МО</th><th>Роль</th><th>Состояние</th><th>Недоступно</th></tr>");
    let mut shown = 0;
    for host in &snap.hosts {
        let failing: Vec<String> = host
            .probes
            .iter()
            .filter(|p| !p.ok)
            .map(|p| {
                format!(
                    "{} ({})",
                    esc(&p.target),
                    p.error.map_or("?", |e| e.as_str())
                )
            })
            .collect();
        let server_down = host.role == Some(Role::Server) && host.state != ConnState::Online;
        if failing.is_empty() && !server_down && !(host.state == ConnState::Lost) {
            continue;
        }
        shown += 1;
        if shown > 500 {
            h.push_str("<tr><td colspan=5>… список сокращён</td></tr>");
            break;
        }
        let role = match host.role {
            Some(Role::Server) => "сервер",
            Some(Role::Workstation) => "АРМ",
            None => "?",
        };
        let _ = write!(
            h,
            "<tr><td><a href=\"/api/v1/hosts/{id}\">{id}</a></td><td>{}</td><td>{role}</td><td class=\"{}\">{}</td><td class=\"bad\">{}</td></tr>",
            esc(&host.mo),
            if host.state == ConnState::Online {
                "ok"
            } else {
                "bad"
            },
            state_ru(host.state),
            failing.join(", "),
            id = esc(&host.host_id)
        );
    }
    if shown == 0 {
        h.push_str("<tr><td colspan=5>Проблем не обнаружено</td></tr>");
    }
    h.push_str("</table></body></html>");
    Html(h)
}
