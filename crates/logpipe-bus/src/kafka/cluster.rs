//! Connecting, and what the cluster looks like: metadata, topic views, the
//! checks of existing topics against the configuration, log-end offsets.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use logpipe_config::KafkaBusConfig;
use rdkafka::admin::{AdminClient, AdminOptions, OwnedResourceSpecifier, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer as _};

use super::context::{LogContext, client_config};
use super::producer::new_producer;
use super::transactions::TransactionalWriter;
use super::{END_OFFSETS_REFRESH, HashMap, Inner, KafkaBus, METADATA_TIMEOUT, kafka_error, lock};
use crate::{BusError, Result, TopicSpec};

impl KafkaBus {
    /// Connects to the cluster (checks that a broker answers). With
    /// `transactional_id` (and `transactions` on) appends go in
    /// transactions under that id, registered here: brokers that cannot do
    /// transactions stop the start with the setting to change.
    pub async fn connect(
        options: &KafkaBusConfig,
        transactional_id: Option<String>,
    ) -> Result<KafkaBus> {
        let mut options = options.clone();
        // The secrets are read now, each named when it cannot be.
        for (key, secret) in &options.secret_properties {
            let value = secret.read().map_err(|reason| {
                BusError::Misconfigured(format!("bus.kafka.secret_properties.{key:?}: {reason}"))
            })?;
            options.properties.insert(key.clone(), value);
        }
        let context = LogContext::default();
        let producer = new_producer(&options, &context)?;
        let bus = KafkaBus {
            inner: Arc::new(Inner {
                options,
                context,
                producer: Mutex::new(Arc::new(producer)),
                writer: OnceLock::new(),
                partitions: Mutex::new(HashMap::new()),
                end_offsets: Mutex::new(HashMap::new()),
            }),
        };
        let metadata = bus.metadata(None).await?;
        check_advertised_addresses(&metadata.addresses, &bus.inner.options.brokers).await?;
        tracing::info!(
            brokers = bus.inner.options.brokers,
            broker_count = metadata.brokers,
            "connected to Kafka"
        );
        if let Some(id) = transactional_id.filter(|_| bus.inner.options.transactions) {
            let options = bus.inner.options.clone();
            let context = bus.inner.context.clone();
            let writer = tokio::task::spawn_blocking(move || {
                TransactionalWriter::start(&options, &context, id)
            })
            .await
            .map_err(|e| BusError::Kafka(format!("the transaction set-up failed: {e}")))??;
            let _ = bus.inner.writer.set(writer);
        }
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

    /// The replication factor `spec` asks for.
    pub(super) fn replicas_of(&self, spec: &TopicSpec) -> u32 {
        spec.replication_factor
            .unwrap_or(self.inner.options.replication_factor)
    }

    /// The `min.insync.replicas` `spec` asks for, if any.
    pub(super) fn min_in_sync_of(&self, spec: &TopicSpec) -> Option<u32> {
        spec.min_insync_replicas
            .or(self.inner.options.min_insync_replicas)
    }

    /// Logs where existing topics differ from their specs, and partitions
    /// with fewer replicas in sync than writes need.
    pub(super) async fn verify_topics(&self, existing: &[(&TopicSpec, &TopicView)]) {
        for (spec, view) in existing {
            let replication = self.replicas_of(spec) as usize;
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
        let existing_views = existing;
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
            let min_in_sync = settings
                .get("min.insync.replicas")
                .and_then(|v| v.parse::<usize>().ok());
            if let (Some(wanted), Some(existing)) = (self.min_in_sync_of(spec), min_in_sync)
                && wanted as usize != existing
            {
                tracing::warn!(
                    topic = spec.name,
                    existing,
                    configured = wanted,
                    "the topic exists with a different min.insync.replicas; keeping the existing one"
                );
            }
            if let (Some(min_in_sync), Some(view)) = (
                min_in_sync,
                existing_views
                    .iter()
                    .find(|(s, _)| s.name == spec.name)
                    .map(|(_, v)| v),
            ) {
                for (partition, in_sync) in view.in_sync.iter().enumerate() {
                    if *in_sync < min_in_sync {
                        tracing::warn!(
                            topic = spec.name,
                            partition,
                            in_sync,
                            replicas = view.replicas,
                            min_insync_replicas = min_in_sync,
                            "fewer replicas are in sync than min.insync.replicas: the collector's \
                             writes to this partition are refused (503) until a replica catches \
                             up; check the brokers that host it"
                        );
                    }
                }
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
    /// (node id, advertised host, port) of each broker.
    pub(super) addresses: Vec<(i32, String, u16)>,
    pub(super) topics: HashMap<String, TopicView>,
}

pub(super) struct TopicView {
    pub(super) partitions: u32,
    pub(super) replicas: usize,
    /// In-sync replicas of each partition, in partition order.
    pub(super) in_sync: Vec<usize>,
}

impl Inner {
    pub(super) fn producer(&self) -> Arc<FutureProducer<LogContext>> {
        lock(&self.producer).clone()
    }

    /// An idempotent producer whose messages timed out must bump its epoch;
    /// a broker that refuses (tansu 0.6 answered ProducerFenced) leaves it in a
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
                        in_sync: {
                            let mut partitions: Vec<_> = t.partitions().iter().collect();
                            partitions.sort_by_key(|p| p.id());
                            partitions.iter().map(|p| p.isr().len()).collect()
                        },
                    },
                )
            })
            .collect();
        Ok(ClusterView {
            brokers: metadata.brokers().len(),
            addresses: metadata
                .brokers()
                .iter()
                .map(|b| (b.id(), b.host().to_string(), b.port() as u16))
                .collect(),
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

/// How long the start-up check waits for a broker's advertised address.
const ADDRESS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Every broker's advertised address must resolve and accept a connection
/// from this process: clients bootstrap from `bus.kafka.brokers` but then
/// talk to each broker at the address it advertises, and an address only
/// the brokers can resolve (the seed's `UnknownHostException: broker2`, a
/// container host name, `localhost` inside a pod) otherwise shows up later
/// as requests that time out.
async fn check_advertised_addresses(
    addresses: &[(i32, String, u16)],
    bootstrap: &str,
) -> Result<()> {
    for (id, host, port) in addresses {
        let target = format!("{host}:{port}");
        let resolved = match tokio::net::lookup_host(target.as_str()).await {
            Ok(resolved) => resolved.collect::<Vec<_>>(),
            Err(error) => {
                return Err(BusError::Misconfigured(format!(
                    "Kafka broker {id} advertises {target}, which does not resolve from this host \
                     ({error}). Clients reach each broker at the address it advertises after \
                     bootstrapping from {bootstrap}: set that broker's advertised.listeners to an \
                     address this host can resolve (not a container or pod name only the brokers \
                     know), or make the name resolvable here"
                )));
            }
        };
        let mut last_error = None;
        let mut reached = false;
        for address in &resolved {
            match tokio::time::timeout(
                ADDRESS_CHECK_TIMEOUT,
                tokio::net::TcpStream::connect(address),
            )
            .await
            {
                Ok(Ok(_)) => {
                    reached = true;
                    break;
                }
                Ok(Err(error)) => last_error = Some(error.to_string()),
                Err(_) => last_error = Some(format!("no answer within {ADDRESS_CHECK_TIMEOUT:?}")),
            }
        }
        if !reached {
            return Err(BusError::Misconfigured(format!(
                "Kafka broker {id} advertises {target} ({}), which does not accept connections \
                 from this host: {}. Clients reach each broker at the address it advertises \
                 after bootstrapping from {bootstrap}: set that broker's advertised.listeners \
                 to an address this host can reach",
                resolved
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                last_error.unwrap_or_else(|| "it resolves to no address".to_string())
            )));
        }
    }
    Ok(())
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
