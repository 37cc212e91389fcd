//! Rosters as tables: CSV as Russian Excel saves it, and workbooks (XLSX, XLS, ODS), one row per
//! site.
//!
//! Columns are found by their header, in any order, under their English names or the Russian
//! ones a regional roster uses (`mo_oid` / «ОИД МО», `mo_name` / «Наименование МО», `site` /
//! «Подразделение», `planned_arm` / «План АРМ», `tz` / «Часовой пояс», `work_days` /
//! «Рабочие дни», `work_start` / «Начало работы», `work_end` / «Конец работы»); other columns
//! are ignored. The header is the first row (of the first 20) naming the МО's OID column, so
//! title lines above it are skipped. A row with an empty site gives the МО's own planned АРМ.
//! Every error names the row (as a spreadsheet numbers it) and the column (its letter and
//! header).

use super::{RawMo, RawSite, RosterError};
use chrono_tz::Tz;
use std::collections::HashMap;

/// A table read from a file: rows of cell texts, each with its row number.
#[derive(Debug, Clone, Default)]
pub(super) struct Grid {
    /// Index of the first column (a sheet's used range may start right of `A`).
    col0: u32,
    rows: Vec<(u64, Vec<String>)>,
}

/// Rows searched for the header.
const HEADER_ROWS: usize = 20;

/// A column the roster reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Col {
    Oid,
    Name,
    Site,
    Planned,
    Tz,
    WorkDays,
    WorkStart,
    WorkEnd,
}

/// Each column with the headers that name it, compared lowercased, `ё` as `е`, spaces
/// collapsed. The first is the name used in messages.
const COLUMNS: [(Col, &[&str]); 8] = [
    (
        Col::Oid,
        &[
            "mo_oid",
            "oid",
            "оид",
            "оид мо",
            "oid мо",
            "оид фрмо",
            "oid фрмо",
            "фрмо oid",
            "фрмо оид",
            "oid мо (фрмо)",
            "оид мо (фрмо)",
        ],
    ),
    (
        Col::Name,
        &[
            "mo_name",
            "мо",
            "наименование мо",
            "название мо",
            "медицинская организация",
            "наименование медицинской организации",
        ],
    ),
    (
        Col::Site,
        &[
            "site",
            "подразделение",
            "наименование подразделения",
            "название подразделения",
            "структурное подразделение",
        ],
    ),
    (
        Col::Planned,
        &[
            "planned_arm",
            "план арм",
            "арм план",
            "арм, план",
            "план",
            "арм",
            "плановое количество арм",
            "количество арм",
            "количество арм (план)",
        ],
    ),
    (Col::Tz, &["tz", "часовой пояс", "timezone", "time zone"]),
    (Col::WorkDays, &["work_days", "рабочие дни", "дни работы"]),
    (
        Col::WorkStart,
        &[
            "work_start",
            "начало работы",
            "начало рабочего дня",
            "начало",
        ],
    ),
    (
        Col::WorkEnd,
        &[
            "work_end",
            "конец работы",
            "окончание работы",
            "конец рабочего дня",
            "окончание рабочего дня",
            "конец",
        ],
    ),
];

fn normalise(h: &str) -> String {
    h.trim_start_matches('\u{feff}')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .replace('ё', "е")
        .trim_end_matches(['*', ':', '.'])
        .to_string()
}

fn col_of(header: &str) -> Option<Col> {
    let h = normalise(header);
    COLUMNS
        .iter()
        .find(|(_, names)| names.contains(&h.as_str()))
        .map(|(c, _)| *c)
}

fn col_name(c: Col) -> &'static str {
    COLUMNS
        .iter()
        .find(|(x, _)| *x == c)
        .map_or("?", |(_, names)| names[0])
}

