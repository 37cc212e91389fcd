//! `GET /indicators`: the regional indicator table for a period (quarter, month, week, day or a
//! range of dates), its XLSX/CSV downloads, and the facts per МО linked to their pages.

use super::pages::render;
use super::{UiState, Viewer, fmt};
use crate::api_error::{ApiError, Query};
use crate::auth::Principal;
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use chrono::{Datelike, Duration as Days, NaiveDate, TimeZone};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct PeriodQuery {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A row of the regional table.
pub(crate) struct Row {
    pub name: String,
    pub plan: String,
    pub fact: String,
    pub of_plan: String,
    pub basis: String,
}

/// An МО's facts.
pub(crate) struct MoFacts {
    pub href: String,
    pub name: String,
    pub plan: u64,
    pub active: u64,
    pub reaching: u64,
    /// Days its workstations reached the МИС, of its working days: «52 из 63».
    pub mis_days: String,
    pub uses_mis: bool,
    /// Its workstations' time switched off in working hours, hours.
    pub off_hours: String,
    pub off_v: i64,
    pub servers: String,
}

/// A resource (region row, `href` empty) or an МО's channel to it.
pub(crate) struct ChannelLine {
    pub resource: String,
    pub mo: String,
    pub href: String,
    pub resource_pct: String,
    pub reach_pct: String,
    pub channel_pct: String,
}

/// A quick choice of period.
pub(crate) struct Choice {
    pub href: String,
    pub label: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "indicators.html")]
pub(crate) struct Page {
    pub v: Viewer,
    pub label: String,
    pub spec: String,
    pub choices: Vec<Choice>,
    pub from: String,
    pub to: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub mos: Vec<MoFacts>,
    pub channels: Vec<ChannelLine>,
    pub xlsx: String,
    pub csv: String,
    pub error: String,
}

fn num(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(
        || "—".into(),
        |v| {
            if unit == "%" {
                fmt::pct(Some(v))
            } else if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}").replace('.', ",")
            }
        },
    )
}

