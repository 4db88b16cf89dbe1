//! The newest batches of each partition, kept in memory for readers at the
//! end of the log.

use super::format::BatchHeader;

/// Each partition keeps its newest batches in memory, up to this many
/// bytes, as the writer made them (see [`RecentBatches`]).
pub(super) const RECENT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The newest batches of a partition, kept by the writer after a
/// successful write. Consumers at the end of the log (the stream jobs at
/// full speed; in `logpipe up` two of them read every log record) get them
/// without a disk read, a zeroed buffer and a checksum each. Contiguous in
/// offsets: only written batches are added, in order, and a group rolled
/// back is never added. A read that starts before the oldest one goes to
/// disk as before.
#[derive(Default)]
pub(super) struct RecentBatches {
    pub(super) batches: std::collections::VecDeque<(BatchHeader, bytes::Bytes)>,
    pub(super) bytes: usize,
}

impl RecentBatches {
    pub(super) fn push(&mut self, header: BatchHeader, batch: bytes::Bytes) {
        if let Some((last, _)) = self.batches.back()
            && last.next_offset() != header.base_offset
        {
            // Not contiguous (cannot happen; be safe): start over.
            self.batches.clear();
            self.bytes = 0;
        }
        self.bytes += batch.len();
        self.batches.push_back((header, batch));
        while self.bytes > RECENT_BATCH_BYTES && self.batches.len() > 1 {
            if let Some((_, old)) = self.batches.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The kept batches holding offsets in `[offset, end)`; empty when
    /// `offset` is before the oldest.
    pub(super) fn covering(&self, offset: u64, end: u64) -> Vec<(BatchHeader, bytes::Bytes)> {
        let Some((first, _)) = self.batches.front() else {
            return Vec::new();
        };
        if offset < first.base_offset {
            return Vec::new();
        }
        let at = self
            .batches
            .partition_point(|(h, _)| h.base_offset <= offset)
            .saturating_sub(1);
        self.batches
            .range(at..)
            .take_while(|(h, _)| h.base_offset < end)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::format;

    fn batch(base_offset: u64, count: u32, value_bytes: usize) -> (BatchHeader, bytes::Bytes) {
        let value = vec![b'v'; value_bytes];
        let none = crate::Headers::default();
        let mut out = Vec::new();
        format::encode_batch(
            &mut out,
            base_offset,
            0,
            (0..count).map(|_| (&b"k"[..], &value[..], &none)),
        );
        let header = BatchHeader::decode(out.first_chunk().unwrap()).unwrap();
        (header, bytes::Bytes::from(out))
    }

    #[test]
    fn recent_batches_are_bounded_contiguous_and_found_by_offset() {
        let mut recent = RecentBatches::default();
        // 10 records a batch, about 1 MiB each: the bound keeps four.
        for i in 0..10 {
            let (header, bytes) = batch(i * 10, 10, 100_000);
            recent.push(header, bytes);
        }
        assert!(recent.bytes <= RECENT_BATCH_BYTES);
        assert_eq!(recent.batches.len(), 4);
        let bases = |found: Vec<(BatchHeader, bytes::Bytes)>| -> Vec<u64> {
            found.iter().map(|(h, _)| h.base_offset).collect()
        };
        assert_eq!(bases(recent.covering(65, 100)), vec![60, 70, 80, 90]);
        assert_eq!(bases(recent.covering(75, 85)), vec![70, 80]);
        assert_eq!(
            bases(recent.covering(59, 100)),
            Vec::<u64>::new(),
            "evicted"
        );
        // A batch that does not follow the last one starts the cache over.
        let (header, bytes) = batch(500, 1, 10);
        recent.push(header, bytes);
        assert_eq!(bases(recent.covering(500, 501)), vec![500]);
        assert_eq!(bases(recent.covering(95, 100)), Vec::<u64>::new());
    }
}
