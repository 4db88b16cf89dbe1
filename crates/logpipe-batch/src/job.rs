//! Batch jobs as SQL files: one statement over the lake, with its settings
//! in a short header of `-- key: value` comment lines (docs/jobs.md).
//!
//! ```sql
//! -- name: errors_by_level
//! -- period: day
//! -- schedule: 15 1 * * *
//! SELECT level, count(*) AS count
//! FROM logs
//! WHERE year = {year} AND month = {month} AND day = {day}
//! GROUP BY level
//! ```
//!
//! The header ends at the first line that is not `-- key: value`; the
//! comments stay in the statement, so DataFusion's line numbers are the
//! file's. The built-in reports are three such files (`jobs/` in this
//! crate), compiled in and scheduled by `[reports]`.

use std::path::Path;

use chrono::{Datelike, Duration as Days, NaiveDate};
use croner::Cron;
use logpipe_core::stream_sql::AlertRule;
use logpipe_core::tables::{self, TableDef};

use crate::error::{BatchError, Result};

/// How much of the lake one run of a job covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    /// One UTC day; partition `date`; a scheduled run covers yesterday.
    Day,
    /// One ISO week, Monday to Sunday; partition `week`; a scheduled run
    /// covers last week.
    Week,
    /// Whole UTC days from..to; partitions `start_date`, `end_date`; a
    /// scheduled run covers the `days` days before today.
    Range { days: u32 },
}

/// One run's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day(NaiveDate),
    /// The ISO week starting on this Monday.
    Week(NaiveDate),
    /// Whole UTC days, both included.
    Range(NaiveDate, NaiveDate),
}

impl Period {
    /// The ISO week containing `date`.
    pub fn week_of(date: NaiveDate) -> Period {
        Period::Week(date - Days::days(i64::from(date.weekday().num_days_from_monday())))
    }

    /// Parses `YYYY-Www` (ISO week).
    pub fn parse_week(text: &str) -> Result<Period> {
        let monday = logpipe_core::time::iso_week_monday(text)
            .ok_or_else(|| BatchError::BadWeek(text.to_string()))?;
        Ok(Period::Week(monday))
    }

    /// First and last day covered.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        match *self {
            Period::Day(date) => (date, date),
            Period::Week(monday) => (monday, monday + Days::days(6)),
            Period::Range(start, end) => (start, end),
        }
    }

    /// What the run is for, as written in `job_runs.target`.
    pub fn target(&self) -> String {
        match self {
            Period::Day(date) => date.to_string(),
            Period::Week(monday) => {
                let week = monday.iso_week();
                format!("{}-W{:02}", week.year(), week.week())
            }
            Period::Range(start, end) => format!("{start}..{end}"),
        }
    }

    /// The values of the partition columns of [`PeriodKind::columns`].
    fn partition_values(&self) -> Vec<String> {
        match self {
            Period::Day(date) => vec![date.to_string()],
            Period::Week(_) => vec![self.target()],
            Period::Range(start, end) => vec![start.to_string(), end.to_string()],
        }
    }

    /// The placeholders a job's SQL may use, with this period's values.
    fn placeholders(&self) -> [(&'static str, String); 10] {
        let (first, last) = self.days();
        let ymd = |d: NaiveDate| d.year() * 10000 + d.month() as i32 * 100 + d.day() as i32;
        [
            ("{year}", first.year().to_string()),
            ("{month}", first.month().to_string()),
            ("{day}", first.day().to_string()),
            ("{date}", first.to_string()),
            ("{start_date}", first.to_string()),
            ("{end_date}", last.to_string()),
            ("{start_ymd}", ymd(first).to_string()),
            ("{end_ymd}", ymd(last).to_string()),
            ("{start}", format!("{first}T00:00:00Z")),
            ("{end}", format!("{}T00:00:00Z", last + Days::days(1))),
        ]
    }
}

