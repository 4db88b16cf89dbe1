//! The collector through its router, on a real embedded bus.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;
use logpipe_bus::{Bus, BusError, EmbeddedBus};
use logpipe_core::Level;
use logpipe_core::dedup::{self, RecordId};
use logpipe_core::record::summary::{self, LogSummary};
use logpipe_core::record::{Record, RecordKind, ValidationLimits, binary};
use logpipe_test_utils::{FaultyBus, call, embedded_bus};
use tower::ServiceExt;

use super::{Collector, CollectorSettings};

fn settings(max_body_bytes: usize) -> CollectorSettings {
    CollectorSettings {
        max_body_bytes,
        max_field_bytes: 256,
        max_future_skew: Duration::from_secs(3600),
        retry_after: Duration::from_secs(2),
        max_concurrent_requests: 64,
        max_bytes_in_flight: max_body_bytes * 64,
        body_timeout: Duration::from_secs(10),
        max_records_per_request: 100_000,
        summaries: true,
        binary_records: true,
    }
}

async fn app(dir: &std::path::Path) -> (Router, EmbeddedBus) {
    let bus = embedded_bus(&dir.join("bus")).await;
    let router = Collector::new(Arc::new(bus.clone()), settings(16 * 1024)).routes();
    (router, bus)
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
    call(router, request.body(body.into()).unwrap()).await
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

    // The values are in binary form and read back as the records posted.
    let limits = ValidationLimits::structure_only();
    let messages: Vec<String> = read("logs.raw")
        .iter()
        .map(|r| {
            assert!(binary::is_binary(&r.value));
            match Record::from_bus(RecordKind::Log, &r.value, &limits).unwrap() {
                Record::Log(log) => log.message,
                Record::Event(_) => panic!("an event on logs.raw"),
            }
        })
        .collect();
    assert_eq!(messages, ["ok", "ok too"]);

    let ok =
        r#"{"event_id": "e1", "timestamp": 1736645166, "user_id": "u1", "event_type": "VIEW"}"#;
    let (status, answer) = post(&router, "/api/collect/activities", ok).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert!(read("events.activity").iter().all(|r| r.headers.is_empty()));
    let event = &read("events.activity")[0].value;
    match Record::from_bus(RecordKind::Event, event, &limits).unwrap() {
        Record::Event(event) => assert_eq!(event.event_id, "e1"),
        Record::Log(_) => panic!("a log on events.activity"),
    }
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
            br#"[{"timestamp": 1e300, "level": "INFO", "service": "s", "message": "m"}]"#.to_vec(),
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

#[tokio::test]
async fn a_full_bus_answers_503_with_retry_after_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A bus whose queue is always full: the collector's 503 path.
    let full = FaultyBus::new(Arc::new(embedded_bus(dir.path()).await));
    full.fail_every_append(|| BusError::Busy("256 appends already waiting for the disk".into()));
    let router = Collector::new(Arc::new(full), settings(4096)).routes();
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
