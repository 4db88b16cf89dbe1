//! Event-time tumbling windows over log records, and the figures of each
//! (with the mergeable latency [`sketch`]): the state of the window job
//! ([`crate::windows::WindowJob`]).
//!
//! A record at time `t` belongs to the window starting at
//! `floor(t / size) * size` (UTC). The watermark is the event clock minus
//! `allowed_lateness`, where the event clock follows the largest event time
//! seen but only as far as the caller allows ([`WindowAggregator::advance_to`]:
//! the window job holds it at the progress of partitions that still have a
//! backlog, so reading one partition ahead of another does not make the
//! other's records late). A window closes once its end is at or before the
//! watermark, and a record for a closed window is *late*: it is
//! counted in `late_records` (it still reaches the lake through the raw job)
//! and never reopens the window, so a closed window's figures are final.
//! Closing order is deterministic (by window start, then service), which the
//! exactly-once sink will rely on.

use std::collections::BTreeMap;
use std::time::Duration;

use logpipe_config::WindowsConfig;
use logpipe_core::record::Level;

pub use logpipe_core::record::sample::Sample;
use serde::{Deserialize, Serialize};

pub mod sketch;

use sketch::QuantileSketch;

#[derive(Debug, Clone, Copy)]
pub struct WindowOptions {
    /// Window length (the seed's 5 s).
    pub size: Duration,
    /// How long after a window's end records for it are still counted.
    pub allowed_lateness: Duration,
}

impl From<&WindowsConfig> for WindowOptions {
    fn from(config: &WindowsConfig) -> Self {
        WindowOptions {
            size: config.size,
            allowed_lateness: config.allowed_lateness,
        }
    }
}

impl Default for WindowOptions {
    fn default() -> Self {
        WindowOptions::from(&WindowsConfig::default())
    }
}

/// One service's figures within one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceWindow {
    pub count: u64,
    pub by_level: BTreeMap<Level, u64>,
    /// `response_time_ms` of the records that carry it.
    pub latency: QuantileSketch,
    /// Records per status class: index 0 = 1xx … 4 = 5xx.
    pub status_classes: [u64; 5],
}

impl ServiceWindow {
    /// p50, p95 and p99 of `response_time_ms` (`None` without latencies).
    pub fn latency_percentiles(&self) -> [Option<f64>; 3] {
        [0.5, 0.95, 0.99].map(|q| self.latency.quantile(q))
    }

    /// Share of records at ERROR level.
    pub fn error_rate(&self) -> f64 {
        let errors = self.by_level.get(&Level::Error).copied().unwrap_or(0);
        errors as f64 / self.count.max(1) as f64
    }
}

/// A window that will not change any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedWindow {
    pub window_start_micros: i64,
    pub service: String,
    pub figures: ServiceWindow,
}

/// Whether a record was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Counted,
    /// Its window had already closed.
    Late,
}

/// The aggregator's whole state, as the window job checkpoints it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSnapshot {
    /// The event clock.
    pub max_event_micros: Option<i64>,
    /// The largest event time seen (may be ahead of the clock).
    #[serde(default)]
    pub max_seen_micros: Option<i64>,
    pub late_records: u64,
    pub open: Vec<ClosedWindow>,
}

#[derive(Debug, Clone)]
pub struct WindowAggregator {
    size_micros: i64,
    lateness_micros: i64,
    /// The event clock the watermark follows.
    max_event_micros: Option<i64>,
    max_seen_micros: Option<i64>,
    /// Window start → service → figures.
    open: BTreeMap<i64, BTreeMap<String, ServiceWindow>>,
    late_records: u64,
}

impl WindowAggregator {
    pub fn new(options: WindowOptions) -> WindowAggregator {
        WindowAggregator {
            size_micros: (options.size.as_micros() as i64).max(1),
            lateness_micros: options.allowed_lateness.as_micros() as i64,
            max_event_micros: None,
            max_seen_micros: None,
            open: BTreeMap::new(),
            late_records: 0,
        }
    }

