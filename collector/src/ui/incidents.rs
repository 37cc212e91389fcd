//! `GET /incidents` (open and past) and `GET /incidents/{id}` (cause, scope, duration,
//! timeline, affected МО and hosts, the acknowledge and silence forms).

use super::overview::{self, IncidentLine};
use super::pages::render;
use super::{UiState, Viewer, fmt};
use crate::alerts::model::Incident;
use crate::api_error::{ApiError, Path, Query};
use crate::auth::Principal;
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

/// Most past incidents listed.
const MAX_PAST: usize = 200;

#[derive(Template)]
#[template(path = "incidents.html")]
pub(crate) struct ListPage {
    pub v: Viewer,
    pub open: Vec<IncidentLine>,
    pub past: Vec<IncidentLine>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    mo: Option<String>,
}

pub(super) async fn list(
    State(s): State<UiState>,
    who: Option<Extension<Principal>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let now = s.now();
    let all = s.incidents();
    let mine = |i: &&Incident| {
        q.mo.as_deref()
            .is_none_or(|m| i.mos.iter().any(|x| x.oid == m))
    };
    let open = all
        .iter()
        .rev()
        .filter(mine)
        .filter(|i| overview::is_open(i))
        .map(|i| overview::incident_line(i, s.tz(), now))
        .collect();
    let past = all
        .iter()
        .rev()
        .filter(mine)
        .filter(|i| !overview::is_open(i))
        .take(MAX_PAST)
        .map(|i| overview::incident_line(i, s.tz(), now))
        .collect();
    render(&ListPage {
        v: Viewer::of(who.as_deref()),
        open,
        past,
    })
}

/// A link to an affected МО or host.
pub(crate) struct Link {
    pub href: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "incident.html")]
pub(crate) struct OnePage {
    pub v: Viewer,
    pub i: IncidentLine,
    pub open: bool,
    pub rule: &'static str,
    pub target: String,
    pub mos: Vec<Link>,
    pub more_mos: usize,
    pub hosts: Vec<Link>,
    pub more_hosts: usize,
    pub timeline: Vec<(String, String)>,
    pub silenced_by: String,
    pub ack: Option<super::Ack>,
    pub ack_at: String,
    /// МО to silence: (oid, name).
    pub silence_mos: Vec<(String, String)>,
}

/// The incident's history as far as its record tells it.
fn timeline(i: &Incident, tz: chrono_tz::Tz) -> Vec<(String, String)> {
    let mut t = vec![(i.started_ms, "условие возникло".to_string())];
    if i.episode_started_ms != i.started_ms {
        t.push((
            i.episode_started_ms,
            format!("возобновилось (раз: {})", i.reopened),
        ));
    }
    if let Some(f) = i.fired_ms {
        t.push((f, "подтверждено, оповещение отправлено".into()));
    }
    if let Some(a) = super::ack_of(i) {
        let c = if a.comment.is_empty() {
            String::new()
        } else {
            format!(": {}", a.comment)
        };
        t.push((a.at_ms, format!("принято в работу ({}){c}", a.by)));
    }
    if let Some(r) = i.resolved_ms {
        t.push((
            r,
            match i.merged_into {
                Some(m) => format!("объединено с инцидентом № {m}"),
                None => "завершилось".into(),
            },
        ));
    }
    t.sort_by_key(|x| x.0);
    t.into_iter()
        .map(|(ms, what)| (fmt::datetime(tz, ms), what))
        .collect()
}

pub(super) async fn one(
    State(s): State<UiState>,
    who: Option<Extension<Principal>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let all = s.incidents();
    let i = all
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("инцидент {id}")))?;
    let now = s.now();
    let tz = s.tz();
    let snap = s.snapshot.borrow().clone();
    let single_mo = i.mo().map(|m| m.oid.clone());
    let hosts = i
        .hosts
        .iter()
        .map(|h| {
            let live = snap
                .hosts
                .iter()
                .find(|x| &x.host_id == h && single_mo.as_ref().is_none_or(|m| &x.mo == m));
            let name = live
                .filter(|x| !x.hostname.is_empty())
                .map_or_else(|| h.clone(), |x| format!("{} ({})", x.hostname, x.site));
            Link {
                href: live.map_or_else(String::new, |x| format!("/host/{}/{}", x.mo, x.host_id)),
                text: name,
            }
        })
        .collect();
    let ack = super::ack_of(i);
    render(&OnePage {
        v: Viewer::of(who.as_deref()),
        open: overview::is_open(i),
        rule: i.rule.title_ru(),
        target: match (i.category, &i.target) {
            (Some(c), Some(t)) => format!("{} ({t})", c.title_ru()),
            (None, Some(t)) => t.clone(),
            _ => String::new(),
        },
        mos: i
            .mos
            .iter()
            .map(|m| Link {
                href: format!("/mo/{}", m.oid),
                text: m.name.clone(),
            })
            .collect(),
        more_mos: i.mo_count.saturating_sub(i.mos.len()),
        hosts,
        more_hosts: i.host_count.saturating_sub(i.hosts.len()),
        timeline: timeline(i, tz),
        silenced_by: match i.silenced_by.as_deref() {
            None => String::new(),
            Some(by) => match by.strip_prefix(crate::alerts::planned::SILENCE_PREFIX) {
                // A planned work in force: say which, by its title.
                Some(id) => s.planned().iter().find(|e| e.id == id).map_or_else(
                    || "плановые работы".to_string(),
                    |e| format!("плановые работы «{}»", e.work.title),
                ),
                None => by.to_string(),
            },
        },
        ack_at: ack
            .as_ref()
            .map_or_else(String::new, |a| fmt::datetime(tz, a.at_ms)),
        ack,
        silence_mos: i
            .mos
            .iter()
            .map(|m| (m.oid.clone(), m.name.clone()))
            .collect(),
        i: overview::incident_line(i, tz, now),
    })
}
