//! OpenTelemetry logs in: the real OpenTelemetry Python SDK's OTLP/HTTP
//! exporter (PyPI `opentelemetry-sdk`, `opentelemetry-exporter-otlp-proto-http`)
//! logs through Python's `logging` into `logpipe up`; OTLP JSON bodies
//! check partial success, idempotency and the refusals.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Running, python, sql_json, wait_for_count};

/// Logs N records through the SDK's logging handler, four levels in turn,
/// with attributes, under resource service.name=otel-checkout; flushes.
const SDK_CLIENT: &str = r#"
import logging, sys
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk.resources import Resource
base, run, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
provider = LoggerProvider(resource=Resource.create(
    {"service.name": "otel-checkout", "host.name": "otel-host", "deployment.environment": "test"}))
provider.add_log_record_processor(
    BatchLogRecordProcessor(OTLPLogExporter(endpoint=base + "/v1/logs", timeout=10)))
log = logging.getLogger("checkout")
log.setLevel(logging.DEBUG)
log.propagate = False
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
emit = [log.info, log.warning, log.error, log.debug]
for i in range(n):
    emit[i % 4](f"{run} message {i}",
                extra={"request_id": f"{run}-{i}", "response_time_ms": 10 + i, "status_code": 200 + i % 4})
assert provider.force_flush(30000), "the exporter did not flush"
provider.shutdown()
print("flushed")
"#;

/// An OTLP JSON request with one record per `(time, severity, message)`.
fn otlp_json(records: &[(Option<&str>, u32, &str)]) -> String {
    let records: Vec<Value> = records
        .iter()
        .map(|(time, severity, message)| {
            let mut record = json!({
                "severityNumber": severity,
                "body": {"stringValue": message},
                "attributes": [{"key": "request_id", "value": {"stringValue": message}}],
            });
            if let Some(time) = time {
                record["timeUnixNano"] = json!(time);
            }
            record
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "otel-json"}}]},
        "scopeLogs": [{"scope": {"name": "json-test"}, "logRecords": records}]
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_logs_into_the_lake_and_bad_requests_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let running = Running::start(&data, &[]);
    let base = running.base_url.clone();
    let client = reqwest::Client::new();

    // The real SDK, 200 records through Python's logging.
    let out = python(SDK_CLIENT, &[&base, "sdk", "200"]);
    assert!(out.contains("flushed"), "{out}");
    wait_for_count(
        &client,
        &base,
        "SELECT count(*) AS n FROM logs WHERE service = 'otel-checkout'",
        200,
        Duration::from_secs(30),
    )
    .await;
    let by_level = sql_json(
        &data,
        "SELECT level, count(*) AS n, count(DISTINCT request_id) AS ids, min(host) AS host, \
         min(status_code) AS code FROM logs WHERE service = 'otel-checkout' GROUP BY level ORDER BY level",
    );
    assert_eq!(
        by_level,
        vec![
            json!({"level": "DEBUG", "n": 50, "ids": 50, "host": "otel-host", "code": 203}),
            json!({"level": "ERROR", "n": 50, "ids": 50, "host": "otel-host", "code": 202}),
            json!({"level": "INFO", "n": 50, "ids": 50, "host": "otel-host", "code": 200}),
            json!({"level": "WARN", "n": 50, "ids": 50, "host": "otel-host", "code": 201}),
        ]
    );
    let one = sql_json(
        &data,
        "SELECT message, response_time_ms, metadata_extra FROM logs WHERE request_id = 'sdk-7'",
    );
    assert_eq!(one[0]["message"], "sdk message 7");
    assert_eq!(one[0]["response_time_ms"], 17.0);
    let extra: Value = serde_json::from_str(one[0]["metadata_extra"].as_str().unwrap()).unwrap();
    assert_eq!(extra["resource"]["deployment.environment"], "test");
    assert_eq!(extra["otel.scope"], "checkout");

    // OTLP JSON: a record without any time is refused by name, the other
    // is stored; the answer is OTLP's partial success.
    let url = format!("{base}/v1/logs");
    let now = format!("{}", chrono::Utc::now().timestamp_nanos_opt().unwrap());
    let body = otlp_json(&[(Some(&now), 17, "json-ok-1"), (None, 9, "json-no-time")]);
    let answer = client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", "otlp-json-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedLogRecords"], 1,
        "{answer}"
    );
    let why = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        why.contains("log record 1") && why.contains("timestamp"),
        "{why}"
    );
    // The same request again with its key: stored once.
    let again = client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", "otlp-json-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    // A later record proves the lake has caught up past the retry.
    let later = otlp_json(&[(Some(&now), 9, "json-ok-2")]);
    let answer = client
        .post(&url)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(later)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "{}");
    wait_for_count(
        &client,
        &base,
        "SELECT count(*) AS n FROM logs WHERE service = 'otel-json' AND request_id = 'json-ok-2'",
        1,
        Duration::from_secs(30),
    )
    .await;
    let stored = sql_json(
        &data,
        "SELECT request_id, level, count(*) AS n FROM logs WHERE service = 'otel-json' \
         GROUP BY request_id, level ORDER BY request_id",
    );
    assert_eq!(
        stored,
        vec![
            json!({"request_id": "json-ok-1", "level": "ERROR", "n": 1}),
            json!({"request_id": "json-ok-2", "level": "INFO", "n": 1}),
        ]
    );

    // Refusals name what was wrong; protobuf clients get a google.rpc.Status.
    let refused = |content_type: &'static str, body: Vec<u8>| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client
                .post(&url)
                .header("Content-Type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, kind, response.bytes().await.unwrap().to_vec())
        }
    };
    let (status, kind, body) = refused("application/x-protobuf", vec![0x0a, 0x05, 0x01]).await;
    assert_eq!((status, kind.as_str()), (400, "application/x-protobuf"));
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("runs past the end of the body"), "{text}");
    assert_eq!(
        body[..2],
        [0x08, 0x03],
        "google.rpc.Status code INVALID_ARGUMENT"
    );
    let (status, _, body) = refused("application/json", b"{\"resourceLogs\": 3}".to_vec()).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("not an OTLP logs request: request.resourceLogs must be an array"),
        "{text}"
    );
    let (status, _, body) = refused("text/plain", b"hello".to_vec()).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 415, "{text}");
    assert!(
        text.contains("application/x-protobuf or application/json"),
        "{text}"
    );
    // Nothing of the refused requests reached the lake.
    let services = sql_json(&data, "SELECT DISTINCT service FROM logs ORDER BY service");
    assert_eq!(
        services,
        vec![
            json!({"service": "otel-checkout"}),
            json!({"service": "otel-json"})
        ]
    );
}
