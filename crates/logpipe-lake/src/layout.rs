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

use crate::commit::CommittedFile;

pub(crate) const COMMIT_PREFIX: &str = "_logpipe/commits";

/// Record batches grouped the way they are written: one file per (table,
/// hour). A `BTreeMap` so the file order, and so the file names, are
/// deterministic for the same input (tables in catalog order).
pub type TableGroups = BTreeMap<(&'static TableDef, HourPartition), RecordBatch>;

pub(crate) fn commit_dir(job: &str) -> StorePath {
    StorePath::from(format!("{COMMIT_PREFIX}/{job}"))
}

pub(crate) fn commit_path(job: &str, seq: u64) -> StorePath {
    StorePath::from(format!("{COMMIT_PREFIX}/{job}/{seq:020}.json"))
}

/// The files step `seq` of `job` writes for `groups`, in order:
/// `<table dir>/<hour>/part-<job>-<seq>-<n>.parquet`.
pub fn plan_files(job: &str, seq: u64, groups: &TableGroups) -> Vec<CommittedFile> {
    groups
        .iter()
        .enumerate()
        .map(|(n, ((table, hour), batch))| CommittedFile {
            path: format!(
                "{}/{}/part-{job}-{seq:010}-{n:03}.parquet",
                table.dir,
                hour.hive_path()
            ),
            table: table.name.to_string(),
            rows: batch.num_rows() as u64,
        })
        .collect()
}
