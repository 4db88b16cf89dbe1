//! The built-in generator's figures.

use logpipe_core::telemetry::{Counter, CounterVec, Family, MetricDef, MetricSet, MetricType};

pub static RECORDS_SENT: MetricDef = MetricDef {
    name: "logpipe_generator_records_sent_total",
    help: "Records sent by the built-in generator and acknowledged.",
    kind: MetricType::Counter,
    labels: &["topic"],
};
pub static SEND_RETRIES: MetricDef = MetricDef {
    name: "logpipe_generator_send_retries_total",
    help: "Generator sends that failed and were retried.",
    kind: MetricType::Counter,
    labels: &[],
};

pub struct GeneratorMetrics {
    pub records_sent: CounterVec,
    pub send_retries: Counter,
}

impl MetricSet for GeneratorMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![&self.records_sent, &self.send_retries]
    }
}

logpipe_core::metric_set!(pub fn generator_metrics() -> GeneratorMetrics = {
    let metrics = GeneratorMetrics {
        records_sent: CounterVec::new(&RECORDS_SENT),
        send_retries: Counter::new(&SEND_RETRIES),
    };
    for kind in logpipe_core::RecordKind::ALL {
        metrics.records_sent.touch(&[kind.topic()]);
    }
    metrics
});
