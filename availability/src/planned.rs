//! Planned works (issue 13, item 2): announced maintenance windows — once, or recurring every
//! week in a time zone — for the region, an МО, a site, a host or a target category. Down time
//! of a host inside a planned window is its own state, `planned`, and never counts as down;
//! up time inside it stays up (a host that kept working did work); unknown stays unknown.
//!
//! Config (`[[planned_works]]` in the collector's config; [`RawPlannedWork`] → `validate`):
//!
//! ```toml
//! [[planned_works]]
//! title = "Обновление МИС"
//! mo = "1.2.643.5.1.13.13.12.2.27.1234"   # scope: none = the whole region;
//! # site = "Корпус 1" / host = "arm-01" (with mo), or target = "mis"
//! days = ["sun"]                          # weekly …
//! start = "02:00"
//! end = "04:00"                           # end ≤ start: ends the next day
//! tz = "Asia/Vladivostok"
//! # from = "2024-03-05T22:00:00+10:00"    # … or once
//! # to = "2024-03-06T02:00:00+10:00"
//! ```

use super::Ms;
use super::calendar::local_to_ms;
use super::timeline::{Piece, PieceState};
use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;
use dozor_proto::Category;
use serde::{Deserialize, Serialize};

/// One `[[planned_works]]` entry as written (also the body of `POST /api/v1/planned-works`
/// and what the store keeps of one made over the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPlannedWork {
    /// Shown in reports (Russian), e.g. «Обновление МИС».
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A target category (`mis`, `lis`, …): its reachability, not hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Once: RFC 3339 instants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Weekly: `mon`…`sun`, `HH:MM` local times, an IANA time zone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
}

/// Longest title accepted, bytes.
pub const MAX_TITLE: usize = 256;

/// What a planned work covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Region,
    Mo(String),
    Site { mo: String, site: String },
    Host { mo: String, host: String },
    Target(Category),
}

/// When it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    Once {
        from: Ms,
        to: Ms,
    },
    /// Every week on `days` (index 0 = Monday) from `start_min` to `end_min` local minutes;
    /// `end_min ≤ start_min` ends on the next day.
    Weekly {
        days: [bool; 7],
        start_min: u16,
        end_min: u16,
        tz: Tz,
    },
}

/// A validated planned work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWork {
    pub title: String,
    pub scope: Scope,
    pub when: When,
    /// No window of the work starts before this instant: a work made over the API covers
    /// nothing before it was announced (its creation time), so it cannot rewrite figures
    /// already reported. `None` for works from the config.
    pub not_before: Option<Ms>,
}

/// A bad `[[planned_works]]` entry: `field` names it, e.g. `planned_works[2].start`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PlannedError {
    pub field: String,
    pub message: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// The same days as Russian abbreviations (the web form's, and accepted anywhere).
const DAYS_RU: [&str; 7] = ["пн", "вт", "ср", "чт", "пт", "сб", "вс"];

/// Monday = 0 … Sunday = 6 for a day named `mon` … `sun` (any case) or `пн` … `вс`.
fn day_index(d: &str) -> Option<usize> {
    let d = d.trim();
    DAYS.iter()
        .position(|x| x.eq_ignore_ascii_case(d))
        .or_else(|| DAYS_RU.iter().position(|x| *x == d.to_lowercase()))
}

/// A day's name as the config and the API list it (`mon` … `sun`); `None` for no day.
pub fn canonical_day(d: &str) -> Option<&'static str> {
    day_index(d).map(|k| DAYS[k])
}

fn hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn rfc3339(s: &str) -> Option<Ms> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