/// Quick periods around `today`: this and last quarter, this month, last week, yesterday.
pub(crate) fn choices(today: NaiveDate) -> Vec<(String, String)> {
    let q = (today.month() - 1) / 3 + 1;
    let (py, pq) = if q == 1 {
        (today.year() - 1, 4)
    } else {
        (today.year(), q - 1)
    };
    let roman = ["I", "II", "III", "IV"];
    let week = today - Days::days(7);
    let yesterday = today - Days::days(1);
    vec![
        (
            format!("{}-Q{q}", today.year()),
            format!("{} квартал {} г.", roman[q as usize - 1], today.year()),
        ),
        (
            format!("{py}-Q{pq}"),
            format!("{} квартал {py} г.", roman[pq as usize - 1]),
        ),
        (
            format!("{}-{:02}", today.year(), today.month()),
            "текущий месяц".into(),
        ),
        (
            format!("{}-W{:02}", week.iso_week().year(), week.iso_week().week()),
            "прошлая неделя".into(),
        ),
        (yesterday.format("%Y-%m-%d").to_string(), "вчера".into()),
    ]
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn page(
    State(s): State<UiState>,
    who: Option<Extension<Principal>>,
    Query(q): Query<PeriodQuery>,
) -> Result<Response, ApiError> {
    let now = s.now();
    let today = s
        .tz()
        .timestamp_millis_opt(now)
        .single()
        .map_or_else(|| chrono::Utc::now().date_naive(), |t| t.date_naive());
    let quick = choices(today);
    let (from, to) = (
        q.from.clone().filter(|v| !v.is_empty()),
        q.to.clone().filter(|v| !v.is_empty()),
    );
    let spec = match (&from, &to) {
        (Some(f), Some(t)) => format!("{f}..{t}"),
        _ => q
            .period
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| quick[0].0.clone()),
    };
    let query = match (&from, &to) {
        (Some(f), Some(t)) => format!("from={}&to={}", enc(f), enc(t)),
        _ => format!("period={}", enc(&spec)),
    };
    let mut page = Page {
        v: Viewer::of(who.as_deref()),
        label: spec.clone(),
        choices: quick
            .iter()
            .map(|(p, l)| Choice {
                href: format!("/indicators?period={}", enc(p)),
                label: l.clone(),
                current: *p == spec,
            })
            .collect(),
        spec: if from.is_some() {
            String::new()
        } else {
            spec.clone()
        },
        from: from.clone().unwrap_or_default(),
        to: to.clone().unwrap_or_default(),
        rows: Vec::new(),
        notes: Vec::new(),
        mos: Vec::new(),
        channels: Vec::new(),
        xlsx: format!("/api/v1/indicators?{query}&format=xlsx"),
        csv: format!("/api/v1/indicators?{query}&format=csv"),
        error: String::new(),
    };
    let period = match crate::report::parse_period(&spec, &s.store) {
        Ok(p) => p,
        Err(_) => {
            page.error = format!(
                "Период «{spec}» не распознан: выберите квартал, месяц, неделю, день или даты."
            );
            return render(&page);
        }
    };
    page.label = period.label.clone();
    let st = s.clone();
    let p = period.clone();
    let r = tokio::task::spawn_blocking(move || {
        let r = crate::store::Reader::open(&st.db, &st.store)?;
        let data = r.period_data(&st.roster, p.from_ms, p.to_ms, now)?;
        let t = crate::availability::indicators(&data, &st.roster, &st.store.indicators, &p);
        let c = crate::availability::counts(&data, &st.roster);
        let o = crate::availability::offhours(&data, &st.roster, 0, None);
        Ok::<_, crate::store::StoreError>((t, c, o))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("indicators task: {e}")))?;
    match r {
        Ok((t, c, o)) => {
            page.rows = t
                .rows
                .iter()
                .map(|r| {
                    let unit = r.unit.ru();
                    Row {
                        name: fmt::unnest_quotes(&r.name),
                        plan: num(r.plan, unit),
                        fact: num(r.fact, unit),
                        of_plan: fmt::pct(r.pct_of_plan),
                        basis: r.basis.clone(),
                    }
                })
                .collect();
            for r in &t.resources {
                page.channels.push(ChannelLine {
                    resource: r.title.to_string(),
                    mo: "весь регион".into(),
                    href: String::new(),
                    resource_pct: fmt::pct(r.resource_availability_pct),
                    reach_pct: fmt::pct(r.reachability_from_mos_pct),
                    channel_pct: String::new(),
                });
                for m in &r.mos {
                    page.channels.push(ChannelLine {
                        resource: r.title.to_string(),
                        mo: m.mo_name.clone(),
                        href: format!("/mo/{}", m.mo),
                        resource_pct: String::new(),
                        reach_pct: fmt::pct(m.reachability_pct),
                        channel_pct: fmt::pct(m.channel_quality_pct),
                    });
                }
            }
            page.notes = t.notes;
            let ind: std::collections::HashMap<
                &str,
                &crate::availability::indicators::MoIndicators,
            > = t.mos.iter().map(|m| (m.mo.as_str(), m)).collect();
            let off: std::collections::HashMap<&str, i64> = o
                .mos
                .iter()
                .map(|m| (m.mo.as_str(), m.sum.off_w_ms))
                .collect();
            page.mos = c
                .mos
                .iter()
                .map(|m| MoFacts {
                    href: format!("/mo/{}", m.mo),
                    name: m.mo_name.clone(),
                    plan: m.counts.planned_arm,
                    active: m.counts.workstations_active,
                    reaching: m.counts.workstations_reaching_mis,
                    mis_days: ind.get(m.mo.as_str()).map_or_else(
                        || "—".into(),
                        |i| format!("{} из {}", i.mis_days, i.working_days),
                    ),
                    uses_mis: ind.get(m.mo.as_str()).is_some_and(|i| i.uses_mis),
                    off_hours: fmt::hours(off.get(m.mo.as_str()).copied().unwrap_or(0)),
                    off_v: off.get(m.mo.as_str()).copied().unwrap_or(0),
                    servers: format!(
                        "{} из {}",
                        m.counts.servers_active, m.counts.servers_registered
                    ),
                })
                .collect();
        }
        Err(crate::store::StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            page.error = "Хранилище истории ещё не создано: показателей пока нет.".into();
        }
        Err(e) => return Err(ApiError::Internal(format!("indicators: {e}"))),
    }
    render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_periods_in_russian() {
        let c = choices(NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
        assert_eq!(c[0], ("2026-Q4".into(), "IV квартал 2026 г.".into()));
        assert_eq!(c[1], ("2026-Q3".into(), "III квартал 2026 г.".into()));
        assert_eq!(c[2].0, "2026-11");
        assert_eq!(c[3].0, "2026-W48");
        assert_eq!(c[4].0, "2026-11-29");
        let c = choices(NaiveDate::from_ymd_opt(2027, 1, 5).unwrap());
        assert_eq!(c[1].0, "2026-Q4");
    }
}
