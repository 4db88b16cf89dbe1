//! The Parquet lake: where its files live, how they are encoded, and the
//! exactly-once commit protocol that writes them.
//!
//! Layout under the lake root (any object store the [`storage`] resolver
//! opens: a local directory now, S3 and HDFS next):
//!
//! ```text
//! logs/raw/year=2025/month=1/day=12/hour=1/part-raw-0000000042-000.parquet
//! events/raw/year=…/…/part-raw-0000000042-001.parquet
//! windows/…  alerts/…  reports/…  analysis/…  job_runs/…
//! _logpipe/commits/raw/00000000000000000042.json
//! ```
//!
//! - [`storage`] — `lake.root` → a [`LakeStore`] with its capabilities; the
//!   query engine and the batch reports open the same store.
//! - [`layout`] — table directories (from `logpipe_core::tables`), data
//!   file names, commit record paths.
//! - [`commit`] — the protocol (commit record first, then files; roll
//!   forward; fencing of several writers), and the chain of records.
//! - [`parquet`] — encoding batches, off the async reactor.
//! - [`retention`] and [`compaction`] — whole expired hours deleted; closed
//!   hours' small files merged, hidden from logpipe's reads until done.
//! - [`delta`] — a Delta Lake log over each table's files publishing what
//!   logpipe's reads see, so outside readers see those changes atomically.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use bytes::Bytes;
use logpipe_config::Compression;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub mod commit;
pub mod compaction;
pub mod delta;
mod error;
pub mod layout;
pub mod metrics;
pub mod parquet;
pub mod retention;
pub mod storage;
pub mod usage;

pub use commit::{
    Chain, CommitRecord, CommittedFile, Offsets, Ranges, Step, StepOutcome, plan_files,
};
pub use error::{LakeError, Result};
pub use layout::{FileRows, TableGroups};
pub use parquet::{encode_parquet, encode_parquet_parts};
pub use storage::{LakeStore, StorageError, resolve, resolve_with};

/// The lake: a store and the protocol over it.
#[derive(Clone)]
pub struct Lake {
    store: LakeStore,
    compression: Compression,
    /// (job, seq) of the commits this process wrote completely and has not
    /// pruned yet: pruning those needs no check (one writer: all of them).
    completed: Arc<Mutex<BTreeSet<(String, u64)>>>,
}

impl Lake {
    /// The lake over `store`, writing files with `compression`.
    pub fn open(store: &LakeStore, compression: Compression) -> Lake {
        Lake {
            store: store.clone(),
            compression,
            completed: Arc::default(),
        }
    }

    /// The object store; paths are relative to the lake root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        self.store.store()
    }

    /// The opened root.
    pub fn lake_store(&self) -> &LakeStore {
        &self.store
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Encodes `groups` as Parquet, off the async reactor.
    pub async fn encode(&self, groups: TableGroups) -> Result<Vec<Bytes>> {
        self.encode_files(groups.into_values().collect()).await
    }

    /// Encodes each batch as one Parquet file, off the async reactor.
    pub async fn encode_batches(&self, batches: Vec<RecordBatch>) -> Result<Vec<Bytes>> {
        self.encode_files(batches.into_iter().map(FileRows::from).collect())
            .await
    }

    /// Encodes each file's rows as one Parquet file, off the async
    /// reactor. A large file's batches are freed column by column as they
    /// are encoded, unless the caller still holds them.
    pub async fn encode_files(&self, files: Vec<FileRows>) -> Result<Vec<Bytes>> {
        let compression = self.compression;
        tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|rows| encode_parquet_parts(rows.into_parts(), compression))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| LakeError::Task(e.to_string()))?
    }

    /// Puts `files` with their encoded bodies (both in plan order).
    pub async fn put_files(&self, files: &[CommittedFile], encoded: Vec<Bytes>) -> Result<()> {
        let puts = files.iter().zip(encoded).map(|(file, bytes)| {
            let store = self.store().clone();
            let path = StorePath::from(file.path.as_str());
            async move { store.put(&path, PutPayload::from(bytes)).await }
        });
        futures::future::try_join_all(puts).await?;
        Ok(())
    }

    /// Completes an interrupted commit: puts those of `files` (with their
    /// bodies, in plan order) that are `missing`. Returns how many.
    pub async fn put_missing(
        &self,
        files: Vec<CommittedFile>,
        encoded: Vec<Bytes>,
        missing: &[CommittedFile],
    ) -> Result<usize> {
        let (files, bytes): (Vec<_>, Vec<_>) = files
            .into_iter()
            .zip(encoded)
            .filter(|(file, _)| missing.contains(file))
            .unzip();
        self.put_files(&files, bytes).await?;
        Ok(files.len())
    }

    fn completed_set(&self) -> MutexGuard<'_, BTreeSet<(String, u64)>> {
        self.completed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A step's worth of `rows` identical logs at `timestamp` (seconds), for
