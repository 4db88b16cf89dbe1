//! The collector's figures.

use logpipe_core::telemetry::{CounterVec, Family, MetricDef, MetricSet, MetricType};

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

/// Why a whole request was refused (the `reason` label).
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    /// Not JSON or NDJSON, or a bad `Idempotency-Key`: 400.
    BadBody,
    /// Larger than `collector.max_body_bytes`: 413.
    TooLarge,
    /// The bus could not take it now: 503.
    Busy,
}

impl Refused {
    const ALL: [Refused; 3] = [Refused::BadBody, Refused::TooLarge, Refused::Busy];

    fn label(self) -> &'static str {
        match self {
            Refused::BadBody => "bad_body",
            Refused::TooLarge => "too_large",
            Refused::Busy => "busy",
        }
    }
}

pub struct CollectorMetrics {
    pub records_accepted: CounterVec,
    pub records_rejected: CounterVec,
    requests_refused: CounterVec,
}

impl CollectorMetrics {
    pub fn refused(&self, reason: Refused) {
        self.requests_refused.inc(&[reason.label()]);
    }
}

impl MetricSet for CollectorMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.records_accepted,
            &self.records_rejected,
            &self.requests_refused,
        ]
    }
}

logpipe_core::metric_set!(pub fn collector_metrics() -> CollectorMetrics = {
    let metrics = CollectorMetrics {
        records_accepted: CounterVec::new(&RECORDS_ACCEPTED),
        records_rejected: CounterVec::new(&RECORDS_REJECTED),
        requests_refused: CounterVec::new(&REQUESTS_REFUSED),
    };
    for kind in logpipe_core::RecordKind::ALL {
        metrics.records_accepted.touch(&[kind.topic()]);
        metrics.records_rejected.touch(&[kind.topic()]);
    }
    for reason in Refused::ALL {
        metrics.requests_refused.touch(&[reason.label()]);
    }
    metrics
});
