//! Deleting sealed segments past the topic's retention time or size.

//! The embedded bus: a partitioned append-only log on local disk.
//!
//! Layout: `ROOT/<topic>/topic.json` (partition count) and
//! `ROOT/<topic>/<partition>/<base_offset:020>.log` segment files in the
//! [`crate::format`] batch format; consumer-group progress in
//! `ROOT/_offsets/<group>.json`; `ROOT/.lock` keeps a second process out.
//!
//! One writer thread owns every file handle that is written. Appends reach it
//! through a bounded queue (full → [`BusError::Busy`], which the collector
//! turns into 503 + `Retry-After`). It takes whatever requests are waiting,
//! writes one batch per partition, fsyncs each touched file once for the
//! whole group (group commit), and only then makes the records visible to
//! readers and acknowledges the requests. Readers therefore never see a
//! record that a crash could take back, so nothing downstream gets ahead of
//! the disk. With `FsyncMode::Interval` requests are acknowledged once
//! written and become visible at the next periodic fsync.
//!
//! Recovery at open scans the active segment, checks each batch's CRC and
//! truncates at the first torn or corrupt batch: such a batch was never
//! acknowledged, so truncating it loses nothing that was promised.

use crate::Result;
use crate::embedded::TopicLog;
use crate::embedded::lock_poisoned;
use crate::embedded::now_ms;
use crate::embedded::partition_log::PartitionLog;
use std::fs::{self};
use std::sync::atomic::Ordering;

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
