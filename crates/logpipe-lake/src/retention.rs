//! Retention: whole hour partitions of a table deleted once the hour ended
//! longer ago than the table's `lake.retention.<table>`.
//!
//! A pass walks the Hive tree level by level (`year=`, `month=`, `day=`,
//! `hour=`), listing one level at a time: a prefix whose whole span ended
//! before the cutoff is deleted with everything under it, one whose span
//! starts after it is left alone, and only the prefixes the cutoff falls in
//! are opened further. So a pass lists a few directories, not the table.
//!
//! The hour being written is never expired (retention is at least an
//! hour, and the cutoff is measured from the hour's *end*). A late record
//! for an hour already deleted lands again in a new file and goes at the
//! next pass. Deletes are idempotent, so the processes that run the pass
//! (every one that runs the raw→lake job) may overlap.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use logpipe_core::tables::TableDef;
use object_store::path::Path as StorePath;

use crate::Lake;
use crate::error::Result;
use crate::metrics::lake_metrics;

/// What one pass over one table deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub files: u64,
    pub bytes: u64,
}

/// The span `[start, end)` of a partition prefix's last level, given the
/// levels above it (year, month, day, hour).
fn span(levels: &[u32]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let year = *levels.first()? as i32;
    let at = |y: i32, m: u32, d: u32, h: u32| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single();
    match levels.len() {
        1 => Some((at(year, 1, 1, 0)?, at(year + 1, 1, 1, 0)?)),
        2 => {
            let month = levels[1];
            let (next_year, next_month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            Some((at(year, month, 1, 0)?, at(next_year, next_month, 1, 0)?))
        }
        3 => {
            let start = at(year, levels[1], levels[2], 0)?;
            Some((start, start + chrono::Duration::days(1)))
        }
        4 => {
            let start = at(year, levels[1], levels[2], levels[3])?;
            Some((start, start + chrono::Duration::hours(1)))
        }
        _ => None,
    }
}

const LEVELS: [&str; 4] = ["year=", "month=", "day=", "hour="];

/// A partition directory of an hourly table, one level of the Hive tree.
pub(crate) struct Partition {
    pub(crate) path: StorePath,
    /// Its levels and those above it (year, month, day, hour).
    pub(crate) levels: Vec<u32>,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
}

impl Partition {
    pub(crate) fn is_hour(&self) -> bool {
        self.levels.len() == LEVELS.len()
    }
}

impl Lake {
    /// The partition directories directly under `prefix`, whose levels are
    /// `levels` (none for the table's directory). Other names are not
    /// partitions and not ours to judge: they are left out.
    pub(crate) async fn partitions_under(
        &self,
        prefix: &StorePath,
        levels: &[u32],
    ) -> Result<Vec<Partition>> {
        let Some(key) = LEVELS.get(levels.len()) else {
            return Ok(Vec::new());
        };
        let listed = self.store().list_with_delimiter(Some(prefix)).await?;
        Ok(listed
            .common_prefixes
            .into_iter()
            .filter_map(|path| {
                let value = path.filename()?.strip_prefix(key)?.parse::<u32>().ok()?;
                let mut levels = levels.to_vec();
                levels.push(value);
                let (start, end) = span(&levels)?;
                Some(Partition {
                    path,
                    levels,
                    start,
                    end,
                })
            })
            .collect())
    }

    /// Deletes the hour partitions of `table` (Hive-partitioned by hour)
    /// that ended before `cutoff`; logs each deleted prefix and counts it.
    pub async fn expire(&self, table: &TableDef, cutoff: DateTime<Utc>) -> Result<Deleted> {
        let (name, dir) = (table.name, table.dir);
        let mut deleted = Deleted::default();
        // (prefix, levels parsed so far)
        let mut pending: Vec<(StorePath, Vec<u32>)> = vec![(StorePath::from(dir), Vec::new())];
        while let Some((prefix, levels)) = pending.pop() {
            for child in self.partitions_under(&prefix, &levels).await? {
                if child.end <= cutoff {
                    let gone = self.delete_prefix(&child.path).await?;
                    if let Some(root) = self.lake_store().local_dir() {
                        // A local lake keeps the emptied directories.
                        remove_empty_dirs(&root.join(child.path.as_ref()));
                    }
                    if gone.files > 0 {
                        tracing::info!(
                            table = name,
                            partition = %child.path,
                            files = gone.files,
                            bytes = gone.bytes,
                            "retention deleted an expired partition"
                        );
                    }
                    deleted.files += gone.files;
                    deleted.bytes += gone.bytes;
                } else if child.start < cutoff {
                    pending.push((child.path, child.levels));
                }
            }
        }
        let metrics = lake_metrics();
        metrics.retention_files.add(&[name], deleted.files);
        metrics.retention_bytes.add(&[name], deleted.bytes);
        Ok(deleted)
    }

    /// Deletes everything under `prefix` in bulk (on S3 up to 1000 keys a
    /// request).
    async fn delete_prefix(&self, prefix: &StorePath) -> Result<Deleted> {
        let objects: Vec<_> = self.store().list(Some(prefix)).try_collect().await?;
        let locations: Vec<_> = objects
            .iter()
            .map(|meta| Ok(meta.location.clone()))
            .collect();
        let outcomes: Vec<_> = self
            .store()
            .delete_stream(futures::stream::iter(locations).boxed())
            .collect()
            .await;
        let mut deleted = Deleted::default();
        // In the order given.
        for (meta, outcome) in objects.iter().zip(outcomes) {
            match outcome {
                Ok(_) => {
                    deleted.files += 1;
                    deleted.bytes += meta.size;
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(deleted)
    }
}

/// The cutoff of a retention period: partitions whose hour ended before
/// it are expired.
pub fn cutoff(retention: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX)
}

/// Removes `dir` and the directories under it that are empty (a local
/// lake keeps them after their files went), bottom-up.
fn remove_empty_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Runs a retention pass over `tables` at start and every `interval`
/// until `shutdown`. A pass that fails (the store unreachable) is logged
/// and tried again at the next interval: nothing is lost by waiting.
pub async fn run(
    lake: Lake,
    tables: Vec<(&'static TableDef, Duration)>,
    interval: Duration,
    shutdown: logpipe_core::job::Shutdown,
) {
    let (lake, tables) = (&lake, &tables);
    logpipe_core::job::every(interval, shutdown, move || async move {
        for (table, kept) in tables {
            if let Err(error) = lake.expire(table, cutoff(*kept)).await {
                tracing::warn!(table = table.name, %error, "retention pass failed; trying again at the next interval");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_each_level() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            span(&[2025]),
            Some((at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")))
        );
        assert_eq!(
            span(&[2025, 12]),
            Some((at("2025-12-01T00:00:00Z"), at("2026-01-01T00:00:00Z")))
        );
        assert_eq!(
            span(&[2024, 2, 29]),
            Some((at("2024-02-29T00:00:00Z"), at("2024-03-01T00:00:00Z")))
        );
        assert_eq!(
            span(&[2025, 1, 12, 23]),
            Some((at("2025-01-12T23:00:00Z"), at("2025-01-13T00:00:00Z")))
        );
        assert_eq!(span(&[2025, 13]), None);
        assert_eq!(span(&[2025, 2, 30]), None);
    }
}
