//! Where things live under the lake root: data files by table and hour,
//! commit records under `_logpipe/`.
//!
//! Names starting with `_` are skipped by Spark, DuckDB and Hive partition
//! discovery, so `_logpipe/` never shows up as data.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use logpipe_core::TableDef;
use logpipe_core::time::HourPartition;
use object_store::path::Path as StorePath;

pub(crate) const COMMIT_PREFIX: &str = "_logpipe/commits";

/// Record batches grouped the way they are written: one file per (table,
/// hour). A `BTreeMap` so the file order, and so the file names, are
/// deterministic for the same input (tables in catalog order).
pub type TableGroups = BTreeMap<(&'static TableDef, HourPartition), FileRows>;

/// The rows of one file: batches of one schema, in order. A job that
/// appends on several threads hands over each thread's batch as it is;
/// the file is encoded from them without first copying them into one
/// (that copy, and the page faults of its fresh memory, was 2–4 % of the
/// server's CPU at full load).
#[derive(Debug, Clone, PartialEq)]
pub struct FileRows(Vec<RecordBatch>);

impl FileRows {
    /// Rows made of `parts`, in order.
    pub fn new(parts: Vec<RecordBatch>) -> FileRows {
        FileRows(parts)
    }

    pub fn num_rows(&self) -> usize {
        self.0.iter().map(RecordBatch::num_rows).sum()
    }

    pub fn parts(&self) -> &[RecordBatch] {
        &self.0
    }

    pub fn into_parts(self) -> Vec<RecordBatch> {
        self.0
    }
}

impl From<RecordBatch> for FileRows {
    fn from(batch: RecordBatch) -> FileRows {
        FileRows::new(vec![batch])
    }
}

pub(crate) fn commit_dir(job: &str) -> StorePath {
    StorePath::from(format!("{COMMIT_PREFIX}/{job}"))
}

pub(crate) fn commit_path(job: &str, seq: u64) -> StorePath {
    StorePath::from(format!("{COMMIT_PREFIX}/{job}/{seq:020}.json"))
}

/// Where file `n` of step `seq` of `job` goes for `table` and `hour`:
/// `<table dir>/<hour>/part-<job>-<seq>-<n>.parquet`. Deterministic, so a
/// roll-forward rebuilds the same names.
pub fn data_file_path(
    table: &TableDef,
    hour: &HourPartition,
    job: &str,
    seq: u64,
    n: usize,
) -> String {
    format!(
        "{}/{}/part-{job}-{seq:010}-{n:03}.parquet",
        table.dir,
        hour.hive_path()
    )
}

/// The job and step of a data file named by [`data_file_path`]
/// (`part-<job>-<seq>-<n>.parquet`); `None` for any other name (a merged
/// file of compaction, a user's file).
pub fn step_of_file_name(name: &str) -> Option<(&str, u64)> {
    let inner = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = inner.rsplitn(3, '-');
    let _n: u32 = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    Some((parts.next()?, seq))
}

pub(crate) const COMPACTION_PREFIX: &str = "_logpipe/compactions";

/// The pending compaction of the hour directory `hour` (a manifest
/// mirrors its hour's path, so a listing of a table's directory finds its
/// manifests by listing the same path under [`COMPACTION_PREFIX`]).
pub(crate) fn manifest_path(hour: &StorePath) -> StorePath {
    StorePath::from(format!("{COMPACTION_PREFIX}/{hour}/manifest.json"))
}

/// Merged file `n` of the compaction of `hour` started at `micros`:
/// `compacted-<micros>-<n>.parquet`, a name no job step has.
pub(crate) fn compacted_file_path(hour: &StorePath, micros: i64, n: usize) -> StorePath {
    StorePath::from(format!("{hour}/compacted-{micros}-{n:03}.parquet"))
}

/// The log's directory in a table's directory. Its `_` keeps it out of
/// Spark's and Hive's partition discovery, and logpipe's own listings
/// skip it ([`is_table_file`]); the log itself is [`crate::delta`].
pub const LOG_DIR: &str = "_delta_log";

/// Whether `path`, listed under `table_dir`, is one of the table's data
/// files: a Parquet file outside every `_`-named directory (the Delta
/// log's checkpoints are Parquet files too).
pub fn is_table_file(table_dir: &str, path: &StorePath) -> bool {
    if path.extension() != Some("parquet") {
        return false;
    }
    let relative = path
        .as_ref()
        .strip_prefix(table_dir)
        .unwrap_or(path.as_ref());
    !relative
        .split('/')
        .any(|segment| segment.starts_with('_') || segment.starts_with('.'))
}

/// Whether `path` is in a table's Delta log.
pub(crate) fn in_delta_log(path: &StorePath) -> bool {
    path.parts().any(|part| part.as_ref() == LOG_DIR)
}
