//! Pipeline metrics: one process-wide set of atomic counters and gauges,
//! rendered in the Prometheus text exposition format at `/metrics`.
//!
//! Names are constants here so that dashboards, alert rules and docs refer to
//! one spelling. Labels are low-cardinality only (record kind / topic).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::record::RecordKind;

/// Per record kind (`logs`, `events`) counter.
#[derive(Default)]
pub struct PerKind([AtomicU64; 2]);

impl PerKind {
    pub fn add(&self, kind: RecordKind, value: u64) {
        self.0[kind.index()].fetch_add(value, Ordering::Relaxed);
    }

    pub fn get(&self, kind: RecordKind) -> u64 {
        self.0[kind.index()].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        RecordKind::ALL.iter().map(|kind| self.get(*kind)).sum()
    }
}

/// Per record kind gauge.
#[derive(Default)]
pub struct PerKindGauge([AtomicI64; 2]);

impl PerKindGauge {
    pub fn set(&self, kind: RecordKind, value: i64) {
        self.0[kind.index()].store(value, Ordering::Relaxed);
    }

    pub fn get(&self, kind: RecordKind) -> i64 {
        self.0[kind.index()].load(Ordering::Relaxed)
    }
}

/// Every metric the pipeline exports.
#[derive(Default)]
pub struct Metrics {
    /// Records accepted by the collector and durable on the bus.
    pub collector_records_accepted: PerKind,
    /// Records refused by validation at the collector.
    pub collector_records_rejected: PerKind,
    /// Requests refused whole: 400 body, 413 too large, 503 busy.
    pub collector_requests_bad_body: AtomicU64,
    pub collector_requests_too_large: AtomicU64,
    pub collector_requests_busy: AtomicU64,
    /// Records appended to the bus.
    pub bus_records_appended: PerKind,
    /// fsync calls made by the bus (group commits).
    pub bus_fsyncs: AtomicU64,
    /// Records on the bus not yet committed to the lake.
    pub bus_consumer_lag: PerKindGauge,
    /// Rows committed to the lake.
    pub lake_rows_committed: PerKind,
    /// Parquet files committed to the lake.
    pub lake_files_committed: PerKind,
    /// Records on the bus that failed validation in the lake job (written by
    /// a foreign producer): counted and logged, never written.
    pub lake_records_invalid: PerKind,
    /// Records deleted by bus retention before they reached the lake
    /// (only with `lake.on_data_loss = "skip_ahead"`).
    pub lake_records_lost: PerKind,
    /// Lake commits (one per flush).
    pub lake_commits: AtomicU64,
    /// Records sent by the built-in generator and acknowledged.
    pub generator_records_sent: PerKind,
    /// Generator sends that failed and were retried.
    pub generator_send_retries: AtomicU64,
    /// Window aggregator, alerts, sinks and batch jobs.
    pub analytics: Mutex<Analytics>,
}

/// The latest closed window of one service (the gauges of
/// `logpipe_window_*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowGauges {
    pub window_start_seconds: f64,
    pub records: u64,
    pub error_rate: f64,
    /// p50, p95, p99 of `response_time_ms` (absent: no latencies in the window).
    pub latency_ms: Option<[f64; 3]>,
}

/// The runs of one batch job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobRunGauges {
    pub succeeded: u64,
    pub failed: u64,
    pub last_duration_seconds: f64,
    pub last_rows: u64,
    pub last_success: bool,
}

