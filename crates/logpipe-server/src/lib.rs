//! HTTP: the collector API, the query API, `/health`, `/metrics`, `/api/stats`.
//!
//! Status codes are part of the contract with load clients:
//!
//! | answer | meaning |
//! |---|---|
//! | 200 `{"accepted": N, "rejected": []}` | every record is durable on the bus |
//! | 422 `{"accepted": N, "rejected": [{"index": i, "reason": …}]}` | the `accepted` records are durable; resend only the rejected ones, fixed |
//! | 400 `{"error": …}` | the body is not JSON / NDJSON; nothing was accepted |
//! | 413 `{"error": …}` | the body is larger than `collector.max_body_bytes`; nothing was accepted |
//! | 503 `{"error": …}` + `Retry-After` | the bus cannot take more now; nothing was acknowledged, retry the whole request |
//!
//! A request sent with an `Idempotency-Key` header (the same key on every
//! retry of it) is stored at most once in the lake even when it is retried
//! after a 503 or a lost answer: each record carries an id
//! ([`logpipe_core::dedup`]) and the raw→lake job drops a second copy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use logpipe_bus::{Bus, BusError, BusRecord, HeadersBuilder};
use logpipe_core::dedup::{self, RecordId};
use logpipe_core::metrics::metrics;
use logpipe_core::record::{self, RecordKind, ValidationLimits};
use logpipe_core::schema::Record;
use logpipe_core::summary::{self, LogSummary};
use logpipe_query::{QueryEngine, QueryError};
use serde::Deserialize;
use serde_json::json;

/// Rejection details listed per response at most; `rejected_total` always
/// has the full count. Keeps a 50,000-record garbage batch from producing a
/// multi-megabyte answer.
const MAX_REJECTIONS_LISTED: usize = 1000;
/// Rows `POST /api/query` returns unless the request asks for fewer.
const DEFAULT_QUERY_MAX_ROWS: usize = 10_000;
/// Upper bound a request may ask for.
const QUERY_MAX_ROWS_LIMIT: usize = 1_000_000;

/// Collector settings (from `[collector]`).
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    pub max_body_bytes: usize,
    pub max_field_bytes: usize,
    pub max_future_skew: Duration,
    pub retry_after: Duration,
    /// Give each log record its window fields as a header
    /// ([`summary::HEADER`]), so the window job need not parse its JSON.
    /// On when windows are enabled; off, it would only cost bytes.
    pub summaries: bool,
}

