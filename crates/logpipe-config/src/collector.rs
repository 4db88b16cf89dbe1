//! `[collector]`: the HTTP collector, the source of records from clients.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// Largest `max_field_bytes` accepted (1 GiB).
const MAX_FIELD_BYTES: usize = 1 << 30;

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
    /// Requests handled at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Bytes of request bodies held at once (by Content-Length, or
    /// max_body_bytes when not given); more are answered 503.
    pub max_bytes_in_flight: usize,
    /// A body that has not arrived whole by then is answered 408 (a slow
    /// client cannot hold a request slot for ever).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Records in one request; more are refused whole with 413.
    pub max_records_per_request: usize,
    /// A connection of the HTTP listener (any route) that sends and reads
    /// nothing for this long, e.g. one that never finishes its headers or
    /// an idle keep-alive, is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
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
            max_concurrent_requests: 256,
            max_bytes_in_flight: 256 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            max_records_per_request: 100_000,
            idle_timeout: Duration::from_secs(60),
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
        // A field's length is 32 bits in the bus's binary record form.
        if self.max_field_bytes > MAX_FIELD_BYTES {
            return invalid(
                "collector.max_field_bytes",
                "must be at most 1073741824 (1 GiB)",
            );
        }
        if self.max_concurrent_requests == 0 {
            return invalid("collector.max_concurrent_requests", "must be at least 1");
        }
        if self.max_bytes_in_flight < self.max_body_bytes {
            return invalid(
                "collector.max_bytes_in_flight",
                format!(
                    "is {}, less than collector.max_body_bytes ({}): no full-size request could ever be taken",
                    self.max_bytes_in_flight, self.max_body_bytes
                ),
            );
        }
        if self.max_bytes_in_flight / 1024 > u32::MAX as usize {
            return invalid("collector.max_bytes_in_flight", "must be below 4 TiB");
        }
        if self.body_timeout.is_zero() {
            return invalid("collector.body_timeout", "must be more than 0s");
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return invalid("collector.idle_timeout", "must be at least 1s");
        }
        if self.max_records_per_request == 0 {
            return invalid("collector.max_records_per_request", "must be at least 1");
        }
        Ok(())
    }
}
