//! Calendars: region days and months (the keys of daily aggregates) and an МО's working hours
//! as windows of instants.

use super::Ms;
use crate::roster::WorkHours;
use chrono::{Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

/// Local midnight (or any local time) of `tz` as Unix ms. A local time skipped by a DST jump
/// maps to the first instant after the jump; an ambiguous one to the earlier instant.
pub fn local_to_ms(tz: Tz, t: NaiveDateTime) -> Ms {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => d.timestamp_millis(),
        LocalResult::Ambiguous(a, _) => a.timestamp_millis(),
        LocalResult::None => {
            // Inside a spring-forward gap: the wall-clock time an hour later exists.
            let later = t + chrono::Duration::hours(1);
            tz.from_local_datetime(&later).earliest().map_or_else(
                || tz.from_utc_datetime(&t).timestamp_millis(),
                |d| d.timestamp_millis(),
            )
        }
    }
}

/// Local date of an instant in `tz`.
pub fn date_of(tz: Tz, ms: Ms) -> NaiveDate {
    match tz.timestamp_millis_opt(ms) {
        LocalResult::Single(d) | LocalResult::Ambiguous(d, _) => d.date_naive(),
        LocalResult::None => NaiveDate::MIN,
    }
}

const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// Region calendar: day keys (days since 1970-01-01 of the local date) and month keys
/// (`year × 12 + month − 1`) in the region's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub tz: Tz,
}

impl Calendar {
    pub fn new(tz: Tz) -> Calendar {
        Calendar { tz }
    }

    pub fn date(&self, day: i32) -> NaiveDate {
        EPOCH
            .checked_add_signed(chrono::Duration::days(i64::from(day)))
            .unwrap_or(NaiveDate::MAX)
    }

    pub fn day_of_date(&self, d: NaiveDate) -> i32 {
        (d - EPOCH).num_days() as i32
    }

    /// Day key of the local date containing `ms`.
    pub fn day_of(&self, ms: Ms) -> i32 {
        self.day_of_date(date_of(self.tz, ms))
    }

    /// Local midnight starting `day`.
    pub fn day_start(&self, day: i32) -> Ms {
        local_to_ms(self.tz, self.date(day).and_time(NaiveTime::MIN))
    }

    /// Month key of a day.
    pub fn month_of_day(&self, day: i32) -> i32 {
        let d = self.date(day);
        d.year() * 12 + d.month0() as i32
    }

    /// First day of a month key.
    pub fn month_first_day(&self, month: i32) -> i32 {
        let (y, m0) = (month.div_euclid(12), month.rem_euclid(12));
        NaiveDate::from_ymd_opt(y, m0 as u32 + 1, 1).map_or(0, |d| self.day_of_date(d))
    }

    /// Day keys `[first, last)` of a month key.
    pub fn month_days(&self, month: i32) -> (i32, i32) {
        (self.month_first_day(month), self.month_first_day(month + 1))
    }
}

/// Working hours of an МО in its time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkCal {
    pub tz: Tz,
    pub hours: WorkHours,
}

impl Default for WorkCal {
    fn default() -> Self {
        WorkCal {
            tz: crate::roster::DEFAULT_TZ,
            hours: WorkHours::default(),
        }
    }
}

impl WorkCal {
    /// The whole working windows `[start, end)` that overlap `[a, b)`, ascending (not clipped:
    /// the window in which a silence began matters even when it began before `a`).
    pub fn windows(&self, a: Ms, b: Ms) -> Vec<(Ms, Ms)> {
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        let first = date_of(self.tz, a) - Days::new(1);
        let last = date_of(self.tz, b - 1) + Days::new(1);
        let mut d = first;
        while d <= last {
            let wd = d.weekday().num_days_from_monday() as usize;
            if self.hours.days[wd] {
                let start = local_to_ms(self.tz, at_minute(d, self.hours.start_min));
                let end = local_to_ms(self.tz, at_minute(d, self.hours.end_min));
                if start < b && end > a && start < end {
                    out.push((start, end));
                }
            }
            match d.succ_opt() {
                Some(n) => d = n,
                None => break,
            }
        }
        out
    }

