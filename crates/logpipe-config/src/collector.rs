//! `[collector]`: the HTTP collector, the source of records from clients.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[collector]`: the HTTP ingest endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Longest string field in a record; longer rejects that record.
    pub max_field_bytes: usize,
    /// How far in the future a record's timestamp may lie.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// `Retry-After` sent with 503 when the bus cannot take more.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            // 16 MiB: ~50,000 seed-size records, far above a sane batch,
            // small enough that a hostile client cannot balloon memory.
            max_body_bytes: 16 * 1024 * 1024,
            max_field_bytes: 64 * 1024,
            max_future_skew: Duration::from_secs(24 * 3600),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl CollectorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return invalid("collector.max_body_bytes", "must be at least 1024");
        }
        if self.max_field_bytes == 0 {
            return invalid("collector.max_field_bytes", "must be at least 1");
        }
        Ok(())
    }
}
