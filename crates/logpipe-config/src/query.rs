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
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            max_memory_bytes: 512 * 1024 * 1024,
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
        Ok(())
    }
}
