//! `[query]`: limits on SQL over the lake (`POST /api/query`, the console,
//! `logpipe sql`), so that one query cannot starve ingest or the process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[query]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query still running after this is stopped and answered with
    /// an error naming this setting.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory a query's operators (sorts, joins, aggregations) may hold,
    /// and the largest result it may return, in bytes.
    pub max_memory_bytes: usize,
    /// The query API's and the console's queries run on threads of their
    /// own, this many (0: one per core)…
    pub threads: usize,
    /// …at this lower scheduling priority (0 as ingest, up to 19): a heavy
    /// query then takes only the CPU ingest leaves free, and runs at full
    /// speed on an idle machine.
    pub nice: i32,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            max_memory_bytes: 512 * 1024 * 1024,
            threads: 0,
            nice: 10,
        }
    }
}

impl QueryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return invalid("query.timeout", "must be more than 0s");
        }
        if self.max_memory_bytes < 1024 * 1024 {
            return invalid("query.max_memory_bytes", "must be at least 1 MiB (1048576)");
        }
        if !(0..=19).contains(&self.nice) {
            return invalid(
                "query.nice",
                format!("is {}, must be 0 (as ingest) to 19 (lowest)", self.nice),
            );
        }
        Ok(())
    }
}
