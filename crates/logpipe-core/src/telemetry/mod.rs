//! Metrics: typed families declared by the component that emits them, one
//! process-wide registry that renders them at `/metrics`, and a catalog of
//! every name for docs, dashboards and alert rules.
//!
//! A component declares its figures in its own `metrics.rs`:
//!
//! ```
//! use logpipe_core::telemetry::{CounterVec, Family, MetricDef, MetricSet, MetricType};
//!
//! pub struct Collector {
//!     pub accepted: CounterVec,
//! }
//!
//! pub static ACCEPTED: MetricDef = MetricDef {
//!     name: "logpipe_collector_records_accepted_total",
//!     help: "Records accepted by the collector and durable on the bus.",
//!     kind: MetricType::Counter,
//!     labels: &["topic"],
//! };
//!
//! impl MetricSet for Collector {
//!     fn families(&self) -> Vec<&dyn Family> {
//!         vec![&self.accepted]
//!     }
//! }
//!
//! logpipe_core::metric_set!(pub fn collector() -> Collector = Collector {
//!     accepted: CounterVec::new(&ACCEPTED),
//! });
//!
//! collector().accepted.add(&["logs.raw"], 3);
//! assert!(logpipe_core::telemetry::registry().render().contains(
//!     "logpipe_collector_records_accepted_total{topic=\"logs.raw\"} 3"
//! ));
//! ```
//!
//! The first call of `collector()` registers the set; a role calls it at
//! start so its families show (at zero) before anything happened. Names
//! follow Prometheus conventions: counters end in `_total`, labels stay
//! low-cardinality (topic, table, service, rule, job; never request ids).

mod histogram;
pub mod process;

pub use histogram::{HistogramVec, LATENCY_BUCKETS};

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// A metric family's name, help text, type and label names: the catalog
/// entry docs and dashboards are checked against.
#[derive(Debug, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub labels: &'static [&'static str],
}

/// One metric family with its samples.
pub trait Family: Send + Sync {
    fn def(&self) -> &'static MetricDef;
    /// Each sample's label values (in [`MetricDef::labels`] order) and value
    /// (a histogram's: its observation count per label set).
    fn samples(&self) -> Vec<(Vec<String>, f64)>;
    /// Writes the sample lines in the exposition format (a histogram
    /// writes its buckets, sum and count).
    fn write_samples(&self, out: &mut String) {
        for (values, value) in self.samples() {
            write_sample(
                out,
                self.def().name,
                self.def().labels,
                &values,
                None,
                value,
            );
        }
    }
}

/// The families one component declares.
pub trait MetricSet: Send + Sync + 'static {
    fn families(&self) -> Vec<&dyn Family>;
}

/// Declares `fn NAME() -> &'static TYPE`, built from `INIT` on first use
/// and then registered in the process-wide [`registry`].
#[macro_export]
macro_rules! metric_set {
    ($vis:vis fn $get:ident() -> $ty:ty = $init:expr $(;)?) => {
        $vis fn $get() -> &'static $ty {
            static SET: std::sync::LazyLock<$ty> = std::sync::LazyLock::new(|| $init);
            static REGISTERED: std::sync::Once = std::sync::Once::new();
            REGISTERED.call_once(|| $crate::telemetry::registry().register(&*SET));
            &SET
        }
    };
}

/// A counter without labels.
pub struct Counter {
    def: &'static MetricDef,
    value: AtomicU64,
}

impl Counter {
    pub const fn new(def: &'static MetricDef) -> Counter {
        Counter {
            def,
            value: AtomicU64::new(0),
        }
    }

