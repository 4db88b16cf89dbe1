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
//!
//! **Running queries.** A pass first hides what expired and deletes it a
//! `grace` later: it records its cutoff in the table's marks
//! (`_logpipe/retention/<table dir>/marks.json`), which logpipe's reads
//! (the lake view, [`expired_files`]) follow at once, and deletes only up
//! to the cutoff of a mark written at least `grace` ago. So a query that
//! listed an hour before it was hidden has `grace` to read it, and one
//! that lists it after never sees it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use logpipe_core::tables::{Partitioning, TableDef};
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

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

/// Where retention keeps each table's marks.
const MARKS_PREFIX: &str = "_logpipe/retention";

fn marks_path(dir: &str) -> StorePath {
    StorePath::from(format!("{MARKS_PREFIX}/{dir}/marks.json"))
}

/// A table's retention marks: when each pass hid what, newest last.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Marks {
    marks: Vec<Mark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Mark {
    /// When the pass wrote it, ms since 1970.
    written_ms: i64,
    /// Partitions that ended at or before this (ms since 1970) are hidden.
    hidden_before_ms: i64,
}

impl Marks {
    /// What logpipe's reads hide: partitions that ended at or before it.
    fn hidden_before(&self) -> Option<i64> {
        self.marks.iter().map(|m| m.hidden_before_ms).max()
    }

    /// What may be deleted: the cutoff of the newest mark written at least
    /// `grace` ago.
    fn deletable_before(&self, now_ms: i64, grace_ms: i64) -> Option<i64> {
        self.marks
            .iter()
            .filter(|m| m.written_ms <= now_ms - grace_ms)
            .map(|m| m.hidden_before_ms)
            .max()
    }

    /// Records a pass's cutoff (when it hides more than before) and drops
    /// the marks no longer needed: all but the newest written `grace` ago
    /// and those written since.
    fn add(&mut self, now_ms: i64, cutoff_ms: i64, grace_ms: i64) {
        if self.hidden_before().is_none_or(|hidden| cutoff_ms > hidden) {
            self.marks.push(Mark {
                written_ms: now_ms,
                hidden_before_ms: cutoff_ms,
            });
        }
        let settled = self
            .marks
            .iter()
            .filter(|m| m.written_ms <= now_ms - grace_ms)
            .map(|m| m.written_ms)
            .max();
        self.marks
            .retain(|m| m.written_ms > now_ms - grace_ms || Some(m.written_ms) == settled);
    }
}

