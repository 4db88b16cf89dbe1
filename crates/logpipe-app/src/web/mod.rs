//! The built-in web console: `GET /` (one HTML page compiled into the
//! binary, no external service, no build step) and the JSON it reads.
//!
//! It lives in the application crate because it shows every component at
//! once: the metric registry (live figures), the bus (partitions, a tail
//! of records), the lake's commit chains (stream jobs), the batch runner
//! (report runs, started from the page too) and the query engine (SQL,
//! the tables and their columns, alerts). Each route reads what the
//! process's roles opened; a part the process does not run answers 503
//! naming what is missing.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the console page (`console.html`) |
//! | `GET /api/overview` | cumulative counters and each service's latest window |
//! | `GET /api/topics` | partitions and their start and end offsets |
//! | `GET /api/tail?topic=T[&service=S][&level=L][&limit=N]` | the newest records, filtered |
//! | `GET /api/jobs` | stream jobs' commits and positions, report runs |
//! | `POST /api/reports/run` | `{"report": "daily", "date": "YYYY-MM-DD"}` runs a report |
//!
//! `POST /api/query` and `GET /api/alerts` are the query API's
//! (`logpipe_http`); the page uses them for the SQL console and alerts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use logpipe_batch::{BatchRunner, JobDef, Period, PeriodKind, Report};
use logpipe_bus::Bus;
use logpipe_config::Scope;
use logpipe_core::record::{RecordKind, ValidationLimits, binary};
use logpipe_core::telemetry::registry;
use logpipe_http::auth::{Auth, require};
use logpipe_lake::Lake;
use logpipe_query::QueryEngine;
use serde::Deserialize;
use serde_json::{Value, json};

const PAGE: &str = include_str!("console.html");

/// Records a tail request looks at per partition (the newest), and the
/// most it returns.
const TAIL_SCAN_PER_PARTITION: u64 = 2_000;
const TAIL_MAX_LIMIT: usize = 500;
const TAIL_DEFAULT_LIMIT: usize = 50;
/// How long a tail request reads before answering with what it has.
const TAIL_READ_TIME: Duration = Duration::from_secs(2);

/// What the console reads: each part is there when the process's roles
/// opened it.
pub struct Console {
    pub roles: Vec<&'static str>,
    pub bus: Option<Arc<dyn Bus>>,
    pub lake: Option<Lake>,
    pub engine: Option<Arc<QueryEngine>>,
    pub runner: Option<Arc<BatchRunner>>,
    /// Stream jobs whose commit chains the job list shows.
    pub stream_jobs: Vec<&'static str>,
    runs: Mutex<Vec<RunView>>,
    next_run: std::sync::atomic::AtomicU64,
}

/// A report run started from the console while it runs; once it ends the
/// runner has recorded it in `job_runs`, where the job list reads it.
#[derive(Clone)]
struct RunView {
    id: u64,
    job: &'static str,
    target: String,
    started_ms: i64,
    started: Instant,
}