impl RawPlannedWork {
    /// Validates entry number `i` of `[[planned_works]]`.
    pub fn validate(&self, i: usize) -> Result<PlannedWork, PlannedError> {
        let bad = |f: &str, message: String| PlannedError {
            field: format!("planned_works[{i}].{f}"),
            message,
        };
        let title = self.title.trim();
        if title.is_empty() {
            return Err(bad("title", "must not be empty".into()));
        }
        if title.len() > MAX_TITLE || title.chars().any(char::is_control) {
            return Err(bad(
                "title",
                format!("at most {MAX_TITLE} bytes, no control characters"),
            ));
        }
        let id = |f: &str, v: &str| {
            if dozor_proto::valid_id(v) {
                Ok(v.to_string())
            } else {
                Err(bad(f, format!("{v:?} is not a valid id")))
            }
        };
        let scope = match (&self.mo, &self.site, &self.host, &self.target) {
            (None, None, None, None) => Scope::Region,
            (Some(mo), None, None, None) => Scope::Mo(id("mo", mo)?),
            (Some(_), Some(site), None, None)
                if site.len() > MAX_TITLE || site.chars().any(char::is_control) =>
            {
                return Err(bad(
                    "site",
                    format!("at most {MAX_TITLE} bytes, no control characters"),
                ));
            }
            (Some(mo), Some(site), None, None) if !site.trim().is_empty() => Scope::Site {
                mo: id("mo", mo)?,
                site: site.trim().to_string(),
            },
            (Some(mo), None, Some(host), None) => Scope::Host {
                mo: id("mo", mo)?,
                host: id("host", host)?,
            },
            (None, None, None, Some(t)) => Scope::Target(
                Category::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == t)
                    .ok_or_else(|| bad("target", format!("unknown category {t:?}")))?,
            ),
            (None, Some(_), _, _) | (None, _, Some(_), _) => {
                return Err(bad("mo", "site and host need the МО they belong to".into()));
            }
            (_, Some(s), _, None) if s.trim().is_empty() => {
                return Err(bad("site", "must not be empty".into()));
            }
            _ => {
                return Err(bad(
                    "target",
                    "give one scope: mo, mo + site, mo + host, or target".into(),
                ));
            }
        };
        let weekly = !self.days.is_empty() || self.start.is_some() || self.end.is_some();
        let once = self.from.is_some() || self.to.is_some();
        let when = match (once, weekly) {
            (true, true) => {
                return Err(bad(
                    "from",
                    "give from/to or days/start/end, not both".into(),
                ));
            }
            (false, false) => {
                return Err(bad(
                    "from",
                    "give from/to (once) or days/start/end (weekly)".into(),
                ));
            }
            (true, false) => {
                let t = |f: &str, v: &Option<String>| {
                    let v = v.as_deref().ok_or_else(|| bad(f, "missing".into()))?;
                    rfc3339(v).ok_or_else(|| bad(f, format!("{v:?} is not an RFC 3339 instant")))
                };
                let (from, to) = (t("from", &self.from)?, t("to", &self.to)?);
                if to <= from {
                    return Err(bad("to", "must be after from".into()));
                }
                When::Once { from, to }
            }
            (false, true) => {
                let mut days = [false; 7];
                if self.days.is_empty() {
                    return Err(bad("days", "name at least one day (mon … sun)".into()));
                }
                for d in &self.days {
                    let k = day_index(d).ok_or_else(|| {
                        bad("days", format!("{d:?} is not one of mon … sun (пн … вс)"))
                    })?;
                    days[k] = true;
                }
                let m = |f: &str, v: &Option<String>| {
                    let v = v.as_deref().ok_or_else(|| bad(f, "missing".into()))?;
                    hhmm(v).ok_or_else(|| bad(f, format!("{v:?} is not HH:MM")))
                };
                let (start_min, end_min) = (m("start", &self.start)?, m("end", &self.end)?);
                let tz = match &self.tz {
                    Some(s) => s
                        .parse::<Tz>()
                        .map_err(|_| bad("tz", format!("unknown time zone {s:?}")))?,
                    None => return Err(bad("tz", "missing (e.g. \"Asia/Vladivostok\")".into())),
                };
                When::Weekly {
                    days,
                    start_min,
                    end_min,
                    tz,
                }
            }
        };
        Ok(PlannedWork {
            title: title.to_string(),
            scope,
            when,
            not_before: None,
        })
    }
}

