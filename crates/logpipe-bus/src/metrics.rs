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

pub static TRANSACTIONS: MetricDef = MetricDef {
    name: "logpipe_bus_transactions_total",
    help: "Kafka transactions the collector ended, by outcome (aborted: their requests were answered 503 and none of their records will be read).",
    kind: MetricType::Counter,
    labels: &["outcome"],
};
pub static TRANSACTION_REQUESTS: MetricDef = MetricDef {
    name: "logpipe_bus_transaction_requests_total",
    help: "Appends (one per topic of a request) committed in Kafka transactions; over logpipe_bus_transactions_total{outcome=\"committed\"}, the appends each transaction carried (group commit).",
    kind: MetricType::Counter,
    labels: &[],
};

pub struct BusMetrics {
    pub records_appended: CounterVec,
    pub fsyncs: Counter,
    pub offsets_skipped: CounterVec,
    pub transactions: CounterVec,
    pub transaction_requests: Counter,
}

impl MetricSet for BusMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.records_appended,
            &self.fsyncs,
            &self.offsets_skipped,
            &self.transactions,
            &self.transaction_requests,
        ]
    }
}

logpipe_core::metric_set!(pub fn bus_metrics() -> BusMetrics = {
    let metrics = BusMetrics {
        records_appended: CounterVec::new(&RECORDS_APPENDED),
        fsyncs: Counter::new(&FSYNCS),
        offsets_skipped: CounterVec::new(&OFFSETS_SKIPPED),
        transactions: CounterVec::new(&TRANSACTIONS),
        transaction_requests: Counter::new(&TRANSACTION_REQUESTS),
    };
    for outcome in ["committed", "aborted"] {
        metrics.transactions.touch(&[outcome]);
    }
    for kind in logpipe_core::RecordKind::ALL {
        metrics.records_appended.touch(&[kind.topic()]);
        metrics.offsets_skipped.touch(&[kind.topic()]);
    }
    metrics
});
