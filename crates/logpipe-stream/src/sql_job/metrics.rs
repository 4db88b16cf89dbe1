//! The streaming SQL jobs' figures, per job (`job_name`: Prometheus keeps
//! `job` for its own scrape jobs).

use logpipe_core::telemetry::{CounterVec, Family, GaugeVec, MetricDef, MetricSet, MetricType};

pub static RECORDS: MetricDef = MetricDef {
    name: "logpipe_sql_job_records_total",
    help: "Records a streaming SQL job counted into its windows (after its WHERE; a record in several hopping windows counts once).",
    kind: MetricType::Counter,
    labels: &["job_name"],
};
pub static WINDOWS_CLOSED: MetricDef = MetricDef {
    name: "logpipe_sql_job_windows_closed_total",
    help: "Rows a streaming SQL job wrote: one per closed window and key.",
    kind: MetricType::Counter,
    labels: &["job_name"],
};
pub static LATE_RECORDS: MetricDef = MetricDef {
    name: "logpipe_sql_job_late_records_total",
    help: "Records that arrived after every window they fall in had closed (in the lake, not in the job's rows).",
    kind: MetricType::Counter,
    labels: &["job_name"],
};
pub static OPEN_WINDOWS: MetricDef = MetricDef {
    name: "logpipe_sql_job_open_windows",
    help: "Windows and keys a streaming SQL job holds open (its state).",
    kind: MetricType::Gauge,
    labels: &["job_name"],
};
pub static EVENT_TIME: MetricDef = MetricDef {
    name: "logpipe_sql_job_event_time_seconds",
    help: "A streaming SQL job's event clock (Unix time): windows ending before it minus the lateness are closed.",
    kind: MetricType::Gauge,
    labels: &["job_name"],
};
pub static ALERTS: MetricDef = MetricDef {
    name: "logpipe_sql_job_alerts_total",
    help: "Alerts a streaming SQL job's `-- alert:` rules raised, by rule and state (FIRING, RESOLVED).",
    kind: MetricType::Counter,
    labels: &["job_name", "rule", "state"],
};
pub static ALERTS_FIRING: MetricDef = MetricDef {
    name: "logpipe_sql_job_alerts_firing",
    help: "Incidents of a streaming SQL job's alert rules firing now.",
    kind: MetricType::Gauge,
    labels: &["job_name"],
};

pub struct SqlJobMetrics {
    pub records: CounterVec,
    pub windows_closed: CounterVec,
    pub late_records: CounterVec,
    pub open_windows: GaugeVec,
    pub event_time_seconds: GaugeVec,
    pub alerts: CounterVec,
    pub alerts_firing: GaugeVec,
}

impl MetricSet for SqlJobMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.records,
            &self.windows_closed,
            &self.late_records,
            &self.open_windows,
            &self.event_time_seconds,
            &self.alerts,
            &self.alerts_firing,
        ]
    }
}

logpipe_core::metric_set!(pub fn sql_job_metrics() -> SqlJobMetrics = SqlJobMetrics {
    records: CounterVec::new(&RECORDS),
    windows_closed: CounterVec::new(&WINDOWS_CLOSED),
    late_records: CounterVec::new(&LATE_RECORDS),
    open_windows: GaugeVec::new(&OPEN_WINDOWS),
    event_time_seconds: GaugeVec::new(&EVENT_TIME),
    alerts: CounterVec::new(&ALERTS),
    alerts_firing: GaugeVec::new(&ALERTS_FIRING),
});
