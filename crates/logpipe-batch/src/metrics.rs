//! The batch jobs' figures.

use std::time::Duration;

use logpipe_core::tables::reports;
use logpipe_core::telemetry::{CounterVec, Family, GaugeVec, MetricDef, MetricSet, MetricType};

pub static RUNS: MetricDef = MetricDef {
    name: "logpipe_batch_runs_total",
    help: "Batch job runs, by job and status (job_name: daily_report, weekly_analysis, service_analysis).",
    kind: MetricType::Counter,
    labels: &["job_name", "status"],
};
pub static LAST_DURATION: MetricDef = MetricDef {
    name: "logpipe_batch_last_duration_seconds",
    help: "Duration of each batch job's last run.",
    kind: MetricType::Gauge,
    labels: &["job_name"],
};
pub static LAST_ROWS: MetricDef = MetricDef {
    name: "logpipe_batch_last_rows",
    help: "Rows written by each batch job's last run.",
    kind: MetricType::Gauge,
    labels: &["job_name"],
};
pub static LAST_SUCCESS: MetricDef = MetricDef {
    name: "logpipe_batch_last_success",
    help: "1 when each batch job's last run succeeded.",
    kind: MetricType::Gauge,
    labels: &["job_name"],
};

pub struct BatchMetrics {
    pub runs: CounterVec,
    pub last_duration_seconds: GaugeVec,
    pub last_rows: GaugeVec,
    pub last_success: GaugeVec,
}

impl MetricSet for BatchMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.runs,
            &self.last_duration_seconds,
            &self.last_rows,
            &self.last_success,
        ]
    }
}

/// The batch jobs' names (each report's table), shown at zero runs from
/// the start so a dashboard lists them before their first run.
const JOBS: [&str; 3] = [
    reports::DAILY_REPORT.name,
    reports::WEEKLY_ANALYSIS.name,
    reports::SERVICE_ANALYSIS.name,
];

logpipe_core::metric_set!(pub fn batch_metrics() -> BatchMetrics = {
    let metrics = BatchMetrics {
        runs: CounterVec::new(&RUNS),
        last_duration_seconds: GaugeVec::new(&LAST_DURATION),
        last_rows: GaugeVec::new(&LAST_ROWS),
        last_success: GaugeVec::new(&LAST_SUCCESS),
    };
    for job in JOBS {
        for status in ["succeeded", "failed"] {
            metrics.runs.touch(&[job, status]);
        }
    }
    metrics
});

impl BatchMetrics {
    /// Records one run of `job`.
    pub fn observe_run(&self, job: &str, duration: Duration, rows: u64, succeeded: bool) {
        for status in ["succeeded", "failed"] {
            self.runs.touch(&[job, status]);
        }
        self.runs
            .inc(&[job, if succeeded { "succeeded" } else { "failed" }]);
        self.last_duration_seconds
            .set(&[job], duration.as_secs_f64());
        self.last_rows.set(&[job], rows as f64);
        self.last_success
            .set(&[job], f64::from(u8::from(succeeded)));
    }
}