    /// Restores a checkpointed state (the options may differ from the run
    /// that wrote it: open windows keep their start).
    pub fn restore(options: WindowOptions, snapshot: WindowSnapshot) -> WindowAggregator {
        let mut aggregator = WindowAggregator::new(options);
        aggregator.max_event_micros = snapshot.max_event_micros;
        aggregator.max_seen_micros = snapshot.max_seen_micros.or(snapshot.max_event_micros);
        aggregator.late_records = snapshot.late_records;
        for window in snapshot.open {
            aggregator
                .open
                .entry(window.window_start_micros)
                .or_default()
                .insert(window.service, window.figures);
        }
        aggregator
    }

    /// The state to checkpoint.
    pub fn snapshot(&self) -> WindowSnapshot {
        WindowSnapshot {
            max_event_micros: self.max_event_micros,
            max_seen_micros: self.max_seen_micros,
            late_records: self.late_records,
            open: into_closed(self.open.clone()),
        }
    }

    pub fn size_micros(&self) -> i64 {
        self.size_micros
    }

    /// Open (service, window) pairs.
    pub fn open_windows(&self) -> usize {
        self.open.values().map(BTreeMap::len).sum()
    }

    /// Moves event time forward by `micros` without a record: when the input
    /// is idle, open windows must still close eventually.
    pub fn advance_idle(&mut self, micros: i64) {
        if let Some(max) = &mut self.max_event_micros {
            *max += micros.max(0);
            self.max_seen_micros = self.max_seen_micros.max(Some(*max));
        }
    }

    /// Moves the event clock up to the largest event time seen, but not
    /// past `limit` (never backwards).
    pub fn advance_to(&mut self, limit: Option<i64>) {
        let Some(seen) = self.max_seen_micros else {
            return;
        };
        let target = limit.map_or(seen, |limit| limit.min(seen));
        self.max_event_micros = self.max_event_micros.max(Some(target));
    }

    /// The largest event time seen.
    pub fn max_seen_micros(&self) -> Option<i64> {
        self.max_seen_micros
    }

    /// Start of the window containing `micros`.
    pub fn window_start(&self, micros: i64) -> i64 {
        micros.div_euclid(self.size_micros) * self.size_micros
    }

    /// Event time up to which every window is complete.
    pub fn watermark_micros(&self) -> Option<i64> {
        self.max_event_micros.map(|max| max - self.lateness_micros)
    }

    pub fn late_records(&self) -> u64 {
        self.late_records
    }

    /// Counts `record` into its window (or as late).
    pub fn observe(&mut self, record: &Sample<'_>) -> Observed {
        let start = self.window_start(record.timestamp_micros);
        if self
            .watermark_micros()
            .is_some_and(|watermark| start + self.size_micros <= watermark)
        {
            self.late_records += 1;
            return Observed::Late;
        }
        self.max_seen_micros = self.max_seen_micros.max(Some(record.timestamp_micros));
        let services = self.open.entry(start).or_default();
        // Look up before inserting: no String allocation per record.
        if !services.contains_key(record.service.as_ref()) {
            services.insert(record.service.as_ref().to_owned(), ServiceWindow::default());
        }
        let window = services
            .get_mut(record.service.as_ref())
            .expect("inserted above");
        window.count += 1;
        *window.by_level.entry(record.level).or_insert(0) += 1;
        if let Some(ms) = record.response_time_ms {
            window.latency.add(ms);
        }
        if let Some(code) = record.status_code {
            let class = (code / 100 - 1).clamp(0, 4) as usize;
            window.status_classes[class] += 1;
        }
        Observed::Counted
    }

    /// Removes and returns the windows the watermark has passed, in order.
    pub fn close_ready(&mut self) -> Vec<ClosedWindow> {
        let Some(watermark) = self.watermark_micros() else {
            return Vec::new();
        };
        // Windows ending at or before the watermark: start <= watermark - size.
        let first_open = watermark - self.size_micros + 1;
        let still_open = self.open.split_off(&first_open);
        into_closed(std::mem::replace(&mut self.open, still_open))
    }