impl PeriodKind {
    /// The output's partition columns, in directory order.
    pub fn columns(&self) -> &'static [&'static str] {
        match self {
            PeriodKind::Day => &["date"],
            PeriodKind::Week => &["week"],
            PeriodKind::Range { .. } => &["start_date", "end_date"],
        }
    }

    /// PostgreSQL: the column naming the period, whose rows a run replaces.
    fn postgres_column(&self) -> &'static str {
        match self {
            PeriodKind::Day => "date",
            PeriodKind::Week => "week",
            PeriodKind::Range { .. } => "period",
        }
    }

    /// The period a scheduled run on `today` covers: the last whole one.
    pub fn scheduled(&self, today: NaiveDate) -> Period {
        match *self {
            PeriodKind::Day => Period::Day(today - Days::days(1)),
            PeriodKind::Week => Period::week_of(today - Days::days(7)),
            PeriodKind::Range { days } => {
                Period::Range(today - Days::days(i64::from(days)), today - Days::days(1))
            }
        }
    }

    /// The periods covering the days `from..=to`: each day, each ISO week
    /// touching them, or the one range.
    pub fn periods(&self, from: NaiveDate, to: NaiveDate) -> Vec<Period> {
        match self {
            PeriodKind::Day => from
                .iter_days()
                .take_while(|d| *d <= to)
                .map(Period::Day)
                .collect(),
            PeriodKind::Week => {
                let mut weeks: Vec<Period> = Vec::new();
                for day in from.iter_days().take_while(|d| *d <= to) {
                    let week = Period::week_of(day);
                    if weeks.last() != Some(&week) {
                        weeks.push(week);
                    }
                }
                weeks
            }
            PeriodKind::Range { .. } => vec![Period::Range(from, to)],
        }
    }

    /// The period of one date given by hand (`--date D`): its day, its ISO
    /// week, or the one-day range.
    pub fn of_date(&self, date: NaiveDate) -> Period {
        match self {
            PeriodKind::Day => Period::Day(date),
            PeriodKind::Week => Period::week_of(date),
            PeriodKind::Range { .. } => Period::Range(date, date),
        }
    }

    fn parse(text: &str, days: Option<u32>) -> std::result::Result<PeriodKind, String> {
        match text {
            "day" => Ok(PeriodKind::Day),
            "week" => Ok(PeriodKind::Week),
            "range" => Ok(PeriodKind::Range {
                days: days.unwrap_or(7),
            }),
            other => Err(format!("period must be day, week or range, not {other:?}")),
        }
    }
}

/// A batch job: its SQL, its period, its schedule and its output table.
#[derive(Debug)]
pub struct JobDef {
    pub name: &'static str,
    /// Where it was read from: a file path, or `built-in NAME.sql`.
    pub origin: String,
    /// The file's text, header included, with `{placeholders}`.
    pub template: String,
    pub period: PeriodKind,
    /// Cron in UTC; `None`: run by hand only.
    pub schedule: Option<(String, Cron)>,
    pub table: &'static TableDef,
    /// Whether its rows also go to PostgreSQL (when `[postgres]` is set).
    pub postgres: bool,
    /// Where each run's rows are POSTed as JSON (`-- webhook: URL`).
    pub webhook: Option<String>,
    /// Jobs whose output this one reads (filled by the runner).
    pub inputs: Vec<&'static str>,
    /// How long its periods' partitions are kept (`-- retention: 90d`),
    /// counted from the period's end; unset: kept for ever.
    pub retention: Option<std::time::Duration>,
}

/// The built-in reports: name, file, scheduled by which `[reports]` cron.
pub const BUILT_IN: [(&str, &str, &str); 3] = [
    (
        "daily_report",
        include_str!("../jobs/daily_report.sql"),
        "daily",
    ),
    (
        "weekly_analysis",
        include_str!("../jobs/weekly_analysis.sql"),
        "weekly",
    ),
    (
        "service_analysis",
        include_str!("../jobs/service_analysis.sql"),
        "service",
    ),
];

