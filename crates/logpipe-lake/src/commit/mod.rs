//! The exactly-once commit protocol.
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
//! them in a rebalance and drops its step: [`StepOutcome::Fenced`]), and
//! retries at the next number ([`Lake::commit_step`]). A record whose files
//! are incomplete is never pruned, so whichever member next takes the
//! partitions rolls it forward.
//!
//! **A writer cut off from the store.** Its create of step *n* may reach
//! the store long after it was sent (a network partition, then TCP
//! delivering what it had queued), when the other members have committed
//! far beyond *n* and pruned record *n*: the create then succeeds. Records
//! are made in sequence order, so a record the store made after records
//! numbered above it is such a late one: its writer deletes it before
//! writing any file and drops the step like any other taken number, and a
//! member rolling incomplete records forward deletes one it finds instead
//! (the several-hosts test, `tests/it/hosts.rs`, lost records before this).
//!
//! - [`chain`] — reading the chain (newest commit, incomplete commits).
//! - [`prune`] — keeping the chain short.

use std::collections::BTreeMap;

use bytes::Bytes;
use logpipe_core::TableDef;
use logpipe_core::time::{HourPartition, micros_to_rfc3339, now_micros};
use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::Lake;
use crate::error::{LakeError, Result};
use crate::layout::{TableGroups, commit_path, data_file_path};
use crate::metrics::lake_metrics;

pub mod chain;
pub(crate) mod prune;

/// Offsets per topic, per partition.
pub type Offsets = BTreeMap<String, BTreeMap<u32, u64>>;

/// Offset ranges: topic → partition → `[from, to)`.
pub type Ranges = BTreeMap<String, BTreeMap<u32, (u64, u64)>>;

/// One file of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// Path relative to the lake root.
    pub path: String,
    pub table: String,
    pub rows: u64,
}

/// The commit record of one flush step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub job: String,
    pub seq: u64,
    /// Bus records this step consumed: topic → partition → [start, end).
    pub ranges: Ranges,
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

#[cfg(test)]
impl CommitRecord {
    /// Step `seq` of `job` writing `files`, nothing else recorded.
    pub(crate) fn for_test(job: &str, seq: u64, files: Vec<CommittedFile>) -> CommitRecord {
        CommitRecord {
            job: job.to_string(),
            seq,
            ranges: Ranges::new(),
            offsets: Offsets::new(),
            files,
            invalid_records: 0,
            duplicate_records: 0,
            dedup_window: 0,
            committed_at: String::new(),
            state: None,
        }
    }
}

/// The files step `seq` of `job` writes for `groups`, in order (see
/// [`data_file_path`]).
pub fn plan_files(job: &str, seq: u64, groups: &TableGroups) -> Vec<CommittedFile> {
    plan_shapes(job, seq, &shapes_of(groups))
}

/// A group of a step as its plan sees it: table, hour and row count.
type GroupShape = (&'static TableDef, HourPartition, usize);

/// What [`plan_shapes`] needs of `groups`, in their order.
fn shapes_of(groups: &TableGroups) -> Vec<GroupShape> {
    groups
        .iter()
        .map(|(&(table, hour), batch)| (table, hour, batch.num_rows()))
        .collect()
}

/// [`plan_files`] from the groups' shapes, in the groups' order.
fn plan_shapes(job: &str, seq: u64, shapes: &[GroupShape]) -> Vec<CommittedFile> {
    shapes
        .iter()
        .enumerate()
        .map(|(n, (table, hour, rows))| CommittedFile {
            path: data_file_path(table, hour, job, seq, n),
            table: table.name.to_string(),
            rows: *rows as u64,
        })
        .collect()
}

/// The newest commit of a job this process knows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    /// Where each partition resumes (all partitions any member committed).
    pub offsets: Offsets,
}

/// A step of a job whose writers share one chain (the raw→lake job's
/// group members): what it read and what it writes.
#[derive(Debug)]
pub struct Step {
    pub job: String,
    pub ranges: Ranges,
    pub groups: TableGroups,
    pub invalid_records: u64,
    pub duplicate_records: u64,
    pub dedup_window: u64,
}

/// What became of a [`Step`].
#[derive(Debug)]
pub enum StepOutcome {
    Committed(CommitRecord),
    /// Another member committed partitions this step read (this process
    /// lost them without noticing): the step was dropped and the chain
    /// moved to the newest commit; re-read from its offsets.
    Fenced,
}

