//! Reports from the embedded store: availability, counts and the regional indicator table, as
//! JSON (HTTP API), CSV and XLSX with Russian headers (API downloads and the
//! `dozor-collector report` command).
//!
//! Everything here is blocking (SQLite): the HTTP handlers in [`http`] run it in
//! `spawn_blocking`.

pub mod export;
pub mod http;

use crate::availability::{
    self, Availability, AvailabilityBy, Counts, IndicatorTable, Ms, OffHours, Period,
};
use crate::clock::now_ms;
use crate::roster::Roster;
use crate::store::config::StoreConfig;
use crate::store::{Reader, StoreError};
use anyhow::Context;
use std::path::Path;

/// Output format of a report file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "xlsx" => Some(Format::Xlsx),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Json => "json",
        }
    }
}

/// Availability over `[from, to)` (clamped to `now`), grouped `by` host, МО or target.
pub fn availability(
    reader: &Reader,
    roster: &Roster,
    from: Ms,
    to: Ms,
    by: AvailabilityBy,
    now: Ms,
) -> Result<Availability, StoreError> {
    let resources = by == AvailabilityBy::Target;
    let data = reader.period_data_with(roster, from, to, now, resources)?;
    Ok(availability::availability(&data, roster, by))
}

/// Counts per МО and site over `[from, to)` (clamped to `now`).
pub fn counts(
    reader: &Reader,
    roster: &Roster,
    from: Ms,
    to: Ms,
    now: Ms,
) -> Result<Counts, StoreError> {
    let data = reader.period_data_with(roster, from, to, now, false)?;
    Ok(availability::counts(&data, roster))
}

/// The regional indicator table of a period (a period in progress is computed up to `now`).
pub fn indicators(
    reader: &Reader,
    roster: &Roster,
    cfg: &StoreConfig,
    period: &Period,
    now: Ms,
) -> Result<IndicatorTable, StoreError> {
    let data = reader.period_data(roster, period.from_ms, period.to_ms, now)?;
    Ok(availability::indicators(
        &data,
        roster,
        &cfg.indicators,
        period,
    ))
}

/// «АРМ, чаще всего выключенные в рабочее время» over `[from, to)` (clamped to `now`): the
/// `top` workstations of the region and of each МО (`mo`: that МО only).
pub fn offhours(
    reader: &Reader,
    roster: &Roster,
    from: Ms,
    to: Ms,
    top: usize,
    mo: Option<&str>,
    now: Ms,
) -> Result<OffHours, StoreError> {
    let data = reader.period_data(roster, from, to, now)?;
    Ok(availability::offhours(&data, roster, top, mo))
}

/// The default `N` of the off-in-working-hours report.
pub const DEFAULT_TOP: usize = 20;

/// The largest `N` accepted (a region has up to ~30,000 workstations; a list longer than this
/// is a dump, not a report).
pub const MAX_TOP: usize = 1000;

/// Parses a period: `2024-Q1`, `2024-03`, `2024-W10`, `2024-03-05`, `2024`, or `FROM..TO`.
pub fn parse_period(spec: &str, cfg: &StoreConfig) -> Result<Period, availability::PeriodError> {
    match spec.split_once("..") {
        Some((f, t)) => Period::range(f, t, cfg.region_tz),
        None => Period::parse(spec, cfg.region_tz),
    }
}

/// What a report file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The regional indicator table.
    Indicators,
    /// АРМ and servers per МО and site.
    Counts,
    /// Availability grouped by host, МО or target.
    Availability(AvailabilityBy),
    /// Workstations most often switched off in working hours: the top `N` of the region and of
    /// each МО, with sums per МО and site.
    Offhours(usize),
}

impl Kind {
    /// `indicators`, `counts`, `availability` (with `by`), `offhours` (with `top`).
    pub fn parse(s: &str, by: AvailabilityBy, top: usize) -> Option<Kind> {
        match s {
            "indicators" => Some(Kind::Indicators),
            "counts" => Some(Kind::Counts),
            "availability" => Some(Kind::Availability(by)),
            "offhours" => Some(Kind::Offhours(top)),
            _ => None,
        }
    }
}

/// `dozor-collector report --period 2024-Q1 --format xlsx -o FILE` with the default store
/// settings (region time zone Europe/Moscow). Prefer [`run_report_with`] when the collector's
/// configuration is at hand.
pub fn run_report(
    db: &Path,
    roster: &Roster,
    period: &str,
    format: Format,
    out: &Path,
) -> anyhow::Result<()> {
    run_report_with(db, roster, &StoreConfig::default(), period, format, out)
}

/// Writes the indicator table of `period` to `out` in `format`.
pub fn run_report_with(
    db: &Path,
    roster: &Roster,
    cfg: &StoreConfig,
    period: &str,
    format: Format,
    out: &Path,
) -> anyhow::Result<()> {
    let bytes = report_file(db, roster, cfg, period, Kind::Indicators, format, now_ms())?;
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The file of a report: `kind` over `period` (a period in progress up to `now`) in `format`,
/// the same tables and JSON the HTTP API answers.
pub fn report_file(
    db: &Path,
    roster: &Roster,
    cfg: &StoreConfig,
    period: &str,
    kind: Kind,
    format: Format,
    now: Ms,
) -> anyhow::Result<Vec<u8>> {
    let p = parse_period(period, cfg).map_err(|e| anyhow::anyhow!("--period: {e}"))?;
    let reader =
        Reader::open(db, cfg).with_context(|| format!("opening the store {}", db.display()))?;
    match kind {
        Kind::Indicators => {
            let t = indicators(&reader, roster, cfg, &p, now).context("computing indicators")?;
            encode(&t, format, export::indicators_workbook)
        }
        Kind::Counts => {
            let c = counts(&reader, roster, p.from_ms, p.to_ms, now).context("counting")?;
            encode(&c, format, |c| vec![export::counts_table(c, cfg.region_tz)])
        }
        Kind::Availability(by) => {
            let a = availability(&reader, roster, p.from_ms, p.to_ms, by, now)
                .context("computing availability")?;
            encode(&a, format, |a| {
                vec![export::availability_table(a, cfg.region_tz)]
            })
        }
        Kind::Offhours(top) => {
            let o = offhours(&reader, roster, p.from_ms, p.to_ms, top, None, now)
                .context("computing time off in working hours")?;
            encode(&o, format, |o| export::offhours_tables(o, cfg.region_tz))
        }
    }
}

/// `v` as JSON, or its tables: the first as CSV, all as the sheets of an XLSX workbook.
fn encode<T: serde::Serialize>(
    v: &T,
    format: Format,
    tables: impl FnOnce(&T) -> Vec<export::Table>,
) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        Format::Json => serde_json::to_vec_pretty(v)?,
        Format::Csv => tables(v)
            .first()
            .map(export::Table::to_csv)
            .unwrap_or_default(),
        Format::Xlsx => export::workbook(&tables(v)).context("building the XLSX file")?,
    })
}

#[cfg(test)]
mod tests;
