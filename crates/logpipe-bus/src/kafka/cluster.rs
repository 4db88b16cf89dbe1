//! Connecting, and what the cluster looks like: metadata, topic views, the
//! checks of existing topics against the configuration, log-end offsets.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use logpipe_config::KafkaBusConfig;
use rdkafka::admin::{AdminClient, AdminOptions, OwnedResourceSpecifier, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer as _};

use super::context::{LogContext, client_config};
use super::producer::new_producer;
use super::{END_OFFSETS_REFRESH, HashMap, Inner, KafkaBus, METADATA_TIMEOUT, kafka_error, lock};
use crate::{BusError, Result, TopicSpec};

impl KafkaBus {
    /// Connects to the cluster (checks that a broker answers).
    pub async fn connect(options: &KafkaBusConfig) -> Result<KafkaBus> {
        let options = options.clone();
        let context = LogContext::default();
        let producer = new_producer(&options, &context)?;
        let bus = KafkaBus {
            inner: Arc::new(Inner {
                options,
                context,
                producer: Mutex::new(Arc::new(producer)),
                partitions: Mutex::new(HashMap::new()),
                end_offsets: Mutex::new(HashMap::new()),
            }),
        };
        let metadata = bus.metadata(None).await?;
        tracing::info!(
            brokers = bus.inner.options.brokers,
            broker_count = metadata.brokers,
            "connected to Kafka"
        );
        spawn_end_offsets_refresh(Arc::downgrade(&bus.inner));
        Ok(bus)
    }

    pub fn options(&self) -> &KafkaBusConfig {
        &self.inner.options
    }

    /// Cluster metadata, off the async reactor.
    pub(super) async fn metadata(&self, topic: Option<&str>) -> Result<ClusterView> {
        let inner = self.inner.clone();
        let topic = topic.map(str::to_string);
        tokio::task::spawn_blocking(move || inner.metadata(topic.as_deref()))
            .await
            .map_err(|e| BusError::Kafka(e.to_string()))?
    }

    pub(super) fn admin(&self) -> Result<AdminClient<LogContext>> {
        client_config(&self.inner.options, &[])
            .create_with_context(self.inner.context.clone())
            .map_err(|e| kafka_error("cannot create the Kafka admin client", e))
    }

    /// Logs where existing topics differ from their specs.
    pub(super) async fn verify_topics(&self, existing: &[(&TopicSpec, &TopicView)]) {
        let replication = self.inner.options.replication_factor as usize;
        for (spec, view) in existing {
            if view.partitions != spec.partitions {
                tracing::warn!(
                    topic = spec.name,
                    existing = view.partitions,
                    configured = spec.partitions,
                    "the topic exists with a different partition count; keeping the existing one \
                     (changing it would move keys between partitions)"
                );
            }
            if view.replicas != replication {
                tracing::warn!(
                    topic = spec.name,
                    existing = view.replicas,
                    configured = replication,
                    "the topic exists with a different replication factor"
                );
            }
        }
        let Ok(admin) = self.admin() else { return };
        let resources: Vec<ResourceSpecifier<'_>> = existing
            .iter()
            .map(|(spec, _)| ResourceSpecifier::Topic(&spec.name))
            .collect();
        let described = match admin
            .describe_configs(
                &resources,
                &AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
        {
            Ok(described) => described,
            Err(error) => {
                tracing::debug!(%error, "cannot read the topics' settings");
                return;
            }
        };
        // topic → setting name → value
        let settings: HashMap<String, HashMap<String, String>> = described
            .into_iter()
            .flatten()
            .filter_map(|resource| {
                let OwnedResourceSpecifier::Topic(topic) = resource.specifier else {
                    return None;
                };
                let entries = resource
                    .entries
                    .into_iter()
                    .filter_map(|entry| Some((entry.name, entry.value?)))
                    .collect();
                Some((topic, entries))
            })
            .collect();
        for (spec, _) in existing {
            let Some(settings) = settings.get(&spec.name) else {
                continue;
            };
            if let Some(policy) = settings.get("cleanup.policy")
                && policy.contains("compact")
            {
                tracing::warn!(
                    topic = spec.name,
                    cleanup_policy = policy,
                    "the topic is compacted: the broker keeps only the newest record per key \
                     (a service, a user), so records the lake has not read yet can vanish; \
                     set cleanup.policy=delete on it"
                );
            }
            let wanted = spec.retention.as_millis().to_string();
            if let Some(retention) = settings.get("retention.ms")
                && *retention != wanted
            {
                tracing::warn!(
                    topic = spec.name,
                    existing_ms = retention,
                    configured_ms = wanted,
                    "the topic exists with a different retention; keeping the existing one"
                );
            }
        }
    }
}

/// What the cluster metadata says, copied out of librdkafka's structures.
pub(super) struct ClusterView {
    pub(super) brokers: usize,
    pub(super) topics: HashMap<String, TopicView>,
}

pub(super) struct TopicView {
    pub(super) partitions: u32,
    pub(super) replicas: usize,
}

impl Inner {
    pub(super) fn producer(&self) -> Arc<FutureProducer<LogContext>> {
        lock(&self.producer).clone()
    }

