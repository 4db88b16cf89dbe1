//! The lake's figures, counted where commits happen.

use logpipe_core::telemetry::{
    Counter, CounterVec, Family, GaugeVec, HistogramVec, LATENCY_BUCKETS, MetricDef, MetricSet,
    MetricType,
};

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

pub static BYTES_COMMITTED: MetricDef = MetricDef {
    name: "logpipe_lake_bytes_committed_total",
    help: "Bytes of the Parquet files committed to the lake, by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static COMMIT_DURATION: MetricDef = MetricDef {
    name: "logpipe_lake_commit_duration_seconds",
    help: "Time to write one commit to the lake store (commit record, files, completion), by job.",
    kind: MetricType::Histogram,
    labels: &["job_name"],
};
pub static RETENTION_FILES: MetricDef = MetricDef {
    name: "logpipe_lake_retention_deleted_files_total",
    help: "Files of expired hour partitions deleted by retention (lake.retention), by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static RETENTION_BYTES: MetricDef = MetricDef {
    name: "logpipe_lake_retention_deleted_bytes_total",
    help: "Bytes of expired hour partitions deleted by retention (lake.retention), by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static COMPACTION_RUNS: MetricDef = MetricDef {
    name: "logpipe_lake_compactions_total",
    help: "Hour partitions compacted (lake.compaction), by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static COMPACTION_FILES_IN: MetricDef = MetricDef {
    name: "logpipe_lake_compaction_input_files_total",
    help: "Small files merged by compaction (lake.compaction), by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static COMPACTION_FILES_OUT: MetricDef = MetricDef {
    name: "logpipe_lake_compaction_output_files_total",
    help: "Merged files written by compaction (lake.compaction), by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static COMPACTION_DELETED: MetricDef = MetricDef {
    name: "logpipe_lake_compaction_deleted_files_total",
    help: "Files a compaction replaced, deleted after the grace period (lake.compaction.grace), by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static COMPACTION_BACKLOG: MetricDef = MetricDef {
    name: "logpipe_lake_compaction_backlog_hours",
    help: "Closed hours within lake.compaction.lookback still holding lake.compaction.min_files small files or more after the last pass, by table.",
    kind: MetricType::Gauge,
    labels: &["table"],
};
pub static COMPACTION_LAG: MetricDef = MetricDef {
    name: "logpipe_lake_compaction_lag_seconds",
    help: "How long ago the oldest hour of logpipe_lake_compaction_backlog_hours ended (0: none waits), by table.",
    kind: MetricType::Gauge,
    labels: &["table"],
};
pub static DELTA_VERSIONS: MetricDef = MetricDef {
    name: "logpipe_lake_delta_versions_total",
    help: "Versions published to a table's Delta log (lake.delta), by table.",
    kind: MetricType::Counter,
    labels: &["table"],
};
pub static STORE_REQUESTS: MetricDef = MetricDef {
    name: "logpipe_lake_store_requests_total",
    help: "Requests to the lake's store (a directory, S3), by operation (put, put_multipart, get, list, delete, copy) and outcome (ok, conflict, not_found, error).",
    kind: MetricType::Counter,
    labels: &["operation", "outcome"],
};
pub static STORE_REQUEST_DURATION: MetricDef = MetricDef {
    name: "logpipe_lake_store_request_duration_seconds",
    help: "Time the lake's store took to answer a request, by operation (lists: the first page of a listing with a delimiter).",
    kind: MetricType::Histogram,
    labels: &["operation"],
};

