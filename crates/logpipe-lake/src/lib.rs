//! The Parquet lake and its exactly-once commit protocol.
//!
//! Layout under the lake root (any `object_store`: local disk now, S3 later):
//!
//! ```text
//! logs/raw/year=2025/month=1/day=12/hour=1/part-raw-0000000042-000.parquet
//! events/raw/year=…/…/part-raw-0000000042-001.parquet
//! _logpipe/commits/raw/00000000000000000042.json
//! ```
//!
//! **Protocol.** A job flushes in numbered steps. Step *n* first writes its
//! commit record `_logpipe/commits/<job>/<n>.json`, holding the bus offset
//! range each partition contributes, the cumulative offsets after the step,
//! and the names and row counts of the files it will write; then it puts the
//! files. Each put is atomic (a local put stages and renames; an S3 PUT is
//! atomic), so a reader never sees a half-written file. If the process dies
//! between the commit record and the last file, recovery *rolls forward*: it
//! re-reads exactly the recorded ranges from the bus, rebuilds the same files
//! deterministically and puts the missing ones. So every `*.parquet` file a
//! reader can see is committed data that will never be retracted or doubled,
//! and nothing relies on renaming directories (which S3 lacks). The commit
//! record's offsets are the source of truth for where the job resumes.
//!
//! **Several writers.** Stream processes that share a job's partitions (a
//! Kafka consumer group) share its commit chain. A commit record is created
//! only if its sequence number is free (`PutMode::Create`), so two writers
//! never both commit step *n*: the loser reads the newer records, checks
//! that nobody committed the partitions it read (if someone did, it lost
//! them in a rebalance and drops its step), and retries at the next number.
//! A record whose files are incomplete is never pruned, so whichever member
//! next takes the partitions rolls it forward.
//!
//! Names starting with `_` are skipped by Spark, DuckDB and Hive partition
//! discovery, so `_logpipe/` never shows up as data.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use logpipe_core::record::RecordKind;
use logpipe_core::time::HourPartition;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

/// How many commit records are kept per job (the newest is the only one
/// recovery needs; a few more help a human reading what happened).
const COMMIT_RECORDS_KEPT: usize = 16;
const COMMIT_PREFIX: &str = "_logpipe/commits";

/// Parquet codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Snappy,
}

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake storage error: {0}")]
    Store(#[from] object_store::Error),
    #[error("writing Parquet failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("building record batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("commit record {path} is unreadable: {reason}")]
    BadCommit { path: String, reason: String },
    #[error(
        "rolling forward commit {seq} produced {found} but the commit record lists {expected}; the bus no longer holds the same records"
    )]
    RollForwardMismatch {
        seq: u64,
        expected: String,
        found: String,
    },
    #[error("background task failed: {0}")]
    Task(String),
    /// Another writer committed step `seq` of `job` first.
    #[error(
        "commit {seq} of job {job:?} was written by another process first (two processes run the same job?)"
    )]
    CommitTaken { job: String, seq: u64 },
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

/// One file of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// Path relative to the lake root.
    pub path: String,
    pub table: String,
    pub rows: u64,
}

/// Offsets per topic, per partition.
pub type Offsets = BTreeMap<String, BTreeMap<u32, u64>>;

/// The commit record of one flush step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub job: String,
    pub seq: u64,
    /// Bus records this step consumed: topic → partition → [start, end).
    pub ranges: BTreeMap<String, BTreeMap<u32, (u64, u64)>>,
    /// Where the job resumes after this step: topic → partition → next offset.
    pub offsets: Offsets,
    pub files: Vec<CommittedFile>,
    /// Records in the ranges that failed validation and were not written.
    #[serde(default)]
    pub invalid_records: u64,
    /// Records in the ranges that were second copies of a record already
    /// written (a client's retry; see `logpipe_core::dedup`), not written.
    #[serde(default)]
    pub duplicate_records: u64,
    /// The duplicate window the step was made with, so that rebuilding an
    /// interrupted step drops the same copies whatever the configuration
    /// says now (0, as in commits made before the check existed: none).
    #[serde(default)]
    pub dedup_window: u64,
    /// RFC 3339 time of the commit, for humans.
    pub committed_at: String,
    /// Job state checkpointed with the offsets (the window job's open
    /// windows, detector state and this step's output rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}

/// Record batches grouped the way they are written: one file per (table,
/// hour). A `BTreeMap` so the file order, and so the file names, are
/// deterministic for the same input.
pub type FlushGroups = BTreeMap<(RecordKind, HourPartition), RecordBatch>;

/// Batches of derived tables (`windows`, `alerts`), keyed by the table's
/// directory under the root and the hour partition.
pub type TableGroups = BTreeMap<(String, HourPartition), RecordBatch>;

