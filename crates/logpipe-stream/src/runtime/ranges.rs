//! Reading exact offset ranges again, with a reader of its own: a
//! roll-forward of an interrupted commit, the duplicate check's warm-up.

use std::collections::BTreeMap;
use std::time::Duration;

use logpipe_bus::{Bus, ConsumedRecord, Consumer};
use logpipe_lake::Ranges;
use tokio::time::Instant;

use super::poller::POLL_MAX_RECORDS;
use crate::error::StreamError;

/// How [`read_ranges`] reads.
pub struct RangeRead {
    /// Fail when the bus has not returned every range by then.
    pub limit: Duration,
    /// Start a range that begins below its partition's oldest kept offset
    /// there; without it, the bus reports the deleted records as an error.
    pub from_oldest: bool,
    /// End early after this many empty polls in a row (a range whose last
    /// offsets hold no record: transaction markers, compaction).
    pub idle_polls: Option<u32>,
}

/// Reads `ranges` with a reader of its own (no group membership) and hands
/// each record in them to `each`, in offset order within a partition. The
/// other partitions of the topics are skipped where the bus knows their
/// end. Returns the records handed over; when `how.limit` passes first,
/// fails with `timeout(the ranges not read)`.
pub async fn read_ranges(
    bus: &dyn Bus,
    ranges: &Ranges,
    how: RangeRead,
    timeout: impl FnOnce(String) -> StreamError,
    each: impl FnMut(&ConsumedRecord) -> Result<(), StreamError>,
) -> Result<u64, StreamError> {
    let topics: Vec<&str> = ranges.keys().map(String::as_str).collect();
    let mut reader = bus.reader("logpipe-range-reader", &topics).await?;
    let read = read_with(bus, &mut *reader, ranges, how, timeout, each).await;
    reader.close().await;
    read
}

/// [`read_ranges`] with its reader.
async fn read_with(
    bus: &dyn Bus,
    reader: &mut dyn Consumer,
    ranges: &Ranges,
    how: RangeRead,
    timeout: impl FnOnce(String) -> StreamError,
    mut each: impl FnMut(&ConsumedRecord) -> Result<(), StreamError>,
) -> Result<u64, StreamError> {
    let mut remaining = Ranges::new();
    let mut oldest: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for tp in reader.assignment() {
        match ranges.get(&tp.topic).and_then(|p| p.get(&tp.partition)) {
            Some(&(from, to)) => {
                let from = if how.from_oldest {
                    if !oldest.contains_key(&tp.topic) {
                        oldest.insert(tp.topic.clone(), reader.start_offsets(&tp.topic)?);
                    }
                    let kept = oldest[&tp.topic].get(tp.partition as usize).copied();
                    from.max(kept.unwrap_or(0))
                } else {
                    from
                };
                if from < to {
                    reader.seek(&tp.topic, tp.partition, from)?;
                    remaining
                        .entry(tp.topic.clone())
                        .or_default()
                        .insert(tp.partition, (from, to));
                } else {
                    // Nothing to read: records from `to` on are ignored.
                    reader.seek(&tp.topic, tp.partition, to)?;
                }
            }
            None => {
                // Records of these partitions are ignored: skip them when the
                // bus knows where they end (a Kafka bus learns it later).
                if let Some(end) = bus
                    .end_offsets(&tp.topic)
                    .ok()
                    .and_then(|ends| ends.get(tp.partition as usize).copied())
                {
                    reader.seek(&tp.topic, tp.partition, end)?;
                }
            }
        }
    }
    let deadline = Instant::now() + how.limit;
    let mut handed = 0u64;
    let mut empty_polls = 0;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(timeout(format!(
                "the bus did not return the ranges {remaining:?} within {:?}",
                how.limit
            )));
        }
        let records = reader
            .poll(POLL_MAX_RECORDS, Duration::from_millis(500))
            .await?;
        if records.is_empty() {
            empty_polls += 1;
            if how.idle_polls.is_some_and(|idle| empty_polls >= idle) {
                tracing::info!(
                    ?remaining,
                    "no more records before the end of these ranges; reading stops there"
                );
                break;
            }
            continue;
        }
        empty_polls = 0;
        for record in &records {
            let Some(partitions) = remaining.get_mut(&*record.topic) else {
                continue;
            };
            let Some(&(_, to)) = partitions.get(&record.partition) else {
                continue;
            };
            if record.offset < to {
                each(record)?;
                handed += 1;
            }
            if record.offset + 1 >= to {
                partitions.remove(&record.partition);
                if partitions.is_empty() {
                    remaining.remove(&*record.topic);
                }
            }
        }
    }
    Ok(handed)
}
