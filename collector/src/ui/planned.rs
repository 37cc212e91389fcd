//! «Плановые работы»: the page listing current and upcoming planned works with a form to add
//! one and a delete button (admins), and the lines shown on the МО and host pages.

use super::{UiState, Viewer, fmt};
use crate::api_error::ApiError;
use crate::auth::Principal;
use crate::availability::planned::{Scope, When};
use crate::roster::Roster;
use crate::store::planned::{Entry, Source};
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono_tz::Tz;

/// One planned work as the pages show it.
#[derive(Debug, Clone)]
pub(crate) struct PlannedLine {
    pub id: String,
    pub title: String,
    /// «весь регион», «МО «ЦРБ»», «ЦРБ, подразделение «Корпус 1»», «хост srv-1 (ЦРБ)», «ресурс ЛИС».
    pub scope: String,
    /// «разово: 09.01.2024 21:00 — 23:00» or «еженедельно: вс 02:00–04:00 (Asia/Vladivostok)».
    pub when: String,
    /// «идут сейчас, до 23:00», «с 10.01.2024 02:00», or «завершены».
    pub next: String,
    pub active: bool,
    /// Over (a one-off work whose window ended).
    pub past: bool,
    /// «конфигурация» or who made it.
    pub source: String,
    /// Made over the API: an admin may delete it here.
    pub deletable: bool,
}

const DAYS_RU: [&str; 7] = ["пн", "вт", "ср", "чт", "пт", "сб", "вс"];

fn scope_text(scope: &Scope, roster: &Roster) -> String {
    let mo_name = |oid: &str| {
        roster
            .get(oid)
            .map_or_else(|| oid.to_string(), |m| m.name.clone())
    };
    match scope {
        Scope::Region => "весь регион".into(),
        Scope::Mo(m) => format!("МО «{}»", mo_name(m)),
        Scope::Site { mo, site } => format!("{}, подразделение «{site}»", mo_name(mo)),
        Scope::Host { mo, host } => format!("хост {host} ({})", mo_name(mo)),
        Scope::Target(c) => format!("ресурс {}", c.title_ru()),
    }
}

/// A line for `e` at `now`, times in the region's `tz`.
pub(crate) fn line(e: &Entry, roster: &Roster, tz: Tz, now: i64) -> PlannedLine {
    let when = match &e.work.when {
        When::Once { from, to } => format!(
            "разово: {} — {}",
            fmt::datetime(tz, *from),
            fmt::datetime(tz, *to)
        ),
        When::Weekly { days, .. } => {
            let d: Vec<&str> = DAYS_RU
                .iter()
                .zip(days)
                .filter(|(_, on)| **on)
                .map(|(n, _)| *n)
                .collect();
            format!(
                "еженедельно: {} {}–{} ({})",
                d.join(", "),
                e.raw.start.as_deref().unwrap_or(""),
                e.raw.end.as_deref().unwrap_or(""),
                e.raw.tz.as_deref().unwrap_or("")
            )
        }
    };
    let next = e
        .work
        .windows(now, now.saturating_add(8 * 86_400_000))
        .into_iter()
        .find(|&(_, to)| to > now);
    let active = next.is_some_and(|(f, _)| f <= now);
    let past = matches!(e.work.when, When::Once { to, .. } if to <= now);
    let next_text = match next {
        Some((_, to)) if active => format!("идут сейчас, до {}", fmt::datetime(tz, to)),
        Some((from, _)) => format!("с {}", fmt::datetime(tz, from)),
        None if past => "завершены".into(),
        None => "не в ближайшую неделю".into(),
    };
    PlannedLine {
        id: e.id.clone(),
        title: e.work.title.clone(),
        scope: scope_text(&e.work.scope, roster),
        when,
        next: next_text,
        active,
        past,
        source: match e.source {
            Source::Config => "конфигурация".into(),
            Source::Api if e.created_by.is_empty() => "через API".into(),
            Source::Api => e.created_by.clone(),
        },
        deletable: e.source == Source::Api,
    }
}

/// Works touching МО `oid` (the region's, the МО's, its sites' and hosts'), not over.
pub(crate) fn for_mo(s: &UiState, oid: &str, now: i64) -> Vec<PlannedLine> {
    s.planned()
        .iter()
        .filter(|e| match &e.work.scope {
            Scope::Region => true,
            Scope::Mo(m) | Scope::Site { mo: m, .. } | Scope::Host { mo: m, .. } => m == oid,
            Scope::Target(_) => false,
        })
        .map(|e| line(e, &s.roster, s.tz(), now))
        .filter(|l| !l.past)
        .collect()
}

