//! Deleting sealed segments past the topic's retention time or size.

use std::fs::{self};
use std::sync::atomic::Ordering;

use super::partition_log::PartitionLog;
use super::{TopicLog, lock_poisoned, now_ms};
use crate::Result;

/// Deletes sealed segments past the topic's age or size bound. The active
/// segment is never deleted, so the next offset is never forgotten.
pub(super) fn enforce_retention(topic: &TopicLog, log: &PartitionLog) -> Result<()> {
    let cutoff_ms = now_ms() - topic.retention.as_millis() as i64;
    let mut removed = Vec::new();
    {
        let mut segments = log.segments.write().map_err(lock_poisoned)?;
        let mut total: u64 = segments.iter().map(|s| s.size).sum();
        while segments.len() > 1 {
            let oldest = &segments[0];
            let too_old = oldest.last_append_ms < cutoff_ms;
            let too_big = topic.retention_bytes > 0 && total > topic.retention_bytes;
            if !(too_old || too_big) {
                break;
            }
            total -= oldest.size;
            removed.push(segments.remove(0));
        }
        if let Some(first) = segments.first() {
            log.log_start.store(first.base_offset, Ordering::Release);
        }
    }
    for segment in removed {
        tracing::info!(topic = %topic.name, partition = log.partition, segment = %segment.path.display(), "retention deleted a segment");
        if let Err(e) = fs::remove_file(&segment.path) {
            tracing::warn!(error = %e, segment = %segment.path.display(), "could not delete segment");
        }
    }
    Ok(())
}
