//! The Kafka bus: the same topics on a Kafka-protocol broker cluster, through
//! librdkafka (rdkafka's bundled build).
//!
//! - **Producing.** With `bus.kafka.transactions` a process that takes
//!   requests (the collector) writes them in Kafka transactions
//!   ([`transactions`]): committed before the 2xx, aborted before a 503, so
//!   a refused request leaves nothing any `read_committed` reader sees.
//!   Without them (the default, and a process that only publishes alerts)
//!   one idempotent producer (`enable.idempotence`, `acks=all`)
//!   resolves an `append` once every record has a delivery report; a 503
//!   then means "maybe stored". Either way a full local queue or brokers
//!   that do not confirm within `delivery_timeout` is [`BusError::Busy`]
//!   (HTTP 503 with `Retry-After`), never a silent drop. Each record goes
//!   to the partition [`partition_for_key`] picks, the hash Kafka's Java
//!   clients use, so keys land where they land on the embedded bus and for
//!   other producers.
//! - **Topics.** Created at start with the configured partitions,
//!   replication and retention (no reliance on broker auto-creation);
//!   existing topics are kept and a difference is logged.
//! - **Consuming.** With `isolation.level = read_committed`. librdkafka
//!   serves rebalances inside `poll`, which runs on a blocking thread. The
//!   rebalance callback hands the event to the job (through
//!   [`Consumer::rebalance`]) and waits until the job has committed
//!   (revoke) or said where each partition starts (assign): the lake
//!   commit, not Kafka's committed offset, is the source of truth. Kafka
//!   offsets are committed after each lake commit, for lag monitoring. The
//!   group rebalances cooperatively by default (`cooperative-sticky`: only
//!   the partitions that move are revoked and assigned); the eager
//!   strategies (`range`, `roundrobin`) work as well.
//!
//! [`partition_for_key`]: logpipe_core::partition::partition_for_key

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logpipe_config::KafkaBusConfig;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use crate::kafka::consumer::KafkaConsumer;
use crate::kafka::context::LogContext;
use crate::kafka::rebalance::Membership;
use crate::kafka::transactions::TransactionalWriter;
use crate::{Bus, BusError, BusRecord, Consumer, Result, TopicSpec};

mod cluster;
mod consumer;
mod context;
mod gaps;
mod headers;
mod producer;
mod rebalance;
mod transactions;

/// Metadata and watermark requests wait at most this long.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the log-end offsets (for lag) are refreshed in the background.
const END_OFFSETS_REFRESH: Duration = Duration::from_secs(2);

/// The Kafka implementation of [`Bus`].
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaBusConfig,
    /// Shared by every client of this bus (see [`LogContext`]).
    context: LogContext,
    /// Replaced when it hits a fatal error (see [`Inner::replace_producer`]).
    /// Appends go through it only without transactions; it also serves
    /// metadata requests.
    producer: Mutex<Arc<FutureProducer<LogContext>>>,
    /// Set once at connect when this process appends in transactions.
    writer: OnceLock<TransactionalWriter>,
    /// Partition counts of the topics this process created or looked up.
    partitions: Mutex<HashMap<String, u32>>,
    /// Log-end offsets per topic, refreshed in the background.
    end_offsets: Mutex<HashMap<String, Vec<u64>>>,
}

fn kafka_error(what: &str, error: KafkaError) -> BusError {
    BusError::Kafka(format!("{what}: {error}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Bus for KafkaBus {
    async fn create_topics(&self, specs: &[TopicSpec]) -> Result<()> {
        let view = self.metadata(None).await?;
        let mut missing = Vec::new();
        let mut existing = Vec::new();
        for spec in specs {
            match view.topics.get(&spec.name) {
                Some(topic) => {
                    lock(&self.inner.partitions).insert(spec.name.clone(), topic.partitions);
                    existing.push((spec, topic));
                }
                None => missing.push(spec),
            }
        }
        if !existing.is_empty() {
            self.verify_topics(&existing).await;
        }
        if missing.is_empty() {
            return Ok(());
        }
        for spec in &missing {
            let replication = self.replicas_of(spec);
            if replication as usize > view.brokers {
                let key = match spec.replication_factor {
                    Some(_) => format!("the replication_factor of topic {}", spec.name),
                    None => "bus.kafka.replication_factor".to_string(),
                };
                return Err(BusError::Misconfigured(format!(
                    "{key} is {replication} but the cluster at {} has {} broker{}; \
                     a topic cannot have more replicas than brokers (the seed's InvalidReplicationFactor). \
                     Set it to at most {}",
                    self.inner.options.brokers,
                    view.brokers,
                    if view.brokers == 1 { "" } else { "s" },
                    view.brokers
                )));
            }
        }
        let settings: Vec<(String, String, Option<String>)> = missing
            .iter()
            .map(|spec| {
                let bytes = if spec.retention_bytes == 0 {
                    "-1".to_string()
                } else {
                    spec.retention_bytes.to_string()
                };
                let min_in_sync = self.min_in_sync_of(spec).map(|n| n.to_string());
                (spec.retention.as_millis().to_string(), bytes, min_in_sync)
            })
            .collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&settings)
            .map(|(spec, (retention_ms, retention_bytes, min_in_sync))| {
                let topic = NewTopic::new(
                    &spec.name,
                    spec.partitions as i32,
                    TopicReplication::Fixed(self.replicas_of(spec) as i32),
                )
                .set("retention.ms", retention_ms)
                .set("retention.bytes", retention_bytes)
                // Explicit, not the broker's default: a compacted topic
                // keeps only the newest record per key, and logpipe's keys
                // are service names and user ids.
                .set("cleanup.policy", "delete");
                match min_in_sync {
                    Some(min_in_sync) => topic.set("min.insync.replicas", min_in_sync),
                    None => topic,
                }
            })
            .collect();
        let admin = self.admin()?;
        let results = admin
            .create_topics(
                &new_topics,
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(|e| kafka_error("creating topics failed", e))?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = name, "created Kafka topic"),
                // Another logpipe process created it first.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Kafka(format!(
                        "creating topic {name:?} failed: {code}"
                    )));
                }
            }
        }
        // Wait until the metadata shows every topic with its partitions.
        let deadline = Instant::now() + METADATA_TIMEOUT;
        loop {
            let view = self.metadata(None).await?;
            let shown: Vec<_> = missing
                .iter()
                .filter_map(|spec| view.topics.get(&spec.name).map(|t| (spec, t.partitions)))
                .collect();
            if shown.len() == missing.len() {
                for (spec, partitions) in shown {
                    lock(&self.inner.partitions).insert(spec.name.clone(), partitions);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BusError::Kafka(
                    "created topics did not show up in the cluster metadata".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        self.inner.partitions(topic)
    }

    async fn append(&self, topic: &str, records: Vec<BusRecord>) -> Result<()> {
        let partitions = self.partitions(topic)?;
        match self.inner.writer.get() {
            Some(writer) => writer.append(topic, partitions, records).await,
            None => {
                self.produce(&self.inner.producer(), topic, partitions, &records)
                    .await
            }
        }
    }

    async fn consumer(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        let consumer = KafkaConsumer::open(self, group, topics, Membership::Group)?;
        Ok(Box::new(consumer))
    }

    async fn reader(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        let consumer = KafkaConsumer::open(self, group, topics, Membership::Reader)?;
        Ok(Box::new(consumer))
    }

    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        lock(&self.inner.end_offsets)
            .get(topic)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic(topic.to_string()))
    }
}
