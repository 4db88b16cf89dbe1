//! The bus's figures, counted where appends, fsyncs and reads happen.

use logpipe_core::telemetry::{Counter, CounterVec, Family, MetricDef, MetricSet, MetricType};

pub static RECORDS_APPENDED: MetricDef = MetricDef {
    name: "logpipe_bus_records_appended_total",
    help: "Records appended to the bus, by topic.",
    kind: MetricType::Counter,
    labels: &["topic"],
};
pub static FSYNCS: MetricDef = MetricDef {
    name: "logpipe_bus_fsyncs_total",
    help: "fsync calls made by the embedded bus (one per group commit).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static OFFSETS_SKIPPED: MetricDef = MetricDef {
    name: "logpipe_bus_offsets_skipped_total",
    help: "Offsets a Kafka broker passed over between the records it returned: transaction markers and compacted records, or records the broker failed to return.",
    kind: MetricType::Counter,
    labels: &["topic"],
};

pub struct BusMetrics {
    pub records_appended: CounterVec,
    pub fsyncs: Counter,
    pub offsets_skipped: CounterVec,
}

impl MetricSet for BusMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![&self.records_appended, &self.fsyncs, &self.offsets_skipped]
    }
}

logpipe_core::metric_set!(pub fn bus_metrics() -> BusMetrics = {
    let metrics = BusMetrics {
        records_appended: CounterVec::new(&RECORDS_APPENDED),
        fsyncs: Counter::new(&FSYNCS),
        offsets_skipped: CounterVec::new(&OFFSETS_SKIPPED),
    };
    for kind in logpipe_core::RecordKind::ALL {
        metrics.records_appended.touch(&[kind.topic()]);
        metrics.offsets_skipped.touch(&[kind.topic()]);
    }
    metrics
});