const KEYS: &str = "name, kind, period, days, schedule, output, retention, postgres, webhook";
const STREAM_KEYS: &str =
    "name, kind, lateness, idle_close, retention, output, postgres, webhook, alert";

/// Tables logpipe keeps in PostgreSQL besides the lake's: no job may write
/// one of these names there.
const POSTGRES_TABLES: [&str; 2] = ["window_stats", "logpipe_migrations"];

/// `-- postgres: true|false`.
fn flag(key: &str, value: &str) -> std::result::Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{key} must be true or false, not {other:?}")),
    }
}

/// `-- webhook: URL`: an http or https URL.
fn webhook_url(value: &str) -> std::result::Result<String, String> {
    let ok = ["http://", "https://"].iter().any(|scheme| {
        value
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    });
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "webhook must be an http:// or https:// URL, not {value:?}"
        ))
    }
}

/// The `-- key: value` lines a file starts with: key, value, 1-based line
/// and the value's column.
fn header(text: &str) -> Vec<(&str, &str, usize, usize)> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("-- ") else {
            break;
        };
        let Some((key, value)) = rest.split_once(':') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            break;
        }
        let column = line.len() - value.trim_start().len() + 1;
        entries.push((key, value.trim(), index + 1, column));
    }
    entries
}

/// Whether a job file is a streaming job (`-- kind: stream`).
fn is_stream(text: &str) -> bool {
    header(text)
        .iter()
        .any(|(key, value, ..)| *key == "kind" && *value == "stream")
}

/// `500ms`, `5s`, `2m`, `1h`, `30d`.
fn duration_of(text: &str) -> Option<std::time::Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let amount: u64 = text[..split].parse().ok()?;
    let millis = match &text[split..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(
        amount.checked_mul(millis)?,
    ))
}

/// A streaming job's file: its header read here, its statement parsed by
/// `logpipe_query::stream_sql` where the job is put together.
#[derive(Debug, Clone)]
pub struct StreamJobFile {
    pub name: String,
    pub origin: String,
    /// The whole file (the header is comments).
    pub sql: String,
    /// Output directory in the lake.
    pub output: String,
    pub allowed_lateness: std::time::Duration,
    pub idle_close: std::time::Duration,
    /// How long its table's hour partitions are kept (`-- retention: 30d`,
    /// deleted whole as `[lake.retention]` does the built-in tables'); unset:
    /// for ever.
    pub retention: Option<std::time::Duration>,
    /// Whether its rows are upserted into PostgreSQL (when `[postgres]` is
    /// set): the header's `postgres`, true unless it says false.
    pub postgres: bool,
    pub webhook: Option<String>,
    /// `-- alert:` lines, with the 1-based line and column of each (the
    /// column it names is checked against the statement where the job is
    /// put together).
    pub alerts: Vec<(AlertRule, usize, usize)>,
}

