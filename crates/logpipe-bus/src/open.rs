//! From `[bus]` and `[topics]` to a running bus with its topics.

use std::path::Path;
use std::sync::Arc;

use logpipe_config::{BusConfig, BusKind, TopicsConfig};

use crate::{Bus, BusError, EmbeddedBus, TopicSpec};

/// Why the bus could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the embedded bus in {dir}: {source}")]
    Embedded { dir: String, source: BusError },
    #[error("bus.kind is \"kafka\" but the cluster at bus.kafka.brokers cannot be used: {0}")]
    Connect(BusError),
    #[error("cannot create or check the topics: {0}")]
    Topics(BusError),
    #[error(
        "bus.kind is \"kafka\" but this logpipe was built without Kafka (cargo feature `kafka`); build it with default features"
    )]
    KafkaNotBuilt,
}

/// A running bus. The embedded bus is kept as itself too, to be shut down
/// (its writer fsyncs what is queued) after every job has drained.
pub struct BusHandle {
    pub bus: Arc<dyn Bus>,
    embedded: Option<EmbeddedBus>,
}

impl BusHandle {
    /// Stops the embedded bus's writer after the appends already queued.
    /// Nothing to do for Kafka.
    pub fn shutdown(&self) {
        if let Some(bus) = &self.embedded {
            bus.shutdown();
        }
    }
}

/// The topics `[topics]` describes.
pub fn topic_specs(topics: &TopicsConfig) -> Vec<TopicSpec> {
    topics
        .all()
        .into_iter()
        .map(|(name, topic)| TopicSpec {
            name: name.to_string(),
            partitions: topic.partitions,
            retention: topic.retention,
            retention_bytes: topic.retention_bytes,
            replication_factor: topic.replication_factor,
            min_insync_replicas: topic.min_insync_replicas,
        })
        .collect()
}

/// Opens the configured bus (the embedded one in `dir`) and creates the
/// `topics` that are missing ([`topic_specs`] of `[topics]`; none for a
/// process that only uses topics others make, e.g. CDC).
///
/// `producer` names this process as a producer of requests (the
/// collector): stable across its restarts, unique among the processes
/// running. On Kafka with `bus.kafka.transactions` its appends then go in
/// transactions under the `transactional.id`
/// `<bus.kafka.transactional_id_prefix>-<producer>`. The embedded bus needs
/// no name: its single writer already stores a refused append nowhere.
pub async fn open(
    config: &BusConfig,
    dir: &Path,
    specs: &[TopicSpec],
    producer: Option<&str>,
) -> Result<BusHandle, OpenError> {
    match config.kind {
        BusKind::Embedded => {
            let bus =
                EmbeddedBus::open(dir, &config.embedded).map_err(|source| OpenError::Embedded {
                    dir: dir.display().to_string(),
                    source,
                })?;
            bus.create_topics(specs).await.map_err(OpenError::Topics)?;
            Ok(BusHandle {
                bus: Arc::new(bus.clone()),
                embedded: Some(bus),
            })
        }
        #[cfg(feature = "kafka")]
        BusKind::Kafka => {
            let transactional_id =
                producer.map(|name| format!("{}-{name}", config.kafka.transactional_id_prefix));
            let bus = crate::kafka::KafkaBus::connect(&config.kafka, transactional_id)
                .await
                .map_err(OpenError::Connect)?;
            bus.create_topics(specs).await.map_err(OpenError::Topics)?;
            Ok(BusHandle {
                bus: Arc::new(bus),
                embedded: None,
            })
        }
        #[cfg(not(feature = "kafka"))]
        BusKind::Kafka => {
            let _ = producer;
            Err(OpenError::KafkaNotBuilt)
        }
    }
}
