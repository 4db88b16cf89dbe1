//! The stream jobs' duplicate check per partition, and rebuilding it from
//! the bus when a job starts reading a partition (see
//! [`logpipe_core::dedup`] for the rule and why it needs no checkpoint).

use std::collections::BTreeMap;
use std::time::Duration;

use logpipe_bus::{Bus, ConsumedRecord};
use logpipe_core::dedup::{Dedup, HEADER, RecordId};
use logpipe_lake::{Offsets, Ranges};
use tokio::time::Instant;

use super::positions::partitions_of;
use super::ranges::{RangeRead, read_ranges};
use crate::error::StreamError;

/// How long a warm-up may take before the job gives up starting.
const WARM_UP_LIMIT: Duration = Duration::from_secs(120);
/// Empty polls in a row after which the rest of a warm-up range is taken to
/// hold no records (offsets a broker skipped: transaction markers,
/// compaction).
const WARM_UP_EMPTY_POLLS: u32 = 3;

/// One [`Dedup`] per partition the job reads: topic → partition → check.
pub struct Dedups {
    window: u64,
    partitions: BTreeMap<String, BTreeMap<u32, Dedup>>,
}

impl Dedups {
    pub fn new(window: u64) -> Dedups {
        Dedups {
            window,
            partitions: BTreeMap::new(),
        }
    }

    /// Whether `record` repeats a record with the same id read shortly
    /// before it in its partition (records without an id never do).
    pub fn is_repeat(&mut self, record: &ConsumedRecord) -> bool {
        if self.window == 0 {
            return false;
        }
        let Some(id) = record.headers.get(HEADER).and_then(RecordId::decode) else {
            return false;
        };
        partitions_of(&mut self.partitions, &record.topic)
            .entry(record.partition)
            .or_insert_with(|| Dedup::new(self.window))
            .is_repeat(id, record.offset)
    }

    /// Forgets a partition (given up in a rebalance).
    pub fn forget(&mut self, topic: &str, partition: u32) {
        if let Some(partitions) = self.partitions.get_mut(topic) {
            partitions.remove(&partition);
        }
    }

    /// Rebuilds the check of each partition in `starts` (topic → partition
    /// → the offset the job reads from next) by reading the window of
    /// offsets before it.
    pub async fn warm_up(
        &mut self,
        bus: &dyn Bus,
        job: &str,
        starts: &Offsets,
    ) -> Result<(), StreamError> {
        for (topic, partitions) in starts {
            for partition in partitions.keys() {
                self.forget(topic, *partition);
            }
        }
        if self.window == 0 || starts.is_empty() {
            return Ok(());
        }
        let window: Ranges = starts
            .iter()
            .map(|(topic, partitions)| {
                let ranges = partitions
                    .iter()
                    .map(|(p, start)| (*p, (start.saturating_sub(self.window), *start)));
                (topic.clone(), ranges.collect())
            })
            .collect();
        let began = Instant::now();
        let how = RangeRead {
            limit: WARM_UP_LIMIT,
            from_oldest: true,
            idle_polls: Some(WARM_UP_EMPTY_POLLS),
        };
        let timeout = |reason| StreamError::WarmUp {
            job: job.to_string(),
            reason,
        };
        let read = read_ranges(bus, &window, how, timeout, |record| {
            self.is_repeat(record);
            Ok(())
        })
        .await?;
        tracing::info!(
            job,
            read,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "duplicate check rebuilt from the bus"
        );
        Ok(())
    }
}