/// `A`, `B`, … `Z`, `AA`, … for a 0-based column index.
pub(super) fn col_letter(mut i: u32) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// The text of CSV bytes: UTF-8 (a byte-order mark dropped), UTF-16 with a byte-order mark
/// (Excel's «Текст Юникод»), else CP1251 (Excel's «CSV (разделители — запятые)» on a Russian
/// Windows). CP1251 maps every byte, so decoding never fails; a file in another single-byte
/// code page would read as wrong letters, which the names in the roster show at once.
fn decode(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        return enc.decode_without_bom_handling(&bytes[bom..]).0;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => {
            encoding_rs::WINDOWS_1251
                .decode_without_bom_handling(bytes)
                .0
        }
    }
}

/// The separator of CSV text: whichever of `;`, tab and `,` occurs most outside quotes in the
/// first lines (`;` on a tie: Russian Excel's choice, as the decimal comma takes `,`).
fn separator(text: &str) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    let mut lines = 0;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => counts[0] += 1,
            '\t' if !quoted => counts[1] += 1,
            ',' if !quoted => counts[2] += 1,
            '\n' if !quoted => {
                lines += 1;
                if lines >= HEADER_ROWS {
                    break;
                }
            }
            _ => {}
        }
    }
    let seps = [b';', b'\t', b','];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    seps[best]
}

fn bytecount(b: &[u8]) -> u64 {
    b.iter().filter(|c| **c == b'\n').count() as u64
}

/// CSV bytes as a grid, numbered as a spreadsheet numbers the rows of the same file.
pub(super) fn csv_grid(bytes: &[u8], path: &str) -> Result<Grid, RosterError> {
    let text = decode(bytes);
    let mut r = csv::ReaderBuilder::new()
        .delimiter(separator(&text))
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut grid = Grid::default();
    let mut rec = csv::StringRecord::new();
    let (mut counted, mut newlines, mut embedded) = (0usize, 0u64, 0u64);
    loop {
        match r.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            // The text is UTF-8 and records may be ragged: only an I/O error could come, and
            // a slice cannot fail; named all the same.
            Err(e) => {
                return Err(RosterError::Parse {
                    path: path.into(),
                    message: format!("CSV: {e}"),
                });
            }
        }
        // The row a spreadsheet shows: lines before the record, less the line breaks inside
        // quoted fields of earlier records. (The reader's own line count is off after CRLF,
        // and its byte offset may point at the LF ending the previous record.)
        let mut start = rec.position().map_or(0, |p| p.byte() as usize);
        while text
            .as_bytes()
            .get(start)
            .is_some_and(|b| *b == b'\r' || *b == b'\n')
        {
            start += 1;
        }
        newlines += bytecount(&text.as_bytes()[counted.min(start)..start]);
        counted = counted.max(start);
        let row = 1 + newlines - embedded;
        embedded += rec.iter().map(|f| bytecount(f.as_bytes())).sum::<u64>();
        grid.rows
            .push((row, rec.iter().map(|c| c.trim().to_string()).collect()));
    }
    Ok(grid)
}

/// The text of a workbook cell: whole numbers without a fraction, a time of day as `HH:MM`.
fn cell_text(d: &calamine::Data) -> String {
    use calamine::Data;
    match d {
        Data::DateTime(t) if t.as_f64() < 1.0 => {
            let min = (t.as_f64() * 1440.0).round() as u32;
            format!("{:02}:{:02}", min / 60, min % 60)
        }
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_string().trim().to_string(),
    }
}

/// The first sheet of a workbook as a grid, with the sheet's own row numbers.
pub(super) fn sheet_grid(bytes: &[u8], path: &str) -> Result<Grid, RosterError> {
    use calamine::Reader as _;
    let parse = |message: String| RosterError::Parse {
        path: path.into(),
        message,
    };
    let mut wb = calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes))
        .map_err(|e| parse(format!("not a readable workbook (XLSX, XLS, ODS): {e}")))?;
    let range = wb
        .worksheet_range_at(0)
        .ok_or_else(|| parse("the workbook has no sheet".into()))?
        .map_err(|e| parse(format!("first sheet: {e}")))?;
    let (r0, c0) = range.start().unwrap_or((0, 0));
    Ok(Grid {
        col0: c0,
        rows: range
            .rows()
            .enumerate()
            .map(|(i, row)| {
                (
                    u64::from(r0) + i as u64 + 1,
                    row.iter().map(cell_text).collect(),
                )
            })
            .collect(),
    })
}

