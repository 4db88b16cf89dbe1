//! The window job's figures: each service's latest closed window, windows
//! closed, late records, alerts.

use logpipe_core::telemetry::{
    Counter, CounterVec, Family, Gauge, GaugeVec, MetricDef, MetricSet, MetricType,
};

use crate::aggregate::ClosedWindow;
use crate::alerts::Alert;

pub static WINDOW_RECORDS: MetricDef = MetricDef {
    name: "logpipe_window_records",
    help: "Records of each service in its latest closed window.",
    kind: MetricType::Gauge,
    labels: &["service"],
};
pub static WINDOW_ERROR_RATE: MetricDef = MetricDef {
    name: "logpipe_window_error_rate",
    help: "Share of ERROR records of each service in its latest closed window.",
    kind: MetricType::Gauge,
    labels: &["service"],
};
pub static WINDOW_RESPONSE_TIME: MetricDef = MetricDef {
    name: "logpipe_window_response_time_seconds",
    help: "Percentiles (50, 95, 99) of the response_time_ms field of each service's records in its latest closed window, in seconds.",
    kind: MetricType::Gauge,
    labels: &["service", "percentile"],
};
pub static WINDOW_START: MetricDef = MetricDef {
    name: "logpipe_window_start_seconds",
    help: "Start (Unix time) of each service's latest closed window.",
    kind: MetricType::Gauge,
    labels: &["service"],
};
pub static WINDOWS_CLOSED: MetricDef = MetricDef {
    name: "logpipe_windows_closed_total",
    help: "Windows closed (one per service and window).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static LATE_RECORDS: MetricDef = MetricDef {
    name: "logpipe_window_late_records_total",
    help: "Log records that arrived after their window closed (they are in the lake, not in a window).",
    kind: MetricType::Counter,
    labels: &[],
};
pub static ALERTS: MetricDef = MetricDef {
    name: "logpipe_alerts_total",
    help: "Alerts published, by rule and state.",
    kind: MetricType::Counter,
    labels: &["rule", "state"],
};
pub static ALERTS_FIRING: MetricDef = MetricDef {
    name: "logpipe_alerts_firing",
    help: "Incidents currently firing.",
    kind: MetricType::Gauge,
    labels: &[],
};

pub struct WindowMetrics {
    pub records: GaugeVec,
    pub error_rate: GaugeVec,
    pub response_time_seconds: GaugeVec,
    pub start_seconds: GaugeVec,
    pub windows_closed: Counter,
    pub late_records: Counter,
    pub alerts: CounterVec,
    pub alerts_firing: Gauge,
}

impl MetricSet for WindowMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.records,
            &self.error_rate,
            &self.response_time_seconds,
            &self.start_seconds,
            &self.windows_closed,
            &self.late_records,
            &self.alerts,
            &self.alerts_firing,
        ]
    }
}

logpipe_core::metric_set!(pub fn window_metrics() -> WindowMetrics = WindowMetrics {
    records: GaugeVec::new(&WINDOW_RECORDS),
    error_rate: GaugeVec::new(&WINDOW_ERROR_RATE),
    response_time_seconds: GaugeVec::new(&WINDOW_RESPONSE_TIME),
    start_seconds: GaugeVec::new(&WINDOW_START),
    windows_closed: Counter::new(&WINDOWS_CLOSED),
    late_records: Counter::new(&LATE_RECORDS),
    alerts: CounterVec::new(&ALERTS),
    alerts_firing: Gauge::new(&ALERTS_FIRING),
});

/// The percentile labels of [`WINDOW_RESPONSE_TIME`], in sketch order.
/// Not `quantile`: that label belongs to summaries, and this is a gauge of
/// one window's figures, not an aggregatable distribution.
const PERCENTILES: [&str; 3] = ["50", "95", "99"];

impl WindowMetrics {
    /// Records a committed step: its closed windows and alerts, and the
    /// job's late-record count and firing incidents after it.
    pub fn observe_step(&self, closed: &[ClosedWindow], alerts: &[Alert], late: u64, firing: i64) {
        self.late_records.raise_to(late);
        self.alerts_firing.set(firing as f64);
        self.windows_closed.add(closed.len() as u64);
        for window in closed {
            let service = window.service.as_str();
            let figures = &window.figures;
            self.records.set(&[service], figures.count as f64);
            self.error_rate.set(&[service], figures.error_rate());
            self.start_seconds
                .set(&[service], window.window_start_micros as f64 / 1e6);
            match figures.latency_percentiles() {
                [Some(p50), Some(p95), Some(p99)] => {
                    for (percentile, ms) in PERCENTILES.into_iter().zip([p50, p95, p99]) {
                        self.response_time_seconds
                            .set(&[service, percentile], ms / 1000.0);
                    }
                }
                _ => self
                    .response_time_seconds
                    .retain(|labels| labels[0] != service),
            }
        }
        for alert in alerts {
            self.alerts
                .inc(&[alert.rule.as_str(), alert.state.as_str()]);
        }
    }
}
