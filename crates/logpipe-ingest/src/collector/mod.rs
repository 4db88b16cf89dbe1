//! The HTTP collector: clients POST records, which are validated and made
//! durable on the bus before the answer.
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
//!
//! - `parse.rs`: a body to bus records.
//! - [`metrics`] — `logpipe_collector_*`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use logpipe_bus::Bus;
use logpipe_config::Resolved;
use logpipe_core::error::{Classify, ErrorKind};
use logpipe_core::health::{checks, readiness};
use logpipe_core::record::{RecordKind, ValidationLimits};
use logpipe_core::{api, dedup};
use logpipe_http::ApiError;
use serde_json::json;

mod admission;
pub mod metrics;
mod parse;
#[cfg(test)]
mod tests;

use metrics::{Refused, collector_metrics};
use parse::{BusForm, parse_batch};

/// Rejection details listed per response at most; `rejected_total` always
/// has the full count. Keeps a 50,000-record garbage batch from producing a
/// multi-megabyte answer.
const MAX_REJECTIONS_LISTED: usize = 1000;

/// Collector settings (from `[collector]`, and the summary-header choice
/// the configuration resolved).
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    pub max_body_bytes: usize,
    pub max_field_bytes: usize,
    pub max_future_skew: Duration,
    pub retry_after: Duration,
    pub max_concurrent_requests: usize,
    pub max_bytes_in_flight: usize,
    pub body_timeout: Duration,
    pub max_records_per_request: usize,
    /// Give each log record its window fields as a header
    /// (`logpipe_core::record::summary`), so the window job need not parse its JSON.
    pub summaries: bool,
    /// Write records in binary form (`logpipe_core::record::binary`)
    /// instead of canonical JSON.
    pub binary_records: bool,
}

impl CollectorSettings {
    pub fn from_config(resolved: &Resolved) -> CollectorSettings {
        let config = &resolved.config.collector;
        CollectorSettings {
            max_body_bytes: config.max_body_bytes,
            max_field_bytes: config.max_field_bytes,
            max_future_skew: config.max_future_skew,
            retry_after: config.retry_after,
            max_concurrent_requests: config.max_concurrent_requests,
            max_bytes_in_flight: config.max_bytes_in_flight,
            body_timeout: config.body_timeout,
            max_records_per_request: config.max_records_per_request,
            summaries: resolved.summary_header,
            binary_records: resolved.binary_records,
        }
    }
}

/// The collector over a bus.
#[derive(Clone)]
pub struct Collector {
    bus: Arc<dyn Bus>,
    settings: CollectorSettings,
    /// Shared by every route of this collector (and its OTLP route).
    admission: Arc<admission::Admission>,
}

impl Collector {
    pub fn new(bus: Arc<dyn Bus>, settings: CollectorSettings) -> Collector {
        collector_metrics();
        let admission = Arc::new(admission::Admission::new(
            settings.max_concurrent_requests,
            settings.max_bytes_in_flight,
            settings.max_body_bytes,
            settings.body_timeout,
            settings.retry_after,
        ));
        Collector {
            bus,
            settings,
            admission,
        }
    }

    /// [`admission`]'s checks as a layer for `routes` of this collector.
    pub(crate) fn admitted(&self, routes: Router<Collector>) -> Router<Collector> {
        routes.layer(axum::middleware::from_fn_with_state(
            self.clone(),
            admission::admit,
        ))
    }

    /// `POST /api/collect/logs` and `POST /api/collect/activities`
    /// (OpenTelemetry's `POST /v1/logs` is `crate::otlp::routes`).
    pub fn routes(self) -> Router {
        let body_limit = self.settings.max_body_bytes;
        let routes = Router::new()
            .route(api::COLLECT_LOGS, post(collect_logs))
            .route(api::COLLECT_ACTIVITIES, post(collect_activities))
            .layer(DefaultBodyLimit::max(body_limit));
        self.admitted(routes).with_state(self)
    }
}

async fn collect_logs(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    collector
        .collect(RecordKind::Log, &headers, body)
        .await
        .into_response()
}

async fn collect_activities(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    collector
        .collect(RecordKind::Event, &headers, body)
        .await
        .into_response()
}

/// Counts a refused request and passes its answer on.
fn refused(reason: Refused, error: ApiError) -> ApiError {
    collector_metrics().refused(reason);
    error
}

