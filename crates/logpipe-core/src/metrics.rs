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
    /// Offsets a Kafka broker passed over inside what it returned: a
    /// record read at offset 9 right after offset 5 counts 3.
    pub bus_offsets_skipped: PerKind,
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
    /// Second copies of a record (same id) the raw→lake job dropped: a
    /// client retried a request whose first attempt was stored after all.
    pub lake_records_duplicate: PerKind,
    /// Lake commits (one per flush).
    pub lake_commits: AtomicU64,
    /// Flushes dropped because another group member had already committed
    /// the same records (this process had lost those partitions); the
    /// records are re-read from the newest commit, never written twice.
    pub lake_steps_fenced: AtomicU64,
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
    /// Stream job → times it was started again after the bus failed it.
    pub stream_restarts: BTreeMap<String, u64>,
}

/// One metric family: its header, then one sample per (labels, value).
fn family<V: std::fmt::Display>(
    out: &mut String,
    kind: &str,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn service_label(service: &str) -> String {
    format!("{{service=\"{service}\"}}")
}

fn job_label(job: &str) -> String {
    format!("{{job=\"{job}\"}}")
}

impl Analytics {
    fn render(&self, out: &mut String) {
        let per_service = |out: &mut String, name, help, value: fn(&WindowGauges) -> f64| {
            family(
                out,
                "gauge",
                name,
                help,
                self.windows
                    .iter()
                    .map(|(service, w)| (service_label(service), value(w))),
            );
        };
        per_service(
            out,
            "logpipe_window_records",
            "Records of each service in its latest closed window.",
            |w| w.records as f64,
        );
        per_service(
            out,
            "logpipe_window_error_rate",
            "Share of ERROR records of each service in its latest closed window.",
            |w| w.error_rate,
        );
        family(
            out,
            "gauge",
            "logpipe_window_latency_ms",
            "response_time_ms percentiles of each service in its latest closed window.",
            self.windows.iter().flat_map(|(service, w)| {
                w.latency_ms.into_iter().flat_map(move |latency| {
                    ["0.5", "0.95", "0.99"].into_iter().zip(latency).map(
                        move |(quantile, value)| {
                            (
                                format!("{{service=\"{service}\",quantile=\"{quantile}\"}}"),
                                value,
                            )
                        },
                    )
                })
            }),
        );
        per_service(
            out,
            "logpipe_window_start_seconds",
            "Start (Unix time) of each service's latest closed window.",
            |w| w.window_start_seconds,
        );
        let single = |value: u64| [(String::new(), value)];
        family(
            out,
            "counter",
            "logpipe_windows_closed_total",
            "Windows closed (one per service and window).",
            single(self.windows_closed),
        );
        family(
            out,
            "counter",
            "logpipe_window_late_records_total",
            "Log records that arrived after their window closed (they are in the lake, not in a window).",
            single(self.late_records),
        );
        family(
            out,
            "counter",
            "logpipe_alerts_total",
            "Alerts published, by rule and state.",
            self.alerts.iter().map(|((rule, state), value)| {
                (format!("{{rule=\"{rule}\",state=\"{state}\"}}"), *value)
            }),
        );
        family(
            out,
            "gauge",
            "logpipe_alerts_firing",
            "Incidents currently firing.",
            [(String::new(), self.alerts_firing)],
        );
        for (name, help, value) in [
            (
                "logpipe_postgres_rows_written_total",
                "Rows written to PostgreSQL (window upserts, reports, job runs).",
                self.postgres_rows_written,
            ),
            (
                "logpipe_postgres_errors_total",
                "Failed PostgreSQL writes (window writes are retried).",
                self.postgres_errors,
            ),
            (
                "logpipe_alert_webhook_sent_total",
                "Alert notifications delivered to the webhook.",
                self.webhook_sent,
            ),
            (
                "logpipe_alert_webhook_errors_total",
                "Failed webhook deliveries (each is retried).",
                self.webhook_errors,
            ),
        ] {
            family(out, "counter", name, help, single(value));
        }
        family(
            out,
            "counter",
            "logpipe_stream_job_restarts_total",
            "Times a stream job was started again from its last lake commit after the bus failed it (broker unreachable or too slow).",
            self.stream_restarts
                .iter()
                .map(|(job, restarts)| (job_label(job), *restarts)),
        );
        family(
            out,
            "counter",
            "logpipe_batch_runs_total",
            "Batch job runs, by job and status.",
            self.batch.iter().flat_map(|(job, run)| {
                [("succeeded", run.succeeded), ("failed", run.failed)].map(|(status, value)| {
                    (format!("{{job=\"{job}\",status=\"{status}\"}}"), value)
                })
            }),
        );
        let per_job = |out: &mut String, name, help, value: fn(&JobRunGauges) -> f64| {
            family(
                out,
                "gauge",
                name,
                help,
                self.batch
                    .iter()
                    .map(|(job, run)| (job_label(job), value(run))),
            );
        };
        per_job(
            out,
            "logpipe_batch_last_duration_seconds",
            "Duration of each batch job's last run.",
            |run| run.last_duration_seconds,
        );
        per_job(
            out,
            "logpipe_batch_last_rows",
            "Rows written by each batch job's last run.",
            |run| run.last_rows as f64,
        );
        per_job(
            out,
            "logpipe_batch_last_success",
            "1 when each batch job's last run succeeded.",
            |run| f64::from(u8::from(run.last_success)),
        );
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
        per_kind(
            &mut out,
            "logpipe_bus_offsets_skipped_total",
            "Offsets a Kafka broker passed over between the records it returned: transaction markers and compacted records, or records the broker failed to return.",
            "topic",
            &self.bus_offsets_skipped,
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
        per_kind(
            &mut out,
            "logpipe_lake_records_duplicate_total",
            "Second copies of a retried record (same Idempotency-Key and position) not written to the lake.",
            "table",
            &self.lake_records_duplicate,
        );
        counter(
            &mut out,
            "logpipe_lake_commits_total",
            "Lake commits (one per flush).",
            load(&self.lake_commits),
        );
        counter(
            &mut out,
            "logpipe_lake_steps_fenced_total",
            "Flushes dropped because another consumer-group member committed the same records first.",
            load(&self.lake_steps_fenced),
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
