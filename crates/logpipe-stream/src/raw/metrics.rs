//! The raw→lake job's figures.

use logpipe_core::telemetry::{
    Counter, CounterVec, Family, GaugeVec, MetricDef, MetricSet, MetricType,
};

pub static CONSUMER_LAG: MetricDef = MetricDef {
    name: "logpipe_bus_consumer_lag_records",
    help: "Records on the bus not yet committed to the lake, by consumer group, topic and partition (the partitions this process reads).",
    kind: MetricType::Gauge,
    labels: &["group", "topic", "partition"],
};
pub static RECORDS_INVALID: MetricDef = MetricDef {
    name: "logpipe_lake_records_invalid_total",
    help: "Records read from the bus that failed validation and were not written.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static RECORDS_LOST: MetricDef = MetricDef {
    name: "logpipe_lake_records_lost_total",
    help: "Records deleted by bus retention before they reached the lake.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static RECORDS_DUPLICATE: MetricDef = MetricDef {
    name: "logpipe_lake_records_duplicate_total",
    help: "Second copies of a retried record (same Idempotency-Key and position) not written to the lake.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static STEPS_FENCED: MetricDef = MetricDef {
    name: "logpipe_lake_steps_fenced_total",
    help: "Flushes dropped because another consumer-group member committed the same records first.",
    kind: MetricType::Counter,
    labels: &[],
};

pub struct RawMetrics {
    pub consumer_lag: GaugeVec,
    pub records_invalid: CounterVec,
    pub records_lost: CounterVec,
    pub records_duplicate: CounterVec,
    pub steps_fenced: Counter,
}

impl MetricSet for RawMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.consumer_lag,
            &self.records_invalid,
            &self.records_lost,
            &self.records_duplicate,
            &self.steps_fenced,
        ]
    }
}

logpipe_core::metric_set!(pub fn raw_metrics() -> RawMetrics = {
    let metrics = RawMetrics {
        consumer_lag: GaugeVec::new(&CONSUMER_LAG),
        records_invalid: CounterVec::new(&RECORDS_INVALID),
        records_lost: CounterVec::new(&RECORDS_LOST),
        records_duplicate: CounterVec::new(&RECORDS_DUPLICATE),
        steps_fenced: Counter::new(&STEPS_FENCED),
    };
    for kind in logpipe_core::RecordKind::ALL {
        for family in [
            &metrics.records_invalid,
            &metrics.records_lost,
            &metrics.records_duplicate,
        ] {
            family.touch(&[kind.table()]);
        }
    }
    metrics
});
