//! Admission of a collect request before its handler runs: how many
//! requests and how many body bytes the collector holds at once, how long a
//! body may take to arrive, and the answer to one that is too large. Every
//! collect route passes through here, so every answer (the handler's or a
//! refusal's) is counted here too: its time and code, and the body's bytes.
//!
//! - Past `collector.max_concurrent_requests` requests, or
//!   `collector.max_bytes_in_flight` bytes of bodies (counted by
//!   Content-Length, or as `max_body_bytes` when a body does not say), a
//!   request is answered 503 with `Retry-After` at once, without reading
//!   its body: one client cannot hold every slot with 16 MiB bodies.
//! - A body that has not arrived whole within `collector.body_timeout` is
//!   answered 408: a slow client cannot hold a slot for ever.
//! - A body larger than `collector.max_body_bytes` is read to its end
//!   (discarded, up to [`DRAIN_FACTOR`] times the limit) before the 413
//!   goes out, so a client that writes its whole request before reading
//!   (Python's urllib, as the seed's generator does) gets the 413 and its
//!   reason instead of a broken pipe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use logpipe_core::api;
use logpipe_core::record::RecordKind;
use logpipe_http::ApiError;
use tokio::sync::Semaphore;

use super::Collector;
use super::metrics::{Refused, collector_metrics};

/// How much of an oversized body is read and thrown away before the 413:
/// enough for any client that merely misjudged its batch size, bounded so
/// that a hostile one cannot keep the slot streaming for ever.
const DRAIN_FACTOR: usize = 4;

/// The limits and what is held of them now.
pub(crate) struct Admission {
    requests: Arc<Semaphore>,
    kib: Arc<Semaphore>,
    max_concurrent_requests: usize,
    max_bytes_in_flight: usize,
    max_body_bytes: usize,
    body_timeout: Duration,
    retry_after: Duration,
}

impl Admission {
    pub(crate) fn new(
        max_concurrent_requests: usize,
        max_bytes_in_flight: usize,
        max_body_bytes: usize,
        body_timeout: Duration,
        retry_after: Duration,
    ) -> Admission {
        Admission {
            requests: Arc::new(Semaphore::new(max_concurrent_requests)),
            kib: Arc::new(Semaphore::new(kib(max_bytes_in_flight) as usize)),
            max_concurrent_requests,
            max_bytes_in_flight,
            max_body_bytes,
            body_timeout,
            retry_after,
        }
    }

    /// 503 with `Retry-After` (`ApiError::Unavailable` sets it).
    fn busy(&self, message: String) -> Response {
        collector_metrics().refused(Refused::Overloaded);
        ApiError::Unavailable {
            message,
            retry_after: self.retry_after,
        }
        .into_response()
    }
}

fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as usize) as u32
}

/// The topic a collect route appends to.
fn topic_of(path: &str) -> &'static str {
    if path == api::COLLECT_ACTIVITIES {
        RecordKind::Event.topic()
    } else {
        RecordKind::Log.topic()
    }
}

/// The middleware: admits `request` or answers for the collector, and
/// counts the answer.
pub(crate) async fn admit(
    State(collector): State<Collector>,
    request: Request,
    next: Next,
) -> Response {
    let began = Instant::now();
    let topic = topic_of(request.uri().path());
    let response = admit_and_run(&collector, topic, request, next).await;
    collector_metrics().observe_request(topic, response.status(), began.elapsed());
    response
}

async fn admit_and_run(
    collector: &Collector,
    topic: &'static str,
    request: Request,
    next: Next,
) -> Response {
    let admission = collector.admission.clone();
    let Ok(_request_slot) = admission.requests.clone().try_acquire_owned() else {
        return admission.busy(format!(
            "the collector is handling collector.max_concurrent_requests ({}) requests; nothing of this one was stored, retry it",
            admission.max_concurrent_requests
        ));
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let (parts, body) = request.into_parts();
    if let Some(length) = declared
        && length > admission.max_body_bytes
    {
        return too_large(&admission, body).await;
    }
    let held = declared.unwrap_or(admission.max_body_bytes);
    let Ok(_bytes) = admission.kib.clone().try_acquire_many_owned(kib(held)) else {
        return admission.busy(format!(
            "the collector holds collector.max_bytes_in_flight ({} bytes) of request bodies; nothing of this one was stored, retry it",
            admission.max_bytes_in_flight
        ));
    };
    let read = tokio::time::timeout(
        admission.body_timeout,
        read_body(body, admission.max_body_bytes),
    );
    let bytes = match read.await {
        Err(_) => {
            collector_metrics().refused(Refused::SlowBody);
            return ApiError::Status(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive whole within collector.body_timeout ({}s); nothing was stored",
                    admission.body_timeout.as_secs_f64()
                ),
            )
            .into_response();
        }
        Ok(Err(ReadError::TooLarge(rest))) => return too_large(&admission, rest).await,
        Ok(Err(ReadError::Broken(reason))) => {
            collector_metrics().refused(Refused::BadBody);
            return ApiError::BadRequest(format!("the body could not be read: {reason}"))
                .into_response();
        }
        Ok(Ok(bytes)) => bytes,
    };
    collector_metrics()
        .bytes_received
        .add(&[topic], bytes.len() as u64);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

enum ReadError {
    /// Past the limit; the rest of the body to drain.
    TooLarge(Body),
    Broken(String),
}

async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(ReadError::TooLarge(body));
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buffer))
}

/// Reads and discards what is left of `body` (bounded in bytes and time),
/// then answers 413.
async fn too_large(admission: &Admission, mut body: Body) -> Response {
    collector_metrics().refused(Refused::TooLarge);
    let cap = admission.max_body_bytes.saturating_mul(DRAIN_FACTOR);
    let drain = async {
        let mut drained = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                drained += data.len();
                if drained > cap {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(admission.body_timeout, drain).await;
    ApiError::TooLarge {
        limit_bytes: admission.max_body_bytes,
        setting: "collector.max_body_bytes",
    }
    .into_response()
}
