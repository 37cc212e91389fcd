//! The region's roster: МО, their sites, planned АРМ counts, time zones and working hours.
//!
//! The roster is the denominator of every share in the indicator table. It is read from TOML
//! (`[[mo]]` tables) or CSV (one row per site) and validated before anything starts.

use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Errors loading a roster; each names the entry and field at fault.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The file could not be read.
    #[error("roster {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax or shape error.
    #[error("roster {path}: {message}")]
    Parse { path: String, message: String },
    /// A field has an invalid value.
    #[error("roster {path}: {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

/// Working hours of an МО, in its local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkHours {
    /// Working days, index 0 = Monday.
    pub days: [bool; 7],
    /// Start of the working day, minutes after local midnight.
    pub start_min: u16,
    /// End of the working day, minutes after local midnight (exclusive).
    pub end_min: u16,
}

impl Default for WorkHours {
    /// Mon–Fri 08:00–20:00.
    fn default() -> Self {
        WorkHours {
            days: [true, true, true, true, true, false, false],
            start_min: 8 * 60,
            end_min: 20 * 60,
        }
    }
}

impl WorkHours {
    /// True if the instant `ts_ms` (Unix ms) falls inside working hours in `tz`.
    pub fn contains(&self, tz: Tz, ts_ms: i64) -> bool {
        let Some(t) = tz.timestamp_millis_opt(ts_ms).single() else {
            return false;
        };
        let day = t.weekday().num_days_from_monday() as usize;
        let min = (t.hour() * 60 + t.minute()) as u16;
        self.days[day] && min >= self.start_min && min < self.end_min
    }
}

/// A subdivision (building, feldsher post) of an МО.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    pub planned_arm: u32,
}

/// A medical organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Mo {
    /// ФРМО OID, the `{mo}` of topics.
    pub oid: String,
    pub name: String,
    pub tz: Tz,
    pub work: WorkHours,
    /// Planned АРМ of the whole МО (sum of sites when sites are given and the МО total is not).
    pub planned_arm: u32,
    pub sites: Vec<Site>,
}

/// The roster, indexed by OID.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    pub mos: Vec<Mo>,
    index: HashMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    #[serde(default)]
    mo: Vec<RawMo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMo {
    oid: String,
    name: String,
    #[serde(default)]
    tz: Option<String>,
    #[serde(default)]
    planned_arm: Option<u32>,
    /// e.g. `[1,2,3,4,5]`, 1 = Monday.
    #[serde(default)]
    work_days: Option<Vec<u8>>,
    /// `"08:00"`.
    #[serde(default)]
    work_start: Option<String>,
    /// `"20:00"`.
    #[serde(default)]
    work_end: Option<String>,
    #[serde(default)]
    site: Vec<RawSite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: String,
    #[serde(default)]
    planned_arm: u32,
}

/// Default time zone when an МО names none.
pub const DEFAULT_TZ: Tz = chrono_tz::Europe::Moscow;

