//! The region's roster: МО, their sites, planned АРМ counts, time zones and working hours.
//!
//! The roster is the denominator of every share in the indicator table. It is read from TOML
//! (`[[mo]]` tables), or from a table with one row per site as the region keeps it: CSV saved
//! by Excel (CP1251 or UTF-8, `;` or `,`) or the workbook itself (`table`), and validated
//! before anything starts. Errors name the entry and field, or the row and column.

use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

mod table;

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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    #[serde(default)]
    mo: Vec<RawMo>,
}

#[derive(Deserialize, Serialize)]
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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: String,
    #[serde(default)]
    planned_arm: u32,
}

/// Default time zone when an МО names none.
pub const DEFAULT_TZ: Tz = chrono_tz::Europe::Moscow;

/// Largest roster file accepted: a region's roster is tens of kilobytes to a few megabytes.
pub const MAX_BYTES: usize = 64 << 20;

/// The form of a roster file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    /// CSV in UTF-8 (with or without a byte-order mark), UTF-16 with a byte-order mark, or
    /// CP1251; `;`, `,` or tab between fields, detected.
    Csv,
    /// An Excel or LibreOffice workbook (XLSX, XLS, XLSB, ODS): the first sheet.
    Spreadsheet,
}

impl Format {
    /// The form of `bytes` named `name`: a ZIP or OLE container is a workbook; otherwise the
    /// extension decides (`.csv`, `.txt`: CSV), TOML by default.
    pub fn detect(name: &str, bytes: &[u8]) -> Format {
        const ZIP: &[u8] = b"PK\x03\x04";
        const OLE: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        if bytes.starts_with(ZIP) || bytes.starts_with(OLE) {
            return Format::Spreadsheet;
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv" | "txt") => Format::Csv,
            Some("xlsx" | "xlsm" | "xls" | "xlsb" | "ods") => Format::Spreadsheet,
            _ => Format::Toml,
        }
    }
}