/// The marks of the table in `dir` (none yet: empty).
async fn read_marks(store: &Arc<dyn ObjectStore>, dir: &str) -> object_store::Result<Marks> {
    match store.get(&marks_path(dir)).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            serde_json::from_slice(&bytes).map_err(|e| object_store::Error::Generic {
                store: "lake",
                source: format!("retention marks of {dir}: {e}").into(),
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(Marks::default()),
        Err(error) => Err(error),
    }
}

/// The end of a batch job's period partition from its directory's name:
/// `date=YYYY-MM-DD` and `end_date=YYYY-MM-DD` end after that day,
/// `week=YYYY-Www` after its Sunday.
fn period_end(segment: &str) -> Option<DateTime<Utc>> {
    let (key, value) = segment.split_once('=')?;
    let last_day = match key {
        "date" | "end_date" => chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?,
        "week" => logpipe_core::time::iso_week_monday(value)? + chrono::Days::new(6),
        _ => return None,
    };
    Some(Utc.from_utc_datetime(&last_day.succ_opt()?.and_hms_opt(0, 0, 0)?))
}

/// The end of the partition `path` lies in (the deepest of its `year=`,
/// `month=`, `day=`, `hour=` levels, or its period), and the table
/// directory above them.
fn partition_end(path: &str) -> Option<(&str, DateTime<Utc>)> {
    let first = ["/year=", "/date=", "/week=", "/start_date="]
        .iter()
        .filter_map(|level| path.find(level))
        .min()?;
    let rest = &path[first + 1..];
    let end = if rest.starts_with("year=") {
        let mut levels = Vec::new();
        for (segment, key) in rest.split('/').zip(LEVELS) {
            match segment.strip_prefix(key) {
                Some(value) => levels.push(value.parse().ok()?),
                None => break,
            }
        }
        span(&levels)?.1
    } else {
        rest.split('/').rev().find_map(period_end)?
    };
    Some((&path[..first], end))
}

/// The files of `listed` in partitions retention has hidden (expired, to
/// be deleted after the grace period), read after the listing.
pub async fn expired_files(
    store: &Arc<dyn ObjectStore>,
    listed: &[ObjectMeta],
) -> object_store::Result<std::collections::BTreeSet<StorePath>> {
    let mut hidden = std::collections::BTreeSet::new();
    // Table directory → what its marks hide.
    let mut tables: std::collections::BTreeMap<String, Option<i64>> = Default::default();
    for meta in listed {
        if meta.location.extension() != Some("parquet") {
            continue;
        }
        let Some((dir, end)) = partition_end(meta.location.as_ref()) else {
            continue;
        };
        if !tables.contains_key(dir) {
            let marks = read_marks(store, dir).await?;
            tables.insert(dir.to_string(), marks.hidden_before());
        }
        if let Some(Some(before)) = tables.get(dir)
            && end.timestamp_millis() <= *before
        {
            hidden.insert(meta.location.clone());
        }
    }
    Ok(hidden)
}

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

    /// Hides the partitions of `table` that ended before `cutoff` from
    /// logpipe's reads, and deletes those hidden at least `grace` ago; logs
    /// each deleted prefix and counts it.
    pub async fn expire(
        &self,
        table: &TableDef,
        cutoff: DateTime<Utc>,
        grace: Duration,
    ) -> Result<Deleted> {
        let (name, dir) = (table.name, table.dir);
        let now = Utc::now().timestamp_millis();
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut marks = read_marks(self.store(), dir).await?;
        let before = marks.clone();
        marks.add(now, cutoff.timestamp_millis(), grace_ms);
        if marks != before {
            let json = serde_json::to_vec(&marks).expect("marks serialize");
            self.store()
                .put(&marks_path(dir), PutPayload::from(json))
                .await?;
        }
        let mut deleted = Deleted::default();
        let Some(cutoff) = marks
            .deletable_before(now, grace_ms)
            .and_then(DateTime::from_timestamp_millis)
        else {
            return Ok(deleted);
        };
        // The partitions that ended before the cutoff: (prefix, levels
        // parsed so far) of an hourly table; `date=`, `week=`, and
        // `start_date=…/end_date=` of a batch job's.
        let mut expired: Vec<StorePath> = Vec::new();
        match table.partitioning {
            Partitioning::Hourly => {
                let mut pending: Vec<(StorePath, Vec<u32>)> =
                    vec![(StorePath::from(dir), Vec::new())];
                while let Some((prefix, levels)) = pending.pop() {
                    for child in self.partitions_under(&prefix, &levels).await? {
                        if child.end <= cutoff {
                            expired.push(child.path);
                        } else if child.start < cutoff {
                            pending.push((child.path, child.levels));
                        }
                    }
                }
            }
            Partitioning::Text(_) => {
                let mut pending = vec![StorePath::from(dir)];
                while let Some(prefix) = pending.pop() {
                    let listed = self.store().list_with_delimiter(Some(&prefix)).await?;
                    for child in listed.common_prefixes {
                        let Some(name) = child.filename() else {
                            continue;
                        };
                        if name.starts_with("start_date=") {
                            pending.push(child);
                        } else if period_end(name).is_some_and(|end| end <= cutoff) {
                            expired.push(child);
                        }
                    }
                }
            }
            Partitioning::None => {}
        }
        for path in expired {
            let gone = self.delete_prefix(&path).await?;
            if let Some(root) = self.lake_store().local_dir() {
                // A local lake keeps the emptied directories.
                remove_empty_dirs(&root.join(path.as_ref()));
            }
            if gone.files > 0 {
                tracing::info!(
                    table = name,
                    partition = %path,
                    files = gone.files,
                    bytes = gone.bytes,
                    "retention deleted an expired partition"
                );
            }
            deleted.files += gone.files;
            deleted.bytes += gone.bytes;
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
    grace: Duration,
    shutdown: logpipe_core::job::Shutdown,
) {
    let (lake, tables) = (&lake, &tables);
    logpipe_core::job::every(interval, shutdown, move || async move {
        for (table, kept) in tables {
            if let Err(error) = lake.expire(table, cutoff(*kept), grace).await {
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

    #[test]
    fn a_file_is_placed_in_its_deepest_partition() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            partition_end("logs/raw/year=2025/month=01/day=12/hour=23/part-1.parquet"),
            Some(("logs/raw", at("2025-01-13T00:00:00Z")))
        );
        assert_eq!(
            partition_end("reports/daily/year=2025/month=01/day=12/part.parquet"),
            Some(("reports/daily", at("2025-01-13T00:00:00Z")))
        );
        assert_eq!(partition_end("logs/raw/part.parquet"), None);
        assert_eq!(
            partition_end("jobs/daily/date=2025-01-12/part-0.parquet"),
            Some(("jobs/daily", at("2025-01-13T00:00:00Z")))
        );
        // ISO week 2 of 2026: Monday 5 to Sunday 11 January.
        assert_eq!(
            partition_end("jobs/weekly/week=2026-W02/part-0.parquet"),
            Some(("jobs/weekly", at("2026-01-12T00:00:00Z")))
        );
        assert_eq!(
            partition_end("jobs/r/start_date=2026-01-01/end_date=2026-01-31/part-0.parquet"),
            Some(("jobs/r", at("2026-02-01T00:00:00Z")))
        );
    }

    #[test]
    fn marks_hide_at_once_and_allow_deletion_only_a_grace_later() {
        let mut marks = Marks::default();
        // Pass at t=0 hides up to 100; nothing deletable yet.
        marks.add(0, 100, 10);
        assert_eq!(marks.hidden_before(), Some(100));
        assert_eq!(marks.deletable_before(0, 10), None);
        // Passes at t=5 and t=12 hide more; at t=12 the first is settled.
        marks.add(5, 105, 10);
        marks.add(12, 112, 10);
        assert_eq!(marks.hidden_before(), Some(112));
        assert_eq!(marks.deletable_before(12, 10), Some(100));
        // At t=30 only the newest settled mark and none newer remain.
        marks.add(30, 112, 10);
        assert_eq!(marks.deletable_before(30, 10), Some(112));
        assert_eq!(marks.marks.len(), 1);
        // No grace: deletable at once.
        let mut now = Marks::default();
        now.add(0, 50, 0);
        assert_eq!(now.deletable_before(0, 0), Some(50));
    }
}
