//! Committing a step of a job that checkpoints its whole state with its
//! offsets (the window job, the streaming SQL jobs): one commit record
//! holding the offsets, the state and the step's files, then the files.

use std::collections::BTreeMap;

use logpipe_core::time::micros_to_rfc3339;
use logpipe_lake::{CommitRecord, Lake, Offsets, TableGroups, plan_files};
use serde::Serialize;

use crate::error::StreamError;

/// Commits step `seq` of `job`: `state` (with the step's output in it) and
/// `positions` in the record, `groups` as its files.
pub async fn commit_checkpoint(
    lake: &Lake,
    job: &str,
    seq: u64,
    state: &impl Serialize,
    step_micros: i64,
    groups: &TableGroups,
    positions: &Offsets,
) -> Result<(), StreamError> {
    let record = CommitRecord {
        job: job.to_string(),
        seq,
        ranges: BTreeMap::new(),
        offsets: positions.clone(),
        files: plan_files(job, seq, groups),
        invalid_records: 0,
        duplicate_records: 0,
        dedup_window: 0,
        committed_at: micros_to_rfc3339(step_micros),
        state: Some(
            serde_json::to_value(state).map_err(|e| StreamError::BadState {
                job: job.to_string(),
                reason: e.to_string(),
            })?,
        ),
    };
    let encoded = lake
        .encode_files(groups.values().cloned().collect())
        .await?;
    lake.commit(&record, encoded).await?;
    Ok(())
}