/// A whole, non-negative count: `12`, `1 200` (spaces or no-break spaces between thousands),
/// `12,0`.
fn parse_count(s: &str) -> Option<u32> {
    let t: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{202f}')
        .collect();
    if let Ok(v) = t.parse::<u32>() {
        return Some(v);
    }
    let f: f64 = t.replace(',', ".").parse().ok()?;
    (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)).then_some(f as u32)
}

/// Working days: `1-5`, `1,2,3,4,5`, `пн-пт`, `пн, вт, ср` (1 = Monday).
fn parse_days(s: &str) -> Option<Vec<u8>> {
    const RU: [&str; 7] = ["пн", "вт", "ср", "чт", "пт", "сб", "вс"];
    let day = |t: &str| -> Option<u8> {
        let t = t.trim().to_lowercase();
        match t.parse::<u8>() {
            Ok(d) if (1..=7).contains(&d) => Some(d),
            Ok(_) => None,
            Err(_) => RU.iter().position(|r| *r == t).map(|i| i as u8 + 1),
        }
    };
    let mut days = Vec::new();
    for part in s.split([',', ';', ' ']).filter(|p| !p.trim().is_empty()) {
        match part.split_once(['-', '–']) {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return None;
                }
                days.extend(a..=b);
            }
            None => days.push(day(part)?),
        }
    }
    days.sort_unstable();
    days.dedup();
    (!days.is_empty()).then_some(days)
}

/// One МО as its rows build it.
struct Building {
    raw: RawMo,
    /// Row that first named the МО.
    first_row: u64,
    /// Row that gave the МО's own planned АРМ.
    total_row: Option<u64>,
    /// Site name → its row.
    sites: HashMap<String, u64>,
}

