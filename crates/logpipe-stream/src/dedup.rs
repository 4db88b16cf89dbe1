//! The raw→lake job's duplicate filter per partition, and rebuilding it
//! from the bus when the job starts reading a partition (see
//! [`logpipe_core::dedup`] for the rule and why it needs no checkpoint).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use logpipe_bus::{Bus, ConsumedRecord};
use logpipe_core::dedup::{Dedup, HEADER, RecordId};
use logpipe_lake::Offsets;
use tokio::time::Instant;

use crate::consume::POLL_MAX_RECORDS;
use crate::raw_to_lake::StreamError;

/// How long a warm-up may take before the job gives up starting.
const WARM_UP_LIMIT: Duration = Duration::from_secs(120);
/// Empty polls in a row after which the rest of a warm-up range is taken to
/// hold no records (offsets a broker skipped: transaction markers,
/// compaction).
const WARM_UP_EMPTY_POLLS: u32 = 3;

/// One [`Dedup`] per (topic, partition) the job reads.
pub(crate) struct Dedups {
    window: u64,
    partitions: BTreeMap<(Arc<str>, u32), Dedup>,
}

impl Dedups {
    pub(crate) fn new(window: u64) -> Dedups {
        Dedups {
            window,
            partitions: BTreeMap::new(),
        }
    }

    /// Whether `record` repeats a record with the same id read shortly
    /// before it in its partition (records without an id never do).
    pub(crate) fn is_repeat(&mut self, record: &ConsumedRecord) -> bool {
        if self.window == 0 {
            return false;
        }
        let Some(id) = record.headers.get(HEADER).and_then(RecordId::decode) else {
            return false;
        };
        let key = (record.topic.clone(), record.partition);
        self.partitions
            .entry(key)
            .or_insert_with(|| Dedup::new(self.window))
            .is_repeat(id, record.offset)
    }

    /// Forgets a partition (given up in a rebalance).
    pub(crate) fn forget(&mut self, topic: &str, partition: u32) {
        self.partitions
            .retain(|(t, p), _| !(&**t == topic && *p == partition));
    }

    /// Rebuilds the filter of each partition in `starts` (topic →
    /// partition → the offset the job reads from next) by reading the
    /// window of offsets before it.
    pub(crate) async fn warm_up(
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
        let topics: Vec<&str> = starts.keys().map(String::as_str).collect();
        let mut reader = bus.reader("logpipe-dedup-warm-up", &topics).await?;
        // (topic, partition) → [from, start) still to read.
        let mut remaining: BTreeMap<(String, u32), (u64, u64)> = BTreeMap::new();
        for tp in reader.assignment() {
            let start = starts.get(&tp.topic).and_then(|p| p.get(&tp.partition));
            let oldest = reader.start_offsets(&tp.topic)?;
            let oldest = oldest.get(tp.partition as usize).copied().unwrap_or(0);
            match start {
                Some(&start) if start.saturating_sub(self.window).max(oldest) < start => {
                    let from = start.saturating_sub(self.window).max(oldest);
                    reader.seek(&tp.topic, tp.partition, from)?;
                    remaining.insert((tp.topic.clone(), tp.partition), (from, start));
                }
                Some(&start) => reader.seek(&tp.topic, tp.partition, start)?,
                None => {
                    // Not wanted: read from the end when the bus knows it
                    // (a Kafka bus learns ends only after a while), where
                    // records (ignored) arrive only if new.
                    let end = bus
                        .end_offsets(&tp.topic)
                        .ok()
                        .and_then(|ends| ends.get(tp.partition as usize).copied());
                    reader.seek(&tp.topic, tp.partition, end.unwrap_or(oldest))?;
                }
            }
        }
        let planned: u64 = remaining.values().map(|(from, start)| start - from).sum();
        let began = Instant::now();
        let mut read = 0u64;
        let mut empty_polls = 0;
        while !remaining.is_empty() {
            if began.elapsed() > WARM_UP_LIMIT {
                reader.close().await;
                return Err(StreamError::WarmUp {
                    job: job.to_string(),
                    reason: format!(
                        "the bus did not return the offsets {remaining:?} within {WARM_UP_LIMIT:?}"
                    ),
                });
            }
            let records = reader
                .poll(POLL_MAX_RECORDS, Duration::from_millis(500))
                .await?;
            if records.is_empty() {
                empty_polls += 1;
                if empty_polls >= WARM_UP_EMPTY_POLLS {
                    tracing::info!(
                        job,
                        ?remaining,
                        "no more records before the start of these partitions; the duplicate check starts from what was read"
                    );
                    break;
                }
                continue;
            }
            empty_polls = 0;
            for record in records {
                let key = (record.topic.to_string(), record.partition);
                let Some(&(_, start)) = remaining.get(&key) else {
                    continue;
                };
                if record.offset < start {
                    self.is_repeat(&record);
                    read += 1;
                }
                if record.offset + 1 >= start {
                    remaining.remove(&key);
                }
            }
        }
        reader.close().await;
        tracing::info!(
            job,
            planned,
            read,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "duplicate check rebuilt from the bus"
        );
        Ok(())
    }
}
