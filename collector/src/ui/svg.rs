//! Server-rendered charts: the geometry of line charts, the availability timeline and the
//! overview's sparklines, computed here as plain numbers and drawn by `templates/chart.html`
//! (SVG elements; no script, printable). I/O-free and unit-tested.

use crate::availability::Ms;
use crate::store::history::{Span, SpanState};
use chrono::TimeZone;
use chrono_tz::Tz;
use std::fmt::Write;

/// Drawing area (viewBox units); the chart scales to its container's width.
pub(crate) const W: f64 = 720.0;
pub(crate) const H: f64 = 170.0;
/// Margins: left for the y labels, bottom for the x labels.
const ML: f64 = 44.0;
const MR: f64 = 8.0;
const MT: f64 = 8.0;
const MB: f64 = 22.0;

/// A series to draw: its CSS class, its label, its points `(t, value)`.
pub(crate) type Series = (&'static str, String, Vec<(Ms, f64)>);

/// A line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    /// SVG path data.
    pub d: String,
    /// CSS class (its colour).
    pub class: &'static str,
    pub label: String,
}

/// A rectangle (timeline stretch or marker).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rect {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub class: &'static str,
    /// Tooltip.
    pub title: String,
}

/// An axis label.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tick {
    pub x: String,
    pub y: String,
    pub label: String,
}

/// One chart, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chart {
    /// Element id (tests and anchors).
    pub id: &'static str,
    pub title: String,
    pub height: String,
    pub lines: Vec<Line>,
    pub rects: Vec<Rect>,
    pub xticks: Vec<Tick>,
    pub yticks: Vec<Tick>,
    /// Grid lines (horizontal), y positions.
    pub grid: Vec<String>,
    /// «нет данных за период» when nothing is drawn.
    pub empty: bool,
    /// The legend: (class, label).
    pub legend: Vec<(&'static str, String)>,
}

fn n(v: f64) -> String {
    format!("{v:.1}")
}

fn x_of(t: Ms, from: Ms, to: Ms) -> f64 {
    let span = (to - from).max(1) as f64;
    ML + (t - from) as f64 / span * (W - ML - MR)
}

/// About six time labels over `[from, to)` in `tz`: hours for up to two days, dates beyond.
fn xticks(from: Ms, to: Ms, tz: Tz, y: f64) -> Vec<Tick> {
    let span = (to - from).max(1);
    let steps: [Ms; 10] = [
        3_600_000,
        3 * 3_600_000,
        6 * 3_600_000,
        12 * 3_600_000,
        86_400_000,
        2 * 86_400_000,
        7 * 86_400_000,
        14 * 86_400_000,
        30 * 86_400_000,
        60 * 86_400_000,
    ];
    let step = steps
        .iter()
        .copied()
        .find(|s| span / s <= 7)
        .unwrap_or(90 * 86_400_000);
    // Ticks at local multiples of the step (local midnight for days).
    let offset = tz.timestamp_millis_opt(from).single().map_or(0, |t| {
        use chrono::Offset;
        i64::from(t.offset().fix().local_minus_utc()) * 1000
    });
    let mut t = (from + offset).div_euclid(step) * step - offset;
    if t < from {
        t += step;
    }
    let fmt = if step < 86_400_000 { "%H:%M" } else { "%d.%m" };
    let mut out = Vec::new();
    while t < to {
        let label = tz
            .timestamp_millis_opt(t)
            .single()
            .map_or_else(String::new, |d| d.format(fmt).to_string());
        out.push(Tick {
            x: n(x_of(t, from, to)),
            y: n(y),
            label,
        });
        t += step;
    }
    out
}

