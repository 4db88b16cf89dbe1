//! The hot store's figures.

use logpipe_core::telemetry::{
    Counter, CounterVec, Family, Gauge, MetricDef, MetricSet, MetricType,
};

pub static ROWS_WRITTEN: MetricDef = MetricDef {
    name: "logpipe_hot_rows_written_total",
    help: "Raw records written into the PostgreSQL hot store, by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static TRANSACTIONS: MetricDef = MetricDef {
    name: "logpipe_hot_transactions_total",
    help: "Hot store transactions committed (rows and bus positions together).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static RECORDS_EXPIRED: MetricDef = MetricDef {
    name: "logpipe_hot_records_expired_total",
    help: "Records older than postgres.hot.retention when read, not written to the hot store (they are in the lake).",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static RECORDS_SKIPPED: MetricDef = MetricDef {
    name: "logpipe_hot_records_skipped_total",
    help: "Records not written to the hot store, by table and why: invalid (failed validation), duplicate (a retried record's second copy), lost (deleted by bus retention before the hot store read them).",
    kind: MetricType::Counter,
    labels: &["table", "reason"],
};
pub static PARTITIONS_DROPPED: MetricDef = MetricDef {
    name: "logpipe_hot_partitions_dropped_total",
    help: "Day partitions of the hot store dropped by retention, by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static FENCED: MetricDef = MetricDef {
    name: "logpipe_hot_fenced_total",
    help: "Hot store transactions rolled back because another writer moved the same bus positions first (two processes with the hot store on).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static LAG: MetricDef = MetricDef {
    name: "logpipe_hot_lag_records",
    help: "Records on the raw topics not yet in the hot store.",
    kind: MetricType::Gauge,
    labels: &[],
};

pub struct HotMetrics {
    pub rows_written: CounterVec,
    pub transactions: Counter,
    pub records_expired: CounterVec,
    pub records_skipped: CounterVec,
    pub partitions_dropped: CounterVec,
    pub fenced: Counter,
    pub lag: Gauge,
}

impl MetricSet for HotMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.rows_written,
            &self.transactions,
            &self.records_expired,
            &self.records_skipped,
            &self.partitions_dropped,
            &self.fenced,
            &self.lag,
        ]
    }
}

logpipe_core::metric_set!(pub fn hot_metrics() -> HotMetrics = {
    let metrics = HotMetrics {
        rows_written: CounterVec::new(&ROWS_WRITTEN),
        transactions: Counter::new(&TRANSACTIONS),
        records_expired: CounterVec::new(&RECORDS_EXPIRED),
        records_skipped: CounterVec::new(&RECORDS_SKIPPED),
        partitions_dropped: CounterVec::new(&PARTITIONS_DROPPED),
        fenced: Counter::new(&FENCED),
        lag: Gauge::new(&LAG),
    };
    for kind in logpipe_core::RecordKind::ALL {
        let table = kind.table();
        for family in [&metrics.rows_written, &metrics.records_expired, &metrics.partitions_dropped] {
            family.touch(&[table]);
        }
        for reason in ["invalid", "duplicate", "lost"] {
            metrics.records_skipped.touch(&[table, reason]);
        }
    }
    metrics
});
