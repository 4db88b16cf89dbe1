//! Reading a job's commit chain: its newest record, the files a record
//! lists that are missing, and the records a dead writer left incomplete.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;

use super::{Chain, CommitRecord, CommittedFile};
use crate::Lake;
use crate::error::{LakeError, Result};
use crate::layout::{commit_dir, commit_path};

impl Lake {
    /// The newest commit record of `job`, if any.
    pub async fn latest_commit(&self, job: &str) -> Result<Option<CommitRecord>> {
        let mut newest: Option<StorePath> = None;
        let mut listing = self.store().list(Some(&commit_dir(job)));
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

    /// Where `job` stands: its newest commit (sequence 0 and no offsets
    /// when none).
    pub async fn chain(&self, job: &str) -> Result<Chain> {
        Ok(match self.latest_commit(job).await? {
            Some(record) => Chain {
                seq: record.seq,
                offsets: record.offsets,
            },
            None => Chain::default(),
        })
    }

    /// Files of `record` not (yet) in the store.
    pub async fn missing_files(&self, record: &CommitRecord) -> Result<Vec<CommittedFile>> {
        let mut missing = Vec::new();
        for file in &record.files {
            match self
                .store()
                .head(&StorePath::from(file.path.as_str()))
                .await
            {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => missing.push(file.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(missing)
    }

    /// Every kept commit record of `job` whose files are not all in the
    /// store (a writer died half-way), oldest first, with its missing files.
    /// A record made out of order (see [`Lake::made_out_of_order`]) is not
    /// one: it is deleted instead of rolled forward.
    pub async fn incomplete_commits(
        &self,
        job: &str,
    ) -> Result<Vec<(CommitRecord, Vec<CommittedFile>)>> {
        let listed = self.list_commits(job, None).await?;
        let mut incomplete = Vec::new();
        for (seq, path, _) in &listed {
            let record = match self.read_commit(path).await {
                Ok(record) => record,
                // Pruned by another writer meanwhile: it was complete.
                Err(LakeError::Store(object_store::Error::NotFound { .. })) => continue,
                Err(error) => return Err(error),
            };
            let missing = self.missing_files(&record).await?;
            if missing.is_empty() {
                continue;
            }
            if out_of_order(&listed, *seq) {
                tracing::warn!(
                    job,
                    seq,
                    "deleting a commit record made after newer ones (a writer cut off from the \
                     store sent it late): its step was committed by another member"
                );
                self.delete_commit(path).await?;
                continue;
            }
            incomplete.push((record, missing));
        }
        Ok(incomplete)
    }

    /// Whether commit `seq` of `job`, just created, was made after records
    /// numbered above it. Records are made in sequence order (a writer makes
    /// `n` only after it saw `n - 1`), so that can only be a writer cut off
    /// from the store whose create arrived after the chain moved on and
    /// pruned `seq`: the number was used before, by another member that
    /// committed the same partitions. Its files must not be written (they
    /// would replace that member's files of the same name).
    pub(crate) async fn made_out_of_order(&self, job: &str, seq: u64) -> Result<bool> {
        let after = seq.checked_sub(1).map(|before| commit_path(job, before));
        let listed = self.list_commits(job, after.as_ref()).await?;
        Ok(out_of_order(&listed, seq))
    }

    /// `job`'s commit records (after `offset` when given): sequence number,
    /// path and when the store made it, in sequence order.
    async fn list_commits(
        &self,
        job: &str,
        offset: Option<&StorePath>,
    ) -> Result<Vec<(u64, StorePath, DateTime<Utc>)>> {
        let dir = commit_dir(job);
        let mut listing = match offset {
            Some(offset) => self.store().list_with_offset(Some(&dir), offset),
            None => self.store().list(Some(&dir)),
        };
        let mut listed = Vec::new();
        while let Some(meta) = listing.try_next().await? {
            let seq = meta
                .location
                .filename()
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|seq| seq.parse::<u64>().ok());
            if let Some(seq) = seq {
                listed.push((seq, meta.location, meta.last_modified));
            }
        }
        listed.sort_by_key(|(seq, _, _)| *seq);
        Ok(listed)
    }

    pub(crate) async fn delete_commit(&self, path: &StorePath) -> Result<()> {
        match self.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    pub(crate) async fn read_commit(&self, path: &StorePath) -> Result<CommitRecord> {
        let bytes = self.store().get(path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| LakeError::BadCommit {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Whether record `seq` of `listed` was made after a record numbered above
/// it (strictly earlier by the store's clock; a coarse clock can only hide
/// such a record, never invent one).
fn out_of_order(listed: &[(u64, StorePath, DateTime<Utc>)], seq: u64) -> bool {
    let Some((_, _, made)) = listed.iter().find(|(s, _, _)| *s == seq) else {
        return false;
    };
    listed
        .iter()
        .filter(|(s, _, _)| *s > seq)
        .any(|(_, _, later)| later < made)
}
