//! OpenTelemetry logs in: `POST /v1/logs` takes OTLP/HTTP, protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), as an
//! OpenTelemetry SDK's OTLP/HTTP log exporter sends it, so a service that
//! already logs through OpenTelemetry needs no logpipe client.
//!
//! Each OTLP log record becomes one logpipe log record, then goes the way
//! of `POST /api/collect/logs`: the same validation with a reason per
//! refused record, the same durability before the answer, the same
//! `Idempotency-Key`:
//!
//! | OTLP | logpipe |
//! |---|---|
//! | `time_unix_nano` (else `observed_time_unix_nano`) | `timestamp` |
//! | `severity_number` 1–8 / 9–12 / 13–16 / 17–24 (else `severity_text`; else INFO) | `level` DEBUG / INFO / WARN / ERROR |
//! | resource `service.name` | `service` |
//! | resource `host.name` | `host` |
//! | `body` (a string; anything else as JSON text; else `event_name`) | `message` |
//! | attributes, `trace_id`, `span_id` (hex), other resource attributes (under `resource`) | `metadata` |
//!
//! Answers follow OTLP/HTTP: 200 with an empty `ExportLogsServiceResponse`
//! when every record was taken; 200 with `partial_success` (how many were
//! refused and why) when some were; 400 / 413 / 415 when the body cannot
//! be read; 503 with `Retry-After` when the bus cannot take it now (the
//! exporter retries, and nothing of the request was stored). Failures carry
//! a `google.rpc.Status` (protobuf) or `{"error": …}` (JSON).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use logpipe_core::api;
use logpipe_core::record::RecordKind;
use logpipe_http::ApiError;
use serde_json::{Map, Value, json};

use crate::collector::{Collector, idempotency_key};

mod json;
mod wire;

/// One OTLP log record with what it inherits from its resource and scope.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct OtlpLog {
    pub(crate) time_unix_nano: u64,
    pub(crate) observed_time_unix_nano: u64,
    pub(crate) severity_number: i32,
    pub(crate) severity_text: String,
    pub(crate) body: Option<AnyValue>,
    pub(crate) attributes: Vec<(String, AnyValue)>,
    pub(crate) trace_id: Vec<u8>,
    pub(crate) span_id: Vec<u8>,
    pub(crate) event_name: String,
    pub(crate) resource: Arc<Vec<(String, AnyValue)>>,
    pub(crate) scope: String,
}

/// OTLP's `AnyValue`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnyValue {
    Empty,
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Vec<AnyValue>),
    KvList(Vec<(String, AnyValue)>),
    Bytes(Vec<u8>),
}

impl AnyValue {
    fn to_json(&self) -> Value {
        match self {
            AnyValue::Empty => Value::Null,
            AnyValue::String(s) => json!(s),
            AnyValue::Bool(b) => json!(b),
            AnyValue::Int(n) => json!(n),
            AnyValue::Double(x) => {
                serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number)
            }
            AnyValue::Array(items) => Value::Array(items.iter().map(AnyValue::to_json).collect()),
            AnyValue::KvList(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            AnyValue::Bytes(bytes) => json!(hex(bytes)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// logpipe's level for an OTLP severity.
fn level(log: &OtlpLog) -> &'static str {
    match log.severity_number {
        1..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=24 => "ERROR",
        _ => {
            let text = log.severity_text.to_ascii_uppercase();
            if text.starts_with("TRACE") || text.starts_with("DEBUG") {
                "DEBUG"
            } else if text.starts_with("WARN") {
                "WARN"
            } else if text.starts_with("ERR")
                || text.starts_with("FATAL")
                || text.starts_with("CRIT")
            {
                "ERROR"
            } else {
                "INFO"
            }
        }
    }
}

/// The logpipe log record (as the collector's JSON) of one OTLP record.
fn to_record(log: &OtlpLog) -> Value {
    let mut record = Map::new();
    let nanos = if log.time_unix_nano != 0 {
        log.time_unix_nano
    } else {
        log.observed_time_unix_nano
    };
    // Without any time the record is refused by validation ("missing
    // field `timestamp`"), as a seed-format record would be.
    if nanos != 0 {
        let micros = (nanos / 1_000) as i64;
        if let Some(time) = chrono::DateTime::from_timestamp_micros(micros) {
            record.insert(
                "timestamp".into(),
                json!(time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            );
        }
    }
    record.insert("level".into(), json!(level(log)));
    let mut resource = Map::new();
    for (key, value) in log.resource.iter() {
        match (key.as_str(), value) {
            ("service.name", AnyValue::String(name)) => {
                record.insert("service".into(), json!(name));
            }
            ("host.name", AnyValue::String(host)) => {
                record.insert("host".into(), json!(host));
            }
            _ => {
                resource.insert(key.clone(), value.to_json());
            }
        }
    }
    let message = match &log.body {
        Some(AnyValue::String(text)) => text.clone(),
        Some(AnyValue::Empty) | None => log.event_name.clone(),
        Some(other) => other.to_json().to_string(),
    };
    record.insert("message".into(), json!(message));
    let mut metadata: Map<String, Value> = log
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    if !log.trace_id.is_empty() {
        metadata.insert("trace_id".into(), json!(hex(&log.trace_id)));
    }
    if !log.span_id.is_empty() {
        metadata.insert("span_id".into(), json!(hex(&log.span_id)));
    }
    if !log.scope.is_empty() {
        metadata.insert("otel.scope".into(), json!(log.scope));
    }
    if !resource.is_empty() {
        metadata.insert("resource".into(), Value::Object(resource));
    }
    if !metadata.is_empty() {
        record.insert("metadata".into(), Value::Object(metadata));
    }
    Value::Object(record)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        other => Err(ApiError::Status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {other:?} is not OTLP/HTTP: send application/x-protobuf or application/json"
            ),
        )),
    }
}

/// `POST /v1/logs` over `collector`'s bus and settings.
pub fn routes(collector: Collector) -> Router {
    let body_limit = collector.max_body_bytes();
    let routes = Router::new()
        .route(api::OTLP_LOGS, post(export_logs))
        .layer(DefaultBodyLimit::max(body_limit));
    collector.admitted(routes).with_state(collector)
}

/// `POST /v1/logs`.
async fn export_logs(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Answer in the request's format; an unknown one gets JSON.
    let format = format_of(&headers).unwrap_or(Format::Json);
    match export(&collector, &headers, body).await {
        Ok((rejected, message)) => success(format, rejected, &message),
        Err(error) => failure(format, error),
    }
}

/// Stores the request's records; returns how many were refused and why.
async fn export(
    collector: &Collector,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(usize, String), ApiError> {
    let format = format_of(headers)?;
    if let Some(encoding) = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::Status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {encoding} is not supported: send uncompressed OTLP \
                 (OTEL_EXPORTER_OTLP_COMPRESSION=none, the SDKs' default)"
            ),
        ));
    }
    let key = idempotency_key(headers)?;
    let body = collector.body(body)?;
    let records = tokio::task::spawn_blocking(move || {
        let logs = match format {
            Format::Protobuf => wire::decode_request(&body).map_err(|e| e.0),
            Format::Json => json::decode_request(&body),
        }
        .map_err(|reason| ApiError::BadRequest(format!("not an OTLP logs request: {reason}")))?;
        let records: Vec<Value> = logs.iter().map(to_record).collect();
        Ok::<_, ApiError>(records)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("OTLP decoder failed: {e}")))??;
    if records.is_empty() {
        return Ok((0, String::new()));
    }
    let json = serde_json::to_vec(&records).map_err(|e| ApiError::Internal(e.to_string()))?;
    let ingested = collector
        .ingest(RecordKind::Log, key, Bytes::from(json))
        .await?;
    let message = ingested
        .rejected
        .iter()
        .take(10)
        .map(|(index, reason)| format!("log record {index}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ");
    Ok((ingested.rejected.len(), message))
}