impl StreamJobFile {
    pub fn parse(origin: &str, text: &str, default_name: &str) -> Result<StreamJobFile> {
        let mut name = (default_name.to_string(), 1, 1);
        let mut output = None;
        let mut allowed_lateness = std::time::Duration::from_secs(5);
        let mut idle_close = std::time::Duration::from_secs(10);
        let mut retention = None;
        let mut postgres = true;
        let mut webhook = None;
        let mut alerts: Vec<(AlertRule, usize, usize)> = Vec::new();
        for (key, value, line, column) in header(text) {
            let fail = |reason: String| header_error(origin, line, column, reason);
            let duration = || {
                duration_of(value).ok_or_else(|| {
                    fail(format!(
                        "{key} must be a duration like 500ms, 5s, 2m, 1h or 30d, not {value:?}"
                    ))
                })
            };
            match key {
                "name" => name = (value.to_string(), line, column),
                "kind" => {}
                "lateness" => allowed_lateness = duration()?,
                "idle_close" => idle_close = duration()?,
                "retention" => {
                    retention = Some(at_least_an_hour(duration()?, value, "hours").map_err(fail)?);
                }
                "postgres" => postgres = flag(key, value).map_err(fail)?,
                "webhook" => webhook = Some(webhook_url(value).map_err(fail)?),
                "alert" => {
                    let rule = AlertRule::parse(value).map_err(|(offset, reason)| {
                        header_error(
                            origin,
                            line,
                            column + value[..offset].chars().count(),
                            reason,
                        )
                    })?;
                    if alerts.iter().any(|(other, ..)| other.name == rule.name) {
                        return Err(fail(format!("two alerts are named {:?}", rule.name)));
                    }
                    alerts.push((rule, line, column));
                }
                "output" => {
                    let dir = value.trim_end_matches('/');
                    let plain = check_output(dir).is_ok()
                        || dir
                            .strip_prefix("streams/")
                            .is_some_and(|rest| check_output(&format!("jobs/{rest}")).is_ok());
                    if !plain {
                        return Err(fail(format!(
                            "output {dir:?} must be a directory under streams/, jobs/ or results/ in the lake, of plain names"
                        )));
                    }
                    output = Some(dir.to_string());
                }
                other => {
                    return Err(header_error(
                        origin,
                        line,
                        4,
                        format!(
                            "unknown setting {other:?}; a streaming job's header knows {STREAM_KEYS}"
                        ),
                    ));
                }
            }
        }
        let (name, line, column) = name;
        if !is_identifier(&name)
            || tables::by_name(&name).is_some()
            || POSTGRES_TABLES.contains(&name.as_str())
        {
            return Err(header_error(
                origin,
                line,
                column,
                format!(
                    "the job's name {name:?} must be a plain SQL name (lower-case letters, digits and _) and not a built-in table's"
                ),
            ));
        }
        Ok(StreamJobFile {
            output: output.unwrap_or_else(|| format!("streams/{name}")),
            name,
            origin: origin.to_string(),
            sql: text.to_string(),
            allowed_lateness,
            idle_close,
            retention,
            postgres,
            webhook,
            alerts,
        })
    }
}

/// A header line that is wrong: 1-based line and column of the value.
fn header_error(origin: &str, line: usize, column: usize, reason: String) -> BatchError {
    BatchError::Job {
        origin: origin.to_string(),
        line: line as u64,
        column: column as u64,
        reason,
    }
}

