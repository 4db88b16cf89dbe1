//! What every role serves: `/health`, `/ready`, `/metrics`, `/api/stats`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

use logpipe_config::Scope;
use logpipe_core::api;
use logpipe_core::health::readiness;
use logpipe_core::record::RecordKind;
use logpipe_core::telemetry::registry;
use serde_json::json;

use crate::auth::{Auth, require};

/// `/health` and `/ready` open (probes carry no token), `/metrics` open
/// unless `open_metrics` is false, `/api/stats` for the `query` scope.
pub fn routes(auth: Option<&Arc<Auth>>, open_metrics: bool) -> Router {
    let open = Router::new()
        .route(api::HEALTH, get(health))
        .route(api::READY, get(ready));
    let metrics = Router::new().route(api::METRICS, get(prometheus_metrics));
    let metrics = if open_metrics {
        metrics
    } else {
        require(metrics, auth, Scope::Query)
    };
    let stats = require(
        Router::new().route(api::STATS, get(stats)),
        auth,
        Scope::Query,
    );
    open.merge(metrics).merge(stats)
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

/// 200 `{"ready": true, "checks": {...}}` when every check of
/// [`logpipe_core::health`] passes; 503 with `"failing"` naming each check
/// that does not and why.
async fn ready() -> Response {
    let readiness = readiness();
    let checks = readiness.checks();
    let failing: Vec<_> = checks
        .iter()
        .filter_map(|check| {
            check
                .failing
                .as_ref()
                .map(|why| json!({ "check": check.name, "reason": why }))
        })
        .collect();
    let states: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|check| {
            let state = if check.failing.is_some() {
                "failing"
            } else {
                "ok"
            };
            (check.name.clone(), json!(state))
        })
        .collect();
    let ready = readiness.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "ready": ready, "checks": states });
    if !failing.is_empty() {
        body["failing"] = json!(failing);
    } else if !ready {
        body["failing"] =
            json!([{ "check": "started", "reason": "the process is still starting" }]);
    }
    (status, Json(body)).into_response()
}

async fn prometheus_metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        registry().render(),
    )
        .into_response()
}
