//! The on-disk batch format of the embedded log.
//!
//! A segment file is a sequence of batches; each append writes one batch per
//! partition it touches:
//!
//! ```text
//! length      u32  bytes after this field
//! crc32       u32  CRC-32 (IEEE) of every byte after this field
//! magic       u8   1
//! base_offset u64  offset of the first record
//! count       u32  records in the batch
//! append_ms   i64  wall-clock time of the append (retention uses it)
//! records     count × (key_len u32, key, value_len u32, value)
//! ```
//!
//! All integers little-endian. A batch is valid only when it is complete and
//! its CRC matches; recovery truncates the file at the first invalid batch (a
//! write torn by a crash, which was never acknowledged).

pub const MAGIC: u8 = 1;
/// length + crc + magic + base_offset + count + append_ms.
pub const HEADER_BYTES: usize = 4 + 4 + 1 + 8 + 4 + 8;
/// No batch is larger than this (a request is capped far lower); a length
/// field above it means garbage, not a huge batch.
pub const MAX_BATCH_BYTES: u32 = 1 << 30;

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Bytes after the length field.
    pub length: u32,
    pub crc: u32,
    pub base_offset: u64,
    pub count: u32,
    pub append_ms: i64,
}

impl BatchHeader {
    /// Total bytes of the batch on disk.
    pub fn total_bytes(&self) -> u64 {
        4 + u64::from(self.length)
    }

    /// The offset after the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }

    /// Decodes a header; `None` when the bytes cannot be one.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Option<BatchHeader> {
        let u32_at =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let header = BatchHeader {
            length: u32_at(0),
            crc: u32_at(4),
            base_offset: u64_at(9),
            count: u32_at(17),
            append_ms: u64_at(21) as i64,
        };
        let minimum = (HEADER_BYTES - 4) as u32;
        if bytes[8] != MAGIC || header.length < minimum || header.length > MAX_BATCH_BYTES {
            return None;
        }
        Some(header)
    }
}

/// Appends an encoded batch of `records` (key, value) to `out`.
pub fn encode_batch<'a>(
    out: &mut Vec<u8>,
    base_offset: u64,
    append_ms: i64,
    records: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]); // length and crc, filled in below
    out.push(MAGIC);
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&append_ms.to_le_bytes());
    for (key, value) in records {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    let length = (out.len() - start - 4) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a whole batch (`bytes` starts at its length field).
pub fn verify_batch(header: &BatchHeader, bytes: &[u8]) -> bool {
    bytes.len() as u64 == header.total_bytes() && crc32fast::hash(&bytes[8..]) == header.crc
}

/// Iterates the (key, value) records of a verified batch.
pub fn decode_records(batch: &[u8]) -> RecordIter<'_> {
    RecordIter {
        rest: batch.get(HEADER_BYTES..).unwrap_or_default(),
    }
}

pub struct RecordIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let take = |rest: &mut &'a [u8]| -> Option<&'a [u8]> {
            let length = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let value = rest.get(4..4 + length)?;
            *rest = &rest[4 + length..];
            Some(value)
        };
        let key = take(&mut self.rest)?;
        let value = take(&mut self.rest)?;
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_detects_corruption() {
        let records: Vec<(&[u8], &[u8])> = vec![(b"k1", b"v1"), (b"", b"value two")];
        let mut bytes = Vec::new();
        encode_batch(&mut bytes, 42, 7, records.iter().copied());
        let header = BatchHeader::decode(bytes[..HEADER_BYTES].try_into().unwrap()).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.count, 2);
        assert_eq!(header.next_offset(), 44);
        assert!(verify_batch(&header, &bytes));
        assert_eq!(decode_records(&bytes).collect::<Vec<_>>(), records);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(!verify_batch(&header, &flipped));
        assert!(!verify_batch(&header, &bytes[..bytes.len() - 1]));
    }
}
