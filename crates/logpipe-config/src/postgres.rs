//! `[postgres]`: the PostgreSQL sink of windows, reports and job runs, and
//! `[postgres.hot]`, the hot store of raw records.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[postgres]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// e.g. postgres://logpipe@127.0.0.1:5432/logpipe (a password is better
    /// given as LOGPIPE__POSTGRES__URL than in a file). Empty: windows and
    /// reports stay in the lake only.
    pub url: String,
    pub hot: HotStoreConfig,
}

/// `[postgres.hot]`: the newest raw records also in PostgreSQL, in tables
/// partitioned by event day, written exactly once and dropped a day at a
/// time after `retention` (docs/hot-store.md). For the seed's hybrid
/// advice: recent rows where an application's SQL already is, history in
/// the lake.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotStoreConfig {
    /// Run the hot store (in `logpipe up`, `logpipe stream --jobs hot`).
    pub enabled: bool,
    /// Which raw tables: `logs`, `events`.
    pub tables: Vec<String>,
    /// The PostgreSQL schema of the tables and of `logpipe_hot_positions`.
    pub schema: String,
    /// Rows are kept at least this long after their event time, and at most
    /// a day longer (a day's partition is dropped whole); records older
    /// than this when read are not written.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most records written in one transaction.
    pub batch: usize,
    /// How long to wait for more records before writing a partial batch
    /// (how long after its acknowledgement a record is queryable, at most).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
}

impl Default for HotStoreConfig {
    fn default() -> Self {
        HotStoreConfig {
            enabled: false,
            tables: vec!["logs".to_string(), "events".to_string()],
            schema: "hot".to_string(),
            retention: Duration::from_secs(7 * 86_400),
            batch: 20_000,
            linger: Duration::from_millis(500),
        }
    }
}

impl HotStoreConfig {
    fn validate(&self, url: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if url.is_empty() {
            return invalid(
                "postgres.hot.enabled",
                "the hot store writes to [postgres] url, which is empty",
            );
        }
        if self.tables.is_empty() {
            return invalid("postgres.hot.tables", "name logs, events or both");
        }
        for table in &self.tables {
            if table != "logs" && table != "events" {
                return invalid(
                    "postgres.hot.tables",
                    format!("{table:?} is not a raw table (logs or events)"),
                );
            }
        }
        let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if self.schema.is_empty()
            || !self.schema.chars().all(plain)
            || self.schema.starts_with(|c: char| c.is_ascii_digit())
        {
            return invalid(
                "postgres.hot.schema",
                format!(
                    "{:?} is not a plain identifier (lower-case letters, digits, _)",
                    self.schema
                ),
            );
        }
        if self.retention < Duration::from_secs(3600) {
            return invalid(
                "postgres.hot.retention",
                "must be at least 1h (partitions are days; e.g. \"7d\")",
            );
        }
        if self.batch == 0 {
            return invalid("postgres.hot.batch", "must be at least 1");
        }
        Ok(())
    }
}

impl PostgresConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.url;
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return invalid(
                "postgres.url",
                "must start with postgres:// or postgresql://",
            );
        }
        self.hot.validate(url)
    }
}