impl Collector {
    async fn collect(
        &self,
        kind: RecordKind,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Response, ApiError> {
        let key = idempotency_key(headers)?;
        let body = self.body(body)?;
        let ingested = self.ingest(kind, key, body).await?;
        let status = if ingested.rejected.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let rejected_total = ingested.rejected.len();
        let listed: Vec<_> = ingested
            .rejected
            .into_iter()
            .take(MAX_REJECTIONS_LISTED)
            .map(|(index, reason)| json!({ "index": index, "reason": reason }))
            .collect();
        Ok((
            status,
            Json(json!({ "accepted": ingested.accepted, "rejected": listed, "rejected_total": rejected_total })),
        )
            .into_response())
    }

    /// `collector.max_body_bytes`: the largest body any of its routes reads.
    pub fn max_body_bytes(&self) -> usize {
        self.settings.max_body_bytes
    }

    /// The body, or the answer to one axum could not read whole.
    pub(crate) fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                refused(
                    Refused::TooLarge,
                    ApiError::TooLarge {
                        limit_bytes: self.settings.max_body_bytes,
                        setting: "collector.max_body_bytes",
                    },
                )
            } else {
                refused(Refused::BadBody, logpipe_http::rejection(rejection))
            }
        })
    }

    /// Validates `body` (a JSON array or NDJSON of `kind` records) and
    /// appends the valid records to the bus; answers once they are durable.
    pub(crate) async fn ingest(
        &self,
        kind: RecordKind,
        key: Option<Vec<u8>>,
        body: Bytes,
    ) -> Result<Ingested, ApiError> {
        let limits = ValidationLimits {
            max_field_bytes: self.settings.max_field_bytes,
            max_future_skew_secs: self.settings.max_future_skew.as_secs() as i64,
            now_micros: logpipe_core::time::now_micros(),
        };
        // Parsing a large body takes milliseconds of CPU: keep it off the reactor.
        let form = BusForm {
            summaries: self.settings.summaries,
            binary: self.settings.binary_records,
        };
        let parsed = tokio::task::spawn_blocking(move || {
            let request = key.map(|key| dedup::request_id(&key, &body));
            parse_batch(kind, &body, &limits, form, request)
        })
        .await
        .map_err(|join_error| ApiError::Internal(format!("parser failed: {join_error}")))?
        .map_err(|body_error| {
            refused(
                Refused::BadBody,
                ApiError::BadRequest(body_error.to_string()),
            )
        })?;
        let records = parsed.records.len() + parsed.rejected.len();
        if records > self.settings.max_records_per_request {
            return Err(refused(
                Refused::TooLarge,
                ApiError::Status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "{records} records in one request, more than collector.max_records_per_request ({}); nothing was stored, send them in smaller requests",
                        self.settings.max_records_per_request
                    ),
                ),
            ));
        }
        let accepted = parsed.records.len();
        let topic = kind.topic();
        if let Err(error) = self.bus.append(topic, parsed.records).await {
            readiness().fail(
                checks::BUS,
                format!("the bus refused the last append: {error}"),
            );
            if error.kind() == ErrorKind::Transient {
                return Err(refused(
                    Refused::Busy,
                    ApiError::Unavailable {
                        message: format!(
                            "{error}; nothing in this request was acknowledged, retry it"
                        ),
                        retry_after: self.settings.retry_after,
                    },
                ));
            }
            tracing::error!(%error, "bus append failed");
            return Err(ApiError::from_error(&error, self.settings.retry_after));
        }
        readiness().pass(checks::BUS);
        let metrics = collector_metrics();
        metrics.records_accepted.add(&[topic], accepted as u64);
        metrics
            .records_rejected
            .add(&[topic], parsed.rejected.len() as u64);
        Ok(Ingested {
            accepted,
            rejected: parsed.rejected,
        })
    }
}

/// What became of a request's records: `accepted` are durable on the bus;
/// each rejected one by its index in the request and why.
pub(crate) struct Ingested {
    pub(crate) accepted: usize,
    pub(crate) rejected: Vec<(usize, String)>,
}

/// The request's `Idempotency-Key`, checked.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ApiError> {
    match headers.get(dedup::IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(value) => Ok(Some(
            dedup::parse_key(value.as_bytes())
                .map_err(|reason| refused(Refused::BadBody, ApiError::BadRequest(reason)))?
                .to_vec(),
        )),
    }
}