impl Console {
    pub fn new(roles: Vec<&'static str>) -> Console {
        Console {
            roles,
            bus: None,
            lake: None,
            engine: None,
            runner: None,
            stream_jobs: Vec::new(),
            runs: Mutex::new(Vec::new()),
            next_run: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The page (open: it asks for a token when the API wants one) and its
    /// JSON routes: the views for the `query` scope, the tail and report
    /// runs for `admin`.
    pub fn routes(self: Arc<Console>, auth: Option<&Arc<Auth>>) -> Router {
        let page = Router::new().route("/", get(page));
        let views = Router::new()
            .route("/api/overview", get(overview))
            .route("/api/topics", get(topics))
            .route("/api/jobs", get(jobs))
            .with_state(self.clone());
        let actions = Router::new()
            .route("/api/tail", get(tail))
            .route("/api/reports/run", post(run_report))
            .route("/api/jobs/run", post(run_report))
            .with_state(self);
        page.merge(require(views, auth, Scope::Query))
            .merge(require(actions, auth, Scope::Admin))
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, Vec<RunView>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A JSON error answer: `{"error": "…"}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn missing(what: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("this process does not run {what}"),
    )
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

/// The samples of family `name` by their first label value.
fn by_first_label(name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, value) in registry().samples(name) {
        if let Some(first) = labels.first() {
            *out.entry(first.clone()).or_insert(0.0) += value;
        }
    }
    out
}

async fn overview(State(console): State<Arc<Console>>) -> Response {
    let counts = |name: &str| -> Value {
        by_first_label(name)
            .into_iter()
            .map(|(k, v)| (k, json!(v as u64)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut services: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut put = |name: &str, field: &str, keep: &dyn Fn(&[String]) -> bool| {
        for (labels, value) in registry().samples(name) {
            if keep(&labels) {
                services
                    .entry(labels[0].clone())
                    .or_default()
                    .insert(field.to_string(), json!(value));
            }
        }
    };
    put("logpipe_window_records", "records", &|_| true);
    put("logpipe_window_error_rate", "error_rate", &|_| true);
    put("logpipe_window_start_seconds", "window_start", &|_| true);
    put(
        "logpipe_window_response_time_seconds",
        "p95_seconds",
        &|l| l.get(1).is_some_and(|p| p == "95"),
    );
    let services: Vec<Value> = services
        .into_iter()
        .map(|(service, mut fields)| {
            fields.insert("service".to_string(), json!(service));
            Value::Object(fields)
        })
        .collect();
    Json(json!({
        "time_ms": Utc::now().timestamp_millis(),
        "roles": console.roles,
        "records_accepted": counts("logpipe_collector_records_accepted_total"),
        "records_rejected": counts("logpipe_collector_records_rejected_total"),
        "lake_rows": counts("logpipe_lake_rows_committed_total"),
        "bus_lag": registry().sum("logpipe_bus_consumer_lag_records", |_| true) as i64,
        "alerts_firing": registry().sum("logpipe_alerts_firing", |_| true) as i64,
        "services": services,
    }))
    .into_response()
}

async fn topics(State(console): State<Arc<Console>>) -> Response {
    let Some(bus) = &console.bus else {
        return missing("a bus");
    };
    match partitions_of_topics(bus.as_ref()).await {
        Ok(topics) => Json(json!({ "topics": topics })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Each record topic's partitions with their oldest kept and end offsets,
/// through one reader of every topic.
async fn partitions_of_topics(bus: &dyn Bus) -> Result<Vec<Value>, String> {
    let names: Vec<&str> = RecordKind::ALL.iter().map(|kind| kind.topic()).collect();
    let mut reader = bus
        .reader("logpipe-console", &names)
        .await
        .map_err(|e| e.to_string())?;
    let topics = names
        .iter()
        .map(|topic| {
            let ends = bus.end_offsets(topic).map_err(|e| e.to_string())?;
            let starts = reader.start_offsets(topic).map_err(|e| e.to_string())?;
            let partitions: Vec<Value> = ends
                .iter()
                .enumerate()
                .map(|(p, end)| {
                    json!({
                        "partition": p,
                        "start": starts.get(p).copied().unwrap_or(0).min(*end),
                        "end": end,
                    })
                })
                .collect();
            Ok(json!({ "topic": topic, "partitions": partitions }))
        })
        .collect::<Result<Vec<Value>, String>>();
    reader.close().await;
    topics
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    topic: String,
    service: Option<String>,
    level: Option<String>,
    limit: Option<usize>,
}

async fn tail(
    State(console): State<Arc<Console>>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; parameters are topic=T, service=S, level=L, limit=N",
                    rejection.body_text()
                ),
            );
        }
    };
    let Some(bus) = &console.bus else {
        return missing("a bus");
    };
    if RecordKind::of_topic(&query.topic).is_none() {
        let known: Vec<&str> = RecordKind::ALL.iter().map(|k| k.topic()).collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown topic {:?}; the topics are {}",
                query.topic,
                known.join(", ")
            ),
        );
    }
    let limit = query
        .limit
        .unwrap_or(TAIL_DEFAULT_LIMIT)
        .clamp(1, TAIL_MAX_LIMIT);
    let filter = TailFilter {
        service: query.service.filter(|s| !s.is_empty()),
        level: query
            .level
            .filter(|l| !l.is_empty())
            .map(|l| l.to_ascii_uppercase()),
    };
    match newest_records(bus.as_ref(), &query.topic, &filter, limit).await {
        Ok(records) => Json(json!({ "topic": query.topic, "records": records })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

struct TailFilter {
    service: Option<String>,
    level: Option<String>,
}

impl TailFilter {
    fn keeps(&self, value: &Value) -> bool {
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        self.service
            .as_deref()
            .is_none_or(|s| field("service") == Some(s))
            && self
                .level
                .as_deref()
                .is_none_or(|l| field("level").is_some_and(|level| level.eq_ignore_ascii_case(l)))
    }
}

/// A record's `timestamp` in seconds (epoch number or RFC 3339), 0 when it
/// has none.
fn time_of(value: &Value) -> f64 {
    match value.get("timestamp") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros() as f64 / 1e6)
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// A bus value as the console shows it: a record in binary form as its
/// JSON, JSON as itself, anything else as text.
fn shown(topic: &str, value: &[u8]) -> Value {
    if binary::is_binary(value)
        && let Some(kind) = RecordKind::of_topic(topic)
        && let Ok(record) = binary::decode(kind, value, &ValidationLimits::structure_only())
        && let Ok(json) = serde_json::from_slice(&record.to_json())
    {
        return json;
    }
    serde_json::from_slice(value)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(value).into()))
}

/// The newest `limit` records of `topic` that `filter` keeps, among the
/// last [`TAIL_SCAN_PER_PARTITION`] of each partition, newest first.
async fn newest_records(
    bus: &dyn Bus,
    topic: &str,
    filter: &TailFilter,
    limit: usize,
) -> Result<Vec<Value>, String> {
    let ends = bus.end_offsets(topic).map_err(|e| e.to_string())?;
    let mut reader = bus
        .reader("logpipe-console", &[topic])
        .await
        .map_err(|e| e.to_string())?;
    let starts = match reader.start_offsets(topic) {
        Ok(starts) => starts,
        Err(e) => {
            reader.close().await;
            return Err(e.to_string());
        }
    };
    let mut remaining = 0u64;
    for (p, end) in ends.iter().enumerate() {
        let start = starts.get(p).copied().unwrap_or(0);
        let from = end.saturating_sub(TAIL_SCAN_PER_PARTITION).max(start);
        remaining += end.saturating_sub(from);
        if let Err(e) = reader.seek(topic, p as u32, from) {
            reader.close().await;
            return Err(e.to_string());
        }
    }
    // (record time, read order, partition, offset, record)
    let mut kept: Vec<(f64, u64, u32, u64, Value)> = Vec::new();
    let deadline = Instant::now() + TAIL_READ_TIME;
    let mut order = 0u64;
    while remaining > 0 && Instant::now() < deadline {
        let records = match reader.poll(10_000, Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(e) => {
                reader.close().await;
                return Err(e.to_string());
            }
        };
        for record in records {
            let Some(end) = ends.get(record.partition as usize) else {
                continue;
            };
            if record.offset >= *end {
                continue;
            }
            remaining = remaining.saturating_sub(1);
            let value = shown(topic, &record.value);
            if filter.keeps(&value) {
                order += 1;
                kept.push((
                    time_of(&value),
                    order,
                    record.partition,
                    record.offset,
                    value,
                ));
            }
        }
    }
    reader.close().await;
    // Newest first: by the record's time when it has one, else by read order.
    kept.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    Ok(kept
        .into_iter()
        .take(limit)
        .map(|(_, _, partition, offset, value)| {
            json!({ "partition": partition, "offset": offset, "value": value })
        })
        .collect())
}

async fn jobs(State(console): State<Arc<Console>>) -> Response {
    let mut stream = Vec::new();
    if let Some(lake) = &console.lake {
        for job in &console.stream_jobs {
            match lake.chain(job).await {
                Ok(chain) => {
                    let lag = if *job == "raw" {
                        json!(registry().sum("logpipe_bus_consumer_lag_records", |_| true) as i64)
                    } else {
                        Value::Null
                    };
                    stream.push(json!({
                        "job": job,
                        "commit_seq": chain.seq,
                        "positions": chain.offsets,
                        "lag": lag,
                    }));
                }
                Err(e) => stream.push(json!({ "job": job, "error": e.to_string() })),
            }
        }
    }
    let mut runs: Vec<Value> = console
        .runs()
        .iter()
        .map(|run| {
            json!({
                "job": run.job,
                "target": run.target,
                "status": "running",
                "started_ms": run.started_ms,
                "duration_ms": run.started.elapsed().as_millis() as u64,
                "rows": Value::Null,
                "error": Value::Null,
            })
        })
        .collect();
    // Every ended run (the console's, the scheduler's, `logpipe batch`'s)
    // from the job_runs table, once it exists.
    if let Some(engine) = &console.engine {
        let sql = "SELECT job, target, status, CAST(to_unixtime(started_at) * 1000 AS BIGINT) AS started_ms, \
                   duration_ms, rows, error FROM job_runs ORDER BY started_at DESC LIMIT 50";
        if let Ok(result) = engine.sql(sql, 50).await
            && let Ok(text) = result.rows_json()
            && let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(&text)
        {
            runs.extend(rows);
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r["started_ms"].as_i64().unwrap_or(0)));
    // The batch jobs: the built-in reports and the user's.
    let batch: Vec<Value> = console
        .runner
        .iter()
        .flat_map(|runner| runner.jobs().iter())
        .map(|job| {
            json!({
                "name": job.name,
                "period": match job.period {
                    PeriodKind::Day => "day",
                    PeriodKind::Week => "week",
                    PeriodKind::Range { .. } => "range",
                },
                "schedule": job.schedule.as_ref().map(|(text, _)| text),
                "output": job.table.dir,
                "reads": job.inputs,
                "origin": job.origin,
                "built_in": job.is_built_in(),
            })
        })
        .collect();
    Json(json!({
        "stream": stream,
        "runs": runs,
        "batch": batch,
        "reports": ["daily", "weekly", "service"],
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    report: String,
    date: Option<String>,
    to: Option<String>,
}

fn parse_date(field: &str, text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{field} must be a date like 2026-01-15, not {text:?}"))
}

/// The run a request asks for: `report` is a job's name, or `daily`,
/// `weekly`, `service` for the built-in reports. A day job runs for `date`
/// (default yesterday), a week job for the ISO week of `date` (default
/// last week), a range job from `date` to `to` (default the job's days
/// before today). `job` finds a job by name.
fn report_of(
    request: &RunRequest,
    today: NaiveDate,
    job: impl Fn(&str) -> Result<Arc<JobDef>, String>,
) -> Result<Report, String> {
    let date = request
        .date
        .as_deref()
        .map(|d| parse_date("date", d))
        .transpose()?;
    let yesterday = today.pred_opt().unwrap_or(today);
    let name = match request.report.as_str() {
        "daily" => "daily_report",
        "weekly" => "weekly_analysis",
        "service" => "service_analysis",
        other => other,
    };
    let job = job(name)?;
    let period = match job.period {
        PeriodKind::Day => Period::Day(date.unwrap_or(yesterday)),
        PeriodKind::Week => Period::week_of(date.unwrap_or(today - chrono::Days::new(7))),
        PeriodKind::Range { days } => {
            let start = date.unwrap_or(today - chrono::Days::new(u64::from(days)));
            let end = match request.to.as_deref() {
                Some(to) => parse_date("to", to)?,
                None => start.max(yesterday),
            };
            if end < start {
                return Err(format!("to ({end}) is before date ({start})"));
            }
            Period::Range(start, end)
        }
    };
    Ok(Report::new(job, period))
}

async fn run_report(State(console): State<Arc<Console>>, body: axum::body::Bytes) -> Response {
    let request: RunRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"report\": \"daily|weekly|service|JOB\", \"date\": \"YYYY-MM-DD\"}}: {e}"
                ),
            );
        }
    };
    let Some(runner) = console.runner.clone() else {
        return missing("the batch reports (they need the lake)");
    };
    let today = Utc::now().date_naive();
    let report = match report_of(&request, today, |name| {
        runner.job(name).map_err(|e| format!("report: {e}"))
    }) {
        Ok(report) => report,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if report.first_day() > today {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{} is in the future", report.target()),
        );
    }
    let view = RunView {
        id: console
            .next_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        job: report.job(),
        target: report.target(),
        started_ms: Utc::now().timestamp_millis(),
        started: Instant::now(),
    };
    console.runs().push(view.clone());
    let answer = json!({ "started": true, "job": view.job, "target": view.target });
    tracing::info!(
        job = view.job,
        target = view.target,
        "report run started from the console"
    );
    tokio::spawn(async move {
        // The runner records the run, failed or not, in job_runs.
        if let Err(error) = runner.run(&report, &|_| {}).await {
            tracing::warn!(job = view.job, target = view.target, %error, "report run from the console failed");
        }
        console.runs().retain(|run| run.id != view.id);
    });
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(report: &str, date: Option<&str>, to: Option<&str>) -> RunRequest {
        RunRequest {
            report: report.to_string(),
            date: date.map(str::to_string),
            to: to.map(str::to_string),
        }
    }

    #[test]
    fn a_report_request_names_what_is_wrong() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let jobs: Vec<Arc<JobDef>> = logpipe_batch::job::load(None, &[])
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect();
        let job = |name: &str| {
            jobs.iter()
                .find(|j| j.name == name)
                .cloned()
                .ok_or_else(|| format!("report: no job is named {name:?}"))
        };
        let daily = report_of(&request("daily", None, None), today, job).unwrap();
        assert_eq!(daily.job(), "daily_report");
        assert_eq!(daily.target(), "2026-12-04");
        let weekly = report_of(&request("weekly", Some("2026-12-02"), None), today, job).unwrap();
        assert_eq!(weekly.target(), "2026-W49");
        let service = report_of(&request("service_analysis", None, None), today, job).unwrap();
        assert_eq!(service.target(), "2026-11-28..2026-12-04");
        assert!(
            report_of(&request("monthly", None, None), today, job)
                .unwrap_err()
                .contains("no job is named \"monthly\"")
        );
        assert!(
            report_of(&request("daily", Some("12/04/2026"), None), today, job)
                .unwrap_err()
                .contains("date must be a date like")
        );
        assert!(
            report_of(
                &request("service", Some("2026-12-03"), Some("2026-12-01")),
                today,
                job
            )
            .unwrap_err()
            .contains("before")
        );
        assert_eq!(chrono::Datelike::weekday(&today), chrono::Weekday::Sat);
    }

    #[test]
    fn the_tail_filter_matches_service_and_level() {
        let filter = TailFilter {
            service: Some("api".into()),
            level: Some("ERROR".into()),
        };
        assert!(filter.keeps(&json!({"service": "api", "level": "error"})));
        assert!(!filter.keeps(&json!({"service": "api", "level": "INFO"})));
        assert!(!filter.keeps(&json!({"service": "web", "level": "ERROR"})));
        let any = TailFilter {
            service: None,
            level: None,
        };
        assert!(any.keeps(&json!("not an object")));
    }
}
