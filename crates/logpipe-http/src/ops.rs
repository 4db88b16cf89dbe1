//! What every role serves: `/health`, `/metrics`, `/api/stats`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use logpipe_core::api;
use logpipe_core::record::RecordKind;
use logpipe_core::telemetry::registry;
use serde_json::json;

/// `/health`, `/metrics` and `/api/stats`.
pub fn routes() -> Router {
    Router::new()
        .route(api::HEALTH, get(health))
        .route(api::METRICS, get(prometheus_metrics))
        .route(api::STATS, get(stats))
}

/// Pipeline progress at a glance: what the status line and benchmarks read.
/// Taken from the metric registry by name, so it shows what this process's
/// roles count (a collector-only process has no lake rows).
pub fn stats_json() -> serde_json::Value {
    let sum = |name: &str| registry().sum(name, |_| true) as u64;
    let raw_tables: Vec<&str> = RecordKind::ALL.iter().map(|kind| kind.table()).collect();
    let lake_rows = registry().sum("logpipe_lake_rows_committed_total", |labels| {
        labels
            .first()
            .is_some_and(|table| raw_tables.contains(&table.as_str()))
    }) as u64;
    json!({
        "records_accepted": sum("logpipe_collector_records_accepted_total"),
        "records_rejected": sum("logpipe_collector_records_rejected_total"),
        "lake_rows": lake_rows,
        "lake_commits": sum("logpipe_lake_commits_total"),
        "bus_lag": registry().sum("logpipe_bus_consumer_lag_records", |_| true) as i64,
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
        registry().render(),
    )
        .into_response()
}
