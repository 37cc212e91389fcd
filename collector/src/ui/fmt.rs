//! Russian wording and formatting of the UI: shares with their colour class, durations, times
//! in the region's zone, probe errors, incident scope and state, quotes that never nest.

use crate::alerts::model::{Cause, Incident, IncidentState, Rule};
use chrono::TimeZone;
use chrono_tz::Tz;
use dozor_proto::{ConnState, ErrorClass, Role};

/// A share with its text and colour class: all is green, any loss is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Share {
    pub ok: u32,
    pub total: u32,
    /// `s-na` nothing measured, `s-all` everything, `s-most` ≥ 90 %, `s-half` ≥ 50 %,
    /// `s-few` above 0, `s-none` 0.
    pub class: &'static str,
    /// «38 из 40» or «—».
    pub text: String,
    /// Percent for sorting (−1 when nothing measured).
    pub pct: i32,
}

pub(crate) fn share(ok: u32, total: u32) -> Share {
    if total == 0 {
        return Share {
            ok,
            total,
            class: "s-na",
            text: "—".into(),
            pct: -1,
        };
    }
    let pct_f = f64::from(ok) / f64::from(total) * 100.0;
    let class = if ok >= total {
        "s-all"
    } else if pct_f >= 90.0 {
        "s-most"
    } else if pct_f >= 50.0 {
        "s-half"
    } else if ok > 0 {
        "s-few"
    } else {
        "s-none"
    };
    Share {
        ok,
        total,
        class,
        text: format!("{ok} из {total}"),
        // Floor: 39 of 40 must not read as 100.
        pct: pct_f.floor() as i32,
    }
}

/// Duration in Russian abbreviations (the alert texts' wording).
pub(crate) fn duration(ms: i64) -> String {
    crate::alerts::text::duration(ms)
}

/// `HH:MM:SS` in `tz`.
pub(crate) fn clock(tz: Tz, ms: i64) -> String {
    tz.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, |t| t.format("%H:%M:%S").to_string())
}

/// `DD.MM.YYYY HH:MM` in `tz`; «—» for 0.
pub(crate) fn datetime(tz: Tz, ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    tz.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, |t| t.format("%d.%m.%Y %H:%M").to_string())
}

/// What went wrong with a probe, in Russian (never `lis (connect)`).
pub(crate) fn probe_error(e: Option<ErrorClass>, status: Option<u16>) -> String {
    match e {
        None => "ошибка".into(),
        Some(ErrorClass::Dns) => "имя не разрешается (DNS)".into(),
        Some(ErrorClass::Connect) => "соединение не устанавливается".into(),
        Some(ErrorClass::Timeout) => "нет ответа (истекло время ожидания)".into(),
        Some(ErrorClass::Tls) => "ошибка TLS или сертификата".into(),
        Some(ErrorClass::HttpStatus) => match status {
            Some(s) => format!("сервис ответил ошибкой HTTP {s}"),
            None => "сервис ответил ошибкой HTTP".into(),
        },
        Some(ErrorClass::Other) => "иная ошибка обмена".into(),
    }
}

pub(crate) fn conn_state(s: ConnState) -> &'static str {
    match s {
        ConnState::Online => "в сети",
        ConnState::Offline => "выключен",
        ConnState::Lost => "нет связи",
    }
}

pub(crate) fn role(r: Option<Role>) -> &'static str {
    match r {
        Some(Role::Workstation) => "АРМ",
        Some(Role::Server) => "сервер",
        None => "роль неизвестна",
    }
}

/// Scope of an incident: one host, an МО's channel or power, a central service, ….
pub(crate) fn scope(i: &Incident) -> &'static str {
    match (i.rule, i.cause) {
        (Rule::ServerLost | Rule::HostTarget | Rule::DiskFull, _) => "один хост",
        (Rule::MoUnreachable, Cause::Power) => "МО: электропитание",
        (Rule::MoUnreachable, Cause::Channel) => "МО: канал связи",
        (Rule::MoUnreachable, _) => "МО целиком",
        (Rule::MoChannel, _) => "МО: канал к сервису",
        (Rule::CentralOutage, _) => "центральный сервис",
        (Rule::ClockSkew, _) => "часы хостов МО",
    }
}

pub(crate) fn incident_state(s: IncidentState) -> &'static str {
    match s {
        IncidentState::Pending => "назревает",
        IncidentState::Firing => "идёт",
        IncidentState::Resolved => "завершён",
    }
}

/// Replaces nested «…«…»» in a text written elsewhere (alert titles) by «…„…“».
pub(crate) fn unnest_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '«' => {
                out.push(if depth == 0 { '«' } else { '„' });
                depth += 1;
            }
            '»' => {
                depth = depth.saturating_sub(1);
                out.push(if depth == 0 { '»' } else { '“' });
            }
            c => out.push(c),
        }
    }
    out
}

/// Percent with one decimal and a comma: «99,5 %».
pub(crate) fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{:.1} %", v).replace('.', ","))
}

/// Hours with one decimal and a comma, from ms: «2,5».
pub(crate) fn hours(ms: i64) -> String {
    format!("{:.1}", ms as f64 / 3_600_000.0).replace('.', ",")
}

/// A number without a needless fraction: «80», «87,5».
pub(crate) fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}").replace('.', ",")
    }
}

/// Bytes as «8 ГБ».
pub(crate) fn gib(bytes: u64) -> String {
    let g = bytes as f64 / f64::from(1u32 << 30);
    if g >= 10.0 {
        format!("{g:.0} ГБ")
    } else {
        format!("{g:.1} ГБ").replace('.', ",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_loss_is_not_green() {
        assert_eq!(share(40, 40).class, "s-all");
        assert_eq!(share(39, 40).class, "s-most");
        assert_eq!(share(39, 40).pct, 97);
        assert_eq!(share(20, 40).class, "s-half");
        assert_eq!(share(1, 40).class, "s-few");
        assert_eq!(share(0, 40).class, "s-none");
        assert_eq!(share(0, 0).class, "s-na");
        assert_eq!(share(38, 40).text, "38 из 40");
        assert_eq!(share(399, 400).pct, 99, "never rounds a loss up to 100");
    }

    #[test]
    fn quotes_never_nest() {
        assert_eq!(
            unnest_quotes("МО «КГБУЗ «Больница»» потеряла связь с МИС"),
            "МО «КГБУЗ „Больница“» потеряла связь с МИС"
        );
        assert_eq!(unnest_quotes("«a» и «b»"), "«a» и «b»");
    }

    #[test]
    fn probe_errors_in_russian() {
        assert_eq!(
            probe_error(Some(ErrorClass::Connect), None),
            "соединение не устанавливается"
        );
        assert_eq!(
            probe_error(Some(ErrorClass::HttpStatus), Some(503)),
            "сервис ответил ошибкой HTTP 503"
        );
    }

    #[test]
    fn times_in_the_region_zone() {
        let tz: Tz = "Asia/Vladivostok".parse().unwrap();
        // 2026-12-02 00:00:00 UTC = 10:00 in Vladivostok.
        assert_eq!(clock(tz, 1_796_169_600_000), "10:00:00");
        assert_eq!(datetime(tz, 0), "—");
        assert_eq!(pct(Some(99.54)), "99,5 %");
        assert_eq!(gib(8 << 30), "8,0 ГБ");
    }
}