/// The lake: an object store and the layout over it.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    codec: Codec,
    /// (job, seq) of the commits this process wrote completely and has not
    /// pruned yet: pruning those needs no check (one writer: all of them).
    completed: Arc<std::sync::Mutex<std::collections::BTreeSet<(String, u64)>>>,
}

impl Lake {
    pub fn new(store: Arc<dyn ObjectStore>, codec: Codec) -> Lake {
        Lake {
            store,
            codec,
            completed: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `logs/raw` or `events/raw`: a table's directory under the root.
    pub fn table_dir(kind: RecordKind) -> String {
        format!("{}/raw", kind.table())
    }

    fn commit_dir(job: &str) -> StorePath {
        StorePath::from(format!("{COMMIT_PREFIX}/{job}"))
    }

    fn commit_path(job: &str, seq: u64) -> StorePath {
        StorePath::from(format!("{COMMIT_PREFIX}/{job}/{seq:020}.json"))
    }

    /// The file names a step writes for `groups`, in order.
    pub fn plan_files(job: &str, seq: u64, groups: &FlushGroups) -> Vec<CommittedFile> {
        plan(
            job,
            seq,
            groups.iter().map(|((kind, hour), batch)| {
                (
                    Lake::table_dir(*kind),
                    kind.table().to_string(),
                    hour,
                    batch,
                )
            }),
        )
    }

    /// The file names a step writes for derived tables, in order; the table
    /// name is its directory.
    pub fn plan_table_files(job: &str, seq: u64, groups: &TableGroups) -> Vec<CommittedFile> {
        plan(
            job,
            seq,
            groups
                .iter()
                .map(|((dir, hour), batch)| (dir.clone(), dir.clone(), hour, batch)),
        )
    }

    /// The newest commit record of `job`, if any.
    pub async fn latest_commit(&self, job: &str) -> Result<Option<CommitRecord>> {
        let mut newest: Option<StorePath> = None;
        let mut listing = self.store.list(Some(&Lake::commit_dir(job)));
        while let Some(meta) = listing.try_next().await? {
            if meta.location.extension() == Some("json")
                && newest.as_ref().is_none_or(|n| meta.location > *n)
            {
                newest = Some(meta.location);
            }
        }
        let Some(path) = newest else { return Ok(None) };
        self.read_commit(&path).await.map(Some)
    }

    /// Files of `record` not (yet) in the store.
    pub async fn missing_files(&self, record: &CommitRecord) -> Result<Vec<CommittedFile>> {
        let mut missing = Vec::new();
        for file in &record.files {
            match self.store.head(&StorePath::from(file.path.as_str())).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => missing.push(file.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(missing)
    }

    /// Encodes `groups` as Parquet, off the async reactor.
    pub async fn encode(&self, groups: FlushGroups) -> Result<Vec<Bytes>> {
        self.encode_batches(groups.into_values().collect()).await
    }

    /// Encodes each batch as one Parquet file, off the async reactor.
    pub async fn encode_batches(&self, batches: Vec<RecordBatch>) -> Result<Vec<Bytes>> {
        let codec = self.codec;
        tokio::task::spawn_blocking(move || {
            batches
                .iter()
                .map(|batch| encode_parquet(batch, codec))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| LakeError::Task(e.to_string()))?
    }

    /// Runs one step of the protocol: commit record, then files.
    pub async fn commit(&self, record: &CommitRecord, encoded: Vec<Bytes>) -> Result<()> {
        let body = serde_json::to_vec_pretty(record).map_err(|e| LakeError::BadCommit {
            path: Lake::commit_path(&record.job, record.seq).to_string(),
            reason: e.to_string(),
        })?;
        let created = self
            .store
            .put_opts(
                &Lake::commit_path(&record.job, record.seq),
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(LakeError::CommitTaken {
                    job: record.job.clone(),
                    seq: record.seq,
                });
            }
            Err(error) => return Err(error.into()),
        }
        self.put_files(&record.files, encoded).await?;
        self.completed_set()
            .insert((record.job.clone(), record.seq));
        self.prune_commits(&record.job, record.seq).await;
        Ok(())
    }

    /// Puts `files` with their encoded bodies (both in plan order).
    pub async fn put_files(&self, files: &[CommittedFile], encoded: Vec<Bytes>) -> Result<()> {
        let puts = files.iter().zip(encoded).map(|(file, bytes)| {
            let store = self.store.clone();
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

    /// Every kept commit record of `job` whose files are not all in the
    /// store (a writer died half-way), oldest first, with its missing files.
    pub async fn incomplete_commits(
        &self,
        job: &str,
    ) -> Result<Vec<(CommitRecord, Vec<CommittedFile>)>> {
        let mut paths = Vec::new();
        let mut listing = self.store.list(Some(&Lake::commit_dir(job)));
        while let Some(meta) = listing.try_next().await? {
            if meta.location.extension() == Some("json") {
                paths.push(meta.location);
            }
        }
        paths.sort();
        let mut incomplete = Vec::new();
        for path in paths {
            let record = match self.read_commit(&path).await {
                Ok(record) => record,
                // Pruned by another writer meanwhile: it was complete.
                Err(LakeError::Store(object_store::Error::NotFound { .. })) => continue,
                Err(error) => return Err(error),
            };
            let missing = self.missing_files(&record).await?;
            if !missing.is_empty() {
                incomplete.push((record, missing));
            }
        }
        Ok(incomplete)
    }

    async fn read_commit(&self, path: &StorePath) -> Result<CommitRecord> {
        let bytes = self.store.get(path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| LakeError::BadCommit {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    fn completed_set(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<(String, u64)>> {
        self.completed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn prune_commits(&self, job: &str, newest: u64) {
        let Some(cutoff) = newest.checked_sub(COMMIT_RECORDS_KEPT as u64) else {
            return;
        };
        // Only the one that just fell out of the window: each step prunes
        // one, so the directory stays at COMMIT_RECORDS_KEPT records. An
        // incomplete one stays until it is rolled forward.
        let path = Lake::commit_path(job, cutoff);
        // Another writer's record (a group member's) may be incomplete.
        let mine = {
            let mut completed = self.completed_set();
            let mine = completed.contains(&(job.to_string(), cutoff));
            // Older ones were pruned by whoever committed at their cutoff.
            completed.retain(|(j, seq)| j != job || *seq > cutoff);
            mine
        };
        if !mine {
            match self.read_commit(&path).await {
                Ok(record) => match self.missing_files(&record).await {
                    Ok(missing) if missing.is_empty() => {}
                    Ok(_) => {
                        tracing::warn!(%path, "keeping an incomplete commit record for roll-forward");
                        return;
                    }
                    Err(_) => return,
                },
                Err(_) => return,
            }
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(%error, %path, "could not prune an old commit record"),
        }
    }
}

fn plan<'a>(
    job: &str,
    seq: u64,
    groups: impl Iterator<Item = (String, String, &'a HourPartition, &'a RecordBatch)>,
) -> Vec<CommittedFile> {
    groups
        .enumerate()
        .map(|(n, (dir, table, hour, batch))| CommittedFile {
            path: format!(
                "{dir}/{}/part-{job}-{seq:010}-{n:03}.parquet",
                hour.hive_path()
            ),
            table,
            rows: batch.num_rows() as u64,
        })
        .collect()
}

/// Encodes one batch as a Parquet file.
pub fn encode_parquet(batch: &RecordBatch, codec: Codec) -> Result<Bytes> {
    let compression = match codec {
        Codec::Zstd => ParquetCompression::ZSTD(ZstdLevel::try_new(1)?),
        Codec::Snappy => ParquetCompression::SNAPPY,
    };
    let properties = WriterProperties::builder()
        .set_compression(compression)
        .set_created_by(format!("logpipe {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logpipe_core::record::{LogRecord, ValidationLimits};
    use logpipe_core::schema::LogBatchBuilder;
    use object_store::memory::InMemory;

    fn groups() -> FlushGroups {
        let raw = r#"{"timestamp": 1736645166.5, "level": "INFO", "service": "a", "message": "m"}"#;
        let record = LogRecord::parse(raw, &ValidationLimits::now()).unwrap();
        let mut builder = LogBatchBuilder::default();
        builder.append(&record);
        let mut groups = FlushGroups::new();
        groups.insert(
            (
                RecordKind::Log,
                HourPartition::of_micros(record.timestamp_micros),
            ),
            builder.finish().unwrap(),
        );
        groups
    }

    #[tokio::test]
    async fn commit_then_recover_sees_latest_and_missing_files() {
        let lake = Lake::new(Arc::new(InMemory::new()), Codec::Zstd);
        assert!(lake.latest_commit("raw").await.unwrap().is_none());
        let mut last = None;
        for seq in 1..=20u64 {
            let groups = groups();
            let files = Lake::plan_files("raw", seq, &groups);
            assert_eq!(
                files[0].path,
                format!("logs/raw/year=2025/month=1/day=12/hour=1/part-raw-{seq:010}-000.parquet")
            );
            let record = CommitRecord {
                job: "raw".into(),
                seq,
                ranges: BTreeMap::new(),
                offsets: BTreeMap::from([("logs.raw".to_string(), BTreeMap::from([(0, seq)]))]),
                files,
                invalid_records: 0,
                duplicate_records: 0,
                dedup_window: 0,
                committed_at: String::new(),
                state: None,
            };
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
}
