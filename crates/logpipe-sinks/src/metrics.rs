//! The sinks' figures.

use logpipe_core::telemetry::{Counter, Family, MetricDef, MetricSet, MetricType};

pub static POSTGRES_ROWS_WRITTEN: MetricDef = MetricDef {
    name: "logpipe_postgres_rows_written_total",
    help: "Rows written to PostgreSQL (window upserts, reports, job runs).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static POSTGRES_ERRORS: MetricDef = MetricDef {
    name: "logpipe_postgres_errors_total",
    help: "Failed PostgreSQL writes (window writes are retried).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static WEBHOOK_SENT: MetricDef = MetricDef {
    name: "logpipe_alert_webhook_sent_total",
    help: "Alert notifications delivered to the webhook.",
    kind: MetricType::Counter,
    labels: &[],
};
pub static WEBHOOK_ERRORS: MetricDef = MetricDef {
    name: "logpipe_alert_webhook_errors_total",
    help: "Failed webhook deliveries (each is retried).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static ROWS_WEBHOOK_SENT: MetricDef = MetricDef {
    name: "logpipe_job_webhook_posts_total",
    help: "Posts of a job's rows (a streaming step or a batch period) its webhook took.",
    kind: MetricType::Counter,
    labels: &[],
};
pub static ROWS_WEBHOOK_ERRORS: MetricDef = MetricDef {
    name: "logpipe_job_webhook_errors_total",
    help: "Posts of a job's rows its webhook refused or did not answer (each is retried).",
    kind: MetricType::Counter,
    labels: &[],
};

pub struct SinkMetrics {
    pub postgres_rows_written: Counter,
    pub postgres_errors: Counter,
    pub webhook_sent: Counter,
    pub webhook_errors: Counter,
    pub rows_webhook_sent: Counter,
    pub rows_webhook_errors: Counter,
}

impl MetricSet for SinkMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.postgres_rows_written,
            &self.postgres_errors,
            &self.webhook_sent,
            &self.webhook_errors,
            &self.rows_webhook_sent,
            &self.rows_webhook_errors,
        ]
    }
}

logpipe_core::metric_set!(pub fn sink_metrics() -> SinkMetrics = SinkMetrics {
    postgres_rows_written: Counter::new(&POSTGRES_ROWS_WRITTEN),
    postgres_errors: Counter::new(&POSTGRES_ERRORS),
    webhook_sent: Counter::new(&WEBHOOK_SENT),
    webhook_errors: Counter::new(&WEBHOOK_ERRORS),
    rows_webhook_sent: Counter::new(&ROWS_WEBHOOK_SENT),
    rows_webhook_errors: Counter::new(&ROWS_WEBHOOK_ERRORS),
});
