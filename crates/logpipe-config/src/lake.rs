//! `[lake]`: the Parquet lake and how the raw→lake job writes it.

use std::time::Duration;

use logpipe_core::tables::{ALERTS, EVENTS, LOGS, TableDef, WINDOWS};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Snappy,
}

/// What the lake job does when offsets it needs are gone (retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataLossPolicy {
    /// Stop with an error that says which offsets are gone (the seed's
    /// `failOnDataLoss=true`).
    Fail,
    /// Skip to the oldest available offset and count the loss in a metric.
    SkipAhead,
}

/// `[lake.s3]`: how an `s3://BUCKET/PREFIX` root is reached. What is unset
/// here comes from the usual `AWS_*` environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, …), as every S3 client reads them.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// A self-hosted server's URL (`http://127.0.0.1:7070`); unset: AWS.
    /// An `http://` endpoint is allowed plain HTTP.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// The bucket in the host name (AWS's virtual-hosted style) instead of
    /// the path. Default: path style with an `endpoint` (what self-hosted
    /// servers answer), virtual-hosted on AWS.
    pub virtual_hosted_style: Option<bool>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

/// `[lake.retention]`: how long each table's hour partitions are kept.
/// Unset: kept for ever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `logs` (`logs/raw`), e.g. `"30d"`.
    #[serde(with = "humantime_serde")]
    pub logs: Option<Duration>,
    /// `events` (`events/raw`).
    #[serde(with = "humantime_serde")]
    pub events: Option<Duration>,
    /// The 5-second `windows`.
    #[serde(with = "humantime_serde")]
    pub windows: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub alerts: Option<Duration>,
    /// How often expired partitions are looked for.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long an expired partition is hidden from logpipe's queries
    /// before it is deleted: a query that listed it just before has this
    /// long to read it.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            logs: None,
            events: None,
            windows: None,
            alerts: None,
            interval: Duration::from_secs(600),
            grace: Duration::from_secs(5 * 60),
        }
    }
}

impl RetentionConfig {
    /// (setting, table, how long it is kept) for each table with a
    /// retention.
    pub fn tables(&self) -> Vec<(&'static str, &'static TableDef, Duration)> {
        [
            ("lake.retention.logs", &LOGS, self.logs),
            ("lake.retention.events", &EVENTS, self.events),
            ("lake.retention.windows", &WINDOWS, self.windows),
            ("lake.retention.alerts", &ALERTS, self.alerts),
        ]
        .into_iter()
        .filter_map(|(key, table, kept)| kept.map(|kept| (key, table, kept)))
        .collect()
    }
}

/// `[lake.compaction]`: closed hours' small files merged into few large
/// ones (docs/operations.md "Compaction").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Off by default: logpipe's own reads never see a compaction half
    /// done, but a reader of the plain Hive tree (Spark, DuckDB) sees an
    /// hour's rows twice between the merged file's write and the inputs'
    /// deletion, up to `grace` (docs/operations.md says when to turn it on).
    pub enabled: bool,
    /// The size merged files are made up to, in bytes of Parquet; files of
    /// at least half of it are left as they are.
    pub target_file_bytes: u64,
    /// An hour is compacted once it holds this many small files.
    pub min_files: usize,
    /// How long after its end an hour is left alone (late records still
    /// arrive).
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// How far back hours are looked at: older ones stay as they are.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// How long replaced files stay for queries that listed them before
    /// the merged file took their place.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How often hours to compact are looked for.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: false,
            target_file_bytes: 64 * 1024 * 1024,
            min_files: 8,
            min_age: Duration::from_secs(15 * 60),
            lookback: Duration::from_secs(7 * 24 * 3600),
            grace: Duration::from_secs(5 * 60),
            interval: Duration::from_secs(10 * 60),
        }
    }
}

/// `[lake.delta]`: a Delta Lake transaction log kept over each table's
/// files, so readers outside logpipe (Spark with delta-spark, delta-rs,
/// DuckDB's delta extension, Trino) see a compaction or a retention
/// deletion in one atomic step (docs/operations.md "Delta log").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeltaConfig {
    /// Off by default: the plain Hive tree needs no log, and the log's
    /// checkpoints are Parquet files under `<table>/_delta_log/` that a
    /// `**/*.parquet` glob would also match.
    pub enabled: bool,
    /// How often what logpipe's reads see is published as a new version:
    /// how far the Delta view trails. At most half of
    /// `lake.compaction.grace` and `lake.retention.grace`, so a version
    /// leaves out replaced files well before they are deleted.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A checkpoint (the whole file list in one Parquet file) every this
    /// many versions, so a reader replays at most this many commits.
    pub checkpoint_interval: u64,
    /// Versions older than this, and older than the newest checkpoint,
    /// are deleted (time travel reaches back this far).
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
}