impl Roster {
    /// Loads a roster; the format is chosen by extension (`.csv`, else TOML).
    pub fn load(path: &Path) -> Result<Roster, RosterError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RosterError::Io {
            path: p.clone(),
            source,
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            Roster::from_csv(&text, &p)
        } else {
            Roster::from_toml(&text, &p)
        }
    }

    /// Parses the TOML form: `[[mo]] oid, name, tz, planned_arm, work_days, work_start,
    /// work_end` with `[[mo.site]] name, planned_arm`.
    pub fn from_toml(text: &str, path: &str) -> Result<Roster, RosterError> {
        let raw: RawRoster = toml::from_str(text).map_err(|e| RosterError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut mos = Vec::with_capacity(raw.mo.len());
        for (i, m) in raw.mo.into_iter().enumerate() {
            mos.push(validate_mo(m, &format!("mo[{i}]"), path)?);
        }
        Roster::new(mos, path)
    }

    /// Parses the CSV form, one row per site, with a header:
    /// `mo_oid,mo_name,site,planned_arm,tz` (`tz` optional). Separator `,` or `;`.
    pub fn from_csv(text: &str, path: &str) -> Result<Roster, RosterError> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let sep = match lines.next() {
            Some(h) if h.contains(';') => ';',
            Some(_) => ',',
            None => return Roster::new(Vec::new(), path),
        };
        let mut by_oid: Vec<RawMo> = Vec::new();
        for (n, line) in lines.enumerate() {
            let row: Vec<&str> = line
                .split(sep)
                .map(|c| c.trim().trim_matches('"'))
                .collect();
            let field = |c: &str| format!("row {}: {c}", n + 2);
            if row.len() < 4 {
                return Err(RosterError::Invalid {
                    path: path.into(),
                    field: field("columns"),
                    message: "expected mo_oid,mo_name,site,planned_arm[,tz]".into(),
                });
            }
            let planned: u32 = row[3].parse().map_err(|_| RosterError::Invalid {
                path: path.into(),
                field: field("planned_arm"),
                message: format!("not a number: {:?}", row[3]),
            })?;
            let site = RawSite {
                name: row[2].to_string(),
                planned_arm: planned,
            };
            match by_oid.iter_mut().find(|m| m.oid == row[0]) {
                Some(m) => m.site.push(site),
                None => by_oid.push(RawMo {
                    oid: row[0].to_string(),
                    name: row[1].to_string(),
                    tz: row.get(4).filter(|s| !s.is_empty()).map(|s| s.to_string()),
                    planned_arm: None,
                    work_days: None,
                    work_start: None,
                    work_end: None,
                    site: vec![site],
                }),
            }
        }
        let mut mos = Vec::with_capacity(by_oid.len());
        for m in by_oid {
            let f = format!("mo {}", m.oid);
            mos.push(validate_mo(m, &f, path)?);
        }
        Roster::new(mos, path)
    }

    fn new(mos: Vec<Mo>, path: &str) -> Result<Roster, RosterError> {
        let mut index = HashMap::with_capacity(mos.len());
        for (i, m) in mos.iter().enumerate() {
            if index.insert(m.oid.clone(), i).is_some() {
                return Err(RosterError::Invalid {
                    path: path.into(),
                    field: format!("mo {}", m.oid),
                    message: "duplicate oid".into(),
                });
            }
        }
        Ok(Roster { mos, index })
    }

    pub fn get(&self, oid: &str) -> Option<&Mo> {
        self.index.get(oid).map(|&i| &self.mos[i])
    }

    pub fn contains(&self, oid: &str) -> bool {
        self.index.contains_key(oid)
    }

    /// Total planned АРМ of the region.
    pub fn planned_arm(&self) -> u64 {
        self.mos.iter().map(|m| u64::from(m.planned_arm)).sum()
    }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn validate_mo(m: RawMo, at: &str, path: &str) -> Result<Mo, RosterError> {
    let bad = |field: &str, message: String| RosterError::Invalid {
        path: path.into(),
        field: format!("{at}.{field}"),
        message,
    };
    if !dozor_proto::valid_id(&m.oid) {
        return Err(bad(
            "oid",
            format!("{:?} is not a valid id (1..=64 of [A-Za-z0-9._-])", m.oid),
        ));
    }
    if m.name.trim().is_empty() {
        return Err(bad("name", "must not be empty".into()));
    }
    let tz = match &m.tz {
        Some(s) => s
            .parse::<Tz>()
            .map_err(|_| bad("tz", format!("unknown time zone {s:?}")))?,
        None => DEFAULT_TZ,
    };
    let mut work = WorkHours::default();
    if let Some(days) = &m.work_days {
        work.days = [false; 7];
        for &d in days {
            if !(1..=7).contains(&d) {
                return Err(bad("work_days", format!("{d} is not 1..=7 (1 = Monday)")));
            }
            work.days[usize::from(d - 1)] = true;
        }
    }
    if let Some(s) = &m.work_start {
        work.start_min =
            parse_hhmm(s).ok_or_else(|| bad("work_start", format!("{s:?} is not HH:MM")))?;
    }
    if let Some(s) = &m.work_end {
        work.end_min =
            parse_hhmm(s).ok_or_else(|| bad("work_end", format!("{s:?} is not HH:MM")))?;
    }
    if work.end_min <= work.start_min {
        return Err(bad("work_end", "must be after work_start".into()));
    }
    let sites: Vec<Site> = m
        .site
        .into_iter()
        .map(|s| Site {
            name: s.name,
            planned_arm: s.planned_arm,
        })
        .collect();
    let planned_arm = m
        .planned_arm
        .unwrap_or_else(|| sites.iter().map(|s| s.planned_arm).sum());
    Ok(Mo {
        oid: m.oid,
        name: m.name,
        tz,
        work,
        planned_arm,
        sites,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[mo]]
oid = "1.2.643.5.1.13.13.12.2.27.1001"
name = "Городская поликлиника № 1"
tz = "Asia/Vladivostok"
work_days = [1, 2, 3, 4, 5, 6]
work_start = "07:30"
[[mo.site]]
name = "Главный корпус"
planned_arm = 80
[[mo.site]]
name = "ФАП Вознесенское"
planned_arm = 3

[[mo]]
oid = "1.2.643.5.1.13.13.12.2.27.1002"
name = "Районная больница"
planned_arm = 40
"#;

    #[test]
    fn loads_toml() {
        let r = Roster::from_toml(TOML, "t").unwrap();
        let m = r.get("1.2.643.5.1.13.13.12.2.27.1001").unwrap();
        assert_eq!(m.planned_arm, 83);
        assert_eq!(m.tz, chrono_tz::Asia::Vladivostok);
        assert_eq!(m.work.start_min, 450);
        assert!(m.work.days[5] && !m.work.days[6]);
        assert_eq!(
            r.get("1.2.643.5.1.13.13.12.2.27.1002").unwrap().tz,
            DEFAULT_TZ
        );
        assert_eq!(r.planned_arm(), 123);
    }

    #[test]
    fn loads_csv() {
        let csv = "mo_oid;mo_name;site;planned_arm;tz\n1.2.3;МО 1;Корпус А;10;Asia/Yekaterinburg\n1.2.3;МО 1;Корпус Б;5;\n1.2.4;МО 2;Главный;7\n";
        let r = Roster::from_csv(csv, "t").unwrap();
        assert_eq!(r.mos.len(), 2);
        assert_eq!(r.get("1.2.3").unwrap().planned_arm, 15);
        assert_eq!(r.get("1.2.3").unwrap().sites.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let check = |text: &str, needle: &str| {
            let e = Roster::from_toml(text, "r.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        };
        check("[[mo]]\noid = \"a b\"\nname = \"x\"", "mo[0].oid");
        check(
            "[[mo]]\noid = \"a\"\nname = \"x\"\ntz = \"Mars/Base\"",
            "mo[0].tz",
        );
        check(
            "[[mo]]\noid = \"a\"\nname = \"x\"\nwork_start = \"25:00\"",
            "mo[0].work_start",
        );
        check(
            "[[mo]]\noid = \"a\"\nname = \"x\"\nwork_days = [0]",
            "mo[0].work_days",
        );
        check("[[mo]]\noid = \"a\"\nname = \"x\"\nbogus = 1", "bogus");
        check(
            "[[mo]]\noid = \"a\"\nname = \"x\"\n[[mo]]\noid = \"a\"\nname = \"y\"",
            "duplicate",
        );
        let e = Roster::from_csv("mo_oid;mo_name;site;planned_arm\n1.2.3;x;y;many\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 2: planned_arm"), "{e}");
    }

    #[test]
    fn working_hours_in_local_time() {
        let w = WorkHours::default();
        let tz = chrono_tz::Asia::Vladivostok; // UTC+10
        // Tue 2024-01-09 00:30 UTC = 10:30 local: working.
        assert!(w.contains(tz, 1_704_760_200_000));
        // Tue 2024-01-09 10:30 UTC = 20:30 local: not working.
        assert!(!w.contains(tz, 1_704_796_200_000));
        // Sat 2024-01-13 02:00 UTC = 12:00 local Saturday: not working.
        assert!(!w.contains(tz, 1_705_111_200_000));
    }
}
