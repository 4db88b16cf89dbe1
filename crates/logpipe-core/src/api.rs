//! The HTTP paths of logpipe's API: one spelling for the server that routes
//! them and the clients (the generator, the load client, tests) that call
//! them.

/// `POST`: a JSON array or NDJSON of log records.
pub const COLLECT_LOGS: &str = "/api/collect/logs";
/// `POST`: a JSON array or NDJSON of activity events.
pub const COLLECT_ACTIVITIES: &str = "/api/collect/activities";
/// `POST {"sql": …, "max_rows": N}`.
pub const QUERY: &str = "/api/query";
/// `GET [?state=firing|all][&service=S][&limit=N]`.
pub const ALERTS: &str = "/api/alerts";
/// `GET`: what the status line shows.
pub const STATS: &str = "/api/stats";
/// `GET`: liveness.
pub const HEALTH: &str = "/health";
/// `GET`: Prometheus text.
pub const METRICS: &str = "/metrics";
/// OpenTelemetry logs (OTLP/HTTP, protobuf or JSON).
pub const OTLP_LOGS: &str = "/v1/logs";
/// Readiness: 200 when every check passes, 503 naming each that fails.
pub const READY: &str = "/ready";
/// `GET`: one synthetic record each.
pub const SAMPLE_LOG: &str = "/sample/log";
pub const SAMPLE_EVENT: &str = "/sample/event";

/// The collector path records of `kind` are posted to.
pub fn collect_path(kind: crate::record::RecordKind) -> &'static str {
    match kind {
        crate::record::RecordKind::Log => COLLECT_LOGS,
        crate::record::RecordKind::Event => COLLECT_ACTIVITIES,
    }
}
