//! The writer thread: group commit of waiting appends (one batch per
//! partition, one fsync per touched file), then visibility and acks.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use logpipe_config::FsyncPolicy;

use super::format::{self, BatchHeader, HEADER_BYTES};
use super::partition_log::PartitionLog;
use super::segment::{INDEX_INTERVAL_BYTES, Segment, open_append, segment_path, sync_dir};
use super::{AppendRequest, Inner, WriterMessage, lock_poisoned, now_ms};
use crate::EmbeddedBus;
use crate::metrics::bus_metrics;
use crate::{BusError, BusRecord, Result};

/// The writer takes at most this many waiting requests into one group, so
/// one group's memory stays bounded and acknowledgements keep flowing.
pub(super) const MAX_REQUESTS_PER_GROUP: usize = 512;

/// How often the writer checks retention.
pub(super) const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// A partition and the records a group appends to it, in order.
pub(super) type PartitionRecords<'a> = (Arc<PartitionLog>, Vec<&'a BusRecord>);

/// One partition's part of a group, staged before anything is made visible.
pub(super) struct StagedWrite {
    pub(super) log: Arc<PartitionLog>,
    /// Active segment size before the write, to roll back on failure.
    pub(super) size_before: u64,
    pub(super) next_before: u64,
    pub(super) index_entry: Option<(u64, u64)>,
    pub(super) batch_bytes: u64,
    pub(super) new_next: u64,
    /// The batch as written, kept in the partition's recent batches.
    pub(super) batch: bytes::Bytes,
}

pub(super) fn writer_loop(inner: std::sync::Weak<Inner>, receiver: Receiver<WriterMessage>) {
    let (fsync, interval, segment_bytes) = match inner.upgrade() {
        Some(inner) => (
            inner.options.fsync,
            inner.options.fsync_interval.max(Duration::from_millis(1)),
            inner.options.segment_bytes,
        ),
        None => return,
    };
    let tick = match fsync {
        FsyncPolicy::Always => RETENTION_CHECK_INTERVAL,
        FsyncPolicy::Interval => interval,
    };
    // With interval fsync: partitions written but not yet synced.
    let mut unsynced: HashMap<(Arc<str>, u32), (Arc<PartitionLog>, u64)> = HashMap::new();
    let mut last_sync = Instant::now();
    let mut last_retention = Instant::now();
    let mut stopping = false;
    while !stopping {
        let first = match receiver.recv_timeout(tick) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                stopping = true;
                None
            }
        };
        let mut requests = Vec::new();
        let mut next = first;
        while let Some(message) = next.take() {
            match message {
                WriterMessage::Append(request) => requests.push(request),
                WriterMessage::Stop => stopping = true,
            }
            if requests.len() < MAX_REQUESTS_PER_GROUP {
                next = receiver.try_recv().ok();
            }
        }
        if !requests.is_empty() {
            let result = write_group(&requests, segment_bytes, fsync == FsyncPolicy::Always);
            match result {
                Ok(staged) => {
                    for write in &staged {
                        match fsync {
                            FsyncPolicy::Always => write
                                .log
                                .visible_end
                                .store(write.new_next, Ordering::Release),
                            FsyncPolicy::Interval => {
                                unsynced.insert(
                                    (write.log.topic.clone(), write.log.partition),
                                    (write.log.clone(), write.new_next),
                                );
                            }
                        }
                    }
                    let appended: usize = requests.iter().map(|r| r.records.len()).sum();
                    for request in &requests {
                        bus_metrics()
                            .records_appended
                            .add(&[&request.topic.name], request.records.len() as u64);
                    }
                    tracing::trace!(appended, "group committed");
                    if fsync == FsyncPolicy::Always
                        && let Some(inner) = inner.upgrade()
                    {
                        inner.progress.send_modify(|n| *n += 1);
                    }
                    for request in requests {
                        let _ = request.reply.send(Ok(()));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "bus write failed; the group was rolled back and will be retried by its clients");
                    let message = error.to_string();
                    for request in requests {
                        let _ = request.reply.send(Err(BusError::Busy(message.clone())));
                    }
                }
            }
        }
        if fsync == FsyncPolicy::Interval
            && !unsynced.is_empty()
            && (last_sync.elapsed() >= interval || stopping)
        {
            let mut synced_any = false;
            for (_, (log, new_next)) in unsynced.drain() {
                let synced = log
                    .segments
                    .read()
                    .ok()
                    .and_then(|s| s.last().map(|s| s.file.sync_data()));
                match synced {
                    Some(Ok(())) => {
                        log.visible_end.store(new_next, Ordering::Release);
                        synced_any = true;
                    }
                    other => {
                        tracing::error!(topic = %log.topic, partition = log.partition, ?other, "periodic fsync failed")
                    }
                }
            }
            bus_metrics().fsyncs.inc();
            last_sync = Instant::now();
            if synced_any && let Some(inner) = inner.upgrade() {
                inner.progress.send_modify(|n| *n += 1);
            }
        }
        if last_retention.elapsed() >= RETENTION_CHECK_INTERVAL {
            last_retention = Instant::now();
            if let Some(inner) = inner.upgrade() {
                let bus = EmbeddedBus { inner };
                if let Err(error) = bus.enforce_retention() {
                    tracing::error!(%error, "retention failed");
                }
            }
        }
    }
}