/// Works covering one host, not over.
pub(crate) fn for_host(
    s: &UiState,
    mo: &str,
    site: &str,
    host: &str,
    now: i64,
) -> Vec<PlannedLine> {
    s.planned()
        .iter()
        .filter(|e| e.work.covers_host(mo, site, host))
        .map(|e| line(e, &s.roster, s.tz(), now))
        .filter(|l| !l.past)
        .collect()
}

#[derive(Template)]
#[template(path = "planned.html")]
pub(crate) struct PlannedPage {
    pub v: Viewer,
    pub current: Vec<PlannedLine>,
    pub past: Vec<PlannedLine>,
    /// (OID, name) of the roster's МО, for the form.
    pub mos: Vec<(String, String)>,
    /// (code, Russian title) of the target categories, for the form.
    pub targets: Vec<(&'static str, &'static str)>,
    pub tz: String,
}

/// `GET /planned`.
pub(super) async fn page(
    State(s): State<UiState>,
    who: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    let now = s.now();
    let all: Vec<PlannedLine> = s
        .planned()
        .iter()
        .map(|e| line(e, &s.roster, s.tz(), now))
        .collect();
    let (past, current): (Vec<_>, Vec<_>) = all.into_iter().partition(|l| l.past);
    let page = PlannedPage {
        v: Viewer::of(who.as_deref()),
        current,
        past,
        mos: s
            .roster
            .mos
            .iter()
            .map(|m| (m.oid.clone(), m.name.clone()))
            .collect(),
        targets: dozor_proto::Category::ALL
            .iter()
            .map(|c| (c.as_str(), c.title_ru()))
            .collect(),
        tz: s.tz().name().to_string(),
    };
    // As `pages::render` (not imported: `pages` uses this module).
    page.render()
        .map(|h| axum::response::Html(h).into_response())
        .map_err(|e| ApiError::Internal(format!("template: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::availability::planned::RawPlannedWork;

    #[test]
    fn lines_say_scope_when_and_state_in_russian() {
        let roster = Roster::from_toml(
            "[[mo]]\noid = \"mo1\"\nname = \"ЦРБ\"\ntz = \"Europe/Moscow\"\n",
            "t",
        )
        .unwrap();
        let raw = RawPlannedWork {
            title: "Обновление МИС".into(),
            mo: Some("mo1".into()),
            host: Some("srv-1".into()),
            days: vec!["sun".into(), "wed".into()],
            start: Some("02:00".into()),
            end: Some("04:00".into()),
            tz: Some("Europe/Moscow".into()),
            ..RawPlannedWork::default()
        };
        let e = crate::store::planned::config_entries(
            std::slice::from_ref(&raw),
            &[raw.validate(0).unwrap()],
        )
        .remove(0);
        // Sunday 2024-01-07 03:00 MSK: in force.
        let l = line(&e, &roster, chrono_tz::Europe::Moscow, 1_704_585_600_000);
        assert_eq!(l.scope, "хост srv-1 (ЦРБ)");
        assert_eq!(l.when, "еженедельно: ср, вс 02:00–04:00 (Europe/Moscow)");
        assert!(l.active);
        assert_eq!(l.next, "идут сейчас, до 07.01.2024 04:00");
        assert_eq!(l.source, "конфигурация");
        assert!(!l.deletable);
    }

    #[test]
    fn the_page_offers_the_form_and_delete_to_admins_only() {
        let l = PlannedLine {
            id: "p-3".into(),
            title: "Замена <ИБП>".into(),
            scope: "весь регион".into(),
            when: String::new(),
            next: String::new(),
            active: true,
            past: false,
            source: "admin".into(),
            deletable: true,
        };
        let page = |admin: bool| {
            PlannedPage {
                v: Viewer {
                    user: Some("u".into()),
                    operator: true,
                    admin,
                },
                current: vec![l.clone()],
                past: Vec::new(),
                mos: vec![("mo1".into(), "ЦРБ".into())],
                targets: vec![("mis", "МИС")],
                tz: "Europe/Moscow".into(),
            }
            .render()
            .unwrap()
        };
        let a = page(true);
        assert!(a.contains("data-api=\"/api/v1/planned-works/p-3\" data-method=\"DELETE\""));
        assert!(a.contains("data-api=\"/api/v1/planned-works\" data-method=\"POST\""));
        assert!(
            a.contains("Замена &#60;ИБП&#62;") || a.contains("Замена &lt;ИБП&gt;"),
            "{a}"
        );
        assert!(a.contains("<option value=\"mo1\">ЦРБ</option>"));
        let o = page(false);
        assert!(!o.contains("data-method=\"DELETE\""));
        assert!(!o.contains("data-method=\"POST\""));
        assert!(o.contains("Замена"));
    }
}