impl Roster {
    /// Loads a roster file (the only file this crate reads); the form is detected by
    /// [`Format::detect`].
    pub fn load(path: &Path) -> Result<Roster, RosterError> {
        let p = path.display().to_string();
        let io = |source| RosterError::Io {
            path: p.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_BYTES as u64 {
            return Err(RosterError::Parse {
                path: p,
                message: format!("{len} bytes, more than the {MAX_BYTES} a roster may have"),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Roster::from_bytes(&bytes, &p)
    }

    /// Parses a roster file's bytes; `path` names it in errors and its extension helps detect
    /// the form.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Roster, RosterError> {
        if bytes.len() > MAX_BYTES {
            return Err(RosterError::Parse {
                path: path.into(),
                message: format!("more than the {MAX_BYTES} bytes a roster may have"),
            });
        }
        match Format::detect(path, bytes) {
            Format::Toml => {
                let text = std::str::from_utf8(bytes).map_err(|e| RosterError::Parse {
                    path: path.into(),
                    message: format!("TOML must be UTF-8: {e}"),
                })?;
                Roster::from_toml(text.trim_start_matches('\u{feff}'), path)
            }
            Format::Csv => Roster::from_csv(bytes, path),
            Format::Spreadsheet => Roster::from_spreadsheet(bytes, path),
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

    /// Parses the CSV form: one row per site, columns found by their headers (`mo_oid`,
    /// `mo_name`, `site`, `planned_arm`, `tz`, `work_days`, `work_start`, `work_end`, or their
    /// Russian names; docs/roster.md). The encoding (UTF-8, UTF-16 with a byte-order mark,
    /// else CP1251) and the separator (`;`, `,`, tab) are detected.
    pub fn from_csv(bytes: &[u8], path: &str) -> Result<Roster, RosterError> {
        let grid = table::csv_grid(bytes, path)?;
        Roster::from_grid(grid, path)
    }

    /// Parses the first sheet of a workbook (XLSX, XLS, XLSB, ODS), laid out as the CSV form.
    pub fn from_spreadsheet(bytes: &[u8], path: &str) -> Result<Roster, RosterError> {
        let grid = table::sheet_grid(bytes, path)?;
        Roster::from_grid(grid, path)
    }

    fn from_grid(grid: table::Grid, path: &str) -> Result<Roster, RosterError> {
        let raws = table::raw_mos(grid, path)?;
        let mut mos = Vec::with_capacity(raws.len());
        for (m, at) in raws {
            mos.push(validate_mo(m, &at, path)?);
        }
        Roster::new(mos, path)
    }

    /// The roster as TOML, the form the collector keeps in its data dir: every value
    /// explicit, so [`Roster::from_toml`] reads back exactly this roster.
    pub fn to_toml(&self) -> String {
        let raw = RawRoster {
            mo: self
                .mos
                .iter()
                .map(|m| RawMo {
                    oid: m.oid.clone(),
                    name: m.name.clone(),
                    tz: Some(m.tz.name().to_string()),
                    planned_arm: Some(m.planned_arm),
                    work_days: Some(
                        (1..=7u8)
                            .filter(|d| m.work.days[usize::from(d - 1)])
                            .collect(),
                    ),
                    work_start: Some(hhmm(m.work.start_min)),
                    work_end: Some(hhmm(m.work.end_min)),
                    site: m
                        .sites
                        .iter()
                        .map(|s| RawSite {
                            name: s.name.clone(),
                            planned_arm: s.planned_arm,
                        })
                        .collect(),
                })
                .collect(),
        };
        // Plain strings, numbers and arrays: serialization cannot fail.
        toml::to_string(&raw).unwrap_or_else(|e| unreachable!("roster as TOML: {e}"))
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

fn hhmm(min: u16) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
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
        let r = Roster::from_csv(csv.as_bytes(), "t").unwrap();
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
        let e = Roster::from_csv(
            b"mo_oid;mo_name;site;planned_arm\n1.2.3;x;y;many\n",
            "r.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("row 2, column D (planned_arm)"), "{e}");
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

    /// CP1251 bytes of `s` (the test texts hold only Cyrillic, ASCII, «», №).
    fn cp1251(s: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(s);
        assert!(!unmappable);
        bytes.into_owned()
    }

    /// A roster as Russian Excel saves it with «CSV (разделители — точка с запятой)»: CP1251,
    /// `;`, CRLF, a title line above the header, Russian headers in another order, a name
    /// holding `;` and quotes (quoted, quotes doubled), thousands with a no-break space… which
    /// CP1251 has as 0xA0, an МО total row without a site, an extra column, a trailing empty
    /// line of separators.
    const EXCEL_CSV: &str = "Реестр МО Хабаровского края на 01.01.2025;;;;;\r\n\
        Наименование МО;ОИД МО;Подразделение;Адрес;План АРМ;Часовой пояс\r\n\
        \"КГБУЗ \"\"Городская поликлиника № 3\"\"; филиал\";1.2.643.5.1.13.13.12.2.27.1001;\"Главный корпус; 2 этаж\";ул. Ленина, 1;1\u{a0}200;Asia/Vladivostok\r\n\
        \"КГБУЗ \"\"Городская поликлиника № 3\"\"; филиал\";1.2.643.5.1.13.13.12.2.27.1001;ФАП «Сосновка»;;3;\r\n\
        Районная больница;1.2.643.5.1.13.13.12.2.27.1002;;;40;\r\n\
        ;;;;;\r\n";

    fn check_excel_roster(r: &Roster) {
        assert_eq!(r.mos.len(), 2);
        let m = r.get("1.2.643.5.1.13.13.12.2.27.1001").unwrap();
        assert_eq!(m.name, "КГБУЗ \"Городская поликлиника № 3\"; филиал");
        assert_eq!(m.tz, chrono_tz::Asia::Vladivostok);
        assert_eq!(
            m.sites,
            vec![
                Site {
                    name: "Главный корпус; 2 этаж".into(),
                    planned_arm: 1200
                },
                Site {
                    name: "ФАП «Сосновка»".into(),
                    planned_arm: 3
                },
            ]
        );
        assert_eq!(m.planned_arm, 1203);
        let m = r.get("1.2.643.5.1.13.13.12.2.27.1002").unwrap();
        assert_eq!((m.planned_arm, m.sites.len()), (40, 0));
        assert_eq!(m.tz, DEFAULT_TZ);
    }

    #[test]
    fn loads_csv_saved_by_russian_excel_in_cp1251() {
        let bytes = cp1251(EXCEL_CSV);
        assert!(std::str::from_utf8(&bytes).is_err(), "really not UTF-8");
        let r = Roster::from_bytes(&bytes, "реестр.csv").unwrap();
        check_excel_roster(&r);
    }

    #[test]
    fn loads_csv_in_utf8_with_and_without_bom_and_utf16() {
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(EXCEL_CSV.as_bytes());
        check_excel_roster(&Roster::from_bytes(&bom, "r.csv").unwrap());
        check_excel_roster(&Roster::from_bytes(EXCEL_CSV.as_bytes(), "r.CSV").unwrap());
        // Excel's «Текст Юникод»: UTF-16LE with a BOM, tabs between fields.
        let tabs = EXCEL_CSV
            .replace(';', "\t")
            .replace("\t филиал", "; филиал");
        let tabs = tabs.replace("корпус\t 2", "корпус; 2");
        let mut utf16 = vec![0xFF, 0xFE];
        for u in tabs.encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        check_excel_roster(&Roster::from_bytes(&utf16, "r.txt").unwrap());
    }

    #[test]
    fn loads_comma_separated_csv_with_working_hours() {
        let csv = "mo_oid,mo_name,site,planned_arm,tz,work_days,work_start,work_end\n\
                   1.2.3,\"Поликлиника, детская\",Корпус А,10,Asia/Yekaterinburg,\"1,2,3,4,5,6\",07:30,19:00\n\
                   1.2.3,\"Поликлиника, детская\",Корпус Б,5,,,,\n\
                   1.2.4,МО 2,Главный,7,,пн-пт,,\n";
        let r = Roster::from_bytes(csv.as_bytes(), "r.csv").unwrap();
        let m = r.get("1.2.3").unwrap();
        assert_eq!(m.name, "Поликлиника, детская");
        assert_eq!(m.planned_arm, 15);
        assert_eq!((m.work.start_min, m.work.end_min), (450, 1140));
        assert!(m.work.days[5] && !m.work.days[6]);
        let m = r.get("1.2.4").unwrap();
        assert_eq!(m.work.days, [true, true, true, true, true, false, false]);
    }

    /// An XLSX roster as a region keeps it, written here with rust_xlsxwriter: a title row,
    /// the table starting in column B, numbers as numbers, the working day's start as an Excel
    /// time.
    fn roster_xlsx() -> Vec<u8> {
        use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        ws.set_name("Реестр").unwrap();
        ws.write_string(0, 1, "Реестр МО на 01.01.2025").unwrap();
        for (c, h) in [
            "ОИД МО",
            "Наименование МО",
            "Подразделение",
            "План АРМ",
            "Начало работы",
        ]
        .iter()
        .enumerate()
        {
            ws.write_string(2, 1 + c as u16, *h).unwrap();
        }
        let time = Format::new().set_num_format("hh:mm");
        let rows: [(&str, &str, &str, f64); 3] = [
            (
                "1.2.643.5.1.13.13.12.2.27.1001",
                "Поликлиника № 3",
                "Главный корпус; 2 этаж",
                1200.0,
            ),
            (
                "1.2.643.5.1.13.13.12.2.27.1001",
                "Поликлиника № 3",
                "ФАП «Сосновка»",
                3.0,
            ),
            (
                "1.2.643.5.1.13.13.12.2.27.1002",
                "Районная больница",
                "",
                40.0,
            ),
        ];
        for (i, (oid, name, site, plan)) in rows.iter().enumerate() {
            let r = 3 + i as u32;
            ws.write_string(r, 1, *oid).unwrap();
            ws.write_string(r, 2, *name).unwrap();
            if !site.is_empty() {
                ws.write_string(r, 3, *site).unwrap();
            }
            ws.write_number(r, 4, *plan).unwrap();
            if i == 0 {
                let t = ExcelDateTime::from_hms(7, 30, 0).unwrap();
                ws.write_datetime_with_format(r, 5, &t, &time).unwrap();
            }
        }
        wb.save_to_buffer().unwrap()
    }

    #[test]
    fn loads_xlsx() {
        // Detected by content, whatever the name says.
        let r = Roster::from_bytes(&roster_xlsx(), "roster.dat").unwrap();
        assert_eq!(r.mos.len(), 2);
        let m = r.get("1.2.643.5.1.13.13.12.2.27.1001").unwrap();
        assert_eq!(m.planned_arm, 1203);
        assert_eq!(m.sites[0].name, "Главный корпус; 2 этаж");
        assert_eq!(m.work.start_min, 450);
        assert_eq!(
            r.get("1.2.643.5.1.13.13.12.2.27.1002").unwrap().planned_arm,
            40
        );
    }

    #[test]
    fn xlsx_errors_name_the_sheet_row_and_column() {
        use rust_xlsxwriter::Workbook;
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        for (c, h) in ["ОИД МО", "МО", "План АРМ"].iter().enumerate() {
            ws.write_string(0, c as u16, *h).unwrap();
        }
        ws.write_string(1, 0, "1.2.3").unwrap();
        ws.write_string(1, 1, "МО").unwrap();
        ws.write_number(1, 2, 2.5).unwrap();
        let bytes = wb.save_to_buffer().unwrap();
        let e = Roster::from_bytes(&bytes, "r.xlsx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 2, column C (План АРМ)"), "{e}");
        assert!(e.contains("\"2.5\" is not a whole number"), "{e}");
        let e = Roster::from_bytes(b"PK\x03\x04garbage", "r.xlsx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a readable workbook"), "{e}");
    }

    #[test]
    fn table_errors_name_row_and_column() {
        let check = |csv: &str, needle: &[&str]| {
            let e = Roster::from_bytes(&cp1251(csv), "r.csv")
                .unwrap_err()
                .to_string();
            for n in needle {
                assert!(e.contains(n), "{e:?} should mention {n:?}");
            }
        };
        let head = "ОИД МО;МО;Подразделение;План АРМ;Часовой пояс\r\n";
        check(
            &format!("{head}1.2.3;Поликлиника;А;10;\r\n1.2.3;Поликлиника;Б;десять;\r\n"),
            &["r.csv", "row 3, column D (План АРМ)", "\"десять\""],
        );
        check(
            &format!("{head}1.2.3;Поликлиника;А;10;Asia/Nowhere\r\n"),
            &["row 2, column E (Часовой пояс)", "unknown time zone"],
        );
        check(
            &format!("{head}1.2 3;Поликлиника;А;10;\r\n"),
            &["row 2, column A (ОИД МО)", "not a valid id"],
        );
        check(
            &format!("{head};Поликлиника;А;10;\r\n"),
            &["row 2, column A (ОИД МО)", "empty"],
        );
        check(
            &format!("{head}1.2.3;;А;10;\r\n"),
            &["row 2, column B (МО)", "empty"],
        );
        check(
            &format!("{head}1.2.3;Поликлиника;А;10;\r\n1.2.3;Больница;Б;1;\r\n"),
            &["row 3, column B (МО)", "differs", "row 2"],
        );
        check(
            &format!("{head}1.2.3;Поликлиника;А;10;\r\n1.2.3;Поликлиника;А;1;\r\n"),
            &["row 3, column C (Подразделение)", "already in row 2"],
        );
        check(
            &format!(
                "{head}1.2.3;Поликлиника;А;10;Asia/Omsk\r\n1.2.3;Поликлиника;Б;1;Asia/Tomsk\r\n"
            ),
            &["row 3, column E (Часовой пояс)", "differs"],
        );
        check(
            "ОИД МО;МО;План АРМ;Начало работы;Конец работы\r\n1.2.3;П;1;20:00;08:00\r\n",
            &["row 2, column E (Конец работы)", "ends"],
        );
        check(
            "ОИД МО;МО;План АРМ;Рабочие дни\r\n1.2.3;П;1;пн-вс-чт\r\n",
            &["row 2, column D (Рабочие дни)"],
        );
        check(
            "ОИД МО;МО;Подразделение\r\n1.2.3;П;А\r\n",
            &["row 1", "no planned_arm column"],
        );
        check(
            "ОИД МО;МО;План АРМ;ОИД\r\n",
            &["row 1, column D (ОИД)", "second mo_oid column"],
        );
        check("Список;;\r\nчто-то;ещё;\r\n", &["no header row"]);
        // A file with nothing in it is an empty roster, not an error.
        assert!(Roster::from_bytes(b"", "r.csv").unwrap().mos.is_empty());
        assert!(
            Roster::from_bytes(&[0u8; 0], "r.toml")
                .unwrap()
                .mos
                .is_empty()
        );
    }

    #[test]
    fn saved_toml_reads_back_the_same_roster() {
        for r in [
            Roster::from_toml(TOML, "t").unwrap(),
            Roster::from_bytes(&cp1251(EXCEL_CSV), "r.csv").unwrap(),
            Roster::from_bytes(&roster_xlsx(), "r.xlsx").unwrap(),
        ] {
            let text = r.to_toml();
            let back = Roster::from_toml(&text, "saved").unwrap();
            assert_eq!(back.mos, r.mos, "{text}");
        }
    }
}