/// Whether `name` is a plain SQL identifier: lower-case letters, digits
/// and `_`, not starting with a digit.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl JobDef {
    /// Parses a job file. `default_name` is the file's stem; `built_in`
    /// gives the report's table instead of a new one.
    pub fn parse(origin: &str, text: &str, default_name: &str, built_in: bool) -> Result<JobDef> {
        let mut name = (default_name.to_string(), 0, 0);
        let mut period = ("day".to_string(), 0, 0);
        let mut days: Option<(u32, usize, usize)> = None;
        let mut schedule = None;
        let mut output = None;
        let mut postgres = true;
        let mut webhook = None;
        let mut retention = None;
        for (key, value_text, line_no, column) in header(text) {
            let fail = |reason: String| header_error(origin, line_no, column, reason);
            match key {
                "name" => name = (value_text.to_string(), line_no, column),
                "period" => period = (value_text.to_string(), line_no, column),
                "days" => {
                    let n: u32 = value_text
                        .parse()
                        .ok()
                        .filter(|n| (1..=366).contains(n))
                        .ok_or_else(|| {
                            fail(format!(
                                "days must be a whole number from 1 to 366, not {value_text:?}"
                            ))
                        })?;
                    days = Some((n, line_no, column));
                }
                "schedule" => {
                    let cron = value_text.parse::<Cron>().map_err(|e| {
                        fail(format!("{value_text:?} is not a cron expression (minute hour day-of-month month day-of-week, UTC): {e}"))
                    })?;
                    schedule = Some((value_text.to_string(), cron));
                }
                "output" => output = Some((value_text.to_string(), line_no, column)),
                "retention" => {
                    let kept = duration_of(value_text).ok_or_else(|| {
                        fail(format!(
                            "retention must be a duration like 36h or 30d, not {value_text:?}"
                        ))
                    })?;
                    retention = Some(at_least_an_hour(kept, value_text, "periods").map_err(fail)?);
                }
                "kind" if value_text == "batch" => {}
                "kind" => {
                    return Err(fail(format!(
                        "kind must be batch or stream, not {value_text:?}"
                    )));
                }
                "postgres" => postgres = flag(key, value_text).map_err(fail)?,
                "webhook" => webhook = Some(webhook_url(value_text).map_err(fail)?),
                other => {
                    return Err(header_error(
                        origin,
                        line_no,
                        4,
                        format!("unknown setting {other:?}; a job's header knows {KEYS}"),
                    ));
                }
            }
        }
        let (name, name_line, name_column) = name;
        let at = |line: usize, column: usize, reason: String| {
            header_error(origin, line.max(1), column.max(1), reason)
        };
        if !is_identifier(&name) {
            return Err(at(
                name_line,
                name_column,
                format!(
                    "the job's name {name:?} is not a plain SQL name (lower-case letters, digits and _, \
                     not starting with a digit); rename the file or set `-- name:`"
                ),
            ));
        }
        let kind = PeriodKind::parse(&period.0, days.map(|d| d.0))
            .map_err(|reason| at(period.1, period.2, reason))?;
        if let (Some((_, line, column)), false) = (days, matches!(kind, PeriodKind::Range { .. })) {
            return Err(at(
                line,
                column,
                "days is for period: range only".to_string(),
            ));
        }
        let table = if built_in {
            tables::by_name(&name).expect("a built-in job writes its report's table")
        } else {
            if tables::by_name(&name).is_some() || POSTGRES_TABLES.contains(&name.as_str()) {
                return Err(at(
                    name_line,
                    name_column,
                    format!("{name:?} is a built-in table; give the job another name"),
                ));
            }
            let dir = match output {
                Some((dir, line, column)) => {
                    check_output(&dir).map_err(|reason| at(line, column, reason))?;
                    dir.trim_end_matches('/').to_string()
                }
                None => format!("jobs/{name}"),
            };
            TableDef::job_output(name.clone(), dir, kind.columns())
        };
        check_placeholders(origin, text)?;
        let name: &'static str = table.name;
        Ok(JobDef {
            name,
            origin: origin.to_string(),
            template: text.to_string(),
            period: kind,
            schedule,
            table,
            postgres,
            webhook,
            inputs: Vec::new(),
            retention,
        })
    }

    /// The job's SQL for `period`.
    pub fn sql(&self, period: &Period) -> String {
        let mut sql = self.template.clone();
        for (placeholder, value) in period.placeholders() {
            sql = sql.replace(placeholder, &value);
        }
        sql
    }

    /// Maps a (line, column) of [`JobDef::sql`]'s text back to the file's:
    /// lines are the same, columns move where a placeholder before them
    /// was filled in.
    pub fn file_position(&self, period: &Period, line: u64, column: u64) -> (u64, u64) {
        let Some(template_line) = self.template.lines().nth(line.saturating_sub(1) as usize) else {
            return (line, column);
        };
        let values = period.placeholders();
        // Walk the template line, tracking the filled-in column.
        let (mut filled, mut index) = (1u64, 0usize);
        while index < template_line.len() {
            let rest = &template_line[index..];
            let (template_len, filled_len) = match values.iter().find(|(p, _)| rest.starts_with(p))
            {
                Some((placeholder, value)) => (placeholder.len(), value.chars().count() as u64),
                None => {
                    let c = rest.chars().next().map_or(1, char::len_utf8);
                    (c, 1)
                }
            };
            if filled + filled_len > column {
                break;
            }
            filled += filled_len;
            index += template_len;
        }
        (line, template_line[..index].chars().count() as u64 + 1)
    }

    /// The output directory of one period's run (Hive partitions).
    pub fn output_dir(&self, period: &Period) -> String {
        let mut dir = self.table.dir.to_string();
        for (column, value) in self.period.columns().iter().zip(period.partition_values()) {
            dir.push_str(&format!("/{column}={value}"));
        }
        dir
    }

    /// PostgreSQL: the period column and its value.
    pub(crate) fn period_column(&self, period: &Period) -> (&'static str, String) {
        (self.period.postgres_column(), period.target())
    }

    /// Whether this is one of the compiled-in reports.
    pub fn is_built_in(&self) -> bool {
        self.origin.starts_with("built-in ")
    }
}

