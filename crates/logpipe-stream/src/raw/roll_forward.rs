//! Completing a commit whose files did not all reach the store (a member
//! died between its commit record and its last file): re-read exactly its
//! bus ranges and rebuild the same files.

use std::time::Duration;

use logpipe_lake::{CommitRecord, CommittedFile, LakeError, Offsets, plan_files};

use super::RawToLake;
use super::buffer::Buffer;
use crate::error::StreamError;
use crate::runtime::dedup::Dedups;
use crate::runtime::ranges::{RangeRead, read_ranges};

impl RawToLake {
    /// Completes every kept commit whose files are incomplete (a member
    /// died between its commit record and its last file).
    pub(super) async fn roll_forward_all(&self) -> Result<(), StreamError> {
        for (record, missing) in self.lake.incomplete_commits(&self.options.job).await? {
            self.roll_forward(&record, &missing).await?;
        }
        Ok(())
    }

    /// Completes a commit whose files did not all reach the store: re-reads
    /// exactly its bus ranges and rebuilds the same files.
    async fn roll_forward(
        &self,
        record: &CommitRecord,
        missing: &[CommittedFile],
    ) -> Result<(), StreamError> {
        tracing::warn!(
            seq = record.seq,
            missing = missing.len(),
            "the last lake commit was interrupted; rebuilding its missing files from the bus"
        );
        let fail = |reason: String| StreamError::RollForward {
            seq: record.seq,
            reason,
        };
        // The same copies are dropped as when the commit was made.
        let mut dedups = Dedups::new(record.dedup_window);
        let starts: Offsets = record
            .ranges
            .iter()
            .map(|(topic, partitions)| {
                let starts = partitions.iter().map(|(p, (start, _))| (*p, *start));
                (topic.clone(), starts.collect())
            })
            .collect();
        dedups.warm_up(&*self.bus, &record.job, &starts).await?;
        let mut buffer = Buffer::default();
        let how = RangeRead {
            limit: Duration::from_secs(60),
            from_oldest: false,
            idle_polls: None,
        };
        read_ranges(&*self.bus, &record.ranges, how, fail, |consumed| {
            buffer.add(consumed, &mut dedups)
        })
        .await?;
        let groups = buffer.take_groups()?;
        let files = plan_files(&record.job, record.seq, &groups);
        if files != record.files {
            return Err(StreamError::Lake(LakeError::RollForwardMismatch {
                seq: record.seq,
                expected: format!("{:?}", record.files),
                found: format!("{files:?}"),
            }));
        }
        let encoded = self.lake.encode(groups).await?;
        let put = self.lake.put_missing(files, encoded, missing).await?;
        tracing::info!(
            seq = record.seq,
            files = put,
            "interrupted lake commit completed"
        );
        Ok(())
    }
}
