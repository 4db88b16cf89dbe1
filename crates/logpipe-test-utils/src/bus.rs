//! Bus doubles and fixtures: a real bus with faults planted in it, and the
//! topics a pipeline creates.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe_bus::{
    Bus, BusError, BusRecord, ConsumedRecord, Consumer, EmbeddedBus, Result, TopicPartition,
    TopicSpec,
};
use logpipe_config::EmbeddedBusConfig;
use logpipe_core::RecordKind;

/// The topics of every record kind, with `partitions` each and an hour of
/// retention.
pub fn record_topics(partitions: u32) -> Vec<TopicSpec> {
    RecordKind::ALL
        .iter()
        .map(|kind| TopicSpec {
            name: kind.topic().to_string(),
            partitions,
            retention: Duration::from_secs(3600),
            retention_bytes: 0,
            replication_factor: None,
            min_insync_replicas: None,
        })
        .collect()
}

/// An embedded bus in `dir` with the record topics (3 partitions each).
pub async fn embedded_bus(dir: &Path) -> EmbeddedBus {
    let bus = EmbeddedBus::open(dir, &EmbeddedBusConfig::default()).expect("open the embedded bus");
    bus.create_topics(&record_topics(3))
        .await
        .expect("create the record topics");
    bus
}

/// What to fail: the next poll of any consumer once, and/or every append.
#[derive(Default)]
struct Faults {
    next_poll: Mutex<Option<BusError>>,
    appends: Mutex<Option<fn() -> BusError>>,
}

/// A real bus, with faults planted in it: a stand-in for a broker that
/// stops answering for a moment, or a bus whose queue is always full.
#[derive(Clone)]
pub struct FaultyBus {
    inner: Arc<dyn Bus>,
    faults: Arc<Faults>,
}

impl FaultyBus {
    pub fn new(inner: Arc<dyn Bus>) -> FaultyBus {
        FaultyBus {
            inner,
            faults: Arc::default(),
        }
    }

    /// The next poll of any of this bus's group consumers fails with `error`.
    pub fn fail_next_poll(&self, error: BusError) {
        *self
            .faults
            .next_poll
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// Whether a planted poll fault has not been hit yet.
    pub fn poll_fault_pending(&self) -> bool {
        self.faults
            .next_poll
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Every append fails with `error()` from now on.
    pub fn fail_every_append(&self, error: fn() -> BusError) {
        *self
            .faults
            .appends
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error);
    }
}

#[async_trait::async_trait]
impl Bus for FaultyBus {
    async fn create_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        self.inner.create_topics(topics).await
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        self.inner.partitions(topic)
    }

    async fn append(&self, topic: &str, records: Vec<BusRecord>) -> Result<()> {
        let fault = *self
            .faults
            .appends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match fault {
            Some(error) => Err(error()),
            None => self.inner.append(topic, records).await,
        }
    }

    async fn consumer(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(FaultyConsumer {
            inner: self.inner.consumer(group, topics).await?,
            faults: self.faults.clone(),
        }))
    }

    async fn reader(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        self.inner.reader(group, topics).await
    }

    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        self.inner.end_offsets(topic)
    }
}

struct FaultyConsumer {
    inner: Box<dyn Consumer>,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl Consumer for FaultyConsumer {
    fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }

    fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        self.inner.seek(topic, partition, offset)
    }

    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        let fault = self
            .faults
            .next_poll
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(fault) = fault {
            return Err(fault);
        }
        self.inner.poll(max_records, timeout).await
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        self.inner.commit(offsets).await
    }

    fn start_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        self.inner.start_offsets(topic)
    }

    async fn close(&mut self) {
        self.inner.close().await
    }
}