/// Figures with labels known only at run time (service names, rules, jobs).
#[derive(Debug, Default)]
pub struct Analytics {
    pub windows: BTreeMap<String, WindowGauges>,
    pub windows_closed: u64,
    pub late_records: u64,
    /// (rule, state) → alerts published.
    pub alerts: BTreeMap<(String, String), u64>,
    /// Incidents currently firing.
    pub alerts_firing: i64,
    pub postgres_rows_written: u64,
    pub postgres_errors: u64,
    pub webhook_sent: u64,
    pub webhook_errors: u64,
    pub batch: BTreeMap<String, JobRunGauges>,
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

impl Analytics {
    fn render(&self, out: &mut String) {
        gauge_header(
            out,
            "logpipe_window_records",
            "Records of each service in its latest closed window.",
        );
        for (service, w) in &self.windows {
            let _ = writeln!(
                out,
                "logpipe_window_records{{service=\"{service}\"}} {}",
                w.records
            );
        }
        gauge_header(
            out,
            "logpipe_window_error_rate",
            "Share of ERROR records of each service in its latest closed window.",
        );
        for (service, w) in &self.windows {
            let _ = writeln!(
                out,
                "logpipe_window_error_rate{{service=\"{service}\"}} {}",
                w.error_rate
            );
        }
        gauge_header(
            out,
            "logpipe_window_latency_ms",
            "response_time_ms percentiles of each service in its latest closed window.",
        );
        for (service, w) in &self.windows {
            if let Some(latency) = w.latency_ms {
                for (quantile, value) in ["0.5", "0.95", "0.99"].iter().zip(latency) {
                    let _ = writeln!(
                        out,
                        "logpipe_window_latency_ms{{service=\"{service}\",quantile=\"{quantile}\"}} {value}"
                    );
                }
            }
        }
        gauge_header(
            out,
            "logpipe_window_start_seconds",
            "Start (Unix time) of each service's latest closed window.",
        );
        for (service, w) in &self.windows {
            let _ = writeln!(
                out,
                "logpipe_window_start_seconds{{service=\"{service}\"}} {}",
                w.window_start_seconds
            );
        }
        counter(
            out,
            "logpipe_windows_closed_total",
            "Windows closed (one per service and window).",
            self.windows_closed,
        );
        counter(
            out,
            "logpipe_window_late_records_total",
            "Log records that arrived after their window closed (they are in the lake, not in a window).",
            self.late_records,
        );
        let _ = writeln!(
            out,
            "# HELP logpipe_alerts_total Alerts published, by rule and state.\n# TYPE logpipe_alerts_total counter"
        );
        for ((rule, state), value) in &self.alerts {
            let _ = writeln!(
                out,
                "logpipe_alerts_total{{rule=\"{rule}\",state=\"{state}\"}} {value}"
            );
        }
        gauge_header(out, "logpipe_alerts_firing", "Incidents currently firing.");
        let _ = writeln!(out, "logpipe_alerts_firing {}", self.alerts_firing);
        counter(
            out,
            "logpipe_postgres_rows_written_total",
            "Rows written to PostgreSQL (window upserts, reports, job runs).",
            self.postgres_rows_written,
        );
        counter(
            out,
            "logpipe_postgres_errors_total",
            "Failed PostgreSQL writes (window writes are retried).",
            self.postgres_errors,
        );
        counter(
            out,
            "logpipe_alert_webhook_sent_total",
            "Alert notifications delivered to the webhook.",
            self.webhook_sent,
        );
        counter(
            out,
            "logpipe_alert_webhook_errors_total",
            "Failed webhook deliveries (each is retried).",
            self.webhook_errors,
        );
        let _ = writeln!(
            out,
            "# HELP logpipe_batch_runs_total Batch job runs, by job and status.\n# TYPE logpipe_batch_runs_total counter"
        );
        for (job, run) in &self.batch {
            let _ = writeln!(
                out,
                "logpipe_batch_runs_total{{job=\"{job}\",status=\"succeeded\"}} {}\n\
                 logpipe_batch_runs_total{{job=\"{job}\",status=\"failed\"}} {}",
                run.succeeded, run.failed
            );
        }
        gauge_header(
            out,
            "logpipe_batch_last_duration_seconds",
            "Duration of each batch job's last run.",
        );
        for (job, run) in &self.batch {
            let _ = writeln!(
                out,
                "logpipe_batch_last_duration_seconds{{job=\"{job}\"}} {}",
                run.last_duration_seconds
            );
        }
        gauge_header(
            out,
            "logpipe_batch_last_rows",
            "Rows written by each batch job's last run.",
        );
        for (job, run) in &self.batch {
            let _ = writeln!(
                out,
                "logpipe_batch_last_rows{{job=\"{job}\"}} {}",
                run.last_rows
            );
        }
        gauge_header(
            out,
            "logpipe_batch_last_success",
            "1 when each batch job's last run succeeded.",
        );
        for (job, run) in &self.batch {
            let _ = writeln!(
                out,
                "logpipe_batch_last_success{{job=\"{job}\"}} {}",
                u8::from(run.last_success)
            );
        }
    }
}

/// Locks the analytics figures (a poisoned lock still holds valid figures).
pub fn analytics() -> std::sync::MutexGuard<'static, Analytics> {
    metrics()
        .analytics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);
    &METRICS
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn per_kind(out: &mut String, name: &str, help: &str, label: &str, values: &PerKind) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for kind in RecordKind::ALL {
        let value = values.get(kind);
        let label_value = if label == "topic" {
            kind.topic()
        } else {
            kind.table()
        };
        let _ = writeln!(out, "{name}{{{label}=\"{label_value}\"}} {value}");
    }
}

