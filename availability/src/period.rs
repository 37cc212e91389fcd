//! Report periods in the region's time zone: `2024` (year), `2024-Q1` (quarter), `2024-03`
//! (month), `2024-W10` (ISO week), `2024-03-05` (day), or an explicit `from`/`to`.

use super::Ms;
use super::calendar::local_to_ms;
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

/// A bad period specification; the message is shown to users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PeriodError(pub String);

/// A half-open interval of instants `[from_ms, to_ms)` with a Russian label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// The specification as given (`2024-Q1`), or `from..to`.
    pub spec: String,
    /// Russian label for report headers: «I квартал 2024 г.».
    pub label: String,
    pub from_ms: Ms,
    pub to_ms: Ms,
}

const MONTHS: [&str; 12] = [
    "январь",
    "февраль",
    "март",
    "апрель",
    "май",
    "июнь",
    "июль",
    "август",
    "сентябрь",
    "октябрь",
    "ноябрь",
    "декабрь",
];
const QUARTERS: [&str; 4] = ["I", "II", "III", "IV"];

fn bad(spec: &str) -> PeriodError {
    PeriodError(format!(
        "period {spec:?} is not YYYY, YYYY-Qn, YYYY-MM, YYYY-Www or YYYY-MM-DD"
    ))
}

fn midnight(tz: Tz, d: NaiveDate) -> Ms {
    local_to_ms(tz, d.and_time(NaiveTime::MIN))
}

fn ru_date(d: NaiveDate) -> String {
    d.format("%d.%m.%Y").to_string()
}

/// 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z: the bounds an explicit range must lie in.
const MIN_BOUND_MS: Ms = 946_684_800_000;
const MAX_BOUND_MS: Ms = 4_102_444_800_000;
/// The longest explicit range: a year and a little (a leap year, a time-zone shift).
const MAX_RANGE_DAYS: i64 = 370;
const MAX_RANGE_MS: Ms = MAX_RANGE_DAYS * 86_400_000;

impl Period {
    /// Parses a named period in `tz`.
    pub fn parse(spec: &str, tz: Tz) -> Result<Period, PeriodError> {
        let s = spec.trim();
        let (first, last_excl, label) = parse_dates(s).ok_or_else(|| bad(s))?;
        Ok(Period {
            spec: s.to_string(),
            label,
            from_ms: midnight(tz, first),
            to_ms: midnight(tz, last_excl),
        })
    }

    /// An explicit range. Each bound is an RFC 3339 instant (`2024-03-01T08:00:00+03:00`),
    /// Unix milliseconds, or a date; a date `to` is inclusive (the range ends at the next local
    /// midnight).
    pub fn range(from: &str, to: &str, tz: Tz) -> Result<Period, PeriodError> {
        let f = parse_bound(from.trim(), tz, false)
            .ok_or_else(|| PeriodError(format!("from {from:?} is not a date or an instant")))?;
        let t = parse_bound(to.trim(), tz, true)
            .ok_or_else(|| PeriodError(format!("to {to:?} is not a date or an instant")))?;
        if t <= f {
            return Err(PeriodError(format!(
                "to ({to}) must be after from ({from})"
            )));
        }
        // Bounded, so that one request cannot make the store walk centuries of days.
        if f < MIN_BOUND_MS || t > MAX_BOUND_MS {
            return Err(PeriodError(format!(
                "from ({from}) and to ({to}) must lie between 2000-01-01 and 2100-01-01"
            )));
        }
        if t - f > MAX_RANGE_MS {
            return Err(PeriodError(format!(
                "a range may span at most {MAX_RANGE_DAYS} days (a year fits); ask for several"
            )));
        }
        let fmt = |ms: Ms| {
            tz.timestamp_millis_opt(ms).single().map_or_else(
                || ms.to_string(),
                |d| d.format("%d.%m.%Y %H:%M").to_string(),
            )
        };
        Ok(Period {
            spec: format!("{}..{}", from.trim(), to.trim()),
            label: format!("с {} по {}", fmt(f), fmt(t)),
            from_ms: f,
            to_ms: t,
        })
    }

    /// Clamps the end to `now` (a period in progress is reported up to now).
    pub fn until(&self, now: Ms) -> (Ms, Ms) {
        (self.from_ms, self.to_ms.min(now).max(self.from_ms))
    }
}

