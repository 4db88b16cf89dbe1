//! The CDC sinks' figures, labelled by sink (`[[cdc.sinks]] name`).

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

pub struct CdcMetrics {
    pub changes_applied: CounterVec,
    pub transactions: CounterVec,
    pub errors: CounterVec,
    pub lag_events: GaugeVec,
    pub lag_seconds: GaugeVec,
}

impl MetricSet for CdcMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.changes_applied,
            &self.transactions,
            &self.errors,
            &self.lag_events,
            &self.lag_seconds,
        ]
    }
}

logpipe_core::metric_set!(pub fn cdc_metrics() -> CdcMetrics = CdcMetrics {
    changes_applied: CounterVec::new(&CHANGES_APPLIED),
    transactions: CounterVec::new(&TRANSACTIONS),
    errors: CounterVec::new(&ERRORS),
    lag_events: GaugeVec::new(&LAG_EVENTS),
    lag_seconds: GaugeVec::new(&LAG_SECONDS),
});