/// Writes one batch per partition for all `requests`, fsyncs (when `sync`),
/// rolls segments. On any failure every partition is truncated back, so the
/// group is all or nothing.
pub(super) fn write_group(
    requests: &[AppendRequest],
    segment_bytes: u64,
    sync: bool,
) -> Result<Vec<StagedWrite>> {
    // Group records by partition, keeping request order within a partition.
    let mut by_partition: BTreeMap<(String, u32), PartitionRecords<'_>> = BTreeMap::new();
    for request in requests {
        for (partition, record) in &request.records {
            let Some(log) = request.topic.partitions.get(*partition as usize) else {
                continue;
            };
            by_partition
                .entry((request.topic.name.clone(), *partition))
                .or_insert_with(|| (log.clone(), Vec::new()))
                .1
                .push(record);
        }
    }
    let append_ms = now_ms();
    let mut staged: Vec<StagedWrite> = Vec::with_capacity(by_partition.len());
    let mut failure = None;
    for (log, records) in by_partition.into_values() {
        let result = (|| -> Result<StagedWrite> {
            let mut writer = log.writer.lock().map_err(lock_poisoned)?;
            let (file, path, size_before) = {
                let segments = log.segments.read().map_err(lock_poisoned)?;
                let active = segments
                    .last()
                    .ok_or_else(|| BusError::Corrupt("partition has no segment".into()))?;
                (active.file.clone(), active.path.clone(), active.size)
            };
            // Its own buffer: on success it is kept in the recent batches.
            let size: usize = records
                .iter()
                .map(|r| 12 + r.key.len() + r.value.len() + r.headers.encoded().len())
                .sum();
            let mut buffer = Vec::with_capacity(HEADER_BYTES + size);
            format::encode_batch(
                &mut buffer,
                writer.next_offset,
                append_ms,
                records
                    .iter()
                    .map(|r| (r.key.as_slice(), r.value.as_slice(), &r.headers)),
            );
            if let Err(e) = (&*file).write_all(&buffer) {
                // A partial write must not stay behind the rolled-back group.
                let _ = file.set_len(size_before);
                return Err(BusError::io(&path, e));
            }
            let index_entry = (writer.bytes_since_index >= INDEX_INTERVAL_BYTES
                || size_before == 0)
                .then_some((writer.next_offset, size_before));
            let next_before = writer.next_offset;
            writer.next_offset += records.len() as u64;
            Ok(StagedWrite {
                log: log.clone(),
                size_before,
                next_before,
                index_entry,
                batch_bytes: buffer.len() as u64,
                new_next: writer.next_offset,
                batch: bytes::Bytes::from(buffer),
            })
        })();
        match result {
            Ok(write) => staged.push(write),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if failure.is_none() && sync {
        for write in &staged {
            let segments = write.log.segments.read().map_err(lock_poisoned)?;
            if let Some(active) = segments.last()
                && let Err(e) = active.file.sync_data()
            {
                failure = Some(BusError::io(&active.path, e));
                break;
            }
        }
        bus_metrics().fsyncs.inc();
    }
    if let Some(error) = failure {
        for write in &staged {
            if let Ok(segments) = write.log.segments.read()
                && let Some(active) = segments.last()
            {
                let _ = active.file.set_len(write.size_before);
            }
            if let Ok(mut writer) = write.log.writer.lock() {
                writer.next_offset = write.next_before;
            }
        }
        return Err(error);
    }
    // Success: publish sizes and index entries, roll full segments.
    for write in &staged {
        let mut segments = write.log.segments.write().map_err(lock_poisoned)?;
        let mut writer = write.log.writer.lock().map_err(lock_poisoned)?;
        let Some(active) = segments.last_mut() else {
            continue;
        };
        active.size = write.size_before + write.batch_bytes;
        active.last_append_ms = append_ms;
        if let Some(header) = write
            .batch
            .first_chunk::<HEADER_BYTES>()
            .and_then(BatchHeader::decode)
        {
            let mut recent = write.log.recent.lock().map_err(lock_poisoned)?;
            recent.push(header, write.batch.clone());
        }
        match write.index_entry {
            Some(entry) => {
                active.index.push(entry);
                writer.bytes_since_index = write.batch_bytes;
            }
            None => writer.bytes_since_index += write.batch_bytes,
        }
        if active.size >= segment_bytes {
            if !sync {
                // Seal the old segment on disk before moving on.
                let _ = active.file.sync_data();
            }
            let base = writer.next_offset;
            let path = segment_path(&write.log.dir, base);
            let file = open_append(&path)?;
            sync_dir(&write.log.dir)?;
            segments.push(Segment {
                base_offset: base,
                path,
                file: Arc::new(file),
                index: Vec::new(),
                size: 0,
                last_append_ms: append_ms,
            });
            writer.bytes_since_index = 0;
        }
    }
    Ok(staged)
}