/// A line chart of `series` (points `(t, value)`, gaps where points are more than two steps
/// apart) over `[from, to)`, values from 0 to `y_max`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn line_chart(
    id: &'static str,
    title: &str,
    unit: &str,
    from: Ms,
    to: Ms,
    step: Ms,
    y_max: f64,
    series: &[Series],
    tz: Tz,
) -> Chart {
    let y_max = if y_max > 0.0 { y_max } else { 1.0 };
    let plot_h = H - MT - MB;
    let y_of = |v: f64| MT + plot_h - (v.clamp(0.0, y_max) / y_max) * plot_h;
    let mut lines = Vec::new();
    let mut any = false;
    for (class, label, pts) in series {
        let mut d = String::with_capacity(pts.len() * 14);
        let mut prev: Option<Ms> = None;
        // Points in the current run: a run of one would draw nothing, so it gets a short stroke.
        let mut run = 0;
        for &(t, v) in pts {
            // Steps are aligned to their size: the first may begin up to a step before `from`.
            if t < from - step || t >= to {
                continue;
            }
            let t = t.max(from);
            let cmd = match prev {
                Some(p) if t - p <= 2 * step => 'L',
                _ => {
                    if run == 1 {
                        d.push_str("h3");
                    }
                    run = 0;
                    'M'
                }
            };
            let _ = write!(d, "{cmd}{:.1} {:.1}", x_of(t, from, to), y_of(v));
            prev = Some(t);
            run += 1;
            any = true;
        }
        if run == 1 {
            d.push_str("h3");
        }
        if !d.is_empty() {
            lines.push(Line {
                d,
                class,
                label: label.clone(),
            });
        }
    }
    let yticks = (0..=4)
        .map(|i| {
            let v = y_max * f64::from(i) / 4.0;
            Tick {
                x: n(ML - 4.0),
                y: n(y_of(v) + 4.0),
                label: if y_max >= 10.0 {
                    format!("{v:.0}{unit}")
                } else {
                    format!("{v:.1}{unit}").replace('.', ",")
                },
            }
        })
        .collect();
    let grid = (0..=4)
        .map(|i| n(y_of(y_max * f64::from(i) / 4.0)))
        .collect();
    Chart {
        id,
        title: title.to_string(),
        height: n(H),
        legend: lines.iter().map(|l| (l.class, l.label.clone())).collect(),
        lines,
        rects: Vec::new(),
        xticks: xticks(from, to, tz, H - 6.0),
        yticks,
        grid,
        empty: !any,
    }
}

/// Russian name and CSS class of a timeline state.
pub(crate) fn span_state(s: SpanState) -> (&'static str, &'static str) {
    match s {
        SpanState::Up => ("в сети", "tl-up"),
        SpanState::Off => ("выключен штатно", "tl-off"),
        SpanState::Down => ("нет связи", "tl-down"),
        SpanState::Unknown => ("нет данных", "tl-unknown"),
        SpanState::Planned => ("плановые работы", "tl-planned"),
    }
}