pub static TABLE_FILES: MetricDef = MetricDef {
    name: "logpipe_lake_table_files",
    help: "Parquet files in the lake, by table (a listing every lake.usage_interval).",
    kind: MetricType::Gauge,
    labels: &["table"],
};
pub static TABLE_BYTES: MetricDef = MetricDef {
    name: "logpipe_lake_table_bytes",
    help: "Bytes of the Parquet files in the lake, by table (a listing every lake.usage_interval).",
    kind: MetricType::Gauge,
    labels: &["table"],
};
pub static TABLE_ROWS: MetricDef = MetricDef {
    name: "logpipe_lake_table_rows",
    help: "Rows in the lake's Parquet files, by table (their footers; replaced files count until compaction deletes them).",
    kind: MetricType::Gauge,
    labels: &["table"],
};
pub static OPEN_HOUR_FILES: MetricDef = MetricDef {
    name: "logpipe_lake_open_hour_files",
    help: "Parquet files in the partition of the current hour, by table: how fast small files accumulate.",
    kind: MetricType::Gauge,
    labels: &["table"],
};

pub struct LakeMetrics {
    pub rows_committed: CounterVec,
    pub files_committed: CounterVec,
    pub bytes_committed: CounterVec,
    pub commits: Counter,
    pub commit_duration: HistogramVec,
    pub retention_files: CounterVec,
    pub retention_bytes: CounterVec,
    pub compaction_runs: CounterVec,
    pub compaction_files_in: CounterVec,
    pub compaction_files_out: CounterVec,
    pub compaction_deleted: CounterVec,
    pub compaction_backlog: GaugeVec,
    pub compaction_lag: GaugeVec,
    pub delta_versions: CounterVec,
    pub store_requests: CounterVec,
    pub store_request_duration: HistogramVec,
    pub table_files: GaugeVec,
    pub table_bytes: GaugeVec,
    pub table_rows: GaugeVec,
    pub open_hour_files: GaugeVec,
}

impl MetricSet for LakeMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.rows_committed,
            &self.files_committed,
            &self.bytes_committed,
            &self.commits,
            &self.commit_duration,
            &self.retention_files,
            &self.retention_bytes,
            &self.compaction_runs,
            &self.compaction_files_in,
            &self.compaction_files_out,
            &self.compaction_deleted,
            &self.compaction_backlog,
            &self.compaction_lag,
            &self.delta_versions,
            &self.store_requests,
            &self.store_request_duration,
            &self.table_files,
            &self.table_bytes,
            &self.table_rows,
            &self.open_hour_files,
        ]
    }
}

logpipe_core::metric_set!(pub fn lake_metrics() -> LakeMetrics = {
    let metrics = LakeMetrics {
        rows_committed: CounterVec::new(&ROWS_COMMITTED),
        files_committed: CounterVec::new(&FILES_COMMITTED),
        bytes_committed: CounterVec::new(&BYTES_COMMITTED),
        commits: Counter::new(&COMMITS),
        commit_duration: HistogramVec::new(&COMMIT_DURATION, LATENCY_BUCKETS),
        retention_files: CounterVec::new(&RETENTION_FILES),
        retention_bytes: CounterVec::new(&RETENTION_BYTES),
        compaction_runs: CounterVec::new(&COMPACTION_RUNS),
        compaction_files_in: CounterVec::new(&COMPACTION_FILES_IN),
        compaction_files_out: CounterVec::new(&COMPACTION_FILES_OUT),
        compaction_deleted: CounterVec::new(&COMPACTION_DELETED),
        compaction_backlog: GaugeVec::new(&COMPACTION_BACKLOG),
        compaction_lag: GaugeVec::new(&COMPACTION_LAG),
        delta_versions: CounterVec::new(&DELTA_VERSIONS),
        store_requests: CounterVec::new(&STORE_REQUESTS),
        store_request_duration: HistogramVec::new(&STORE_REQUEST_DURATION, LATENCY_BUCKETS),
        table_files: GaugeVec::new(&TABLE_FILES),
        table_bytes: GaugeVec::new(&TABLE_BYTES),
        table_rows: GaugeVec::new(&TABLE_ROWS),
        open_hour_files: GaugeVec::new(&OPEN_HOUR_FILES),
    };
    for kind in logpipe_core::RecordKind::ALL {
        metrics.rows_committed.touch(&[kind.table()]);
        metrics.files_committed.touch(&[kind.table()]);
        metrics.bytes_committed.touch(&[kind.table()]);
    }
    metrics
});
