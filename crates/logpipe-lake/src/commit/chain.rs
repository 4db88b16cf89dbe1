//! Reading a job's commit chain: its newest record, the files a record
//! lists that are missing, and the records a dead writer left incomplete.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;

use super::{Chain, CommitRecord, CommittedFile};
use crate::Lake;
use crate::error::{LakeError, Result};
use crate::layout::commit_dir;

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
    pub async fn incomplete_commits(
        &self,
        job: &str,
    ) -> Result<Vec<(CommitRecord, Vec<CommittedFile>)>> {
        let mut paths = Vec::new();
        let mut listing = self.store().list(Some(&commit_dir(job)));
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

    pub(crate) async fn read_commit(&self, path: &StorePath) -> Result<CommitRecord> {
        let bytes = self.store().get(path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| LakeError::BadCommit {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }
}
