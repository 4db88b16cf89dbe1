//! Reading every partition of a topic in one process (the embedded bus has
//! no group balancing: it serves one machine).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::TopicLog;
use super::offsets::write_atomically;
use super::partition_log::PartitionLog;
use crate::EmbeddedBus;
use crate::{BusError, ConsumedRecord, Consumer, Result, TopicPartition};

/// Reads every partition of its topics in one process (no group balancing:
/// the embedded bus serves one machine).
pub(super) struct EmbeddedConsumer {
    pub(super) bus: EmbeddedBus,
    pub(super) group: String,
    pub(super) topics: HashMap<String, Arc<TopicLog>>,
    pub(super) positions: BTreeMap<TopicPartition, u64>,
    pub(super) progress: watch::Receiver<u64>,
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let key = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        match self.positions.get_mut(&key) {
            Some(position) => {
                *position = offset;
                Ok(())
            }
            None => Err(BusError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Mark the current progress as seen *before* reading, so a commit
            // that lands during the read wakes the wait below.
            self.progress.borrow_and_update();
            let jobs: Vec<(Arc<PartitionLog>, u64)> = self
                .positions
                .iter()
                .filter_map(|(tp, offset)| {
                    let log = self
                        .topics
                        .get(&tp.topic)?
                        .partitions
                        .get(tp.partition as usize)?;
                    // Past the end is read too, to fail: the log lost
                    // records this reader had already seen (a truncated or
                    // restored segment), and waiting there would skip the
                    // next ones appended under the same offsets.
                    (*offset != log.bounds().1).then(|| (log.clone(), *offset))
                })
                .collect();
            if !jobs.is_empty() {
                let share = (max_records / jobs.len()).max(1);
                let batches = tokio::task::spawn_blocking(move || {
                    jobs.into_iter()
                        .map(|(log, offset)| log.read(offset, share))
                        .collect::<Result<Vec<_>>>()
                })
                .await
                .map_err(|e| BusError::Corrupt(format!("read task failed: {e}")))??;
                let mut out = Vec::with_capacity(batches.iter().map(Vec::len).sum());
                for records in batches {
                    if let Some(last) = records.last() {
                        let key = TopicPartition {
                            topic: last.topic.to_string(),
                            partition: last.partition,
                        };
                        self.positions.insert(key, last.offset + 1);
                    }
                    out.extend(records);
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            match tokio::time::timeout_at(deadline, self.progress.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(BusError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        let mut committed = self.bus.committed(&self.group)?;
        for (tp, offset) in offsets {
            committed
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.partition, *offset);
        }
        let path = self.bus.offsets_path(&self.group);
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, &serde_json::to_vec(&committed).unwrap_or_default())
        })
        .await
        .map_err(|e| BusError::Corrupt(format!("commit task failed: {e}")))?
    }

    fn start_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        Ok(self
            .topics
            .get(topic)
            .ok_or_else(|| BusError::UnknownTopic(topic.to_string()))?
            .partitions
            .iter()
            .map(|p| p.bounds().0)
            .collect())
    }
}
