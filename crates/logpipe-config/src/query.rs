//! `[query]`: limits on SQL over the lake (`POST /api/query`, the console,
//! `logpipe sql`), so that one query cannot starve ingest or the process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// The query threads' scheduling priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryPriority {
    /// SCHED_IDLE: run only when no other thread wants the CPU.
    Idle,
    /// nice 10: about a tenth of the CPU when ingest wants it all.
    Low,
    /// As every other thread.
    Normal,
}

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
    /// …at this scheduling priority: `idle` (only CPU that no other thread
    /// wants; a query waits while ingest takes every core), `low` (nice 10)
    /// or `normal` (as ingest).
    pub priority: QueryPriority,
    /// While the rest of the process (ingest, stream jobs) uses at least a
    /// quarter of the cores, the query threads together use about this
    /// share of the cores (averaged over tenths of a second): a scan waits
    /// between batches of rows to stay under. Priority alone does not protect ingest on few cores (what runs
    /// in its short idle gaps costs it more than the CPU taken); 0 turns
    /// the cap off.
    pub max_share_under_load: f64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            max_memory_bytes: 512 * 1024 * 1024,
            threads: 0,
            priority: QueryPriority::Idle,
            max_share_under_load: 0.1,
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
        if !(0.0..=1.0).contains(&self.max_share_under_load) {
            return invalid(
                "query.max_share_under_load",
                "must be a share of the cores from 0 (no cap) to 1",
            );
        }
        Ok(())
    }
}
