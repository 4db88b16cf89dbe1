//! Each service's figures within one window (with the mergeable latency
//! [`sketch`]): what the window job's anomaly detector and metrics read
//! from its closed rows ([`crate::windows`]), and the state its commit
//! records held before the job ran SQL (read once, converted).

use std::collections::BTreeMap;

use logpipe_core::record::Level;
use serde::{Deserialize, Serialize};

pub mod sketch;

use sketch::QuantileSketch;

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

/// The window job's state in commit records written before it ran SQL.
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