fn parse_bound(s: &str, tz: Tz, end: bool) -> Option<Ms> {
    if let Ok(ms) = s.parse::<i64>() {
        return (ms > 0).then_some(ms);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let d = if end { d.succ_opt()? } else { d };
    Some(midnight(tz, d))
}

/// First day, day after the last, label.
fn parse_dates(s: &str) -> Option<(NaiveDate, NaiveDate, String)> {
    let year = |y: &str| -> Option<i32> {
        (y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
            .then(|| y.parse().ok())
            .flatten()
            .filter(|y| (1970..=9999).contains(y))
    };
    if let Some(y) = year(s) {
        return Some((
            NaiveDate::from_ymd_opt(y, 1, 1)?,
            NaiveDate::from_ymd_opt(y + 1, 1, 1)?,
            format!("{y} год"),
        ));
    }
    let (y, rest) = s.split_once('-')?;
    let y = year(y)?;
    if let Some(q) = rest.strip_prefix(['Q', 'q']) {
        let q: u32 = q.parse().ok().filter(|q| (1..=4).contains(q))?;
        let first = NaiveDate::from_ymd_opt(y, 3 * q - 2, 1)?;
        let next = if q == 4 {
            NaiveDate::from_ymd_opt(y + 1, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(y, 3 * q + 1, 1)?
        };
        return Some((
            first,
            next,
            format!("{} квартал {y} г.", QUARTERS[q as usize - 1]),
        ));
    }
    if let Some(w) = rest.strip_prefix(['W', 'w']) {
        let w: u32 = w.parse().ok()?;
        let first = NaiveDate::from_isoywd_opt(y, w, Weekday::Mon)?;
        let next = first + Days::new(7);
        let last = first + Days::new(6);
        return Some((
            first,
            next,
            format!(
                "{w}-я неделя {y} г. ({} – {})",
                ru_date(first),
                ru_date(last)
            ),
        ));
    }
    match rest.split_once('-') {
        None => {
            if rest.len() != 2 {
                return None;
            }
            let m: u32 = rest.parse().ok().filter(|m| (1..=12).contains(m))?;
            let first = NaiveDate::from_ymd_opt(y, m, 1)?;
            let next = if m == 12 {
                NaiveDate::from_ymd_opt(y + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(y, m + 1, 1)?
            };
            Some((first, next, format!("{} {y} г.", MONTHS[m as usize - 1])))
        }
        Some(_) => {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            (d.year() == y).then_some(())?;
            Some((d, d.succ_opt()?, ru_date(d)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn utc(y: i32, m: u32, d: u32, h: u32) -> Ms {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn named_periods_in_moscow() {
        let tz = chrono_tz::Europe::Moscow;
        let check = |spec: &str, from: Ms, to: Ms, label: &str| {
            let p = Period::parse(spec, tz).unwrap();
            assert_eq!((p.from_ms, p.to_ms), (from, to), "{spec}");
            assert_eq!(p.label, label, "{spec}");
        };
        check(
            "2024",
            utc(2023, 12, 31, 21),
            utc(2024, 12, 31, 21),
            "2024 год",
        );
        check(
            "2024-Q1",
            utc(2023, 12, 31, 21),
            utc(2024, 3, 31, 21),
            "I квартал 2024 г.",
        );
        check(
            "2024-q4",
            utc(2024, 9, 30, 21),
            utc(2024, 12, 31, 21),
            "IV квартал 2024 г.",
        );
        check(
            "2024-03",
            utc(2024, 2, 29, 21),
            utc(2024, 3, 31, 21),
            "март 2024 г.",
        );
        check(
            "2024-W10",
            utc(2024, 3, 3, 21),
            utc(2024, 3, 10, 21),
            "10-я неделя 2024 г. (04.03.2024 – 10.03.2024)",
        );
        check(
            "2024-03-05",
            utc(2024, 3, 4, 21),
            utc(2024, 3, 5, 21),
            "05.03.2024",
        );
    }

    #[test]
    fn other_time_zone() {
        let p = Period::parse("2024-03-05", chrono_tz::Asia::Vladivostok).unwrap();
        assert_eq!(p.from_ms, utc(2024, 3, 4, 14));
    }

    #[test]
    fn bad_periods() {
        let tz = chrono_tz::Europe::Moscow;
        for s in [
            "",
            "24",
            "2024-Q5",
            "2024-13",
            "2024-W54",
            "2024-02-30",
            "Q1-2024",
            "2024-3",
            "abc",
        ] {
            assert!(Period::parse(s, tz).is_err(), "{s:?}");
        }
    }

    #[test]
    fn ranges() {
        let tz = chrono_tz::Europe::Moscow;
        let p = Period::range("2024-03-01", "2024-03-15", tz).unwrap();
        assert_eq!(
            (p.from_ms, p.to_ms),
            (utc(2024, 2, 29, 21), utc(2024, 3, 15, 21))
        );
        let p = Period::range("2024-03-01T08:00:00+03:00", "1709298000000", tz).unwrap();
        assert_eq!(p.from_ms, utc(2024, 3, 1, 5));
        assert_eq!(p.to_ms, 1_709_298_000_000);
        assert!(Period::range("2024-03-02", "2024-03-01", tz).is_err());
        assert!(Period::range("yesterday", "2024-03-01", tz).is_err());
        // Hostile bounds: year 0, centuries, longer than a year.
        assert!(Period::range("0000-01-01T00:00:00Z", "2024-03-01", tz).is_err());
        assert!(Period::range("1", "2024-03-01", tz).is_err());
        assert!(Period::range("2024-03-01", "9999-12-31", tz).is_err());
        assert!(Period::range("2022-01-01", "2024-03-01", tz).is_err());
        assert!(Period::range("2024-01-01", "2024-12-31", tz).is_ok());
        let p = Period::parse("2024-03", tz).unwrap();
        assert_eq!(
            p.until(utc(2024, 3, 10, 0)),
            (p.from_ms, utc(2024, 3, 10, 0))
        );
    }
}