    /// A fingerprint of the calendar: daily aggregates computed under another one are stale.
    pub fn fingerprint(&self) -> i64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for x in b {
                h ^= u64::from(*x);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(self.tz.name().as_bytes());
        for d in self.hours.days {
            eat(&[u8::from(d)]);
        }
        eat(&self.hours.start_min.to_le_bytes());
        eat(&self.hours.end_min.to_le_bytes());
        (h >> 1) as i64
    }
}

fn at_minute(d: NaiveDate, min: u16) -> NaiveDateTime {
    if min >= 24 * 60 {
        let next = d.succ_opt().unwrap_or(d);
        next.and_time(NaiveTime::MIN)
    } else {
        let t = NaiveTime::from_hms_opt(u32::from(min / 60), u32::from(min % 60), 0)
            .unwrap_or(NaiveTime::MIN);
        d.and_time(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date-time.
    pub(super) fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Ms {
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn region_days_and_months() {
        let c = Calendar::new(chrono_tz::Europe::Moscow);
        // 2024-03-05 00:00 MSK = 2024-03-04 21:00 UTC.
        let day = c.day_of(utc(2024, 3, 4, 21, 0));
        assert_eq!(c.date(day), NaiveDate::from_ymd_opt(2024, 3, 5).unwrap());
        assert_eq!(c.day_of(utc(2024, 3, 4, 20, 59)), day - 1);
        assert_eq!(c.day_start(day), utc(2024, 3, 4, 21, 0));
        let m = c.month_of_day(day);
        assert_eq!(m, 2024 * 12 + 2);
        let (f, l) = c.month_days(m);
        assert_eq!(l - f, 31);
        assert_eq!(c.date(f), NaiveDate::from_ymd_opt(2024, 3, 1).unwrap());
        let (f, l) = c.month_days(2024 * 12 + 1);
        assert_eq!(l - f, 29, "February 2024");
        let (f, _) = c.month_days(2024 * 12 + 12);
        assert_eq!(c.date(f), NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
    }

    #[test]
    fn work_windows_in_mo_time_zone() {
        let w = WorkCal {
            tz: chrono_tz::Asia::Vladivostok,
            hours: WorkHours::default(),
        };
        // Mon 2024-03-04 00:00 UTC .. Sun 2024-03-10 00:00 UTC.
        let ws = w.windows(utc(2024, 3, 4, 0, 0), utc(2024, 3, 10, 0, 0));
        // 08:00–20:00 UTC+10 = 22:00(prev day)–10:00 UTC; Mon..Fri local, Mon local starts Sun
        // 22:00 UTC which overlaps the range.
        assert_eq!(ws.len(), 5);
        assert_eq!(ws[0], (utc(2024, 3, 3, 22, 0), utc(2024, 3, 4, 10, 0)));
        assert_eq!(ws[4], (utc(2024, 3, 7, 22, 0), utc(2024, 3, 8, 10, 0)));
        assert_ne!(w.fingerprint(), WorkCal::default().fingerprint());
    }

    #[test]
    fn window_until_midnight() {
        let w = WorkCal {
            tz: chrono_tz::UTC,
            hours: WorkHours {
                days: [true; 7],
                start_min: 0,
                end_min: 1440,
            },
        };
        let ws = w.windows(utc(2024, 1, 1, 12, 0), utc(2024, 1, 2, 12, 0));
        assert_eq!(
            ws,
            vec![
                (utc(2024, 1, 1, 0, 0), utc(2024, 1, 2, 0, 0)),
                (utc(2024, 1, 2, 0, 0), utc(2024, 1, 3, 0, 0))
            ]
        );
    }
}