impl From<&logpipe_config::CollectorConfig> for CollectorSettings {
    fn from(config: &logpipe_config::CollectorConfig) -> Self {
        CollectorSettings {
            max_body_bytes: config.max_body_bytes,
            max_field_bytes: config.max_field_bytes,
            max_future_skew: config.max_future_skew,
            retry_after: config.retry_after,
            summaries: true,
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<dyn Bus>,
    pub collector: CollectorSettings,
    pub query: Arc<QueryEngine>,
}

/// The router serving collector, query API, health and metrics.
pub fn router(state: AppState) -> Router {
    let body_limit = state.collector.max_body_bytes;
    Router::new()
        .route("/api/collect/logs", post(collect_logs))
        .route("/api/collect/activities", post(collect_activities))
        .route("/api/query", post(query))
        .route("/api/alerts", get(alerts))
        .route("/api/stats", get(stats))
        .route("/health", get(health))
        .route("/metrics", get(prometheus_metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn collect_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    collect(state, RecordKind::Log, &headers, body).await
}

async fn collect_activities(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    collect(state, RecordKind::Event, &headers, body).await
}

/// Valid records ready for the bus, and why the others were refused.
struct ParsedBatch {
    records: Vec<BusRecord>,
    rejected: Vec<(usize, String)>,
}

/// `request`: the request id when the client sent an `Idempotency-Key`.
fn parse_batch(
    kind: RecordKind,
    body: &[u8],
    limits: &ValidationLimits,
    summaries: bool,
    request: Option<u128>,
) -> Result<ParsedBatch, record::BodyError> {
    let raw_records = record::split_body(body)?;
    let mut records = Vec::with_capacity(raw_records.len());
    let mut rejected = Vec::new();
    for (index, raw) in raw_records.into_iter().enumerate() {
        match raw.and_then(|text| Record::parse(kind, text, limits)) {
            Ok(record) => {
                let id = request.map(|request| RecordId {
                    request,
                    index: index as u32,
                });
                records.push(bus_record(&record, summaries, id));
            }
            Err(error) => rejected.push((index, error.to_string())),
        }
    }
    Ok(ParsedBatch { records, rejected })
}

/// The bus form of a valid record. With `summaries`, a log record also
/// carries its window fields as a header; with `id`, the record carries its
/// id (see [`dedup`]).
fn bus_record(record: &Record, summaries: bool, id: Option<RecordId>) -> BusRecord {
    let mut out = BusRecord::new(record.key(), record.to_json());
    let summary = match (record, summaries) {
        (Record::Log(log), true) => Some(LogSummary::of(log)),
        _ => None,
    };
    if summary.is_none() && id.is_none() {
        return out;
    }
    let capacity = summary
        .as_ref()
        .map_or(0, |s| 8 + summary::HEADER.len() + s.encoded_len())
        + id.map_or(0, |_| 8 + dedup::HEADER.len() + dedup::ENCODED_LEN);
    let mut headers = HeadersBuilder::with_capacity(capacity);
    if let Some(summary) = &summary {
        headers = headers.push(summary::HEADER, summary.encoded_len(), |block| {
            summary.encode_into(block)
        });
    }
    if let Some(id) = id {
        headers = headers.push(dedup::HEADER, dedup::ENCODED_LEN, |block| {
            block.extend_from_slice(&id.encode())
        });
    }
    out.headers = headers.finish();
    out
}

async fn collect(
    state: AppState,
    kind: RecordKind,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let m = metrics();
    let key = match headers.get(dedup::IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => match dedup::parse_key(value.as_bytes()) {
            Ok(key) => Some(key.to_vec()),
            Err(reason) => {
                m.collector_requests_bad_body
                    .fetch_add(1, Ordering::Relaxed);
                return error_response(StatusCode::BAD_REQUEST, reason);
            }
        },
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            m.collector_requests_too_large
                .fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than the limit of {} bytes (collector.max_body_bytes); send smaller batches",
                    state.collector.max_body_bytes
                ),
            );
        }
        Err(rejection) => {
            m.collector_requests_bad_body
                .fetch_add(1, Ordering::Relaxed);
            return error_response(rejection.status(), rejection.body_text());
        }
    };
    let limits = ValidationLimits {
        max_field_bytes: state.collector.max_field_bytes,
        max_future_skew_secs: state.collector.max_future_skew.as_secs() as i64,
        now_micros: logpipe_core::time::now_micros(),
    };
    // Parsing a large body takes milliseconds of CPU: keep it off the reactor.
    let summaries = state.collector.summaries;
    let parsed = tokio::task::spawn_blocking(move || {
        let request = key.map(|key| dedup::request_id(&key, &body));
        parse_batch(kind, &body, &limits, summaries, request)
    })
    .await;
    let parsed = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(body_error)) => {
            m.collector_requests_bad_body
                .fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::BAD_REQUEST, body_error.to_string());
        }
        Err(join_error) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("parser failed: {join_error}"),
            );
        }
    };
    let accepted = parsed.records.len();
    if let Err(error) = state.bus.append(kind.topic(), parsed.records).await {
        return bus_error_response(&state, error);
    }
    m.collector_records_accepted.add(kind, accepted as u64);
    m.collector_records_rejected
        .add(kind, parsed.rejected.len() as u64);
    let status = if parsed.rejected.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let rejected_total = parsed.rejected.len();
    let listed: Vec<_> = parsed
        .rejected
        .into_iter()
        .take(MAX_REJECTIONS_LISTED)
        .map(|(index, reason)| json!({ "index": index, "reason": reason }))
        .collect();
    (
        status,
        Json(json!({ "accepted": accepted, "rejected": listed, "rejected_total": rejected_total })),
    )
        .into_response()
}

fn bus_error_response(state: &AppState, error: BusError) -> Response {
    if error.is_retryable() {
        metrics()
            .collector_requests_busy
            .fetch_add(1, Ordering::Relaxed);
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{error}; nothing in this request was acknowledged, retry it"),
        );
        let seconds = state.collector.retry_after.as_secs().max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    } else {
        tracing::error!(%error, "bus append failed");
        error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    max_rows: Option<usize>,
}

