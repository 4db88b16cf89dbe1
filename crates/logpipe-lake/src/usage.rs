//! What the lake holds, per table: files, bytes and rows, and the files of
//! the hour being written now (the small-files problem shows there first).
//! The Storage dashboard's gauges, measured by listing each table's folder
//! every `interval`; a file's rows come from its footer, read once per file
//! (committed files never change).
//!
//! The figures are the store's: during a compaction's grace period the
//! replaced files still count (they still take space), so `rows` may
//! exceed what a query counts for that while.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use logpipe_core::tables::TableDef;
use logpipe_core::time::{HourPartition, now_micros};
use object_store::ObjectStore;
use object_store::path::Path as StorePath;

use crate::Lake;
use crate::error::Result;
use crate::metrics::lake_metrics;

/// One table's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableUsage {
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
    /// Files in the partition of the current hour (hourly tables).
    pub open_hour_files: u64,
}

/// Remembers each file's row count between scans.
#[derive(Default)]
pub struct UsageScanner {
    rows_of: HashMap<StorePath, u64>,
}

impl UsageScanner {
    /// Lists `table` and counts what it holds.
    pub async fn scan(&mut self, lake: &Lake, table: &TableDef) -> Result<TableUsage> {
        let dir = StorePath::from(table.dir);
        let open_hour = StorePath::from(format!(
            "{}/{}",
            table.dir,
            HourPartition::of_micros(now_micros()).hive_path()
        ));
        let files: Vec<_> = lake
            .store()
            .list(Some(&dir))
            .try_filter(|meta| {
                std::future::ready(crate::layout::is_table_file(table.dir, &meta.location))
            })
            .try_collect()
            .await?;
        let mut usage = TableUsage::default();
        for meta in &files {
            usage.files += 1;
            usage.bytes += meta.size;
            if meta.location.prefix_matches(&open_hour) {
                usage.open_hour_files += 1;
            }
            let rows = match self.rows_of.get(&meta.location) {
                Some(rows) => *rows,
                // Deleted meanwhile (retention, compaction) or damaged
                // (`logpipe check` says which): not counted.
                None => match footer_rows(lake.store().as_ref(), &meta.location, meta.size).await {
                    Some(rows) => {
                        self.rows_of.insert(meta.location.clone(), rows);
                        rows
                    }
                    None => 0,
                },
            };
            usage.rows += rows;
        }
        // Forget this table's files that are gone.
        let present: std::collections::HashSet<&StorePath> =
            files.iter().map(|meta| &meta.location).collect();
        self.rows_of
            .retain(|path, _| !path.prefix_matches(&dir) || present.contains(path));
        Ok(usage)
    }
}

/// The row count in the footer of the Parquet file `path` of `size`
/// bytes.
async fn footer_rows(store: &dyn ObjectStore, path: &StorePath, size: u64) -> Option<u64> {
    let metadata = crate::parquet::footer(store, path, size).await?;
    u64::try_from(metadata.file_metadata().num_rows()).ok()
}

/// Measures `tables` at start and every `interval` until `shutdown`, into
/// `logpipe_lake_table_{files,bytes,rows}` and
/// `logpipe_lake_open_hour_files`. A pass that fails (the store
/// unreachable) is logged and tried again at the next interval.
pub async fn run(
    lake: Lake,
    tables: Vec<&'static TableDef>,
    interval: Duration,
    shutdown: logpipe_core::job::Shutdown,
) {
    let scanner = tokio::sync::Mutex::new(UsageScanner::default());
    let (lake, tables, scanner) = (&lake, &tables, &scanner);
    logpipe_core::job::every(interval, shutdown, move || async move {
        let mut scanner = scanner.lock().await;
        let metrics = lake_metrics();
        for table in tables {
            match scanner.scan(lake, table).await {
                Ok(usage) => {
                    metrics.table_files.set(&[table.name], usage.files as f64);
                    metrics.table_bytes.set(&[table.name], usage.bytes as f64);
                    metrics.table_rows.set(&[table.name], usage.rows as f64);
                    metrics
                        .open_hour_files
                        .set(&[table.name], usage.open_hour_files as f64);
                }
                Err(error) => tracing::warn!(
                    table = table.name,
                    %error,
                    "measuring the lake's storage failed; trying again at the next interval"
                ),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::{CommitRecord, plan_files};
    use crate::storage::LakeStore;
    use crate::{Compression, TableGroups};
    use logpipe_core::tables::LOGS;

    /// Two logs `seconds_ago`.
    fn step(seconds_ago: i64) -> TableGroups {
        crate::log_groups((now_micros() - seconds_ago * 1_000_000) as f64 / 1e6, 2)
    }

    #[tokio::test]
    async fn files_bytes_rows_and_the_open_hours_files_are_counted() {
        let lake = Lake::open(&LakeStore::memory(), Compression::Zstd);
        let mut scanner = UsageScanner::default();
        assert_eq!(
            scanner.scan(&lake, &LOGS).await.unwrap(),
            TableUsage::default()
        );
        for (seq, ago) in [(1, 0), (2, 3 * 86_400)] {
            let groups = step(ago);
            let record = CommitRecord::for_test("raw", seq, plan_files("raw", seq, &groups));
            lake.commit(&record, lake.encode(groups).await.unwrap())
                .await
                .unwrap();
        }
        let usage = scanner.scan(&lake, &LOGS).await.unwrap();
        assert_eq!((usage.files, usage.rows, usage.open_hour_files), (2, 4, 1));
        assert!(usage.bytes > 0);
        // A file gone is no longer counted (nor remembered).
        let old = plan_files("raw", 2, &step(3 * 86_400))[0].path.clone();
        object_store::ObjectStoreExt::delete(lake.store().as_ref(), &StorePath::from(old.as_str()))
            .await
            .unwrap();
        let usage = scanner.scan(&lake, &LOGS).await.unwrap();
        assert_eq!((usage.files, usage.rows, usage.open_hour_files), (1, 2, 1));
        assert_eq!(scanner.rows_of.len(), 1);
    }
}