impl Lake {
    /// Runs one step of the protocol for `record`: the commit record, then
    /// the files (`encoded` in the record's file order). Fails with
    /// [`LakeError::CommitTaken`] when another writer made step `seq`.
    pub async fn commit(&self, record: &CommitRecord, encoded: Vec<Bytes>) -> Result<()> {
        let began = std::time::Instant::now();
        let path = commit_path(&record.job, record.seq);
        let body = serde_json::to_vec_pretty(record).map_err(|e| LakeError::BadCommit {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let created = self
            .store()
            .put_opts(
                &path,
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await;
        let taken = || LakeError::CommitTaken {
            job: record.job.clone(),
            seq: record.seq,
        };
        match created {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Err(taken()),
            Err(error) => return Err(error.into()),
        }
        // A writer cut off from the store (its group lost it meanwhile)
        // whose create arrived late may find `seq` free again because the
        // chain moved on and pruned it: the number was taken after all.
        if self.made_out_of_order(&record.job, record.seq).await? {
            tracing::warn!(
                job = record.job,
                seq = record.seq,
                "this commit reached the store after newer ones (the process was cut off \
                 from it); dropping the step, another member committed its partitions"
            );
            self.delete_commit(&path).await?;
            return Err(taken());
        }
        let sizes: Vec<u64> = encoded.iter().map(|bytes| bytes.len() as u64).collect();
        self.put_files(&record.files, encoded).await?;
        self.completed_set()
            .insert((record.job.clone(), record.seq));
        self.prune_commits(&record.job, record.seq).await;
        let metrics = lake_metrics();
        for (file, bytes) in record.files.iter().zip(sizes) {
            metrics.rows_committed.add(&[&file.table], file.rows);
            metrics.files_committed.inc(&[&file.table]);
            metrics.bytes_committed.add(&[&file.table], bytes);
        }
        metrics.commits.inc();
        metrics
            .commit_duration
            .observe(&[&record.job], began.elapsed().as_secs_f64());
        tracing::debug!(
            job = record.job,
            seq = record.seq,
            files = record.files.len(),
            "lake commit"
        );
        Ok(())
    }

    /// Commits `step` after the newest commit in `chain`, whose offsets it
    /// moves on for the partitions the step read. If another writer of the
    /// job committed meanwhile, takes the chain from it and either goes on
    /// at the next number or, when that writer committed partitions this
    /// step read, drops the step ([`StepOutcome::Fenced`]).
    pub async fn commit_step(&self, chain: &mut Chain, mut step: Step) -> Result<StepOutcome> {
        // The plan needs only each group's key and row count: the batches
        // themselves go to the encoder, which frees them as it goes.
        let shapes = shapes_of(&step.groups);
        let encoded = self.encode(std::mem::take(&mut step.groups)).await?;
        let mut record = CommitRecord {
            job: step.job,
            seq: 0,
            ranges: step.ranges,
            offsets: Offsets::new(),
            files: Vec::new(),
            invalid_records: step.invalid_records,
            duplicate_records: step.duplicate_records,
            dedup_window: step.dedup_window,
            committed_at: micros_to_rfc3339(now_micros()),
            state: None,
        };
        loop {
            // The step goes after the newest commit known; its offsets are
            // that commit's, moved on for the partitions this step read.
            record.seq = chain.seq + 1;
            record.files = plan_shapes(&record.job, record.seq, &shapes);
            record.offsets = chain.offsets.clone();
            for (topic, partitions) in &record.ranges {
                let offsets = record.offsets.entry(topic.clone()).or_default();
                for (partition, (_, end)) in partitions {
                    offsets.insert(*partition, *end);
                }
            }
            match self.commit(&record, encoded.clone()).await {
                Ok(()) => {
                    chain.seq = record.seq;
                    chain.offsets = record.offsets.clone();
                    return Ok(StepOutcome::Committed(record));
                }
                Err(LakeError::CommitTaken { .. }) => {
                    *chain = self.chain(&record.job).await?;
                    let fenced = record.ranges.iter().any(|(topic, partitions)| {
                        partitions.iter().any(|(partition, (start, _))| {
                            chain
                                .offsets
                                .get(topic)
                                .and_then(|p| p.get(partition))
                                .is_some_and(|committed| committed > start)
                        })
                    });
                    if fenced {
                        return Ok(StepOutcome::Fenced);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
}