/// A user job's output directory: under `jobs/` or `results/`, plain
/// names, so it can never overlap the bus, the commits or another table.
fn check_output(dir: &str) -> std::result::Result<(), String> {
    let dir = dir.trim_end_matches('/');
    let parts: Vec<&str> = dir.split('/').collect();
    let plain = parts.iter().all(|p| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    });
    if !plain || parts.len() < 2 || !matches!(parts[0], "jobs" | "results") {
        return Err(format!(
            "output {dir:?} must be a directory under jobs/ or results/ in the lake \
             (like results/my_job), of plain names"
        ));
    }
    Ok(())
}

/// Refuses a `{word}` that is not a placeholder, naming where it is.
fn check_placeholders(origin: &str, text: &str) -> Result<()> {
    let known = Period::Day(NaiveDate::default()).placeholders();
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let word: String = after
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !word.is_empty()
                && after[word.len()..].starts_with('}')
                && !known.iter().any(|(p, _)| p[1..p.len() - 1] == word)
            {
                let names: Vec<&str> = known.iter().map(|(p, _)| *p).collect();
                return Err(header_error(
                    origin,
                    index + 1,
                    line[..offset + open].chars().count() + 1,
                    format!(
                        "unknown placeholder {{{word}}}; the placeholders are {}",
                        names.join(", ")
                    ),
                ));
            }
            offset += open + 1;
            rest = after;
        }
    }
    Ok(())
}