/// the crate's tests.
#[cfg(test)]
pub(crate) fn log_groups(timestamp: f64, rows: usize) -> TableGroups {
    use logpipe_core::record::{LogRecord, ValidationLimits};
    use logpipe_core::tables::{LOGS, LogBatchBuilder};
    let raw =
        format!(r#"{{"timestamp": {timestamp}, "level": "INFO", "service": "a", "message": "m"}}"#);
    let record = LogRecord::parse(&raw, &ValidationLimits::now()).unwrap();
    let mut builder = LogBatchBuilder::default();
    for _ in 0..rows {
        builder.append(&record);
    }
    let mut groups = TableGroups::new();
    groups.insert(
        (
            &LOGS,
            logpipe_core::time::HourPartition::of_micros(record.timestamp_micros),
        ),
        builder.finish().unwrap().into(),
    );
    groups
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use futures::TryStreamExt;
    use object_store::path::Path as StorePath;

    use crate::commit::prune::COMMIT_RECORDS_KEPT;

    fn groups() -> TableGroups {
        log_groups(1736645166.5, 1)
    }

    #[tokio::test]
    async fn commit_then_recover_sees_latest_and_missing_files() {
        let lake = Lake::open(&LakeStore::memory(), Compression::Zstd);
        assert!(lake.latest_commit("raw").await.unwrap().is_none());
        let mut last = None;
        for seq in 1..=20u64 {
            let groups = groups();
            let files = plan_files("raw", seq, &groups);
            assert_eq!(
                files[0].path,
                format!("logs/raw/year=2025/month=1/day=12/hour=1/part-raw-{seq:010}-000.parquet")
            );
            let mut record = CommitRecord::for_test("raw", seq, files);
            record.offsets = BTreeMap::from([("logs.raw".to_string(), BTreeMap::from([(0, seq)]))]);
            let encoded = lake.encode(groups).await.unwrap();
            lake.commit(&record, encoded).await.unwrap();
            last = Some(record);
        }
        let latest = lake.latest_commit("raw").await.unwrap().unwrap();
        assert_eq!(Some(&latest), last.as_ref());
        assert!(lake.missing_files(&latest).await.unwrap().is_empty());
        // Old commit records are pruned.
        let count = lake
            .store()
            .list(Some(&StorePath::from("_logpipe/commits/raw")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len();
        assert_eq!(count, COMMIT_RECORDS_KEPT);
        // A file deleted behind the lake's back is reported missing.
        lake.store()
            .delete(&StorePath::from(latest.files[0].path.as_str()))
            .await
            .unwrap();
        assert_eq!(lake.missing_files(&latest).await.unwrap(), latest.files);
    }

    /// Commits 1 to 20, by one member; record 3 is long pruned.
    async fn committed_to_20(lake: &Lake) {
        for seq in 1..=20u64 {
            let groups = groups();
            let record = CommitRecord::for_test("raw", seq, plan_files("raw", seq, &groups));
            lake.commit(&record, lake.encode(groups).await.unwrap())
                .await
                .unwrap();
        }
    }

    /// A member cut off from the store whose create of step 3 arrives after
    /// the others committed up to 20 (record 3 pruned, so the create
    /// succeeds): its commit is refused as taken, its record removed, and
    /// the file of step 3 the other member committed is left as it was.
    #[tokio::test]
    async fn a_late_commit_of_a_pruned_number_is_taken_and_writes_no_file() {
        let lake = Lake::open(&LakeStore::memory(), Compression::Zstd);
        committed_to_20(&lake).await;
        let record_3 = StorePath::from(format!("_logpipe/commits/raw/{:020}.json", 3));
        assert!(lake.store().head(&record_3).await.is_err(), "pruned");
        let file = plan_files("raw", 3, &groups())[0].path.clone();
        let before = lake
            .store()
            .get(&StorePath::from(file.as_str()))
            .await
            .unwrap();
        let before = before.bytes().await.unwrap();

        // The late writer's step 3 has other rows.
        let mut late_groups = groups();
        late_groups.extend(groups());
        let late = CommitRecord::for_test("raw", 3, plan_files("raw", 3, &late_groups));
        let error = lake
            .commit(
                &late,
                vec![bytes::Bytes::from_static(b"not the committed rows")],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, LakeError::CommitTaken { seq: 3, .. }),
            "{error}"
        );
        assert!(
            lake.store().head(&record_3).await.is_err(),
            "the late record stays"
        );
        let after = lake
            .store()
            .get(&StorePath::from(file.as_str()))
            .await
            .unwrap();
        assert_eq!(after.bytes().await.unwrap(), before);
        assert_eq!(lake.chain("raw").await.unwrap().seq, 20);
    }

    /// The same record left behind (its writer died before deleting it)
    /// looks incomplete; whoever rolls forward deletes it instead.
    #[tokio::test]
    async fn a_late_record_left_behind_is_deleted_not_rolled_forward() {
        let lake = Lake::open(&LakeStore::memory(), Compression::Zstd);
        committed_to_20(&lake).await;
        let late = CommitRecord::for_test("raw", 3, vec![]);
        let mut late = late;
        late.files = vec![crate::commit::CommittedFile {
            path: "logs/raw/never-written.parquet".to_string(),
            table: "logs".to_string(),
            rows: 1,
        }];
        let record_3 = StorePath::from(format!("_logpipe/commits/raw/{:020}.json", 3));
        lake.store()
            .put(&record_3, serde_json::to_vec(&late).unwrap().into())
            .await
            .unwrap();
        // A record a writer died half-way through is still rolled forward.
        let mut dead = CommitRecord::for_test("raw", 21, vec![]);
        dead.files = late.files.clone();
        let record_21 = StorePath::from(format!("_logpipe/commits/raw/{:020}.json", 21));
        lake.store()
            .put(&record_21, serde_json::to_vec(&dead).unwrap().into())
            .await
            .unwrap();
        let incomplete = lake.incomplete_commits("raw").await.unwrap();
        let seqs: Vec<u64> = incomplete.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, vec![21]);
        assert!(lake.store().head(&record_3).await.is_err());
    }
}