impl Metrics {
    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        per_kind(
            &mut out,
            "logpipe_collector_records_accepted_total",
            "Records accepted by the collector and durable on the bus.",
            "topic",
            &self.collector_records_accepted,
        );
        per_kind(
            &mut out,
            "logpipe_collector_records_rejected_total",
            "Records refused by validation at the collector.",
            "topic",
            &self.collector_records_rejected,
        );
        let _ = writeln!(
            out,
            "# HELP logpipe_collector_requests_refused_total Requests refused whole, by reason.\n\
             # TYPE logpipe_collector_requests_refused_total counter\n\
             logpipe_collector_requests_refused_total{{reason=\"bad_body\"}} {}\n\
             logpipe_collector_requests_refused_total{{reason=\"too_large\"}} {}\n\
             logpipe_collector_requests_refused_total{{reason=\"busy\"}} {}",
            load(&self.collector_requests_bad_body),
            load(&self.collector_requests_too_large),
            load(&self.collector_requests_busy),
        );
        per_kind(
            &mut out,
            "logpipe_bus_records_appended_total",
            "Records appended to the bus.",
            "topic",
            &self.bus_records_appended,
        );
        counter(
            &mut out,
            "logpipe_bus_fsyncs_total",
            "fsync calls made by the embedded bus (one per group commit).",
            load(&self.bus_fsyncs),
        );
        let _ = writeln!(
            out,
            "# HELP logpipe_bus_consumer_lag_records Records on the bus not yet committed to the lake.\n\
             # TYPE logpipe_bus_consumer_lag_records gauge"
        );
        for kind in RecordKind::ALL {
            let _ = writeln!(
                out,
                "logpipe_bus_consumer_lag_records{{topic=\"{}\"}} {}",
                kind.topic(),
                self.bus_consumer_lag.get(kind)
            );
        }
        per_kind(
            &mut out,
            "logpipe_lake_rows_committed_total",
            "Rows committed to the Parquet lake.",
            "table",
            &self.lake_rows_committed,
        );
        per_kind(
            &mut out,
            "logpipe_lake_files_committed_total",
            "Parquet files committed to the lake.",
            "table",
            &self.lake_files_committed,
        );
        per_kind(
            &mut out,
            "logpipe_lake_records_invalid_total",
            "Records read from the bus that failed validation and were not written.",
            "table",
            &self.lake_records_invalid,
        );
        per_kind(
            &mut out,
            "logpipe_lake_records_lost_total",
            "Records deleted by bus retention before they reached the lake.",
            "table",
            &self.lake_records_lost,
        );
        counter(
            &mut out,
            "logpipe_lake_commits_total",
            "Lake commits (one per flush).",
            load(&self.lake_commits),
        );
        per_kind(
            &mut out,
            "logpipe_generator_records_sent_total",
            "Records sent by the built-in generator and acknowledged.",
            "topic",
            &self.generator_records_sent,
        );
        counter(
            &mut out,
            "logpipe_generator_send_retries_total",
            "Generator sends that failed and were retried.",
            load(&self.generator_send_retries),
        );
        self.analytics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let metrics = Metrics::default();
        metrics.collector_records_accepted.add(RecordKind::Log, 3);
        metrics.bus_consumer_lag.set(RecordKind::Event, 7);
        {
            let mut analytics = metrics.analytics.lock().unwrap();
            analytics.windows.insert(
                "api".into(),
                WindowGauges {
                    records: 5,
                    latency_ms: Some([1.0, 2.0, 3.0]),
                    ..WindowGauges::default()
                },
            );
            analytics
                .batch
                .insert("daily_report".into(), JobRunGauges::default());
            analytics
                .alerts
                .insert(("HighErrorRate".into(), "FIRING".into()), 1);
        }
        let text = metrics.render();
        assert!(text.contains("logpipe_collector_records_accepted_total{topic=\"logs.raw\"} 3"));
        assert!(text.contains("logpipe_bus_consumer_lag_records{topic=\"events.activity\"} 7"));
        assert!(text.contains("logpipe_window_latency_ms{service=\"api\",quantile=\"0.95\"} 2"));
        assert!(text.contains("logpipe_alerts_total{rule=\"HighErrorRate\",state=\"FIRING\"} 1"));
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "bad sample line {line}");
        }
    }
}
