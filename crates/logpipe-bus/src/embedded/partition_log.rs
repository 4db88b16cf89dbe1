//! One partition: its segments, the offsets readers may see, and reads.

use std::fs::{self};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::format::{self, BatchHeader};
use super::lock_poisoned;
use super::recent::RecentBatches;
use super::segment::{
    Segment, open_append, read_header, recover_segment, segment_end, segment_path,
};
use crate::{BusError, ConsumedRecord, Result};

/// Bytes one partition read returns at most (bounds a poll's memory).
pub(super) const MAX_READ_BYTES_PER_PARTITION: usize = 8 * 1024 * 1024;

/// The part of a partition only the writer thread touches.
pub(super) struct WriterState {
    /// Next offset to assign.
    pub(super) next_offset: u64,
    /// Bytes written since the last index entry of the active segment.
    pub(super) bytes_since_index: u64,
}

pub(super) struct PartitionLog {
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) dir: PathBuf,
    pub(super) segments: RwLock<Vec<Segment>>,
    /// Readers see offsets below this: durable under the fsync policy.
    pub(super) visible_end: AtomicU64,
    /// Oldest offset still kept.
    pub(super) log_start: AtomicU64,
    pub(super) writer: Mutex<WriterState>,
    pub(super) recent: Mutex<RecentBatches>,
}

impl PartitionLog {
    /// Opens (recovering) or creates a partition directory.
    pub(super) fn open(topic: &str, partition: u32, dir: PathBuf) -> Result<PartitionLog> {
        fs::create_dir_all(&dir).map_err(|e| BusError::io(&dir, e))?;
        let mut bases: Vec<u64> = fs::read_dir(&dir)
            .map_err(|e| BusError::io(&dir, e))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<u64>().ok()
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let mut segments = Vec::with_capacity(bases.len());
        let mut expected_next = bases[0];
        let last = bases.len() - 1;
        for (i, base) in bases.iter().copied().enumerate() {
            let path = segment_path(&dir, base);
            let file = open_append(&path)?;
            if base != expected_next {
                return Err(BusError::Corrupt(format!(
                    "{} starts at offset {base} but the previous segment ends at {expected_next}",
                    path.display()
                )));
            }
            let segment = recover_segment(base, path, file, i == last)?;
            expected_next = segment_end(&segment, base)?;
            segments.push(segment);
        }
        let log_start = segments.first().map(|s| s.base_offset).unwrap_or(0);
        let bytes_since_index = segments
            .last()
            .map(|s| s.size - s.index.last().map(|(_, pos)| *pos).unwrap_or(0))
            .unwrap_or(0);
        Ok(PartitionLog {
            topic: Arc::from(topic),
            partition,
            dir,
            segments: RwLock::new(segments),
            visible_end: AtomicU64::new(expected_next),
            log_start: AtomicU64::new(log_start),
            writer: Mutex::new(WriterState {
                next_offset: expected_next,
                bytes_since_index,
            }),
            recent: Mutex::new(RecentBatches::default()),
        })
    }

    pub(super) fn bounds(&self) -> (u64, u64) {
        (
            self.log_start.load(Ordering::Acquire),
            self.visible_end.load(Ordering::Acquire),
        )
    }

    /// Appends the records of `batch` in `[next, end)` to `out`; returns
    /// their key and value bytes.
    pub(super) fn take_records(
        &self,
        header: &BatchHeader,
        batch: &bytes::Bytes,
        next: u64,
        end: u64,
        out: &mut Vec<ConsumedRecord>,
    ) -> usize {
        let mut bytes = 0;
        for (i, (key, value, headers)) in format::decode_records(batch).enumerate() {
            let record_offset = header.base_offset + i as u64;
            if record_offset < next {
                continue;
            }
            if record_offset >= end {
                break;
            }
            out.push(ConsumedRecord {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: record_offset,
                key: batch.slice_ref(key),
                value: batch.slice_ref(value),
                headers,
            });
            bytes += key.len() + value.len();
        }
        bytes
    }

    /// Reads visible records from `offset`, at most `max_records`.
    pub(super) fn read(&self, offset: u64, max_records: usize) -> Result<Vec<ConsumedRecord>> {
        let (log_start, end) = self.bounds();
        if offset < log_start {
            return Err(BusError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.partition,
                requested: offset,
                log_start,
            });
        }
        if offset > end {
            return Err(BusError::OffsetBeyondEnd {
                topic: self.topic.to_string(),
                partition: self.partition,
                requested: offset,
                log_end: end,
            });
        }
        // Sized once: grown by doubling, a full read's records (over a
        // hundred bytes each) were copied again and again.
        let mut out = Vec::with_capacity(max_records.min((end - offset) as usize));
        let mut bytes_read = 0usize;
        let mut next = offset;
        let recent = self
            .recent
            .lock()
            .map_err(lock_poisoned)?
            .covering(next, end);
        for (header, batch) in &recent {
            if header.next_offset() <= next {
                continue;
            }
            if header.base_offset > next // a gap: cannot happen, but the disk has it
                || next >= end
                || out.len() >= max_records
                || bytes_read >= MAX_READ_BYTES_PER_PARTITION
            {
                break;
            }
            bytes_read += self.take_records(header, batch, next, end, &mut out);
            next = header.next_offset().min(end);
        }
        'segments: while next < end
            && out.len() < max_records
            && bytes_read < MAX_READ_BYTES_PER_PARTITION
        {
            let (file, path, mut pos) = {
                let segments = self.segments.read().map_err(lock_poisoned)?;
                let at = segments.partition_point(|s| s.base_offset <= next);
                let Some(segment) = at.checked_sub(1).map(|i| &segments[i]) else {
                    // Deleted by retention since the bounds check.
                    return Err(BusError::OffsetOutOfRange {
                        topic: self.topic.to_string(),
                        partition: self.partition,
                        requested: next,
                        log_start: self.log_start.load(Ordering::Acquire),
                    });
                };
                let floor = segment.index.partition_point(|(o, _)| *o <= next);
                let pos = floor
                    .checked_sub(1)
                    .map(|i| segment.index[i].1)
                    .unwrap_or(0);
                (segment.file.clone(), segment.path.clone(), pos)
            };
            loop {
                let header = read_header(&file, pos).map_err(|e| BusError::io(&path, e))?;
                let Some(header) = header else {
                    // End of a sealed segment: continue in the next one.
                    continue 'segments;
                };
                if header.next_offset() <= next {
                    pos += header.total_bytes();
                    continue;
                }
                let mut batch = vec![0u8; header.total_bytes() as usize];
                file.read_exact_at(&mut batch, pos)
                    .map_err(|e| BusError::io(&path, e))?;
                if !format::verify_batch(&header, &batch) {
                    return Err(BusError::Corrupt(format!(
                        "batch at byte {pos} of {} fails its checksum",
                        path.display()
                    )));
                }
                let batch = bytes::Bytes::from(batch);
                bytes_read += self.take_records(&header, &batch, next, end, &mut out);
                next = header.next_offset().min(end);
                pos += header.total_bytes();
                if next >= end
                    || out.len() >= max_records
                    || bytes_read >= MAX_READ_BYTES_PER_PARTITION
                {
                    break 'segments;
                }
            }
        }
        Ok(out)
    }
}
