//! `[windows]`: the window aggregator (SPEC §1.5).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[windows]`: the window aggregator (SPEC §1.5).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Run the window job inside `logpipe up`.
    pub enabled: bool,
    /// Tumbling window length.
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// How long after a window's end its records are still counted; later
    /// records reach the lake but not the window (`logpipe_window_late_records_total`).
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// With no new log record for this long, event time follows the clock
    /// so the last windows close and silent services are noticed.
    #[serde(with = "humantime_serde")]
    pub idle_close: Duration,
    /// Whether the collector gives each log record its window fields as a
    /// record header, so the window job need not parse the JSON again.
    /// Unset: on with the embedded bus, off with Kafka, where librdkafka
    /// allocates for every header on both sides and that cost more than
    /// the parse it saves (docs/benchmarks/log.md, session 5).
    pub summary_header: Option<bool>,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            enabled: true,
            size: Duration::from_secs(5),
            allowed_lateness: Duration::from_secs(10),
            idle_close: Duration::from_secs(30),
            summary_header: None,
        }
    }
}

impl WindowsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.size < Duration::from_millis(100) {
            return invalid("windows.size", "must be at least 100ms");
        }
        if self.idle_close.is_zero() {
            return invalid("windows.idle_close", "must be more than 0");
        }
        Ok(())
    }
}
