//! The bus: topics of partitioned, ordered, durable records.
//!
//! - [`Bus`] is what producers (the collector) and consumers (stream jobs) see.
//!   `append` resolves only once the records are durable under the bus's
//!   policy; that is what lets the collector answer 2xx.
//! - [`Consumer`] reads assigned partitions from explicit positions. The
//!   stream jobs own their positions (the lake's commit record is the source
//!   of truth) and `seek` to them at start; `commit` only reports progress
//!   for lag monitoring.
//! - [`embedded::EmbeddedBus`] is the on-disk implementation used on one
//!   machine; `kafka::KafkaBus` (feature `kafka`) talks to a Kafka-protocol
//!   broker cluster through librdkafka. Both folders have the same shape:
//!   `mod.rs` with the [`Bus`] implementation, then one file per part.
//! - [`open()`] turns `[bus]` and `[topics]` into a running bus with its
//!   topics: the one constructor the application calls.
//! - A group [`Consumer`] may have its partitions moved to another member
//!   (a rebalance). It then stops returning records and reports a
//!   [`Rebalance`]: the job commits what it read from revoked partitions, or
//!   says where newly assigned ones start, and calls
//!   [`Consumer::rebalance_done`]. Only then does the partition move, so two
//!   members never write the same records.

use std::time::Duration;

use async_trait::async_trait;

pub mod embedded;
mod error;
pub mod headers;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
mod open;

pub use embedded::EmbeddedBus;
pub use error::BusError;
pub use headers::{Headers, HeadersBuilder};
pub use open::{BusHandle, OpenError, open, topic_specs};

/// One topic to create at start (SPEC §1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    /// Records older than this may be deleted.
    pub retention: Duration,
    /// Per partition size bound (0 = none).
    pub retention_bytes: u64,
    /// Kafka: replicas of each partition (`None`: the bus's default). The
    /// embedded bus keeps one copy.
    pub replication_factor: Option<u32>,
    /// Kafka: `min.insync.replicas` (`None`: the bus's default, else the
    /// broker's).
    pub min_insync_replicas: Option<u32>,
}

/// A record to append: the key chooses the partition (same key → same
/// partition → order kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Headers,
}

impl BusRecord {
    /// A record without headers.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> BusRecord {
        BusRecord {
            key: key.into(),
            value: value.into(),
            headers: Headers::default(),
        }
    }
}

/// A record read from the bus. Topic, key and value are shared with the
/// batch they were read in (`Arc<str>`, `Bytes`): no allocation or copy per
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: std::sync::Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub key: bytes::Bytes,
    pub value: bytes::Bytes,
    pub headers: Headers,
}

/// A topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// The producer and admin side of a bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Creates missing topics; existing ones are kept as they are (a changed
    /// partition count would move keys between partitions) with a warning.
    async fn create_topics(&self, topics: &[TopicSpec]) -> Result<()>;

    /// Number of partitions of `topic`.
    fn partitions(&self, topic: &str) -> Result<u32>;

    /// Appends records, each to the partition its key hashes to. Resolves
    /// when every record is durable. On error none of them is acknowledged,
    /// and none will be read: the embedded bus truncates a failed write
    /// back and Kafka aborts the transaction, except on Kafka without
    /// transactions, where some may still have been written (callers retry
    /// with an Idempotency-Key: at-least-once).
    async fn append(&self, topic: &str, records: Vec<BusRecord>) -> Result<()>;

    /// A member of consumer group `group` reading `topics`: the group
    /// decides which partitions it reads (all of them for the embedded bus)
    /// and may move them ([`Rebalance`]).
    async fn consumer(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>>;

    /// A reader of every partition of `topics`, outside any group
    /// membership: nothing moves its partitions. `commit` still reports
    /// progress under `group`. For jobs that must see all partitions (the
    /// window job) and for re-reading exact ranges (roll-forward).
    async fn reader(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>>;

    /// The next offset to be written, per partition (the log end).
    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>>;
}

/// The reading side of a bus.
#[async_trait]
pub trait Consumer: Send {
    /// Partitions this consumer reads.
    fn assignment(&self) -> Vec<TopicPartition>;

    /// Sets where the next `poll` reads `partition` of `topic` from.
    fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()>;

    /// The next records after the current positions, in order within each
    /// partition, at most about `max_records`; waits up to `timeout` for
    /// records to arrive and returns an empty batch if none did.
    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>>;

    /// Records progress (next offset to read) for lag monitoring.
    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()>;

    /// Where the bus itself stands in each partition, when it read past
    /// offsets that hold no record for the job: Kafka's transaction
    /// markers and aborted records, which keep a partition's log end one
    /// or more offsets past its last record. Tells a partition read to its
    /// end from one with records left (lag, the window clock); never where
    /// to resume or what to commit. Empty when the job's own positions are
    /// all there is (the embedded bus writes no markers).
    fn read_positions(&self) -> Vec<(TopicPartition, u64)> {
        Vec::new()
    }

    /// Oldest offset still kept, per partition of `topic`.
    fn start_offsets(&self, topic: &str) -> Result<Vec<u64>>;

    /// A rebalance waiting for the job (see the module docs); `poll`
    /// returns no records until [`Consumer::rebalance_done`] is called.
    fn rebalance(&self) -> Option<Rebalance> {
        None
    }

    /// Lets a pending rebalance proceed. For [`Rebalance::Assign`], `starts`
    /// says where each assigned partition starts (`None` or absent: the
    /// oldest kept offset); for [`Rebalance::Revoke`] it is ignored.
    fn rebalance_done(&mut self, starts: Vec<(TopicPartition, Option<u64>)>) -> Result<()> {
        let _ = starts;
        Ok(())
    }

    /// Leaves the group cleanly (its partitions move at once instead of
    /// after the session timeout). Call after the last commit.
    async fn close(&mut self) {}
}

/// A change of a group consumer's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions go to another member once the job has committed
    /// what it read from them.
    Revoke(Vec<TopicPartition>),
    /// These partitions are now this member's; the job says where each
    /// starts (its last commit).
    Assign(Vec<TopicPartition>),
}
