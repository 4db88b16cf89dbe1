//! The collector's figures.

use std::time::Duration;

use axum::http::StatusCode;
use logpipe_core::telemetry::{
    CounterVec, Family, HistogramVec, LATENCY_BUCKETS, MetricDef, MetricSet, MetricType,
};

pub static RECORDS_ACCEPTED: MetricDef = MetricDef {
    name: "logpipe_collector_records_accepted_total",
    help: "Records accepted by the collector and durable on the bus.",
    kind: MetricType::Counter,
    labels: &["topic"],
};
pub static RECORDS_REJECTED: MetricDef = MetricDef {
    name: "logpipe_collector_records_rejected_total",
    help: "Records refused by validation at the collector.",
    kind: MetricType::Counter,
    labels: &["topic"],
};
pub static REQUESTS_REFUSED: MetricDef = MetricDef {
    name: "logpipe_collector_requests_refused_total",
    help: "Requests refused whole, by reason.",
    kind: MetricType::Counter,
    labels: &["reason"],
};

pub static REQUEST_DURATION: MetricDef = MetricDef {
    name: "logpipe_collector_request_duration_seconds",
    help: "Time from a collect request's arrival to its answer, by topic and HTTP status code (200 when durable on the bus, 422 with rejected records, 4xx refused, 503 to retry).",
    kind: MetricType::Histogram,
    labels: &["topic", "code"],
};
pub static BYTES_RECEIVED: MetricDef = MetricDef {
    name: "logpipe_collector_bytes_received_total",
    help: "Body bytes of the collect requests read in full, by topic.",
    kind: MetricType::Counter,
    labels: &["topic"],
};

/// Why a whole request was refused (the `reason` label).
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    /// Not JSON or NDJSON, or a bad `Idempotency-Key`: 400.
    BadBody,
    /// Larger than `collector.max_body_bytes`: 413.
    TooLarge,
    /// The bus could not take it now: 503.
    Busy,
    /// The collector held its most requests or body bytes: 503.
    Overloaded,
    /// The body did not arrive within `collector.body_timeout`: 408.
    SlowBody,
}

impl Refused {
    const ALL: [Refused; 5] = [
        Refused::BadBody,
        Refused::TooLarge,
        Refused::Busy,
        Refused::Overloaded,
        Refused::SlowBody,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::BadBody => "bad_body",
            Refused::TooLarge => "too_large",
            Refused::Busy => "busy",
            Refused::Overloaded => "overloaded",
            Refused::SlowBody => "slow_body",
        }
    }
}

pub struct CollectorMetrics {
    pub records_accepted: CounterVec,
    pub records_rejected: CounterVec,
    requests_refused: CounterVec,
    pub bytes_received: CounterVec,
    request_duration: HistogramVec,
}

/// The status codes the collector answers with most, shown (at zero) from
/// the start so rate() over them has a series to work on.
const CODES: [&str; 3] = ["200", "422", "503"];

impl CollectorMetrics {
    pub fn refused(&self, reason: Refused) {
        self.requests_refused.inc(&[reason.label()]);
    }

    pub fn observe_request(&self, topic: &str, status: StatusCode, took: Duration) {
        self.request_duration
            .observe(&[topic, status.as_str()], took.as_secs_f64());
    }
}

impl MetricSet for CollectorMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.records_accepted,
            &self.records_rejected,
            &self.requests_refused,
            &self.bytes_received,
            &self.request_duration,
        ]
    }
}

logpipe_core::metric_set!(pub fn collector_metrics() -> CollectorMetrics = {
    let metrics = CollectorMetrics {
        records_accepted: CounterVec::new(&RECORDS_ACCEPTED),
        records_rejected: CounterVec::new(&RECORDS_REJECTED),
        requests_refused: CounterVec::new(&REQUESTS_REFUSED),
        bytes_received: CounterVec::new(&BYTES_RECEIVED),
        request_duration: HistogramVec::new(&REQUEST_DURATION, LATENCY_BUCKETS),
    };
    for kind in logpipe_core::RecordKind::ALL {
        metrics.records_accepted.touch(&[kind.topic()]);
        metrics.records_rejected.touch(&[kind.topic()]);
        metrics.bytes_received.touch(&[kind.topic()]);
        for code in CODES {
            metrics.request_duration.touch(&[kind.topic(), code]);
        }
    }
    for reason in Refused::ALL {
        metrics.requests_refused.touch(&[reason.label()]);
    }
    metrics
});