    /// An idempotent producer whose messages timed out must bump its epoch;
    /// a broker that refuses (tansu answers ProducerFenced) leaves it in a
    /// state where every send fails, fatal or not. librdkafka's answer is a
    /// new producer instance: records already refused were never
    /// acknowledged, so nothing acknowledged is affected.
    pub(super) fn replace_producer_if_broken(
        &self,
        failed: &Arc<FutureProducer<LogContext>>,
        error: &KafkaError,
    ) {
        let fenced = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        );
        if !fenced && failed.client().fatal_error().is_none() {
            return;
        }
        let mut current = lock(&self.producer);
        if !Arc::ptr_eq(&current, failed) {
            return; // another request replaced it already
        }
        match new_producer(&self.options, &self.context) {
            Ok(producer) => {
                tracing::warn!(%error, "the Kafka producer cannot send any more; replaced it");
                *current = Arc::new(producer);
            }
            Err(error) => tracing::error!(%error, "cannot replace the failed Kafka producer"),
        }
    }

    pub(super) fn metadata(&self, topic: Option<&str>) -> Result<ClusterView> {
        let asked = Instant::now();
        let metadata = self
            .producer()
            .client()
            .fetch_metadata(topic, METADATA_TIMEOUT)
            .map_err(|e| {
                let why = self
                    .context
                    .failure_since(asked)
                    .map(|why| format!("; the broker connection failed: {why}"))
                    .unwrap_or_default();
                BusError::Kafka(format!(
                    "cannot reach the Kafka brokers at {} within {:?}: {e}{why}",
                    self.options.brokers, METADATA_TIMEOUT
                ))
            })?;
        let topics = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| {
                (
                    t.name().to_string(),
                    TopicView {
                        partitions: t.partitions().len() as u32,
                        replicas: t.partitions().first().map_or(0, |p| p.replicas().len()),
                    },
                )
            })
            .collect();
        Ok(ClusterView {
            brokers: metadata.brokers().len(),
            topics,
        })
    }

    pub(super) fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some(count) = lock(&self.partitions).get(topic) {
            return Ok(*count);
        }
        let view = self.metadata(Some(topic))?;
        let count = view
            .topics
            .get(topic)
            .map(|t| t.partitions)
            .ok_or_else(|| BusError::UnknownTopic(topic.to_string()))?;
        lock(&self.partitions).insert(topic.to_string(), count);
        Ok(count)
    }

    pub(super) fn refresh_end_offsets(&self) {
        let topics: Vec<(String, u32)> = lock(&self.partitions)
            .iter()
            .map(|(topic, count)| (topic.clone(), *count))
            .collect();
        for (topic, count) in topics {
            let ends: Option<Vec<u64>> = (0..count)
                .map(|partition| {
                    self.producer()
                        .client()
                        .fetch_watermarks(&topic, partition as i32, METADATA_TIMEOUT)
                        .ok()
                        .map(|(_, high)| high.max(0) as u64)
                })
                .collect();
            if let Some(ends) = ends {
                lock(&self.end_offsets).insert(topic, ends);
            }
        }
    }
}

/// Refreshes log-end offsets until the bus is dropped.
pub(super) fn spawn_end_offsets_refresh(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("logpipe-kafka-ends".into())
        .spawn(move || {
            loop {
                std::thread::sleep(END_OFFSETS_REFRESH);
                let Some(inner) = inner.upgrade() else { return };
                inner.refresh_end_offsets();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the Kafka end-offset refresher; lag is not reported");
    }
}
