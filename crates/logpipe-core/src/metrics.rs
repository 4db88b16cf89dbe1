//! Pipeline metrics: one process-wide set of atomic counters and gauges,
//! rendered in the Prometheus text exposition format at `/metrics`.
//!
//! Names are constants here so that dashboards, alert rules and docs refer to
//! one spelling. Labels are low-cardinality only (record kind / topic).

use std::fmt::Write as _;
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
        let text = metrics.render();
        assert!(text.contains("logpipe_collector_records_accepted_total{topic=\"logs.raw\"} 3"));
        assert!(text.contains("logpipe_bus_consumer_lag_records{topic=\"events.activity\"} 7"));
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "bad sample line {line}");
        }
    }
}
