//! Histograms: how long requests and commits take, as Prometheus buckets,
//! so `histogram_quantile` gives a p95 over any set of processes (a gauge
//! of a percentile cannot be aggregated across processes).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Family, MetricDef, Series, write_sample};

/// Bucket bounds in seconds for request and commit latency: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One label set's observations: a count per bucket (not cumulative; the
/// rendering adds them up), the sum and the count.
struct Cells {
    buckets: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Cells {
    fn new(bounds: usize) -> Cells {
        Cells {
            buckets: (0..bounds).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, bounds: &[f64], value: f64) {
        if let Some(bucket) = bounds.iter().position(|bound| value <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A histogram per label set, with fixed bucket bounds.
pub struct HistogramVec {
    def: &'static MetricDef,
    bounds: &'static [f64],
    series: Series<Cells>,
}

impl HistogramVec {
    pub const fn new(def: &'static MetricDef, bounds: &'static [f64]) -> HistogramVec {
        HistogramVec {
            def,
            bounds,
            series: Series::new(),
        }
    }

    /// Adds one observation (seconds, for the latency buckets).
    pub fn observe(&self, labels: &[&str], value: f64) {
        self.with(labels, |cells| cells.observe(self.bounds, value));
    }

    /// Shows the series (all zero) before anything is observed.
    pub fn touch(&self, labels: &[&str]) {
        self.with(labels, |_| ());
    }

    /// Observations of one label set.
    pub fn count(&self, labels: &[&str]) -> u64 {
        self.with(labels, |cells| cells.count.load(Ordering::Relaxed))
    }

    fn with<R>(&self, labels: &[&str], f: impl Fn(&Cells) -> R) -> R {
        self.series
            .with(labels, || Cells::new(self.bounds.len()), f)
    }

    fn sorted_rows(&self) -> Vec<(Vec<String>, Vec<u64>, f64, u64)> {
        self.series
            .map_sorted(|cells| {
                (
                    cells
                        .buckets
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .collect(),
                    f64::from_bits(cells.sum_bits.load(Ordering::Relaxed)),
                    cells.count.load(Ordering::Relaxed),
                )
            })
            .into_iter()
            .map(|(labels, (buckets, sum, count))| (labels, buckets, sum, count))
            .collect()
    }
}

impl Family for HistogramVec {
    fn def(&self) -> &'static MetricDef {
        self.def
    }

    fn samples(&self) -> Vec<(Vec<String>, f64)> {
        self.sorted_rows()
            .into_iter()
            .map(|(labels, _, _, count)| (labels, count as f64))
            .collect()
    }

    fn write_samples(&self, out: &mut String) {
        let name = self.def.name;
        let labels = self.def.labels;
        for (values, buckets, sum, count) in self.sorted_rows() {
            let mut cumulative = 0;
            for (bound, in_bucket) in self.bounds.iter().zip(buckets) {
                cumulative += in_bucket;
                let le = bound.to_string();
                write_sample(
                    out,
                    &format!("{name}_bucket"),
                    labels,
                    &values,
                    Some(&le),
                    cumulative as f64,
                );
            }
            write_sample(
                out,
                &format!("{name}_bucket"),
                labels,
                &values,
                Some("+Inf"),
                count as f64,
            );
            write_sample(out, &format!("{name}_sum"), labels, &values, None, sum);
            write_sample(
                out,
                &format!("{name}_count"),
                labels,
                &values,
                None,
                count as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{MetricSet, MetricType, registry};

    static SECONDS: MetricDef = MetricDef {
        name: "test_request_duration_seconds",
        help: "Request time.",
        kind: MetricType::Histogram,
        labels: &["route"],
    };

    struct Set {
        seconds: HistogramVec,
    }

    impl MetricSet for Set {
        fn families(&self) -> Vec<&dyn Family> {
            vec![&self.seconds]
        }
    }

    crate::metric_set!(fn set() -> Set = Set {
        seconds: HistogramVec::new(&SECONDS, &[0.1, 1.0]),
    });

    #[test]
    fn buckets_are_cumulative_with_sum_count_and_inf() {
        let set = set();
        set.seconds.observe(&["logs"], 0.05);
        set.seconds.observe(&["logs"], 0.5);
        set.seconds.observe(&["logs"], 7.0);
        set.seconds.touch(&["events"]);
        let text = registry().render();
        for line in [
            "# TYPE test_request_duration_seconds histogram",
            "test_request_duration_seconds_bucket{route=\"logs\",le=\"0.1\"} 1\n",
            "test_request_duration_seconds_bucket{route=\"logs\",le=\"1\"} 2\n",
            "test_request_duration_seconds_bucket{route=\"logs\",le=\"+Inf\"} 3\n",
            "test_request_duration_seconds_sum{route=\"logs\"} 7.55\n",
            "test_request_duration_seconds_count{route=\"logs\"} 3\n",
            "test_request_duration_seconds_count{route=\"events\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(set.seconds.count(&["logs"]), 3);
        assert_eq!(
            registry().sum("test_request_duration_seconds", |_| true),
            3.0
        );
    }
}