async fn query(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error_response(rejection.status(), rejection.body_text()),
    };
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"sql\": \"…\", \"max_rows\": N}}: {error}"),
            );
        }
    };
    let max_rows = request
        .max_rows
        .unwrap_or(DEFAULT_QUERY_MAX_ROWS)
        .min(QUERY_MAX_ROWS_LIMIT);
    let result = match state.query.sql(&request.sql, max_rows).await {
        Ok(result) => result,
        Err(error @ QueryError::Sql(_)) => {
            return error_response(StatusCode::BAD_REQUEST, error.to_string());
        }
        Err(error) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let rows = match result.rows_json() {
        Ok(rows) => rows,
        Err(error) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let columns = serde_json::to_string(&result.columns()).unwrap_or_else(|_| "[]".into());
    let body = format!(
        r#"{{"columns":{columns},"rows":{rows},"row_count":{},"truncated":{}}}"#,
        result.rows, result.truncated
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    /// `firing` (incidents without a RESOLVED yet) or `all` (default).
    state: Option<String>,
    service: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/alerts[?state=firing|all][&service=S][&limit=N]`: alerts from
/// the lake table `alerts`, newest first.
async fn alerts(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(axum::extract::Query(query)) => query,
        Err(rejection) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; parameters are state=firing|all, service=NAME, limit=N",
                    rejection.body_text()
                ),
            );
        }
    };
    let mut conditions = Vec::new();
    match query.state.as_deref() {
        None | Some("all") => {}
        Some("firing") => conditions.push(
            "state = 'FIRING' AND incident_id NOT IN \
             (SELECT incident_id FROM alerts WHERE state = 'RESOLVED')"
                .to_string(),
        ),
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("state must be firing or all, not {other:?}"),
            );
        }
    }
    if let Some(service) = &query.service {
        // Service names are plain identifiers; anything else cannot match
        // and must not reach the SQL text.
        if service.is_empty()
            || !service
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
        {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("service {service:?} is not a service name"),
            );
        }
        conditions.push(format!("service = '{service}'"));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT alert_id, incident_id, state, rule, severity, service, value, threshold, \
         window_start, window_end, incident_start, detected_at, summary \
         FROM alerts {filter} ORDER BY detected_at DESC, window_end DESC, alert_id LIMIT {limit}"
    );
    let result = match state.query.sql(&sql, limit).await {
        Ok(result) => result,
        Err(error) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    match result.rows_json() {
        Ok(rows) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"alerts":{rows},"count":{}}}"#, result.rows),
        )
            .into_response(),
        Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

/// Pipeline progress at a glance: what the status line and benchmarks read.
pub fn stats_json() -> serde_json::Value {
    let m = metrics();
    let lag: i64 = RecordKind::ALL
        .iter()
        .map(|k| m.bus_consumer_lag.get(*k))
        .sum();
    json!({
        "records_accepted": m.collector_records_accepted.total(),
        "records_rejected": m.collector_records_rejected.total(),
        "lake_rows": m.lake_rows_committed.total(),
        "lake_commits": m.lake_commits.load(Ordering::Relaxed),
        "bus_lag": lag,
    })
}

async fn stats() -> Response {
    Json(stats_json()).into_response()
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn prometheus_metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use logpipe_bus::TopicSpec;
    use logpipe_bus::embedded::{EmbeddedBus, EmbeddedOptions};
    use logpipe_core::Level;
    use tower::ServiceExt;

    async fn app(dir: &std::path::Path) -> (Router, EmbeddedBus) {
        let bus = EmbeddedBus::open(dir.join("bus"), EmbeddedOptions::default()).unwrap();
        let topics: Vec<TopicSpec> = RecordKind::ALL
            .iter()
            .map(|k| TopicSpec {
                name: k.topic().into(),
                partitions: 3,
                retention: Duration::from_secs(3600),
                retention_bytes: 0,
            })
            .collect();
        bus.create_topics(&topics).await.unwrap();
        let state = AppState {
            bus: Arc::new(bus.clone()),
            collector: CollectorSettings {
                max_body_bytes: 16 * 1024,
                max_field_bytes: 256,
                max_future_skew: Duration::from_secs(3600),
                retry_after: Duration::from_secs(2),
                summaries: true,
            },
            query: Arc::new(QueryEngine::open_local(dir).await.unwrap()),
        };
        (router(state), bus)
    }

    async fn post(
        router: &Router,
        path: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, serde_json::Value) {
        post_with_key(router, path, None, body).await
    }

    /// POSTs `body`, with `Idempotency-Key: key` when given.
    async fn post_with_key(
        router: &Router,
        path: &str,
        key: Option<&[u8]>,
        body: impl Into<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::post(path);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", HeaderValue::from_bytes(key).unwrap());
        }
        let response = router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn collector_accepts_valid_records_and_names_the_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (router, bus) = app(dir.path()).await;
        let body = r#"[
            {"timestamp": 1736645166.29, "level": "INFO", "service": "api", "message": "ok"},
            {"timestamp": "2025-01-12T01:26:06Z", "level": "FATAL", "service": "api", "message": "bad level"},
            {"timestamp": "2025-01-12T01:26:06Z", "level": "ERROR", "service": "api", "message": "ok too"}
        ]"#;
        let (status, answer) = post(&router, "/api/collect/logs", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer["accepted"], 2);
        assert_eq!(answer["rejected"][0]["index"], 1);
        assert!(
            answer["rejected"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("level")
        );
        assert_eq!(bus.end_offsets("logs.raw").unwrap().iter().sum::<u64>(), 2);
        // Each log record carries its window fields as a header.
        let read = |topic: &str| -> Vec<logpipe_bus::ConsumedRecord> {
            (0..3)
                .flat_map(|p| bus.read(topic, p, 0, 10).unwrap())
                .collect()
        };
        let summaries: Vec<(i64, Level, String)> = read("logs.raw")
            .iter()
            .map(|r| LogSummary::decode(r.headers.get(summary::HEADER).unwrap()).unwrap())
            .map(|s| (s.timestamp_micros, s.level, s.service.to_string()))
            .collect();
        assert_eq!(
            summaries,
            [
                (1_736_645_166_290_000, Level::Info, "api".to_string()),
                (1_736_645_166_000_000, Level::Error, "api".to_string())
            ]
        );

        let ok =
            r#"{"event_id": "e1", "timestamp": 1736645166, "user_id": "u1", "event_type": "VIEW"}"#;
        let (status, answer) = post(&router, "/api/collect/activities", ok).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["accepted"], 1);
        assert!(read("events.activity").iter().all(|r| r.headers.is_empty()));
        bus.shutdown();
    }

    #[tokio::test]
    async fn an_idempotency_key_gives_each_record_its_id_and_a_bad_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (router, bus) = app(dir.path()).await;
        let body = r#"[
            {"timestamp": 1736645166, "level": "INFO", "service": "api", "message": "a"},
            {"timestamp": 1736645166, "level": "FATAL", "service": "api", "message": "rejected"},
            {"timestamp": 1736645166, "level": "INFO", "service": "api", "message": "b"}
        ]"#;
        let path = "/api/collect/logs";
        assert_eq!(
            post_with_key(&router, path, Some(b"req-1"), body).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            post(&router, path, body).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let records: Vec<_> = (0..3)
            .flat_map(|p| bus.read("logs.raw", p, 0, 10).unwrap())
            .collect();
        let ids: Vec<Option<RecordId>> = records
            .iter()
            .map(|r| {
                r.headers
                    .get(dedup::HEADER)
                    .map(|v| RecordId::decode(v).unwrap())
            })
            .collect();
        // The ids count the rejected record: a retry of the same body gives
        // every record the same id. Without a key there is no id.
        let request = dedup::request_id(b"req-1", body.as_bytes());
        assert_eq!(
            ids,
            [
                Some(RecordId { request, index: 0 }),
                Some(RecordId { request, index: 2 }),
                None,
                None
            ]
        );
        // The window summary is still there next to the id.
        assert!(
            records
                .iter()
                .all(|r| r.headers.get(summary::HEADER).is_some())
        );

        for bad in ["", "caf\u{e9}", "\"\""] {
            let (status, answer) = post_with_key(&router, path, Some(bad.as_bytes()), body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "key {bad:?}");
            assert!(
                answer["error"]
                    .as_str()
                    .unwrap()
                    .contains("Idempotency-Key")
            );
        }
        assert_eq!(bus.end_offsets("logs.raw").unwrap().iter().sum::<u64>(), 4);
        bus.shutdown();
    }

    #[tokio::test]
    async fn hostile_bodies_get_a_4xx_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (router, bus) = app(dir.path()).await;
        let deep = format!("[{}{}]", "[".repeat(3000), "]".repeat(3000));
        let deep_ndjson = format!(
            "{{\"timestamp\": 1736645166, \"level\": \"INFO\", \"service\": \"s\", \"message\": \"m\", \"metadata\": {{\"x\": {}{}}}}}",
            "[".repeat(3000),
            "]".repeat(3000)
        );
        let long_field = format!(
            r#"[{{"timestamp": 1736645166, "level": "INFO", "service": "s", "message": "{}"}}]"#,
            "x".repeat(300)
        );
        let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
            (
                "truncated",
                br#"[{"timestamp": 17"#.to_vec(),
                StatusCode::BAD_REQUEST,
                "not valid JSON",
            ),
            (
                "not json",
                b"hello".to_vec(),
                StatusCode::BAD_REQUEST,
                "JSON array",
            ),
            (
                "not utf-8",
                b"\xff\xfe\xfd".to_vec(),
                StatusCode::BAD_REQUEST,
                "UTF-8",
            ),
            (
                "deep",
                deep.into_bytes(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "must be a JSON object",
            ),
            (
                "deep in array",
                format!("[{deep_ndjson}]").into_bytes(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "recursion limit",
            ),
            (
                "deep ndjson",
                deep_ndjson.clone().into_bytes(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "recursion limit",
            ),
            (
                "oversized",
                vec![b' '; 17 * 1024],
                StatusCode::PAYLOAD_TOO_LARGE,
                "max_body_bytes",
            ),
            (
                "long field",
                long_field.into_bytes(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "message",
            ),
            (
                "absurd time",
                br#"[{"timestamp": 1e300, "level": "INFO", "service": "s", "message": "m"}]"#
                    .to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "timestamp",
            ),
            ("empty", Vec::new(), StatusCode::BAD_REQUEST, "empty"),
        ];
        for (name, body, expected, needle) in cases {
            let (status, answer) = post(&router, "/api/collect/logs", body).await;
            assert_eq!(status, expected, "{name}: {answer}");
            let text = answer.to_string();
            assert!(
                text.contains(needle),
                "{name}: {text} should mention {needle}"
            );
        }
        // Valid records keep flowing afterwards.
        let ok = r#"[{"timestamp": 1736645166, "level": "INFO", "service": "s", "message": "m"}]"#;
        assert_eq!(
            post(&router, "/api/collect/logs", ok).await.0,
            StatusCode::OK
        );
        bus.shutdown();
    }

    /// A bus whose queue is always full: the collector's 503 path.
    struct FullBus;

    #[async_trait::async_trait]
    impl Bus for FullBus {
        async fn create_topics(&self, _: &[TopicSpec]) -> logpipe_bus::Result<()> {
            Ok(())
        }
        fn partitions(&self, _: &str) -> logpipe_bus::Result<u32> {
            Ok(1)
        }
        async fn append(&self, _: &str, _: Vec<BusRecord>) -> logpipe_bus::Result<()> {
            Err(BusError::Busy(
                "256 appends already waiting for the disk".into(),
            ))
        }
        async fn consumer(
            &self,
            _: &str,
            _: &[&str],
        ) -> logpipe_bus::Result<Box<dyn logpipe_bus::Consumer>> {
            Err(BusError::Closed)
        }

        async fn reader(
            &self,
            group: &str,
            topics: &[&str],
        ) -> logpipe_bus::Result<Box<dyn logpipe_bus::Consumer>> {
            self.consumer(group, topics).await
        }
        fn end_offsets(&self, _: &str) -> logpipe_bus::Result<Vec<u64>> {
            Ok(vec![0])
        }
    }

    #[tokio::test]
    async fn a_full_bus_answers_503_with_retry_after_and_acknowledges_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(AppState {
            bus: Arc::new(FullBus),
            collector: CollectorSettings {
                max_body_bytes: 4096,
                max_field_bytes: 256,
                max_future_skew: Duration::from_secs(3600),
                retry_after: Duration::from_secs(2),
                summaries: true,
            },
            query: Arc::new(QueryEngine::open_local(dir.path()).await.unwrap()),
        });
        let ok = r#"[{"timestamp": 1736645166, "level": "INFO", "service": "s", "message": "m"}]"#;
        let response = router
            .oneshot(
                Request::post("/api/collect/logs")
                    .body(Body::from(ok))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("busy") && text.contains("retry"), "{text}");
    }

    #[tokio::test]
    async fn query_api_answers_json_and_refuses_bad_sql() {
        let dir = tempfile::tempdir().unwrap();
        let (router, bus) = app(dir.path()).await;
        let (status, answer) = post(
            &router,
            "/api/query",
            r#"{"sql": "SELECT count(*) AS n FROM logs"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"][0]["n"], 0);
        assert_eq!(answer["columns"][0], "n");
        let (status, answer) = post(&router, "/api/query", r#"{"sql": "DROP TABLE logs"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let (status, _) = post(&router, "/api/query", "SELECT 1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        bus.shutdown();
    }
}