/// The МО of a grid, in the order of their first rows, each with where it was first named.
pub(super) fn raw_mos(grid: Grid, path: &str) -> Result<Vec<(RawMo, String)>, RosterError> {
    let invalid = |field: String, message: String| RosterError::Invalid {
        path: path.into(),
        field,
        message,
    };
    let Some(hi) = grid
        .rows
        .iter()
        .enumerate()
        .filter(|(_, (_, cells))| cells.iter().any(|c| !c.is_empty()))
        .take(HEADER_ROWS)
        .find(|(_, (_, cells))| cells.iter().any(|c| col_of(c) == Some(Col::Oid)))
        .map(|(i, _)| i)
    else {
        if grid
            .rows
            .iter()
            .all(|(_, c)| c.iter().all(String::is_empty))
        {
            return Ok(Vec::new());
        }
        return Err(RosterError::Parse {
            path: path.into(),
            message: format!(
                "no header row in the first {HEADER_ROWS} rows: expected the columns mo_oid, \
                 mo_name, planned_arm (or «ОИД МО», «Наименование МО», «План АРМ»), and \
                 optionally site, tz, work_days, work_start, work_end"
            ),
        });
    };
    let (header_row, header) = &grid.rows[hi];
    let col0 = grid.col0;
    let at = |row: u64, i: usize| -> String {
        let name = header.get(i).map_or("", String::as_str);
        format!("row {row}, column {} ({name})", col_letter(col0 + i as u32))
    };
    let mut cols: HashMap<Col, usize> = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        if let Some(c) = col_of(h) {
            if let Some(&prev) = cols.get(&c) {
                return Err(invalid(
                    at(*header_row, i),
                    format!(
                        "a second {} column (the first is {})",
                        col_name(c),
                        col_letter(col0 + prev as u32)
                    ),
                ));
            }
            cols.insert(c, i);
        }
    }
    for c in [Col::Name, Col::Planned] {
        if !cols.contains_key(&c) {
            return Err(invalid(
                format!("row {header_row}"),
                format!(
                    "the header has no {} column (e.g. «{}»)",
                    col_name(c),
                    COLUMNS
                        .iter()
                        .find(|(x, _)| *x == c)
                        .map_or("", |(_, n)| n[2])
                ),
            ));
        }
    }
    let mut order: Vec<Building> = Vec::new();
    let mut by_oid: HashMap<String, usize> = HashMap::new();
    for (row, cells) in &grid.rows[hi + 1..] {
        let row = *row;
        if cells.iter().all(String::is_empty) {
            continue;
        }
        let cell = |c: Col| -> Option<(usize, &str)> {
            cols.get(&c)
                .map(|&i| (i, cells.get(i).map_or("", String::as_str)))
        };
        // Oid, name and planned are present (checked above).
        let (oi, oid) = cell(Col::Oid).unwrap_or((0, ""));
        let (ni, name) = cell(Col::Name).unwrap_or((0, ""));
        let (pi, planned) = cell(Col::Planned).unwrap_or((0, ""));
        if oid.is_empty() {
            return Err(invalid(
                at(row, oi),
                "empty: every row needs the МО's OID".into(),
            ));
        }
        if !dozor_proto::valid_id(oid) {
            return Err(invalid(
                at(row, oi),
                format!("{oid:?} is not a valid id (1..=64 of [A-Za-z0-9._-])"),
            ));
        }
        if name.is_empty() {
            return Err(invalid(
                at(row, ni),
                "empty: every row needs the МО's name".into(),
            ));
        }
        let planned = parse_count(planned).ok_or_else(|| {
            invalid(
                at(row, pi),
                format!("{planned:?} is not a whole number of АРМ"),
            )
        })?;
        let b = match by_oid.get(oid) {
            Some(&i) => &mut order[i],
            None => {
                by_oid.insert(oid.to_string(), order.len());
                order.push(Building {
                    raw: RawMo {
                        oid: oid.to_string(),
                        name: name.to_string(),
                        tz: None,
                        planned_arm: None,
                        work_days: None,
                        work_start: None,
                        work_end: None,
                        site: Vec::new(),
                    },
                    first_row: row,
                    total_row: None,
                    sites: HashMap::new(),
                });
                let last = order.len() - 1;
                &mut order[last]
            }
        };
        if b.raw.name != name {
            return Err(invalid(
                at(row, ni),
                format!(
                    "{name:?} differs from {:?} given for this МО in row {}",
                    b.raw.name, b.first_row
                ),
            ));
        }
        // МО-wide settings: given once, or repeated the same on every row.
        let setting = |c: Col,
                       slot: &mut Option<String>,
                       check: &dyn Fn(&str) -> Result<String, String>|
         -> Result<(), RosterError> {
            let Some((i, v)) = cell(c) else {
                return Ok(());
            };
            if v.is_empty() {
                return Ok(());
            }
            let v = check(v).map_err(|m| invalid(at(row, i), m))?;
            match slot {
                Some(prev) if *prev != v => Err(invalid(
                    at(row, i),
                    format!("{v:?} differs from {prev:?} given for this МО in an earlier row"),
                )),
                _ => {
                    *slot = Some(v);
                    Ok(())
                }
            }
        };
        setting(Col::Tz, &mut b.raw.tz, &|v| {
            v.parse::<Tz>()
                .map(|_| v.to_string())
                .map_err(|_| format!("unknown time zone {v:?} (e.g. Asia/Vladivostok)"))
        })?;
        setting(Col::WorkStart, &mut b.raw.work_start, &|v| check_hhmm(v))?;
        setting(Col::WorkEnd, &mut b.raw.work_end, &|v| check_hhmm(v))?;
        let mut days = b
            .raw
            .work_days
            .as_ref()
            .map(|d| d.iter().map(u8::to_string).collect::<Vec<_>>().join(","));
        setting(Col::WorkDays, &mut days, &|v| {
            parse_days(v)
                .map(|d| d.iter().map(u8::to_string).collect::<Vec<_>>().join(","))
                .ok_or_else(|| {
                    format!("{v:?} is not a list of days 1..=7 (1 = Monday): 1-5, 1,2,3 or пн-пт")
                })
        })?;
        b.raw.work_days = days.map(|d| d.split(',').filter_map(|x| x.parse().ok()).collect());
        if let (Some(s), Some(e)) = (&b.raw.work_start, &b.raw.work_end)
            && super::parse_hhmm(e) <= super::parse_hhmm(s)
        {
            let i = cols.get(&Col::WorkEnd).copied().unwrap_or(0);
            return Err(invalid(
                at(row, i),
                format!("the working day ends ({e}) before it starts ({s})"),
            ));
        }
        match cell(Col::Site).filter(|(_, s)| !s.is_empty()) {
            Some((si, site)) => {
                if let Some(prev) = b.sites.insert(site.to_string(), row) {
                    return Err(invalid(
                        at(row, si),
                        format!("site {site:?} of this МО is already in row {prev}"),
                    ));
                }
                b.raw.site.push(RawSite {
                    name: site.to_string(),
                    planned_arm: planned,
                });
            }
            None => {
                if let Some(prev) = b.total_row.replace(row) {
                    return Err(invalid(
                        at(row, pi),
                        format!(
                            "the МО's own planned АРМ (a row without a site) is already in \
                             row {prev}"
                        ),
                    ));
                }
                b.raw.planned_arm = Some(planned);
            }
        }
    }
    Ok(order
        .into_iter()
        .map(|b| {
            let at = format!("row {} (mo {})", b.first_row, b.raw.oid);
            (b.raw, at)
        })
        .collect())
}