impl Default for DeltaConfig {
    fn default() -> Self {
        DeltaConfig {
            enabled: false,
            interval: Duration::from_secs(15),
            checkpoint_interval: 20,
            log_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[lake]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Where the lake lives: a directory, or a URL (`file:///abs/path`,
    /// `s3://bucket/prefix`, `hdfs://namenode:8020/path`, `memory://` for a
    /// throwaway lake). Unset:
    /// `DATA_DIR`.
    pub root: Option<String>,
    /// How an `s3://` root is reached.
    pub s3: S3Config,
    /// How long each table is kept.
    pub retention: RetentionConfig,
    /// Merging closed hours' small files.
    pub compaction: CompactionConfig,
    /// A Delta Lake log over the tables, for outside readers.
    pub delta: DeltaConfig,
    pub compression: Compression,
    /// How often buffered records are written and committed; the bound on
    /// how long an acknowledged record takes to become queryable.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush early once this many records are buffered (bounds memory).
    pub max_buffered_rows: usize,
    pub on_data_loss: DataLossPolicy,
    /// Offsets per partition within which a second copy of a record (same
    /// id: a client retried a request sent with an `Idempotency-Key`) is
    /// dropped. 0 turns the check off; at most 2^30. A job that starts
    /// re-reads this many offsets before its start to rebuild the check.
    pub dedup_window: u64,
    /// How often the process running the raw job lists each table to
    /// measure what the lake holds (`logpipe_lake_table_files`, `…_bytes`,
    /// `…_rows`, `logpipe_lake_open_hour_files`).
    #[serde(with = "humantime_serde")]
    pub usage_interval: Duration,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            root: None,
            s3: S3Config::default(),
            retention: RetentionConfig::default(),
            compaction: CompactionConfig::default(),
            delta: DeltaConfig::default(),
            compression: Compression::Zstd,
            flush_interval: Duration::from_secs(1),
            // ~ 60 MB of column data at seed record sizes; at full load a
            // one-second flush holds about this many rows anyway.
            max_buffered_rows: 200_000,
            on_data_loss: DataLossPolicy::Fail,
            // 25 s of a partition at 60,000 records/s over three
            // partitions; about 4 MB per partition and job when every
            // record has an id (8 bytes a record, plus vector growth).
            dedup_window: 500_000,
            // A listing per table a minute: small next to the commits' own
            // requests (several a second).
            usage_interval: Duration::from_secs(60),
        }
    }
}

impl LakeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dedup_window > logpipe_core::dedup::MAX_WINDOW {
            return invalid(
                "lake.dedup_window",
                format!(
                    "is {}, must be at most {} offsets",
                    self.dedup_window,
                    logpipe_core::dedup::MAX_WINDOW
                ),
            );
        }
        if self.usage_interval.is_zero() {
            return invalid("lake.usage_interval", "must be more than 0");
        }
        if self.flush_interval.is_zero() {
            return invalid("lake.flush_interval", "must be more than 0");
        }
        if self.max_buffered_rows == 0 {
            return invalid("lake.max_buffered_rows", "must be at least 1");
        }
        if self
            .root
            .as_deref()
            .is_some_and(|root| root.trim().is_empty())
        {
            return invalid(
                "lake.root",
                "is empty; leave it unset to keep the lake in data_dir, or give a directory or URL",
            );
        }
        for (key, _, kept) in self.retention.tables() {
            if kept < Duration::from_secs(3600) {
                return invalid(
                    key,
                    format!(
                        "is {} s; retention deletes whole hours, so keep at least 1h",
                        kept.as_secs()
                    ),
                );
            }
        }
        if self.retention.interval < Duration::from_secs(1) {
            return invalid("lake.retention.interval", "must be at least 1s");
        }
        let compaction = &self.compaction;
        if compaction.target_file_bytes < 1024 * 1024 {
            return invalid(
                "lake.compaction.target_file_bytes",
                format!(
                    "is {} bytes; make it at least 1 MiB (1048576): smaller files are what compaction cures",
                    compaction.target_file_bytes
                ),
            );
        }
        if compaction.min_files < 2 {
            return invalid(
                "lake.compaction.min_files",
                "must be at least 2 (one file has nothing to merge with)",
            );
        }
        if compaction.interval < Duration::from_secs(1) {
            return invalid("lake.compaction.interval", "must be at least 1s");
        }
        if compaction.lookback <= compaction.min_age {
            return invalid(
                "lake.compaction.lookback",
                "must be longer than lake.compaction.min_age, or no hour is ever compacted",
            );
        }
        let delta = &self.delta;
        if delta.interval < Duration::from_millis(100) {
            return invalid("lake.delta.interval", "must be at least 100ms");
        }
        if delta.checkpoint_interval == 0 {
            return invalid(
                "lake.delta.checkpoint_interval",
                "must be at least 1 (a checkpoint every N versions)",
            );
        }
        if delta.enabled {
            for (key, grace, on) in [
                (
                    "lake.compaction.grace",
                    compaction.grace,
                    compaction.enabled,
                ),
                ("lake.retention.grace", self.retention.grace, true),
            ] {
                if on && delta.interval * 2 > grace {
                    return invalid(
                        "lake.delta.interval",
                        format!(
                            "is {}, more than half of {key} ({}): a Delta version could still \
                             list files after they are deleted; make it at most {}",
                            humantime_serde::re::humantime::format_duration(delta.interval),
                            humantime_serde::re::humantime::format_duration(grace),
                            humantime_serde::re::humantime::format_duration(grace / 2)
                        ),
                    );
                }
            }
        }
        if let Some(endpoint) = &self.s3.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return invalid(
                "lake.s3.endpoint",
                format!("{endpoint:?} must be an http:// or https:// URL"),
            );
        }
        Ok(())
    }
}
