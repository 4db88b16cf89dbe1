//! Reading every partition of a topic in one process (the embedded bus has
//! no group balancing: it serves one machine).

//! The embedded bus: a partitioned append-only log on local disk.
//!
//! Layout: `ROOT/<topic>/topic.json` (partition count) and
//! `ROOT/<topic>/<partition>/<base_offset:020>.log` segment files in the
//! [`crate::format`] batch format; consumer-group progress in
//! `ROOT/_offsets/<group>.json`; `ROOT/.lock` keeps a second process out.
//!
//! One writer thread owns every file handle that is written. Appends reach it
//! through a bounded queue (full → [`BusError::Busy`], which the collector
//! turns into 503 + `Retry-After`). It takes whatever requests are waiting,
//! writes one batch per partition, fsyncs each touched file once for the
//! whole group (group commit), and only then makes the records visible to
//! readers and acknowledges the requests. Readers therefore never see a
//! record that a crash could take back, so nothing downstream gets ahead of
//! the disk. With `FsyncMode::Interval` requests are acknowledged once
//! written and become visible at the next periodic fsync.
//!
//! Recovery at open scans the active segment, checks each batch's CRC and
//! truncates at the first torn or corrupt batch: such a batch was never
//! acknowledged, so truncating it loses nothing that was promised.

use crate::EmbeddedBus;
use crate::embedded::TopicLog;
use crate::embedded::offsets::write_atomically;
use crate::embedded::partition_log::PartitionLog;
use crate::{BusError, ConsumedRecord, Consumer, Result, TopicPartition};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
                    (*offset < log.bounds().1).then(|| (log.clone(), *offset))
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
                let mut out = Vec::new();
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
