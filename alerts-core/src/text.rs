//! Russian wording of incidents: titles, durations, times and whole messages.

use crate::model::{Cause, Change, ChangeKind, Incident, Rule, Severity};
use chrono::TimeZone;
use chrono_tz::Tz;
use dozor_proto::Category;
use std::fmt::Write;

/// "недоступна" agreeing with the gender of the category's Russian name.
fn unavailable(cat: Option<Category>) -> &'static str {
    use Category::*;
    match cat {
        Some(Mis | Iemk | Lis | Tmk | Smp | Sanavia) => "недоступна",
        Some(Pacs | Erecipe | Fss) => "недоступен",
        Some(PatientFlow | Mse | Other) | None => "недоступно",
    }
}

/// `МИС (mis-main)`: the category and the target name.
pub fn target_ru(inc: &Incident) -> String {
    match (inc.category, &inc.target) {
        (Some(c), Some(t)) => format!("{} ({t})", c.title_ru()),
        (None, Some(t)) => t.clone(),
        (Some(c), None) => c.title_ru().to_string(),
        (None, None) => "сервис".into(),
    }
}

fn mo_name(inc: &Incident) -> &str {
    inc.mos.first().map_or("?", |m| m.name.as_str())
}

/// The host of a one-host incident with its МО: `srv-01 (подразделение «Стационар», МО «…»)`.
fn host_in_mo(inc: &Incident) -> String {
    let id = inc.hosts.first().map_or("?", String::as_str);
    let r = inc.host_refs.iter().find(|r| r.id == id);
    let name = r.map_or(id, |r| {
        if r.hostname.is_empty() {
            id
        } else {
            &r.hostname
        }
    });
    match r.map(|r| r.site.as_str()).filter(|s| !s.is_empty()) {
        Some(site) => format!("{name} (подразделение «{site}», МО «{}»)", mo_name(inc)),
        None => format!("{name} (МО «{}»)", mo_name(inc)),
    }
}

/// One-line Russian summary of an incident.
pub fn title(inc: &Incident) -> String {
    match inc.rule {
        Rule::ServerLost => format!("Сервер {} не на связи", host_in_mo(inc)),
        Rule::MoUnreachable => format!(
            "МО «{}» недоступна (не на связи хостов: {})",
            mo_name(inc),
            inc.host_count
        ),
        Rule::MoChannel => format!("МО «{}» потеряла связь с {}", mo_name(inc), target_ru(inc)),
        Rule::CentralOutage => format!(
            "{} {} для всего региона (не достигают МО: {})",
            target_ru(inc),
            unavailable(inc.category),
            inc.mo_count
        ),
        Rule::HostTarget => format!("Хост {} не достигает {}", host_in_mo(inc), target_ru(inc)),
        Rule::DiskFull => format!(
            "На сервере {} заканчивается место: {} заполнен на {:.0} %",
            host_in_mo(inc),
            inc.target.as_deref().unwrap_or("?"),
            inc.value.unwrap_or(0.0)
        ),
        Rule::ClockSkew => format!(
            "Расхождение часов в МО «{}» (хостов: {}, до {:.0} с)",
            mo_name(inc),
            inc.host_count,
            inc.value.unwrap_or(0.0)
        ),
    }
}

/// Duration in Russian abbreviations: `45 с`, `12 мин 5 с`, `1 ч 12 мин`, `2 д 3 ч`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec} с"),
        (0, 0, _) if sec > 0 => format!("{m} мин {sec} с"),
        (0, 0, _) => format!("{m} мин"),
        (0, _, 0) => format!("{h} ч"),
        (0, _, _) => format!("{h} ч {m} мин"),
        (_, 0, _) => format!("{d} д"),
        _ => format!("{d} д {h} ч"),
    }
}

/// `12.03.2025 11:04:10 MSK`.
pub fn time(ms: i64, tz: Tz) -> String {
    match tz.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%d.%m.%Y %H:%M:%S %Z").to_string(),
        None => ms.to_string(),
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "АВАРИЯ",
        Severity::Warning => "ПРЕДУПРЕЖДЕНИЕ",
        Severity::Info => "ИНФОРМАЦИЯ",
    }
}

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Short subject line (e-mail subject, Alertmanager summary).
    pub subject: String,
    /// The whole message.
    pub text: String,
}

fn list(items: &[String], count: usize) -> String {
    let mut s = items.join(", ");
    if count > items.len() {
        let _ = write!(s, " и ещё {}", count - items.len());
    }
    s
}

/// The page of an incident in the web UI: `{public_url}/incidents/{id}`.
pub fn incident_url(public_url: &str, id: u64) -> String {
    format!("{}/incidents/{id}", public_url.trim_end_matches('/'))
}