fn local_min(tz: Tz, d: NaiveDate, min: u16) -> Ms {
    let (d, min) = if min >= 24 * 60 {
        (d.succ_opt().unwrap_or(d), min - 24 * 60)
    } else {
        (d, min)
    };
    let t = NaiveTime::from_hms_opt(u32::from(min / 60), u32::from(min % 60), 0)
        .unwrap_or(NaiveTime::MIN);
    local_to_ms(tz, d.and_time(t))
}

impl PlannedWork {
    /// The windows of this work overlapping `[a, b)`, ascending, not clipped to `[a, b)`; none
    /// starts before [`PlannedWork::not_before`].
    pub fn windows(&self, a: Ms, b: Ms) -> Vec<(Ms, Ms)> {
        let mut out = self.windows_unclipped(a, b);
        if let Some(nb) = self.not_before {
            out.retain(|w| w.1 > nb);
            for w in &mut out {
                w.0 = w.0.max(nb);
            }
        }
        out
    }

    fn windows_unclipped(&self, a: Ms, b: Ms) -> Vec<(Ms, Ms)> {
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        match self.when {
            When::Once { from, to } => {
                if from < b && to > a {
                    out.push((from, to));
                }
            }
            When::Weekly {
                days,
                start_min,
                end_min,
                tz,
            } => {
                let date = |ms: Ms| {
                    tz.timestamp_millis_opt(ms)
                        .earliest()
                        .map_or(NaiveDate::MIN, |d| d.date_naive())
                };
                let mut d = date(a) - Days::new(1);
                let last = date(b - 1);
                while d <= last {
                    if days[d.weekday().num_days_from_monday() as usize] {
                        let start = local_min(tz, d, start_min);
                        let end = if end_min > start_min {
                            local_min(tz, d, end_min)
                        } else {
                            local_min(tz, d, end_min + 24 * 60)
                        };
                        if start < b && end > a && start < end {
                            out.push((start, end));
                        }
                    }
                    match d.succ_opt() {
                        Some(n) => d = n,
                        None => break,
                    }
                }
            }
        }
        out
    }

    /// True if the work covers this host (`site` compared ignoring case and surrounding
    /// spaces, as the roster does). A target-scoped work covers no host.
    pub fn covers_host(&self, mo: &str, site: &str, host: &str) -> bool {
        match &self.scope {
            Scope::Region => true,
            Scope::Mo(m) => m == mo,
            Scope::Site { mo: m, site: s } => {
                m == mo && s.to_lowercase() == site.trim().to_lowercase()
            }
            Scope::Host { mo: m, host: h } => m == mo && h == host,
            Scope::Target(_) => false,
        }
    }
}

/// The planned windows of one host over `[a, b)` as sorted disjoint spans.
pub fn host_windows(
    works: &[PlannedWork],
    mo: &str,
    site: &str,
    host: &str,
    a: Ms,
    b: Ms,
) -> Vec<(Ms, Ms)> {
    let mut v: Vec<(Ms, Ms)> = works
        .iter()
        .filter(|w| w.covers_host(mo, site, host))
        .flat_map(|w| w.windows(a, b))
        .collect();
    super::reach::union_spans(&mut v)
}

/// Relabels a timeline piece against sorted disjoint planned spans: its down parts inside
/// them become [`PieceState::Planned`]; everything else passes unchanged.
pub fn split_piece(p: Piece, planned: &[(Ms, Ms)], mut emit: impl FnMut(Piece)) {
    let PieceState::Down(cause) = p.state else {
        emit(p);
        return;
    };
    let mut at = p.start;
    let i = planned.partition_point(|s| s.1 <= p.start);
    for &(s, e) in &planned[i..] {
        if s >= p.end {
            break;
        }
        if s > at {
            emit(Piece {
                start: at,
                end: s,
                ..p
            });
            at = s;
        }
        let end = e.min(p.end);
        if end > at {
            emit(Piece {
                start: at,
                end,
                state: PieceState::Planned(cause),
                ..p
            });
            at = end;
        }
    }
    if at < p.end {
        emit(Piece { start: at, ..p });
    }
}

#[cfg(test)]
mod tests;