fn check_hhmm(v: &str) -> Result<String, String> {
    super::parse_hhmm(v)
        .map(super::hhmm)
        .ok_or_else(|| format!("{v:?} is not a time HH:MM"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters() {
        assert_eq!(col_letter(0), "A");
        assert_eq!(col_letter(3), "D");
        assert_eq!(col_letter(25), "Z");
        assert_eq!(col_letter(26), "AA");
        assert_eq!(col_letter(27), "AB");
        assert_eq!(col_letter(701), "ZZ");
        assert_eq!(col_letter(702), "AAA");
    }

    #[test]
    fn counts_and_days() {
        assert_eq!(parse_count("12"), Some(12));
        assert_eq!(parse_count("1 200"), Some(1200));
        assert_eq!(parse_count("1\u{a0}200"), Some(1200));
        assert_eq!(parse_count("12,0"), Some(12));
        assert_eq!(parse_count("12,5"), None);
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count(""), None);
        assert_eq!(parse_count("много"), None);
        assert_eq!(parse_days("1-5"), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(parse_days("1,2, 6"), Some(vec![1, 2, 6]));
        assert_eq!(parse_days("Пн-Сб"), Some(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(parse_days("пн, ср"), Some(vec![1, 3]));
        assert_eq!(parse_days("0"), None);
        assert_eq!(parse_days("5-1"), None);
        assert_eq!(parse_days(""), None);
    }

    #[test]
    fn separators() {
        assert_eq!(separator("a;b;c\n1;2;3\n"), b';');
        assert_eq!(separator("a,b,c\n1,2,3\n"), b',');
        assert_eq!(separator("a\tb\tc\n"), b'\t');
        // Commas inside quotes do not count.
        assert_eq!(separator("\"a, b, c, d\";e\n\"x, y, z\";1\n"), b';');
        assert_eq!(separator("a\n"), b';');
    }

    #[test]
    fn csv_rows_are_numbered_as_a_spreadsheet_shows_them() {
        let rows = |t: &str| -> Vec<u64> {
            csv_grid(t.as_bytes(), "t")
                .unwrap()
                .rows
                .iter()
                .map(|r| r.0)
                .collect()
        };
        assert_eq!(rows("a;b\r\n1;2\r\n3;4\r\n"), [1, 2, 3]);
        assert_eq!(rows("a;b\n1;2\n3;4"), [1, 2, 3]);
        // A line break inside a quoted field stays in its row; an empty line is a row.
        assert_eq!(rows("a;b\r\n\"x\r\ny\";2\r\n\r\n3;4\r\n"), [1, 2, 4]);
        assert_eq!(rows("a;b\n\"x\ny\nz\";2\n3;4\n"), [1, 2, 3]);
    }
}