    pub fn add(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    /// For a count kept elsewhere (checkpointed with a job's state): the
    /// counter becomes `total` unless it is already higher, so it never
    /// goes down.
    pub fn raise_to(&self, total: u64) {
        self.value.fetch_max(total, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Family for Counter {
    fn def(&self) -> &'static MetricDef {
        self.def
    }

    fn samples(&self) -> Vec<(Vec<String>, f64)> {
        vec![(Vec::new(), self.get() as f64)]
    }
}

/// A gauge without labels.
pub struct Gauge {
    def: &'static MetricDef,
    bits: AtomicU64,
}

impl Gauge {
    pub const fn new(def: &'static MetricDef) -> Gauge {
        Gauge {
            def,
            bits: AtomicU64::new(0),
        }
    }

    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

impl Family for Gauge {
    fn def(&self) -> &'static MetricDef {
        self.def
    }

    fn samples(&self) -> Vec<(Vec<String>, f64)> {
        vec![(Vec::new(), self.get())]
    }
}

/// Cells by label set. Label sets are few (low cardinality), so a scan of
/// a short vector under a read lock beats hashing, and an existing series
/// is updated without allocating. `C` is an atomic value, or a histogram's
/// buckets.
pub(crate) struct Series<C> {
    rows: RwLock<Vec<(Box<[String]>, C)>>,
}

impl<C> Series<C> {
    pub(crate) const fn new() -> Series<C> {
        Series {
            rows: RwLock::new(Vec::new()),
        }
    }

    /// `f` of the cell of `labels`, made by `init` the first time.
    pub(crate) fn with<R>(&self, labels: &[&str], init: impl Fn() -> C, f: impl Fn(&C) -> R) -> R {
        let matches = |row: &(Box<[String]>, C)| {
            row.0.len() == labels.len() && row.0.iter().zip(labels).all(|(a, b)| a == b)
        };
        {
            let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
            if let Some(row) = rows.iter().find(|row| matches(row)) {
                return f(&row.1);
            }
        }
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        if let Some(row) = rows.iter().find(|row| matches(row)) {
            return f(&row.1);
        }
        let label_values: Box<[String]> = labels.iter().map(|l| l.to_string()).collect();
        rows.push((label_values, init()));
        f(&rows[rows.len() - 1].1)
    }

    /// `read` of every cell with its label values, sorted by them.
    pub(crate) fn map_sorted<T>(&self, read: impl Fn(&C) -> T) -> Vec<(Vec<String>, T)> {
        let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(Vec<String>, T)> = rows
            .iter()
            .map(|(labels, cell)| (labels.to_vec(), read(cell)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn retain(&self, keep: impl Fn(&[String]) -> bool) {
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        rows.retain(|(labels, _)| keep(labels));
    }
}

impl Series<AtomicU64> {
    fn at(&self, labels: &[&str], f: impl Fn(&AtomicU64) -> u64) -> u64 {
        self.with(labels, || AtomicU64::new(0), f)
    }

    fn samples(&self, decode: impl Fn(u64) -> f64) -> Vec<(Vec<String>, f64)> {
        self.map_sorted(|value| decode(value.load(Ordering::Relaxed)))
    }
}

/// A counter per label set.
pub struct CounterVec {
    def: &'static MetricDef,
    series: Series<AtomicU64>,
}

impl CounterVec {
    pub const fn new(def: &'static MetricDef) -> CounterVec {
        CounterVec {
            def,
            series: Series::new(),
        }
    }

    pub fn add(&self, labels: &[&str], value: u64) {
        self.series
            .at(labels, |v| v.fetch_add(value, Ordering::Relaxed));
    }

    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    /// Shows the series at zero before anything is counted.
    pub fn touch(&self, labels: &[&str]) {
        self.add(labels, 0);
    }

    pub fn get(&self, labels: &[&str]) -> u64 {
        self.series.at(labels, |v| v.load(Ordering::Relaxed))
    }

    /// The sum over every label set.
    pub fn total(&self) -> u64 {
        self.series
            .samples(|v| v as f64)
            .iter()
            .map(|(_, v)| *v as u64)
            .sum()
    }
}

impl Family for CounterVec {
    fn def(&self) -> &'static MetricDef {
        self.def
    }

    fn samples(&self) -> Vec<(Vec<String>, f64)> {
        self.series.samples(|v| v as f64)
    }
}

/// A gauge per label set.
pub struct GaugeVec {
    def: &'static MetricDef,
    series: Series<AtomicU64>,
}

impl GaugeVec {
    pub const fn new(def: &'static MetricDef) -> GaugeVec {
        GaugeVec {
            def,
            series: Series::new(),
        }
    }

    pub fn set(&self, labels: &[&str], value: f64) {
        self.series.at(labels, |v| {
            v.store(value.to_bits(), Ordering::Relaxed);
            0
        });
    }

    pub fn get(&self, labels: &[&str]) -> f64 {
        f64::from_bits(self.series.at(labels, |v| v.load(Ordering::Relaxed)))
    }

    /// The sum over every label set.
    pub fn total(&self) -> f64 {
        self.samples().iter().map(|(_, v)| v).sum()
    }

    /// Drops the series whose label values `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&[String]) -> bool) {
        self.series.retain(keep);
    }
}

impl Family for GaugeVec {
    fn def(&self) -> &'static MetricDef {
        self.def
    }

    fn samples(&self) -> Vec<(Vec<String>, f64)> {
        self.series.samples(f64::from_bits)
    }
}

/// Every registered metric set of the process.
pub struct Registry {
    sets: Mutex<Vec<&'static dyn MetricSet>>,
}

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: Registry = Registry {
        sets: Mutex::new(Vec::new()),
    };
    &REGISTRY
}

impl Registry {
    /// Adds a set (the [`metric_set!`] accessor does this once).
    pub fn register(&self, set: &'static dyn MetricSet) {
        self.sets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(set);
    }

    fn sets(&self) -> Vec<&'static dyn MetricSet> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The catalog entry of every registered family, sorted by name.
    pub fn defs(&self) -> Vec<&'static MetricDef> {
        let mut defs: Vec<&'static MetricDef> = self
            .sets()
            .iter()
            .flat_map(|set| set.families().into_iter().map(|f| f.def()))
            .collect();
        defs.sort_by_key(|def| def.name);
        defs.dedup_by_key(|def| def.name);
        defs
    }

    /// The sum of the samples of family `name` whose label values `keep`
    /// accepts (0 when no such family is registered): figures read by name
    /// from the catalog, so a reader needs no dependency on the component
    /// that counts them.
    pub fn sum(&self, name: &str, keep: impl Fn(&[String]) -> bool) -> f64 {
        self.samples(name)
            .into_iter()
            .filter(|(labels, _)| keep(labels))
            .map(|(_, value)| value)
            .sum()
    }

    /// The samples of family `name` (none when no such family is
    /// registered), each with its label values.
    pub fn samples(&self, name: &str) -> Vec<(Vec<String>, f64)> {
        self.sets()
            .iter()
            .flat_map(|set| set.families())
            .filter(|family| family.def().name == name)
            .flat_map(|family| family.samples())
            .collect()
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        for set in self.sets() {
            for family in set.families() {
                render_family(&mut out, family);
            }
        }
        out
    }
}

fn render_family(out: &mut String, family: &dyn Family) {
    let def = family.def();
    let _ = writeln!(
        out,
        "# HELP {} {}\n# TYPE {} {}",
        def.name,
        def.help,
        def.name,
        def.kind.as_str()
    );
    family.write_samples(out);
}

/// One sample line: `name{label="value",…[,le="…"]} value`.
pub(crate) fn write_sample(
    out: &mut String,
    name: &str,
    labels: &[&str],
    values: &[String],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    if !values.is_empty() || le.is_some() {
        out.push('{');
        for (n, (label, value)) in labels.iter().zip(values).enumerate() {
            if n > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        if let Some(le) = le {
            if !values.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "le=\"{le}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape `\`, `"` and newlines (the exposition format).
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUESTS: MetricDef = MetricDef {
        name: "test_requests_total",
        help: "Requests.",
        kind: MetricType::Counter,
        labels: &["topic", "result"],
    };
    static LATENCY: MetricDef = MetricDef {
        name: "test_latency_ms",
        help: "Latency.",
        kind: MetricType::Gauge,
        labels: &["service"],
    };
    static UP: MetricDef = MetricDef {
        name: "test_up",
        help: "Up.",
        kind: MetricType::Gauge,
        labels: &[],
    };

    struct Set {
        requests: CounterVec,
        latency: GaugeVec,
        up: Gauge,
    }

    impl MetricSet for Set {
        fn families(&self) -> Vec<&dyn Family> {
            vec![&self.requests, &self.latency, &self.up]
        }
    }

    crate::metric_set!(fn set() -> Set = Set {
        requests: CounterVec::new(&REQUESTS),
        latency: GaugeVec::new(&LATENCY),
        up: Gauge::new(&UP),
    });

    #[test]
    fn families_render_as_prometheus_text_with_escaped_labels() {
        let set = set();
        set.requests.add(&["logs.raw", "ok"], 3);
        set.requests.inc(&["logs.raw", "ok"]);
        set.requests.touch(&["events.activity", "ok"]);
        set.latency.set(&["quote\"d\\"], 2.5);
        set.up.set(1.0);
        assert_eq!(set.requests.total(), 4);
        let text = registry().render();
        assert!(
            text.contains("# TYPE test_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("test_requests_total{topic=\"logs.raw\",result=\"ok\"} 4"),
            "{text}"
        );
        assert!(text.contains("test_requests_total{topic=\"events.activity\",result=\"ok\"} 0"));
        assert!(
            text.contains("test_latency_ms{service=\"quote\\\"d\\\\\"} 2.5"),
            "{text}"
        );
        assert!(text.contains("test_up 1\n"), "{text}");
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert_eq!(
                line.rsplit_once(' ').map(|(_, v)| v.parse::<f64>().is_ok()),
                Some(true),
                "bad sample line {line}"
            );
        }
        assert!(registry().defs().iter().any(|def| def.name == "test_up"));
        assert_eq!(registry().sum("test_requests_total", |_| true), 4.0);
        assert_eq!(
            registry().sum("test_requests_total", |labels| labels[0]
                == "events.activity"),
            0.0
        );
    }
}