/// The availability timeline: one bar of coloured stretches, boots marked below it.
pub(crate) fn timeline(
    from: Ms,
    to: Ms,
    spans: &[Span],
    boots: &[Ms],
    tz: Tz,
    fmt_time: impl Fn(Ms) -> String,
) -> Chart {
    const TH: f64 = 70.0;
    let mut rects = Vec::new();
    for s in spans {
        let (a, b) = (x_of(s.from_ms, from, to), x_of(s.to_ms, from, to));
        let (name, class) = span_state(s.state);
        rects.push(Rect {
            x: n(a),
            y: n(MT),
            // Never thinner than a hair, or a short outage would vanish.
            w: n((b - a).max(0.6)),
            h: n(30.0),
            class,
            title: format!("{name}: {} — {}", fmt_time(s.from_ms), fmt_time(s.to_ms)),
        });
    }
    for &b in boots {
        rects.push(Rect {
            x: n(x_of(b, from, to) - 1.0),
            y: n(MT + 32.0),
            w: n(2.0),
            h: n(8.0),
            class: "tl-boot",
            title: format!("загрузка ОС: {}", fmt_time(b)),
        });
    }
    let mut legend: Vec<(&'static str, String)> = Vec::new();
    for st in [
        SpanState::Up,
        SpanState::Off,
        SpanState::Down,
        SpanState::Planned,
        SpanState::Unknown,
    ] {
        if spans.iter().any(|s| s.state == st) {
            let (name, class) = span_state(st);
            legend.push((class, name.to_string()));
        }
    }
    if !boots.is_empty() {
        legend.push(("tl-boot", "загрузка ОС".into()));
    }
    Chart {
        id: "chart-availability",
        title: "Доступность".into(),
        height: n(TH),
        lines: Vec::new(),
        empty: rects.is_empty(),
        rects,
        xticks: xticks(from, to, tz, TH - 6.0),
        yticks: Vec::new(),
        grid: Vec::new(),
        legend,
    }
}

/// Sparkline path data (100 × 24 box) of `values` scaled to `max`.
pub(crate) fn sparkline(values: &[f64], max: f64) -> String {
    let max = if max > 0.0 { max } else { 1.0 };
    let k = values.len();
    if k == 0 {
        return String::new();
    }
    let mut d = String::with_capacity(k * 12);
    for (i, v) in values.iter().enumerate() {
        let x = if k == 1 {
            0.0
        } else {
            i as f64 * 100.0 / (k - 1) as f64
        };
        let y = 23.0 - (v.clamp(0.0, max) / max) * 22.0;
        let _ = write!(d, "{}{x:.1} {y:.1}", if i == 0 { 'M' } else { 'L' });
    }
    if k == 1 {
        d.push_str(" h100");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Ms = 3_600_000;

    fn tz() -> Tz {
        "Europe/Moscow".parse().unwrap()
    }

    #[test]
    fn lines_break_at_gaps_and_stay_in_the_box() {
        let pts = vec![(0, 10.0), (300_000, 50.0), (3 * HOUR, 200.0)];
        let c = line_chart(
            "c",
            "ЦП",
            " %",
            0,
            4 * HOUR,
            300_000,
            100.0,
            &[("l-cpu", "ЦП".into(), pts)],
            tz(),
        );
        assert!(!c.empty);
        let d = &c.lines[0].d;
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        assert!(d.ends_with("h3"), "a lone last point still shows: {d}");
        // 200 % is clamped to the top of the plot.
        assert!(d.contains(&format!("{:.1}", MT)), "{d}");
        assert_eq!(c.yticks.len(), 5);
        assert_eq!(c.yticks[4].label, "100 %");
        assert!(!c.xticks.is_empty() && c.xticks.len() <= 8);
    }

    #[test]
    fn no_points_is_an_empty_chart() {
        let c = line_chart(
            "c",
            "ЦП",
            " %",
            0,
            HOUR,
            300_000,
            100.0,
            &[("l", "x".into(), vec![])],
            tz(),
        );
        assert!(c.empty);
        assert!(c.lines.is_empty());
    }

    #[test]
    fn timeline_marks_every_stretch_and_boot() {
        let spans = [
            Span {
                from_ms: 0,
                to_ms: HOUR,
                state: SpanState::Up,
            },
            Span {
                from_ms: HOUR,
                to_ms: HOUR + 1000,
                state: SpanState::Down,
            },
        ];
        let c = timeline(0, 2 * HOUR, &spans, &[HOUR / 2], tz(), |t| t.to_string());
        assert_eq!(c.rects.len(), 3);
        assert_eq!(c.rects[1].class, "tl-down");
        assert!(
            c.rects[1].w.parse::<f64>().unwrap() >= 0.6,
            "a second stays visible"
        );
        assert_eq!(c.legend.len(), 3);
    }

    #[test]
    fn day_ticks_fall_on_local_midnight() {
        let from = 1_796_169_600_000; // 2026-12-02 00:00 UTC = 03:00 Moscow
        let c = line_chart(
            "c",
            "",
            "",
            from,
            from + 5 * 86_400_000,
            300_000,
            1.0,
            &[],
            tz(),
        );
        assert!(
            c.xticks.iter().all(|t| t.label.contains('.')),
            "{:?}",
            c.xticks
        );
        assert_eq!(c.xticks[0].label, "03.12");
    }

    #[test]
    fn sparkline_spans_the_box() {
        let d = sparkline(&[0.0, 5.0, 10.0], 10.0);
        assert_eq!(d, "M0.0 23.0L50.0 12.0L100.0 1.0");
        assert_eq!(sparkline(&[], 1.0), "");
        assert_eq!(sparkline(&[1.0], 1.0), "M0.0 1.0 h100");
    }
}