/// Every batch job: the built-in reports, then a directory's `*.sql`
/// files in name order (streaming jobs left out: [`load_all`]).
pub fn load(dir: Option<&Path>, report_schedules: &[(&'static str, Cron)]) -> Result<Vec<JobDef>> {
    Ok(load_all(dir, report_schedules)?.0)
}

/// Every job of a jobs directory: the batch jobs (the built-in reports
/// first) and the streaming jobs (`-- kind: stream`). Names and output
/// directories are unique across both.
pub fn load_all(
    dir: Option<&Path>,
    report_schedules: &[(&'static str, Cron)],
) -> Result<(Vec<JobDef>, Vec<StreamJobFile>)> {
    let mut jobs = Vec::new();
    let mut streams: Vec<StreamJobFile> = Vec::new();
    for (name, text, schedule) in BUILT_IN {
        let mut job = JobDef::parse(&format!("built-in {name}.sql"), text, name, true)?;
        job.schedule = report_schedules
            .iter()
            .find(|(report, _)| *report == schedule)
            .map(|(_, cron)| (cron.to_string(), cron.clone()));
        jobs.push(job);
    }
    let Some(dir) = dir else {
        return Ok((jobs, streams));
    };
    let read_dir = std::fs::read_dir(dir).map_err(|e| BatchError::JobsDir {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<_> = read_dir
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    for path in files {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| BatchError::JobsDir {
            dir: origin.clone(),
            reason: e.to_string(),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let (name, dir_of, entry): (String, String, Option<JobDef>) = if is_stream(&text) {
            let stream = StreamJobFile::parse(&origin, &text, &stem)?;
            let found = (stream.name.clone(), stream.output.clone(), None);
            streams.push(stream);
            found
        } else {
            let job = JobDef::parse(&origin, &text, &stem, false)?;
            (job.name.to_string(), job.table.dir.to_string(), Some(job))
        };
        let taken = jobs
            .iter()
            .map(|j: &JobDef| {
                (
                    j.name.to_string(),
                    j.table.dir.to_string(),
                    j.origin.clone(),
                )
            })
            .chain(
                streams
                    .iter()
                    .map(|s| (s.name.clone(), s.output.clone(), s.origin.clone())),
            )
            .filter(|(_, _, other)| *other != origin)
            .find(|(other, other_dir, _)| *other == name || *other_dir == dir_of);
        if let Some((other, other_dir, other_origin)) = taken {
            let reason = if other == name {
                format!("a job named {name:?} is already defined by {other_origin}")
            } else {
                format!("its output {other_dir} is also {other}'s ({other_origin})")
            };
            return Err(BatchError::Job {
                origin,
                line: 1,
                column: 1,
                reason,
            });
        }
        jobs.extend(entry);
    }
    Ok((jobs, streams))
}

/// A `-- retention:` of `value` (parsed as `kept`): retention deletes whole
/// `what` (hours, periods), so less than an hour is refused.
fn at_least_an_hour(
    kept: std::time::Duration,
    value: &str,
    what: &str,
) -> Result<std::time::Duration, String> {
    if kept < std::time::Duration::from_secs(3600) {
        return Err(format!(
            "retention is {value}; it deletes whole {what}, so keep at least 1h"
        ));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streaming_job_keeps_its_table_as_long_as_its_header_says() {
        let body = "SELECT window_start, count(*) AS n FROM events GROUP BY TUMBLE(timestamp, INTERVAL '1' MINUTE)\n";
        let parse = |header: &str| StreamJobFile::parse("a.sql", &format!("{header}{body}"), "a");
        let job = parse("-- kind: stream\n-- retention: 30d\n").unwrap();
        assert_eq!(
            job.retention,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse("-- kind: stream\n").unwrap().retention, None);
        let error = parse("-- kind: stream\n-- retention: 30m\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a.sql:2:") && error.contains("keep at least 1h"),
            "{error}"
        );
        let error = parse("-- kind: stream\n-- retention: a month\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("like 500ms"), "{error}");
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn periods_targets_and_paths() {
        let jobs = load(None, &[]).unwrap();
        let daily = &jobs[0];
        let day = Period::Day(date("2026-01-11"));
        assert_eq!(daily.output_dir(&day), "reports/daily/date=2026-01-11");
        assert!(
            daily
                .sql(&day)
                .contains("year = 2026 AND month = 1 AND day = 11")
        );
        // 2026-01-11 is a Sunday: ISO week 2 runs Monday 5th to Sunday 11th.
        let week = Period::week_of(date("2026-01-11"));
        assert_eq!(week.target(), "2026-W02");
        assert_eq!(week, Period::parse_week("2026-W02").unwrap());
        let weekly = &jobs[1];
        assert!(weekly.sql(&week).contains("BETWEEN 20260105 AND 20260111"));
        assert!(
            weekly
                .sql(&week)
                .contains("timestamp < TIMESTAMP '2026-01-12T00:00:00Z'")
        );
        assert!(Period::parse_week("2026-02").is_err());
        assert!(Period::parse_week("2026-W54").is_err());
        assert_eq!(
            jobs[2].output_dir(&Period::Range(date("2026-01-01"), date("2026-01-07"))),
            "analysis/service/start_date=2026-01-01/end_date=2026-01-07"
        );
    }

    #[test]
    fn scheduled_runs_cover_the_period_before() {
        let today = date("2026-01-13");
        assert_eq!(PeriodKind::Day.scheduled(today).target(), "2026-01-12");
        assert_eq!(PeriodKind::Week.scheduled(today).target(), "2026-W02");
        assert_eq!(
            PeriodKind::Range { days: 7 }.scheduled(today).target(),
            "2026-01-06..2026-01-12"
        );
        assert_eq!(
            PeriodKind::Day
                .periods(date("2026-01-01"), date("2026-01-07"))
                .len(),
            7
        );
        // Thursday 1st to Wednesday 14th touches ISO weeks 1, 2 and 3.
        let weeks: Vec<String> = PeriodKind::Week
            .periods(date("2026-01-01"), date("2026-01-14"))
            .iter()
            .map(Period::target)
            .collect();
        assert_eq!(weeks, ["2026-W01", "2026-W02", "2026-W03"]);
    }

    #[test]
    fn a_user_job_header_is_read_and_each_mistake_is_placed() {
        let text = "-- name: errors_by_level\n-- period: range\n-- days: 3\n-- schedule: 15 1 * * *\n\
                    -- output: results/errors\n-- postgres: false\n--\n-- free text: not a setting\n\
                    SELECT level, count(*) FROM logs WHERE day = {day} GROUP BY level\n";
        let job = JobDef::parse("jobs/e.sql", text, "e", false).unwrap();
        assert_eq!(job.name, "errors_by_level");
        assert_eq!(job.period, PeriodKind::Range { days: 3 });
        assert_eq!(job.table.dir, "results/errors");
        assert!(!job.postgres);
        assert_eq!(job.schedule.as_ref().unwrap().0, "15 1 * * *");

        let error = |text: &str| {
            JobDef::parse("jobs/x.sql", text, "x", false)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("-- period: hourly\nSELECT 1"),
            "jobs/x.sql:1:12: period must be day, week or range, not \"hourly\""
        );
        assert!(
            error("-- perod: day\nSELECT 1")
                .starts_with("jobs/x.sql:1:4: unknown setting \"perod\"")
        );
        assert!(
            error("-- schedule: every day\nSELECT 1")
                .starts_with("jobs/x.sql:1:14: \"every day\" is not a cron")
        );
        assert!(error("-- output: /etc\nSELECT 1").contains("under jobs/ or results/"));
        assert!(error("-- output: jobs/../bus\nSELECT 1").contains("under jobs/ or results/"));
        assert!(error("-- name: logs\nSELECT 1").contains("built-in table"));
        assert!(error("-- name: My-Job\nSELECT 1").contains("not a plain SQL name"));
        assert_eq!(
            error("SELECT 1\nFROM logs WHERE day = {dya}"),
            "jobs/x.sql:2:23: unknown placeholder {dya}; the placeholders are {year}, {month}, \
             {day}, {date}, {start_date}, {end_date}, {start_ymd}, {end_ymd}, {start}, {end}"
        );
    }

    #[test]
    fn a_position_in_the_filled_sql_maps_back_to_the_file() {
        let text = "-- name: j\nSELECT x FROM logs WHERE year = {year} AND nope = 1";
        let job = JobDef::parse("j.sql", text, "j", false).unwrap();
        let period = Period::Day(date("2026-01-02"));
        let filled = job.sql(&period);
        let line = filled.lines().nth(1).unwrap();
        let column = line.find("nope").unwrap() as u64 + 1;
        let template_column = text.lines().nth(1).unwrap().find("nope").unwrap() as u64 + 1;
        assert_eq!(job.file_position(&period, 2, column), (2, template_column));
        assert_eq!(job.file_position(&period, 2, 8), (2, 8));
    }

    #[test]
    fn a_batch_jobs_retention_is_a_duration_of_at_least_an_hour() {
        let parse =
            |header: &str| JobDef::parse("jobs/r.sql", &format!("{header}\nSELECT 1"), "r", false);
        assert_eq!(
            parse("-- retention: 90d").unwrap().retention,
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
        assert_eq!(parse("-- name: r").unwrap().retention, None);
        let short = parse("-- retention: 30m").unwrap_err().to_string();
        assert!(short.contains("at least 1h"), "{short}");
        let wrong = parse("-- retention: a year").unwrap_err().to_string();
        assert!(wrong.contains("retention must be a duration"), "{wrong}");
    }
}