fn success(format: Format, rejected: usize, message: &str) -> Response {
    match format {
        Format::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            wire::encode_response(rejected, message),
        )
            .into_response(),
        Format::Json => {
            let body = if rejected == 0 {
                json!({})
            } else {
                json!({ "partialSuccess": { "rejectedLogRecords": rejected, "errorMessage": message } })
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
    }
}

fn failure(format: Format, error: ApiError) -> Response {
    if format == Format::Json {
        return error.into_response();
    }
    let status = error.status();
    // google.rpc.Code: INVALID_ARGUMENT, UNAVAILABLE, INTERNAL.
    let code = match status.as_u16() {
        503 => 14,
        500..=599 => 13,
        _ => 3,
    };
    let retry_after = match &error {
        ApiError::Unavailable { retry_after, .. } => Some(retry_after.as_secs().max(1)),
        _ => None,
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        wire::encode_status(code, &error.message()),
    )
        .into_response();
    if let Some(seconds) = retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_maps_to_the_four_levels() {
        let at = |n: i32, text: &str| {
            level(&OtlpLog {
                severity_number: n,
                severity_text: text.into(),
                ..OtlpLog::default()
            })
        };
        assert_eq!(at(1, ""), "DEBUG");
        assert_eq!(at(5, ""), "DEBUG");
        assert_eq!(at(9, ""), "INFO");
        assert_eq!(at(13, ""), "WARN");
        assert_eq!(at(17, ""), "ERROR");
        assert_eq!(at(21, "FATAL"), "ERROR");
        assert_eq!(at(0, "warning"), "WARN");
        assert_eq!(at(0, "Critical"), "ERROR");
        assert_eq!(at(0, "trace"), "DEBUG");
        assert_eq!(at(0, ""), "INFO");
    }

    #[test]
    fn a_record_maps_resource_body_and_attributes() {
        let log = OtlpLog {
            time_unix_nano: 1_765_000_000_123_456_789,
            severity_number: 17,
            body: Some(AnyValue::String("card declined".into())),
            attributes: vec![
                ("request_id".into(), AnyValue::String("r-9".into())),
                ("status_code".into(), AnyValue::Int(402)),
            ],
            trace_id: vec![1, 2],
            resource: Arc::new(vec![
                ("service.name".into(), AnyValue::String("checkout".into())),
                ("host.name".into(), AnyValue::String("pod-1".into())),
                (
                    "deployment.environment".into(),
                    AnyValue::String("prod".into()),
                ),
            ]),
            scope: "app".into(),
            ..OtlpLog::default()
        };
        assert_eq!(
            to_record(&log),
            json!({
                "timestamp": "2025-12-06T05:46:40.123456Z",
                "level": "ERROR",
                "service": "checkout",
                "host": "pod-1",
                "message": "card declined",
                "metadata": {
                    "request_id": "r-9", "status_code": 402, "trace_id": "0102",
                    "otel.scope": "app", "resource": {"deployment.environment": "prod"}
                }
            })
        );
        // A structured body is kept as JSON text; no time at all is left
        // for validation to refuse.
        let log = OtlpLog {
            body: Some(AnyValue::KvList(vec![("a".into(), AnyValue::Int(1))])),
            ..OtlpLog::default()
        };
        let record = to_record(&log);
        assert_eq!(record["message"], r#"{"a":1}"#);
        assert!(record.get("timestamp").is_none());
    }
}