    /// Closes every window (at shutdown, or at the end of a bounded input).
    pub fn close_all(&mut self) -> Vec<ClosedWindow> {
        into_closed(std::mem::take(&mut self.open))
    }
}

fn into_closed(windows: BTreeMap<i64, BTreeMap<String, ServiceWindow>>) -> Vec<ClosedWindow> {
    windows
        .into_iter()
        .flat_map(|(start, services)| {
            services
                .into_iter()
                .map(move |(service, figures)| ClosedWindow {
                    window_start_micros: start,
                    service,
                    figures,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use logpipe_core::{LogRecord, ValidationLimits};

    const T0: i64 = 1_736_645_160_000_000; // 2025-01-12T01:26:00Z, a 5 s boundary

    fn log(offset_ms: i64, service: &str, level: &str, latency: f64, status: i32) -> LogRecord {
        let seconds = (T0 + offset_ms * 1000) as f64 / 1e6;
        let raw = format!(
            r#"{{"timestamp": {seconds}, "level": "{level}", "service": "{service}", "message": "m",
                "metadata": {{"response_time_ms": {latency}, "status_code": {status}}}}}"#
        );
        LogRecord::parse(&raw, &ValidationLimits::now()).unwrap()
    }

    #[test]
    fn records_land_in_their_tumbling_window_and_close_in_order() {
        let mut windows = WindowAggregator::new(WindowOptions {
            size: Duration::from_secs(5),
            allowed_lateness: Duration::from_secs(2),
        });
        for (ms, service, level) in [
            (0, "b", "INFO"),
            (4_999, "a", "ERROR"),
            (1_000, "a", "INFO"),
            (5_000, "a", "INFO"),
        ] {
            assert_eq!(
                windows.observe(&(&log(ms, service, level, 10.0, 200)).into()),
                Observed::Counted
            );
        }
        // Max event time 5.0 s, watermark 3.0 s: the first window (end 5 s) is still open.
        windows.advance_to(None);
        assert!(windows.close_ready().is_empty());
        windows.observe(&(&log(7_000, "a", "INFO", 10.0, 200)).into());
        // A backlogged partition holds the clock at 6 s: nothing closes.
        windows.advance_to(Some(T0 + 6_000_000));
        assert!(windows.close_ready().is_empty());
        windows.advance_to(None);
        let closed = windows.close_ready();
        let keys: Vec<_> = closed
            .iter()
            .map(|w| {
                (
                    w.window_start_micros - T0,
                    w.service.as_str(),
                    w.figures.count,
                )
            })
            .collect();
        assert_eq!(keys, vec![(0, "a", 2), (0, "b", 1)]);
        assert_eq!(closed[0].figures.error_rate(), 0.5);
        // A record for the closed window is late and changes nothing.
        assert_eq!(
            windows.observe(&(&log(100, "a", "ERROR", 10.0, 500)).into()),
            Observed::Late
        );
        assert_eq!(windows.late_records(), 1);
        let rest = windows.close_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].window_start_micros - T0, rest[0].figures.count),
            (5_000_000, 2)
        );
    }

    #[test]
    fn per_service_figures_are_computed() {
        let mut windows = WindowAggregator::new(WindowOptions::default());
        for i in 0..100 {
            let level = if i < 7 { "ERROR" } else { "INFO" };
            let status = if i < 7 {
                503
            } else if i < 10 {
                404
            } else {
                200
            };
            windows.observe(&(&log(i * 10, "api", level, f64::from(i as i32 + 1), status)).into());
        }
        let closed = windows.close_all();
        let figures = &closed[0].figures;
        assert_eq!(figures.count, 100);
        assert!((figures.error_rate() - 0.07).abs() < 1e-12);
        assert_eq!(figures.status_classes, [0, 90, 0, 3, 7]);
        let p95 = figures.latency.quantile(0.95).unwrap();
        assert!((p95 - 95.0).abs() <= 95.0 * 0.01, "p95 {p95}");
        assert_eq!(figures.by_level[&Level::Info], 93);
    }
}
