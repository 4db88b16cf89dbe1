//! The on-disk batch format of the embedded log.
//!
//! A segment file is a sequence of batches; each append writes one batch per
//! partition it touches:
//!
//! ```text
//! length      u32  bytes after this field
//! crc32       u32  CRC-32 (IEEE) of every byte after this field
//! magic       u8   2
//! base_offset u64  offset of the first record
//! count       u32  records in the batch
//! append_ms   i64  wall-clock time of the append (retention uses it)
//! records     count × (key_len u32, key, value_len u32, value,
//!                      headers_len u32, headers)
//! ```
//!
//! `headers` is a [`Headers`] block. Magic 1 batches, written before headers
//! existed, have no `headers_len, headers` and are still read (their
//! records have no headers), so a data directory survives the upgrade.
//!
//! All integers little-endian. A batch is valid only when it is complete and
//! its CRC matches; recovery truncates the file at the first invalid batch (a
//! write torn by a crash, which was never acknowledged).

use bytes::Bytes;

use crate::Headers;

/// The magic byte written; [`MAGIC_WITHOUT_HEADERS`] is still read.
pub const MAGIC: u8 = 2;
pub const MAGIC_WITHOUT_HEADERS: u8 = 1;
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
        if !matches!(bytes[8], MAGIC | MAGIC_WITHOUT_HEADERS)
            || header.length < minimum
            || header.length > MAX_BATCH_BYTES
        {
            return None;
        }
        Some(header)
    }
}

/// Appends an encoded batch of `records` (key, value, headers) to `out`.
pub fn encode_batch<'a>(
    out: &mut Vec<u8>,
    base_offset: u64,
    append_ms: i64,
    records: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8], &'a Headers)>,
) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]); // length and crc, filled in below
    out.push(MAGIC);
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&append_ms.to_le_bytes());
    for (key, value, headers) in records {
        for field in [key, value, headers.encoded()] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field);
        }
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

/// Iterates the (key, value, headers) records of a verified batch; key,
/// value and headers share the batch's buffer.
pub fn decode_records(batch: &Bytes) -> RecordIter<'_> {
    RecordIter {
        batch,
        with_headers: batch.get(8) == Some(&MAGIC),
        rest: batch.get(HEADER_BYTES..).unwrap_or_default(),
    }
}

pub struct RecordIter<'a> {
    batch: &'a Bytes,
    with_headers: bool,
    rest: &'a [u8],
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = (&'a [u8], &'a [u8], Headers);

    fn next(&mut self) -> Option<Self::Item> {
        let take = |rest: &mut &'a [u8]| -> Option<&'a [u8]> {
            let length = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let value = rest.get(4..4 + length)?;
            *rest = &rest[4 + length..];
            Some(value)
        };
        let key = take(&mut self.rest)?;
        let value = take(&mut self.rest)?;
        let headers = match self.with_headers {
            true => match take(&mut self.rest)? {
                // No reference to the batch for a record without headers.
                [] => Headers::default(),
                block => Headers::from_encoded(self.batch.slice_ref(block)),
            },
            false => Headers::default(),
        };
        Some((key, value, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_detects_corruption() {
        let headers: Headers = [("h", &b"x"[..])].into_iter().collect();
        let none = Headers::default();
        let records: Vec<(&[u8], &[u8], &Headers)> =
            vec![(b"k1", b"v1", &headers), (b"", b"value two", &none)];
        let mut bytes = Vec::new();
        encode_batch(&mut bytes, 42, 7, records.iter().copied());
        let header = BatchHeader::decode(bytes[..HEADER_BYTES].try_into().unwrap()).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.count, 2);
        assert_eq!(header.next_offset(), 44);
        assert!(verify_batch(&header, &bytes));
        let batch = Bytes::from(bytes.clone());
        let decoded: Vec<_> = decode_records(&batch).collect();
        let expected: Vec<_> = records
            .iter()
            .map(|(k, v, h)| (*k, *v, (*h).clone()))
            .collect();
        assert_eq!(decoded, expected);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(!verify_batch(&header, &flipped));
        assert!(!verify_batch(&header, &bytes[..bytes.len() - 1]));
    }

    /// A batch as written before headers existed (magic 1), byte by byte.
    #[test]
    fn batches_without_headers_are_still_read() {
        let mut bytes = vec![0u8; 8];
        bytes.push(MAGIC_WITHOUT_HEADERS);
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&9i64.to_le_bytes());
        for field in [&b"key"[..], b"value"] {
            bytes.extend_from_slice(&(field.len() as u32).to_le_bytes());
            bytes.extend_from_slice(field);
        }
        let length = (bytes.len() - 4) as u32;
        let crc = crc32fast::hash(&bytes[8..]);
        bytes[..4].copy_from_slice(&length.to_le_bytes());
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());

        let header = BatchHeader::decode(bytes[..HEADER_BYTES].try_into().unwrap()).unwrap();
        assert!(verify_batch(&header, &bytes));
        let batch = Bytes::from(bytes);
        let decoded: Vec<_> = decode_records(&batch).collect();
        assert_eq!(
            decoded,
            vec![(&b"key"[..], &b"value"[..], Headers::default())]
        );
    }
}
