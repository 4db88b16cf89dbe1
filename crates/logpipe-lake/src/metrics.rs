//! The lake's figures, counted where commits happen.

use logpipe_core::telemetry::{Counter, CounterVec, Family, MetricDef, MetricSet, MetricType};

pub static ROWS_COMMITTED: MetricDef = MetricDef {
    name: "logpipe_lake_rows_committed_total",
    help: "Rows committed to the Parquet lake, by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static FILES_COMMITTED: MetricDef = MetricDef {
    name: "logpipe_lake_files_committed_total",
    help: "Parquet files committed to the lake, by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static COMMITS: MetricDef = MetricDef {
    name: "logpipe_lake_commits_total",
    help: "Lake commits (one per job step that wrote or moved offsets).",
    kind: MetricType::Counter,
    labels: &[],
};

pub struct LakeMetrics {
    pub rows_committed: CounterVec,
    pub files_committed: CounterVec,
    pub commits: Counter,
}

impl MetricSet for LakeMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![&self.rows_committed, &self.files_committed, &self.commits]
    }
}

logpipe_core::metric_set!(pub fn lake_metrics() -> LakeMetrics = {
    let metrics = LakeMetrics {
        rows_committed: CounterVec::new(&ROWS_COMMITTED),
        files_committed: CounterVec::new(&FILES_COMMITTED),
        commits: Counter::new(&COMMITS),
    };
    for kind in logpipe_core::RecordKind::ALL {
        metrics.rows_committed.touch(&[kind.table()]);
        metrics.files_committed.touch(&[kind.table()]);
    }
    metrics
});
