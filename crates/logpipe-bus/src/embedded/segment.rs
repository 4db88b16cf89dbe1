//! Segment files: naming, opening for append, and recovery at open (a torn
//! or corrupt tail batch is truncated: it was never acknowledged).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, BatchHeader, HEADER_BYTES};
use super::now_ms;
use crate::{BusError, Result};

/// A sparse index entry is kept every this many bytes of a segment, so a
/// read scans at most this much of batch headers to find its offset.
pub(super) const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;

pub(super) struct Segment {
    pub(super) base_offset: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    /// (first offset of a batch, byte position), every INDEX_INTERVAL_BYTES.
    pub(super) index: Vec<(u64, u64)>,
    /// Bytes of complete batches.
    pub(super) size: u64,
    pub(super) last_append_ms: i64,
}

pub(super) fn segment_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub(super) fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| BusError::io(path, e))
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BusError::io(dir, e))
}

pub(super) fn read_header(file: &File, pos: u64) -> std::io::Result<Option<BatchHeader>> {
    let mut bytes = [0u8; HEADER_BYTES];
    match file.read_exact_at(&mut bytes, pos) {
        Ok(()) => Ok(BatchHeader::decode(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The offset after the last record of `segment`.
pub(super) fn segment_end(segment: &Segment, base: u64) -> Result<u64> {
    // Walk from the last index entry to the end to find the last batch.
    let mut pos = segment.index.last().map(|(_, p)| *p).unwrap_or(0);
    let mut next = segment.index.last().map(|(o, _)| *o).unwrap_or(base);
    while pos < segment.size {
        let header = read_header(&segment.file, pos)
            .map_err(|e| BusError::io(&segment.path, e))?
            .ok_or_else(|| {
                BusError::Corrupt(format!("bad header in {}", segment.path.display()))
            })?;
        next = header.next_offset();
        pos += header.total_bytes();
    }
    Ok(next)
}

/// How much after a damaged batch is searched for intact ones.
const INTACT_SEARCH_BYTES: u64 = 256 * 1024 * 1024;

/// The byte position of an intact batch (a header that decodes, an offset
/// past `expected`, a matching checksum) after the damaged one at `pos`,
/// if there is one within [`INTACT_SEARCH_BYTES`].
pub(super) fn intact_batch_after(
    file: &File,
    pos: u64,
    length: u64,
    expected: u64,
) -> std::io::Result<Option<u64>> {
    let end = length.min(pos + INTACT_SEARCH_BYTES);
    let mut rest = vec![0u8; (end - pos) as usize];
    file.read_exact_at(&mut rest, pos)?;
    for start in 1..rest.len().saturating_sub(HEADER_BYTES) {
        let Ok(bytes) = <&[u8; HEADER_BYTES]>::try_from(&rest[start..start + HEADER_BYTES]) else {
            continue;
        };
        let Some(header) = BatchHeader::decode(bytes) else {
            continue;
        };
        let stop = start + header.total_bytes() as usize;
        if header.base_offset >= expected
            && stop <= rest.len()
            && format::verify_batch(&header, &rest[start..stop])
        {
            return Ok(Some(pos + start as u64));
        }
    }
    Ok(None)
}

/// Scans a segment, building its sparse index. The active (last) segment is
/// fully checksummed and truncated at the first bad batch; a bad batch in a
/// sealed segment is corruption and stops the open.
pub(super) fn recover_segment(
    base: u64,
    path: PathBuf,
    file: File,
    is_active: bool,
) -> Result<Segment> {
    let length = file.metadata().map_err(|e| BusError::io(&path, e))?.len();
    let mut pos = 0u64;
    let mut expected = base;
    let mut index = Vec::new();
    let mut since_index = INDEX_INTERVAL_BYTES; // index the first batch
    let mut last_append_ms = 0;
    while pos < length {
        let header = read_header(&file, pos).map_err(|e| BusError::io(&path, e))?;
        let valid = match header {
            Some(h) if h.base_offset == expected && pos + h.total_bytes() <= length => {
                if is_active {
                    let mut batch = vec![0u8; h.total_bytes() as usize];
                    file.read_exact_at(&mut batch, pos)
                        .map_err(|e| BusError::io(&path, e))?;
                    format::verify_batch(&h, &batch).then_some(h)
                } else {
                    Some(h)
                }
            }
            _ => None,
        };
        let Some(header) = valid else {
            if !is_active {
                return Err(BusError::Corrupt(format!(
                    "sealed segment {} is damaged at byte {pos}",
                    path.display()
                )));
            }
            // A crash tears only what was being written last. Intact batches
            // after the damage mean the file was damaged later (a bad disk,
            // a stray write): cutting it would drop acknowledged records.
            if let Some(intact) = intact_batch_after(&file, pos, length, expected)
                .map_err(|e| BusError::io(&path, e))?
            {
                return Err(BusError::Corrupt(format!(
                    "segment {path} is damaged at byte {pos}, and intact records follow at byte \
                     {intact}: this is not the torn tail of a crash, and cutting the file there would \
                     lose acknowledged records. Restore the file from a backup; to give up the records \
                     from byte {pos} on instead, `truncate -s {pos} {path}` (a stream job that had read \
                     past the cut then stops at that partition, naming it, rather than skip new records). \
                     A power loss can also leave a hole before records never acknowledged: after one, \
                     the cut loses nothing acknowledged",
                    path = path.display()
                )));
            }
            tracing::warn!(
                segment = %path.display(),
                at_byte = pos,
                dropped_bytes = length - pos,
                "truncating a torn or corrupt tail left by a crash (it was never acknowledged)"
            );
            file.set_len(pos).map_err(|e| BusError::io(&path, e))?;
            file.sync_all().map_err(|e| BusError::io(&path, e))?;
            break;
        };
        if since_index >= INDEX_INTERVAL_BYTES {
            index.push((header.base_offset, pos));
            since_index = 0;
        }
        since_index += header.total_bytes();
        last_append_ms = header.append_ms;
        expected = header.next_offset();
        pos += header.total_bytes();
    }
    if last_append_ms == 0 {
        last_append_ms = now_ms();
    }
    Ok(Segment {
        base_offset: base,
        path,
        file: Arc::new(file),
        index,
        size: pos,
        last_append_ms,
    })
}