/// Renders one change as a message; with the web UI's public URL, the message ends with a
/// link to the incident's page.
pub fn render(change: &Change, tz: Tz, public_url: Option<&str>) -> Rendered {
    let inc = &change.incident;
    let title = &inc.title;
    let head = match change.kind {
        ChangeKind::Resolved => "ВОССТАНОВЛЕНО".to_string(),
        ChangeKind::Relabelled => "УТОЧНЕНА ПРИЧИНА".to_string(),
        ChangeKind::Acknowledged => "ПРИНЯТО В РАБОТУ".to_string(),
        _ if inc.repeat > 0 => {
            format!("{} (повторно: {})", severity_word(inc.severity), inc.repeat)
        }
        _ => severity_word(inc.severity).to_string(),
    };
    let subject = format!("[dozor] {head}: {title}");
    let mut t = format!("{head}: {title}\n");
    let _ = writeln!(
        t,
        "Правило: {} ({}), важность: {}",
        inc.rule.title_ru(),
        inc.rule.as_str(),
        inc.severity.title_ru()
    );
    match change.kind {
        ChangeKind::Resolved => {
            let _ = writeln!(
                t,
                "Длительность: {} (с {} по {})",
                duration(inc.duration_ms(change.at_ms)),
                time(inc.episode_started_ms, tz),
                time(inc.resolved_ms.unwrap_or(change.at_ms), tz)
            );
        }
        _ => {
            let _ = writeln!(t, "Начало: {}", time(inc.episode_started_ms, tz));
        }
    }
    if inc.rule == Rule::MoUnreachable
        || change.kind == ChangeKind::Relabelled
        || matches!(inc.cause, Cause::Channel | Cause::Power | Cause::AgentDown)
            && inc.rule == Rule::ServerLost
    {
        let _ = writeln!(t, "Причина: {}", inc.cause.title_ru());
        if let Some(e) = inc.evidence
            && e.up + e.down > 0
        {
            let _ = writeln!(
                t,
                "По данным хостов: работали: {}, не работали: {}",
                e.up, e.down
            );
        }
    }
    if change.kind == ChangeKind::Firing
        && let Some(p) = &inc.planned_over
    {
        if p.is_empty() {
            let _ = writeln!(t, "Плановые работы закончились, а неисправность осталась");
        } else {
            let _ = writeln!(
                t,
                "Плановые работы «{p}» закончились, а неисправность осталась"
            );
        }
    }
    if inc.target.is_some() && inc.rule != Rule::DiskFull {
        let _ = writeln!(t, "Сервис: {}", target_ru(inc));
    }
    if inc.mo_count > 0 {
        let names: Vec<String> = inc
            .mos
            .iter()
            .map(|m| format!("{} ({})", m.name, m.oid))
            .collect();
        let _ = writeln!(t, "МО ({}): {}", inc.mo_count, list(&names, inc.mo_count));
    }
    if inc.host_count > 0 {
        let _ = writeln!(
            t,
            "Хосты ({}): {}",
            inc.host_count,
            list(&inc.host_labels(), inc.host_count)
        );
    }
    if let Some(a) = &inc.ack {
        let _ = write!(t, "Принято в работу: {}, {}", a.by, time(a.at_ms, tz));
        if !a.comment.is_empty() {
            let _ = write!(t, " — «{}»", a.comment);
        }
        t.push('\n');
    }
    if !inc.merged.is_empty() {
        let ids: Vec<String> = inc.merged.iter().map(|i| format!("№{i}")).collect();
        let _ = writeln!(t, "Объединены инциденты: {}", ids.join(", "));
    }
    let _ = write!(t, "Инцидент №{}", inc.id);
    if let Some(base) = public_url {
        let _ = write!(t, "\nПодробнее: {}", incident_url(base, inc.id));
    }
    Rendered { subject, text: t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (ms, want) in [
            (0, "0 с"),
            (45_000, "45 с"),
            (60_000, "1 мин"),
            (725_000, "12 мин 5 с"),
            (3_600_000, "1 ч"),
            (4_320_000, "1 ч 12 мин"),
            (86_400_000, "1 д"),
            (183_600_000, "2 д 3 ч"),
            (-5, "0 с"),
        ] {
            assert_eq!(duration(ms), want, "{ms}");
        }
    }

    #[test]
    fn times_in_zone() {
        // 2024-01-09 00:30:00 UTC = 03:30 MSK.
        assert_eq!(
            time(1_704_760_200_000, chrono_tz::Europe::Moscow),
            "09.01.2024 03:30:00 MSK"
        );
    }

    #[test]
    fn gender_agrees() {
        assert_eq!(unavailable(Some(Category::Mis)), "недоступна");
        assert_eq!(unavailable(Some(Category::Pacs)), "недоступен");
        assert_eq!(unavailable(Some(Category::Mse)), "недоступно");
    }
}
