//! The CDC sources' and sinks' figures, labelled by their names.

use logpipe_core::telemetry::{CounterVec, Family, GaugeVec, MetricDef, MetricSet, MetricType};

pub static CHANGES_APPLIED: MetricDef = MetricDef {
    name: "logpipe_cdc_changes_applied_total",
    help: "Change events applied to the target, by sink, target table and op (upsert, delete, truncate); several changes of one key in a batch count once each.",
    kind: MetricType::Counter,
    labels: &["sink", "table", "op"],
};
pub static TRANSACTIONS: MetricDef = MetricDef {
    name: "logpipe_cdc_transactions_total",
    help: "Target transactions committed (changes and positions together), by sink.",
    kind: MetricType::Counter,
    labels: &["sink"],
};
pub static ERRORS: MetricDef = MetricDef {
    name: "logpipe_cdc_errors_total",
    help: "Failed attempts (target unreachable or refusing, bus errors), each retried from the positions in the target, by sink.",
    kind: MetricType::Counter,
    labels: &["sink"],
};
pub static LAG_EVENTS: MetricDef = MetricDef {
    name: "logpipe_cdc_lag_events",
    help: "Change events on the bus not yet applied to the target, by sink.",
    kind: MetricType::Gauge,
    labels: &["sink"],
};
pub static LAG_SECONDS: MetricDef = MetricDef {
    name: "logpipe_cdc_lag_seconds",
    help: "Age of the newest applied change (source commit time to now) while changes wait; 0 when caught up, by sink.",
    kind: MetricType::Gauge,
    labels: &["sink"],
};

pub static SOURCE_CHANGES: MetricDef = MetricDef {
    name: "logpipe_cdc_source_changes_total",
    help: "Row changes a CDC source appended to the bus, by source, table (db.table) and op (r snapshot, c, u, d).",
    kind: MetricType::Counter,
    labels: &["source", "table", "op"],
};
pub static SOURCE_ERRORS: MetricDef = MetricDef {
    name: "logpipe_cdc_source_errors_total",
    help: "Failed attempts of a CDC source (server or bus away), each resumed from the bus's last batch, by source.",
    kind: MetricType::Counter,
    labels: &["source"],
};
pub static SOURCE_LAG: MetricDef = MetricDef {
    name: "logpipe_cdc_source_lag_seconds",
    help: "Age of the newest binlog event a CDC source has read (its commit time to now); 0 while the binlog is idle, by source.",
    kind: MetricType::Gauge,
    labels: &["source"],
};
pub static SNAPSHOT_ROWS: MetricDef = MetricDef {
    name: "logpipe_cdc_snapshot_rows",
    help: "Rows of the table copied by the running or last snapshot, and the table's row estimate, by source, table and what (copied, estimated).",
    kind: MetricType::Gauge,
    labels: &["source", "table", "what"],
};

pub static SNAPSHOT_RUNNING: MetricDef = MetricDef {
    name: "logpipe_cdc_snapshot_running",
    help: "1 while the source copies its tables (the snapshot), 0 once it follows the binlog.",
    kind: MetricType::Gauge,
    labels: &["source"],
};

pub static SCORES: MetricDef = MetricDef {
    name: "logpipe_cdc_scores_total",
    help: "Rows the scoring hook sent to its model service, by sink and outcome (ok, failed after its retries).",
    kind: MetricType::Counter,
    labels: &["sink", "outcome"],
};

pub struct CdcMetrics {
    pub changes_applied: CounterVec,
    pub transactions: CounterVec,
    pub errors: CounterVec,
    pub lag_events: GaugeVec,
    pub lag_seconds: GaugeVec,
    pub source_changes: CounterVec,
    pub source_errors: CounterVec,
    pub source_lag: GaugeVec,
    pub snapshot_rows: GaugeVec,
    pub snapshot_running: GaugeVec,
    pub scores: CounterVec,
}

impl MetricSet for CdcMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.changes_applied,
            &self.transactions,
            &self.errors,
            &self.lag_events,
            &self.lag_seconds,
            &self.source_changes,
            &self.source_errors,
            &self.source_lag,
            &self.snapshot_rows,
            &self.snapshot_running,
            &self.scores,
        ]
    }
}

logpipe_core::metric_set!(pub fn cdc_metrics() -> CdcMetrics = CdcMetrics {
    changes_applied: CounterVec::new(&CHANGES_APPLIED),
    transactions: CounterVec::new(&TRANSACTIONS),
    errors: CounterVec::new(&ERRORS),
    lag_events: GaugeVec::new(&LAG_EVENTS),
    lag_seconds: GaugeVec::new(&LAG_SECONDS),
    source_changes: CounterVec::new(&SOURCE_CHANGES),
    source_errors: CounterVec::new(&SOURCE_ERRORS),
    source_lag: GaugeVec::new(&SOURCE_LAG),
    snapshot_rows: GaugeVec::new(&SNAPSHOT_ROWS),
    snapshot_running: GaugeVec::new(&SNAPSHOT_RUNNING),
    scores: CounterVec::new(&SCORES),
});
